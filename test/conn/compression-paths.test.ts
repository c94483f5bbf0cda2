/**
 * The paths a compressed message takes through the inbound side
 * (src/conn/inflate.ts, inbound.ts, read-queue.ts) and the CompressionQueue
 * that bounds zlib work off the main thread, against hostile and real peers:
 *
 * - one call on the main thread for a message in ONE frame of at most
 *   FAST_INFLATE_MAX compressed bytes, its output capped by the read limit
 *   when a read waits (a bomb is a 1009 at once) or by FAST_INFLATE_OUTPUT
 *   when none does (then the same bytes are streamed: a bomb stalls at the
 *   unread mark and the read that claims it later gets the 1009);
 * - the fallback: a message past FAST_INFLATE_OUTPUT streamed instead, with
 *   context takeover carried across both paths (raw peer for the exact wire
 *   shape, a real `ws` peer for a long sequence);
 * - invalid input on either path (bad deflate data, invalid or cut UTF-8)
 *   never reaches the application;
 * - a one-frame message delivered byte by byte, and a three-frame message
 *   with pings between its frames;
 * - CompressionQueue: its bound, its fairness to a paused reader, and no
 *   slot leaked by a connection closed while its zlib work waits;
 * - at the end, three defects found while writing it (fixed), kept as
 *   regression tests.
 *
 * Each case runs in both roles where the role matters: a wsconn server with
 * a raw `net` client, and a wsconn client (dial) with a raw server. Every
 * wait is on an event or on state polled once per event-loop turn; nothing
 * sleeps. Raw peers compress with node:zlib directly (deflate-peer.ts).
 */

import type * as net from "node:net";
import t from "tap";
import { WebSocket } from "ws";
import { CompressionQueue } from "../../src/conn/compression-queue.js";
import { FAST_INFLATE_MAX, FAST_INFLATE_OUTPUT, type MessageInflater, OUTPUT_OVER_CAP } from "../../src/conn/inflate.js";
import { READ_HIGH_WATER_MARK } from "../../src/conn/options.js";
import { type AcceptOptions, CloseError, type Conn, dial, type DialOptions, ErrorCode, type Message, MessageType, StatusCode, type StreamedMessage } from "../../src/index.js";
import { deflateMessage, inflateMessage, MemoryWatch, mib, PeerDeflater } from "../helpers/deflate-peer.js";
import { type Accepted, rejection, rng, startWsconnServer, startWsServer, wsClient, wsMessages, wsNext } from "../helpers/interop.js";
import { encodeFrames, frame, Op, rawConnect, type RawPeer, type ReceivedFrame, RSV1, startRawServer, switchingProtocols } from "../helpers/raw-peer.js";

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];
type Role = "server" | "client";

const KiB = 1024;
const MiB = 1024 * KiB;
const ROLES: Role[] = ["server", "client"];
const EXTENSION = "Sec-WebSocket-Extensions: permessage-deflate";

// ---- payloads ----

const WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma", "été", "€uro", "naïve", "😀ok"];

/** wordText returns exactly `n` bytes of valid UTF-8: seeded random words and numbers (compresses about 3:1). */
function wordText(n: number, seed: number): Buffer {
  const next = rng(seed);
  const parts: string[] = [];
  let len = 0;
  for (;;) {
    const w = WORDS[Math.floor(next() * WORDS.length)]! + (next() < 0.3 ? String(Math.floor(next() * 100_000)) : "");
    const bytes = Buffer.byteLength(w) + 1;
    if (len + bytes > n) break;
    parts.push(w);
    len += bytes;
  }
  const body = Buffer.from(parts.map((p) => `${p} `).join(""));
  return Buffer.concat([body, Buffer.alloc(n - body.length, 0x2e)]);
}

/**
 * periodic returns exactly `n` bytes of valid UTF-8: a ~3 KB block of words
 * repeated, then ASCII padding. 1 MiB of it deflates to about 6 KB, so it
 * fits one frame under FAST_INFLATE_MAX while inflating far past
 * FAST_INFLATE_OUTPUT. `tail` is its last block and the padding, bytes a
 * message after it can refer to.
 */
function periodic(n: number, seed: number): { data: Buffer; tail: Buffer } {
  const block = wordText(3000, seed);
  const copies = Math.floor(n / block.length);
  const pad = Buffer.alloc(n - copies * block.length, 0x2e);
  return { data: Buffer.concat([...Array.from({ length: copies }, () => block), pad]), tail: Buffer.concat([block, pad]) };
}

/** The bomb: 10 MiB of zeros in about 10 KB, one frame on the one-call path. */
const BOMB_SIZE = 10 * MiB;
const BOMB = deflateMessage(Buffer.alloc(BOMB_SIZE));

// ---- peers ----

/** A Conn under test and the raw peer on the other end of its socket. */
interface RawSide {
  conn: Conn;
  peer: RawPeer;
}

/**
 * openRaw connects a Conn in `role` (compression on, context takeover) to a
 * raw peer that negotiated plain `permessage-deflate` by hand: as a server
 * with a raw client, or as a client (dial) with a raw server.
 */
async function openRaw(t: TestContext, role: Role, options: AcceptOptions & DialOptions = {}): Promise<RawSide> {
  const opts = { compression: "context-takeover" as const, ...options };
  let side: RawSide;
  if (role === "server") {
    const srv = await startWsconnServer(opts);
    t.teardown(() => srv.close());
    const accepted = srv.next();
    const peer = await rawConnect(srv.port, { headers: [EXTENSION] });
    side = { conn: (await accepted).conn, peer };
  } else {
    const srv = await startRawServer();
    t.teardown(() => srv.close());
    const next = srv.nextPeer({ response: (req) => switchingProtocols(req.headers.get("sec-websocket-key")?.[0] ?? "", [EXTENSION]) });
    const conn = await dial(srv.url, opts);
    side = { conn, peer: (await next).peer };
  }
  t.teardown(() => {
    side.peer.destroy();
    side.conn.closeNow();
  });
  if (!/^permessage-deflate/.test(side.conn.extensions)) throw new Error(`not negotiated: ${side.conn.extensions}`);
  return side;
}

