/**
 * Fragmentation fuzzing of the inbound path, both roles. Each iteration
 * makes seeded random messages, text (with multi-byte UTF-8 characters cut
 * across fragments) and binary, from 0 bytes to ~70 KiB and a few up to
 * 300 KiB; splits each into random fragments (empty ones and runs of one-byte
 * ones included) with pings between them; and delivers the whole frame stream
 * one byte at a time, in small chunks, in random chunks or whole. wsconn
 * echoes every message through one consumer chosen per iteration: `for
 * await`, `read()`, or `reader()` whose stream is consumed at its own pace
 * (paused, and resumed once the peer sent its next socket chunk). The raw
 * peer checks that
 *
 * - every message comes back byte-exact, with its type, in order, once
 *   (and wsconn handed the application exactly those bytes);
 * - every ping was answered: pongs carry the payloads of pings sent, in
 *   order, and the last ping's pong came (RFC 6455 §5.5.3 lets one pong
 *   answer several pings the peer sent before it could answer);
 * - the close handshake is clean: 1000 both ways, `closed` reports
 *   wasClean, nothing is left open, and the InboundBudget the connection
 *   charged is back to zero;
 * - in lockstep iterations, where the peer waits after each chunk until the
 *   application has what that chunk makes deliverable (as a peer waiting for
 *   an answer would), nothing that arrived waits for the next socket read.
 *
 * A subset negotiates permessage-deflate without context takeover and sends
 * most messages compressed (RFC 7692 §7.2.1: a sync-flushed deflate stream
 * with its trailing 00 00 ff ff removed, RSV1 on the first fragment only),
 * either compressed whole and cut anywhere, or compressed fragment by
 * fragment with a sync flush each, as a streaming sender does.
 *
 * The seed is printed: `FRAG_FUZZ_SEED` replays a run, `FRAG_FUZZ_ITERATIONS`
 * sets the iterations per role (the compressed subset is a third of it), and
 * `FRAG_FUZZ_ONLY=n` replays iteration n alone (with its plan printed).
 */

import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import type { Readable } from "node:stream";
import * as zlib from "node:zlib";
import t, { type Test } from "tap";
import { accept, type AcceptOptions, CloseError, type CloseInfo, type Conn, dial, InboundBudget, MessageType } from "../src/index.js";
import { createRng, type Rng, seededRng } from "./helpers/chunkers.js";
import { closePayload, encodeFrame, Op, rawConnect, type RawFrame, type RawPeer, RSV1, startRawServer, switchingProtocols } from "./helpers/raw-peer.js";

const ITERATIONS = Number(process.env["FRAG_FUZZ_ITERATIONS"] ?? 120);
const ONLY = process.env["FRAG_FUZZ_ONLY"] === undefined ? undefined : Number(process.env["FRAG_FUZZ_ONLY"]);
/** Large enough for every message generated (the default, 32 KiB, is not). */
const READ_LIMIT = 1024 * 1024;
/** Guard for one step of an iteration, in ms: a hang, not a slow machine. */
const GUARD_MS = 10_000;
/**
 * How long the application may go without bytes that already arrived, in
 * ms, before they count as stuck (they normally take well under 1 ms).
 */
const STUCK_MS = 1000;
/** Lockstep iterations that may get stuck per role before lockstep is turned off, to bound the run. */
const MAX_STUCK = 2;
/** Most pings in one iteration's stream. */
const MAX_PINGS = 300;
/** Most socket chunks in one iteration's stream, before the rest goes in 64 KiB chunks. */
const MAX_CHUNKS = 1500;
/** What both sides agree on for the compressed subset. */
const DEFLATE_OFFER = "permessage-deflate; client_no_context_takeover; server_no_context_takeover";
const DEFLATE_ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/** The bytes a sync flush ends with (RFC 7692 §7.2.1). */
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

type Role = "server" | "client";
type Consumer = "for await" | "read" | "reader";
type Delivery = "one byte" | "small" | "random" | "whole";
type Closer = "peer" | "wsconn";

const CONSUMERS: readonly Consumer[] = ["for await", "read", "reader"];

// ---- seeded random ----

function chance(r: Rng, p: number): boolean {
  return r.next() < p;
}

function pick<T>(r: Rng, items: readonly T[]): T {
  return items[r.int(items.length)]!;
}

