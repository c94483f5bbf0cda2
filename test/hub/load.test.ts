/**
 * The hub under load, over real sockets: 1 000 wsconn clients receive 1 000
 * broadcasts each, in order, framed once per message; and one client that
 * never reads among 100 that do is closed for being slow while the others
 * get everything.
 */

import t from "tap";
import { CloseError, type Conn, dial, Hub, MessageType, PreparedMessage } from "../../src/index.js";
import { startServer, type TestServer } from "../helpers/peers.js";

/** dialMany opens `n` clients, `batch` handshakes at a time. */
async function dialMany(url: string, n: number, batch = 100): Promise<Conn[]> {
  const conns: Conn[] = [];
  for (let i = 0; i < n; i += batch) {
    const size = Math.min(batch, n - i);
    conns.push(...(await Promise.all(Array.from({ length: size }, () => dial(url)))));
  }
  return conns;
}

/** hubServer accepts every connection into `hub`; the server side only answers controls. */
async function hubServer(hub: Hub, options = {}): Promise<TestServer> {
  return startServer(options, (conn) => {
    conn.closeRead();
    hub.add(conn);
  });
}

/** waitFor resolves once `hub.size` reaches `n` (each add emits 'open'). */
function waitForSize(hub: Hub, n: number): Promise<void> {
  if (hub.size >= n) return Promise.resolve();
  return new Promise((resolve) => {
    const onOpen = (): void => {
      if (hub.size < n) return;
      hub.off("open", onOpen);
      resolve();
    };
    hub.on("open", onOpen);
  });
}

/** Progress counts what one reader received; `reach(n)` resolves once it has n. */
class Progress {
  count = 0;
  private target = Infinity;
  private resolve: (() => void) | undefined;
  add(): void {
    if (++this.count >= this.target) this.resolve?.();
  }
  reach(n: number): Promise<void> {
    this.target = n;
    return this.count >= n ? Promise.resolve() : new Promise((resolve) => (this.resolve = resolve));
  }
}

t.test("1 000 clients receive 1 000 broadcasts each, in order, each framed once", async (t) => {
  const CLIENTS = 1000;
  const MESSAGES = 1000;
  const hub = new Hub();
  const srv = await hubServer(hub);
  const clients = await dialMany(srv.url, CLIENTS);
  await waitForSize(hub, CLIENTS);
  t.equal(hub.size, CLIENTS, "every client is online");

  let outOfOrder = 0;
  // read() in a loop rather than for await: half the promises per message,
  // which matters under tap's async hooks with a million messages.
  const progress = clients.map((conn) => {
    const p = new Progress();
    void (async () => {
      while (p.count < MESSAGES) {
        const msg = await conn.read();
        if (msg.text() !== `message ${p.count}`) outOfOrder++;
        p.add();
      }
      await conn.read().catch(() => undefined); // sees the close frame and answers it
    })();
    return p;
  });

  const started = performance.now();
  const prepared: PreparedMessage[] = [];
  let queued = 0;
  for (let i = 0; i < MESSAGES; i++) {
    const pm = new PreparedMessage(MessageType.Text, `message ${i}`);
    prepared.push(pm);
    queued += hub.broadcast(pm);
  }
  const sent = performance.now() - started;
  t.equal(queued, CLIENTS * MESSAGES, "every broadcast was queued to every client");
  await Promise.all(progress.map((p) => p.reach(MESSAGES)));
  const elapsed = performance.now() - started;
  await hub.close();
  const counts = progress.map((p) => p.count);
  t.ok(counts.every((n) => n === MESSAGES), "every client received every message");
  t.equal(outOfOrder, 0, "in order");
  t.ok(prepared.every((pm) => pm.framings === 1), "each message was framed once for 1 000 clients");
  t.equal(hub.stats.slowClosed, 0, "nobody was too slow");
  t.equal(hub.size, 0);
  const closes = await Promise.all(clients.map((c) => c.closed));
  t.ok(closes.every((c) => c.code === 1001 && c.wasClean), "every client was closed cleanly with 1001");
  t.comment(`queued ${CLIENTS * MESSAGES} messages in ${sent.toFixed(0)} ms; all received in ${elapsed.toFixed(0)} ms`);
  await srv.close();
});

