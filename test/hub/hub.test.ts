/**
 * Hub: registry, events, broadcast, topics, slow-consumer policies, per-client
 * sends and closes, graceful shutdown, option checks. Real sockets on
 * 127.0.0.1; the server side of every connection reads (closeRead), as the
 * documentation asks.
 */

import { once } from "node:events";
import t, { type Test } from "tap";
import { CloseError, type Conn, dial, Hub, type HubClient, type HubOptions, MessageType, PreparedMessage } from "../../src/index.js";
import { startServer, type TestServer } from "../helpers/peers.js";

interface Fixture {
  hub: Hub;
  srv: TestServer;
  /** Dials a client and resolves with it and its server-side handle in the hub. */
  join(meta?: Record<string, unknown>, options?: { id?: string; topics?: string[] }): Promise<{ conn: Conn; client: HubClient }>;
  /** Closes the hub, then the server. */
  end(): Promise<void>;
}

/**
 * fixture starts a hub and a server that adds each connection to it. The
 * meta and options of the next join are handed over through `pending`.
 */
async function fixture(t: Test, options: HubOptions = {}): Promise<Fixture> {
  const hub = new Hub(options);
  const pending: Array<{ meta?: Record<string, unknown>; options?: { id?: string; topics?: string[] }; resolve(c: HubClient): void }> = [];
  const srv = await startServer({}, (conn) => {
    conn.closeRead();
    const next = pending.shift()!;
    next.resolve(hub.add(conn, next.meta, next.options));
  });
  const fx: Fixture = {
    hub,
    srv,
    async join(meta, opts) {
      const added = new Promise<HubClient>((resolve) => pending.push({ meta, options: opts, resolve }));
      const conn = await dial(srv.url);
      return { conn, client: await added };
    },
    async end() {
      await hub.close();
      await srv.close();
    },
  };
  t.teardown(() => fx.end());
  return fx;
}

/** tick lets the event loop turn once. */
function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** texts reads `n` text messages. */
async function texts(conn: Conn, n: number): Promise<string[]> {
  const out: string[] = [];
  while (out.length < n) out.push((await conn.read()).text());
  return out;
}

/** closeCode reads until the connection closes and returns the close error. */
async function closeCode(conn: Conn): Promise<CloseError> {
  for (;;) {
    try {
      await conn.read();
    } catch (err) {
      if (err instanceof CloseError) return err;
      throw err;
    }
  }
}

t.test("registry: add, size, iteration, ids, meta, open and close events", async (t) => {
  const fx = await fixture(t);
  const opened: HubClient[] = [];
  fx.hub.on("open", (c) => opened.push(c));
  const a = await fx.join({ name: "ann" }, { id: "a" });
  const b = await fx.join();
  t.equal(fx.hub.size, 2);
  t.same([...fx.hub], [a.client, b.client], "iteration in order of arrival");
  t.same(opened, [a.client, b.client], "'open' for each");
  t.equal(fx.hub.get("a"), a.client);
  t.equal(fx.hub.get("b"), undefined);
  t.equal(a.client.id, "a");
  t.equal(b.client.id, undefined);
  t.same(a.client.meta, { name: "ann" });
  t.same(b.client.meta, {}, "meta defaults to an empty object");
  b.client.meta.name = "bob";
  t.equal([...fx.hub].find((c) => c.meta.name === "bob"), b.client, "fields attached later are kept");
  t.ok(fx.hub.has(a.client));
  t.ok(a.client.online);
  t.ok(a.client.addedAt <= Date.now());
  t.equal(a.client.rtt, undefined);
  t.equal(a.client.missedPings, 0);

  t.throws(() => fx.hub.add(a.client.conn), /already in the hub/, "the same connection twice");

  // The client leaves when its connection ends, from its side, however it ends.
  const closed = once(fx.hub, "close") as Promise<[HubClient, { code: number }]>;
  await a.conn.close(1000, "bye");
  const [who, info] = await closed;
  t.equal(who, a.client);
  t.equal(info.code, 1000);
  t.equal(fx.hub.size, 1);
  t.equal(fx.hub.get("a"), undefined, "its id is free again");
  t.notOk(a.client.online);
  t.notOk(fx.hub.has(a.client));

  const dropped = once(fx.hub, "close") as Promise<[HubClient, { code: number }]>;
  b.conn.closeNow();
  const [, info2] = await dropped;
  t.equal(info2.code, 1006, "a dropped TCP connection also removes it");
  t.equal(fx.hub.size, 0);

  const again = await fx.join({}, { id: "a" });
  t.equal(fx.hub.get("a"), again.client, "the id can be used again");
});