/** mix derives an iteration's seed from the run's seed, its index and kind. */
function mix(seed: number, i: number, salt: number): number {
  let x = (seed ^ Math.imul(i + 1, 0x9e3779b1) ^ salt) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

// ---- messages ----

/**
 * utf8Text returns about `n` bytes (at most 3 more) of valid UTF-8 with a
 * per-message mix of 1-, 2-, 3- and 4-byte sequences, encoded by hand so
 * that 300 KiB of it is cheap.
 */
function utf8Text(r: Rng, n: number): Buffer {
  const weights = [r.next() * r.next(), r.next(), r.next(), r.next()];
  const total = weights.reduce((a, b) => a + b, 0);
  const out = Buffer.allocUnsafe(n + 4);
  let o = 0;
  while (o < n) {
    let roll = r.next() * total;
    let len = 1;
    while (len < 4 && roll >= weights[len - 1]!) roll -= weights[len++ - 1]!;
    if (len === 1) out[o++] = r.int(0x80);
    else if (len === 2) {
      const cp = 0x80 + r.int(0x800 - 0x80);
      out[o++] = 0xc0 | (cp >> 6);
      out[o++] = 0x80 | (cp & 0x3f);
    } else if (len === 3) {
      let cp = 0x800 + r.int(0x10000 - 0x800);
      if (cp >= 0xd800 && cp <= 0xdfff) cp -= 0x800; // no surrogates
      out[o++] = 0xe0 | (cp >> 12);
      out[o++] = 0x80 | ((cp >> 6) & 0x3f);
      out[o++] = 0x80 | (cp & 0x3f);
    } else {
      const cp = 0x10000 + r.int(0x110000 - 0x10000);
      out[o++] = 0xf0 | (cp >> 18);
      out[o++] = 0x80 | ((cp >> 12) & 0x3f);
      out[o++] = 0x80 | ((cp >> 6) & 0x3f);
      out[o++] = 0x80 | (cp & 0x3f);
    }
  }
  return Buffer.from(out.subarray(0, o));
}

/** messageSize: "tiny" for byte-by-byte delivery; else mostly small, up to ~70 KiB, rarely up to 300 KiB. */
function messageSize(r: Rng, tiny: boolean, huge: { left: number }): number {
  const roll = r.next();
  if (roll < 0.1) return 0;
  if (tiny) return roll < 0.6 ? 1 + r.int(16) : r.int(300);
  if (roll < 0.3) return 1 + r.int(32);
  if (roll < 0.6) return r.int(2048);
  if (roll < 0.95 || huge.left === 0) return r.int(70 * 1024);
  huge.left--;
  return 70 * 1024 + r.int(230 * 1024);
}

/**
 * fragmentLengths splits `wire` (what goes into the frames) into fragment
 * lengths: one frame, all one-byte frames, or random cuts with runs of
 * one-byte fragments, cuts inside UTF-8 sequences of plain text, and empty
 * fragments anywhere (first, last, between).
 */
function fragmentLengths(r: Rng, wire: Buffer, plainText: boolean): number[] {
  const n = wire.length;
  const style = r.next();
  let points: number[] = [];
  if (style < 0.2 || n < 2) points = [];
  else if (style < 0.3 && n <= 3000) points = Array.from({ length: n - 1 }, (_, i) => i + 1);
  else {
    const cuts = new Set<number>();
    const count = 1 + r.int(Math.min(12, n - 1));
    for (let k = 0; k < count; k++) cuts.add(1 + r.int(n - 1));
    if (plainText) {
      // Cut right before continuation bytes: inside a character.
      for (let k = 0, found = 0, want = 1 + r.int(6); k < 40 && found < want; k++) {
        const p = 1 + r.int(n - 1);
        if ((wire[p]! & 0xc0) === 0x80) {
          cuts.add(p);
          found++;
        }
      }
    }
    if (chance(r, 0.5)) {
      const start = 1 + r.int(n - 1);
      const run = 1 + r.int(Math.min(64, n - start));
      for (let j = 0; j < run; j++) cuts.add(start + j);
    }
    points = [...cuts].sort((a, b) => a - b);
  }
  const lengths: number[] = [];
  let from = 0;
  for (const p of [...points, n]) {
    lengths.push(p - from);
    from = p;
  }
  if (chance(r, 0.4)) {
    for (let k = 1 + r.int(3); k > 0; k--) lengths.splice(r.int(lengths.length + 1), 0, 0);
  }
  return lengths;
}

/** deflate compresses one message as RFC 7692 §7.2.1 says: a fresh stream, sync flush, 00 00 ff ff removed. */
function deflate(data: Buffer): Buffer {
  const out = zlib.deflateRawSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  if (!out.subarray(-4).equals(TAIL)) throw new Error("a sync flush did not end with 00 00 ff ff");
  return out.subarray(0, out.length - 4);
}

/** inflate decompresses one message of a peer without context takeover. */
function inflate(payload: Buffer): Buffer {
  return zlib.inflateRawSync(Buffer.concat([payload, TAIL]), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
}

// ---- the plan of one iteration ----

interface Expected {
  type: MessageType;
  data: Buffer;
}

/**
 * Where one data frame's payload sits in the stream, and what it gives the
 * application once it arrived (see deliverable).
 */
interface FrameSpan {
  message: number;
  /** Offsets of its payload in the stream. */
  start: number;
  end: number;
  /** Bytes of the message it yields as it arrives: its payload (plain), its piece (flushed), or none until the end (split). */
  kind: "plain" | "flushed" | "split";
  plain: number;
  last: boolean;
}

interface Plan {
  role: Role;
  index: number;
  seed: number;
  compressed: boolean;
  messages: Expected[];
  /** How many of the messages go compressed. */
  deflated: number;
  fragments: number;
  /** Ping payloads by id (the id is their first 4 bytes). */
  pings: Buffer[];
  bytes: Buffer;
  spans: FrameSpan[];
  chunks: number[];
  delivery: Delivery;
  consumer: Consumer;
  closer: Closer;
  /** How often the consumer waits for the peer's next chunk before going on. */
  slowRate: number;
  /**
   * After each chunk the peer waits for wsconn to hand the application what
   * those bytes make deliverable, as a peer waiting for an answer would: a
   * byte that arrived must not wait for the next socket read.
   */
  lockstep: boolean;
}

/**
 * compressPieces compresses a message so that each piece is a fragment that
 * inflates whole on arrival, as a streaming sender's sync flush per frame
 * does: deflate streams back to back, each ending byte-aligned with its sync
 * flush, the last one's 00 00 ff ff removed (RFC 7692 §7.2.1).
 */
function compressPieces(pieces: Buffer[]): Buffer[] {
  return pieces.map((piece, k) => {
    const out = zlib.deflateRawSync(piece, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
    return k === pieces.length - 1 ? out.subarray(0, out.length - 4) : out;
  });
}

function makePlan(role: Role, index: number, seed: number, compressed: boolean): Plan {
  const r = createRng(seed);
  const masks = role === "server"; // the raw peer is the client: it masks
  let delivery: Delivery = pick(r, ["one byte", "small", "small", "random", "random", "random", "whole", "whole"]);
  const tiny = delivery === "one byte" || delivery === "small";
  const count = tiny ? 1 + r.int(6) : 1 + r.int(10);
  const pingRate = pick(r, [0, 0.05, 0.2, 0.5]);
  const huge = { left: 1 };
  const encoded: Buffer[] = [];
  const spans: FrameSpan[] = [];
  let position = 0;
  const messages: Expected[] = [];
  const pings: Buffer[] = [];
  let fragments = 0;
  let deflated = 0;
  const put = (f: RawFrame, span?: Omit<FrameSpan, "start" | "end">): void => {
    const bytes = encodeFrame({ ...f, mask: masks ? r.bytes(4) : false }, masks);
    const payloadLength = f.payload === undefined ? 0 : f.payload.length;
    if (span) spans.push({ ...span, start: position + bytes.length - payloadLength, end: position + bytes.length });
    encoded.push(bytes);
    position += bytes.length;
  };
  const ping = (): void => {
    const payload = Buffer.concat([Buffer.alloc(4), r.bytes(r.int(122))]);
    payload.writeUInt32BE(pings.length, 0);
    pings.push(payload);
    put({ opcode: Op.Ping, payload });
  };
  for (let m = 0; m < count; m++) {
    const text = chance(r, 0.5);
    const size = messageSize(r, tiny, huge);
    const data = text ? utf8Text(r, size) : r.bytes(size);
    const type = text ? MessageType.Text : MessageType.Binary;
    messages.push({ type, data });
    const kind: FrameSpan["kind"] = !compressed || chance(r, 0.25) ? "plain" : chance(r, 0.5) ? "split" : "flushed";
    if (kind !== "plain") deflated++;
    let payloads: Buffer[];
    let plains: number[];
    if (kind === "flushed") {
      // Cut the message itself (inside UTF-8 sequences too), then compress each piece.
      const lengths = fragmentLengths(r, data, text);
      const pieces: Buffer[] = [];
      for (let k = 0, o = 0; k < lengths.length; o += lengths[k++]!) pieces.push(data.subarray(o, o + lengths[k]!));
      payloads = compressPieces(pieces);
      plains = lengths;
    } else {
      const wire = kind === "split" ? deflate(data) : data;
      const lengths = fragmentLengths(r, wire, text && kind === "plain");
      payloads = [];
      for (let k = 0, o = 0; k < lengths.length; o += lengths[k++]!) payloads.push(wire.subarray(o, o + lengths[k]!));
      plains = kind === "plain" ? lengths : lengths.map(() => 0);
    }
    if (pings.length < MAX_PINGS && chance(r, pingRate)) ping();
    if (chance(r, 0.05)) put({ opcode: Op.Pong, payload: r.bytes(r.int(126)) }); // unsolicited
    payloads.forEach((payload, k) => {
      const last = k === payloads.length - 1;
      const frame: RawFrame = {
        opcode: k > 0 ? Op.Continuation : text ? Op.Text : Op.Binary,
        payload,
        fin: last,
        rsv: k === 0 && kind !== "plain" ? RSV1 : 0,
      };
      put(frame, { message: m, kind, plain: plains[k]!, last });
      if (!last && pings.length < MAX_PINGS && chance(r, pingRate)) ping();
    });
    fragments += payloads.length;
  }
  // A last ping: its pong says every frame before it was handled.
  ping();
  const bytes = Buffer.concat(encoded);
  if (delivery === "one byte" && bytes.length > 8000) delivery = "small";
  if (delivery === "small" && bytes.length > 8 * MAX_CHUNKS) delivery = "random";
  const chunks = chunkPlan(r, bytes.length, delivery);
  const consumer = pick(r, CONSUMERS);
  const closer = pick(r, ["peer", "wsconn"] as const);
  const slowRate = pick(r, [0, 0, 0.1, 0.3, 0.7]);
  const lockstep = delivery !== "whole" && chance(r, 0.3);
  return { role, index, seed, compressed, messages, deflated, fragments, pings, bytes, spans, chunks, delivery, consumer, closer, slowRate, lockstep };
}

/**
 * deliverable is how many message bytes the application must have once the
 * stream's first `offset` bytes arrived, counting messages in order: every
 * complete message, and for a reader() the part of the current message its
 * frames give as they arrive (not a compressed stream's arbitrary prefix).
 */
function deliverable(plan: Plan, offset: number): number {
  let total = 0;
  let message = -1;
  let partial = 0;
  for (const span of plan.spans) {
    if (span.message !== message) {
      if (message >= 0) return total + partial; // the message before did not end
      message = span.message;
      partial = 0;
    }
    if (span.last && span.end <= offset) {
      total += plan.messages[message]!.data.length;
      message = -1;
      partial = 0;
      continue;
    }
    if (plan.consumer !== "reader") continue;
    if (span.kind === "plain") partial += Math.max(0, Math.min(offset, span.end) - span.start);
    else if (span.kind === "flushed" && span.end <= offset) partial += span.plain;
  }
  return total + partial;
}

/** chunkPlan cuts `total` bytes into the socket writes of a delivery. */
function chunkPlan(r: Rng, total: number, delivery: Delivery): number[] {
  if (delivery === "whole") return [total];
  const chunks: number[] = [];
  const add = (n: number): void => {
    const take = Math.min(n, total);
    if (take > 0) chunks.push(take);
    total -= take;
  };
  while (total > 0) {
    if (delivery === "one byte") add(1);
    else if (delivery === "small") add(1 + r.int(16));
    else if (chunks.length >= MAX_CHUNKS) add(64 * 1024);
    else {
      const roll = r.next();
      if (roll < 0.15) for (let k = 1 + r.int(32); k > 0 && total > 0; k--) add(1);
      else if (roll < 0.4) add(1 + r.int(16));
      else if (roll < 0.8) add(1 + r.int(4096));
      else add(1 + r.int(64 * 1024));
    }
  }
  return chunks;
}

function summary(p: Plan): string {
  const sizes = p.messages.map((m) => `${m.type === MessageType.Text ? "t" : "b"}${m.data.length}`).join(",");
  return (
    `${p.role}${p.compressed ? "+deflate" : ""} iteration ${p.index} (seed ${p.seed}): ${p.messages.length} messages [${sizes}], ` +
    `${p.fragments} fragments, ${p.pings.length} pings, ${p.bytes.length} bytes in ${p.chunks.length} chunks (${p.delivery}), ` +
    `consumer ${p.consumer}, slow ${p.slowRate}${p.lockstep ? ", lockstep" : ""}, closed by ${p.closer}`
  );
}

// ---- sending, with an event for a paused consumer to resume on ----

/** Progress counts the message bytes the application got, for a lockstep peer to wait on. */
class Progress {
  seen = 0;
  private waiter: { target: number; resolve(reached: boolean): void } | undefined;

  add(n: number): void {
    this.seen += n;
    if (this.waiter !== undefined && this.seen >= this.waiter.target) this.waiter.resolve(true);
  }

  /** reach resolves with true once `target` bytes were seen, with false after `ms`: stuck. */
  reach(target: number, ms: number): Promise<boolean> {
    if (this.seen >= target) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => settle(false), ms);
      const settle = (reached: boolean): void => {
        clearTimeout(timer);
        this.waiter = undefined;
        resolve(reached);
      };
      this.waiter = { target, resolve: settle };
    });
  }
}

