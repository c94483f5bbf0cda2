import { isUtf8 } from "node:buffer";
import t from "tap";
import { isValidUtf8, Utf8Validator } from "../../src/protocol/payload.js";
import { chunkers, randomSplitPoints, type Rng, seededRng, splitAt } from "../helpers/chunkers.js";

const rng = seededRng(t, "utf8");

/** validate runs a fresh validator over `chunks`: every push true, then end() true. */
function validate(chunks: Uint8Array[]): boolean {
  const v = new Utf8Validator();
  return chunks.every((c) => v.push(c)) && v.end();
}

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");

const VALID: Array<[string, Buffer]> = [
  ["empty", Buffer.alloc(0)],
  ["ASCII", Buffer.from("Hello, WebSocket! 0123456789")],
  ["2-byte (é, ß)", Buffer.from("café straße")],
  ["3-byte (€, 中文)", Buffer.from("€ 中文 ｗｓ")],
  ["4-byte (😀, 𝄞)", Buffer.from("😀𝄞🚀")],
  ["smallest of each length", hex("00 c2 80 e0 a0 80 f0 90 80 80")],
  ["largest of each length", hex("7f df bf ef bf bf f4 8f bf bf")],
  ["around the surrogates", hex("ed 9f bf ee 80 80")],
  ["U+FFFE and U+FFFF (noncharacters are valid)", hex("ef bf be ef bf bf")],
  ["max code point U+10FFFF", Buffer.from(String.fromCodePoint(0x10ffff))],
  ["long mixed text", Buffer.from("κόσμε — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀 ".repeat(20))],
  ["NUL bytes", Buffer.from([0, 0, 0x41, 0])],
];

t.test("valid text is valid at every single split point", async (t) => {
  for (const [name, bytes] of VALID) {
    t.ok(validate([bytes]), `${name}: whole`);
    let bad = 0;
    for (let i = 0; i <= bytes.length; i++) if (!validate(splitAt(bytes, [i]))) bad++;
    t.equal(bad, 0, `${name}: all ${bytes.length + 1} split points`);
    for (const chunker of chunkers(rng)) t.ok(validate(chunker.split(bytes)), `${name}: ${chunker.name}`);
  }
});

t.test("valid text at every pair of split points around the native threshold", async (t) => {
  // 64 bytes is where the validator switches to Node's isUtf8; cut multi-byte code points there.
  const bytes = Buffer.from("a€b😀c".repeat(14));
  let bad = 0;
  for (let i = 0; i <= bytes.length; i += 1) {
    for (let j = i; j <= bytes.length; j += 3) if (!validate(splitAt(bytes, [i, j]))) bad++;
  }
  t.equal(bad, 0);
});

const INVALID: Array<[string, Buffer]> = [
  ["overlong 2-byte NUL (C0 80)", hex("c0 80")],
  ["overlong 2-byte (C1 BF)", hex("c1 bf")],
  ["overlong 3-byte (E0 80 80)", hex("e0 80 80")],
  ["overlong 3-byte (E0 9F BF)", hex("e0 9f bf")],
  ["overlong 4-byte (F0 80 80 80)", hex("f0 80 80 80")],
  ["overlong 4-byte (F0 8F BF BF)", hex("f0 8f bf bf")],
  ["high surrogate (ED A0 80)", hex("ed a0 80")],
  ["low surrogate (ED BF BF)", hex("ed bf bf")],
  ["surrogate pair as CESU-8", hex("ed a0 bd ed b8 80")],
  ["past U+10FFFF (F4 90 80 80)", hex("f4 90 80 80")],
  ["F5 lead", hex("f5 80 80 80")],
  ["FF byte", hex("ff")],
  ["FE byte", hex("fe")],
  ["stray continuation", hex("80")],
  ["stray continuation after ASCII", hex("41 bf 41")],
  ["lead followed by ASCII", hex("c3 41")],
  ["3-byte lead cut by ASCII", hex("e2 82 41")],
  ["too many continuations", hex("c3 a9 a9")],
  ["5-byte form", hex("f8 88 80 80 80")],
];

t.test("invalid sequences are rejected whole and at every split", async (t) => {
  for (const [name, bytes] of INVALID) {
    t.notOk(validate([bytes]), `${name}: whole`);
    t.notOk(isUtf8(bytes), `${name}: Node agrees`);
    let accepted = 0;
    for (let i = 0; i <= bytes.length; i++) if (validate(splitAt(bytes, [i]))) accepted++;
    t.equal(accepted, 0, `${name}: all split points`);
    // the same bytes inside a long valid text, through the native path
    const padded = Buffer.concat([Buffer.from("x".repeat(100)), bytes, Buffer.from("y".repeat(100))]);
    t.notOk(validate([padded]), `${name}: inside 200 bytes of ASCII`);
    for (const chunker of chunkers(rng)) t.notOk(validate(chunker.split(padded)), `${name}: padded, ${chunker.name}`);
  }
});

t.test("a text truncated in a code point: push is true, end is false", async (t) => {
  for (const s of ["é", "€", "😀"]) {
    const bytes = Buffer.from(s);
    for (let cut = 1; cut < bytes.length; cut++) {
      const v = new Utf8Validator();
      t.ok(v.push(bytes.subarray(0, cut)), `${s} cut at ${cut}: push`);
      t.notOk(v.end(), `${s} cut at ${cut}: end`);
      // end() resets: the validator is usable again
      t.ok(v.push(Buffer.from("ok")) && v.end(), "usable after end");
    }
  }
  const long = Buffer.concat([Buffer.from("z".repeat(80)), hex("f0 9f 98")]);
  const v = new Utf8Validator();
  t.ok(v.push(long), "long chunk ending mid code point");
  t.notOk(v.end());
});

