/**
 * RedisBus under faults: redis-server is killed (SIGKILL) and started again
 * on the same port while two hubs broadcast numbered messages. Local clients
 * are served throughout, the outage shows as 'busError' events, and
 * cross-node delivery resumes by itself once node-redis has reconnected and
 * resubscribed. The figures (messages lost, time from restart to the first
 * delivery) are printed as test comments. Skipped, loudly, without the
 * redis-server binary.
 */

import { EventEmitter, once } from "node:events";
import { performance } from "node:perf_hooks";
import { createClient } from "redis";
import t, { type Test } from "tap";
import { type Conn, Hub, MessageType, RedisBus } from "../../src/index.js";
import { hubNode, type HubNode } from "../helpers/hub-node.js";
import { redisMissing, startRedis } from "../helpers/redis-server.js";

type Name = "A" | "B";

/** One message a client received: its text, who broadcast it and its number if numbered ("A:12"), when it arrived. */
interface Received {
  text: string;
  from?: Name;
  seq: number;
  at: number;
}

/** Reader reads a client's messages in the background. */
class Reader {
  readonly got: Received[] = [];
  private waiters: Array<{ test(r: Received): boolean; resolve(r: Received): void }> = [];

  constructor(
    readonly name: string,
    readonly own: Name,
    readonly conn: Conn,
  ) {
    void this.run();
  }

  /** The node whose messages cross the bus to this client. */
  get remote(): Name {
    return this.own === "A" ? "B" : "A";
  }

  /** until resolves with the first message, received or to come, that passes `test`. */
  until(test: (r: Received) => boolean): Promise<Received> {
    const seen = this.got.find(test);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.push({ test, resolve }));
  }

  /** fromNode resolves with the first message from `from` numbered `seq` or more. */
  fromNode(from: Name, seq = 0): Promise<Received> {
    return this.until((r) => r.from === from && r.seq >= seq);
  }

  seqs(from: Name): number[] {
    return this.got.filter((r) => r.from === from).map((r) => r.seq);
  }

  private async run(): Promise<void> {
    try {
      for await (const msg of this.conn) this.record(msg.text());
    } catch {
      // closed at the end of the test
    }
  }

  private record(text: string): void {
    const match = /^([AB]):(\d+)$/.exec(text);
    const r: Received = { text, from: match?.[1] as Name | undefined, seq: Number(match?.[2] ?? -1), at: performance.now() };
    this.got.push(r);
    this.waiters = this.waiters.filter((w) => !(w.test(r) && (w.resolve(r), true)));
  }
}

/** A hub with its Redis clients and readers. */
interface Side {
  name: Name;
  node: HubNode;
  hub: Hub;
  errors: Error[];
  readers: Reader[];
  /** When each numbered message was broadcast. */
  sentAt: number[];
}

/** side starts a hub on its own RedisBus (node-redis defaults: reconnect with backoff, no 'error' listener of ours). */
async function side(t: Test, url: string, name: Name): Promise<Side> {
  const publisher = createClient({ url });
  const subscriber = publisher.duplicate();
  await Promise.all([publisher.connect(), subscriber.connect()]);
  // After the hubs; close() would wait for Redis if it is down.
  t.teardown(() => Promise.all([publisher, subscriber].map((c) => (c.isReady ? c.close() : c.destroy()))));
  const errors: Error[] = [];
  const bus = new RedisBus(publisher, subscriber);
  const node = await hubNode(t, { bus, nodeId: `node-${name}` }, (hub) => hub.on("busError", (err) => errors.push(err)));
  const readers: Reader[] = [];
  for (const i of [1, 2]) {
    const { conn } = await node.join(["room"]);
    readers.push(new Reader(`${name.toLowerCase()}${i}`, name, conn));
  }
  await node.hub.settled();
  return { name, node, hub: node.hub, errors, readers, sentAt: [] };
}

/** Broadcasting numbered messages from both sides, every `interval` ms, until stopped. */
function broadcastLoop(sides: Side[], interval: number): () => void {
  const timer = setInterval(() => {
    for (const s of sides) {
      s.sentAt.push(performance.now());
      s.hub.broadcast(MessageType.Text, `${s.name}:${s.sentAt.length - 1}`);
    }
  }, interval);
  return () => clearInterval(timer);
}

/** trackRejections records unhandled rejections until the test ends. */
function trackRejections(t: Test): unknown[] {
  const seen: unknown[] = [];
  const onRejection = (reason: unknown): void => void seen.push(reason);
  process.on("unhandledRejection", onRejection);
  t.teardown(() => void process.off("unhandledRejection", onRejection));
  return seen;
}

const ms = (x: number): string => `${x.toFixed(0)} ms`;