/** What a lockstep sender needs: the plan, the application's progress, and where to report a byte left waiting. */
interface Lockstep {
  plan: Plan;
  progress: Progress;
  onStuck(offset: number, chunk: number, want: number): void;
}

/**
 * Sender writes the planned chunks, one turn of the event loop apart, so
 * that a receiver in this process mostly sees each as a separate read. A
 * consumer that pauses resumes from `whenNextChunk`: at the next chunk, or on
 * the next turn when none will come soon (all sent, waiting for 'drain',
 * which may be what waits for the consumer, or in lockstep).
 */
class Sender {
  private waiters: Array<() => void> = [];
  private stalled = false;
  private done = false;

  constructor(private readonly socket: net.Socket) {}

  whenNextChunk(fn: () => void): void {
    if (this.done || this.stalled) setImmediate(fn);
    else this.waiters.push(fn);
  }

  async run(bytes: Buffer, chunks: number[], lockstep?: Lockstep): Promise<void> {
    let offset = 0;
    try {
      for (const [i, n] of chunks.entries()) {
        if (this.socket.destroyed) break;
        const ok = this.socket.write(bytes.subarray(offset, offset + n));
        offset += n;
        this.release();
        if (!ok) {
          this.stalled = true;
          this.release();
          await new Promise<void>((resolve) => {
            const go = (): void => {
              this.socket.off("drain", go);
              this.socket.off("close", go);
              resolve();
            };
            this.socket.on("drain", go);
            this.socket.on("close", go);
          });
          this.stalled = false;
        }
        if (lockstep !== undefined) {
          const want = deliverable(lockstep.plan, offset);
          this.stalled = true;
          this.release();
          const reached = await lockstep.progress.reach(want, STUCK_MS);
          this.stalled = false;
          if (!reached) {
            lockstep.onStuck(offset, i, want);
            lockstep = undefined; // one report per iteration; the rest goes as usual
          }
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      this.done = true;
      this.release();
    }
  }

  private release(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const fn of waiters) fn();
  }
}

// ---- the wsconn side: three consumers that echo ----

/** nextChunk resolves when the sender says a paused consumer may go on. */
function nextChunk(sender: Sender): Promise<void> {
  return new Promise((resolve) => sender.whenNextChunk(resolve));
}

/** drainStream collects a reader() stream, maybe pausing it and resuming at the peer's next chunk. */
async function drainStream(stream: Readable, r: Rng, slowRate: number, sender: Sender, progress: Progress): Promise<Buffer> {
  // The chunks are kept as they came and joined at the end: a buffer reused
  // under the consumer's feet would show.
  const chunks: Buffer[] = [];
  const style = slowRate === 0 ? "flowing" : pick(r, ["pausing", "iterating"] as const);
  if (style === "iterating") {
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      progress.add((chunk as Buffer).length);
      if (chance(r, slowRate)) await nextChunk(sender);
    }
  } else {
    await new Promise<void>((resolve, reject) => {
      stream.on("data", (chunk: Buffer) => {
        chunks.push(chunk);
        progress.add(chunk.length);
        if (style === "pausing" && chance(r, slowRate)) {
          stream.pause();
          sender.whenNextChunk(() => stream.resume());
        }
      });
      stream.once("end", resolve);
      stream.once("error", reject);
    });
  }
  return Buffer.concat(chunks);
}

