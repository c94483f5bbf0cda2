/**
 * AbortSignal semantics of Conn (see the TSDoc of read, reader, write and
 * writer): an abort before anything of a message was read or written rejects
 * with the signal's reason and leaves the connection usable; an abort in the
 * middle of a message fails the connection with 1011. Plus the accessors a
 * Conn exposes.
 */

import { once } from "node:events";
import type { Writable } from "node:stream";
import t from "tap";
import { CloseError, ErrorCode, MessageType } from "../../src/index.js";
import { AsyncQueue, pair, rejection, startWsconnServer, wsClient, wsClosed, wsMessages, wsNext } from "../helpers/interop.js";

/** writerError resolves with the error a writer is destroyed with. */
function writerError(w: Writable): Promise<unknown> {
  return new Promise((resolve) => w.once("error", resolve));
}

t.test("read: abort before the message begins leaves the connection usable", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const ac = new AbortController();
  const pending = rejection(p.peer.conn.read(ac.signal));
  const reason = new Error("stop waiting");
  ac.abort(reason);
  t.equal(await pending, reason, "rejects with the signal's reason");
  t.equal(await rejection(p.peer.conn.read(AbortSignal.abort(reason))), reason, "an aborted signal rejects at once");
  await p.client.write(MessageType.Text, "next");
  t.equal((await p.peer.conn.read()).text(), "next", "a later read gets the next message");
  const ac2 = new AbortController();
  const queued = rejection(p.peer.conn.read(ac2.signal)); // waits for the message
  const behind = p.peer.conn.read(); // waits behind it, for the lock
  ac2.abort(reason);
  t.equal(await queued, reason);
  await p.client.write(MessageType.Text, "for the second read");
  t.equal((await behind).text(), "for the second read", "a read queued behind an aborted one gets the message");
});

t.test("read: abort while waiting for the read lock leaves the connection usable", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const first = p.peer.conn.read();
  const ac = new AbortController();
  const second = rejection(p.peer.conn.read(ac.signal));
  ac.abort("nope");
  t.equal(await second, "nope");
  await p.client.write(MessageType.Text, "one");
  t.equal((await first).text(), "one");
});

t.test("read: abort after the first fragment arrived fails the connection with 1011", async (t) => {
  const pinged = new AsyncQueue<Buffer>();
  const srv = await startWsconnServer({ onPing: (b) => pinged.push(b) });
  t.teardown(() => srv.close());
  const ws = await wsClient(srv.url);
  const { conn } = await srv.next();
  const wsClose = wsClosed(ws);
  const ac = new AbortController();
  const pending = rejection(conn.read(ac.signal));
  ws.send(Buffer.from("first half "), { fin: false, binary: false });
  ws.ping("after the fragment");
  await pinged.shift(); // the fragment was parsed before the ping
  const reason = new Error("abort mid-message");
  ac.abort(reason);
  t.equal(await pending, reason, "the read rejects with the reason");
  t.equal((await wsClose).code, 1011, "the peer sees 1011");
  const err = await rejection(conn.read());
  t.type(err, CloseError);
  t.match(err, { code: 1011, errorCode: ErrorCode.AbortedMidMessage }, "later reads reject with 1011");
});

t.test("reader: abort before the message leaves the connection usable; abort mid-stream fails it", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const ws = await wsClient(srv.url);
  const { conn } = await srv.next();
  const ac = new AbortController();
  const pending = rejection(conn.reader(ac.signal));
  ac.abort("early");
  t.equal(await pending, "early");
  ws.send("whole");
  const { stream } = await conn.reader();
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  t.equal(Buffer.concat(chunks).toString(), "whole", "the next reader reads");

  const ac2 = new AbortController();
  ws.send(Buffer.from("begun "), { fin: false, binary: true });
  const streamed = await conn.reader(ac2.signal);
  const [chunk] = (await once(streamed.stream, "data")) as [Buffer];
  t.equal(chunk.toString(), "begun ");
  const wsClose = wsClosed(ws);
  const destroyed = new Promise((resolve) => streamed.stream.once("error", resolve));
  ac2.abort(new Error("reader aborted"));
  t.match(await destroyed, { message: "reader aborted" }, "the stream is destroyed with the reason");
  t.equal((await wsClose).code, 1011, "the peer sees 1011");
});

t.test("write: abort while waiting for the write lock leaves the connection usable", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const w = p.client.writer(MessageType.Text);
  const ac = new AbortController();
  const waiting = rejection(p.client.write(MessageType.Text, "aborted write", ac.signal));
  const after = p.client.write(MessageType.Text, "after the writer");
  const reason = new Error("no longer needed");
  ac.abort(reason);
  t.equal(await waiting, reason, "rejects with the reason");
  t.equal(await rejection(p.client.write(MessageType.Text, "x", AbortSignal.abort(reason))), reason, "an aborted signal rejects at once");
  w.write("writer ");
  w.end("message");
  await after;
  t.equal((await p.peer.conn.read()).text(), "writer message");
  t.equal((await p.peer.conn.read()).text(), "after the writer", "the aborted write never went out");
});

