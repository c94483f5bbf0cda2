/**
 * The zlib side of permessage-deflate (RFC 7692 §7.2) without sockets:
 * MessageDeflater's output (one-shot on the main thread, one-shot on the
 * thread pool, streamed in parts) checked by an independent inflater that
 * enforces the promised window and context policy; MessageInflater, whole
 * and streamed, fed at every chunk boundary, paused against a bomb and fed
 * garbage; the sliding window that replaces long-lived zlib streams; the
 * CompressionQueue's bound and fairness; compressedVariant for prepared
 * messages; and the measurement behind the default compression thresholds
 * (docs/compression.md).
 */

import * as zlib from "node:zlib";
import t from "tap";
import { CompressionQueue } from "../../src/conn/compression-queue.js";
import { compressedVariant, FAST_DEFLATE_MAX, MessageDeflater } from "../../src/conn/deflate.js";
import { MessageInflater, OUTPUT_OVER_CAP } from "../../src/conn/inflate.js";
import { SlidingWindow } from "../../src/conn/sliding-window.js";
import { chunkers, seededRng } from "../helpers/chunkers.js";
import { deflateMessage, inflateMessage, PeerDeflater, PeerInflater } from "../helpers/deflate-peer.js";
import { binaryPayload, rng, textPayload } from "../helpers/interop.js";

const SIZES = [0, 1, 125, 1000, FAST_DEFLATE_MAX, FAST_DEFLATE_MAX + 1, 65536, 300_000];
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** A queue that remembers the most operations it ever had in progress. */
class WatchedQueue extends CompressionQueue {
  peak = 0;
  override run(job: () => void): void {
    super.run(() => {
      this.peak = Math.max(this.peak, this.active);
      job();
    });
  }
}

const queue = new WatchedQueue(2);

function deflaterFor(keep: boolean, bits: number, level = 6, memLevel = 8): MessageDeflater {
  return new MessageDeflater({ windowBits: bits, level, memLevel, keepContext: keep }, queue);
}

function inflaterFor(keep: boolean, onChunk: (c: Buffer) => void, onError: (err: Error) => void, bits = 15): MessageInflater {
  return new MessageInflater(keep, bits, queue, onChunk, onError);
}

/** whole compresses one message, on whichever path its size takes. */
async function whole(d: MessageDeflater, data: Uint8Array): Promise<Buffer> {
  return d.compressMessage(data);
}

/** inflateAll streams one message through a MessageInflater. */
function inflateAll(inflater: MessageInflater, chunks: Buffer[]): Promise<void> {
  for (const c of chunks) inflater.write(c);
  return new Promise((resolve) => inflater.end(resolve));
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
}

function hasZlibState(o: MessageDeflater | MessageInflater): boolean {
  return (o as unknown as { stream: unknown }).stream !== undefined;
}

/** sample returns text that compresses like real text (repetition at every distance). */
function sample(n: number, seed: number): Buffer {
  const next = rng(seed);
  const words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma"];
  const parts: string[] = [];
  let len = 0;
  while (len < n) {
    const w = words[Math.floor(next() * words.length)]! + (next() < 0.2 ? String(Math.floor(next() * 1000)) : "");
    parts.push(w);
    len += w.length + 1;
  }
  return Buffer.from(parts.join(" ")).subarray(0, n);
}

t.test("SlidingWindow keeps the last `capacity` bytes, whatever the appends", async (t) => {
  const r = seededRng(t, "window");
  for (const capacity of [512, 1024, 32768]) {
    const w = new SlidingWindow(capacity);
    t.equal(w.dictionary, undefined, "empty at first");
    let all = Buffer.alloc(0);
    for (let i = 0; i < 60; i++) {
      const n = Math.floor(r.next() * (i % 10 === 9 ? capacity * 2 : capacity / 3));
      const data = Buffer.from(Array.from({ length: n }, () => Math.floor(r.next() * 256)));
      w.append(data);
      all = Buffer.concat([all, data]).subarray(-capacity);
      t.ok((w.dictionary ?? Buffer.alloc(0)).equals(all), `capacity ${capacity}, append ${i} (${n} B)`);
      t.ok(w.size <= capacity, "never holds more than its capacity");
    }
    w.clear();
    t.equal(w.dictionary, undefined);
    t.equal(w.size, 0, "clear frees the buffer");
  }
});

