/**
 * Fuzzing both roles with seeded random and mutated frame streams: valid
 * messages, fragments with interleaved controls, close frames with any code
 * and reason, random headers and bytes, then bit flips, insertions,
 * deletions, truncations, delivered at random chunk boundaries, ended by FIN,
 * by a reset, or by a close frame. For every connection:
 *
 * - the process never throws (no uncaught exception, no unhandled rejection);
 * - whatever wsconn sends parses as frames of its role, and any close code it
 *   sends may be sent;
 * - `conn.closed` settles with a code a close can report, and the peer's
 *   socket closes: nothing is left half-open;
 * and at the end no socket is left open and the heap has not grown.
 *
 * The seed is fixed (printed); `FUZZ_SEED` picks another one and
 * `FUZZ_ITERATIONS` (per role) runs more.
 */

import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import t, { type Test } from "tap";
import { accept, type CloseInfo, type Conn, dial } from "../src/index.js";
import { runEcho } from "./conformance/peer.js";
import { closePayload, encodeFrame, FrameReader, Op, rawConnect, type RawFrame, type RawPeer, startRawServer } from "./helpers/raw-peer.js";

const SEED = Number(process.env["FUZZ_SEED"] ?? 0x5eed_2026) >>> 0;
const ITERATIONS = Number(process.env["FUZZ_ITERATIONS"] ?? 1500);
/** FUZZ_ONLY=n replays iteration n alone (to debug a failure). */
const ONLY = process.env["FUZZ_ONLY"] === undefined ? undefined : Number(process.env["FUZZ_ONLY"]);
const CONCURRENCY = 8;
/** Guard for one connection to end, in ms: a hang, not a slow machine. */
const GUARD_MS = 8000;

// ---- seeded random ----

/** Rng is mulberry32: small, fast, and the same sequence for the same seed everywhere. */
class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    let x = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

function iterationRng(role: string, i: number): Rng {
  return new Rng(SEED ^ Math.imul(i + 1, 0x9e3779b1) ^ (role === "server" ? 0 : 0x85ebca6b));
}

// ---- stream generation ----

/** A payload size: mostly small, sometimes around the 7/16-bit boundaries, rarely large. */
function size(r: Rng): number {
  const roll = r.next();
  if (roll < 0.7) return r.int(130);
  if (roll < 0.9) return 120 + r.int(200);
  if (roll < 0.97) return 65530 + r.int(12);
  return 30000 + r.int(40000);
}

/** utf8Text: about `n` bytes of valid UTF-8 from every encoded length. */
function utf8Text(r: Rng, n: number): Buffer {
  const points: number[] = [];
  for (let bytes = 0; bytes < n; ) {
    let cp = r.int(r.pick([0x80, 0x800, 0x10000, 0x110000]));
    if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x41;
    points.push(cp);
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return Buffer.from(String.fromCodePoint(...points.slice(0, 60000)) + (points.length > 60000 ? String.fromCodePoint(...points.slice(60000)) : ""));
}

/** message: a text or binary message, maybe fragmented, maybe with controls between fragments. */
function message(r: Rng): RawFrame[] {
  const isText = r.chance(0.5);
  const data = isText ? utf8Text(r, size(r)) : r.bytes(size(r));
  const parts = r.chance(0.5) ? 1 : 1 + r.int(5);
  const frames: RawFrame[] = [];
  const step = Math.ceil(data.length / parts) || 1;
  for (let off = 0, k = 0; off < data.length || k === 0; off += step, k++) {
    const last = off + step >= data.length;
    frames.push({ opcode: k === 0 ? (isText ? Op.Text : Op.Binary) : Op.Continuation, payload: data.subarray(off, off + step), fin: last });
    if (!last && r.chance(0.3)) frames.push(control(r));
  }
  return frames;
}

function control(r: Rng): RawFrame {
  const op = r.pick([Op.Ping, Op.Pong, Op.Ping]);
  return { opcode: op, payload: r.bytes(r.chance(0.95) ? r.int(126) : 126 + r.int(10)) };
}

const CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999, 0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535];

