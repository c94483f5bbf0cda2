/**
 * The write side: whole messages in call order under concurrency, writers
 * reserving the write side, control frames between a writer's frames,
 * backpressure against a peer that does not read, and bad arguments.
 */

import t from "tap";
import { CloseError, type Conn, ErrorCode, MessageType } from "../../src/index.js";
import { binaryPayload, hasSettled, OP, pair, parseCloseBody, rawClient, type RawPeer, rejection, rng, startWsconnServer, textPayload, wsClient, wsMessages, wsNext } from "../helpers/interop.js";

const SEED = Number(process.env.WSCONN_SEED) || (Math.random() * 2 ** 32) >>> 0;

/** randomMessages draws `count` messages: mostly small, some past 64 KiB. */
function randomMessages(seed: number, count: number): Array<{ type: MessageType; data: Buffer }> {
  const next = rng(seed);
  const list = [];
  for (let i = 0; i < count; i++) {
    const r = next();
    const size = r < 0.7 ? Math.floor(next() * 200) : r < 0.95 ? Math.floor(next() * 70000) : Math.floor(next() * 300000);
    const text = next() < 0.5;
    list.push({ type: text ? MessageType.Text : MessageType.Binary, data: text ? textPayload(size) : binaryPayload(size, i) });
  }
  return list;
}

t.test("concurrent writes arrive whole and in call order", async (t) => {
  t.comment(`seed ${SEED} (set WSCONN_SEED to replay)`);
  const messages = randomMessages(SEED, 200);

  const p = await pair({ readLimit: Infinity });
  t.teardown(p.close);
  const writes = messages.map((m) => p.client.write(m.type, m.data));
  let ok = 0;
  for (const [i, m] of messages.entries()) {
    const got = await p.peer.conn.read();
    if (got.type === m.type && got.data.equals(m.data)) ok++;
    else t.fail(`client to server: message ${i} (${m.data.length} bytes) differs`);
  }
  await Promise.all(writes);
  t.equal(ok, messages.length, "client to wsconn server: every message byte-exact, in order");

  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const ws = await wsClient(srv.url);
  const received = wsMessages(ws);
  const { conn } = await srv.next();
  const serverWrites = messages.map((m) => conn.write(m.type, m.data));
  let wsOk = 0;
  for (const m of messages) {
    const got = await wsNext(ws, received);
    if (got.isBinary === (m.type === MessageType.Binary) && got.data.equals(m.data)) wsOk++;
  }
  await Promise.all(serverWrites);
  t.equal(wsOk, messages.length, "server to ws client: every message byte-exact, in order");
  await conn.close();
});

t.test("a writer reserves the write side from its creation", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const w = p.client.writer(MessageType.Text);
  const later = p.client.write(MessageType.Binary, Buffer.from("write made after writer()"));
  const w2 = p.client.writer(MessageType.Text);
  w2.end("second writer");
  t.equal(await hasSettled(later), false, "the write waits for the writer");
  w.write("writer ");
  w.write("message");
  w.end();
  await later;
  t.equal((await p.peer.conn.read()).text(), "writer message", "the writer's message comes first");
  const second = await p.peer.conn.read();
  t.equal(second.type, MessageType.Binary);
  t.equal(second.text(), "write made after writer()", "then the write");
  t.equal((await p.peer.conn.read()).text(), "second writer", "then the next writer");
});

t.test("a writer's message can be streamed piece by piece, and empty", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const w = p.client.writer(MessageType.Binary);
  w.end();
  const empty = await p.peer.conn.read();
  t.equal(empty.type, MessageType.Binary);
  t.equal(empty.data.length, 0, "a writer ended at once sends an empty message");
  const big = binaryPayload(200000, 9);
  const w2 = p.client.writer(MessageType.Binary);
  for (let off = 0; off < big.length; off += 30000) w2.write(big.subarray(off, off + 30000));
  w2.end();
  p.peer.conn.setReadLimit(Infinity);
  t.ok((await p.peer.conn.read()).data.equals(big), "200 kB written in pieces arrives byte-exact");
});

t.test("control frames go out between a writer's frames", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const ws = await wsClient(srv.url);
  const { conn } = await srv.next();
  const events: string[] = [];
  ws.on("ping", () => events.push("ping"));
  const messages = wsMessages(ws);
  const w = conn.writer(MessageType.Text);
  await new Promise((resolve) => w.write("part one, ", resolve));
  const reading = conn.read(); // something must read for the pong to be seen
  const rtt = await conn.ping();
  t.ok(rtt >= 0, "the ping was answered while the message was open");
  t.same(events, ["ping"], "the peer saw the ping before the message ended");
  w.end("part two");
  const m = await wsNext(ws, messages);
  t.equal(m.data.toString(), "part one, part two");
  ws.send("done");
  t.equal((await reading).text(), "done");
  await conn.close();
});