t.test("MessageDeflater output decodes with the promised window and context policy, and keeps no zlib state", async (t) => {
  for (const keep of [true, false]) {
    for (const bits of [9, 10, 12, 15]) {
      const deflater = deflaterFor(keep, bits);
      // The peer's window is exactly `bits`: a reference further back fails.
      const peer = new PeerInflater(bits, keep);
      for (const n of SIZES) {
        const data = sample(n, n + bits);
        for (let round = 0; round < 2; round++) {
          const payload = await whole(deflater, data);
          const back = await peer.decompress(payload);
          t.ok(back.equals(data), `keep=${keep} bits=${bits} ${n} B round ${round}`);
          t.notOk(hasZlibState(deflater), "no zlib stream between messages");
        }
      }
      t.equal(deflater.windowSize, keep ? 2 ** bits : 0, `keep=${keep}: a window of 2^${bits} bytes only with context takeover`);
      deflater.close();
      peer.close();
      t.equal(deflater.windowSize, 0, "close frees the window");
      await t.rejects(whole(deflater, Buffer.alloc(FAST_DEFLATE_MAX + 1)), /closed/, "compressing after close rejects");
    }
  }
});

t.test("context takeover makes a repeated message tiny; without it each message stands alone", async (t) => {
  for (const n of [4000, 20_000]) {
    const data = sample(n, 7);
    const keep = deflaterFor(true, 15);
    const first = await whole(keep, data);
    const second = await whole(keep, data);
    t.ok(second.length < first.length / 10, `${n} B: second ${second.length} B vs first ${first.length} B`);
    t.throws(() => inflateMessage(second), "the second message refers to the first");

    const alone = deflaterFor(false, 15);
    const a = await whole(alone, data);
    const b = await whole(alone, data);
    t.ok(a.equals(b), "same input, same output: nothing carried over");
    t.ok(inflateMessage(b).equals(data), "decodes with a fresh inflater");
  }
});

t.test("an empty message is the single byte 0x00 (§7.2.3.6)", async (t) => {
  for (const keep of [true, false]) {
    const d = deflaterFor(keep, 15);
    t.same([...(await whole(d, Buffer.alloc(0)))], [0x00], `keep=${keep}, first message`);
    await whole(d, Buffer.from("hello hello"));
    t.same([...(await whole(d, Buffer.alloc(0)))], [0x00], `keep=${keep}, after a message`);
    t.same([...(await d.compress(Buffer.alloc(0), true))], [0x00], `keep=${keep}, an empty message written in parts`);
    t.ok(inflateMessage(Buffer.from([0x00])).length === 0, "decodes to nothing");
    d.close();
  }
});

t.test("messages in parts and whole messages share one context; parts keep 00 00 ff ff, the end drops it", async (t) => {
  for (const keep of [true, false]) {
    const d = deflaterFor(keep, 15);
    const peer = new PeerInflater(15, keep);
    for (let round = 0; round < 3; round++) {
      const parts = [sample(1000, round), Buffer.alloc(0), sample(70_000, round + 9), sample(3, round)];
      const out: Buffer[] = [];
      for (const p of parts) {
        const c = await d.compress(p, false);
        if (p.length > 0) t.same([...c.subarray(-4)], [0, 0, 0xff, 0xff], "a part ends with a sync flush");
        out.push(c);
      }
      out.push(await d.compress(Buffer.alloc(0), true));
      t.same([...out[out.length - 1]!], [0x00], "the final empty part is 0x00");
      t.notOk(hasZlibState(d), "the stream of a message in parts is freed at its end");
      const back = await peer.decompress(Buffer.concat(out));
      t.ok(back.equals(Buffer.concat(parts)), `keep=${keep} round ${round}: in parts`);
      const next = sample(2000, round);
      t.ok((await peer.decompress(await whole(d, next))).equals(next), `keep=${keep} round ${round}: a whole message after it`);
    }
    d.close();
    peer.close();
  }
});

