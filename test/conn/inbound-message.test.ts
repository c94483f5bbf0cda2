/**
 * The payload store of an incoming message, without a socket: what a message
 * costs (`held`) however it is fragmented, when a chunk is kept as a view and
 * when it is copied, and that the bytes come out whole, in order, unmasked.
 */

import t from "tap";
import { InboundMessage, PIECE_COST } from "../../src/conn/inbound-message.js";
import { MessageType } from "../../src/protocol/frame.js";
import { maskWithWord, readMaskWord } from "../../src/protocol/payload.js";
import { seededRng } from "../helpers/chunkers.js";

const KiB = 1024;

/**
 * fragments cuts `data` into pieces of `size`, each a view of a "socket read"
 * of up to 64 KiB that holds them one after another, 6 header bytes apart, as
 * frames' payloads sit in the chunks a socket delivers.
 */
function fragments(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  let read = Buffer.alloc(0);
  let offset = 0;
  for (let i = 0; i < data.length; i += size) {
    const piece = data.subarray(i, i + size);
    if (offset + 6 + piece.length > read.length) {
      read = Buffer.alloc(Math.max(64 * KiB, piece.length + 6));
      offset = 0;
    }
    piece.copy(read, offset + 6);
    out.push(read.subarray(offset + 6, offset + 6 + piece.length));
    offset += 6 + piece.length;
  }
  return out;
}

function pattern(length: number): Buffer {
  const data = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) data[i] = (i * 31 + 7) & 0xff;
  return data;
}

t.test("an unfinished message costs about its payload, whatever its fragment size", async (t) => {
  const size = 31 * KiB;
  for (const fragment of [1, 2, 125, 1000, 4096, 20000]) {
    const message = new InboundMessage(MessageType.Binary);
    let peak = 0;
    for (const piece of fragments(pattern(size), fragment)) {
      message.append(piece, false);
      peak = Math.max(peak, message.held);
    }
    // Bound: the payload, plus at most one half-used 16 KiB buffer, plus PIECE_COST a piece.
    const bound = 2 * size + 16 * KiB;
    t.ok(peak <= bound, `${fragment}-byte fragments: ${peak} bytes held for ${size} (bound ${bound}, was ~${Math.round((size / fragment) * (PIECE_COST + fragment))} kept apart)`);
    t.ok(message.held >= size, "held counts at least the payload");
    t.same(message.takeRest(), pattern(size), "the bytes come out whole and in order");
    t.equal(message.held, 0, "taking the message releases everything");
  }
});

t.test("a chunk is kept as a view only when it is most of its buffer", async (t) => {
  const read = Buffer.alloc(64 * KiB, 1);
  const whole = new InboundMessage(MessageType.Binary);
  whole.append(read, true);
  t.equal(whole.takeRest(), read, "a message that is a whole socket read is kept as it is: no copy");

  const small = new InboundMessage(MessageType.Binary);
  const view = read.subarray(100, 110);
  small.append(view, true);
  t.equal(small.held, 10 + PIECE_COST, "a small message costs its bytes and one piece");
  const out = small.takeRest();
  t.not(out.buffer, read.buffer, "10 bytes of a 64 KiB read are copied: they would pin it all");
  t.same(out, view);

  const pipelined = Buffer.alloc(608, 2); // 16 small messages in one socket read
  const one = new InboundMessage(MessageType.Binary);
  one.append(pipelined.subarray(6, 38), true);
  t.equal(one.held, 608 + PIECE_COST, "a small message in a small read keeps its view, charged the whole read");
  t.equal(one.takeRest().buffer, pipelined.buffer, "no copy");
  t.equal(one.held, 0);

  const half = new InboundMessage(MessageType.Binary);
  half.append(read.subarray(0, 40 * KiB), false);
  half.append(read.subarray(40 * KiB), true);
  t.equal(half.held, 64 * KiB + 2 * PIECE_COST, "pieces of 4 KiB and more that are half their buffer stay views");
});

t.test("a reader takes what arrived so far, and the owned buffer goes on filling", async (t) => {
  const message = new InboundMessage(MessageType.Binary);
  const data = pattern(3000);
  const taken: Buffer[] = [];
  for (const [i, piece] of fragments(data, 7).entries()) {
    message.append(piece, false);
    if (i % 50 === 0) {
      while (message.hasChunk()) taken.push(message.nextChunk());
      t.ok(message.held < 16 * KiB + 2 * PIECE_COST, "after a take only the owned buffer is held");
    }
  }
  while (message.hasChunk()) taken.push(message.nextChunk());
  t.same(Buffer.concat(taken), data, "every byte once, in order");
  t.equal(message.drop().length, 0);
  t.equal(message.held, 0);
});

t.test("masked pieces copied together unmask at their offset", async (t) => {
  const rng = seededRng(t, "masked pieces");
  for (let round = 0; round < 20; round++) {
    const length = 1 + rng.int(40_000);
    const plain = pattern(length);
    const key = Buffer.from([rng.int(256), rng.int(256), rng.int(256), rng.int(256)]);
    const word = readMaskWord(key, 0);
    const masked = Buffer.from(plain);
    maskWithWord(masked, word, 0);
    const message = new InboundMessage(MessageType.Binary);
    message.maskKey = word;
    for (let i = 0; i < length; ) {
      const n = 1 + rng.int(6000);
      message.append(masked.subarray(i, i + n), i + n >= length);
      i += n;
    }
    t.same(message.takeRest(), plain, `${length} bytes in random pieces`);
  }
});