function closeFrame(r: Rng): RawFrame {
  const roll = r.next();
  if (roll < 0.1) return { opcode: Op.Close };
  if (roll < 0.15) return { opcode: Op.Close, payload: r.bytes(1) };
  const code = r.chance(0.8) ? r.pick(CODES) : r.int(65536);
  const reason = r.chance(0.7) ? utf8Text(r, r.int(40)) : r.bytes(r.int(124));
  return { opcode: Op.Close, payload: closePayload(code, reason) };
}

/** randomFrame: any first byte, any length form, maybe a lie about the length. */
function randomFrame(r: Rng): RawFrame {
  const b0 = r.int(256);
  const frame: RawFrame = { opcode: b0 & 0x0f, fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 7, payload: r.bytes(r.int(40)) };
  if (r.chance(0.2)) frame.declaredLength = r.pick([126n, 65536n, 2n ** 32n, 2n ** 53n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n]);
  if (r.chance(0.2)) frame.mask = r.chance(0.5);
  return frame;
}

function unit(r: Rng): RawFrame[] {
  const roll = r.next();
  if (roll < 0.55) return message(r);
  if (roll < 0.75) return [control(r)];
  if (roll < 0.85) return [closeFrame(r)];
  return [randomFrame(r)];
}

/** mutate damages a stream a few times: bit flips, overwrites, insertions, deletions, truncation. */
function mutate(r: Rng, bytes: Buffer): Buffer {
  let out: Buffer = Buffer.from(bytes);
  const count = 1 + r.int(4);
  for (let k = 0; k < count && out.length > 0; k++) {
    const at = r.chance(0.5) ? r.int(Math.min(out.length, 16)) : r.int(out.length);
    const kind = r.int(5);
    if (kind === 0) out[at]! ^= 1 << r.int(8);
    else if (kind === 1) out[at] = r.int(256);
    else if (kind === 2) out = Buffer.concat([out.subarray(0, at), r.bytes(1 + r.int(8)), out.subarray(at)]);
    else if (kind === 3) out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1 + r.int(8))]);
    else out = out.subarray(0, at);
  }
  return out;
}

/** Ending: how the peer leaves once its bytes are sent. */
type Ending = "fin" | "reset" | "close";

interface Script {
  bytes: Buffer;
  chunks: number[];
  ending: Ending;
  early: boolean;
}

function script(r: Rng, masks: boolean): Script {
  const frames: RawFrame[] = [];
  const units = 1 + r.int(6);
  for (let k = 0; k < units; k++) frames.push(...unit(r));
  let bytes: Buffer = Buffer.concat(frames.map((f) => encodeFrame(f, masks)));
  if (r.chance(0.05)) bytes = r.bytes(r.int(64));
  else if (r.chance(0.6)) bytes = mutate(r, bytes);
  const chunks: number[] = [];
  for (let left = bytes.length; left > 0; ) {
    const n = Math.min(left, r.chance(0.3) ? 1 + r.int(3) : 1 + r.int(2000));
    chunks.push(n);
    left -= n;
  }
  const roll = r.next();
  const ending: Ending = roll < 0.7 ? "fin" : roll < 0.85 ? "reset" : "close";
  return { bytes, chunks, ending, early: r.chance(0.15) };
}

// ---- playing a script ----

interface Outcome {
  problems: string[];
  info: CloseInfo | undefined;
}