/**
 * consume echoes the plan's messages with its consumer, recording what the
 * application got in `received`, then ends as the plan says: by closing
 * once the peer has everything, or by seeing the peer's close (1000).
 */
async function consume(
  conn: Conn,
  plan: Plan,
  sender: Sender,
  progress: Progress,
  peerDone: Promise<void>,
  received: Expected[],
  problems: string[],
): Promise<void> {
  const r = createRng(plan.seed ^ 0x5bd1e995);
  const n = plan.messages.length;
  const echo = async (type: MessageType, data: Buffer, counted = false): Promise<void> => {
    received.push({ type, data });
    if (!counted) progress.add(data.length);
    await conn.write(type, data);
  };
  const maybeWait = async (): Promise<void> => {
    if (chance(r, plan.slowRate / 2)) await nextChunk(sender);
  };
  try {
    if (plan.consumer === "for await") {
      let count = 0;
      await maybeWait();
      for await (const msg of conn) {
        await echo(msg.type, msg.data);
        if (++count === n && plan.closer === "wsconn") break;
        await maybeWait();
      }
    } else {
      for (let i = 0; i < n; i++) {
        await maybeWait();
        if (plan.consumer === "read") {
          const msg = await conn.read();
          await echo(msg.type, msg.data);
        } else {
          const { type, stream } = await conn.reader();
          await echo(type, await drainStream(stream, r, plan.slowRate, sender, progress), true);
        }
      }
      if (plan.closer === "peer") {
        const end = plan.consumer === "read" ? conn.read() : conn.reader();
        const err = await end.then(
          (m) => {
            if ("stream" in m) m.stream.destroy();
            return new Error("another message");
          },
          (e: unknown) => e,
        );
        if (!(err instanceof CloseError && err.code === 1000)) {
          problems.push(`after the last message ${plan.consumer}() gave ${String(err)}, not the peer's close (1000)`);
        }
      }
    }
    if (plan.closer === "wsconn") {
      await peerDone;
      await conn.close(1000, "done");
    }
  } catch (err) {
    problems.push(`the ${plan.consumer} consumer failed after ${received.length} messages: ${String(err)}`);
  }
}

