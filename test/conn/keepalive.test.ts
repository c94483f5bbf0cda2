/**
 * The keepalive and the idle timeout, over real sockets: a raw peer that
 * completes the handshake and then answers nothing, a peer that stops
 * reading, a healthy peer that answers every ping, both roles, and the
 * options' checks. Bounds are asserted with slack: a failing run is one where
 * the connection outlived interval + timeout + closeTimeout by far, or was
 * ended before the ping could have been answered.
 */

import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { performance } from "node:perf_hooks";
import t, { type Test } from "tap";
import {
  accept,
  type Conn,
  type ConnCloseMessage,
  DiagnosticsChannel,
  dial,
  ErrorCode,
  type KeepaliveTimeoutMessage,
  MessageType,
  serve,
  StatusCode,
} from "../../src/index.js";
import { startServe } from "../helpers/peers.js";
import { Op, rawConnect, type ReceivedFrame, startRawServer } from "../helpers/raw-peer.js";

/** Scheduling slack allowed past a bound on this 2-core machine, in ms. */
const SLACK = 750;

/** serverWith starts serve with `options` and resolves with its first connection. */
async function serverWith(t: Test, options: Parameters<typeof serve>[0]) {
  let resolveConn!: (conn: Conn) => void;
  const first = new Promise<Conn>((resolve) => (resolveConn = resolve));
  const { port } = await startServe(t, options, (conn) => {
    resolveConn(conn);
    return new Promise<void>(() => undefined);
  });
  return { port, first };
}

t.test("a raw peer that answers nothing is gone within interval + timeout + closeTimeout", async (t) => {
  const interval = 150;
  const timeout = 100;
  const closeTimeout = 200;
  const { port, first } = await serverWith(t, { keepalive: { interval, timeout }, closeTimeout });
  const peer = await rawConnect(port);
  t.teardown(() => peer.destroy());
  const started = performance.now();
  const conn = await first;
  // The peer keeps reading (its kernel buffer never fills) but never answers.
  const frames: ReceivedFrame[] = [];
  const collecting = (async () => {
    for (;;) {
      const f = await peer.nextFrame(10_000);
      if (f === null || f === "timeout") return;
      frames.push(f);
    }
  })();
  const info = await conn.closed;
  await peer.ended;
  const elapsed = performance.now() - started;
  await collecting;
  t.equal(info.code, StatusCode.InternalError, "closed reports 1011");
  t.match(info.reason, /keepalive/, "the reason says keepalive");
  t.equal(info.wasClean, false);
  t.ok(elapsed >= interval + timeout - 5, `not before the ping could be answered (${elapsed.toFixed(0)} ms)`);
  t.ok(elapsed < interval + timeout + closeTimeout + SLACK, `socket gone after ${elapsed.toFixed(0)} ms`);
  t.equal(frames[0]?.opcode, Op.Ping, "the first frame the peer saw is the keepalive ping");
  t.equal(frames[1]?.opcode, Op.Close, "then the close frame");
  t.equal(frames[1]?.payload.readUInt16BE(0), StatusCode.InternalError, "with 1011 on the wire");
  const failure = await conn.read().catch((err: unknown) => err);
  t.match(failure, { code: StatusCode.InternalError, errorCode: ErrorCode.KeepaliveTimeout }, "reads reject with the keepalive failure");
});

t.test("a peer that stops reading is caught too: the ping cannot even go out", async (t) => {
  const interval = 100;
  const closeTimeout = 200;
  const { port, first } = await serverWith(t, { keepalive: { interval }, closeTimeout, writeQueueLimit: Infinity });
  const peer = await rawConnect(port);
  t.teardown(() => peer.destroy());
  peer.socket.pause();
  const conn = await first;
  // Fill the socket and the kernel buffers: the ping waits behind 32 MiB.
  const chunk = Buffer.alloc(1024 * 1024, 7);
  const writes: Promise<unknown>[] = [];
  for (let i = 0; i < 32; i++) writes.push(conn.write(MessageType.Binary, chunk).catch((err: unknown) => err));
  const started = performance.now();
  // `closed` settles when the server's socket is closed (the paused peer sees nothing).
  const info = await conn.closed;
  const elapsed = performance.now() - started;
  t.equal(info.code, StatusCode.InternalError);
  t.match(info.reason, /keepalive/);
  t.ok(elapsed < 2 * interval + interval + closeTimeout + SLACK, `socket destroyed after ${elapsed.toFixed(0)} ms`);
  const outcomes = await Promise.all(writes);
  t.ok(
    outcomes.some((o) => o instanceof Error),
    "writes that never reached the peer reject",
  );
});

