/**
 * Hubs sharing broadcasts and topics through a bus: the in-process
 * MemoryBus, the envelope format, echo suppression, channel bookkeeping and
 * how bus failures are reported.
 */

import { once } from "node:events";
import t from "tap";
import { decodeEnvelope, encodeEnvelope } from "../../src/hub/bus.js";
import { dial, Hub, type HubBus, MemoryBus, MessageType } from "../../src/index.js";
import { hubNode, texts } from "../helpers/hub-node.js";
import { startServer } from "../helpers/peers.js";

t.test("two hubs on a MemoryBus share broadcasts and topics, without echo", async (t) => {
  const bus = new MemoryBus();
  const A = await hubNode(t, { bus, nodeId: "node-a" });
  const B = await hubNode(t, { bus, nodeId: "node-b" });
  t.equal(bus.channelCount, 1, "both hubs listen on the broadcast channel");
  const a1 = await A.join(["room"]);
  const b1 = await B.join(["room"]);
  const b2 = await B.join();
  t.equal(bus.channelCount, 2, "and on the channel of a topic with local subscribers");
  await A.hub.settled();

  t.equal(A.hub.broadcast(MessageType.Text, "hello"), 1, "the count is of local clients");
  t.equal(A.hub.broadcast(MessageType.Text, "not a1", { except: a1.client }), 0, "except applies on this node");
  t.equal(B.hub.publish("room", MessageType.Text, "room from b"), 1);
  t.equal(A.hub.publish("lobby", MessageType.Text, "nobody"), 0);
  B.hub.broadcast(MessageType.Text, "end");
  t.same(await texts(a1.conn, 3), ["hello", "room from b", "end"], "a1: its own node's message once, then the others");
  // Messages from different nodes have no order between them; each node's keep theirs.
  const fromA = (m: string[]): string[] => m.filter((x) => x === "hello" || x === "not a1");
  const b1got = await texts(b1.conn, 4);
  t.same(fromA(b1got), ["hello", "not a1"]);
  t.same(b1got.filter((x) => !fromA([x]).length), ["room from b", "end"]);
  const b2got = await texts(b2.conn, 3);
  t.same(fromA(b2got), ["hello", "not a1"]);
  t.same(b2got.filter((x) => !fromA([x]).length), ["end"]);
  t.match(A.hub.stats, { busSent: 3, busReceived: 2 });
  t.match(B.hub.stats, { busSent: 2, busReceived: 2 });

  // Binary data crosses the bus byte for byte.
  const bytes = Buffer.from([0, 0xff, 0x80, 0x7f, 1]);
  A.hub.broadcast(MessageType.Binary, bytes);
  const got = await b2.conn.read();
  t.equal(got.type, MessageType.Binary);
  t.same([...got.data], [...bytes]);

  // The topic channel is left when the last local subscriber goes.
  A.hub.unsubscribe(a1.client, "room");
  B.hub.unsubscribe(b1.client, "room");
  t.equal(bus.channelCount, 1);
  // A message already on its way to a topic nobody here subscribes to any more is ignored.
  B.hub.subscribe(b1.client, "late");
  A.hub.publish("late", MessageType.Text, "too late");
  B.hub.unsubscribe(b1.client, "late");
  B.hub.broadcast(MessageType.Text, "after");
  t.same([...(await b1.conn.read()).data], [...bytes], "b1 had the binary broadcast too");
  t.same(await texts(b1.conn, 1), ["after"], "but not the message to a topic it had left");
  t.equal(B.hub.stats.busReceived, 4, "it arrived, and was dropped");
});

t.test("a message from the bus after close is ignored; closing leaves every channel", async (t) => {
  const bus = new MemoryBus();
  const A = new Hub({ bus });
  const B = new Hub({ bus });
  const srv = await startServer({}, (conn) => {
    conn.closeRead();
    A.add(conn, {}, { topics: ["x"] });
  });
  t.teardown(() => srv.close());
  const c = await dial(srv.url);
  while (A.size < 1) await once(A, "open");
  t.equal(bus.channelCount, 2);
  B.broadcast(MessageType.Text, "in flight"); // delivered on a microtask
  const closing = A.close();
  t.equal(bus.channelCount, 1, "A left its channels at once");
  await closing;
  t.equal(A.stats.busReceived, 0, "the message in flight was ignored");
  await B.close();
  t.equal(bus.channelCount, 0);
  t.equal((await c.closed).code, 1001);
});

