/**
 * permessage-deflate against hostile and heavy input:
 * - decompression bombs (10 MiB of zeros in a few KiB) fail with 1009 against
 *   the read limit, in one frame or many, without the process growing;
 *   streamed through reader() with no limit and a consumer that does not
 *   read, inflation pauses and memory stays bounded;
 * - invalid compressed data fails with 1007, misplaced RSV1 with 1002;
 * - zlib state is released when a connection closes and not kept by idle
 *   no-context-takeover connections;
 * - memory per idle connection for each mode, measured against `ws` with
 *   1000 connections per configuration (figures in docs/compression.md).
 */

import t from "tap";
import { CloseError, type CompressionMode, type Conn, dial, MessageType } from "../../src/index.js";
import { deflateMessage, frame, memorySample, type MemorySample, MemoryWatch, mib, PeerDeflater, rawUpgrade, type RawUpgrade, startAnsweringServer } from "../helpers/deflate-peer.js";
import { OP, rejection, startWsconnServer, type WsconnServer } from "../helpers/interop.js";
import { type MemoryServer, startMemoryServer } from "../helpers/memory-child.js";

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];

const KiB = 1024;
const MiB = 1024 * 1024;

/** The bomb: 10 MiB of zeros, compressed (about 10 KiB). */
const BOMB_SIZE = 10 * MiB;
const BOMB = deflateMessage(Buffer.alloc(BOMB_SIZE));

/** closeCodeOf waits for the close frame the server sends and returns its code. */
async function closeCodeOf(up: RawUpgrade): Promise<number | undefined> {
  const f = await up.frames.nextNonControl();
  if (f.opcode !== OP.close) return undefined;
  return f.payload.length >= 2 ? f.payload.readUInt16BE(0) : undefined;
}

async function deflateServer(t: TestContext, options: Parameters<typeof startWsconnServer>[0] = {}): Promise<WsconnServer> {
  const srv = await startWsconnServer({ compression: "context-takeover", ...options });
  t.teardown(() => srv.close());
  return srv;
}

t.test("a 10 MiB bomb in one frame fails with 1009 against a 1 MiB read limit, memory flat", async (t) => {
  t.comment(`bomb: ${BOMB_SIZE} B of zeros in ${BOMB.length} B`);
  t.ok(BOMB.length < 16 * KiB, "a few KiB on the wire");
  const srv = await deflateServer(t, { readLimit: MiB });
  for (const [label, frames] of [
    ["one frame", [frame(OP.binary, BOMB, { rsv1: true })]],
    ["split in 100-byte frames", splitFrames(BOMB, 100)],
  ] as Array<[string, Buffer[]]>) {
    const up = await rawUpgrade(srv.port, "permessage-deflate");
    const { conn } = await srv.next();
    const watch = new MemoryWatch();
    const read = rejection(conn.read());
    up.socket.write(Buffer.concat(frames));
    const err = await read;
    const growth = watch.stop(t, label);
    t.ok(err instanceof CloseError && err.code === 1009, `${label}: read rejects with 1009`);
    t.equal(await closeCodeOf(up), 1009, `${label}: close frame 1009 sent`);
    t.ok(growth.rss < 8 * MiB, `${label}: RSS grew less than 8 MiB`);
    t.ok(growth.arrayBuffers < 4 * MiB, `${label}: array buffers grew less than 4 MiB`);
    up.socket.destroy();
    await conn.closed;
  }
});

t.test("after a 1009 the rest of a bomb is not inflated", async (t) => {
  // 200 MiB of zeros in about 200 KB: everything the socket delivered was
  // handed to zlib before the limit was hit, and used to be inflated (and
  // thrown away) to the end, a quarter of a second of CPU per message.
  const srv = await deflateServer(t);
  const big = deflateMessage(Buffer.alloc(200 * MiB));
  const up = await rawUpgrade(srv.port, "permessage-deflate");
  const { conn } = await srv.next();
  const cpu = process.cpuUsage();
  const read = rejection(conn.read());
  up.socket.write(frame(OP.binary, big, { rsv1: true }));
  t.match(await read, { code: 1009 }, "1009 at the default 32 KiB limit");
  t.same(zlibState(conn), { inflater: false, deflater: false }, "the inflater is freed at once");
  t.equal(await closeCodeOf(up), 1009);
  up.socket.end();
  await conn.closed;
  const used = process.cpuUsage(cpu);
  t.comment(`CPU from the bomb to the close: ${((used.user + used.system) / 1000).toFixed(0)} ms`);
});