/** closeCode reads frames until the close frame and returns its code (null/"timeout" when none came). */
async function closeCode(peer: RawPeer): Promise<number | null | "timeout" | undefined> {
  for (;;) {
    const f = await peer.nextFrame();
    if (f === null || f === "timeout") return f;
    if (f.opcode === Op.Close) return f.payload.length >= 2 ? f.payload.readUInt16BE(0) : undefined;
  }
}

/** isPong tells whether what nextFrame returned is a pong with `payload`. */
function isPong(f: ReceivedFrame | null | "timeout", payload: string): boolean {
  return f !== null && f !== "timeout" && f.opcode === Op.Pong && f.payload.toString() === payload;
}

// ---- internals, read only (or wrapped), to tell which path a message took ----

interface Internals {
  socket: net.Socket;
  pausedForReader: boolean;
  inbound: {
    inflater: MessageInflater;
    queue: { head: { complete: boolean; size: number } | undefined; receiving: { size: number } | undefined; unreadBytes: number; failure: CloseError | undefined };
  };
}

function internals(conn: Conn): Internals {
  return conn as unknown as Internals;
}

/** inflaterState peeks at a connection's MessageInflater: a zlib write under way, chunks waiting for it. */
function inflaterState(conn: Conn): { writing: boolean; backlog: Buffer[]; queued: boolean } {
  return internals(conn).inbound.inflater as unknown as { writing: boolean; backlog: Buffer[]; queued: boolean };
}

/** until polls `condition` once per event-loop turn; a guard turns a hang into a failure. */
async function until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * arrived: the next message is whole in the queue, or the read side paused
 * the socket with it unread, or the connection failed (the read that
 * follows then rejects, and the test says why).
 */
function arrived(conn: Conn): boolean {
  const c = internals(conn);
  return c.inbound.queue.head?.complete === true || c.pausedForReader || c.inbound.queue.failure !== undefined;
}

/** What the inflater of a connection did: one-call successes, one-call give-ups, streamed writes. */
interface PathLog {
  whole: number;
  overCap: number;
  writes: number;
}

type Path = "one call" | "fallback" | "streamed";

/** spyPaths wraps the connection's MessageInflater to count the calls of each path (behaviour unchanged). */
function spyPaths(conn: Conn): PathLog {
  const inflater = internals(conn).inbound.inflater;
  const log: PathLog = { whole: 0, overCap: 0, writes: 0 };
  const inflateWhole = inflater.inflateWhole.bind(inflater);
  inflater.inflateWhole = (data, cap) => {
    const out = inflateWhole(data, cap);
    if (out === OUTPUT_OVER_CAP) log.overCap++;
    else log.whole++;
    return out;
  };
  const write = inflater.write.bind(inflater);
  inflater.write = (chunk) => {
    log.writes++;
    return write(chunk);
  };
  return log;
}

/** pathSince classifies what happened to one message from a snapshot of the log taken before it. */
function pathSince(log: PathLog, before: PathLog): Path | string {
  const whole = log.whole - before.whole;
  const overCap = log.overCap - before.overCap;
  const writes = log.writes - before.writes;
  if (whole === 1 && overCap === 0 && writes === 0) return "one call";
  if (whole === 0 && overCap === 1 && writes >= 1) return "fallback";
  if (whole === 0 && overCap === 0 && writes >= 1) return "streamed";
  return `unexpected: ${JSON.stringify({ whole, overCap, writes })}`;
}

// ---- memory ----

/** A CompressionQueue that records the most operations it ever had in progress, and how many jobs it ran. */
class WatchedQueue extends CompressionQueue {
  peak = 0;
  runs = 0;
  override run(job: () => void): void {
    super.run(() => {
      this.runs++;
      this.peak = Math.max(this.peak, this.active);
      job();
    });
  }
}

function isCloseError(err: unknown, code: number, errorCode?: string): boolean {
  return err instanceof CloseError && err.code === code && (errorCode === undefined || err.errorCode === errorCode);
}

function describeErr(err: unknown): string {
  return err instanceof CloseError ? `CloseError ${err.code} ${err.errorCode ?? ""} ${err.reason}` : String(err);
}

// =====================================================================
// 1. A bomb in one frame
// =====================================================================

t.test("1. a 10 MiB bomb in one frame: 1009 against the default 32 KiB limit, read waiting or not, memory flat", async (t) => {
  t.comment(`bomb: ${BOMB_SIZE} B of zeros in ${BOMB.length} B`);
  t.ok(BOMB.length <= FAST_INFLATE_MAX, `the bomb fits the one-call path (${BOMB.length} B <= ${FAST_INFLATE_MAX} B)`);
  for (const role of ROLES) {
    for (const waiting of [true, false]) {
      const label = `${role}, ${waiting ? "a read waiting" : "no read waiting (claimed later)"}`;
      const { conn, peer } = await openRaw(t, role);
      const log = spyPaths(conn);
      const watch = new MemoryWatch();
      const read = waiting ? rejection(conn.read()) : undefined;
      await peer.send([frame.binary(BOMB, { rsv: RSV1 })]);
      let err: unknown;
      if (read !== undefined) {
        err = await read;
        t.same(log, { whole: 0, overCap: 1, writes: 0 }, `${label}: one call, capped by the read limit, nothing streamed`);
      } else {
        // Unclaimed: the one call gives up at its cap, the same bytes are
        // streamed, and inflation stops at the unread mark.
        await until(() => internals(conn).pausedForReader, "the read side to pause");
        const stalled = internals(conn).inbound.queue.receiving?.size ?? -1;
        t.ok(stalled > 0 && stalled < 2 * MiB, `${label}: inflation stalled at ${stalled} B, unread`);
        t.ok(log.overCap === 1 && log.writes >= 1, `${label}: given up at the one-call cap, then streamed (${JSON.stringify(log)})`);
        watch.sample();
        err = await rejection(conn.read());
      }
      const growth = watch.stop(t, `memory, ${label}`);
      t.ok(isCloseError(err, 1009, ErrorCode.MessageTooBig), `${label}: the read rejects with 1009 (${describeErr(err)})`);
      t.equal(await closeCode(peer), 1009, `${label}: the peer gets a close frame with 1009`);
      t.ok(growth.rss < 8 * MiB, `${label}: RSS grew less than 8 MiB`);
      t.ok(growth.arrayBuffers < 8 * MiB, `${label}: array buffers grew less than 8 MiB`);
      // The peer answers the close: the handshake completes.
      await peer.send([frame.close(1009)]);
      peer.end();
      // Failing stops reading (RFC 6455 §7.1.7): the answer is not read, the close is not clean.
      t.match(await conn.closed, { code: 1006, wasClean: false }, `${label}: closed after failing`);
    }
  }
});