// ---- the raw side: checking echoes and pongs ----

/** differ describes how `got` differs from `want`, or returns undefined when equal. */
function differ(want: Expected, got: Expected): string | undefined {
  if (want.type === got.type && want.data.equals(got.data)) return undefined;
  if (want.type !== got.type) return `type ${got.type}, want ${want.type}`;
  let at = 0;
  while (at < want.data.length && at < got.data.length && want.data[at] === got.data[at]) at++;
  const around = (b: Buffer): string => b.subarray(Math.max(0, at - 4), at + 12).toString("hex");
  return `${got.data.length} bytes, want ${want.data.length}; first difference at byte ${at}: got …${around(got.data)}…, want …${around(want.data)}…`;
}

/** Progress of the raw peer. */
interface PeerState {
  echoes: number;
  pongs: number;
  /** The id of the last ping answered, -1 for none. */
  lastPong: number;
}

/**
 * receiveEchoes reads wsconn's frames until every message came back and the
 * last ping was answered, checking each on the way. False on a hang or an
 * early end.
 */
async function receiveEchoes(peer: RawPeer, plan: Plan, state: PeerState, problems: string[]): Promise<boolean> {
  const wantMasked = plan.role === "client";
  const lastPing = plan.pings.length - 1;
  let parts: Buffer[] | undefined;
  let opcode = 0;
  let compressed = false;
  let maskReported = false;
  const finish = (): void => {
    let data: Buffer = Buffer.concat(parts!);
    parts = undefined;
    if (compressed) {
      try {
        data = inflate(data);
      } catch (err) {
        problems.push(`echo ${state.echoes} does not inflate: ${String(err)}`);
      }
    }
    const got = { type: opcode as MessageType, data };
    const want = plan.messages[state.echoes];
    if (want === undefined) problems.push(`an extra message came back (${data.length} bytes): duplicated?`);
    else {
      const diff = differ(want, got);
      if (diff !== undefined) problems.push(`echo ${state.echoes} differs: ${diff}`);
    }
    state.echoes++;
  };
  while (state.echoes < plan.messages.length || state.lastPong !== lastPing) {
    const f = await peer.nextFrame(GUARD_MS);
    if (f === "timeout" || f === null) {
      const what = f === null ? `wsconn's side ended (${peer.parseError ?? "end of stream"})` : `nothing for ${GUARD_MS} ms (a hang)`;
      problems.push(`${what} with ${state.echoes} of ${plan.messages.length} echoes and the pong of ping ${state.lastPong} of ${lastPing}`);
      return false;
    }
    if (f.masked !== wantMasked && !maskReported) {
      maskReported = true;
      problems.push(`wsconn sent a frame with mask=${f.masked}`);
    }
    const rsvAllowed = plan.compressed && (f.opcode === Op.Text || f.opcode === Op.Binary) ? RSV1 : 0;
    if ((f.rsv & ~rsvAllowed) !== 0) problems.push(`wsconn sent opcode ${f.opcode} with rsv ${f.rsv}`);
    switch (f.opcode) {
      case Op.Pong: {
        const id = f.payload.length >= 4 ? f.payload.readUInt32BE(0) : -1;
        if (!(id > state.lastPong && id <= lastPing && f.payload.equals(plan.pings[id]!))) {
          problems.push(`a pong with payload ${f.payload.subarray(0, 16).toString("hex")}… after the pong of ping ${state.lastPong}: not a later ping's`);
        } else state.lastPong = id;
        state.pongs++;
        break;
      }
      case Op.Text:
      case Op.Binary:
        if (parts !== undefined) problems.push(`a new message began inside echo ${state.echoes}`);
        parts = [f.payload];
        opcode = f.opcode;
        compressed = (f.rsv & RSV1) !== 0;
        if (f.fin) finish();
        break;
      case Op.Continuation:
        if (parts === undefined) problems.push("a continuation frame outside a message");
        else {
          parts.push(f.payload);
          if (f.fin) finish();
        }
        break;
      case Op.Close: {
        const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
        problems.push(`wsconn closed early with ${code} "${f.payload.subarray(2).toString()}" after ${state.echoes} echoes`);
        return false;
      }
      default:
        problems.push(`wsconn sent opcode ${f.opcode}`);
    }
  }
  return true;
}