t.test("close() while a compressed message waits to be inflated completes the close handshake", async (t) => {
  // Nobody reads: the inflater is paused, the parser holds what follows the
  // message (here the peer's close frame). Closing must not wait for that
  // message, which nobody will read, to be inflated.
  const srv = await deflateServer(t, { readLimit: Infinity });
  const up = await rawUpgrade(srv.port, "permessage-deflate");
  const { conn } = await srv.next();
  up.socket.write(Buffer.concat([frame(OP.binary, deflateMessage(Buffer.alloc(20 * MiB)), { rsv1: true }), frame(OP.close, Buffer.from([0x03, 0xe8]))]));
  await until(() => readSidePaused(conn));
  const started = Date.now();
  const closing = conn.close(1000, "bye");
  const f = await up.frames.nextNonControl();
  t.equal(f.opcode, OP.close, "close frame sent");
  await up.frames.ended;
  up.socket.end();
  await closing;
  t.same(await conn.closed, { code: 1000, reason: "", wasClean: true }, "clean close with the peer's 1000");
  t.ok(Date.now() - started < 2000, "well before the close timeout");
});

/** splitFrames cuts a compressed message into masked frames: RSV1 on the first, continuations after. */
function splitFrames(payload: Buffer, size: number): Buffer[] {
  const frames: Buffer[] = [];
  for (let at = 0; at < payload.length; at += size) {
    const first = at === 0;
    const fin = at + size >= payload.length;
    frames.push(frame(first ? OP.binary : OP.cont, payload.subarray(at, at + size), { rsv1: first, fin }));
  }
  return frames;
}

t.test("the read limit counts decompressed bytes exactly", async (t) => {
  const srv = await deflateServer(t, { readLimit: 100_000 });
  for (const [n, ok] of [
    [100_000, true],
    [100_001, false],
  ] as Array<[number, boolean]>) {
    const up = await rawUpgrade(srv.port, "permessage-deflate");
    const { conn } = await srv.next();
    up.socket.write(frame(OP.binary, deflateMessage(Buffer.alloc(n, 7)), { rsv1: true }));
    if (ok) t.equal((await conn.read()).data.length, n, `${n} B: read`);
    else {
      t.match(await rejection(conn.read()), { code: 1009 }, `${n} B: 1009`);
      t.equal(await closeCodeOf(up), 1009);
    }
    up.socket.destroy();
    conn.closeNow();
  }
});