// =====================================================================
// 2. Fallback past the one-call output cap, and context takeover across paths
// =====================================================================

/** One message of the context-takeover sequence and the path it must take on a raw peer's wire. */
interface SeqMessage {
  name: string;
  data: Buffer;
  path: Path;
}

/**
 * sequence returns rounds of: a small message (one call), a 1 MiB periodic
 * one (fallback), the tail of that one (one call, referring into the window
 * the streamed path left), and 100 KB of words (compressed past
 * FAST_INFLATE_MAX: streamed).
 */
function sequence(rounds: number): SeqMessage[] {
  const out: SeqMessage[] = [];
  for (let r = 0; r < rounds; r++) {
    const large = periodic(MiB, 100 + r);
    out.push({ name: `round ${r} small`, data: wordText(400 + r * 37, 10 + r), path: "one call" });
    out.push({ name: `round ${r} 1 MiB`, data: large.data, path: "fallback" });
    out.push({ name: `round ${r} tail of the 1 MiB`, data: large.tail, path: "one call" });
    out.push({ name: `round ${r} 100 KB`, data: wordText(100_000, 200 + r), path: "streamed" });
  }
  return out;
}

t.test("2a. fallback with a raw peer: 1 MiB in one frame of < 16 KiB streams exact, read waiting or not, the window carried across paths", async (t) => {
  for (const role of ROLES) {
    const { conn, peer } = await openRaw(t, role, { readLimit: 4 * MiB });
    const log = spyPaths(conn);
    const deflater = new PeerDeflater(15, true);
    t.teardown(() => deflater.close());
    const messages = sequence(3);
    for (const [k, m] of messages.entries()) {
      const waiting = (k + Math.floor(k / 4)) % 2 === 0;
      const label = `${role}, ${m.name}, ${waiting ? "read waiting" : "no read waiting"}`;
      const payload = await deflater.compress(m.data);
      if (m.path === "fallback") {
        t.ok(payload.length <= FAST_INFLATE_MAX && m.data.length > FAST_INFLATE_OUTPUT, `${label}: ${payload.length} B on the wire for ${m.data.length} B`);
      }
      if (m.path === "streamed") t.ok(payload.length > FAST_INFLATE_MAX, `${label}: ${payload.length} B on the wire, past the one-call size`);
      if (m.name.includes("tail")) {
        let alone: Buffer | undefined;
        try {
          alone = inflateMessage(payload);
        } catch {
          alone = undefined;
        }
        t.ok(payload.length < 200 && !alone?.equals(m.data), `${label}: ${payload.length} B that only decode with the previous message's window`);
      }
      const before = { ...log };
      const read = waiting ? conn.read() : undefined;
      await peer.send([frame.text(payload, { rsv: RSV1 })]);
      if (!waiting) await until(() => arrived(conn), `${label} to arrive`);
      const got: Message = await (read ?? conn.read());
      t.equal(got.type, MessageType.Text, `${label}: text`);
      t.ok(got.data.equals(m.data), `${label}: exact (${got.data.length} B)`);
      t.equal(pathSince(log, before), m.path, `${label}: took the ${m.path} path`);
    }
  }
});

t.test("2b. context takeover with a real ws peer, both roles: small and large messages alternate across the one-call and streamed paths", async (t) => {
  const messages = sequence(3);
  for (const role of ROLES) {
    let conn: Conn;
    let ws: WebSocket;
    if (role === "server") {
      const srv = await startWsconnServer({ compression: "context-takeover", readLimit: 4 * MiB });
      t.teardown(() => srv.close());
      const accepted = srv.next();
      ws = await wsClient(srv.url, { perMessageDeflate: { threshold: 0 } });
      conn = (await accepted).conn;
    } else {
      const srv = await startWsServer({ perMessageDeflate: { threshold: 0 } });
      t.teardown(() => srv.close());
      const accepted = srv.next();
      conn = await dial(srv.url, { compression: "context-takeover", readLimit: 4 * MiB });
      ws = (await accepted).ws;
    }
    // A protocol error at ws ends its socket; wsNext then rejects and says so.
    ws.on("error", () => undefined);
    t.teardown(() => {
      ws.terminate();
      conn.closeNow();
    });
    t.notMatch(conn.extensions, /(client|server)_no_context_takeover/, `${role}: context takeover both ways (${conn.extensions})`);
    const echoes = wsMessages(ws);
    const log = spyPaths(conn);
    const socket = internals(conn).socket;
    for (const [k, m] of messages.entries()) {
      const waiting = (k + Math.floor(k / 4)) % 2 === 1;
      const label = `${role}, ${m.name}, ${waiting ? "read waiting" : "no read waiting"}`;
      const before = { ...log };
      const bytesBefore = socket.bytesRead;
      const read = waiting ? conn.read() : undefined;
      ws.send(m.data, { binary: false });
      if (!waiting) await until(() => arrived(conn), `${label} to arrive`);
      const got: Message = await (read ?? conn.read());
      const wire = socket.bytesRead - bytesBefore;
      t.ok(got.type === MessageType.Text && got.data.equals(m.data), `${label}: exact (${got.data.length} B in ${wire} B on the wire)`);
      const path = pathSince(log, before);
      if (m.path === "fallback") {
        t.ok(wire <= FAST_INFLATE_MAX + 14, `${label}: one frame of at most ${FAST_INFLATE_MAX} B`);
        t.equal(path, "fallback", `${label}: one call gave up at its cap, then streamed`);
      } else if (m.path === "one call") t.equal(path, "one call", `${label}: one call`);
      else t.equal(path, "streamed", `${label}: streamed`);
      // The echo goes back compressed in wsconn's own context: ws checks it.
      await conn.write(MessageType.Text, got.data);
      const echo = await wsNext(ws, echoes);
      t.ok(!echo.isBinary && echo.data.equals(m.data), `${label}: the echo decodes exact at ws`);
    }
  }
});