t.test("a peer that answers every ping stays open across many intervals", async (t) => {
  const { port, first } = await serverWith(t, { keepalive: { interval: 30, timeout: 1000 } });
  let pings = 0;
  let sawFive!: () => void;
  const fivePings = new Promise<void>((resolve) => (sawFive = resolve));
  const client = await dial(`ws://127.0.0.1:${port}`, {
    onPing: () => {
      if (++pings === 5) sawFive();
    },
  });
  t.teardown(() => client.closeNow());
  client.closeRead();
  const conn = await first;
  await fivePings;
  const settled = await Promise.race([conn.closed.then(() => "closed"), Promise.resolve("open")]);
  t.equal(settled, "open", "five keepalive pings answered, the connection is still open");
  await client.close();
  const info = await conn.closed;
  t.equal(info.code, StatusCode.NormalClosure, "it ends the way the client closes it");
});

t.test("data from the peer counts as a sign of life: no ping while it arrives", async (t) => {
  let pings = 0;
  const { port, first } = await serverWith(t, { keepalive: { interval: 200 } });
  const client = await dial(`ws://127.0.0.1:${port}`, { onPing: () => void pings++ });
  t.teardown(() => client.closeNow());
  client.closeRead();
  const conn = await first;
  // 20 messages 40 ms apart: the peer is never quiet for 200 ms.
  const reading = (async () => {
    for (let i = 0; i < 20; i++) await conn.read();
  })();
  for (let i = 0; i < 20; i++) {
    await client.write(MessageType.Text, `tick ${i}`);
    await new Promise((resolve) => setTimeout(resolve, 40));
  }
  await reading;
  t.equal(pings, 0, "no keepalive ping was needed");
});

t.test("dial's keepalive ends a connection to a server that answers nothing", async (t) => {
  const server = await startRawServer();
  t.teardown(() => server.close());
  const next = server.nextPeer();
  const client = await dial(server.url, { keepalive: { interval: 100, timeout: 100 }, closeTimeout: 100 });
  const { peer } = await next;
  const started = performance.now();
  const info = await client.closed;
  await peer.ended;
  const elapsed = performance.now() - started;
  t.equal(info.code, StatusCode.InternalError);
  t.match(info.reason, /keepalive/);
  t.ok(elapsed < 300 + SLACK, `client socket gone after ${elapsed.toFixed(0)} ms`);
});

t.test("keepalive timeouts and closes are published on diagnostics channels", async (t) => {
  const timeouts: KeepaliveTimeoutMessage[] = [];
  const closes: ConnCloseMessage[] = [];
  const onTimeout = (m: unknown): void => void timeouts.push(m as KeepaliveTimeoutMessage);
  const onClose = (m: unknown): void => void closes.push(m as ConnCloseMessage);
  subscribe(DiagnosticsChannel.KeepaliveTimeout, onTimeout);
  subscribe(DiagnosticsChannel.ConnClose, onClose);
  t.teardown(() => {
    unsubscribe(DiagnosticsChannel.KeepaliveTimeout, onTimeout);
    unsubscribe(DiagnosticsChannel.ConnClose, onClose);
  });
  const { port, first } = await serverWith(t, { keepalive: { interval: 50, timeout: 50 }, closeTimeout: 50 });
  const peer = await rawConnect(port);
  t.teardown(() => peer.destroy());
  const conn = await first;
  await conn.closed;
  t.equal(timeouts.length, 1, "one keepalive timeout");
  t.equal(timeouts[0]?.conn, conn);
  t.ok((timeouts[0]?.waitedMs ?? 0) >= 45, "with how long the ping waited");
  const mine = closes.find((c) => c.conn === conn);
  t.equal(mine?.info.code, StatusCode.InternalError, "the close message carries the code");
  t.equal(mine?.error.errorCode, ErrorCode.KeepaliveTimeout, "and the failure's error code");
});