const VALID_REPORTED = (code: number): boolean =>
  code === 1005 || code === 1006 || (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
const SENDABLE = (code: number): boolean => code !== 1005 && code !== 1006 && VALID_REPORTED(code);

/** play sends the script and checks how both ends finish. */
async function play(peer: RawPeer, conn: Conn, s: Script, role: "server" | "client"): Promise<Outcome> {
  const problems: string[] = [];
  const echo = runEcho(conn);
  const frames = watchFrames(peer, role === "client", problems);
  let offset = s.early ? s.chunks[0] ?? 0 : 0;
  for (const n of s.early ? s.chunks.slice(1) : s.chunks) {
    if (peer.socket.destroyed) break;
    await new Promise<void>((resolve) => peer.socket.write(s.bytes.subarray(offset, offset + n), () => setImmediate(resolve)));
    offset += n;
  }
  if (s.ending === "reset") peer.socket.resetAndDestroy();
  else {
    if (s.ending === "close" && !peer.socket.destroyed) peer.socket.write(encodeFrame({ opcode: Op.Close, payload: closePayload(1000) }, role === "server"));
    peer.end();
  }
  const info = await guard(conn.closed);
  if (info === undefined) problems.push("conn.closed did not settle");
  else if (!VALID_REPORTED(info.value.code)) problems.push(`conn.closed reported code ${info.value.code}`);
  if ((await guard(peer.closed)) === undefined) problems.push("the peer's socket stayed open (half-open connection)");
  if ((await guard(echo)) === undefined) problems.push("the echo loop did not stop");
  frames.stop();
  return { problems, info: info?.value };
}

/** watchFrames parses everything wsconn sends and records rule breaks. */
function watchFrames(peer: RawPeer, wantMasked: boolean, problems: string[]): { stop(): void } {
  const reader = new FrameReader();
  const onData = (chunk: Buffer): void => {
    reader.push(chunk);
    for (let f = reader.next(); f; f = reader.next()) {
      if (f.masked !== wantMasked) problems.push(`wsconn sent a frame with mask=${f.masked}`);
      if (f.opcode === Op.Close && f.payload.length >= 2 && !SENDABLE(f.payload.readUInt16BE(0))) {
        problems.push(`wsconn sent close code ${f.payload.readUInt16BE(0)}`);
      }
      if (f.opcode === Op.Close && f.payload.length === 1) problems.push("wsconn sent a 1-byte close payload");
    }
    if (reader.error) problems.push(`wsconn's bytes do not parse: ${reader.error}`);
  };
  peer.socket.on("data", onData);
  return { stop: () => peer.socket.off("data", onData) };
}

/** guard resolves with `{ value }` when `p` settles in time, with undefined after GUARD_MS: a hang. */
async function guard<T>(p: Promise<T>): Promise<{ value: T } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), GUARD_MS)));
  const result = await Promise.race([p.then((value) => ({ value })), timeout]);
  clearTimeout(timer);
  return result;
}

// ---- the two roles ----

interface RoleRun {
  role: "server" | "client";
  /** Opens a connection for a script; returns the raw peer and the Conn. */
  open(s: Script, i: number): Promise<{ peer: RawPeer; conn: Conn }>;
  /** Sockets still open on the wsconn side's listener (server) or raw server (client). */
  openSockets(): number;
  close(): Promise<void>;
}

