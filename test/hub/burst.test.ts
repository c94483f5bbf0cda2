/**
 * Hub: slowness is judged on what a socket fails to drain over time, not on
 * what one tick queued. Real sockets on 127.0.0.1: 20 readers and one
 * client that never reads get a burst of 8 × 256 KiB broadcasts in one
 * synchronous run (more than maxQueuedBytes), then a steady stream until the
 * non-reader is judged slow. The readers get everything, intact and in
 * order; the non-reader is closed with 1008 (or, with "drop", stays and
 * misses messages) within slowTimeout of its queue passing the soft bound,
 * and its queue never passes hardQueueLimit.
 */

import { subscribe, unsubscribe } from "node:diagnostics_channel";
import t, { type Test } from "tap";
import { CloseError, type Conn, DEFAULT_MAX_QUEUED_BYTES, dial, Hub, type HubClient, type HubOptions, MessageType } from "../../src/index.js";
import { DEFAULT_SLOW_TIMEOUT, HARD_QUEUE_LIMIT_FACTOR, type HubSlowMessage } from "../../src/index.js";
import { startServer } from "../helpers/peers.js";

const SIZE = 256 * 1024;
const BURST = 8;
/** A frame of SIZE bytes: a 10-byte header (64-bit length) and the payload. */
const FRAME = SIZE + 10;
/** How far the broadcaster may run ahead of the slowest reader, after the burst. */
const WINDOW = 2;
/** Sent, at most, before a test gives up on the non-reader being judged slow. */
const MAX_SENT = 2000;

/** payload i is SIZE bytes of (i & 0xff) with i in its first four bytes. */
function payload(i: number): Buffer {
  const data = Buffer.alloc(SIZE, i & 0xff);
  data.writeUInt32BE(i, 0);
  return data;
}

/**
 * Reader reads one connection, checking every message against what was
 * sent. Its loop ends when the connection closes; a reach() still waiting
 * then rejects, so a reader that fails shows as a failure, not a hang.
 */
class Reader {
  count = 0;
  wrong = 0;
  private target = Infinity;
  private waiter: { resolve(): void; reject(err: unknown): void } | undefined;
  private ended: unknown;

  constructor(conn: Conn, sent: Buffer[]) {
    void (async () => {
      for (;;) {
        const msg = await conn.read();
        if (!msg.data.equals(sent[this.count]!)) this.wrong++;
        if (++this.count >= this.target) this.waiter?.resolve();
      }
    })().catch((err: unknown) => {
      this.ended = err;
      this.waiter?.reject(err);
    });
  }

  /** reach resolves once `n` messages were read. */
  reach(n: number): Promise<void> {
    this.target = n;
    if (this.count >= n) return Promise.resolve();
    if (this.ended !== undefined) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }
}

interface Setup {
  hub: Hub;
  readers: Reader[];
  sluggard: Conn;
  slowClient: HubClient;
  /** Every payload broadcast so far, by index. */
  sent: Buffer[];
  /** broadcast sends payload(sent.length) to everyone. */
  broadcast(): void;
}

/** setup starts a hub with `options`, `n` clients that read and one that never reads (dialled last). */
async function setup(t: Test, options: HubOptions, n: number): Promise<Setup> {
  const hub = new Hub(options);
  const srv = await startServer({}, (conn) => {
    conn.closeRead();
    hub.add(conn);
  });
  t.teardown(async () => {
    await hub.close();
    await srv.close();
  });
  const conns = await Promise.all(Array.from({ length: n }, () => dial(srv.url, { readLimit: SIZE })));
  const sluggard = await dial(srv.url, { readLimit: SIZE });
  while (hub.size < n + 1) await new Promise((resolve) => hub.once("open", resolve));
  const slowClient = [...hub].find((c) => c.conn.remotePort === sluggard.localPort)!;
  t.ok(slowClient, "the hub has the client that does not read");
  const sent: Buffer[] = [];
  const readers = conns.map((conn) => new Reader(conn, sent));
  const broadcast = (): void => {
    const data = payload(sent.length);
    sent.push(data);
    hub.broadcast(MessageType.Binary, data);
  };
  return { hub, readers, sluggard, slowClient, sent, broadcast };
}

/**
 * Watch samples the non-reader's queue after every broadcast: its peak, and
 * when it last went past the soft bound (the grace runs from there).
 */