t.test("add refuses a taken id", async (t) => {
  const hub = new Hub();
  t.teardown(() => hub.close());
  const srv = await startServer({}, (conn) => conn.closeRead());
  t.teardown(() => srv.close());
  const c1 = await dial(srv.url);
  const c2 = await dial(srv.url);
  t.teardown(() => (c1.closeNow(), c2.closeNow()));
  const [s1, s2] = srv.conns;
  hub.add(s1!, {}, { id: "x" });
  t.throws(() => hub.add(s2!, {}, { id: "x" }), /id "x" is taken/);
  t.equal(hub.size, 1);
});

t.test("broadcast: framed once, queued to all, except and filter", async (t) => {
  const fx = await fixture(t);
  const a = await fx.join({ role: "admin" });
  const b = await fx.join({ role: "user" });
  const c = await fx.join({ role: "user" });
  t.equal(fx.hub.broadcast(MessageType.Text, "to all"), 3);
  t.equal(fx.hub.broadcast(MessageType.Text, "not a", { except: a.client }), 2);
  t.equal(fx.hub.broadcast(MessageType.Text, "admins", { filter: (cl) => cl.meta.role === "admin" }), 1);
  const pm = new PreparedMessage(MessageType.Binary, Buffer.from([1, 2, 3]));
  t.equal(fx.hub.broadcast(pm, { except: b.client }), 2);
  t.same(await texts(a.conn, 2), ["to all", "admins"]);
  t.same(await texts(b.conn, 2), ["to all", "not a"]);
  t.same(await texts(c.conn, 2), ["to all", "not a"]);
  const bin = await a.conn.read();
  t.equal(bin.type, MessageType.Binary);
  t.same([...bin.data], [1, 2, 3]);
  t.same([...(await c.conn.read()).data], [1, 2, 3]);
  t.equal(pm.framings, 1, "one frame built for every client");
  t.match(fx.hub.stats, { clients: 3, broadcasts: 4, prepared: 3, queued: 8, dropped: 0 });
  t.throws(() => fx.hub.broadcast(7 as MessageType, "x"), TypeError);
  t.throws(() => fx.hub.broadcast(MessageType.Text, 42 as unknown as string), TypeError);
});

t.test("topics: subscribe, publish, unsubscribe, cleanup on removal", async (t) => {
  const fx = await fixture(t);
  const a = await fx.join({}, { topics: ["news", "sport"] });
  const b = await fx.join();
  t.same([...a.client.topics].sort(), ["news", "sport"], "topics given to add");
  t.ok(fx.hub.subscribe(b.client, "news"));
  t.notOk(fx.hub.subscribe(b.client, "news"), "already subscribed");
  t.equal(fx.hub.subscriberCount("news"), 2);
  t.same([...fx.hub.subscribers("news")], [a.client, b.client]);
  t.same([...fx.hub.subscribers("nothing")], []);
  t.equal(fx.hub.publish("news", MessageType.Text, "n1"), 2);
  t.equal(fx.hub.publish("sport", MessageType.Text, "s1"), 1);
  t.equal(fx.hub.publish("news", MessageType.Text, "n2", { except: a.client }), 1);
  t.equal(fx.hub.publish("nothing", MessageType.Text, "void"), 0, "a topic without subscribers");
  const pm = new PreparedMessage(MessageType.Text, "n3");
  t.equal(fx.hub.publish("news", pm), 2);
  t.same(await texts(a.conn, 3), ["n1", "s1", "n3"]);
  t.same(await texts(b.conn, 2), ["n1", "n2"]);
  t.same(await texts(b.conn, 1), ["n3"]);

  t.ok(fx.hub.unsubscribe(b.client, "news"));
  t.notOk(fx.hub.unsubscribe(b.client, "news"), "not subscribed any more");
  t.equal(fx.hub.subscriberCount("news"), 1);
  t.equal(fx.hub.stats.topics, 2);

  const closed = once(fx.hub, "close");
  await a.conn.close();
  await closed;
  t.equal(fx.hub.subscriberCount("news"), 0, "a closed client leaves its topics");
  t.equal(fx.hub.stats.topics, 0, "empty topics are forgotten");
  t.equal(a.client.topics.size, 0);
  t.notOk(fx.hub.subscribe(a.client, "news"), "a client that left cannot subscribe");
  t.notOk(fx.hub.unsubscribe(a.client, "news"));
  t.throws(() => fx.hub.subscribe(b.client, 5 as unknown as string), TypeError);
  t.throws(() => fx.hub.publish(undefined as unknown as string, MessageType.Text, "x"), TypeError);
});

