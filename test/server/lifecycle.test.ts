/**
 * serve's lifecycle over real sockets: the connection cap (503 with
 * Retry-After, counting open connections and handshakes under way), the
 * `conns` set, graceful shutdown of 1 000 connections (also with peers that
 * never answer the close), the shutdown signal, handshakes caught in the
 * middle of a shutdown, and the diagnostics channels of the server side.
 */

import { subscribe, unsubscribe } from "node:diagnostics_channel";
import type { AddressInfo } from "node:net";
import t, { type Test } from "tap";
import {
  type Conn,
  type ConnOpenMessage,
  DiagnosticsChannel,
  dial,
  type HandlerErrorMessage,
  HandshakeError,
  type HandshakeRefusedMessage,
  MessageType,
  serve,
  type ServeOptions,
  StatusCode,
  type WebSocketServer,
} from "../../src/index.js";
import { rawConnect } from "../helpers/raw-peer.js";

/** start serves on 127.0.0.1 and makes sure the server is gone after the test. */
async function start(t: Test, options: ServeOptions, handler: (conn: Conn) => void | Promise<void> = holdOpen): Promise<{ server: WebSocketServer; url: string }> {
  const server = await serve({ host: "127.0.0.1", ...options }, handler);
  t.teardown(() => server.shutdown({ timeout: 0 }));
  return { server, url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** holdOpen keeps a server connection open, reading, until the peer closes it. */
async function holdOpen(conn: Conn): Promise<void> {
  for await (const msg of conn) void msg;
}

t.test("maxConnections: past the cap upgrades get 503 with Retry-After, and a freed place is taken again", async (t) => {
  const { server, url } = await start(t, { maxConnections: 3, retryAfter: 7 });
  const clients = await Promise.all([dial(url), dial(url), dial(url)]);
  t.teardown(() => clients.forEach((c) => c.closeNow()));
  t.equal(server.conns.size, 3, "three open connections");
  const refused = await dial(url).catch((err: unknown) => err);
  t.type(refused, HandshakeError);
  t.equal((refused as HandshakeError).status, 503);
  t.equal((refused as HandshakeError).headers["retry-after"], "7", "Retry-After as configured");
  t.match((refused as HandshakeError).body.toString(), /too many connections/);
  t.equal(server.conns.size, 3, "the refused upgrade made no connection");
  // Free a place: it is free once the server's side of that connection is closed.
  const leaving = [...server.conns][0]!;
  await clients[0]!.close();
  await leaving.closed;
  t.equal(server.conns.size, 2);
  t.notOk(server.conns.has(leaving), "the closed connection left the set");
  const again = await dial(url);
  t.teardown(() => again.closeNow());
  t.equal(server.conns.size, 3, "the freed place was taken");
});

t.test("maxConnections holds for handshakes that arrive together", async (t) => {
  const { server, url } = await start(t, { maxConnections: 5 });
  const outcomes = await Promise.allSettled(Array.from({ length: 40 }, () => dial(url)));
  const opened = outcomes.filter((o) => o.status === "fulfilled").map((o) => (o as PromiseFulfilledResult<Conn>).value);
  t.teardown(() => opened.forEach((c) => c.closeNow()));
  const statuses = outcomes.filter((o) => o.status === "rejected").map((o) => ((o as PromiseRejectedResult).reason as HandshakeError).status);
  t.equal(opened.length, 5, "exactly the cap opened");
  t.same(new Set(statuses), new Set([503]), "every other one got 503");
  t.equal(statuses.length, 35);
  t.equal(server.conns.size, 5);
});

t.test("bad maxConnections and retryAfter are refused before listening", async (t) => {
  for (const maxConnections of [0, -1, 1.5, Number.NaN]) {
    await t.rejects(serve({ maxConnections }, () => undefined), RangeError, `maxConnections ${maxConnections}`);
  }
  await t.rejects(serve({ retryAfter: -1 }, () => undefined), RangeError);
  await t.rejects(serve({ retryAfter: 0.5 }, () => undefined), RangeError);
});

t.test("shutdown closes 1 000 connections with 1001 and resolves when nothing is left", async (t) => {
  const { server, url } = await start(t, {});
  const clients: Conn[] = [];
  for (let i = 0; i < 1000; i += 100) {
    clients.push(...(await Promise.all(Array.from({ length: 100 }, () => dial(url)))));
  }
  t.equal(server.conns.size, 1000, "1 000 connections open");
  // Each client reads, as a live client would, and sees the close as an error.
  const seen = clients.map((c) => c.read().then(
    () => "message",
    (err: { code?: number; remote?: boolean }) => (err.remote ? err.code : "local"),
  ));
  await server.shutdown();
  t.equal(server.listening, false, "the listening socket is closed");
  t.equal(server.conns.size, 0, "no connection left");
  const codes = await Promise.all(seen);
  t.equal(codes.filter((c) => c === StatusCode.GoingAway).length, 1000, "every client got 1001 from the server");
  const infos = await Promise.all(clients.map((c) => c.closed));
  t.equal(infos.filter((i) => i.wasClean).length, 1000, "every close handshake was clean");
  t.equal(await server.shutdown(), undefined, "a second shutdown resolves too");
});

t.test("shutdown drops peers that never answer the close, after its timeout", async (t) => {
  const { server, url } = await start(t, {});
  const port = Number(new URL(url).port);
  const silent = await Promise.all(Array.from({ length: 20 }, () => rawConnect(port)));
  t.teardown(() => silent.forEach((p) => p.destroy()));
  const polite = await dial(url);
  t.equal(server.conns.size, 21);
  const started = Date.now();
  await server.shutdown({ code: StatusCode.ServiceRestart, reason: "deploy", timeout: 200 });
  const elapsed = Date.now() - started;
  t.equal(server.conns.size, 0, "nothing left open");
  t.ok(elapsed >= 190, `waited for the timeout (${elapsed} ms)`);
  t.ok(elapsed < 2000, "and not much longer");
  await Promise.all(silent.map((p) => p.ended));
  t.ok(silent.every((p) => p.socket.destroyed || p.gotEnd), "the silent peers' connections are gone");
  const info = await polite.closed;
  t.equal(info.code, StatusCode.ServiceRestart, "the code given to shutdown");
  t.equal(info.reason, "deploy", "and its reason");
});

t.test("shutdown options are checked", async (t) => {
  const { server } = await start(t, {});
  await t.rejects(server.shutdown({ code: 1005 }), RangeError);
  await t.rejects(server.shutdown({ reason: "x".repeat(124) }), RangeError);
  await t.rejects(server.shutdown({ timeout: -1 }), RangeError);
  t.equal(server.listening, true, "a refused shutdown leaves the server running");
});

t.test("aborting serve's signal shuts the server down; an aborted signal refuses to start", async (t) => {
  const controller = new AbortController();
  const { server, url } = await start(t, { signal: controller.signal });
  const client = await dial(url);
  const closing = client.read().catch((err: unknown) => err);
  const closed = new Promise<void>((resolve) => server.once("close", resolve));
  controller.abort();
  await closed;
  // The shutdown the signal began: calling shutdown again waits for the same end.
  await server.shutdown();
  t.match(await closing, { code: StatusCode.GoingAway, remote: true }, "the client got 1001");
  t.equal(server.conns.size, 0);
  const reason = new Error("already aborted");
  await t.rejects(serve({ signal: AbortSignal.abort(reason) }, () => undefined), reason);
});

t.test("a handshake under way when shutdown begins completes and is then closed", async (t) => {
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let reached!: () => void;
  const inOriginCheck = new Promise<void>((resolve) => (reached = resolve));
  let handlerCalls = 0;
  const { server, url } = await start(
    t,
    {
      checkOrigin: async () => {
        reached();
        await held;
        return true;
      },
    },
    () => void handlerCalls++,
  );
  const dialing = dial(url);
  await inOriginCheck;
  const shutdown = server.shutdown({ timeout: 5000 });
  release();
  const client = await dialing;
  const err = await client.read().catch((e: unknown) => e);
  t.match(err, { code: StatusCode.GoingAway, remote: true }, "the late connection is closed with 1001");
  await shutdown;
  t.equal(handlerCalls, 0, "the handler never saw it");
  t.equal(server.conns.size, 0);
});

t.test("the server side publishes opens, refusals and handler errors on diagnostics channels", async (t) => {
  const opens: ConnOpenMessage[] = [];
  const refusals: HandshakeRefusedMessage[] = [];
  const handlerErrors: HandlerErrorMessage[] = [];
  const subscriptions: Array<[string, (m: unknown) => void]> = [
    [DiagnosticsChannel.ConnOpen, (m) => void opens.push(m as ConnOpenMessage)],
    [DiagnosticsChannel.HandshakeRefused, (m) => void refusals.push(m as HandshakeRefusedMessage)],
    [DiagnosticsChannel.HandlerError, (m) => void handlerErrors.push(m as HandlerErrorMessage)],
  ];
  for (const [name, fn] of subscriptions) subscribe(name, fn);
  t.teardown(() => subscriptions.forEach(([name, fn]) => unsubscribe(name, fn)));
  const boom = new Error("handler exploded");
  const server = await serve({ host: "127.0.0.1", maxConnections: 1, path: "/ws", onError: () => undefined }, async (conn) => {
    await conn.read();
    throw boom;
  });
  t.teardown(() => server.shutdown({ timeout: 0 }));
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = await dial(`${url}/ws`);
  t.ok(opens.some((o) => o.role === "server" && server.conns.has(o.conn)), "the server's open was published");
  t.ok(opens.some((o) => o.role === "client" && o.conn === client), "and the client's");
  await dial(`${url}/ws`).catch(() => undefined);
  await dial(`${url}/elsewhere`).catch(() => undefined);
  await dial(`${url}/ws`, { headers: { Origin: "https://evil.example" } }).catch(() => undefined);
  t.same(
    refusals.map((r) => r.status),
    [503, 404, 503],
    "503 past the cap, 404 for the path, and 503 again before the origin is even looked at",
  );
  t.match(refusals[0], { status: 503, reason: "too many connections" });
  t.equal(refusals[1]?.req?.url, "/elsewhere", "with the request");
  await client.write(MessageType.Text, "go");
  const info = await client.closed;
  t.equal(info.code, StatusCode.InternalError, "the client got 1011");
  t.equal(handlerErrors.length, 1);
  t.equal(handlerErrors[0]?.error, boom, "the handler's error was published");
  t.equal(handlerErrors[0]?.req.url, "/ws");
  // Origin refusals come from accept, once there is room.
  await opens.find((o) => o.role === "server")!.conn.closed;
  t.equal(server.conns.size, 0);
  await dial(`${url}/ws`, { headers: { Origin: "https://evil.example" } }).catch(() => undefined);
  t.match(refusals.at(-1), { status: 403 }, "an origin refusal is published by accept");
});