t.test("a bomb streamed through reader() with no limit: inflation pauses while nobody reads", async (t) => {
  const srv = await deflateServer(t, { readLimit: Infinity });
  const up = await rawUpgrade(srv.port, "permessage-deflate");
  const { conn } = await srv.next();
  const total = 100 * MiB;
  const bomb = deflateMessage(Buffer.alloc(total));
  t.comment(`bomb: ${total} B of zeros in ${bomb.length} B`);
  const watch = new MemoryWatch();
  const message = await (async () => {
    up.socket.write(Buffer.concat(splitFrames(bomb, 4096)));
    return conn.reader();
  })();
  // Wait until the read side has paused the socket and the inflater (unread bytes past its mark).
  await until(() => readSidePaused(conn));
  t.ok(socketPaused(conn), "socket paused");
  const inflated = (): number => receivingSize(conn);
  const stalledAt = inflated();
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
  t.equal(inflated(), stalledAt, `nothing more inflated while nobody reads (stopped at ${stalledAt} B)`);
  t.ok(stalledAt < 2 * MiB, "stopped after a bounded amount");
  const idle = watch.stop(t, "reader() not consumed");
  t.ok(idle.rss < 8 * MiB && idle.arrayBuffers < 4 * MiB, "memory bounded while stalled");
  // Now consume it chunk by chunk: all 100 MiB flow, memory still bounded.
  const watch2 = new MemoryWatch();
  let received = 0;
  let nonZero = 0;
  for await (const chunk of message.stream) {
    received += (chunk as Buffer).length;
    if ((chunk as Buffer).some((b) => b !== 0)) nonZero++;
  }
  const streaming = watch2.stop(t, "reader() consumed");
  t.equal(received, total, "the whole 100 MiB message streamed");
  t.equal(nonZero, 0, "all zeros");
  // The peak is garbage waiting for the collector (V8 collects after about
  // 32 MiB of external allocations), not data held: it does not grow with the
  // message, and nothing is left once collected.
  t.ok(streaming.arrayBuffers < 64 * MiB, "peak array buffers well under the 100 MiB streamed");
  const after = memorySample();
  t.comment(`retained after streaming: arrayBuffers ${mib(after.arrayBuffers - watch2.base.arrayBuffers)}`);
  t.ok(after.arrayBuffers - watch2.base.arrayBuffers < 4 * MiB, "nothing retained once collected");
  up.socket.destroy();
  conn.closeNow();
});

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
}

function socketPaused(conn: Conn): boolean {
  return (conn as unknown as { socket: { isPaused(): boolean } }).socket.isPaused();
}

/** readSide peeks at a Conn's read queue (private, for these tests only). */
function readSide(conn: Conn): { paused: boolean; receiving?: { size: number } } {
  return (conn as unknown as { inbound: { queue: { paused: boolean; receiving?: { size: number } } } }).inbound.queue;
}

function readSidePaused(conn: Conn): boolean {
  return readSide(conn).paused;
}

function receivingSize(conn: Conn): number {
  return readSide(conn).receiving?.size ?? -1;
}

t.test("invalid compressed data fails with 1007, on both sides", async (t) => {
  const srv = await deflateServer(t);
  for (const [name, payload] of [
    ["reserved block type", Buffer.from([0xff, 0xff, 0xff, 0xff])],
    ["bad stored length", Buffer.from([0x00, 0x05, 0x00, 0x00, 0x00, 0x41])],
  ] as Array<[string, Buffer]>) {
    const up = await rawUpgrade(srv.port, "permessage-deflate");
    const { conn } = await srv.next();
    up.socket.write(frame(OP.text, payload, { rsv1: true }));
    const err = await rejection(conn.read());
    t.match(err, { code: 1007 }, `server, ${name}: read rejects with 1007`);
    t.equal(await closeCodeOf(up), 1007, `server, ${name}: close 1007`);
    up.socket.destroy();
    await conn.closed;
  }
  // A peer that agreed to client_no_context_takeover but refers to its previous message.
  const strict = await deflateServer(t, { compression: "no-context-takeover" });
  const up = await rawUpgrade(strict.port, "permessage-deflate; client_no_context_takeover");
  const { conn } = await strict.next();
  const cheat = new PeerDeflater(15, true);
  const text = Buffer.from("a sentence that repeats, a sentence that repeats. ".repeat(4));
  up.socket.write(frame(OP.text, await cheat.compress(text), { rsv1: true }));
  t.ok((await conn.read()).data.equals(text), "first message fine");
  up.socket.write(frame(OP.text, await cheat.compress(text), { rsv1: true }));
  t.match(await rejection(conn.read()), { code: 1007 }, "a reference into the previous message: 1007");
  t.equal(await closeCodeOf(up), 1007);
  cheat.close();
  up.socket.destroy();
  await conn.closed;
  // The client side: a raw server sends garbage with RSV1.
  const raw = await startAnsweringServer(() => "permessage-deflate");
  t.teardown(() => raw.close());
  const client = await dial(raw.url, { compression: "context-takeover" });
  const peer = await raw.next();
  peer.socket.write(frame(OP.binary, Buffer.from([0xff, 0xff, 0xff]), { rsv1: true, mask: false }));
  t.match(await rejection(client.read()), { code: 1007 }, "client: read rejects with 1007");
  const close = await peer.frames.nextNonControl();
  t.equal(close.payload.readUInt16BE(0), 1007, "client: sends 1007");
  client.closeNow();
});