t.test("client.send and client.close", async (t) => {
  const fx = await fixture(t);
  const a = await fx.join();
  const b = await fx.join();
  t.ok(a.client.send(MessageType.Text, "just you"));
  t.same(await texts(a.conn, 1), ["just you"]);
  t.throws(() => a.client.send(MessageType.Text, {} as unknown as string), TypeError);

  await t.rejects(a.client.close(1004), RangeError, "a code that may not be sent");
  await t.rejects(a.client.close(1000, "x".repeat(124)), RangeError, "a reason that is too long");
  t.ok(a.client.online, "still in the hub after a refused close");

  const events: string[] = [];
  fx.hub.on("close", (c, info) => events.push(`${c === a.client ? "a" : "?"}:${info.code}`));
  const peerSees = closeCode(a.conn);
  const closing = a.client.close(4000, "kicked");
  t.notOk(a.client.online, "out of the hub at once");
  t.notOk(a.client.send(MessageType.Text, "too late"), "nothing is queued once it left");
  await closing;
  const err = await peerSees;
  t.equal(err.code, 4000);
  t.equal(err.reason, "kicked");
  t.same(events, ["a:4000"]);

  // A client taken out with remove keeps its connection, and no 'close' follows.
  t.ok(fx.hub.remove(b.client));
  t.notOk(fx.hub.remove(b.client), "only once");
  t.equal(fx.hub.size, 0);
  t.notOk(b.client.send(MessageType.Text, "x"));
  await b.client.conn.write(MessageType.Text, "still mine");
  t.same(await texts(b.conn, 1), ["still mine"]);
  const err2 = closeCode(b.conn);
  await b.client.close(4001);
  t.equal((await err2).code, 4001, "close works on a removed client");
  t.same(events, ["a:4000"], "no 'close' event for a removed client");
});

t.test("slow policy 'drop': new messages are dropped, 'slow' once per episode", async (t) => {
  // slowTimeout 0: judged as soon as a message would pass the bound (the
  // grace and the hard cap are test/hub/burst.test.ts's).
  const fx = await fixture(t, { maxQueuedBytes: 100, slowPolicy: "drop", slowTimeout: 0 });
  const a = await fx.join();
  const b = await fx.join();
  // Hold a's write side with a message writer: the hub's queue cannot drain.
  const writer = a.client.conn.writer(MessageType.Text);
  const slow: Array<[HubClient, number]> = [];
  fx.hub.on("slow", (c, bytes) => slow.push([c, bytes]));
  const payload = "x".repeat(40); // 43 bytes on the wire
  // Between broadcasts the event loop turns, so b's socket takes each one
  // (a burst in one synchronous run would count whole against the bound).
  for (let i = 0; i < 5; i++) {
    fx.hub.broadcast(MessageType.Text, `${i}${payload}`);
    await tick();
  }
  t.equal(a.client.queuedMessages, 2, "two fit in 100 bytes");
  t.equal(a.client.queuedBytes, 2 * 43);
  t.equal(a.client.droppedMessages, 3);
  t.equal(slow.length, 1, "'slow' once");
  t.equal(slow[0]![0], a.client);
  t.equal(slow[0]![1], 86);
  t.ok(a.client.online, "a dropping client stays");
  t.match(fx.hub.stats, { dropped: 3, slowClosed: 0, queued: 7 });
  t.same((await texts(b.conn, 5)).map((s) => s[0]), ["0", "1", "2", "3", "4"], "the other client got everything");

  writer.end("writer");
  t.same((await texts(a.conn, 3)).map((s) => s[0]), ["w", "0", "1"], "the queue drains once the socket is free");
  t.equal(a.client.queuedBytes, 0);
  // A new episode reports again.
  const writer2 = a.client.conn.writer(MessageType.Text);
  for (let i = 5; i < 8; i++) {
    fx.hub.broadcast(MessageType.Text, `${i}${payload}`);
    await tick();
  }
  t.equal(slow.length, 2, "'slow' again after the queue had emptied");
  writer2.end("w2");
  t.same((await texts(a.conn, 3)).map((s) => s[0]), ["w", "5", "6"]);
  t.same((await texts(b.conn, 3)).map((s) => s[0]), ["5", "6", "7"]);
});

