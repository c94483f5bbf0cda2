/**
 * messageStream: an object-mode Duplex of whole messages. Pipelines keep
 * boundaries and types; what writes accept; how closes end the stream.
 */

import { once } from "node:events";
import { Duplex, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import t, { type Test } from "tap";
import { closeStatus, type Conn, dial, type Message, messageStream, MessageType } from "../../src/index.js";
import { startServer } from "../helpers/peers.js";

async function pair(t: Test): Promise<{ client: Conn; server: Conn }> {
  const srv = await startServer({ readLimit: 1024 * 1024 });
  t.teardown(() => srv.close());
  const accepted = srv.nextConn();
  const client = await dial(srv.url, { readLimit: 1024 * 1024 });
  const server = await accepted;
  t.teardown(() => {
    client.closeNow();
    server.closeNow();
  });
  return { client, server };
}

/** outcome reads `stream` to its end and says how it ended. */
function outcome(stream: Duplex): Promise<{ messages: Message[]; ended: boolean; error?: Error }> {
  const messages: Message[] = [];
  return new Promise((resolve) => {
    stream.on("data", (m: Message) => messages.push(m));
    stream.on("end", () => resolve({ messages, ended: true }));
    stream.on("error", (error) => resolve({ messages, ended: false, error }));
  });
}

/** shout upper-cases text messages and reverses binary ones, keeping each type. */
const shout = (): Transform =>
  new Transform({
    objectMode: true,
    transform(msg: Message, _encoding, callback) {
      const data = msg.type === MessageType.Text ? msg.text().toUpperCase() : Buffer.from(msg.data).reverse();
      callback(null, { type: msg.type, data });
    },
  });

t.test("pipeline(messageStream, transform, messageStream) keeps boundaries and types", async (t) => {
  const { client, server } = await pair(t);
  const ms = messageStream(server);
  const served = pipeline(ms, shout(), ms);
  const big = Buffer.alloc(200_000, 7);
  big[0] = 1;
  const sent: Array<{ type: MessageType; data: string | Buffer }> = [
    { type: MessageType.Text, data: "hello" },
    { type: MessageType.Binary, data: Buffer.from([0, 1, 2]) },
    { type: MessageType.Text, data: "" },
    { type: MessageType.Binary, data: big },
    { type: MessageType.Text, data: "ünïcödé" },
    { type: MessageType.Binary, data: Buffer.alloc(0) },
  ];
  for (const m of sent) await client.write(m.type, m.data);
  for (const m of sent) {
    const got = await client.read();
    t.equal(got.type, m.type, `type of ${m.type === MessageType.Text ? "text" : "binary"} message kept`);
    if (typeof m.data === "string") t.equal(got.text(), m.data.toUpperCase());
    else t.ok(got.data.equals(Buffer.from(m.data).reverse()), `binary message of ${m.data.length} bytes, whole`);
  }
  await client.close();
  await served;
  t.same(await server.closed, { code: 1000, reason: "", wasClean: true }, "the pipeline ends cleanly on a 1000 close");
});

t.test("for await yields the Message objects of conn.read()", async (t) => {
  const { client, server } = await pair(t);
  await server.write(MessageType.Text, "one");
  await server.write(MessageType.Binary, "two");
  void server.close(1001, "bye");
  const got: Array<[MessageType, string]> = [];
  for await (const msg of messageStream(client)) got.push([(msg as Message).type, (msg as Message).text()]);
  t.same(got, [
    [MessageType.Text, "one"],
    [MessageType.Binary, "two"],
  ]);
  t.equal((await client.closed).code, 1001, "1001 ends the iteration quietly");
});

t.test("what a write accepts", async (t) => {
  const { client, server } = await pair(t);
  const ms = messageStream(client);
  ms.write("text");
  ms.write(Buffer.from("buffer"));
  ms.write(new Uint8Array([1, 2, 3]));
  ms.write({ type: MessageType.Text, data: Buffer.from("typed text") });
  ms.write({ type: MessageType.Binary, data: "typed binary" });
  const expected: Array<[MessageType, string]> = [
    [MessageType.Text, "text"],
    [MessageType.Binary, "buffer"],
    [MessageType.Binary, "\x01\x02\x03"],
    [MessageType.Text, "typed text"],
    [MessageType.Binary, "typed binary"],
  ];
  for (const [type, data] of expected) {
    const msg = await server.read();
    t.equal(msg.type, type);
    t.equal(msg.data.toString("latin1"), data);
  }
  ms.end();
  await once(ms, "finish");
  t.same(await server.closed, { code: 1000, reason: "", wasClean: true }, "end() closes with 1000");
});

t.test("a write of anything else destroys the stream with a TypeError", async (t) => {
  const bad: Array<[string, unknown]> = [
    ["a number", 42],
    ["an object without a type", { data: "x" }],
    ["a bad type", { type: 9, data: "x" }],
    ["bad data", { type: MessageType.Binary, data: 42 }],
  ];
  for (const [name, chunk] of bad) {
    t.test(name, async (t) => {
      const { client, server } = await pair(t);
      const ms = messageStream(client);
      ms.write(chunk);
      const [error] = (await once(ms, "error")) as [Error];
      t.type(error, TypeError);
      t.equal((await server.closed).code, 1006, "the connection is dropped");
    });
  }
});

t.test("how a close from the peer ends the stream", async (t) => {
  const cases: Array<{ code: number; eof: boolean }> = [
    { code: 1000, eof: true },
    { code: 1001, eof: true },
    { code: 1011, eof: false },
    { code: 4001, eof: false },
  ];
  for (const c of cases) {
    t.test(`${c.code}`, async (t) => {
      const { client, server } = await pair(t);
      const ms = messageStream(client);
      const result = outcome(ms);
      await server.write(MessageType.Text, "last");
      await server.close(c.code);
      const { messages, ended, error } = await result;
      t.same(messages.map((m) => m.text()), ["last"], "messages before the close are read first");
      t.equal(ended, c.eof);
      if (!c.eof) t.equal(closeStatus(error), c.code, "the error carries the code");
    });
  }
});

t.test("destroy() and abort drop the connection", async (t) => {
  const { client, server } = await pair(t);
  const controller = new AbortController();
  const ms = messageStream(client, controller.signal);
  const result = outcome(ms);
  controller.abort(new Error("stop"));
  t.equal((await result).error?.message, "stop");
  t.equal((await server.closed).code, 1006);
});

t.test("the readable side reads one message ahead, no more", async (t) => {
  const { client, server } = await pair(t);
  const ms = messageStream(client);
  ms.pause();
  for (let i = 0; i < 50; i++) await server.write(MessageType.Binary, Buffer.alloc(10_000));
  await once(ms, "readable");
  // Queued messages are read in microtasks: one macrotask turn lets any read-ahead happen.
  await new Promise((resolve) => setImmediate(resolve));
  t.ok(ms.readableLength <= 1, `buffered ${ms.readableLength} message(s) while nobody reads`);
  let count = 0;
  ms.on("data", () => {
    if (++count === 50) void server.close();
  });
  await once(ms, "end");
  t.equal(count, 50, "every message arrives once read");
});