t.test("a level change applies from the next message on", async (t) => {
  const d = deflaterFor(true, 15, 9);
  const peer = new PeerInflater(15, true);
  const data = sample(20_000, 3);
  const part = await d.compress(data.subarray(0, 10_000), false);
  d.level = 0;
  const rest = await d.compress(data.subarray(10_000), true);
  t.ok((await peer.decompress(Buffer.concat([part, rest]))).equals(data), "the message begun at level 9 ends at level 9");
  const fresh = sample(20_000, 4);
  const stored = await whole(d, fresh);
  t.ok(stored.length >= fresh.length, `level 0 stores: ${stored.length} B for ${fresh.length} B`);
  t.ok((await peer.decompress(stored)).equals(fresh), "and still decodes in the same context");
  peer.close();
});

t.test("MessageInflater decodes whatever the chunk boundaries, streamed or whole", async (t) => {
  const r = seededRng(t, "inflater chunks");
  for (const keep of [true, false]) {
    for (const chunker of chunkers(r)) {
      const peer = new PeerDeflater(15, keep);
      const out: Buffer[] = [];
      const inflater = inflaterFor(keep, (c) => out.push(c), (err) => t.fail(err.message));
      for (const n of [0, 1, 200, 5000, 70_000]) {
        const data = textPayload(n);
        // Streamed, then whole, in one context: the window carries over both ways.
        for (const how of ["streamed", "whole"]) {
          const payload = await peer.compress(data);
          out.length = 0;
          if (how === "streamed") await inflateAll(inflater, chunker.split(payload));
          else {
            const got = inflater.inflateWhole(Buffer.concat([payload, TAIL]), 1 << 20);
            t.not(got, OUTPUT_OVER_CAP);
            out.push(got as Buffer);
          }
          t.ok(Buffer.concat(out).equals(data), `keep=${keep} ${chunker.name} ${n} B ${how}`);
          t.notOk(hasZlibState(inflater), "no zlib stream between messages");
        }
      }
      t.equal(inflater.windowSize, keep ? 32768 : 0, `keep=${keep}: a 32 KiB window only with context takeover`);
      inflater.release();
      peer.close();
    }
  }
});

t.test("inflateWhole stops at its cap and throws on invalid data", async (t) => {
  const inflater = inflaterFor(true, () => t.fail("not streamed"), (err) => t.fail(err.message));
  const bomb = Buffer.concat([deflateMessage(Buffer.alloc(10 * 1024 * 1024)), TAIL]);
  t.equal(inflater.inflateWhole(bomb, 64 * 1024), OUTPUT_OVER_CAP, "a 10 MiB bomb stops at a 64 KiB cap");
  t.equal(inflater.windowSize, 0, "a message given up leaves the window untouched");
  const exact = Buffer.concat([deflateMessage(Buffer.alloc(1000, 7)), TAIL]);
  t.equal((inflater.inflateWhole(exact, 1000) as Buffer).length, 1000, "output of exactly the cap is fine");
  t.equal(inflater.inflateWhole(exact, 999), OUTPUT_OVER_CAP, "one byte over is not");
  t.throws(() => inflater.inflateWhole(Buffer.from([0xff, 0xff, 0xff, 0, 0, 0xff, 0xff]), 1000), /invalid block type/);
});

