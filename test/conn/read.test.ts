/**
 * The read side: the read limit, streamed messages (reader), closeRead,
 * async iteration and the messages still readable after a close.
 */

import { randomBytes } from "node:crypto";
import { once } from "node:events";
import type { Readable } from "node:stream";
import t from "tap";
import { CloseError, type Conn, dial, ErrorCode, MessageType } from "../../src/index.js";
import { AsyncQueue, binaryPayload, hasSettled, pair, rejection, startWsconnServer, wsClient, wsClosed, wsSendFragments } from "../helpers/interop.js";
import { type Chop, frame, rawConnect } from "../helpers/raw-peer.js";

/** nextChunk resolves with the next chunk a paused-mode stream delivers. */
function nextChunk(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const onReadable = (): void => {
      const chunk = stream.read() as Buffer | null;
      if (chunk === null) return;
      stream.off("readable", onReadable);
      stream.off("error", reject);
      resolve(chunk);
    };
    stream.on("readable", onReadable);
    stream.once("error", reject);
    onReadable();
  });
}

/** pingMarks makes a Conn's onPing marks awaitable: a ping sent after data proves the data arrived. */
function pingMarks(): { onPing: (p: Buffer) => void; next(): Promise<string> } {
  const q = new AsyncQueue<string>();
  return { onPing: (p) => q.push(p.toString()), next: async () => q.shift() };
}

t.test("the default read limit is 32768 bytes", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const ws = await wsClient(srv.url);
  const { conn } = await srv.next();
  ws.send(binaryPayload(32768));
  t.equal((await conn.read()).data.length, 32768, "a message at the limit is read");
  const wsClose = wsClosed(ws);
  ws.send(binaryPayload(32769));
  const err = await rejection(conn.read());
  t.type(err, CloseError);
  t.match(err, { code: 1009, remote: false, errorCode: ErrorCode.MessageTooBig }, "locally: CloseError 1009");
  t.equal((await wsClose).code, 1009, "the peer sees 1009");
});

t.test("the read limit counts every fragment of a message", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const ws = await wsClient(srv.url);
  const { conn } = await srv.next();
  const wsClose = wsClosed(ws);
  void wsSendFragments(ws, [binaryPayload(20000), binaryPayload(20000)], true).catch(() => undefined);
  t.match(await rejection(conn.read()), { code: 1009 });
  t.equal((await wsClose).code, 1009);
});

t.test("setReadLimit changes the limit; Infinity removes it", async (t) => {
  const p = await pair({}, { readLimit: 10 });
  t.teardown(p.close);
  p.peer.conn.setReadLimit(100);
  await p.client.write(MessageType.Binary, binaryPayload(100));
  t.equal((await p.peer.conn.read()).data.length, 100, "100 bytes at a limit of 100");
  p.peer.conn.setReadLimit(Infinity);
  const big = binaryPayload(1024 * 1024, 5);
  await p.client.write(MessageType.Binary, big);
  t.ok((await p.peer.conn.read()).data.equals(big), "1 MiB with no limit");
  for (const bad of [-1, Number.NaN, "10" as unknown as number]) {
    t.throws(() => p.peer.conn.setReadLimit(bad), RangeError, `setReadLimit(${String(bad)}) throws`);
  }
  // The dial option applies on the client: 11 bytes exceed 10.
  await p.peer.conn.write(MessageType.Text, "0123456789");
  t.equal((await p.client.read()).text(), "0123456789");
  await p.peer.conn.write(MessageType.Text, "0123456789a");
  t.match(await rejection(p.client.read()), { code: 1009 });
  t.match(await rejection(p.peer.conn.read()), { code: 1009, remote: true }, "the server received 1009");
});