t.test("idleTimeout closes a connection nobody uses with 1001, data resets it, pings do not", async (t) => {
  const idleTimeout = 200;
  const { port, first } = await serverWith(t, { idleTimeout });
  const client = await dial(`ws://127.0.0.1:${port}`);
  t.teardown(() => client.closeNow());
  const conn = await first;
  const echoing = (async () => {
    for await (const msg of conn) await conn.write(msg.type, msg.data);
  })().catch(() => undefined);
  // Ten messages 60 ms apart, over two idle timeouts' worth: each resets the clock.
  for (let i = 0; i < 10; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, 60));
    await client.write(MessageType.Text, `m${i}`);
    t.equal((await client.read()).text(), `m${i}`);
  }
  // The echo just read was the last data message either way.
  const lastData = performance.now();
  // Pings go back and forth but are not data.
  const pinging = (async () => {
    // Until the close: then ping rejects.
    for (;;) if ((await client.ping().catch(() => -1)) < 0) return;
  })();
  const closing = client.read().catch((err: unknown) => err);
  const info = await conn.closed;
  const quiet = performance.now() - lastData;
  await pinging;
  await echoing;
  t.equal(info.code, StatusCode.GoingAway, "1001 (echoed by the client)");
  t.equal(info.wasClean, true, "a clean close handshake");
  t.ok(quiet >= idleTimeout - 65, `closed ${quiet.toFixed(0)} ms after the last message`);
  t.ok(quiet < idleTimeout + SLACK);
  t.match(await closing, { code: StatusCode.GoingAway, reason: "idle timeout", remote: true }, "the client sees the server's 1001 and why");
});

t.test("idleTimeout on dial closes the client side", async (t) => {
  const { port, first } = await serverWith(t, {});
  const client = await dial(`ws://127.0.0.1:${port}`, { idleTimeout: 100 });
  const conn = await first;
  conn.closeRead();
  const info = await client.closed;
  t.equal(info.code, StatusCode.GoingAway);
  t.same(await conn.closed, { code: StatusCode.GoingAway, reason: "idle timeout", wasClean: true }, "the server got the 1001 and why");
});

t.test("bad keepalive and idleTimeout options are refused before any connection", async (t) => {
  for (const keepalive of [{ interval: 0 }, { interval: -1 }, { interval: Number.NaN }, { interval: 2 ** 31 }, { interval: 100, timeout: 0 }]) {
    await t.rejects(serve({ keepalive }, () => undefined), RangeError, `serve refuses ${JSON.stringify(keepalive)}`);
    await t.rejects(dial("ws://127.0.0.1:1", { keepalive }), RangeError, `dial refuses ${JSON.stringify(keepalive)}`);
  }
  await t.rejects(serve({ keepalive: null as never }, () => undefined), TypeError);
  await t.rejects(serve({ keepalive: { interval: "10" as never } }, () => undefined), RangeError);
  await t.rejects(serve({ idleTimeout: -5 }, () => undefined), RangeError);
  await t.rejects(dial("ws://127.0.0.1:1", { idleTimeout: Number.NaN }), RangeError);
  // 0 and Infinity mean off, as for every timeout.
  for (const idleTimeout of [0, Infinity]) (await serve({ idleTimeout, host: "127.0.0.1" }, () => undefined)).close();
  // accept answers 500 and rejects, like any misconfiguration.
  const http = await import("node:http");
  const server = http.createServer();
  const refused = new Promise<unknown>((resolve) =>
    server.on("upgrade", (req, socket, head) => accept(req, socket, head, { keepalive: { interval: -1 } }).catch(resolve)),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => server.close());
  const { port } = server.address() as import("node:net").AddressInfo;
  const answer = dial(`ws://127.0.0.1:${port}`).catch((err: unknown) => err);
  t.type(await refused, RangeError, "accept rejects with the RangeError");
  t.match(await answer, { status: 500 }, "and the client got 500");
});

