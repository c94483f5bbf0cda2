/**
 * Two hubs share broadcasts and a topic through a real redis-server, with
 * RedisBus over node-redis clients. The test starts its own redis-server on
 * 127.0.0.1 with a free port and no persistence, and stops it. It is skipped,
 * with a message saying so, only when the redis-server binary is absent.
 */

import { createClient } from "redis";
import t, { type Test } from "tap";
import { MessageType, RedisBus } from "../../src/index.js";
import { hubNode, type HubNode, texts } from "../helpers/hub-node.js";
import { redisMissing, startRedis } from "../helpers/redis-server.js";

/** redisBus connects a publisher and a subscriber client and wraps them. */
async function redisBus(t: Test, url: string): Promise<RedisBus> {
  const publisher = createClient({ url });
  const subscriber = publisher.duplicate();
  await Promise.all([publisher.connect(), subscriber.connect()]);
  t.teardown(async () => {
    await Promise.all([publisher.close(), subscriber.close()]);
  });
  return new RedisBus(publisher, subscriber);
}

interface Node extends HubNode {
  errors: Error[];
}

/** node starts a hub on `bus` that records its 'busError' events. */
async function node(t: Test, bus: RedisBus, nodeId: string): Promise<Node> {
  const errors: Error[] = [];
  const n = await hubNode(t, { bus, nodeId }, (hub) => hub.on("busError", (err) => errors.push(err)));
  return { ...n, errors };
}

t.test(
  "two hubs share a topic and broadcasts through Redis pub/sub",
  { skip: redisMissing },
  async (t) => {
    const { url } = await startRedis(t);
    const A = await node(t, await redisBus(t, url), "node-a");
    const B = await node(t, await redisBus(t, url), "node-b");
    const a1 = await A.join(["room"]);
    const b1 = await B.join(["room"]);
    const b2 = await B.join();
    await Promise.all([A.hub.settled(), B.hub.settled()]); // SUBSCRIBEs acknowledged by Redis

    t.equal(A.hub.publish("room", MessageType.Text, "hello room"), 1);
    t.same(await texts(b1.conn, 1), ["hello room"], "a subscriber on the other node receives it");
    t.same(await texts(a1.conn, 1), ["hello room"]);

    t.equal(B.hub.broadcast(MessageType.Text, "to everyone"), 2);
    t.same(await texts(a1.conn, 1), ["to everyone"]);
    t.same(await texts(b1.conn, 1), ["to everyone"]);
    t.same(await texts(b2.conn, 1), ["to everyone"]);

    const bytes = Buffer.from([0, 0xff, 0xfe, 0x80, 10, 13]);
    A.hub.publish("room", MessageType.Binary, bytes);
    const got = await b1.conn.read();
    t.equal(got.type, MessageType.Binary);
    t.same([...got.data], [...bytes], "binary payloads cross Redis intact");
    t.same([...(await a1.conn.read()).data], [...bytes]);

    // No echo: a node's own message comes back from Redis and is ignored, so
    // a1 sees the next message from B right after B's broadcast above.
    B.hub.publish("room", MessageType.Text, "sync");
    t.same(await texts(a1.conn, 1), ["sync"], "nothing arrived twice");
    t.same(await texts(b1.conn, 1), ["sync"]);
    t.match(A.hub.stats, { busSent: 2, busReceived: 2, busErrors: 0 });
    t.match(B.hub.stats, { busSent: 2, busReceived: 2, busErrors: 0 });

    // Leaving a topic unsubscribes on Redis once the node has no subscriber left.
    B.hub.unsubscribe(b1.client, "room");
    await B.hub.settled();
    A.hub.publish("room", MessageType.Text, "only a1");
    B.hub.broadcast(MessageType.Text, "after");
    t.same(await texts(b1.conn, 1), ["after"], "b1 left the topic");
    t.same(await texts(a1.conn, 2), ["only a1", "after"]);
    t.equal(B.hub.stats.busReceived, 2, "node B no longer receives the topic");

    await Promise.all([A.hub.close(), B.hub.close()]); // before the Redis clients close
    t.same([...A.errors, ...B.errors], [], "no bus errors");
  },
);