t.test("reader streams frames as they arrive; the next read waits for the message's end", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const w = p.client.writer(MessageType.Binary);
  w.write(Buffer.from("first frame|"));
  const { type, stream } = await p.peer.conn.reader();
  t.equal(type, MessageType.Binary);
  t.equal((await nextChunk(stream)).toString(), "first frame|", "a chunk arrives before the message ends");

  const order: string[] = [];
  const next = p.peer.conn.read().then((m) => (order.push("read"), m));
  w.write(Buffer.from("second frame|"));
  t.equal((await nextChunk(stream)).toString(), "second frame|");
  t.equal(await hasSettled(next), false, "a read waits while the streamed message goes on");
  w.end(Buffer.from("last frame"));
  await p.client.write(MessageType.Text, "next message");
  const rest: Buffer[] = [];
  stream.on("data", (c: Buffer) => rest.push(c));
  const ended = once(stream, "end").then(() => order.push("stream end"));
  t.equal((await next).text(), "next message", "then it gets the next message");
  await ended;
  t.equal(Buffer.concat(rest).toString(), "last frame", "and the stream still holds the rest of its own");
  t.equal(order.length, 2);
});

t.test("a second reader waits for the first stream's message", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const w = p.client.writer(MessageType.Text);
  w.write("a1 ");
  const first = await p.peer.conn.reader();
  const second = p.peer.conn.reader();
  p.client.closeRead(); // something must read for the client to see its pong
  await p.client.ping(); // a round trip: "a1 " has been handled by the server
  t.equal(await hasSettled(second), false, "the second reader waits");
  w.end("a2");
  await p.client.write(MessageType.Text, "b");
  const chunks: Buffer[] = [];
  for await (const c of first.stream) chunks.push(c as Buffer);
  t.equal(Buffer.concat(chunks).toString(), "a1 a2");
  const b: Buffer[] = [];
  for await (const c of (await second).stream) b.push(c as Buffer);
  t.equal(Buffer.concat(b).toString(), "b");
});

t.test("destroying a reader stream mid-message discards the rest", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const w = p.client.writer(MessageType.Text);
  w.write("partial ");
  const { stream } = await p.peer.conn.reader();
  t.equal((await nextChunk(stream)).toString(), "partial ");
  stream.destroy();
  w.write("more that nobody reads ");
  w.end("end");
  await p.client.write(MessageType.Text, "the next message");
  const msg = await p.peer.conn.read();
  t.equal(msg.text(), "the next message", "the next read gets the next message");
  await p.client.write(MessageType.Binary, Buffer.from([1, 2, 3]));
  t.same([...(await p.peer.conn.read()).data], [1, 2, 3], "and the connection goes on");
});

t.test("reader of a whole message, and the read limit on a stream", async (t) => {
  const p = await pair({ readLimit: 1000 });
  t.teardown(p.close);
  await p.client.write(MessageType.Text, "héllo");
  const { type, stream } = await p.peer.conn.reader();
  t.equal(type, MessageType.Text);
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  t.equal(Buffer.concat(chunks).toString(), "héllo");
  const w = p.client.writer(MessageType.Binary);
  w.write(binaryPayload(600));
  const second = await p.peer.conn.reader();
  const errored = new Promise((resolve) => second.stream.once("error", resolve));
  second.stream.resume();
  w.end(binaryPayload(600));
  t.match(await errored, { code: 1009 }, "the stream fails with 1009 past the limit");
  t.match(await rejection(p.client.read()), { code: 1009, remote: true });
});

t.test("closeRead answers pings and fails on data with 1008", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const signal = p.peer.conn.closeRead();
  const reading = rejection(p.client.read());
  t.ok((await p.client.ping()) >= 0, "a ping is answered under closeRead");
  t.equal(signal.aborted, false);
  await p.client.write(MessageType.Text, "unexpected");
  const err = await reading;
  t.match(err, { code: 1008, remote: true }, "the peer sees 1008");
  t.equal(signal.aborted, true, "the signal aborts when the connection closes");
  t.type(signal.reason, CloseError);
  t.match(signal.reason, { code: 1008, errorCode: ErrorCode.UnexpectedData });
});