t.test("against ws: a ws client answers the keepalive, a paused one is ended with 1011", async (t) => {
  const { WebSocket } = await import("ws");
  const { port, first } = await serverWith(t, { keepalive: { interval: 40, timeout: 150 }, closeTimeout: 100 });
  const healthy = new WebSocket(`ws://127.0.0.1:${port}`);
  t.teardown(() => healthy.terminate());
  let pings = 0;
  const fivePings = new Promise<void>((resolve) => healthy.on("ping", () => ++pings === 5 && resolve()));
  const healthyConn = await first;
  await fivePings;
  t.equal(await Promise.race([healthyConn.closed.then(() => "closed"), Promise.resolve("open")]), "open", "ws answered five pings");
  healthy.close(1000);
  t.equal((await healthyConn.closed).code, StatusCode.NormalClosure);

  const { port: port2, first: second } = await serverWith(t, { keepalive: { interval: 40, timeout: 150 }, closeTimeout: 100 });
  const frozen = new WebSocket(`ws://127.0.0.1:${port2}`);
  t.teardown(() => frozen.terminate());
  await new Promise((resolve) => frozen.once("open", resolve));
  frozen.pause();
  const frozenConn = await second;
  const info = await frozenConn.closed;
  t.equal(info.code, StatusCode.InternalError, "a ws client that stopped reading is ended with 1011");
});

t.test("against ws: dial's keepalive stays up with a ws server and ends a paused one", async (t) => {
  const { WebSocketServer } = await import("ws");
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => wss.once("listening", resolve));
  t.teardown(() => {
    for (const ws of wss.clients) ws.terminate();
    return new Promise((resolve) => wss.close(resolve));
  });
  const port = (wss.address() as import("node:net").AddressInfo).port;
  const serverSockets: import("ws").WebSocket[] = [];
  wss.on("connection", (ws) => serverSockets.push(ws));
  let pongs = 0;
  let sawFive!: () => void;
  const fivePongs = new Promise<void>((resolve) => (sawFive = resolve));
  const client = await dial(`ws://127.0.0.1:${port}`, {
    keepalive: { interval: 40, timeout: 150 },
    closeTimeout: 100,
    onPong: () => void (++pongs === 5 && sawFive()),
  });
  t.teardown(() => client.closeNow());
  await Promise.race([fivePongs, client.closed]);
  t.equal(pongs, 5, "ws answered five keepalive pings");
  t.equal(await Promise.race([client.closed.then(() => "closed"), Promise.resolve("open")]), "open");
  serverSockets[0]!.pause();
  const info = await client.closed;
  t.equal(info.code, StatusCode.InternalError, "a paused ws server connection is ended with 1011");
  t.match(info.reason, /keepalive/);
});

t.test("a peer is not blamed while the application leaves what it sent unread", async (t) => {
  const interval = 50;
  const timeout = 50;
  const { port, first } = await serverWith(t, { keepalive: { interval, timeout }, closeTimeout: 100 });
  const peer = await rawConnect(port);
  t.teardown(() => peer.destroy());
  const conn = await first;
  // 12 × 30 KiB: past the 256 KiB of unread data at which the socket is paused.
  const payload = Buffer.alloc(30 * 1024, 1);
  await peer.send(Array.from({ length: 12 }, () => ({ opcode: Op.Binary, payload })));
  // Ten keepalive periods with the socket paused for the reader: no verdict.
  const verdict = await Promise.race([
    conn.closed.then(() => "closed"),
    new Promise((resolve) => setTimeout(resolve, 10 * (interval + timeout), "open")),
  ]);
  t.equal(verdict, "open", "the connection stays while its data waits for the application");
  for (let i = 0; i < 12; i++) t.equal((await conn.read()).data.length, payload.length);
  // Read, the socket resumes, and the silent peer is judged again.
  const info = await conn.closed;
  t.equal(info.code, StatusCode.InternalError, "then the peer that answers nothing is ended");
});