t.test("MessageInflater hands out bounded chunks, stops while paused and gives its slot back meanwhile", async (t) => {
  const bomb = deflateMessage(Buffer.alloc(8 * 1024 * 1024));
  t.ok(bomb.length < 16 * 1024, `bomb is ${bomb.length} B`);
  let produced = 0;
  let largest = 0;
  const own = new CompressionQueue(1);
  const inflater = new MessageInflater(true, 15, own, (c) => {
    produced += c.length;
    largest = Math.max(largest, c.length);
  }, (err) => t.fail(err.message));
  inflater.write(bomb);
  t.equal(own.active, 1, "the write holds the one slot");
  inflater.pause();
  t.equal(own.active, 0, "paused, the slot is given back");
  let ended = false;
  const done = new Promise<void>((resolve) => inflater.end(() => ((ended = true), resolve())));
  const stream = (inflater as unknown as { stream: zlib.InflateRaw }).stream;
  // zlib stops once its readable buffer is full; then a few more turns change nothing.
  await until(() => stream.readableLength >= stream.readableHighWaterMark);
  const held = stream.readableLength;
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
  t.equal(produced, 0, "nothing handed out while paused");
  t.equal(stream.readableLength, held, "zlib stopped producing");
  t.ok(held <= 64 * 1024, `zlib holds ${held} B while paused`);
  t.notOk(ended, "the message cannot end while output is held");
  // Another connection's work runs meanwhile: the paused one does not block the queue.
  let other = false;
  own.run(() => ((other = true), own.release()));
  t.ok(other, "another job ran at once while the inflater was paused");
  inflater.resume();
  await done;
  t.equal(produced, 8 * 1024 * 1024, "everything handed out after resume");
  t.ok(largest <= 16 * 1024, `chunks of at most ${largest} B`);
  t.equal(own.active, 0, "the slot is free once the message is done");
  inflater.release();
});

t.test("MessageInflater reports invalid data once, and release is safe at any time", async (t) => {
  // A message that refers to an earlier one, given to a fresh inflater: what a
  // peer that ignores no_context_takeover sends.
  const peer = new PeerDeflater(15, true);
  await peer.compress(sample(2000, 1));
  const dangling = await peer.compress(sample(2000, 1));
  peer.close();
  const cases: Array<[string, Buffer]> = [
    ["reserved block type 3", Buffer.from([0xff, 0xff, 0xff])],
    ["stored block with bad NLEN", Buffer.from([0x00, 0x05, 0x00, 0x00, 0x00])],
    ["distance beyond the start of the window", dangling],
  ];
  for (const [name, payload] of cases) {
    const errors: Error[] = [];
    let failed!: () => void;
    const firstError = new Promise<void>((resolve) => (failed = resolve));
    const inflater = inflaterFor(true, () => undefined, (err) => (errors.push(err), failed()));
    inflater.write(payload);
    const stream = (inflater as unknown as { stream: zlib.InflateRaw }).stream;
    const closed = new Promise((resolve) => stream.once("close", resolve));
    inflater.end(() => t.fail(`${name}: the message must not complete`));
    await firstError;
    await closed;
    t.equal(errors.length, 1, `${name}: one error`);
    t.equal(hasZlibState(inflater), false, `${name}: state released`);
    t.equal(queue.active, 0, `${name}: the slot given back`);
    t.throws(() => inflater.inflateWhole(Buffer.concat([payload, TAIL]), 1 << 20), `${name}: whole, it throws`);
    inflater.release();
  }
  const busy = inflaterFor(true, () => undefined, () => t.fail("no error after release"));
  busy.write(deflateMessage(Buffer.alloc(4 * 1024 * 1024)));
  const busyStream = (busy as unknown as { stream: zlib.InflateRaw }).stream;
  const busyClosed = new Promise((resolve) => busyStream.once("close", resolve));
  busy.release();
  busy.release();
  await busyClosed;
  t.equal(queue.active, 0, "released mid-inflate: the slot is given back");
  t.pass("released mid-inflate: the zlib stream closed without an error reaching the connection");
});