t.test("closeRead with a message already waiting fails at once; its signal follows a normal close", async (t) => {
  const marks = pingMarks();
  const p = await pair({ onPing: marks.onPing });
  t.teardown(p.close);
  await p.client.write(MessageType.Text, "already here");
  void p.client.ping().catch(() => undefined);
  await marks.next();
  const signal = p.peer.conn.closeRead();
  t.match(signal.reason, { code: 1008 }, "a queued message fails the connection with 1008");

  const q = await pair();
  t.teardown(q.close);
  const s2 = q.peer.conn.closeRead();
  const aborted = once(s2, "abort");
  await q.client.close(1000);
  await aborted;
  t.match(s2.reason, { code: 1000, remote: true }, "aborted with the peer's close");

  const r = await pair();
  t.teardown(r.close);
  const ac = new AbortController();
  const s3 = r.peer.conn.closeRead(ac.signal);
  ac.abort();
  t.equal((await r.client.closed).code, 1008, "aborting closeRead's own signal closes with 1008");
  t.equal(s3.aborted, true);
});

t.test("async iteration ends quietly on 1000, 1001 and 1005", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const closers: Array<[string, (c: Conn) => Promise<unknown>]> = [
    ["1000", (c) => c.close(1000)],
    ["1001", (c) => c.close(1001)],
  ];
  for (const [name, closeIt] of closers) {
    const client = await dial(srv.url);
    const { conn } = await srv.next();
    await client.write(MessageType.Text, "one");
    const got: string[] = [];
    const loop = (async () => {
      for await (const m of conn) got.push(m.text());
    })();
    await closeIt(client);
    await loop;
    t.same(got, ["one"], `${name}: iteration yields the message and ends`);
  }
  const ws = await wsClient(srv.url);
  const { conn } = await srv.next();
  ws.send("one");
  ws.close();
  const got: string[] = [];
  for await (const m of conn) got.push(m.text());
  t.same(got, ["one"], "1005 (close without status): ends quietly");
});

t.test("async iteration throws CloseError on 1011, 4000 and 1006", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const closers: Array<[number, (c: Conn) => unknown]> = [
    [1011, (c) => c.close(1011, "oops")],
    [4000, (c) => c.close(4000)],
    [1006, (c) => c.closeNow()],
  ];
  for (const [code, closeIt] of closers) {
    const client = await dial(srv.url);
    const { conn } = await srv.next();
    const got = new AsyncQueue<string>();
    await client.write(MessageType.Text, "one");
    const loop = (async () => {
      for await (const m of conn) got.push(m.text());
    })();
    t.equal(await got.shift(), "one", `${code}: the message comes first`);
    void closeIt(client);
    const err = await rejection(loop);
    t.type(err, CloseError);
    t.match(err, { code }, `${code}: iteration throws`);
    await client.closed;
  }
});

t.test("breaking out of iteration leaves the connection open", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  await p.client.write(MessageType.Text, "a");
  await p.client.write(MessageType.Text, "b");
  for await (const m of p.peer.conn) {
    t.equal(m.text(), "a");
    break;
  }
  t.equal((await p.peer.conn.read()).text(), "b", "the next message is still there");
});

t.test("complete messages received before a close are still returned", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  await p.client.write(MessageType.Text, "m1");
  await p.client.write(MessageType.Binary, Buffer.from("m2"));
  const w = p.client.writer(MessageType.Text);
  w.on("error", () => undefined);
  await new Promise((resolve) => w.write("never finished", resolve));
  await p.client.close(1000, "done");
  await p.peer.conn.closed;
  t.equal((await p.peer.conn.read()).text(), "m1");
  const m2 = await p.peer.conn.read();
  t.equal(m2.type, MessageType.Binary);
  t.equal(m2.data.toString(), "m2");
  t.match(await rejection(p.peer.conn.read()), { code: 1000, reason: "done" }, "then the close");
});