t.test("a client that never reads is closed with 1008 and delays nobody", async (t) => {
  const READERS = 100;
  const SIZE = 32000;
  const MAX_QUEUED = 256 * 1024;
  const AFTER = 20;
  // slowTimeout 0: judged at the bound itself, the bound this test measures
  // (the grace and the hard cap are test/hub/burst.test.ts's).
  const hub = new Hub({ maxQueuedBytes: MAX_QUEUED, slowTimeout: 0 });
  const srv = await hubServer(hub);
  const readers = await dialMany(srv.url, READERS);
  const [sluggard] = await dialMany(srv.url, 1);
  await waitForSize(hub, READERS + 1);
  const slowClient = [...hub].at(-1)!;
  t.equal(slowClient.conn.remotePort, sluggard!.localPort, "the last client added is the one that does not read");

  let slowAt = -1;
  let queuedWhenSlow = 0;
  hub.on("slow", (client, queuedBytes) => {
    t.equal(client, slowClient, "'slow' names the client that does not read");
    queuedWhenSlow = queuedBytes;
  });
  let wrong = 0;
  const progress = readers.map((conn) => {
    const p = new Progress();
    void (async () => {
      for await (const msg of conn) {
        if (msg.data.length !== SIZE || msg.data.readUInt32BE(0) !== p.count) wrong++;
        p.add();
      }
    })();
    return p;
  });

  // Broadcast until the kernel's socket buffers and then the hub's queue of
  // the sluggard are full, then some more. The readers stay at most WINDOW
  // messages behind (they share this process's CPU with the broadcaster: a
  // real producer is paced by its source, not by a loop).
  const WINDOW = 4;
  let maxQueued = 0;
  let maxTotal = 0;
  let sent = 0;
  for (; slowAt < 0 || sent < slowAt + AFTER; sent++) {
    if (sent > 5000) throw new Error("the client that does not read was never found slow");
    const data = Buffer.alloc(SIZE, sent & 0xff);
    data.writeUInt32BE(sent, 0);
    hub.broadcast(MessageType.Binary, data);
    if (slowAt < 0 && !slowClient.online) slowAt = sent;
    maxQueued = Math.max(maxQueued, slowClient.queuedBytes);
    let total = 0;
    for (const client of hub) total += client.queuedBytes;
    maxTotal = Math.max(maxTotal, total);
    if (sent >= WINDOW) await Promise.all(progress.map((p) => p.reach(sent - WINDOW)));
  }
  const lastSent = performance.now();
  await Promise.all(progress.map((p) => p.reach(sent)));
  const lag = performance.now() - lastSent;

  t.ok(queuedWhenSlow <= MAX_QUEUED && queuedWhenSlow > MAX_QUEUED - SIZE - 16, `its queue was full (${queuedWhenSlow} bytes)`);
  t.ok(maxQueued <= MAX_QUEUED, `the slow client's queue stayed within bounds (max ${maxQueued})`);
  t.equal(slowClient.online, false, "it left the hub");
  t.equal(slowClient.queuedBytes, 0, "its queue was freed");
  t.equal(wrong, 0, "every reader received every message, in order");
  t.ok(lag < 5000, `the readers had everything ${lag.toFixed(0)} ms after the last broadcast`);
  // A reader is at most WINDOW + 2 messages behind when the queues are measured.
  t.ok(maxTotal <= MAX_QUEUED + READERS * (WINDOW + 2) * (SIZE + 4), `memory stayed bounded: at most ${(maxTotal / 2 ** 20).toFixed(2)} MiB queued in all`);
  t.comment(
    `slow after ${slowAt} messages (${((slowAt * SIZE) / 2 ** 20).toFixed(1)} MiB); ${sent} messages ` +
      `(${((sent * SIZE * (READERS + 1)) / 2 ** 20).toFixed(0)} MiB in all) with at most ${(maxTotal / 2 ** 20).toFixed(2)} MiB queued in the hub at any time`,
  );
  t.equal(hub.stats.slowClosed, 1);
  t.equal(hub.size, READERS);

  // The sluggard wakes up: it finds the messages that reached its socket,
  // then the close frame with 1008.
  let late = 0;
  const err = await (async () => {
    for (;;) {
      await sluggard!.read();
      late++;
    }
  })().catch((e: unknown) => e);
  t.type(err, CloseError);
  t.equal((err as CloseError).code, 1008);
  t.equal((err as CloseError).reason, "too slow");
  t.ok(late <= slowAt, `it had received ${late} of ${sent} messages`);

  await hub.close();
  t.ok((await Promise.all(readers.map((c) => c.closed))).every((c) => c.code === 1001));
  await srv.close();
});
