/**
 * The close handshake (https://www.rfc-editor.org/rfc/rfc6455#section-7):
 * from either side or both at once, what `closed` reports, who closes TCP
 * first, close codes and reasons that may not be sent, 1005 and 1006, the
 * close timeout, and what reads and writes do afterwards.
 */

import { once } from "node:events";
import { performance } from "node:perf_hooks";
import t from "tap";
import { CloseError, dial, MessageType, StatusCode } from "../../src/index.js";
import { binaryPayload, closeBody, OP, pair, parseCloseBody, rawClient, rejection, startRawServer, startWsconnServer, wsClient, wsClosed } from "../helpers/interop.js";

/** tcpOrder records which side of a server socket sent FIN first. */
function tcpOrder(socket: import("node:net").Socket): string[] {
  const order: string[] = [];
  socket.once("finish", () => order.push("server FIN"));
  socket.once("end", () => order.push("client FIN"));
  return order;
}

t.test("client-initiated close", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const order = tcpOrder(p.peer.socket);
  await p.client.close(StatusCode.NormalClosure, "bye");
  t.same(await p.client.closed, { code: 1000, reason: "", wasClean: true }, "client: the echo carries the code");
  t.same(await p.peer.conn.closed, { code: 1000, reason: "bye", wasClean: true }, "server: code and reason received");
  t.same(order, ["server FIN", "client FIN"], "the server closes TCP first");
});

t.test("server-initiated close", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const order = tcpOrder(p.peer.socket);
  await p.peer.conn.close(4000, "server leaves");
  t.same(await p.client.closed, { code: 4000, reason: "server leaves", wasClean: true });
  t.same(await p.peer.conn.closed, { code: 4000, reason: "", wasClean: true });
  t.same(order, ["server FIN", "client FIN"], "the server closes TCP first");
});

t.test("both sides close at once", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const order = tcpOrder(p.peer.socket);
  await Promise.all([p.client.close(4001, "from client"), p.peer.conn.close(4002, "from server")]);
  t.same(await p.client.closed, { code: 4002, reason: "from server", wasClean: true }, "client reports the server's frame");
  t.same(await p.peer.conn.closed, { code: 4001, reason: "from client", wasClean: true }, "server reports the client's frame");
  t.same(order, ["server FIN", "client FIN"]);
});

t.test("raw client: the server echoes the code, then ends TCP before the client does", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const peer = await rawClient(srv.port);
  const { conn } = await srv.next();
  peer.frames.send(OP.close, closeBody(3003, "raw"));
  const echo = await peer.frames.next();
  t.equal(echo.opcode, OP.close);
  t.same(parseCloseBody(echo.payload), { code: 3003, reason: "" }, "the code is echoed");
  await peer.frames.ended;
  t.equal(peer.socket.writableEnded, false, "the server sent FIN while the client had not");
  peer.socket.end();
  t.same(await conn.closed, { code: 3003, reason: "raw", wasClean: true });
});

t.test("the client waits for the server to close TCP, up to closeTimeout", async (t) => {
  const srv = await startRawServer();
  t.teardown(() => srv.close());
  const conn = await dial(srv.url, { closeTimeout: 200 });
  const peer = await srv.next();
  const closing = conn.close(1000);
  const frame = await peer.frames.next();
  t.same(parseCloseBody(frame.payload), { code: 1000, reason: "" });
  peer.frames.send(OP.close, closeBody(1000));
  const echoedAt = performance.now();
  await peer.frames.ended;
  const waited = performance.now() - echoedAt;
  t.ok(waited >= 150, `the client kept TCP open after the echo (${waited.toFixed(0)} ms)`);
  await closing;
  peer.socket.end();
  const info = await conn.closed;
  t.equal(info.code, 1000, "the close frame was received");
  t.equal(info.wasClean, false, "a close forced by the timeout is not clean");
});

t.test("close completes behind unread messages that paused the socket", async (t) => {
  const p = await pair({ readLimit: Infinity, closeTimeout: 3000 });
  t.teardown(p.close);
  const paused = once(p.peer.socket, "pause");
  for (let i = 0; i < 5; i++) await p.client.write(MessageType.Binary, binaryPayload(100 * 1024, i));
  await paused; // the server stopped reading: unread bytes passed its high-water mark
  const start = performance.now();
  await p.peer.conn.close(1000, "bye");
  t.ok(performance.now() - start < 2000, "close did not wait for the timeout");
  t.same(await p.peer.conn.closed, { code: 1000, reason: "", wasClean: true });
  t.same(await p.client.closed, { code: 1000, reason: "bye", wasClean: true });
  const first = await p.peer.conn.read();
  t.ok(first.data.equals(binaryPayload(100 * 1024, 0)), "messages received before the close are still readable");
});

t.test("close reasons: up to 123 bytes of UTF-8", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  for (const reason of ["x".repeat(124), "é".repeat(62), "😀".repeat(31)]) {
    const err = await rejection(p.client.close(1000, reason));
    t.type(err, RangeError, `${Buffer.byteLength(reason)}-byte reason rejected`);
  }
  await p.client.write(MessageType.Text, "still open");
  t.equal((await p.peer.conn.read()).text(), "still open", "a refused close leaves the connection open");
  const reason = "é".repeat(61) + "a";
  await p.client.close(4999, reason);
  t.same(await p.peer.conn.closed, { code: 4999, reason, wasClean: true }, "a 123-byte reason arrives whole");
});

t.test("close codes that may not be sent reject with RangeError", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  for (const code of [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 1000.5, Number.NaN]) {
    const err = await rejection(p.client.close(code));
    t.type(err, RangeError, `close(${code}) rejects`);
  }
  await p.client.write(MessageType.Text, "still open");
  t.equal((await p.peer.conn.read()).text(), "still open", "nothing was sent");
  await p.client.close(3000);
  t.equal((await p.peer.conn.closed).code, 3000, "3000 is sendable");
});