// =====================================================================
// 3. Invalid input on the one-call and streamed paths
// =====================================================================

interface InvalidCase {
  name: string;
  frames: () => ReturnType<typeof frame.text>[];
  errorCode: string;
  /** The one-call path (one frame) or the streamed path (several). */
  path: Path;
}

const INVALID_UTF8 = Buffer.concat([Buffer.from("valid text before "), Buffer.from([0xc3, 0x28]), Buffer.from(" and after")]);
const CUT_UTF8 = Buffer.from("a message that ends inside a character: €").subarray(0, -1);
/** A streamed message with invalid UTF-8 far from its start, its compressed bytes split in two frames. */
const LONG_INVALID = Buffer.concat([wordText(60_000, 5), Buffer.from([0xed, 0xa0, 0x80]), wordText(60_000, 6)]);
const LONG_CUT = Buffer.concat([wordText(60_000, 7), Buffer.from("€").subarray(0, 2)]);

function twoFrames(data: Buffer): ReturnType<typeof frame.text>[] {
  const payload = deflateMessage(data);
  const at = Math.floor(payload.length / 2);
  return [frame.text(payload.subarray(0, at), { rsv: RSV1, fin: false }), frame.cont(payload.subarray(at))];
}

const INVALID_CASES: InvalidCase[] = [
  { name: "invalid deflate data in one small frame", frames: () => [frame.text(Buffer.alloc(16, 0xff), { rsv: RSV1 })], errorCode: ErrorCode.InvalidCompressedData, path: "one call" },
  { name: "a compressed text message inflating to invalid UTF-8", frames: () => [frame.text(deflateMessage(INVALID_UTF8), { rsv: RSV1 })], errorCode: ErrorCode.InvalidUtf8, path: "one call" },
  { name: "a compressed text message whose UTF-8 is cut at its end", frames: () => [frame.text(deflateMessage(CUT_UTF8), { rsv: RSV1 })], errorCode: ErrorCode.InvalidUtf8, path: "one call" },
  { name: "invalid UTF-8 in a streamed message (two frames)", frames: () => twoFrames(LONG_INVALID), errorCode: ErrorCode.InvalidUtf8, path: "streamed" },
  { name: "UTF-8 cut at the end of a streamed message (two frames)", frames: () => twoFrames(LONG_CUT), errorCode: ErrorCode.InvalidUtf8, path: "streamed" },
];

t.test("3. invalid input: 1007, and the application never receives the invalid message", async (t) => {
  const valid = Buffer.from("a valid message first, which is delivered");
  for (const role of ROLES) {
    for (const c of INVALID_CASES) {
      for (const waiting of [true, false]) {
        const label = `${role}, ${c.name}, ${waiting ? "read waiting" : "no read waiting"}`;
        const { conn, peer } = await openRaw(t, role, { readLimit: MiB });
        const log = spyPaths(conn);
        // A valid message first, in the same context: delivered.
        await peer.send([frame.text(deflateMessage(valid), { rsv: RSV1 })]);
        t.ok((await conn.read()).data.equals(valid), `${label}: the valid message before it is delivered`);
        const before = { ...log };
        const read = waiting ? rejection(conn.read()) : undefined;
        await peer.send(c.frames());
        t.equal(await closeCode(peer), 1007, `${label}: the peer gets 1007`);
        // No read waiting: the close frame is out, so the failure took effect before any read.
        const err = await (read ?? rejection(conn.read()));
        t.ok(isCloseError(err, 1007, c.errorCode), `${label}: the read gets a CloseError 1007 ${c.errorCode}, not data (${describeErr(err)})`);
        const path = pathSince(log, before);
        if (c.errorCode === ErrorCode.InvalidCompressedData) t.same(log.writes, 0, `${label}: rejected by the one call, never streamed`);
        else t.equal(path, c.path, `${label}: on the ${c.path} path`);
        await peer.send([frame.close(1007)]);
        peer.end();
        // Failing stops reading (RFC 6455 §7.1.7): the answer is not read, the close is not clean.
      t.match(await conn.closed, { code: 1006, wasClean: false }, `${label}: closed after failing`);
      }
    }
  }
});

// =====================================================================
// 4. Messages spread over socket chunks and frames
// =====================================================================