t.test("reads are served in call order", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const reads = [p.peer.conn.read(), p.peer.conn.read(), p.peer.conn.read()];
  for (const s of ["x", "y", "z"]) await p.client.write(MessageType.Text, s);
  t.same((await Promise.all(reads)).map((m) => m.text()), ["x", "y", "z"]);
});

t.test("text messages are validated across fragments: invalid UTF-8 fails with 1007", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const ws = await wsClient(srv.url);
  const { conn } = await srv.next();
  const euro = Buffer.from("€");
  await wsSendFragments(ws, [euro.subarray(0, 1), euro.subarray(1)], false);
  t.equal((await conn.read()).text(), "€", "a character split over two frames is valid");
  const wsClose = wsClosed(ws);
  void wsSendFragments(ws, [Buffer.from([0x61, 0xe2]), Buffer.from([0x28, 0x61])], false).catch(() => undefined);
  t.match(await rejection(conn.read()), { code: 1007 });
  t.equal((await wsClose).code, 1007);
});

t.test("iteration throws 1009 for a queued message over a read limit lowered while it waited", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  await p.client.write(MessageType.Text, "small");
  await p.client.write(MessageType.Binary, Buffer.alloc(100));
  const conn = p.peer.conn;
  const messages = conn[Symbol.asyncIterator]();
  t.equal(messages[Symbol.asyncIterator](), messages, "the iterator is its own iterable");
  const first = await messages.next();
  t.equal(first.done ? undefined : first.value.text(), "small");
  // The pong comes after the 100-byte message on the wire: once it is back,
  // that message waits whole in the queue.
  await conn.ping();
  conn.setReadLimit(10);
  const err = await rejection(messages.next());
  t.type(err, CloseError);
  t.match(err, { code: 1009, errorCode: ErrorCode.MessageTooBig }, "the loop throws the 1009 it closed with");
  t.same(await messages.next(), { done: true, value: undefined }, "and is over");
  t.match(await p.client.closed, { code: 1009 }, "the peer got the 1009");
});

t.test("single-frame binary messages from 16 KiB stay masked until taken: same bytes by read and reader, any chunking, any key", async (t) => {
  const srv = await startWsconnServer({ readLimit: 2 << 20 });
  t.teardown(() => srv.close());
  const peer = await rawConnect(srv.port);
  t.teardown(() => peer.destroy());
  const { conn } = await srv.next();
  const cases: Array<[string, number, Buffer, Chop]> = [
    ["16 KiB, random key, whole", 16 * 1024, randomBytes(4), "whole"],
    ["40000 B, all-zero key, 1000-byte chunks", 40_000, Buffer.alloc(4), 1000],
    ["70000 B, random key, 997-byte chunks", 70_000, randomBytes(4), 997],
    ["16 KiB - 1 (unmasked as it arrives instead), 1000-byte chunks", 16 * 1024 - 1, randomBytes(4), 1000],
    ["1 MiB + 3, random key, 65536-byte chunks", 1024 * 1024 + 3, randomBytes(4), 65536],
  ];
  for (const [name, size, mask, chop] of cases) {
    const payload = randomBytes(size);
    await peer.send([frame.binary(payload, { mask })], chop);
    t.ok((await conn.read()).data.equals(payload), `read: ${name}`);
    await peer.send([frame.binary(payload, { mask })], chop);
    const { stream } = await conn.reader();
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    t.ok(Buffer.concat(chunks).equals(payload), `reader: ${name}`);
  }
  // Text is unmasked and validated as it arrives.
  const text = Buffer.alloc(20_000, 0x61);
  text[19_000] = 0xff;
  await peer.send([frame.text(text)], 4096);
  const err = await rejection(conn.read());
  t.match(err, { code: 1007, errorCode: ErrorCode.InvalidUtf8 }, "invalid UTF-8 in a large text message fails with 1007");
});