t.test("redis-server killed and restarted on the same port while two hubs broadcast", { skip: redisMissing }, async (t) => {
  const rejections = trackRejections(t);
  const redis = await startRedis(t);
  const sides = { A: await side(t, redis.url, "A"), B: await side(t, redis.url, "B") };
  const { A, B } = sides;
  const all = [...A.readers, ...B.readers];
  const sentCount = (name: Name): number => sides[name].sentAt.length;
  const stop = broadcastLoop([A, B], 5);
  t.teardown(stop);

  // Steady state: each client gets the other node's messages.
  await Promise.all(all.map((r) => r.fromNode(r.remote)));
  t.same([A.errors.length, B.errors.length], [0, 0], "no bus error before the outage");

  // The outage: SIGKILL, as a crash.
  const errored = Promise.all([once(A.hub, "busError"), once(B.hub, "busError")]);
  const killSeq = { A: sentCount("A"), B: sentCount("B") };
  const killedAt = performance.now();
  await redis.kill();
  await errored;
  t.ok(A.hub.stats.busErrors > 0 && B.hub.stats.busErrors > 0, "the outage shows in stats.busErrors on both hubs");
  // Local clients keep being served: 40 more local broadcasts (≥ 200 ms of outage) reach every client.
  await Promise.all(all.map((r) => r.fromNode(r.own, killSeq[r.own] + 40)));
  // A client joins a topic during the outage: its SUBSCRIBE waits for Redis.
  const late = new Reader("b3", "B", (await B.node.join(["late-room"])).conn);

  const restartSeq = { A: sentCount("A"), B: sentCount("B") };
  const restartedAt = performance.now();
  await redis.start();
  const readyAt = performance.now();
  // No user action: node-redis reconnects and resubscribes, and messages cross again.
  const resumed = await Promise.all(all.map((r) => r.fromNode(r.remote, restartSeq[r.remote])));
  // Run a little longer, so that a gap after the resumption would show.
  await Promise.all(all.map((r, i) => r.fromNode(r.remote, resumed[i]!.seq + 20)));
  stop();

  // The topic subscribed before the outage crosses again; each client gets
  // its message after all the numbered ones.
  await Promise.all([A.hub.settled(), B.hub.settled()]);
  A.hub.publish("room", MessageType.Text, "room from A");
  B.hub.publish("room", MessageType.Text, "room from B");
  await Promise.all(all.map((r) => Promise.all(["A", "B"].map((n) => r.until((m) => m.text === `room from ${n}`)))));
  A.hub.publish("late-room", MessageType.Text, "late from A");
  await late.until((m) => m.text === "late from A"); // a topic joined during the outage is subscribed once Redis is back
  t.pass("a topic joined during the outage crosses once Redis is back");

  for (const [i, r] of all.entries()) {
    const local = r.seqs(r.own);
    t.same(local, [...Array(sentCount(r.own)).keys()], `${r.name}: every local broadcast, in order, outage included`);
    const cross = r.seqs(r.remote);
    t.ok(cross.every((seq, j) => j === 0 || seq > cross[j - 1]!), `${r.name}: cross-node messages in order, none twice`);
    const got = new Set(cross);
    const lost = [...Array(sentCount(r.remote)).keys()].filter((seq) => !got.has(seq));
    const first = resumed[i]!;
    t.ok(lost.length > 0, `${r.name}: messages broadcast during the outage were lost`);
    t.ok(
      lost.every((seq) => seq >= killSeq[r.remote] - 5 && seq < first.seq),
      `${r.name}: only messages broadcast from the kill to the first delivery after the restart were lost`,
    );
    // What crossed late: only a message broadcast as the connection died,
    // before node-redis noticed, which its offline queue sent on reconnection.
    const late = r.got.filter((m) => m.from === r.remote && m.at > restartedAt && m.seq < restartSeq[r.remote]);
    t.ok(late.every((m) => m.seq <= killSeq[r.remote] + 10), `${r.name}: nothing broadcast during the outage arrived late`);
    const dropped = sides[r.remote].errors.filter((e) => e.message.endsWith("message dropped")).length;
    t.ok(dropped > 0 && lost.length >= dropped, `${r.name}: every publish the sender reported dropped is among them`);
    const sentAt = sides[r.remote].sentAt;
    const span = lost.length === 0 ? 0 : sentAt[lost.at(-1)!]! - sentAt[lost[0]!]!;
    t.comment(
      `${r.name}: lost ${lost.length} of ${sentAt.length} from ${r.remote} (seq ${lost[0]}–${lost.at(-1)}, broadcast over ${ms(span)}; ` +
        `${dropped} of them reported by ${r.remote} as dropped publishes; ${late.length} from the kill arrived late); ` +
        `first delivery ${ms(first.at - restartedAt)} after the restart, ${ms(first.at - readyAt)} after redis was ready`,
    );
  }
  t.comment(
    `outage: restart at +${ms(restartedAt - killedAt)}, redis ready at +${ms(readyAt - killedAt)}; ` +
      `busErrors A ${A.hub.stats.busErrors}, B ${B.hub.stats.busErrors}`,
  );
  t.equal(A.errors.length, A.hub.stats.busErrors, "each bus error was emitted");
  t.ok([...A.errors, ...B.errors].every((e) => e.message.startsWith("failed to use the hub bus: ")), "busErrors say what failed");
  t.same(rejections, [], "no unhandled rejection");
});