t.test("4a. a one-frame compressed message delivered byte by byte or in 3-byte pieces takes the one call and arrives exact", async (t) => {
  const cases: Array<[string, Buffer, number]> = [
    ["byte by byte", wordText(2000, 41), 1],
    ["3-byte pieces", wordText(12_000, 42), 3],
    ["7-byte pieces, periodic (a big ratio)", periodic(100_000, 43).data, 7],
  ];
  for (const role of ROLES) {
    const { conn, peer } = await openRaw(t, role, { readLimit: MiB });
    const log = spyPaths(conn);
    let i = 0;
    for (const [name, data, chop] of cases) {
      const waiting = i++ % 2 === 0;
      const label = `${role}, ${name}, ${waiting ? "read waiting" : "no read waiting"}`;
      const payload = deflateMessage(data);
      t.ok(payload.length <= FAST_INFLATE_MAX, `${label}: ${payload.length} B, one frame for the one call`);
      // Count the socket reads the frame arrives in (a listener beside the connection's own).
      let reads = 0;
      const socket = internals(conn).socket;
      const count = (): void => void reads++;
      socket.on("data", count);
      const before = { ...log };
      const read = waiting ? conn.read() : undefined;
      await peer.send([frame.text(payload, { rsv: RSV1 })], chop);
      if (!waiting) await until(() => arrived(conn), `${label} to arrive`);
      const got = await (read ?? conn.read());
      socket.off("data", count);
      t.ok(got.data.equals(data), `${label}: ${data.length} B exact from ${payload.length} B`);
      t.equal(pathSince(log, before), "one call", `${label}: one call`);
      t.ok(reads > 10, `${label}: the frame arrived in ${reads} socket reads`);
    }
  }
});

t.test("4b. a compressed message in 3 frames with pings between them: pings answered mid-message, the message exact", async (t) => {
  for (const role of ROLES) {
    for (const waiting of [true, false]) {
      const label = `${role}, ${waiting ? "read waiting" : "no read waiting"}`;
      const { conn, peer } = await openRaw(t, role, { readLimit: MiB });
      const log = spyPaths(conn);
      const data = wordText(30_000, 50);
      const payload = deflateMessage(data);
      const a = Math.floor(payload.length / 3);
      const b = Math.floor((2 * payload.length) / 3);
      const read = waiting ? conn.read() : undefined;
      await peer.send([frame.text(payload.subarray(0, a), { rsv: RSV1, fin: false }), frame.ping("between 1 and 2")]);
      t.ok(isPong(await peer.nextFrame(), "between 1 and 2"), `${label}: the first ping is answered before the message ends`);
      await peer.send([frame.cont(payload.subarray(a, b), { fin: false }), frame.ping("between 2 and 3")]);
      t.ok(isPong(await peer.nextFrame(), "between 2 and 3"), `${label}: the second ping is answered before the message ends`);
      await peer.send([frame.cont(payload.subarray(b))]);
      if (!waiting) await until(() => arrived(conn), `${label} to arrive`);
      const got = await (read ?? conn.read());
      t.ok(got.type === MessageType.Text && got.data.equals(data), `${label}: ${data.length} B exact`);
      t.same({ whole: log.whole, overCap: log.overCap }, { whole: 0, overCap: 0 }, `${label}: streamed, never one call`);
      t.ok(log.writes >= 1, `${label}: ${log.writes} zlib writes`);
    }
  }
});

// =====================================================================
// 5. The CompressionQueue
// =====================================================================

/** echoLoop echoes every message until the connection ends. */
function echoLoop(conn: Conn): Promise<unknown> {
  return (async () => {
    for await (const m of conn) await conn.write(m.type, m.data);
  })().catch((err: unknown) => err);
}