/**
 * fillUntilStalled writes 64 KiB messages to a peer that does not read until
 * a write stays pending; it records the largest bufferedAmount seen. A write
 * that has not settled 250 ms after the previous ones did is taken as
 * stalled: the non-event needs a time bound.
 */
async function fillUntilStalled(conn: Conn, signal?: AbortSignal): Promise<{ pending: Promise<void>; writes: number; maxBuffered: number }> {
  const chunk = binaryPayload(64 * 1024, 1);
  let maxBuffered = 0;
  for (let writes = 1; writes < 4096; writes++) {
    const p = conn.write(MessageType.Binary, chunk, signal);
    p.catch(() => undefined);
    maxBuffered = Math.max(maxBuffered, conn.bufferedAmount);
    let timer: NodeJS.Timeout | undefined;
    const settled = await Promise.race([
      p.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 250))),
    ]);
    clearTimeout(timer);
    if (!settled) return { pending: p, writes, maxBuffered };
  }
  throw new Error("the writes never stalled");
}

/** drainPeer resumes a paused raw peer and counts the data frames it gets, up to the close. */
async function drainPeer(peer: RawPeer, expected: number): Promise<{ frames: number; close: number | undefined }> {
  peer.socket.resume();
  let frames = 0;
  for (;;) {
    const f = await peer.frames.next();
    if (f.opcode === OP.close) return { frames, close: parseCloseBody(f.payload).code };
    if (f.opcode === OP.binary && f.payload.length === 64 * 1024) frames++;
    if (frames === expected) return { frames, close: undefined };
  }
}

t.test("backpressure: awaiting writes to a peer that does not read stays bounded", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const peer = await rawClient(srv.port);
  const { conn } = await srv.next();
  peer.socket.pause();
  const { pending, writes, maxBuffered } = await fillUntilStalled(conn);
  const bound = 16 * 1024 + 64 * 1024 + 14;
  t.comment(`${writes} writes of 64 KiB before the stall; largest bufferedAmount ${maxBuffered}`);
  t.ok(maxBuffered <= bound, `bufferedAmount stayed under ${bound} (max ${maxBuffered})`);
  t.ok(conn.bufferedAmount <= bound, `bufferedAmount at the stall: ${conn.bufferedAmount}`);
  t.equal(await hasSettled(pending), false, "the write is still pending");
  const drained = drainPeer(peer, writes);
  await pending;
  t.pass("the write resolves once the peer reads");
  const { frames } = await drained;
  t.equal(frames, writes, "every message arrived");
  await conn.write(MessageType.Text, "still fine");
  const f = await peer.frames.next();
  t.equal(f.payload.toString(), "still fine");
  conn.closeNow();
});

t.test("an abort while a write waits for the socket to drain fails the connection with 1011", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const peer = await rawClient(srv.port);
  const { conn } = await srv.next();
  peer.socket.pause();
  const ac = new AbortController();
  const { pending, writes } = await fillUntilStalled(conn, ac.signal);
  const reason = new Error("too slow");
  ac.abort(reason);
  t.equal(await rejection(pending), reason, "the write rejects with the reason");
  t.match(await rejection(conn.write(MessageType.Text, "x")), { code: 1011, errorCode: ErrorCode.AbortedMidMessage });
  const { frames, close } = await drainPeer(peer, writes + 1);
  t.equal(frames, writes, "the message whose bytes were on the wire went out whole");
  t.equal(close, 1011, "then the close frame 1011");
  peer.socket.destroy();
});

t.test("bad arguments: TypeError, and the connection stays usable", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  for (const type of [0, 3, 8, 9, "text"]) {
    t.type(await rejection(p.client.write(type as MessageType, "x")), TypeError, `write type ${String(type)}`);
    t.throws(() => p.client.writer(type as MessageType), TypeError, `writer type ${String(type)}`);
  }
  for (const data of [42, null, undefined, { length: 1 }, [1, 2]]) {
    t.type(await rejection(p.client.write(MessageType.Binary, data as never)), TypeError, `data ${JSON.stringify(data)}`);
  }
  await p.client.write(MessageType.Binary, new Uint8Array([7, 8, 9]));
  const m = await p.peer.conn.read();
  t.same([...m.data], [7, 8, 9], "a Uint8Array is accepted, and nothing bad was sent");
});

t.test("writes after close reject with CloseError", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const closing = p.client.close(1000);
  const err = await rejection(p.client.write(MessageType.Text, "too late"));
  t.type(err, CloseError);
  t.match(err, { code: 1000 });
  await closing;
  t.match(await rejection(p.peer.conn.write(MessageType.Text, "after the peer closed")), { code: 1000, remote: true });
});