t.test("a close frame without status reports 1005 and is echoed without status", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());

  const peer = await rawClient(srv.port);
  const { conn } = await srv.next();
  peer.frames.send(OP.close);
  const echo = await peer.frames.next();
  t.equal(echo.opcode, OP.close);
  t.equal(echo.payload.length, 0, "the echo has an empty body, never 1005");
  await peer.frames.ended;
  peer.socket.end();
  t.same(await conn.closed, { code: 1005, reason: "", wasClean: true });
  const err = await rejection(conn.read());
  t.match(err, { code: 1005, remote: true }, "reads reject with 1005");
  peer.socket.destroy();

  const ws = await wsClient(srv.url);
  const second = await srv.next();
  const wsClose = wsClosed(ws);
  ws.close();
  t.equal((await wsClose).code, 1005, "ws saw an echo without status");
  t.equal((await second.conn.closed).code, 1005);

  const raw = await startRawServer();
  t.teardown(() => raw.close());
  const client = await dial(raw.url);
  const server = await raw.next();
  server.frames.send(OP.close);
  const clientEcho = await server.frames.next();
  t.equal(clientEcho.payload.length, 0, "the client echoes an empty body too");
  server.socket.end();
  t.same(await client.closed, { code: 1005, reason: "", wasClean: true });
});

t.test("closeNow drops the connection: the peer sees 1006", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const ws = await wsClient(srv.url);
  const { conn } = await srv.next();
  const wsClose = wsClosed(ws);
  conn.closeNow();
  t.equal((await wsClose).code, 1006, "ws reports an abnormal closure");
  t.same(await conn.closed, { code: 1006, reason: "", wasClean: false });

  const p = await pair();
  t.teardown(p.close);
  p.client.closeNow();
  t.same(await p.peer.conn.closed, { code: 1006, reason: "", wasClean: false }, "a wsconn peer reports 1006");
  t.match(await rejection(p.peer.conn.read()), { code: 1006 }, "and its reads reject with 1006");
  t.match(await rejection(p.client.write(MessageType.Text, "x")), { code: 1006 }, "writes after closeNow reject");
});

t.test("close timeout: a peer that never answers the close frame", async (t) => {
  const srv = await startWsconnServer({ closeTimeout: 200 });
  t.teardown(() => srv.close());
  const peer = await rawClient(srv.port);
  const { conn } = await srv.next();
  const start = performance.now();
  await conn.close(1001, "going");
  const elapsed = performance.now() - start;
  t.ok(elapsed >= 180 && elapsed < 2000, `server close resolved after the timeout (${elapsed.toFixed(0)} ms)`);
  t.same(await conn.closed, { code: 1006, reason: "", wasClean: false });
  const frame = await peer.frames.next();
  t.same(parseCloseBody(frame.payload), { code: 1001, reason: "going" }, "the close frame was sent");
  await peer.frames.ended;
  peer.socket.destroy();

  const raw = await startRawServer();
  t.teardown(() => raw.close());
  const client = await dial(raw.url, { closeTimeout: 200 });
  const server = await raw.next();
  const clientStart = performance.now();
  await client.close();
  const clientElapsed = performance.now() - clientStart;
  t.ok(clientElapsed >= 180 && clientElapsed < 2000, `client close resolved after the timeout (${clientElapsed.toFixed(0)} ms)`);
  t.same(await client.closed, { code: 1006, reason: "", wasClean: false });
  t.equal((await server.frames.next()).opcode, OP.close);
  await server.frames.ended;
  server.socket.destroy();
});

t.test("reads, writes and pings after close reject with CloseError", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const pendingRead = rejection(p.peer.conn.read());
  await p.client.close(4010, "done");
  const readErr = await pendingRead;
  t.type(readErr, CloseError);
  t.match(readErr, { code: 4010, reason: "done", remote: true }, "a pending read rejects with the peer's status");
  for (const conn of [p.client, p.peer.conn]) {
    t.type(await rejection(conn.read()), CloseError, "read");
    t.type(await rejection(conn.write(MessageType.Binary, Buffer.from("x"))), CloseError, "write");
    t.type(await rejection(conn.ping()), CloseError, "ping");
    const w = conn.writer(MessageType.Text);
    const werr = await new Promise<unknown>((resolve) => {
      w.on("error", resolve);
      w.end("late");
    });
    t.type(werr, CloseError, "writer");
  }
  t.match(await rejection(p.client.read()), { code: 4010, remote: false }, "the closing side reports its own status");
  await p.client.close();
  await p.peer.conn.close(1000);
  t.pass("close after the end resolves");
});

t.test("invalid close frames from the peer fail the connection", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const table: Array<[string, Buffer, number]> = [
    ["1-byte body", Buffer.from([3]), 1002],
    ["code 1005 on the wire", closeBody(1005), 1002],
    ["code 1006 on the wire", closeBody(1006), 1002],
    ["code 999", closeBody(999), 1002],
    ["reason not UTF-8", Buffer.concat([closeBody(1000), Buffer.from([0xc3])]), 1007],
  ];
  for (const [name, body, code] of table) {
    const peer = await rawClient(srv.port);
    const { conn } = await srv.next();
    peer.frames.send(OP.close, body);
    const answer = await peer.frames.next();
    t.equal(parseCloseBody(answer.payload).code, code, `${name}: answered ${code}`);
    t.match(await rejection(conn.read()), { code, remote: false }, `${name}: read rejects with ${code}`);
    peer.socket.destroy();
    await conn.closed;
  }
});