t.test("CompressionQueue bounds the work in progress and serves connections in turn", async (t) => {
  t.throws(() => new CompressionQueue(0), RangeError);
  t.throws(() => new CompressionQueue(1.5), RangeError);
  t.equal(CompressionQueue.shared.concurrency, 4, "the shared queue has 4 slots");
  const q = new WatchedQueue(2);
  const big = sample(200_000, 11);
  const order: string[] = [];
  // One connection sends ten large messages in a row; five others one each, a moment later.
  const busy = new MessageDeflater({ windowBits: 15, level: 6, memLevel: 8, keepContext: true }, q);
  const busyDone = (async () => {
    for (let i = 0; i < 10; i++) {
      await busy.compressMessage(big);
      order.push(`busy${i}`);
    }
  })();
  await Promise.resolve();
  const others = Array.from({ length: 5 }, (_, i) => {
    const d = new MessageDeflater({ windowBits: 15, level: 6, memLevel: 8, keepContext: false }, q);
    return Promise.resolve(d.compressMessage(big)).then(() => order.push(`other${i}`));
  });
  t.ok(q.waiting > 0, `jobs wait for a slot (${q.waiting})`);
  await Promise.all([busyDone, ...others]);
  t.ok(q.peak <= 2, `never more than 2 in progress (peak ${q.peak})`);
  t.equal(q.active, 0, "all slots free at the end");
  const lastOther = Math.max(...Array.from({ length: 5 }, (_, i) => order.indexOf(`other${i}`)));
  t.ok(lastOther < order.indexOf("busy4"), `the five single messages finish before the busy connection's fifth: ${order.join(" ")}`);
});

t.test("compressedVariant: a fresh stream per message, uncompressed below the threshold", async (t) => {
  const v = compressedVariant({ windowBits: 10, level: 6, memLevel: 8, keepContext: true }, 100);
  t.equal(v.key, "deflate:10:6:8:100");
  const small = Buffer.from("x".repeat(99));
  t.same(v.encode(small), { payload: small, rsv1: false }, "99 B < 100: sent as is");
  const data = sample(50_000, 5);
  const { payload, rsv1 } = v.encode(data);
  t.equal(rsv1, true);
  t.ok(payload.length < data.length / 2, "compressed");
  t.ok(inflateInWindow(Buffer.from(payload), 10).equals(data), "decodes with a 2^10 window");
  const tuning = { windowBits: 15, memLevel: 8, keepContext: false };
  t.same([...compressedVariant({ ...tuning, level: 6 }, 0).encode(Buffer.alloc(0)).payload], [0x00], "empty message with threshold 0");
  t.not(compressedVariant({ ...tuning, level: 1 }, 0).key, compressedVariant({ ...tuning, level: 9 }, 0).key, "level is part of the key");
});

function inflateInWindow(payload: Buffer, bits: number): Buffer {
  return zlib.inflateRawSync(Buffer.concat([payload, TAIL]), { windowBits: bits, finishFlush: zlib.constants.Z_SYNC_FLUSH });
}

// ---- the measurement behind the default thresholds ----

/** jsonMessage builds a realistic chat/event JSON message of exactly `size` bytes. */
function jsonMessage(size: number, next: () => number): Buffer {
  const words = "the of and to in is you that it was for on are as with his they at be this have from or one had by word but not what all were when your can said there use an each which she do how their if will up other about out many then them these so some her would make like him into time has look two more write go see number no way could people than first water been call who oil its now find long down day did get come made may part over new sound take only little work know place year live back give most very after thing our just name good sentence man think say great where help through much before line right too mean old any same tell boy follow came want show also around form three small set put end does another well large must big even such because turn here why ask went men read need land different home move try kind hand picture again change off play spell air away animal house point page letter mother answer found study still learn should world".split(" ");
  const pick = (): string => words[Math.floor(next() * words.length)]!;
  // Small messages are small objects (acks, pings, presence), not cut-down big ones.
  const msg =
    size < 100
      ? { op: pick(), id: Math.floor(next() * 1e6), text: "" }
      : { type: ["chat", "presence", "update"][Math.floor(next() * 3)], room: `room-${Math.floor(next() * 50)}`, user: { id: Math.floor(next() * 1e6), name: pick() }, ts: 1_700_000_000_000 + Math.floor(next() * 1e9), text: "" };
  while (JSON.stringify(msg).length < size) msg.text += (msg.text ? " " : "") + pick();
  const json = Buffer.from(JSON.stringify(msg));
  if (json.length === size) return json;
  // Trim the text to hit the size exactly, keeping the JSON valid.
  msg.text = msg.text.slice(0, Math.max(0, msg.text.length - (json.length - size)));
  const out = Buffer.from(JSON.stringify(msg));
  return out.length > size ? out.subarray(0, size) : Buffer.concat([out, Buffer.alloc(size - out.length, 0x20)]);
}