t.test("writer: abort before its first frame leaves the connection usable", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  // Holding the lock, nothing written yet.
  const ac = new AbortController();
  const w = p.client.writer(MessageType.Binary, ac.signal);
  const err = writerError(w);
  ac.abort(new Error("changed my mind"));
  t.match(await err, { message: "changed my mind" }, "the writer is destroyed with the reason");
  await p.client.write(MessageType.Text, "plain write");
  t.equal((await p.peer.conn.read()).text(), "plain write", "the write side is free again");

  // Waiting for the lock behind another writer.
  const first = p.client.writer(MessageType.Text);
  const ac2 = new AbortController();
  const queued = p.client.writer(MessageType.Text, ac2.signal);
  const queuedErr = writerError(queued);
  ac2.abort("queued abort");
  t.equal(await queuedErr, "queued abort");
  first.end("first writer");
  await p.client.write(MessageType.Text, "then this");
  t.equal((await p.peer.conn.read()).text(), "first writer");
  t.equal((await p.peer.conn.read()).text(), "then this");
});

t.test("writer: destroyed or aborted mid-message fails the connection with 1011", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  for (const how of ["destroy", "abort"] as const) {
    const ws = await wsClient(srv.url);
    const { conn } = await srv.next();
    const wsClose = wsClosed(ws);
    const ac = new AbortController();
    const w = conn.writer(MessageType.Binary, ac.signal);
    w.on("error", () => undefined);
    await new Promise((resolve) => w.write(Buffer.from("half a message"), resolve));
    if (how === "destroy") w.destroy();
    else ac.abort();
    t.equal((await wsClose).code, 1011, `${how}: the peer sees 1011`);
    t.match(await rejection(conn.write(MessageType.Text, "x")), { code: 1011, errorCode: ErrorCode.AbortedMidMessage });
  }
});

t.test("writer: destroyed while a write waits for the lock sends nothing", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const ws = await wsClient(srv.url);
  ws.on("error", () => undefined);
  const { conn } = await srv.next();
  const messages = wsMessages(ws);
  const first = conn.writer(MessageType.Text);
  const second = conn.writer(MessageType.Text);
  second.on("error", () => undefined);
  second.write("must never be sent");
  second.destroy();
  first.end("first");
  await conn.write(MessageType.Text, "third");
  await conn.write(MessageType.Text, "fourth");
  t.equal((await wsNext(ws, messages)).data.toString(), "first");
  t.equal((await wsNext(ws, messages)).data.toString(), "third", "nothing of the destroyed writer went out");
  // A stray frame of the destroyed writer would open a fragmented message: ws would fail with 1002 here.
  t.equal((await wsNext(ws, messages)).data.toString(), "fourth");
  t.equal(ws.readyState, ws.OPEN, "the connection is still open");
  await conn.close();
});

t.test("writer: write then abort in the same tick sends nothing", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const ws = await wsClient(srv.url);
  ws.on("error", () => undefined);
  const { conn } = await srv.next();
  const messages = wsMessages(ws);
  const ac = new AbortController();
  const w = conn.writer(MessageType.Text, ac.signal);
  w.on("error", () => undefined);
  w.write("written, then aborted before any byte left");
  ac.abort();
  await conn.write(MessageType.Text, "next");
  await conn.write(MessageType.Text, "and the one after");
  t.equal((await wsNext(ws, messages)).data.toString(), "next", "the peer only sees the next message");
  t.equal((await wsNext(ws, messages)).data.toString(), "and the one after", "no stray fragment in between");
  t.equal(ws.readyState, ws.OPEN);
  await conn.close();
});

t.test("subprotocol, extensions and addresses", async (t) => {
  const p = await pair({ subprotocols: ["chat", "superchat"] }, { subprotocols: ["superchat", "chat"] });
  t.teardown(p.close);
  t.equal(p.client.subprotocol, "chat", "the server's preference wins");
  t.equal(p.peer.conn.subprotocol, "chat");
  t.equal(p.client.extensions, "");
  t.equal(p.client.remoteAddress, "127.0.0.1");
  t.equal(p.client.remotePort, p.server.port);
  t.equal(p.peer.conn.localPort, p.server.port);
  t.equal(p.peer.conn.remotePort, p.client.localPort);
  t.equal(p.client.bufferedAmount, 0);
  const q = await pair();
  t.teardown(q.close);
  t.equal(q.client.subprotocol, "", "none negotiated");
});