async function serverRun(): Promise<RoleRun> {
  const sockets = new Set<net.Socket>();
  const conns = new Map<number, (c: Conn) => void>();
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  server.on("connection", (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const url = new URL(req.url ?? "/", "http://x");
    const readLimit = url.pathname === "/small" ? 1024 : undefined;
    const id = Number(url.searchParams.get("id"));
    accept(req, socket, head, { readLimit, closeTimeout: 2000 }).then((c) => conns.get(id)?.(c), () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  let next = 0;
  return {
    role: "server",
    async open(s, i) {
      const id = ++next;
      const connP = new Promise<Conn>((resolve) => conns.set(id, resolve));
      const path = `/${i % 4 === 0 ? "small" : "default"}?id=${id}`;
      const early = s.early ? s.bytes.subarray(0, s.chunks[0] ?? 0) : undefined;
      const peer = await rawConnect(port, { path, early });
      const conn = await connP;
      conns.delete(id);
      return { peer, conn };
    },
    openSockets: () => sockets.size,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function clientRun(): Promise<RoleRun> {
  const raw = await startRawServer();
  const sockets = new Set<net.Socket>();
  return {
    role: "client",
    async open(s, i) {
      const early = s.early ? s.bytes.subarray(0, s.chunks[0] ?? 0) : undefined;
      const next = raw.nextPeer({ early });
      const conn = await dial(raw.url, { readLimit: i % 4 === 0 ? 1024 : undefined, closeTimeout: 2000 });
      const { peer } = await next;
      sockets.add(peer.socket);
      peer.socket.on("close", () => sockets.delete(peer.socket));
      return { peer, conn };
    },
    openSockets: () => sockets.size,
    close: () => raw.close(),
  };
}

// ---- the test ----

function collectGarbage(): void {
  setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
}

const uncaught: unknown[] = [];
const onUncaught = (err: unknown): void => void uncaught.push(err);
process.on("uncaughtException", onUncaught);
process.on("unhandledRejection", onUncaught);

async function fuzzRole(t: Test, run: RoleRun): Promise<void> {
  const failures: string[] = [];
  const closes = new Map<number, number>();
  const indexes = ONLY === undefined ? Array.from({ length: ITERATIONS }, (_, i) => i) : [ONLY];
  let cursor = 0;
  const worker = async (): Promise<void> => {
    while (cursor < indexes.length) {
      const i = indexes[cursor++]!;
      const s = script(iterationRng(run.role, i), run.role === "server");
      const { peer, conn } = await run.open(s, i);
      if (ONLY !== undefined) t.comment(`iteration ${i}: ${s.ending}, early ${s.early}, chunks ${s.chunks.join(",")}\n${s.bytes.toString("hex")}`);
      const { problems, info } = await play(peer, conn, s, run.role);
      if (info) closes.set(info.code, (closes.get(info.code) ?? 0) + 1);
      if (problems.length > 0) failures.push(`iteration ${i} (${s.ending}, ${s.bytes.length} bytes ${s.bytes.subarray(0, 48).toString("hex")}): ${problems.join("; ")}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  t.same(failures.slice(0, 10), [], `${ITERATIONS} streams against wsconn as ${run.role}: every connection ended cleanly`);
  t.equal(run.openSockets(), 0, "no socket left open");
  const summary = [...closes.entries()].sort((a, b) => a[0] - b[0]).map(([code, n]) => `${code}:${n}`).join(" ");
  t.comment(`wsconn as ${run.role}: conn.closed codes ${summary}`);
}

t.test("fuzz", async (t) => {
  t.comment(`FUZZ_SEED=${SEED} FUZZ_ITERATIONS=${ITERATIONS} (per role)`);
  collectGarbage();
  const heapBefore = process.memoryUsage().heapUsed;
  for (const make of [serverRun, clientRun]) {
    const run = await make();
    await t.test(`wsconn as ${run.role}`, (t) => fuzzRole(t, run).finally(() => run.close()));
  }
  collectGarbage();
  const growth = process.memoryUsage().heapUsed - heapBefore;
  t.comment(`heap growth after GC: ${(growth / 1024 / 1024).toFixed(1)} MiB`);
  t.ok(growth < 32 * 1024 * 1024, `heap grew by ${(growth / 1024 / 1024).toFixed(1)} MiB (< 32 MiB)`);
  t.same(uncaught.map(String), [], "no uncaught exception or unhandled rejection");
  process.off("uncaughtException", onUncaught);
  process.off("unhandledRejection", onUncaught);
});

/** floodCase: a stream whose queued form would cost far more heap than its bytes, unless accounted for. */
interface FloodCase {
  name: string;
  /** The stream, sent without waiting for the server to read it. */
  bytes(): Buffer;
  /** What the first read returns once reading starts. */
  first: { length: number };
}

const FLOODS: FloodCase[] = [
  {
    // 6 bytes on the wire per message (header and mask key), ~140 bytes of heap each if all were queued.
    name: "100k empty messages",
    bytes: () => Buffer.concat(Array.from({ length: 10_000 }, () => encodeFrame({ opcode: Op.Text }, true))),
    first: { length: 0 },
  },
  {
    // 7 bytes on the wire per fragment, ~100 bytes of heap each if each were kept apart; they are
    // copied together, so it takes more than 256 KiB of payload to reach the unread mark.
    name: "one message in 400k one-byte fragments",
    bytes: () => {
      const frames = [encodeFrame({ opcode: Op.Binary, payload: Buffer.from([1]), fin: false }, true)];
      for (let i = 1; i < 400_000; i++) frames.push(encodeFrame({ opcode: Op.Continuation, payload: Buffer.from([1]), fin: i === 399_999 }, true));
      return Buffer.concat(frames);
    },
    first: { length: 400_000 },
  },
];

for (const flood of FLOODS) {
  t.test(`a flood nobody reads pauses the socket instead of filling the heap: ${flood.name}`, async (t) => {
    const server = http.createServer();
    const accepted = new Promise<{ conn: Conn; socket: net.Socket }>((resolve) => {
      server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
        accept(req, socket, head, { readLimit: Infinity }).then((conn) => resolve({ conn, socket }), () => undefined);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const peer = await rawConnect((server.address() as AddressInfo).port);
    const { conn, socket } = await accepted;
    const bytes = flood.bytes();
    collectGarbage();
    const before = process.memoryUsage().heapUsed;
    const paused = new Promise((resolve) => socket.once("pause", resolve));
    for (let i = 0; i < (flood.first.length === 0 ? 10 : 1); i++) peer.socket.write(bytes);
    t.ok(await guard(paused), "the server paused the socket");
    collectGarbage();
    const growth = process.memoryUsage().heapUsed - before;
    t.ok(growth < 16 * 1024 * 1024, `heap grew by ${(growth / 1024 / 1024).toFixed(1)} MiB before the socket paused`);
    const first = await conn.read();
    t.equal(first.data.length, flood.first.length, "reading takes what was queued, and the socket resumes");
    // Nothing is left counted as unread: a later message still flows.
    peer.socket.write(encodeFrame({ opcode: Op.Binary, payload: Buffer.alloc(300 * 1024, 2) }, true));
    let next = await conn.read();
    while (next.data.length === 0) next = await conn.read();
    t.equal(next.data.length, 300 * 1024, "a later 300 KiB message arrives");
    peer.destroy();
    conn.closeNow();
    await conn.closed;
  });
}

t.test("a peer that pings but never reads gets one coalesced pong, not a growing queue", async (t) => {
  const server = http.createServer();
  const total = 100_000;
  let pings = 0;
  let allPinged!: () => void;
  const done = new Promise<void>((resolve) => (allPinged = resolve));
  const accepted = new Promise<{ conn: Conn; socket: net.Socket }>((resolve) => {
    server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      const onPing = (): void => void (++pings === total && allPinged());
      accept(req, socket, head, { onPing }).then((conn) => resolve({ conn, socket }), () => undefined);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const peer = await rawConnect((server.address() as AddressInfo).port);
  const { conn, socket } = await accepted;
  peer.socket.pause(); // never read a pong
  const ping = encodeFrame({ opcode: Op.Ping, payload: Buffer.alloc(125, 7) }, true);
  const batch = Buffer.concat(Array.from({ length: 1000 }, () => ping));
  for (let i = 0; i < total / 1000; i++) peer.socket.write(batch);
  t.ok(await guard(done), `the server read all ${total} pings (${((total * ping.length) / 1e6).toFixed(1)} MB)`);
  const bound = socket.writableHighWaterMark + 2 * 127;
  t.ok(socket.writableLength <= bound, `${socket.writableLength} bytes of pongs wait in the socket (bound ${bound})`);
  peer.destroy();
  conn.closeNow();
  await conn.closed;
});