t.test("slow policy 'close' (default): 1008 too slow, others unaffected", async (t) => {
  const fx = await fixture(t, { maxQueuedBytes: 100 });
  const a = await fx.join();
  const b = await fx.join();
  const writer = a.client.conn.writer(MessageType.Text);
  const slow = once(fx.hub, "slow") as Promise<[HubClient, number]>;
  for (let i = 0; i < 4; i++) {
    fx.hub.broadcast(MessageType.Text, `${i}${"x".repeat(40)}`);
    await tick();
  }
  const [who] = await slow;
  t.equal(who, a.client);
  t.notOk(a.client.online);
  t.equal(a.client.queuedBytes, 0, "its queue is dropped");
  t.equal(fx.hub.stats.slowClosed, 1);
  t.same((await texts(b.conn, 4)).map((s) => s[0]), ["0", "1", "2", "3"]);
  writer.destroy();
  const err = await closeCode(a.conn);
  t.equal(err.code, 1008);
  t.equal(err.reason, "too slow");
  t.equal(fx.hub.broadcast(MessageType.Text, "after"), 1);
});

t.test("broadcast to clients with and without permessage-deflate", async (t) => {
  const hub = new Hub();
  t.teardown(() => hub.close());
  const srv = await startServer({ compression: "context-takeover" }, (conn) => {
    conn.closeRead();
    hub.add(conn);
  });
  t.teardown(() => srv.close());
  const plain = await dial(srv.url);
  const deflate = await dial(srv.url, { compression: "context-takeover" });
  while (hub.size < 2) await once(hub, "open");
  t.equal(deflate.extensions.startsWith("permessage-deflate"), true, "one client negotiated compression");
  const text = JSON.stringify({ items: Array.from({ length: 50 }, (_, i) => ({ id: i, name: `item ${i}` })) });
  const pms = [new PreparedMessage(MessageType.Text, text), new PreparedMessage(MessageType.Text, text + "!")];
  for (const pm of pms) t.equal(hub.broadcast(pm), 2);
  hub.broadcast(MessageType.Text, "short");
  for (const conn of [plain, deflate]) t.same(await texts(conn, 3), [text, text + "!", "short"]);
  t.ok(pms.every((pm) => pm.framings === 2), "framed once per variant: plain and compressed");
});

t.test("a long backlog drains in order", async (t) => {
  const fx = await fixture(t);
  const a = await fx.join();
  const writer = a.client.conn.writer(MessageType.Text);
  const N = 3000;
  for (let i = 0; i < N; i++) fx.hub.broadcast(MessageType.Text, String(i));
  t.equal(a.client.queuedMessages, N, "all waiting behind the writer");
  const digits = 10 * 1 + 90 * 2 + 900 * 3 + 2000 * 4;
  t.equal(a.client.queuedBytes, N * 2 + digits, "bytes of whole frames: 2-byte headers and the payloads");
  writer.end("w");
  t.equal((await a.conn.read()).text(), "w");
  let inOrder = true;
  for (let i = 0; i < N; i++) if ((await a.conn.read()).text() !== String(i)) inOrder = false;
  t.ok(inOrder, `${N} messages in order`);
  t.equal(a.client.queuedMessages, 0);
  t.equal(a.client.queuedBytes, 0);
});

t.test("a message larger than maxQueuedBytes still reaches an idle client", async (t) => {
  const fx = await fixture(t, { maxQueuedBytes: 10 });
  const a = await fx.join();
  t.equal(fx.hub.broadcast(MessageType.Text, "a message of more than ten bytes"), 1);
  t.same(await texts(a.conn, 1), ["a message of more than ten bytes"]);
});