t.test("5. CompressionQueue(1): 20 connections × 3 × 200 KB, bounded and exact; a paused reader does not block the others", async (t) => {
  const queue = new WatchedQueue(1);
  const slow: Array<Promise<{ conn: Conn; message: StreamedMessage }>> = [];
  const srv = await startWsconnServer({ compression: "context-takeover", readLimit: Infinity, compressionQueue: queue }, ({ conn, req }: Accepted) => {
    if (req.url === "/slow") slow.push(conn.reader().then((message) => ({ conn, message })));
    else void echoLoop(conn);
  });
  t.teardown(() => srv.close());
  const clientQueue = new CompressionQueue(4);
  const clientOptions: DialOptions = { compression: "context-takeover", readLimit: 4 * MiB, compressionQueue: clientQueue };

  // ---- 20 connections at once ----
  const started = Date.now();
  const clients = await Promise.all(Array.from({ length: 20 }, () => dial(srv.url, clientOptions)));
  t.teardown(() => clients.forEach((c) => c.closeNow()));
  const results = await Promise.all(
    clients.map(async (client, k) => {
      const sent = [0, 1, 2].map((j) => wordText(200_000, 1000 + k * 3 + j));
      await Promise.all(sent.map((m) => client.write(MessageType.Text, m)));
      let exact = 0;
      for (const m of sent) if ((await client.read()).data.equals(m)) exact++;
      return exact;
    }),
  );
  t.comment(`20 × 3 × 200 KB echoed in ${Date.now() - started} ms; queue: ${queue.runs} jobs, ${queue.queued} waited, peak ${queue.peak}`);
  t.same(results, Array.from({ length: 20 }, () => 3), "every echo exact");
  t.ok(queue.peak <= 1 && queue.peak === 1, `never more than one operation in progress (peak ${queue.peak})`);
  t.ok(queue.queued > 0, `work had to wait (${queue.queued} jobs queued)`);
  t.ok(queue.runs >= 120, `the queue carried the inflates and deflates (${queue.runs} jobs)`);
  await until(() => queue.active === 0 && queue.waiting === 0, "the queue to drain");
  t.same({ active: queue.active, waiting: queue.waiting }, { active: 0, waiting: 0 }, "all done: no slot held, nothing waiting");

  // ---- paused readers ----
  // Two connections whose server side took the message with reader() and
  // does not consume it: a ws client's 4 MiB of words (many socket reads,
  // each a small zlib write that ends while paused), and a raw client's
  // 8 MiB of periodic text in ~50 KB sent at once (a zlib write that stops
  // mid-way, its output full: the slot must be given back mid-write).
  const wsBig = wordText(4 * MiB, 77);
  const ws = await wsClient(`${srv.url}/slow`, { perMessageDeflate: { threshold: 0 } });
  ws.on("error", () => undefined);
  t.teardown(() => ws.terminate());
  ws.send(wsBig, { binary: false });
  const rawBig = periodic(8 * MiB, 78).data;
  const rawPayload = deflateMessage(rawBig);
  const raw = await rawConnect(srv.port, { path: "/slow", headers: [EXTENSION] });
  t.teardown(() => raw.destroy());
  await raw.send([frame.text(rawPayload, { rsv: RSV1 })]);
  await until(() => slow.length === 2, "the slow connections");
  const readers = await Promise.all(slow);
  const stalled = readers.map(({ conn }) => conn);
  await until(() => stalled.every((c) => internals(c).pausedForReader) && queue.active === 0, "both slow readers' sides to pause");
  const stalledAt = stalled.map((c) => internals(c).inbound.queue.receiving?.size ?? -1);
  t.ok(stalledAt.every((n) => n > 0 && n < 2 * MiB), `the unread messages stalled at ${stalledAt.join(" and ")} B`);
  const rawSide = stalled.find((c) => inflaterState(c).writing);
  t.ok(rawSide !== undefined, "one of them stalled inside a zlib write (its output full)");
  t.equal(queue.active, 0, "the paused inflaters gave their slots back");
  const others = await Promise.all(Array.from({ length: 5 }, () => dial(srv.url, clientOptions)));
  t.teardown(() => others.forEach((c) => c.closeNow()));
  const otherResults = await Promise.all(
    others.map(async (client, k) => {
      const sent = [0, 1].map((j) => wordText(300_000, 5000 + k * 2 + j));
      await Promise.all(sent.map((m) => client.write(MessageType.Text, m)));
      let exact = 0;
      for (const m of sent) if ((await client.read()).data.equals(m)) exact++;
      return exact;
    }),
  );
  t.same(otherResults, [2, 2, 2, 2, 2], "5 other connections on the same queue echo 2 × 300 KB each, exact, while the readers are paused");
  t.ok(stalled.every((c) => internals(c).pausedForReader), "the slow readers are still paused");
  t.same(
    stalled.map((c) => internals(c).inbound.queue.receiving?.size),
    stalledAt,
    "and nothing more of their messages was inflated meanwhile",
  );
  // Now consume them: they complete, exact.
  const expected = new Map<Conn, Buffer>();
  for (const { conn, message } of readers) {
    const chunks: Buffer[] = [];
    for await (const chunk of message.stream) chunks.push(chunk as Buffer);
    expected.set(conn, Buffer.concat(chunks));
  }
  const got = [...expected.values()].sort((a, b) => a.length - b.length);
  t.ok(got[0]!.equals(wsBig), `consumed, the ws client's ${wsBig.length} B message is exact`);
  t.ok(got[1]!.equals(rawBig), `consumed, the raw client's ${rawBig.length} B message (${rawPayload.length} B on the wire) is exact`);
  await until(() => queue.active === 0 && queue.waiting === 0, "the queue to drain");
  t.same({ active: queue.active, waiting: queue.waiting }, { active: 0, waiting: 0 }, "at the end: no slot held, nothing waiting");
  t.ok(queue.peak <= 1, `peak still ${queue.peak}`);
});

// =====================================================================
// 6. Closing while zlib work waits in the queue
// =====================================================================

t.test("6. a connection closed while its zlib work waits in the queue: its write rejects with 1006, no slot leaks", async (t) => {
  const queue = new WatchedQueue(1);
  const conns: Conn[] = [];
  const srv = await startWsconnServer({ compression: "context-takeover", readLimit: 16 * MiB, compressionQueue: queue }, ({ conn }) => conns.push(conn));
  t.teardown(() => srv.close());
  const open = async (): Promise<{ client: Conn; server: Conn }> => {
    const accepted = srv.next();
    const client = await dial(srv.url, { compression: "context-takeover", readLimit: 16 * MiB });
    t.teardown(() => client.closeNow());
    return { client, server: (await accepted).conn };
  };
  const a = await open();
  const b = await open();
  const big = wordText(8 * MiB, 9);
  const bRead = rejection(b.client.read());

  // A's big message takes the one slot; B's large write waits behind it.
  const order: string[] = [];
  const aWrite = a.server.write(MessageType.Text, big).then(() => order.push("A written"));
  t.same({ active: queue.active, waiting: queue.waiting }, { active: 1, waiting: 0 }, "A's compression holds the one slot");
  const bWrite = rejection(b.server.write(MessageType.Text, wordText(300_000, 10))).then((err) => (order.push("B rejected"), err));
  t.same({ active: queue.active, waiting: queue.waiting }, { active: 1, waiting: 1 }, "B's compression waits for it");
  const closedAt = Date.now();
  b.server.closeNow();
  const err = await bWrite;
  t.comment(`B's write rejected ${Date.now() - closedAt} ms after closeNow; order: ${order.join(", ") || "(A not written yet)"}`);
  t.ok(isCloseError(err, 1006), `B's write rejects with a CloseError 1006 (${describeErr(err)})`);
  t.match(await b.server.closed, { code: 1006, wasClean: false }, "B closed with 1006");
  t.ok(isCloseError(await bRead, 1006), "B's client sees the connection dropped");
  await aWrite;
  const got = await a.client.read();
  t.ok(got.data.equals(big), "A's message goes out exact");
  await until(() => queue.active === 0 && queue.waiting === 0, "the queue to drain");
  t.same({ active: queue.active, waiting: queue.waiting }, { active: 0, waiting: 0 }, "no slot leaked, nothing waiting");

  // closeNow while the compression runs (the slot held, not waited for).
  const c = await open();
  const cWrite = rejection(c.server.write(MessageType.Text, big));
  t.equal(queue.active, 1, "C's compression holds the slot");
  c.server.closeNow();
  t.ok(isCloseError(await cWrite, 1006), "C's write rejects with 1006");
  await until(() => queue.active === 0, "C's slot to be given back");
  t.equal(queue.active, 0, "C's slot is given back");

  // An inbound message whose zlib write waits in the queue when its connection closes.
  const d = await open();
  queue.run(() => undefined); // the test holds the one slot
  t.equal(queue.active, 1, "the slot held");
  const message = wordText(300_000, 11);
  void d.client.write(MessageType.Text, message).catch(() => undefined);
  const dRead = rejection(d.server.read());
  await until(() => queue.waiting >= 1, "D's inflate to wait for the slot");
  t.equal(queue.waiting, 1, "D's inflate waits in the queue");
  d.server.closeNow();
  t.ok(isCloseError(await dRead, 1006), "D's read rejects with 1006");
  await d.server.closed;
  queue.release(); // the test gives the slot back: D's job runs and must give it back at once
  await until(() => queue.active === 0 && queue.waiting === 0, "the queue to drain");
  t.same({ active: queue.active, waiting: queue.waiting }, { active: 0, waiting: 0 }, "D's job gave its slot back at once: nothing leaked");

  // The queue still works: a large echo through it (a leaked slot would hang here, concurrency 1).
  const e = await open();
  const echo = echoLoop(e.server);
  const sent = wordText(500_000, 12);
  await e.client.write(MessageType.Text, sent);
  t.ok((await e.client.read()).data.equals(sent), "a later connection's large message is still inflated and echoed through the queue");
  t.equal(queue.active, 0, "and gives its slot back");
  t.ok(queue.peak <= 1, `peak ${queue.peak}`);
  e.client.closeNow();
  await echo;
});

