/**
 * Family 6: UTF-8 in text messages (https://www.rfc-editor.org/rfc/rfc6455#section-8.1).
 * Valid and invalid byte sequences of every kind Unicode Table 3-7 rules out
 * (lone continuation bytes, lonely lead bytes, truncated sequences, overlong
 * forms, surrogates, code points past U+10FFFF, bytes that never occur), each
 * sent whole, one byte per frame, split into two fragments at every position,
 * and embedded in a longer frame cut right after the first bad byte, so that
 * only a validator that fails fast can answer 1007 before the rest arrives.
 */

import { frame } from "../helpers/raw-peer.js";
import type { Case, Step } from "./runner.js";

/**
 * firstInvalid is the test's own UTF-8 oracle: the index of the first byte at
 * which a validator must fail, `bytes.length` when the bytes are only cut short
 * at the end, or -1 when they are valid UTF-8.
 */
export function firstInvalid(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i]!;
    if (lead < 0x80) {
      i++;
      continue;
    }
    const shape = leadShape(lead);
    if (shape === undefined) return i;
    let [lo, hi] = [shape.lo, shape.hi];
    for (let k = 1; k <= shape.more; k++) {
      if (i + k >= bytes.length) return bytes.length;
      const b = bytes[i + k]!;
      if (b < lo || b > hi) return i + k;
      [lo, hi] = [0x80, 0xbf];
    }
    i += shape.more + 1;
  }
  return -1;
}

/** leadShape: continuation count and the allowed range of the first continuation byte. */
function leadShape(lead: number): { more: number; lo: number; hi: number } | undefined {
  if (lead >= 0xc2 && lead <= 0xdf) return { more: 1, lo: 0x80, hi: 0xbf };
  if (lead === 0xe0) return { more: 2, lo: 0xa0, hi: 0xbf };
  if (lead === 0xed) return { more: 2, lo: 0x80, hi: 0x9f };
  if (lead >= 0xe1 && lead <= 0xef) return { more: 2, lo: 0x80, hi: 0xbf };
  if (lead === 0xf0) return { more: 3, lo: 0x90, hi: 0xbf };
  if (lead >= 0xf1 && lead <= 0xf3) return { more: 3, lo: 0x80, hi: 0xbf };
  if (lead === 0xf4) return { more: 3, lo: 0x80, hi: 0x8f };
  return undefined;
}

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");
const KOSME = Buffer.from("κόσμε", "utf8");
const EDITED = Buffer.from("edited", "utf8");

/** Valid samples: [name, bytes]. */
const VALID: Array<[string, Buffer]> = [
  ["ASCII and Latin-1 mix", Buffer.from("Hello-µ@ßöäüàá-UTF-8!!", "utf8")],
  ["Greek word", KOSME],
  ["first 1-byte code point U+0000", hex("00")],
  ["first 2-byte code point U+0080", hex("c280")],
  ["first 3-byte code point U+0800", hex("e0a080")],
  ["first 4-byte code point U+10000", hex("f0908080")],
  ["last 1-byte code point U+007F", hex("7f")],
  ["last 2-byte code point U+07FF", hex("dfbf")],
  ["last 3-byte code point U+FFFF", hex("efbfbf")],
  ["last code point U+10FFFF", hex("f48fbfbf")],
  ["U+D7FF, just below the surrogates", hex("ed9fbf")],
  ["U+E000, just above the surrogates", hex("ee8080")],
  ["U+FFFD replacement character", hex("efbfbd")],
  ["noncharacter U+FFFE", hex("efbfbe")],
  ["noncharacters U+1FFFE U+1FFFF", hex("f09fbfbe f09fbfbf")],
  ["noncharacters U+10FFFE U+10FFFF", hex("f48fbfbe f48fbfbf")],
  ["noncharacters U+FDD0 and U+FDEF", hex("efb790 efb7af")],
  ["emoji (4-byte) and CJK (3-byte)", Buffer.from("😀 漢字 ☃", "utf8")],
  ["multilingual text", Buffer.from("Ελληνικά Русский العربية हिन्दी 日本語 𝄞", "utf8")],
];