/** closeHandshake plays the raw peer's part of a close with 1000, started by the plan's closer. */
async function closeHandshake(peer: RawPeer, plan: Plan, problems: string[]): Promise<void> {
  if (plan.closer === "peer") await peer.send([{ opcode: Op.Close, payload: closePayload(1000, "bye") }]);
  for (;;) {
    const f = await peer.nextFrame(GUARD_MS);
    if (f === "timeout" || f === null) {
      problems.push(f === null ? "wsconn's side ended without a close frame" : `no close frame within ${GUARD_MS} ms`);
      break;
    }
    if (f.opcode !== Op.Close) {
      problems.push(`wsconn sent opcode ${f.opcode} (${f.payload.length} bytes) after every echo and pong, before its close frame`);
      continue;
    }
    const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
    const reason = f.payload.subarray(2).toString();
    const want = plan.closer === "wsconn" ? "done" : "";
    if (code !== 1000 || reason !== want) problems.push(`wsconn's close frame says ${code} "${reason}", want 1000 "${want}"`);
    break;
  }
  if (plan.closer === "wsconn") await peer.send([{ opcode: Op.Close, payload: closePayload(1000) }]);
  peer.end();
}

/** guard resolves with `{ value }` when `p` settles within GUARD_MS, else with undefined: a hang. */
async function guard<T>(p: Promise<T>): Promise<{ value: T } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), GUARD_MS)));
  try {
    return await Promise.race([p.then((value) => ({ value })), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function checkBudget(budget: InboundBudget, when: string, problems: string[]): void {
  if (budget.used !== 0 || budget.holders !== 0 || budget.shed !== 0) {
    problems.push(`${when}: the inbound budget has ${budget.used} bytes used by ${budget.holders} holders, ${budget.shed} shed; want 0, 0, 0`);
  }
}

// ---- the two roles ----

interface RoleEnv {
  role: Role;
  /** Opens a connection, with permessage-deflate (no context takeover) when `compressed`. */
  open(compressed: boolean, budget: InboundBudget): Promise<{ peer: RawPeer; conn: Conn }>;
  /** Sockets still open on the wsconn side's listener (server) or the raw server (client). */
  openSockets(): number;
  close(): Promise<void>;
}

/** serverEnv: wsconn accepts, each connection with the options its plan asks for; the raw peer connects. */
async function serverEnv(): Promise<RoleEnv> {
  const sockets = new Set<net.Socket>();
  const pending = new Map<number, { options: AcceptOptions; resolve(c: Conn): void; reject(e: unknown): void }>();
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  server.on("connection", (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const id = Number(new URL(req.url ?? "/", "http://x").searchParams.get("id"));
    const waiter = pending.get(id);
    pending.delete(id);
    if (waiter === undefined) return void socket.destroy();
    accept(req, socket, head, waiter.options).then(waiter.resolve, waiter.reject);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  let next = 0;
  return {
    role: "server",
    async open(compressed, budget) {
      const id = ++next;
      const options: AcceptOptions = { readLimit: READ_LIMIT, inboundBudget: budget, compression: compressed ? "no-context-takeover" : "disabled" };
      const connP = new Promise<Conn>((resolve, reject) => pending.set(id, { options, resolve, reject }));
      const headers = compressed ? [`Sec-WebSocket-Extensions: ${DEFLATE_OFFER}`] : [];
      const peer = await rawConnect(port, { path: `/?id=${id}`, headers });
      return { peer, conn: await connP };
    },
    openSockets: () => sockets.size,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** clientEnv: wsconn dials a raw server that answers by hand, with permessage-deflate when the plan asks. */
async function clientEnv(): Promise<RoleEnv> {
  const raw = await startRawServer();
  const sockets = new Set<net.Socket>();
  return {
    role: "client",
    async open(compressed, budget) {
      const next = raw.nextPeer({
        response: compressed
          ? (request) => switchingProtocols(request.headers.get("sec-websocket-key")?.[0] ?? "", [`Sec-WebSocket-Extensions: ${DEFLATE_ANSWER}`])
          : undefined,
      });
      const conn = await dial(raw.url, { readLimit: READ_LIMIT, inboundBudget: budget, compression: compressed ? "no-context-takeover" : "disabled" });
      const { peer } = await next;
      sockets.add(peer.socket);
      peer.socket.on("close", () => sockets.delete(peer.socket));
      return { peer, conn };
    },
    openSockets: () => sockets.size,
    close: () => raw.close(),
  };
}

// ---- one iteration ----

interface Stats {
  messages: number;
  bytes: number;
  fragments: number;
  pings: number;
  pongs: number;
  deflated: number;
  lockstep: number;
}

async function runIteration(env: RoleEnv, plan: Plan, stats: Stats, stuck: { left: number }): Promise<string[]> {
  const problems: string[] = [];
  const budget = new InboundBudget();
  const { peer, conn } = await env.open(plan.compressed, budget);
  const wantExtensions = plan.compressed ? /^permessage-deflate\b/ : /^$/;
  if (!wantExtensions.test(conn.extensions)) problems.push(`negotiated extensions "${conn.extensions}"`);
  const sender = new Sender(peer.socket);
  let peerIsDone!: () => void;
  const peerDone = new Promise<void>((resolve) => (peerIsDone = resolve));
  const received: Expected[] = [];
  const state: PeerState = { echoes: 0, pongs: 0, lastPong: -1 };
  let info: { value: CloseInfo } | undefined;
  const progress = new Progress();
  const consuming = consume(conn, plan, sender, progress, peerDone, received, problems);
  const lockstep: Lockstep | undefined =
    plan.lockstep && stuck.left > 0
      ? {
          plan,
          progress,
          onStuck: (offset, chunk, want) => {
            stuck.left--;
            problems.push(
              `stuck: after chunk ${chunk} (stream byte ${offset} of ${plan.bytes.length}) the application had ${progress.seen} of the ${want} message bytes ` +
                `those bytes complete, ${STUCK_MS} ms later, with the peer waiting`,
            );
          },
        }
      : undefined;
  const sending = sender.run(plan.bytes, plan.chunks, lockstep);
  try {
    if (!(await receiveEchoes(peer, plan, state, problems))) return problems;
    if ((await guard(sending)) === undefined) problems.push("the raw peer could not send its stream");
    checkBudget(budget, "with every message read", problems);
    peerIsDone();
    await closeHandshake(peer, plan, problems);
    if ((await guard(consuming)) === undefined) problems.push("the consumer did not finish");
    info = await guard(conn.closed);
    if (info === undefined) problems.push("conn.closed did not settle");
    else if (info.value.code !== 1000 || !info.value.wasClean) problems.push(`conn.closed gave ${JSON.stringify(info.value)}, want code 1000, wasClean true`);
    if ((await guard(peer.closed)) === undefined) problems.push("the raw peer's socket stayed open");
    checkBudget(budget, "after the close", problems);
    for (let k = 0; k < Math.max(received.length, plan.messages.length); k++) {
      const want = plan.messages[k];
      const got = received[k];
      if (want === undefined) problems.push(`the application got an extra message ${k} (${got!.data.length} bytes)`);
      else if (got === undefined) problems.push(`the application never got message ${k}`);
      else {
        const diff = differ(want, got);
        if (diff !== undefined) problems.push(`the application got message ${k} wrong: ${diff}`);
      }
    }
    return problems;
  } finally {
    stats.messages += plan.messages.length;
    stats.bytes += plan.bytes.length;
    stats.fragments += plan.fragments;
    stats.pings += plan.pings.length;
    stats.pongs += state.pongs;
    stats.deflated += plan.deflated;
    if (lockstep !== undefined) stats.lockstep++;
    if (info === undefined) {
      // A failed iteration: let go of everything so the next one starts clean.
      peerIsDone();
      conn.closeNow();
      peer.destroy();
      await guard(Promise.all([consuming, sending, conn.closed, peer.closed]));
    }
  }
}

// ---- the test ----

const uncaught: unknown[] = [];
const onUncaught = (err: unknown): void => void uncaught.push(err);
process.on("uncaughtException", onUncaught);
process.on("unhandledRejection", onUncaught);

async function fuzzRole(t: Test, env: RoleEnv, seed: number, compressed: boolean): Promise<void> {
  const count = compressed ? Math.ceil(ITERATIONS / 3) : ITERATIONS;
  const indexes = ONLY === undefined ? Array.from({ length: count }, (_, i) => i) : [ONLY];
  const failures: string[] = [];
  const stats: Stats = { messages: 0, bytes: 0, fragments: 0, pings: 0, pongs: 0, deflated: 0, lockstep: 0 };
  const started = Date.now();
  const stuck = { left: MAX_STUCK };
  for (const i of indexes) {
    const plan = makePlan(env.role, i, mix(seed, i, (env.role === "server" ? 0 : 0x1000) | (compressed ? 0x2000 : 0)), compressed);
    if (ONLY !== undefined) t.comment(summary(plan), `chunks ${plan.chunks.join(",")}`);
    const problems = await runIteration(env, plan, stats, stuck);
    if (problems.length > 0) failures.push(`${summary(plan)}: ${problems.slice(0, 5).join("; ")}`);
  }
  const kind = `wsconn as ${env.role}${compressed ? " with permessage-deflate" : ""}`;
  t.same(failures.slice(0, 10), [], `${indexes.length} iterations, ${kind}: every message echoed byte-exact, in order, once; every ping answered; a clean close`);
  t.equal(failures.length, 0, `${failures.length} failed iterations`);
  t.equal(env.openSockets(), 0, "no socket left open");
  t.comment(
    `${kind}: ${stats.messages} messages (${stats.deflated} compressed) in ${stats.fragments} fragments, ${(stats.bytes / 1024 / 1024).toFixed(1)} MiB of frames, ` +
      `${stats.pings} pings answered by ${stats.pongs} pongs, ${stats.lockstep} iterations in lockstep` +
      (stuck.left === 0 ? ` (then off: ${MAX_STUCK} got stuck)` : "") +
      `, ${Date.now() - started} ms`,
  );
}

t.test("fragment fuzz", async (t) => {
  const fromEnv = process.env["FRAG_FUZZ_SEED"];
  const seed = fromEnv !== undefined && fromEnv !== "" ? Number(fromEnv) >>> 0 : seededRng(t, "fragment fuzz").seed;
  t.comment(`FRAG_FUZZ_SEED=${seed} FRAG_FUZZ_ITERATIONS=${ITERATIONS} (per role; a third of it with permessage-deflate)`);
  for (const make of [serverEnv, clientEnv]) {
    for (const compressed of [false, true]) {
      const env = await make();
      await t.test(`wsconn as ${env.role}${compressed ? ", permessage-deflate without context takeover" : ""}`, (t) =>
        fuzzRole(t, env, seed, compressed).finally(() => env.close()),
      );
    }
  }
  t.same(uncaught.map(String), [], "no uncaught exception or unhandled rejection");
  process.off("uncaughtException", onUncaught);
  process.off("unhandledRejection", onUncaught);
});

// ---- a case the fuzzer cannot meet: a peer that waits ----

/** within resolves with true when `p` settles within `ms`, false after. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The fuzzer's peer never waits for wsconn, so bytes that arrived but were
 * not handed on are always pushed along by the next socket read. A peer that
 * streams a message and waits for an answer before sending more gets no next
 * read: a fragment's bytes must reach reader() as the fragment arrives. Here
 * the first fragment of a compressed message comes in the same socket read
 * as the end of the compressed message before it (so it is parsed only once
 * that message is inflated), or alone.
 */
t.test("a compressed fragment reaches reader() as it arrives, also right behind the end of another compressed message", async (t) => {
  // Two deflate streams back to back are one valid stream: the first ends
  // byte-aligned with its sync flush (kept, since the message goes on), the
  // second ends the message (00 00 ff ff removed, RFC 7692 §7.2.1).
  const head = zlib.deflateRawSync(Buffer.from("hello"), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  const rest = deflate(Buffer.from(" world"));
  for (const make of [serverEnv, clientEnv]) {
    const env = await make();
    t.teardown(() => env.close());
    for (const behind of [false, true]) {
      const name = `wsconn as ${env.role}, the fragment ${behind ? "right behind a compressed message's end" : "alone"}`;
      const budget = new InboundBudget();
      const { peer, conn } = await env.open(true, budget);
      t.teardown(() => {
        conn.closeNow();
        peer.destroy();
      });
      const masks = env.role === "server";
      const frames: RawFrame[] = [];
      if (behind) frames.push({ opcode: Op.Text, payload: deflate(Buffer.from("before")), rsv: RSV1 });
      frames.push({ opcode: Op.Binary, payload: head, rsv: RSV1, fin: false });
      peer.socket.write(Buffer.concat(frames.map((f) => encodeFrame(f, masks))));
      if (behind) t.equal((await conn.read()).text(), "before", `${name}: the message before it`);
      const { stream } = await conn.reader();
      const chunks: Buffer[] = [];
      let firstBytes!: () => void;
      const first = new Promise<void>((resolve) => (firstBytes = resolve));
      const ended = new Promise<void>((resolve, reject) => {
        stream.on("data", (chunk: Buffer) => {
          chunks.push(chunk);
          firstBytes();
        });
        stream.once("end", resolve);
        stream.once("error", reject);
      });
      // The peer sends nothing more until the reader has the first fragment's bytes.
      t.ok(await within(first, STUCK_MS), `${name}: the first fragment's bytes reach the reader without more bytes from the peer`);
      await peer.send([{ opcode: Op.Continuation, payload: rest }]);
      await ended;
      t.equal(Buffer.concat(chunks).toString(), "hello world", `${name}: the whole message`);
      await peer.send([{ opcode: Op.Close, payload: closePayload(1000) }]);
      const answer = await peer.nextFrame(GUARD_MS);
      t.match(answer, { opcode: Op.Close }, `${name}: wsconn answers the close`);
      peer.end();
      t.match(await conn.closed, { code: 1000, wasClean: true }, `${name}: a clean close`);
      t.equal(budget.used, 0, `${name}: nothing left charged to the budget`);
    }
  }
});