t.test("misplaced reserved bits fail with 1002", async (t) => {
  const compressed = deflateMessage(Buffer.from("hello hello hello"));
  const cases: Array<[string, string | undefined, Buffer[]]> = [
    ["RSV1 on a continuation frame", "permessage-deflate", [frame(OP.text, compressed.subarray(0, 3), { rsv1: true, fin: false }), frame(OP.cont, compressed.subarray(3), { rsv1: true })]],
    ["RSV1 on an uncompressed message's continuation", "permessage-deflate", [frame(OP.text, "abc", { fin: false }), frame(OP.cont, "def", { rsv1: true })]],
    ["RSV1 on a ping", "permessage-deflate", [frame(OP.ping, "p", { rsv1: true })]],
    ["RSV1 on a close frame", "permessage-deflate", [frame(OP.close, Buffer.from([0x03, 0xe8]), { rsv1: true })]],
    ["RSV1 without the extension", undefined, [frame(OP.text, compressed, { rsv1: true })]],
    ["RSV2 with the extension", "permessage-deflate", [frame(OP.text, "x", { rsvBits: 0x20 })]],
    ["RSV3 with the extension", "permessage-deflate", [frame(OP.text, "x", { rsvBits: 0x10 })]],
  ];
  const srv = await deflateServer(t);
  for (const [name, offer, frames] of cases) {
    const up = await rawUpgrade(srv.port, offer);
    const { conn } = await srv.next();
    void conn.read().catch(() => undefined);
    up.socket.write(Buffer.concat(frames));
    t.equal(await closeCodeOf(up), 1002, name);
    up.socket.destroy();
    await conn.closed;
  }
});

// ---- zlib state ----

interface ZlibState {
  inflater: boolean;
  deflater: boolean;
}

/** zlibState peeks at whether a Conn holds zlib streams (private fields, for this test only). */
function zlibState(conn: Conn): ZlibState {
  // Internals, on purpose: this test is about what the connection keeps.
  const c = internals(conn);
  return { inflater: c.inbound.inflater?.stream !== undefined, deflater: c.writes.compression?.deflater.stream !== undefined };
}

/** windowBytes is what a Conn keeps of its context takeover windows, each way. */
function windowBytes(conn: Conn): { inbound: number; outbound: number } {
  const c = internals(conn);
  return { inbound: c.inbound.inflater?.windowSize ?? 0, outbound: c.writes.compression?.deflater.windowSize ?? 0 };
}

function internals(conn: Conn): {
  inbound: { inflater?: { stream?: unknown; windowSize: number } };
  writes: { compression?: { deflater: { stream?: unknown; windowSize: number } } };
} {
  return conn as never;
}