t.test("an invalid prefix fails as soon as its bad byte arrives", async (t) => {
  const cases: Array<[string, string]> = [
    ["F4 90: past U+10FFFF", "f4 90"],
    ["F0 80: overlong 4-byte", "f0 80"],
    ["E0 80: overlong 3-byte", "e0 80"],
    ["ED A0: surrogate", "ed a0"],
    ["C0: never valid", "c0"],
    ["F5: never valid", "f5"],
    ["E2 82 then ASCII", "e2 82 41"],
  ];
  for (const [name, prefix] of cases) {
    const bytes = hex(prefix);
    // byte by byte: true until the last byte, which is the bad one
    const v = new Utf8Validator();
    for (let i = 0; i < bytes.length - 1; i++) t.ok(v.push(bytes.subarray(i, i + 1)), `${name}: byte ${i} accepted`);
    t.notOk(v.push(bytes.subarray(bytes.length - 1)), `${name}: bad byte rejected`);
    // whole prefix in one push, incomplete code point or not
    t.notOk(new Utf8Validator().push(bytes), `${name}: in one chunk`);
    // at the end of a long chunk (native path + tail)
    t.notOk(new Utf8Validator().push(Buffer.concat([Buffer.from("a".repeat(100)), bytes])), `${name}: after 100 bytes`);
    // after a chunk that ended mid code point
    const w = new Utf8Validator();
    t.ok(w.push(hex("c3")));
    t.notOk(w.push(Buffer.concat([hex("a9"), Buffer.from("b".repeat(70)), bytes])), `${name}: after a completed split code point`);
  }
});

t.test("reset forgets a partial code point", async (t) => {
  const v = new Utf8Validator();
  t.ok(v.push(hex("e2 82")));
  v.reset();
  t.ok(v.push(Buffer.from("plain")));
  t.ok(v.end());
  const w = new Utf8Validator();
  t.ok(w.push(hex("f4")));
  w.reset();
  t.ok(w.push(hex("90 ")) === false, "after reset 0x90 is a stray continuation");
});

t.test("isValidUtf8 checks a whole buffer", async (t) => {
  t.ok(isValidUtf8(Buffer.from("héllo 😀")));
  t.notOk(isValidUtf8(hex("ed a0 80")));
  t.ok(isValidUtf8(new Uint8Array(0)));
});

/** randomText makes bytes that are mostly valid UTF-8, sometimes corrupted. */
function randomText(r: Rng): Buffer {
  const parts: Buffer[] = [];
  const count = r.int(4) === 0 ? r.int(200) : r.int(30);
  for (let i = 0; i < count; i++) {
    const kind = r.int(10);
    if (kind < 4) parts.push(Buffer.from([r.int(0x80)]));
    else if (kind < 6) parts.push(Buffer.from(String.fromCodePoint(0x80 + r.int(0x780))));
    else if (kind < 8) {
      const cp = 0x800 + r.int(0x10000 - 0x800);
      parts.push(Buffer.from(cp >= 0xd800 && cp <= 0xdfff ? "\ufffd" : String.fromCodePoint(cp)));
    } else parts.push(Buffer.from(String.fromCodePoint(0x10000 + r.int(0x100000))));
  }
  const bytes = Buffer.concat(parts);
  const mode = r.int(5);
  if (mode === 0 && bytes.length > 0) bytes[r.int(bytes.length)] = r.int(256); // corrupt one byte
  if (mode === 1) return Buffer.concat([bytes, r.bytes(1 + r.int(4))]); // random tail
  if (mode === 2 && bytes.length > 1) return bytes.subarray(0, r.int(bytes.length)); // truncated
  if (mode === 3) return Buffer.concat([bytes.subarray(0, bytes.length >> 1), specialBytes(r), bytes.subarray(bytes.length >> 1)]);
  return bytes;
}

/** specialBytes returns a sequence near the edges of the UTF-8 grammar. */
function specialBytes(r: Rng): Buffer {
  const leads = [0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff];
  const conts = [0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0];
  const out = [leads[r.int(leads.length)]!];
  for (let i = r.int(4); i > 0; i--) out.push(conts[r.int(conts.length)]!);
  return Buffer.from(out);
}

t.test("agrees with buffer.isUtf8 on thousands of random byte strings, randomly chunked", async (t) => {
  const r = seededRng(t, "utf8 random strings");
  let valid = 0;
  let disagreements = 0;
  const rounds = 5000;
  for (let i = 0; i < rounds; i++) {
    const bytes = r.int(20) === 0 ? r.bytes(r.int(100)) : randomText(r);
    const expected = isUtf8(bytes);
    if (expected) valid++;
    const got = validate(splitAt(bytes, randomSplitPoints(r, bytes.length)));
    const gotWhole = validate([bytes]);
    if (got !== expected || gotWhole !== expected) {
      disagreements++;
      if (disagreements <= 5) t.fail(`round ${i}: ${bytes.toString("hex")} expected ${expected}, chunked ${got}, whole ${gotWhole}`);
    }
  }
  t.equal(disagreements, 0, `${rounds} strings`);
  t.ok(valid > rounds / 5 && valid < rounds - rounds / 5, `a mix of valid (${valid}) and invalid strings`);
});