// =====================================================================
// Defects found while writing this file, fixed; these are their regression tests.
// =====================================================================

t.test("regression: one socket read of small-output bombs stays near the unread mark", async (t) => {
  // Each frame is ~150 B and inflates by one call to just under the
  // one-call cap; nothing stops the parser between them once the queue
  // passes READ_HIGH_WATER_MARK (the socket pauses, but the rest of the
  // chunk already read is parsed and inflated), and unclaimed messages
  // are not held to the read limit.
  const one = deflateMessage(Buffer.alloc(FAST_INFLATE_OUTPUT - 1));
  for (const role of ROLES) {
    const { conn, peer } = await openRaw(t, role);
    const single = encodeFrames([frame.binary(one, { rsv: RSV1 })], peer.masks);
    const count = Math.floor((60 * KiB) / single.length);
    const burst = encodeFrames(Array.from({ length: count }, () => frame.binary(one, { rsv: RSV1 })), peer.masks);
    const watch = new MemoryWatch();
    await peer.sendBytes(burst);
    await until(() => internals(conn).pausedForReader, "the read side to pause");
    const unread = internals(conn).inbound.queue.unreadBytes;
    const growth = watch.stop(t, `memory, ${role}, ${count} frames of ${single.length} B in one ${burst.length} B write`);
    t.comment(`${role}: ${mib(unread)} unread (mark ${mib(READ_HIGH_WATER_MARK)}), from ${burst.length} B on the wire`);
    t.ok(unread <= 2 * READ_HIGH_WATER_MARK + FAST_INFLATE_OUTPUT, `${role}: unread bytes stay near the mark (${mib(unread)})`);
    t.ok(growth.arrayBuffers < 8 * MiB, `${role}: array buffers grew less than 8 MiB (${mib(growth.arrayBuffers)})`);
    // The read limit still applies once a read claims the first of them.
    t.ok(isCloseError(await rejection(conn.read()), 1009), `${role}: the first read is a 1009 (${FAST_INFLATE_OUTPUT - 1} B > 32 KiB)`);
    conn.closeNow();
  }
});

t.test("regression: a streamed message completes when its reader catches up while the queue is busy and the paused zlib write ends first", async (t) => {
  // The paused inflater asks for a slot to resume its zlib write
  // (resumeWithSlot); the write ends meanwhile (its output fit in zlib's
  // buffer) and pump() sees a job queued, so it does nothing; when the slot
  // comes, resumeHolding finds no write under way, gives the slot back and
  // never pumps: the chunks left (here the message's end) wait forever.
  let onGiveBack: (() => void) | undefined;
  class HookedQueue extends CompressionQueue {
    override release(): void {
      super.release();
      onGiveBack?.();
    }
  }
  const queue = new HookedQueue(1);
  const { conn, peer } = await openRaw(t, "server", { readLimit: Infinity, compressionQueue: queue });
  // Seeded noise, which deflate stores: each 19000 B piece inflates to 19000 B, a 16 KiB chunk and a short one.
  const next = rng(99);
  const data = Buffer.alloc(400 * KiB);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(next() * 256);
  const bytes = encodeFrames([frame.binary(deflateMessage(data), { rsv: RSV1 })], true);
  let read: Promise<Message> | undefined;
  let windowHit = false;
  onGiveBack = () => {
    if (!internals(conn).pausedForReader) return;
    onGiveBack = undefined;
    // The inflater paused in a zlib 'data' event and gave its slot back. Before its write goes on:
    queueMicrotask(() => {
      queue.run(() => undefined); // another connection's zlib job takes the slot
      read = conn.read(); // the application reads: the inflater resumes and waits for a slot
    });
  };
  const socket = internals(conn).socket;
  const base = socket.bytesRead;
  const PIECE = 19_000;
  for (let at = 0; at < bytes.length && read === undefined; at += PIECE) {
    const end = Math.min(bytes.length, at + PIECE);
    await peer.sendBytes(bytes.subarray(at, end));
    // Wait until the server read the piece and the inflater is done with it (or paused in it).
    await until(() => read !== undefined || (socket.bytesRead - base >= end && !inflaterState(conn).writing && inflaterState(conn).backlog.length === 0), "the piece to be inflated");
    if (read !== undefined) await peer.sendBytes(bytes.subarray(end)); // the rest at once
  }
  if (read === undefined) return void t.fail("the read side never paused");
  const inflater = inflaterState(conn);
  await until(() => !inflater.writing && (internals(conn).inbound.inflater as unknown as { ending?: unknown }).ending !== undefined, "the paused write to end and the message's end to arrive");
  windowHit = inflater.queued;
  t.comment(`the paused write ended while the inflater waited for a slot: ${windowHit}; ${inflater.backlog.length} chunk(s) waiting`);
  queue.release(); // the other job is done: the slot goes to the inflater
  let settled = false;
  let result: Message | undefined;
  read.then((m) => ((settled = true), (result = m)), () => (settled = true));
  let idleTurns = 0;
  await until(() => settled || (queue.active === 0 && queue.waiting === 0 && !inflater.writing && !inflater.queued && ++idleTurns > 200), "the read to settle or the inflater to sit idle");
  t.ok(settled && result?.data.equals(data), `the message completes, exact (${settled ? "settled" : `still pending, ${inflater.backlog.length} chunk(s) never written, the queue idle`})`);
  conn.closeNow();
  await until(() => queue.active === 0 && queue.waiting === 0, "the queue to drain");
});