const frameHeader = (n: number): number => (n < 126 ? 2 : n < 65536 ? 4 : 10);

t.test("threshold measurement: wire bytes saved and CPU cost per message (docs/compression.md)", async (t) => {
  const SIZES_MEASURED = [16, 32, 64, 128, 256, 512, 1024, 2048];
  const COUNT = 300;
  const saved = new Map<string, number>();
  const warm = deflaterFor(true, 15);
  for (let i = 0; i < 500; i++) await whole(warm, jsonMessage(300, rng(i)));
  warm.close();
  for (const keep of [true, false]) {
    t.comment(`${keep ? "context takeover" : "no context takeover"}: size | wire B raw -> compressed | saved | deflate CPU µs/msg | inflate CPU µs/msg`);
    for (const size of SIZES_MEASURED) {
      const next = rng(size);
      const messages = Array.from({ length: COUNT }, () => jsonMessage(size, next));
      const deflater = deflaterFor(keep, 15);
      const payloads: Buffer[] = [];
      const c0 = process.cpuUsage();
      for (const m of messages) payloads.push(Buffer.from(await whole(deflater, m)));
      const deflateCpu = process.cpuUsage(c0);
      deflater.close();
      const inflater = inflaterFor(keep, () => undefined, (err) => t.fail(err.message));
      const c1 = process.cpuUsage();
      for (const p of payloads) inflater.inflateWhole(Buffer.concat([p, TAIL]), 1 << 20);
      const inflateCpu = process.cpuUsage(c1);
      inflater.release();
      const raw = messages.reduce((s, m) => s + m.length + frameHeader(m.length), 0);
      const wire = payloads.reduce((s, p) => s + p.length + frameHeader(p.length), 0);
      const percent = Math.round((1 - wire / raw) * 100);
      saved.set(`${keep}:${size}`, percent);
      t.comment(
        `  ${String(size).padStart(4)} B | ${(raw / COUNT).toFixed(0).padStart(4)} -> ${(wire / COUNT).toFixed(0).padStart(4)} | ${String(percent).padStart(3)}% | ` +
          `${((deflateCpu.user + deflateCpu.system) / COUNT).toFixed(0).padStart(3)} | ${((inflateCpu.user + inflateCpu.system) / COUNT).toFixed(0).padStart(3)}`,
      );
    }
  }
  // Generous bounds on what the defaults rest on (exact figures vary by machine only in CPU).
  t.ok(saved.get("false:16")! <= 0, "no context takeover: 16 B messages do not shrink");
  t.ok(saved.get("false:64")! < 10, "no context takeover: 64 B messages barely shrink");
  t.ok(saved.get("false:512")! >= 25, "no context takeover: 512 B messages shrink by a quarter or more");
  t.ok(saved.get("true:128")! >= 30, "context takeover: 128 B messages shrink by 30% or more");
  t.ok(saved.get("true:2048")! > saved.get("false:2048")!, "context takeover beats no context takeover");
});

t.test("binary data that does not compress still round-trips", async (t) => {
  const d = deflaterFor(true, 15);
  const data = binaryPayload(100_000, 3);
  const random = Buffer.from(Array.from({ length: 50_000 }, (_, i) => (i * 2654435761) >>> 24));
  const peer = new PeerInflater(15, true);
  for (const m of [data, random, data.subarray(0, 5000)]) t.ok((await peer.decompress(await whole(d, m))).equals(m));
  d.close();
  peer.close();
});