/** Invalid samples: [name, bytes]. */
const INVALID: Array<[string, Buffer]> = [
  // past U+10FFFF and the old 5- and 6-byte forms
  ["U+110000 (f4 90 80 80)", hex("f4908080")],
  ["4-byte form of 0x1FFFFF", hex("f7bfbfbf")],
  ["5-byte sequence", hex("f888808080")],
  ["6-byte sequence", hex("fc8480808080")],
  ["lead byte f5", hex("f5808080")],
  // lone continuation bytes
  ["continuation 80", hex("80")],
  ["continuation bf", hex("bf")],
  ["continuations 80 bf", hex("80bf")],
  ["continuations 80 bf 80", hex("80bf80")],
  ["continuations 80 bf 80 bf", hex("80bf80bf")],
  ["all 64 continuation bytes", Buffer.from(Array.from({ length: 64 }, (_, i) => 0x80 + i))],
  // lonely lead bytes followed by a space
  ["lead c0 then space", hex("c020")],
  ["lead c1 then space", hex("c120")],
  ["lead c2 then space", hex("c220")],
  ["lead df then space", hex("df20")],
  ["lead e0 then space", hex("e020")],
  ["lead ef then space", hex("ef20")],
  ["lead f0 then space", hex("f020")],
  ["lead f4 then space", hex("f420")],
  ["lead f7 then space", hex("f720")],
  ["lead fb then space", hex("fb20")],
  ["lead fd then space", hex("fd20")],
  // sequences missing their last continuation byte (invalid only at the end)
  ["2-byte sequence cut short (df)", hex("df")],
  ["3-byte sequence cut short (ef bf)", hex("efbf")],
  ["4-byte sequence cut short (f4 8f bf)", hex("f48fbf")],
  ["3-byte sequence cut short (e1 80)", hex("e180")],
  ["Greek word then a cut 3-byte sequence", Buffer.concat([KOSME, hex("e1bd")])],
  ["cut sequences back to back", hex("c0 e080 f08080 f8808080 fc80808080 df efbf f7bfbf fbbfbfbf fdbfbfbfbf")],
  // bytes that never occur
  ["byte fe", hex("fe")],
  ["byte ff", hex("ff")],
  ["bytes fe fe ff ff", hex("fefeffff")],
  // overlong forms of "/"
  ["overlong / in 2 bytes", hex("c0af")],
  ["overlong / in 3 bytes", hex("e080af")],
  ["overlong / in 4 bytes", hex("f08080af")],
  ["overlong / in 5 bytes", hex("f8808080af")],
  ["overlong / in 6 bytes", hex("fc80808080af")],
  // largest overlong forms
  ["overlong U+007F in 2 bytes", hex("c1bf")],
  ["overlong U+07FF in 3 bytes", hex("e09fbf")],
  ["overlong U+FFFF in 4 bytes", hex("f08fbfbf")],
  // overlong NUL
  ["overlong NUL in 2 bytes", hex("c080")],
  ["overlong NUL in 3 bytes", hex("e08080")],
  ["overlong NUL in 4 bytes", hex("f0808080")],
  // UTF-16 surrogates encoded in UTF-8 (CESU-8)
  ["surrogate U+D800", hex("eda080")],
  ["surrogate U+DB7F", hex("edadbf")],
  ["surrogate U+DB80", hex("edae80")],
  ["surrogate U+DBFF", hex("edafbf")],
  ["surrogate U+DC00", hex("edb080")],
  ["surrogate U+DF80", hex("edbe80")],
  ["surrogate U+DFFF", hex("edbfbf")],
  ["surrogate pair U+D800 U+DC00", hex("eda080edb080")],
  ["surrogate pair U+DBFF U+DFFF", hex("edafbfedbfbf")],
  // invalid bytes inside valid text
  ["Greek word, surrogate, ASCII", Buffer.concat([KOSME, hex("eda080"), EDITED])],
  ["Greek word, U+110000, ASCII", Buffer.concat([KOSME, hex("f4908080"), EDITED])],
];

const ID = "6";
const FAMILY = "6 UTF-8";

function textSteps(bytes: Buffer): Step[] {
  return [{ send: [frame.text(bytes)] }, { expect: { message: { type: "text", data: bytes } } }];
}

/** perByteFrames sends `bytes` as one fragment per byte (an empty text frame first if empty). */
function perByteFrames(bytes: Buffer, upTo = bytes.length) {
  const frames = [frame.text(Buffer.alloc(0), { fin: bytes.length === 0 })];
  for (let i = 0; i < upTo; i++) frames.push(frame.cont(bytes.subarray(i, i + 1), { fin: i === bytes.length - 1 }));
  return frames;
}