t.test("close: graceful shutdown with 1001, queues flushed first", async (t) => {
  const hub = new Hub();
  const refused: unknown[] = [];
  const srv = await startServer({}, (conn) => {
    conn.closeRead();
    try {
      hub.add(conn);
    } catch (err) {
      refused.push(err);
    }
  });
  t.teardown(() => srv.close());
  const clients = await Promise.all(Array.from({ length: 5 }, () => dial(srv.url)));
  while (hub.size < 5) await once(hub, "open");
  const [first] = hub;
  const writer = first!.conn.writer(MessageType.Text);
  hub.broadcast(MessageType.Text, "last words");
  t.equal(first!.queuedMessages, 1, "waiting behind the writer");
  const closes: number[] = [];
  hub.on("close", (_c, info) => closes.push(info.code));
  const closing = hub.close();
  t.equal(hub.close(), closing, "close twice: the same promise");
  t.equal(hub.size, 0, "nobody is online once closing");
  t.equal(hub.broadcast(MessageType.Text, "ignored"), 0, "nothing is sent after close");
  t.equal(hub.publish("t", MessageType.Text, "ignored"), 0);
  setImmediate(() => writer.end("writer"));
  const seen = await Promise.all(
    clients.map(async (c) => {
      const got: string[] = [];
      for await (const msg of c) got.push(msg.text());
      return got;
    }),
  );
  await closing;
  t.same(closes, [1001, 1001, 1001, 1001, 1001], "every 'close' came before close() resolved");
  t.ok(seen.every((got, i) => (i === 0 ? got.join() === "writer,last words" : got.join() === "last words")), "queued messages were delivered first");
  const infos = await Promise.all(clients.map((c) => c.closed));
  t.ok(infos.every((i) => i.code === 1001 && i.wasClean && i.reason === "server shutting down"));

  // A connection added after close is closed with the hub's code.
  const late = await dial(srv.url);
  t.equal((await closeCode(late)).code, 1001);
  t.equal(refused.length, 1);
  t.match(refused[0], /failed to add a client: the hub is closed/);
});

t.test("close: custom code, bad code, and a queue that never drains", async (t) => {
  const hub = new Hub({ flushTimeout: 50 });
  await t.rejects(new Hub().close(1006), RangeError, "1006 may not be sent");
  const srv = await startServer({}, (conn) => {
    conn.closeRead();
    hub.add(conn);
  });
  t.teardown(() => srv.close());
  const c = await dial(srv.url);
  while (hub.size < 1) await once(hub, "open");
  const [client] = hub;
  const writer = client!.conn.writer(MessageType.Text);
  writer.on("error", () => undefined);
  hub.broadcast(MessageType.Text, "never sent");
  const started = Date.now();
  const closing = hub.close(1012, "restarting");
  const err = await closeCode(c);
  await closing;
  t.ok(Date.now() - started >= 40, "waited for flushTimeout");
  t.equal(err.code, 1012);
  t.equal(err.reason, "restarting");
});

t.test("options are checked", async (t) => {
  t.throws(() => new Hub({ maxQueuedBytes: 0 }), RangeError);
  t.throws(() => new Hub({ maxQueuedBytes: Number.NaN }), RangeError);
  t.throws(() => new Hub({ slowPolicy: "wait" as "drop" }), TypeError);
  t.throws(() => new Hub({ flushTimeout: -1 }), RangeError);
  t.throws(() => new Hub({ flushTimeout: 2 ** 31 }), RangeError, "longer than setTimeout can wait");
  t.doesNotThrow(() => new Hub({ flushTimeout: Infinity }), "Infinity waits for the queue as long as it takes");
  t.throws(() => new Hub({ heartbeat: { interval: 2 ** 31 } }), /heartbeat.interval/);
  t.throws(() => new Hub({ heartbeat: { interval: 0 } }), /heartbeat.interval/);
  t.throws(() => new Hub({ heartbeat: { timeout: -5 } }), /heartbeat.timeout/);
  t.throws(() => new Hub({ heartbeat: { maxMissed: Number.NaN } }), /heartbeat.maxMissed/);
  const unbounded = new Hub({ maxQueuedBytes: Infinity, heartbeat: false });
  t.equal(unbounded.size, 0);
  await unbounded.close();
});