t.test("regression: a write waiting in the CompressionQueue rejects at once when its connection is dropped", async (t) => {
  const queue = new WatchedQueue(1);
  const { conn } = await queuedPair(t, { compressionQueue: queue });
  queue.run(() => undefined); // another connection's long zlib job holds the one slot
  let settled: unknown = "pending";
  const write = conn.write(MessageType.Text, wordText(100_000, 3)).then(
    () => (settled = "resolved"),
    (err: unknown) => (settled = err),
  );
  t.equal(queue.waiting, 1, "the write's compression waits for the slot");
  conn.closeNow();
  const info = await conn.closed;
  t.match(info, { code: 1006 }, "the connection is closed (1006)");
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
  t.ok(isCloseError(settled, 1006), `the write rejected with 1006 once the connection closed (${settled === "pending" ? "still pending" : describeErr(settled)})`);
  queue.release();
  await write;
  t.ok(isCloseError(settled, 1006), "once the slot frees, the write rejects with 1006");
  await until(() => queue.active === 0 && queue.waiting === 0, "the queue to drain");
  t.same({ active: queue.active, waiting: queue.waiting }, { active: 0, waiting: 0 }, "and nothing leaks");
});

t.test("regression: close() is bounded by closeTimeout while a message waits in the CompressionQueue", async (t) => {
  const queue = new CompressionQueue(1);
  const { conn } = await queuedPair(t, { compressionQueue: queue, closeTimeout: 200 });
  queue.run(() => undefined); // another connection's long zlib job holds the one slot, and keeps it
  const write = conn.write(MessageType.Text, wordText(100_000, 4)).then(
    () => "resolved",
    (err: unknown) => err,
  );
  t.equal(queue.waiting, 1, "the write's compression waits for the slot");
  // Without the bound, close() would wait for the slot forever: the test would time out here.
  await conn.close(StatusCode.NormalClosure, "bye");
  t.match(await conn.closed, { wasClean: false }, "closeTimeout expired: the socket was dropped, not closed cleanly");
  t.ok(isCloseError(await write, 1006), "the waiting write rejects with the close error");
  queue.release();
  await until(() => queue.active === 0 && queue.waiting === 0, "the queue to drain");
  t.same({ active: queue.active, waiting: queue.waiting }, { active: 0, waiting: 0 }, "the slot it was given is handed back unused");
});

t.test("a read limit under zlib's smallest output chunk: small messages pass, larger ones fail with 1009", async (t) => {
  const srv = await startWsconnServer({ compression: "no-context-takeover", readLimit: 10 });
  t.teardown(() => srv.close());
  const accepted = srv.next();
  const client = await dial(srv.url, { compression: "no-context-takeover", compressionThreshold: 0 });
  t.teardown(() => client.closeNow());
  const { conn } = await accepted;
  const small = conn.read();
  await client.write(MessageType.Text, "tiny");
  t.equal((await small).text(), "tiny", "a 4-byte compressed message within a 10-byte limit arrives");
  const large = rejection(conn.read());
  await client.write(MessageType.Text, "x".repeat(100));
  t.match(await large, { code: 1009, errorCode: ErrorCode.MessageTooBig }, "100 bytes against 10: 1009, not an error from zlib's options");
});

t.test("a writer dropped in the middle of a compressed message gives its queue slot back", async (t) => {
  const queue = new CompressionQueue(1);
  const { conn, srv } = await queuedPair(t, { compressionQueue: queue });
  const w = conn.writer(MessageType.Text);
  const failed = new Promise<unknown>((resolve) => w.on("error", resolve));
  const part = wordText(300_000, 5);
  w.write(part);
  w.write(part);
  await until(() => queue.active === 1, "the writer's compression to start");
  conn.closeNow();
  const err = await failed;
  t.ok(isCloseError(err, 1006), `the writer fails with the close error (${describeErr(err)})`);
  await until(() => queue.active === 0 && queue.waiting === 0, "the slot to come back");
  t.same({ active: queue.active, waiting: queue.waiting }, { active: 0, waiting: 0 }, "no slot is left taken");
  // The queue still serves: another connection's large write goes through it.
  const next = srv.next();
  const other = await dial(srv.url, { compression: "context-takeover", readLimit: 1 << 20 });
  t.teardown(() => other.closeNow());
  const { conn: second } = await next;
  const got = other.read();
  await second.write(MessageType.Text, part);
  t.ok((await got).data.equals(part), "the queue works for the next connection");
});

/** queuedPair opens a context-takeover server with `options` and one wsconn client to it; it returns the server side. */
async function queuedPair(t: TestContext, options: AcceptOptions): Promise<{ conn: Conn; srv: Awaited<ReturnType<typeof startWsconnServer>> }> {
  const srv = await startWsconnServer({ compression: "context-takeover", ...options });
  t.teardown(() => srv.close());
  const accepted = srv.next();
  const client = await dial(srv.url, { compression: "context-takeover" });
  t.teardown(() => client.closeNow());
  return { conn: (await accepted).conn, srv };
}