t.test("bus failures are reported as 'busError', or one warning", async (t) => {
  const failing: HubBus = {
    publish: () => {
      throw new Error("publish exploded");
    },
    subscribe: () => Promise.reject(new Error("subscribe refused")),
    unsubscribe: () => undefined,
  };
  const hub = new Hub({ bus: failing });
  const errors: Error[] = [];
  hub.on("busError", (err) => errors.push(err));
  await hub.settled();
  t.equal(errors.length, 1);
  t.match(errors[0]!.message, /failed to use the hub bus: subscribe refused/);
  hub.broadcast(MessageType.Text, "x");
  t.match(errors[1]!.message, /failed to use the hub bus: publish exploded/);
  t.equal((errors[1]!.cause as Error).message, "publish exploded");
  t.equal(hub.stats.busErrors, 2);
  await hub.close();

  // Without a listener: one process warning, never an 'error' event.
  const quiet = new Hub({ bus: failing });
  const warning = once(process, "warning") as Promise<[Error & { code?: string }]>;
  quiet.broadcast(MessageType.Text, "x");
  quiet.broadcast(MessageType.Text, "y");
  const [w] = await warning;
  t.equal(w.code, "WSCONN_HUB_BUS");
  t.match(w.message, /busError/);
  await quiet.settled();
  t.equal(quiet.stats.busErrors, 3);
  await quiet.close();
});

t.test("malformed bus messages are reported and dropped", async (t) => {
  const bus = new MemoryBus();
  const hub = new Hub({ bus, channelPrefix: "test" });
  const errors: string[] = [];
  hub.on("busError", (err) => errors.push(err.message));
  const raw = bus as unknown as { publish(channel: string, message: unknown): void };
  raw.publish("test:all", Buffer.from("garbage"));
  raw.publish("test:all", "a string");
  await hub.settled();
  await new Promise((resolve) => setImmediate(resolve));
  t.same(errors, [
    "failed to receive from the hub bus: the bus delivered a message that is not a hub envelope",
    "failed to receive from the hub bus: the bus delivered a message that is not a Buffer (subscribe in buffer mode)",
  ]);
  t.equal(hub.stats.busReceived, 0);
  await hub.close();
});

t.test("envelope format", async (t) => {
  const node = Buffer.from("n1");
  const env = encodeEnvelope(node, MessageType.Binary, Buffer.from([9, 8]));
  t.same([...env], [1, 2, 2, 0x6e, 0x31, 9, 8], "version, type, node length, node, payload");
  t.same(decodeEnvelope(env), { node: "n1", type: MessageType.Binary, data: Buffer.from([9, 8]), compress: true });
  t.same(decodeEnvelope(encodeEnvelope(node, MessageType.Text, Buffer.alloc(0))), { node: "n1", type: MessageType.Text, data: Buffer.alloc(0), compress: true });
  const plain = encodeEnvelope(node, MessageType.Text, Buffer.from("z"), false);
  t.equal(plain[1], 0x81, "compress: false sets the type byte's high bit");
  t.same(decodeEnvelope(plain), { node: "n1", type: MessageType.Text, data: Buffer.from("z"), compress: false });
  const cases: Array<[string, unknown, RegExp]> = [
    ["not a buffer", "x", /not a Buffer/],
    ["too short", Buffer.from([1, 1]), /not a hub envelope/],
    ["wrong version", Buffer.from([2, 1, 1, 0x61]), /not a hub envelope/],
    ["bad type", Buffer.from([1, 3, 1, 0x61]), /malformed/],
    ["bad type with the uncompressed flag", Buffer.from([1, 0x83, 1, 0x61]), /malformed/],
    ["empty node id", Buffer.from([1, 1, 0]), /malformed/],
    ["node id past the end", Buffer.from([1, 1, 5, 0x61]), /malformed/],
  ];
  for (const [name, input, error] of cases) t.match(decodeEnvelope(input), error, name);
  t.throws(() => new Hub({ bus: new MemoryBus(), nodeId: "" }), RangeError);
  t.throws(() => new Hub({ bus: new MemoryBus(), nodeId: "x".repeat(256) }), RangeError);
  t.throws(() => new Hub({ bus: new MemoryBus(), nodeId: 5 as unknown as string }), RangeError);
});