class Watch {
  peak = 0;
  crossedAt = -1;
  constructor(
    private readonly client: HubClient,
    private readonly soft: number,
  ) {}
  sample(): void {
    if (!this.client.online) return; // judged and closed: its queue is gone
    const bytes = this.client.queuedBytes;
    this.peak = Math.max(this.peak, bytes);
    // Bytes only grow when a message is queued, so the first sample past
    // the bound is the broadcast that took the queue past it. A dip between
    // two samples would go unseen and make the grace look longer, never shorter.
    if (bytes <= this.soft) this.crossedAt = -1;
    else if (this.crossedAt < 0) this.crossedAt = performance.now();
  }
}

/**
 * stream broadcasts, one message per turn once the readers are within
 * WINDOW, until `done` says so; it samples the non-reader after each.
 */
async function stream(s: Setup, watch: Watch, done: () => boolean): Promise<void> {
  while (!done()) {
    if (s.sent.length > MAX_SENT) throw new Error(`the client that does not read was not judged slow after ${MAX_SENT} messages`);
    s.broadcast();
    watch.sample();
    const behind = s.sent.length - WINDOW;
    await Promise.all(s.readers.map((r) => r.reach(behind)));
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** readToClose reads `conn` until it closes; it returns the close error and the indices of the messages it got. */
async function readToClose(conn: Conn): Promise<{ err: unknown; got: number[] }> {
  const got: number[] = [];
  for (;;) {
    try {
      got.push((await conn.read()).data.readUInt32BE(0));
    } catch (err) {
      return { err, got };
    }
  }
}

/** channelMessages collects what the hub publishes on wsconn:hub:slow during `t`. */
function channelMessages(t: Test): HubSlowMessage[] {
  const seen: HubSlowMessage[] = [];
  const onMessage = (message: unknown): void => void seen.push(message as HubSlowMessage);
  subscribe("wsconn:hub:slow", onMessage);
  t.teardown(() => void unsubscribe("wsconn:hub:slow", onMessage));
  return seen;
}

t.test("defaults: a burst reaches every reader; the non-reader is closed with 1008 in time, its queue under the hard cap", async (t) => {
  const soft = DEFAULT_MAX_QUEUED_BYTES;
  const hard = soft * HARD_QUEUE_LIMIT_FACTOR;
  const s = await setup(t, {}, 20);
  const watch = new Watch(s.slowClient, soft);
  const diagnostics = channelMessages(t);
  let slowAt = -1;
  let slowBytes = -1;
  s.hub.on("slow", (client, bytes) => {
    t.equal(client, s.slowClient, "'slow' names the client that does not read");
    slowAt = performance.now();
    slowBytes = bytes;
  });

  // The burst: 2 MiB in one synchronous run, twice the soft bound.
  for (let i = 0; i < BURST; i++) {
    s.broadcast();
    watch.sample();
  }
  const readerBytes = [...s.hub].filter((c) => c !== s.slowClient).map((c) => c.queuedBytes);
  t.ok(readerBytes.every((b) => b > soft), `every reader's queue passed the soft bound in the burst (min ${Math.min(...readerBytes)} bytes)`);
  await Promise.all(s.readers.map((r) => r.reach(BURST)));
  t.ok(s.readers.every((r) => r.count >= BURST), "every reader received the 8 messages of the burst");
  t.equal(s.readers.reduce((n, r) => n + r.wrong, 0), 0, "intact and in order");
  t.equal(s.hub.stats.slowClosed, 0, "nobody was judged slow for the burst");
  t.equal(s.hub.size, 21, "every client is still in the hub");

  // Then a steady stream until the non-reader's socket, the kernel's
  // buffers and its queue are full and its grace has run out.
  const started = performance.now();
  await stream(s, watch, () => !s.slowClient.online);
  const sluggardSees = readToClose(s.sluggard);
  await Promise.all(s.readers.map((r) => r.reach(s.sent.length)));

  t.ok(watch.crossedAt > 0, "its queue passed the soft bound");
  const toClose = slowAt - watch.crossedAt;
  t.ok(toClose <= DEFAULT_SLOW_TIMEOUT + 1000, `judged slow ${toClose.toFixed(0)} ms after its queue passed the soft bound (bound ${DEFAULT_SLOW_TIMEOUT} ms + slack)`);
  t.ok(watch.peak <= hard, `its queue never passed the hard cap (peak ${watch.peak} of ${hard} bytes)`);
  t.ok(slowBytes > soft && slowBytes <= hard, `it was judged with ${slowBytes} bytes queued`);
  t.equal(s.slowClient.queuedBytes, 0, "its queue was freed");
  t.match(s.hub.stats, { slowClosed: 1, dropped: 0 });
  t.equal(s.hub.size, 20, "the readers stay");
  t.ok(s.readers.every((r) => r.count === s.sent.length), `every reader received all ${s.sent.length} messages`);
  t.equal(s.readers.reduce((n, r) => n + r.wrong, 0), 0, "intact and in order");
  t.equal(diagnostics.length, 1, "one message on wsconn:hub:slow");
  t.match(diagnostics[0], { client: s.slowClient, conn: s.slowClient.conn, queuedBytes: slowBytes, policy: "close" });

  const { err, got } = await sluggardSees;
  t.type(err, CloseError);
  t.equal((err as CloseError).code, 1008, "the non-reader finds 1008 after what reached its socket");
  t.equal((err as CloseError).reason, "too slow");
  t.ok(got.every((index, i) => index === i), `it got messages 0 to ${got.length - 1} in order`);
  const by = slowBytes > hard - FRAME ? "the hard cap" : "the grace timer";
  t.comment(
    `burst of ${BURST} × 256 KiB: all 20 readers got all ${BURST}; non-reader judged slow by ${by} ${toClose.toFixed(0)} ms after passing ` +
      `${soft} bytes (${(slowAt - started).toFixed(0)} ms into the stream, ${s.sent.length} messages sent), ` +
      `peak queue ${(watch.peak / 2 ** 20).toFixed(2)} MiB (cap ${hard / 2 ** 20} MiB), ${got.length} messages had reached its socket`,
  );
});

t.test("the grace: judged slow no sooner than slowTimeout after passing the soft bound, and not much later", async (t) => {
  const slowTimeout = 300;
  // No hard cap, so that only the time can judge.
  const s = await setup(t, { slowTimeout, hardQueueLimit: Infinity }, 5);
  const watch = new Watch(s.slowClient, DEFAULT_MAX_QUEUED_BYTES);
  let slowAt = -1;
  s.hub.on("slow", () => (slowAt = performance.now()));
  for (let i = 0; i < BURST; i++) {
    s.broadcast();
    watch.sample();
  }
  await stream(s, watch, () => !s.slowClient.online);
  const sluggardSees = readToClose(s.sluggard);
  const toClose = slowAt - watch.crossedAt;
  t.ok(toClose >= slowTimeout - 2, `not before the grace ran out (${toClose.toFixed(0)} ms)`);
  t.ok(toClose <= slowTimeout + 1000, `soon after it (${toClose.toFixed(0)} ms, grace ${slowTimeout} ms)`);
  await Promise.all(s.readers.map((r) => r.reach(s.sent.length)));
  t.equal(s.readers.reduce((n, r) => n + r.wrong, 0), 0, "the readers got everything, in order");
  t.equal(((await sluggardSees).err as CloseError).code, 1008);
  t.comment(`grace ${slowTimeout} ms: judged ${toClose.toFixed(0)} ms after passing the bound, peak ${(watch.peak / 2 ** 20).toFixed(2)} MiB`);
});

t.test("the hard cap: judged slow at once when a message would pass it", async (t) => {
  const hardQueueLimit = 4 * 1024 * 1024;
  // No grace timer, so that only the cap can judge.
  const s = await setup(t, { slowTimeout: Infinity, hardQueueLimit }, 5);
  const watch = new Watch(s.slowClient, DEFAULT_MAX_QUEUED_BYTES);
  let slowBytes = -1;
  s.hub.on("slow", (_client, bytes) => (slowBytes = bytes));
  for (let i = 0; i < BURST; i++) {
    s.broadcast();
    watch.sample();
  }
  await stream(s, watch, () => !s.slowClient.online);
  const sluggardSees = readToClose(s.sluggard);
  t.ok(watch.peak <= hardQueueLimit, `its queue never passed the cap (peak ${watch.peak})`);
  t.ok(slowBytes > hardQueueLimit - FRAME, `judged when the next message would not fit (${slowBytes} bytes queued)`);
  await Promise.all(s.readers.map((r) => r.reach(s.sent.length)));
  t.equal(s.readers.reduce((n, r) => n + r.wrong, 0), 0, "the readers got everything, in order");
  t.equal(((await sluggardSees).err as CloseError).code, 1008);
});

t.test("slowPolicy 'drop': the non-reader stays and misses messages, its queue under the hard cap", async (t) => {
  const soft = DEFAULT_MAX_QUEUED_BYTES;
  const hard = soft * HARD_QUEUE_LIMIT_FACTOR;
  const AFTER = 20;
  const s = await setup(t, { slowPolicy: "drop" }, 20);
  const watch = new Watch(s.slowClient, soft);
  const diagnostics = channelMessages(t);
  const slow: number[] = [];
  s.hub.on("slow", (client, bytes) => {
    t.equal(client, s.slowClient, "'slow' names the client that does not read");
    slow.push(bytes);
  });
  for (let i = 0; i < BURST; i++) {
    s.broadcast();
    watch.sample();
  }
  await Promise.all(s.readers.map((r) => r.reach(BURST)));
  t.equal(s.slowClient.droppedMessages, 0, "nothing dropped for the burst");
  let judgedAt = -1;
  await stream(s, watch, () => {
    if (judgedAt < 0 && slow.length > 0) judgedAt = s.sent.length;
    return judgedAt >= 0 && s.sent.length >= judgedAt + AFTER;
  });
  await Promise.all(s.readers.map((r) => r.reach(s.sent.length)));

  t.ok(s.slowClient.online, "it stays in the hub");
  t.ok(s.slowClient.droppedMessages >= AFTER, `its messages are dropped (${s.slowClient.droppedMessages})`);
  t.equal(s.hub.stats.dropped, s.slowClient.droppedMessages);
  t.equal(s.hub.stats.slowClosed, 0);
  t.ok(watch.peak <= hard, `its queue never passed the hard cap (peak ${watch.peak} of ${hard} bytes)`);
  t.same(slow.length, 1, "'slow' once for the episode");
  t.equal(diagnostics.length, 1, "one message on wsconn:hub:slow");
  t.match(diagnostics[0], { client: s.slowClient, conn: s.slowClient.conn, queuedBytes: slow[0], policy: "drop" });
  t.ok(s.readers.every((r) => r.count === s.sent.length), `every reader received all ${s.sent.length} messages`);
  t.equal(s.readers.reduce((n, r) => n + r.wrong, 0), 0, "intact and in order");

  // The non-reader wakes up: every message queued for it arrives, in order;
  // only the dropped ones are missing.
  const expected = s.sent.length - s.slowClient.droppedMessages;
  const got: number[] = [];
  while (got.length < expected) got.push((await s.sluggard.read()).data.readUInt32BE(0));
  t.ok(got.every((index, i) => i === 0 || index > got[i - 1]!), `the ${expected} messages queued for it arrive in order`);
  t.equal(got[0], 0, "from the first");
  t.comment(`drop: judged after ${judgedAt} messages; ${s.slowClient.droppedMessages} dropped; peak queue ${(watch.peak / 2 ** 20).toFixed(2)} MiB`);
  const closing = readToClose(s.sluggard);
  await s.hub.close();
  t.equal(((await closing).err as CloseError).code, 1001);
});

t.test("slowness options are checked", async (t) => {
  const bad: Array<[string, HubOptions]> = [
    ["slowTimeout negative", { slowTimeout: -1 }],
    ["slowTimeout NaN", { slowTimeout: Number.NaN }],
    ["slowTimeout longer than setTimeout can wait", { slowTimeout: 2 ** 31 }],
    ["slowTimeout not a number", { slowTimeout: "1000" as unknown as number }],
    ["hardQueueLimit under maxQueuedBytes (default)", { hardQueueLimit: DEFAULT_MAX_QUEUED_BYTES - 1 }],
    ["hardQueueLimit under maxQueuedBytes (given)", { maxQueuedBytes: 1000, hardQueueLimit: 999 }],
    ["hardQueueLimit finite with an unbounded soft bound", { maxQueuedBytes: Infinity, hardQueueLimit: 2 ** 40 }],
    ["hardQueueLimit zero", { hardQueueLimit: 0 }],
    ["hardQueueLimit NaN", { hardQueueLimit: Number.NaN }],
    ["hardQueueLimit not a number", { hardQueueLimit: "16M" as unknown as number }],
    ["maxQueuedBytes negative", { maxQueuedBytes: -1 }],
  ];
  for (const [name, options] of bad) t.throws(() => new Hub(options), RangeError, name);
  const good: Array<[string, HubOptions]> = [
    ["slowTimeout 0: judged at the soft bound", { slowTimeout: 0 }],
    ["slowTimeout Infinity: only the hard cap", { slowTimeout: Infinity }],
    ["hardQueueLimit equal to maxQueuedBytes", { maxQueuedBytes: 1000, hardQueueLimit: 1000 }],
    ["hardQueueLimit Infinity", { hardQueueLimit: Infinity }],
    ["both unbounded", { maxQueuedBytes: Infinity, hardQueueLimit: Infinity }],
  ];
  for (const [name, options] of good) {
    const hub = new Hub(options);
    t.equal(hub.size, 0, name);
    await hub.close();
  }
});