t.test("zlib state: never kept between messages; a window only with context takeover; all released on close", async (t) => {
  for (const mode of ["context-takeover", "no-context-takeover"] as CompressionMode[]) {
    const srv = await deflateServer(t, { compression: mode });
    const client = await dial(srv.url, { compression: mode });
    const { conn } = await srv.next();
    t.same(zlibState(conn), { inflater: false, deflater: false }, `${mode}: nothing before the first message`);
    const big = Buffer.alloc(4096, "a");
    await client.write(MessageType.Binary, big);
    await conn.read();
    await conn.write(MessageType.Binary, big);
    await client.read();
    const keep = mode === "context-takeover";
    t.same(zlibState(conn), { inflater: false, deflater: false }, `${mode}: server after one message each way: no zlib stream`);
    t.same(zlibState(client), { inflater: false, deflater: false }, `${mode}: client after one message each way: no zlib stream`);
    const window = keep ? 4096 : 0;
    t.same(windowBytes(conn), { inbound: window, outbound: window }, `${mode}: the server keeps ${window} B of window each way`);
    t.same(windowBytes(client), { inbound: window, outbound: window }, `${mode}: the client too`);
    await client.close();
    await conn.closed;
    t.same(zlibState(conn), { inflater: false, deflater: false }, `${mode}: server released on close`);
    t.same(zlibState(client), { inflater: false, deflater: false }, `${mode}: client released on close`);
    t.same(windowBytes(conn), { inbound: 0, outbound: 0 }, `${mode}: server windows freed on close`);
    t.same(windowBytes(client), { inbound: 0, outbound: 0 }, `${mode}: client windows freed on close`);
  }
  // A connection dropped in the middle of a compressed message releases too.
  const srv = await deflateServer(t);
  const up = await rawUpgrade(srv.port, "permessage-deflate");
  const { conn } = await srv.next();
  void conn.read().catch(() => undefined);
  const peer = new PeerDeflater(15, true);
  const part = await peer.compress(Buffer.alloc(100_000, "z"));
  peer.close();
  up.socket.write(frame(OP.text, part, { rsv1: true, fin: false }));
  await until(() => zlibState(conn).inflater);
  up.socket.destroy();
  await conn.closed;
  t.same(zlibState(conn), { inflater: false, deflater: false }, "dropped mid-message: released");
});

t.test("a large compressed write interrupted by closeNow settles", async (t) => {
  const srv = await deflateServer(t);
  const client = await dial(srv.url, { compression: "context-takeover" });
  await srv.next();
  const writes = [client.write(MessageType.Binary, Buffer.alloc(16 * MiB, 1)), client.write(MessageType.Binary, Buffer.alloc(MiB, 2))];
  client.closeNow();
  for (const err of await Promise.all(writes.map(rejection))) t.match(err, { code: 1006 }, "rejects with the close error");
  t.same(zlibState(client), { inflater: false, deflater: false }, "released");
});

// ---- memory per connection, wsconn and ws ----

interface Measured {
  label: string;
  /** How long each phase took, for keeping the test fast. */
  phases: string;
  idle: number;
  active: number;
  idleRss: number;
  activeRss: number;
}

const CONNECTIONS = 1000;
const MESSAGE = Buffer.from(JSON.stringify({ type: "update", items: Array.from({ length: 30 }, (_, i) => ({ id: i, name: `item ${i}`, price: i * 3.5 })) }));