function validCases(name: string, bytes: Buffer, n: number): Case[] {
  const base = `${ID}.${n}`;
  const splits: Step[] = [];
  for (let k = 1; k < bytes.length; k++) {
    splits.push({ send: [frame.text(bytes.subarray(0, k), { fin: false }), frame.cont(bytes.subarray(k))], chop: "frames" });
    splits.push({ expect: { message: { type: "text", data: bytes } } });
  }
  return [
    { id: `${base}.1`, family: FAMILY, title: `valid: ${name}, whole`, steps: textSteps(bytes) },
    {
      id: `${base}.2`,
      family: FAMILY,
      title: `valid: ${name}, one fragment per byte`,
      steps: [{ send: perByteFrames(bytes), chop: "frames" }, { expect: { message: { type: "text", data: bytes } } }],
    },
    { id: `${base}.3`, family: FAMILY, title: `valid: ${name}, delivered 1 byte at a time`, steps: [{ send: [frame.text(bytes)], chop: 1 }, { expect: { message: { type: "text", data: bytes } } }] },
    { id: `${base}.4`, family: FAMILY, title: `valid: ${name}, split into 2 fragments at every position`, steps: splits },
  ];
}

function invalidCases(name: string, bytes: Buffer, n: number): Case[] {
  const base = `${ID}.${n}`;
  const bad = firstInvalid(bytes);
  const cases: Case[] = [
    { id: `${base}.1`, family: FAMILY, title: `invalid: ${name}, whole`, steps: [{ send: [frame.text(bytes)] }], end: { fail: 1007 } },
    {
      id: `${base}.2`,
      family: FAMILY,
      title: `invalid: ${name}, one fragment per byte, nothing sent after the bad byte`,
      steps: [{ send: perByteFrames(bytes, Math.min(bad + 1, bytes.length)), chop: "frames" }],
      end: { fail: 1007 },
    },
  ];
  const embedded = Buffer.concat([KOSME, bytes, EDITED]);
  const at = firstInvalid(embedded);
  cases.push({
    id: `${base}.3`,
    family: FAMILY,
    title: `invalid: ${name} inside text, frame cut after the bad byte (fail fast)`,
    steps: [{ send: [frame.text(embedded, { cut: at + 1 })] }],
    end: { fail: 1007 },
  });
  for (let k = 1; k < bytes.length; k++) {
    cases.push({
      id: `${base}.4.${k}`,
      family: FAMILY,
      title: `invalid: ${name}, split into 2 fragments at ${k}`,
      steps: [{ send: [frame.text(bytes.subarray(0, k), { fin: false }), frame.cont(bytes.subarray(k))], chop: "frames" }],
      end: { fail: 1007 },
    });
  }
  return cases;
}

/** prefixCases: every prefix of "κόσμε" as a whole message; valid exactly on code point boundaries. */
function prefixCases(n: number): Case[] {
  const cases: Case[] = [];
  for (let k = 1; k <= KOSME.length; k++) {
    const bytes = KOSME.subarray(0, k);
    const valid = firstInvalid(bytes) === -1;
    cases.push({
      id: `${ID}.${n}.${k}`,
      family: FAMILY,
      title: `the first ${k} bytes of "κόσμε" (${valid ? "valid" : "cut inside a code point"})`,
      steps: valid ? textSteps(bytes) : [{ send: [frame.text(bytes)] }],
      ...(valid ? {} : { end: { fail: 1007 } }),
    });
  }
  return cases;
}

/** emptyCases: empty text messages, whole and fragmented (Autobahn 6.1). */
function emptyCases(): Case[] {
  const empty = Buffer.alloc(0);
  const echo: Step = { expect: { message: { type: "text", data: empty } } };
  return [
    { id: "6.1.1", family: FAMILY, title: "empty text message", steps: [{ send: [frame.text(empty)] }, echo] },
    {
      id: "6.1.2",
      family: FAMILY,
      title: "empty text message in 3 empty fragments",
      steps: [{ send: [frame.text(empty, { fin: false }), frame.cont(empty, { fin: false }), frame.cont(empty)] }, echo],
    },
    {
      id: "6.1.3",
      family: FAMILY,
      title: "text in 3 fragments, first and last empty",
      steps: [
        { send: [frame.text(empty, { fin: false }), frame.cont("middle", { fin: false }), frame.cont(empty)], chop: "frames" },
        { expect: { message: { type: "text", data: Buffer.from("middle") } } },
      ],
    },
  ];
}

/** utf8Cases builds family 6. */
export function utf8Cases(): Case[] {
  const cases = [...emptyCases()];
  let n = 2;
  for (const [name, bytes] of VALID) {
    if (firstInvalid(bytes) !== -1) throw new Error(`sample "${name}" is not valid UTF-8`);
    cases.push(...validCases(name, bytes, n++));
  }
  cases.push(...prefixCases(n++));
  for (const [name, bytes] of INVALID) {
    if (firstInvalid(bytes) === -1) throw new Error(`sample "${name}" is valid UTF-8`);
    cases.push(...invalidCases(name, bytes, n++));
  }
  return cases;
}