t.test("hubs close during a Redis outage, with a subscription still waiting", { skip: redisMissing }, async (t) => {
  const rejections = trackRejections(t);
  const redis = await startRedis(t);
  const A = await side(t, redis.url, "A");
  const B = await side(t, redis.url, "B");
  const errored = once(A.hub, "busError");
  await redis.kill();
  await errored;
  await B.node.join(["joined-during-outage"]); // its SUBSCRIBE waits in node-redis's queue
  t.equal(A.hub.broadcast(MessageType.Text, "local only"), 2, "broadcasting still serves the local clients");
  await Promise.all(A.readers.map((r) => r.until((m) => m.text === "local only")));
  // Neither the UNSUBSCRIBEs nor the waiting SUBSCRIBE hold the hubs up.
  await Promise.all([A.hub.close(), B.hub.close()]);
  t.equal(A.hub.size + B.hub.size, 0, "both hubs closed");
  t.ok(A.errors.some((e) => /publisher is disconnected: message dropped$/.test(e.message)), "the broadcast was reported dropped");
  t.same(rejections, [], "no unhandled rejection");
});

/** FakeRedis stands for a node-redis client: every command waits until the test settles it. */
class FakeRedis extends EventEmitter {
  isReady = true;
  readonly commands: Array<{ command: string; resolve(v: unknown): void; reject(err: Error): void }> = [];

  publish(channel: string): Promise<unknown> {
    return this.command(`PUBLISH ${channel}`);
  }

  subscribe(channel: string): Promise<unknown> {
    return this.command(`SUBSCRIBE ${channel}`);
  }

  unsubscribe(channel: string): Promise<unknown> {
    return this.command(`UNSUBSCRIBE ${channel}`);
  }

  /** sent lists the commands sent so far. */
  get sent(): string[] {
    return this.commands.map((c) => c.command);
  }

  private command(command: string): Promise<unknown> {
    return new Promise((resolve, reject) => this.commands.push({ command, resolve, reject }));
  }
}

t.test("RedisBus: connection errors, a lost SUBSCRIBE sent again on 'ready', drops while disconnected", async (t) => {
  const rejections = trackRejections(t);
  const publisher = new FakeRedis();
  const subscriber = new FakeRedis();
  const bus = new RedisBus(publisher, subscriber);
  const hub = new Hub({ bus, nodeId: "fake" });
  const errors: Error[] = [];
  hub.on("busError", (err) => errors.push(err));
  t.same(subscriber.sent, ["SUBSCRIBE wsconn:hub:all"]);

  // The connection drops with the SUBSCRIBE in flight: node-redis rejects it, and will not restore it.
  subscriber.isReady = false;
  publisher.isReady = false;
  subscriber.emit("error", new Error("Socket closed unexpectedly"));
  subscriber.commands[0]!.reject(new Error("Socket closed unexpectedly"));
  await hub.settled();
  t.equal(hub.broadcast(MessageType.Text, "while down"), 0);
  await hub.settled();
  t.same(publisher.sent, [], "nothing is queued for later while the publisher is disconnected");
  t.same(errors.map((e) => e.message), [
    "failed to use the hub bus: the Redis subscriber's connection failed: Socket closed unexpectedly",
    "failed to use the hub bus: Socket closed unexpectedly",
    "failed to use the hub bus: the Redis publisher is disconnected: message dropped",
  ]);
  t.equal(hub.stats.busErrors, 3);

  // Reconnected: the lost SUBSCRIBE goes out again, once.
  subscriber.isReady = true;
  publisher.isReady = true;
  subscriber.emit("ready");
  subscriber.emit("ready");
  t.same(subscriber.sent, ["SUBSCRIBE wsconn:hub:all", "SUBSCRIBE wsconn:hub:all"]);
  subscriber.commands[1]!.resolve(undefined);
  hub.broadcast(MessageType.Text, "back");
  t.same(publisher.sent, ["PUBLISH wsconn:hub:all"]);
  publisher.commands[0]!.resolve(1);

  // A subscription withdrawn before Redis confirmed it does not keep anyone waiting, and is not restored.
  const listener = (): void => undefined;
  const subscribed = bus.subscribe("c", listener);
  subscriber.isReady = false;
  const unsubscribed = bus.unsubscribe("c", listener);
  await Promise.all([subscribed, unsubscribed]);
  subscriber.commands[2]!.reject(new Error("Socket closed unexpectedly"));
  subscriber.isReady = true;
  subscriber.emit("ready");
  t.same(subscriber.sent.slice(2), ["SUBSCRIBE c", "UNSUBSCRIBE c"], "nothing sent again for a withdrawn subscription");

  // Closing while disconnected: the UNSUBSCRIBE is left to node-redis; close resolves.
  subscriber.isReady = false;
  await hub.close();
  t.equal(subscriber.sent.at(-1), "UNSUBSCRIBE wsconn:hub:all");
  subscriber.emit("error", new Error("after close"));
  t.equal(hub.stats.busErrors, 3, "a closed hub no longer hears about the bus");
  t.same(rejections, [], "no unhandled rejection");
});