t.test(`memory per connection, ${CONNECTIONS} connections per mode, wsconn vs ws`, async (t) => {
  const started = Date.now();
  const configs: Array<{ impl: "wsconn" | "ws"; compression: CompressionMode }> = [
    { impl: "wsconn", compression: "disabled" },
    { impl: "wsconn", compression: "context-takeover" },
    { impl: "wsconn", compression: "no-context-takeover" },
    { impl: "ws", compression: "disabled" },
    { impl: "ws", compression: "context-takeover" },
    { impl: "ws", compression: "no-context-takeover" },
  ];
  // Each server runs in its own process, so each measures only itself. They
  // are measured one at a time (at once, on a small machine, every phase
  // only gets slower), and the next one starts while one is measured.
  const results: Measured[] = [];
  let next = startMemoryServer(configs[0]!);
  for (let i = 0; i < configs.length; i++) {
    const server = await next;
    if (i + 1 < configs.length) next = startMemoryServer(configs[i + 1]!);
    results.push(await measureServer(server));
  }
  t.comment(`message: ${MESSAGE.length} B of JSON each way; per connection, heap+external (RSS):`);
  for (const r of results) {
    t.comment(`  ${r.label.padEnd(26)} idle ${kib(r.idle)} (${kib(r.idleRss)} RSS)   after one message each way ${kib(r.active)} (${kib(r.activeRss)} RSS)`);
  }
  for (const r of results) t.comment(`  ${r.label}: ${r.phases}`);
  t.comment(`measured in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const get = (label: string): Measured => results.find((r) => r.label === label)!;
  // Generous bounds: the figures themselves go to docs/compression.md.
  t.ok(get("wsconn disabled").activeRss < 64 * KiB, "wsconn without compression: under 64 KiB RSS per connection");
  t.ok(get("wsconn no-context-takeover").activeRss < 64 * KiB, "wsconn no-context-takeover: no zlib state kept, under 64 KiB");
  const windows = get("wsconn context-takeover").active - get("wsconn disabled").active;
  t.ok(windows > 3 * KiB, `wsconn context-takeover: keeps its windows (${kib(windows)} more than without compression)`);
  t.ok(get("wsconn context-takeover").idleRss < 64 * KiB, "wsconn context-takeover, idle without traffic: no window yet");
  t.ok(get("wsconn context-takeover").activeRss < 80 * KiB, "wsconn context-takeover: under 80 KiB (windows, not zlib streams)");
  t.ok(get("ws context-takeover").activeRss > 2 * get("wsconn context-takeover").activeRss, "under half of ws's, which keeps zlib streams");
});

function kib(bytes: number): string {
  return `${(bytes / KiB).toFixed(1).padStart(6)} KiB`;
}

/** measureServer measures one child server with CONNECTIONS raw clients, then stops it. */
async function measureServer(server: MemoryServer): Promise<Measured> {
  const { config, port } = server;
  const phases: string[] = [];
  let last = Date.now();
  const phase = (name: string): void => {
    phases.push(`${name} ${Date.now() - last} ms`);
    last = Date.now();
  };
  const measure = async (): Promise<MemorySample> => {
    server.send({ type: "measure" });
    return (await server.reply()).sample!;
  };
  try {
    const compressed = config.compression !== "disabled";
    // Warm up code paths and pools so that the baseline includes them.
    closeAll(await exchange(await openClients(port, 10), compressed));
    server.send({ type: "wait", connections: 0 });
    await server.reply();
    const base = await measure();
    phase("warm-up");
    const clients = await openClients(port, CONNECTIONS);
    server.send({ type: "wait", connections: CONNECTIONS });
    await server.reply();
    phase("connect");
    const idle = await measure();
    await exchange(clients, compressed);
    phase("exchange");
    const active = await measure();
    for (const c of clients) c.socket.destroy();
    const heap = (s: MemorySample): number => s.heapUsed + s.external;
    return {
      phases: phases.join(", "),
      label: `${config.impl} ${config.compression}`,
      idle: (heap(idle) - heap(base)) / CONNECTIONS,
      active: (heap(active) - heap(base)) / CONNECTIONS,
      idleRss: (idle.rss - base.rss) / CONNECTIONS,
      activeRss: (active.rss - base.rss) / CONNECTIONS,
    };
  } finally {
    await server.stop();
  }
}

async function openClients(port: number, n: number): Promise<RawUpgrade[]> {
  const clients: RawUpgrade[] = [];
  for (let i = 0; i < n; i += 200) {
    const batch = Array.from({ length: Math.min(200, n - i) }, () => rawUpgrade(port, "permessage-deflate; client_max_window_bits"));
    clients.push(...(await Promise.all(batch)));
  }
  return clients;
}

/**
 * exchange sends one message from every client and waits for every echo,
 * ten connections at a time: what is measured is what connections keep, not
 * the zlib memory of a thousand messages in flight at once (which malloc
 * would not hand back to the system).
 */
async function exchange(clients: RawUpgrade[], compressed: boolean): Promise<RawUpgrade[]> {
  const body = compressed ? deflateMessage(MESSAGE) : MESSAGE;
  for (let i = 0; i < clients.length; i += 10) {
    const batch = clients.slice(i, i + 10);
    for (const c of batch) c.socket.write(frame(OP.text, body, { rsv1: compressed }));
    await Promise.all(batch.map((c) => c.frames.next()));
  }
  return clients;
}

function closeAll(clients: RawUpgrade[]): void {
  for (const c of clients) c.socket.destroy();
}
