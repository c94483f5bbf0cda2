/**
 * The conformance table: our own cases, one family per Autobahn family 1–10
 * with the same intent (framing sizes, pings, reserved bits, opcodes,
 * fragmentation, UTF-8, close handling, big messages, misc), plus the read
 * limit (L), the core's list of protocol violations sent byte by byte (P) and
 * frames that arrive with the handshake (H).
 *
 * Adding a family: push rows with a new `family` string (the summary table
 * picks it up). The compression families 12/13 will need a Case field saying
 * what to negotiate (e.g. `compression: "context-takeover"`), read by the
 * Harness when it opens the connection, and frames with RSV1 set: RawFrame
 * already takes any `rsv`.
 */

import { type Chop, frame, Op, type RawFrame, RSV1, RSV2, RSV3 } from "../helpers/raw-peer.js";
import type { Case, Expect, Step } from "./runner.js";
import { utf8Cases } from "./utf8-cases.js";

const text = (data: Buffer | string): Expect => ({ message: { type: "text", data: Buffer.from(data) } });
const binary = (data: Buffer): Expect => ({ message: { type: "binary", data } });
const pong = (data: Buffer | string = ""): Expect => ({ pong: Buffer.from(data) });
const fill = (n: number, byte: number): Buffer => Buffer.alloc(n, byte);
const stars = (n: number): Buffer => fill(n, 0x2a);
const KAPPA = Buffer.from("κ", "utf8");
const KiB = 1024;
const MiB = 1024 * 1024;

/** echoOf: send one frame and expect its echo. */
function echoOf(f: RawFrame, chop: Chop = "whole"): Step[] {
  const data = Buffer.from(f.payload ?? "");
  return [{ send: [f], chop }, { expect: f.opcode === Op.Text ? text(data) : binary(data) }];
}

/** Family 1: text and binary frames of every length class (7-bit, 16-bit, 64-bit). */
function framing(): Case[] {
  const sizes = [0, 124, 125, 126, 127, 128, 65534, 65535, 65536, 65537];
  const cases: Case[] = [];
  for (const [n, kind] of [[1, "text"], [2, "binary"]] as const) {
    sizes.forEach((size, i) => {
      const payload = kind === "text" ? stars(size) : fill(size, 0xfe);
      const f = kind === "text" ? frame.text(payload) : frame.binary(payload);
      cases.push({ id: `1.${n}.${i + 1}`, family: "1 framing", title: `${kind} message of ${size} bytes`, steps: echoOf(f) });
    });
    const big = kind === "text" ? stars(65536) : fill(65536, 0xfe);
    const f = kind === "text" ? frame.text(big) : frame.binary(big);
    cases.push({ id: `1.${n}.11`, family: "1 framing", title: `${kind} message of 65536 bytes delivered in 997-byte chunks`, steps: echoOf(f, 997) });
    cases.push({ id: `1.${n}.12`, family: "1 framing", title: `${kind} message of 300 bytes delivered 1 byte at a time`, steps: echoOf(kind === "text" ? frame.text(stars(300)) : frame.binary(fill(300, 0xfe)), 1) });
  }
  return cases;
}

/** Family 2: pings and pongs. */
function pings(): Case[] {
  const F = "2 ping/pong";
  const bin = Buffer.from([0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff]);
  const tenPings = Array.from({ length: 10 }, (_, i) => frame.ping(`ping ${i}`));
  const tenPongs: Step[] = tenPings.map((p) => ({ expect: pong(p.payload as string) }));
  return [
    { id: "2.1", family: F, title: "ping without payload", steps: [{ send: [frame.ping()] }, { expect: pong() }] },
    { id: "2.2", family: F, title: "ping with a text payload", steps: [{ send: [frame.ping("Hello, world!")] }, { expect: pong("Hello, world!") }] },
    { id: "2.3", family: F, title: "ping with a binary payload", steps: [{ send: [frame.ping(bin)] }, { expect: pong(bin) }] },
    { id: "2.4", family: F, title: "ping with 125 bytes", steps: [{ send: [frame.ping(fill(125, 0xfe))] }, { expect: pong(fill(125, 0xfe)) }] },
    { id: "2.5", family: F, title: "ping with 126 bytes (too long)", steps: [{ send: [frame.ping(fill(126, 0xfe))] }], end: { fail: 1002 } },
    { id: "2.6", family: F, title: "ping with 125 bytes, 1 byte at a time", steps: [{ send: [frame.ping(fill(125, 0xfe))], chop: 1 }, { expect: pong(fill(125, 0xfe)) }] },
    { id: "2.7", family: F, title: "unsolicited pong without payload (ignored)", steps: [{ send: [frame.pong()] }] },
    { id: "2.8", family: F, title: "unsolicited pong with payload (ignored)", steps: [{ send: [frame.pong("unsolicited pong payload")] }] },
    { id: "2.9", family: F, title: "unsolicited pong, then ping", steps: [{ send: [frame.pong("unsolicited"), frame.ping("ping payload")] }, { expect: pong("ping payload") }] },
    { id: "2.10", family: F, title: "10 pings in one write", steps: [{ send: tenPings }, ...tenPongs] },
    { id: "2.11", family: F, title: "10 pings, 1 byte at a time", steps: [{ send: tenPings, chop: 1 }, ...tenPongs] },
    { id: "2.12", family: F, title: "ping with 127-byte payload in a 16-bit length", steps: [{ send: [frame.ping(fill(127, 1))] }], end: { fail: 1002 } },
  ];
}

/** Family 3: reserved bits without a negotiated extension fail with 1002. */
function reservedBits(): Case[] {
  const F = "3 reserved bits";
  const hello = (): Step[] => echoOf(frame.text("Hello, world!"));
  return [
    { id: "3.1", family: F, title: "RSV1 on a text frame", steps: [{ send: [frame.text("Hello, world!", { rsv: RSV1 })] }], end: { fail: 1002 } },
    { id: "3.2", family: F, title: "text, then text with RSV2", steps: [...hello(), { send: [frame.text("Hello, world!", { rsv: RSV2 })] }], end: { fail: 1002 } },
    {
      id: "3.3",
      family: F,
      title: "text, then text with RSV3 followed by a valid text (not echoed)",
      steps: [...hello(), { send: [frame.text("Hello, world!", { rsv: RSV3 }), frame.text("after")], chop: "frames" }],
      end: { fail: 1002 },
    },
    {
      id: "3.4",
      family: F,
      title: "text, then text with RSV1+RSV2 and a ping, 1 byte at a time",
      steps: [...hello(), { send: [frame.text("Hello, world!", { rsv: RSV1 | RSV2 }), frame.ping()], chop: 1 }],
      end: { fail: 1002 },
    },
    { id: "3.5", family: F, title: "RSV1+RSV3 on a binary frame", steps: [{ send: [frame.binary(fill(8, 0xff), { rsv: RSV1 | RSV3 })] }], end: { fail: 1002 } },
    { id: "3.6", family: F, title: "RSV2+RSV3 on a ping", steps: [{ send: [frame.ping("ping", { rsv: RSV2 | RSV3 })] }], end: { fail: 1002 } },
    { id: "3.7", family: F, title: "all reserved bits on a close", steps: [{ send: [frame.close(1000, "", { rsv: 7 })] }], end: { fail: 1002 } },
    {
      id: "3.8",
      family: F,
      title: "RSV1 on a continuation frame",
      steps: [{ send: [frame.text("frag", { fin: false }), frame.cont("ment", { rsv: RSV1 })] }],
      end: { fail: 1002 },
    },
    { id: "3.9", family: F, title: "RSV2 on an unsolicited pong", steps: [{ send: [frame.pong("", { rsv: RSV2 })] }], end: { fail: 1002 } },
  ];
}

/** Family 4: reserved opcodes 3–7 (data) and 11–15 (control) fail with 1002. */
function opcodes(): Case[] {
  const cases: Case[] = [];
  for (const [group, ops] of [[1, [3, 4, 5, 6, 7]], [2, [11, 12, 13, 14, 15]]] as const) {
    ops.forEach((op, i) => {
      const F = "4 opcodes";
      const id = `4.${group}.${i + 1}`;
      const bad: RawFrame = { opcode: op, payload: i % 2 === 0 ? "" : "reserved opcode payload" };
      const steps: Step[] =
        i < 2
          ? [{ send: [bad] }]
          : [...echoOf(frame.text("Hello, world!")), { send: [bad, frame.ping()], chop: i === 4 ? 1 : "whole" }];
      const how = i === 4 ? ", 1 byte at a time" : "";
      const title = i < 2 ? `reserved opcode ${op}` : `text, then reserved opcode ${op} and a ping (not answered)${how}`;
      cases.push({ id, family: F, title, steps, end: { fail: 1002 } });
    });
  }
  return cases;
}

/** Family 5: fragmentation, interleaved controls, continuation misuse. */
function fragmentation(): Case[] {
  const F = "5 fragmentation";
  const frags = [frame.text("fragment1", { fin: false }), frame.cont("fragment2")];
  const withPing = [frame.text("fragment1", { fin: false }), frame.ping("pongme!"), frame.cont("fragment2")];
  const whole = text("fragment1fragment2");
  const orphanFin = [frame.cont("non-continuation payload"), frame.text("Hello, world!")];
  const orphan = [frame.cont("non-continuation payload", { fin: false }), frame.text("Hello, world!")];
  const cases: Case[] = [
    { id: "5.1", family: F, title: "ping in 2 fragments", steps: [{ send: [frame.ping("fragment1", { fin: false }), frame.cont("fragment2")] }], end: { fail: 1002 } },
    { id: "5.2", family: F, title: "pong in 2 fragments", steps: [{ send: [frame.pong("fragment1", { fin: false }), frame.cont("fragment2")] }], end: { fail: 1002 } },
    { id: "5.3", family: F, title: "text in 2 fragments", steps: [{ send: frags }, { expect: whole }] },
    { id: "5.4", family: F, title: "text in 2 fragments, one write each", steps: [{ send: frags, chop: "frames" }, { expect: whole }] },
    { id: "5.5", family: F, title: "text in 2 fragments, 1 byte at a time", steps: [{ send: frags, chop: 1 }, { expect: whole }] },
    { id: "5.6", family: F, title: "text in 2 fragments with a ping between", steps: [{ send: withPing }, { expect: pong("pongme!") }, { expect: whole }] },
    { id: "5.7", family: F, title: "same, one write per frame", steps: [{ send: withPing, chop: "frames" }, { expect: pong("pongme!") }, { expect: whole }] },
    { id: "5.8", family: F, title: "same, 1 byte at a time", steps: [{ send: withPing, chop: 1 }, { expect: pong("pongme!") }, { expect: whole }] },
  ];
  const chops = [["whole", ""], ["frames", ", one write per frame"], [1, ", 1 byte at a time"]] as const;
  chops.forEach(([chop, how], i) => {
    cases.push({ id: `5.${9 + i}`, family: F, title: `continuation (FIN) with nothing to continue${how}`, steps: [{ send: orphanFin, chop }], end: { fail: 1002 } });
    cases.push({ id: `5.${12 + i}`, family: F, title: `continuation (no FIN) with nothing to continue${how}`, steps: [{ send: orphan, chop }], end: { fail: 1002 } });
  });
  cases.push(
    {
      id: "5.15",
      family: F,
      title: "text in 2 fragments, then a stray continuation and a text, in one write",
      steps: [{ send: [...frags, frame.cont("fragment3", { fin: false }), frame.text("fragment4")] }, { expect: whole, optional: true }],
      end: { fail: 1002 },
    },
    {
      id: "5.16",
      family: F,
      title: "stray continuation (no FIN), text start, continuation: twice",
      steps: [{ send: [frame.cont("fragment1", { fin: false }), frame.text("fragment2", { fin: false }), frame.cont("fragment3")] }],
      end: { fail: 1002 },
    },
    {
      id: "5.17",
      family: F,
      title: "stray continuation (FIN), text start, continuation",
      steps: [{ send: [frame.cont("fragment1"), frame.text("fragment2", { fin: false }), frame.cont("fragment3")] }],
      end: { fail: 1002 },
    },
    {
      id: "5.18",
      family: F,
      title: "a new text frame instead of a continuation",
      steps: [{ send: [frame.text("fragment1", { fin: false }), frame.text("fragment2")] }],
      end: { fail: 1002 },
    },
    { id: "5.19", family: F, title: "text in 5 fragments with pings between, waiting for each pong", steps: fiveFragments("frames") },
    { id: "5.20", family: F, title: "same, 1 byte at a time", steps: fiveFragments(1) },
    {
      id: "5.21",
      family: F,
      title: "binary in 65 one-byte fragments and empty ones",
      steps: [
        { send: [frame.binary(Buffer.alloc(0), { fin: false }), ...Array.from({ length: 64 }, (_, i) => frame.cont(Buffer.from([i]), { fin: false })), frame.cont(Buffer.alloc(0))] },
        { expect: binary(Buffer.from(Array.from({ length: 64 }, (_, i) => i))) },
      ],
    },
    {
      id: "5.22",
      family: F,
      title: "fragmented text with an unsolicited pong and a 125-byte ping between fragments",
      steps: [
        { send: [frame.text("a", { fin: false }), frame.pong("x"), frame.cont("b", { fin: false }), frame.ping(fill(125, 0x61)), frame.cont("c")] },
        { expect: pong(fill(125, 0x61)) },
        { expect: text("abc") },
      ],
    },
    {
      id: "5.23",
      family: F,
      title: "a binary start inside a fragmented text",
      steps: [{ send: [frame.text("a", { fin: false }), frame.binary(Buffer.from("b"))] }],
      end: { fail: 1002 },
    },
    {
      id: "5.24",
      family: F,
      title: "a code point split across fragments with a ping of non-UTF-8 bytes between",
      steps: [
        { send: [frame.text(KAPPA.subarray(0, 1), { fin: false }), frame.ping(Buffer.from([0xff, 0xfe, 0x80])), frame.cont(KAPPA.subarray(1))], chop: "frames" },
        { expect: pong(Buffer.from([0xff, 0xfe, 0x80])) },
        { expect: text(KAPPA) },
      ],
    },
    {
      id: "5.25",
      family: F,
      title: "same with an unsolicited pong of non-UTF-8 bytes, 1 byte at a time",
      steps: [
        { send: [frame.text(KAPPA.subarray(0, 1), { fin: false }), frame.pong(Buffer.from([0xc0, 0xaf])), frame.cont(KAPPA.subarray(1))], chop: 1 },
        { expect: text(KAPPA) },
      ],
    },
  );
  return cases;
}

function fiveFragments(chop: "frames" | 1): Step[] {
  return [
    { send: [frame.text("fragment1", { fin: false }), frame.cont("fragment2", { fin: false }), frame.ping("ping1")], chop },
    { expect: pong("ping1") },
    { send: [frame.cont("fragment3", { fin: false }), frame.cont("fragment4", { fin: false }), frame.ping("ping2")], chop },
    { expect: pong("ping2") },
    { send: [frame.cont("fragment5")], chop },
    { expect: text("fragment1fragment2fragment3fragment4fragment5") },
  ];
}

/** Family 7: close handling, close payloads, close codes. */
function closing(): Case[] {
  const F = "7 close";
  const cases: Case[] = [
    {
      id: "7.1.1",
      family: F,
      title: "text then close in one write: echo, then close",
      steps: [{ send: [frame.text("Hello World!"), frame.close(1000)] }, { expect: text("Hello World!") }],
      end: { peerClose: { code: 1000, alreadySent: true } },
    },
    { id: "7.1.2", family: F, title: "close twice: one answer", steps: [{ send: [frame.close(1000), frame.close(1000)] }], end: { peerClose: { code: 1000, alreadySent: true } } },
    { id: "7.1.3", family: F, title: "close then ping: no pong", steps: [{ send: [frame.close(1000), frame.ping("out of band")] }], end: { peerClose: { code: 1000, alreadySent: true } } },
    { id: "7.1.4", family: F, title: "close then text: no echo", steps: [{ send: [frame.close(1000), frame.text("out of band")] }], end: { peerClose: { code: 1000, alreadySent: true } } },
    {
      id: "7.1.5",
      family: F,
      title: "fragment, close, last fragment: no echo",
      steps: [{ send: [frame.text("fragment1", { fin: false }), frame.close(1000), frame.cont("fragment2")] }],
      end: { peerClose: { code: 1000, alreadySent: true } },
    },
    {
      id: "7.1.6",
      family: F,
      title: "256 KiB text, close, ping back to back (echo optional, no pong)",
      steps: [{ send: [frame.text(stars(256 * KiB)), frame.close(1000), frame.ping("ping")] }, { expect: text(stars(256 * KiB)), optional: true }],
      end: { peerClose: { code: 1000, alreadySent: true } },
    },
    {
      id: "7.1.7",
      family: F,
      title: "close inside a fragmented text cut mid-code-point: close echoed, no 1007",
      steps: [{ send: [frame.text(KAPPA.subarray(0, 1), { fin: false }), frame.close(1000)] }],
      end: { peerClose: { code: 1000, alreadySent: true } },
    },
    { id: "7.3.1", family: F, title: "close without payload", steps: [], end: { peerClose: {} } },
    { id: "7.3.2", family: F, title: "close with a 1-byte payload", steps: [{ send: [{ opcode: Op.Close, payload: Buffer.from([0x03]) }] }], end: { fail: 1002 } },
    { id: "7.3.3", family: F, title: "close with a code and no reason", steps: [], end: { peerClose: { code: 1000 } } },
    { id: "7.3.4", family: F, title: "close with a code and a reason", steps: [], end: { peerClose: { code: 1000, reason: "Hello World!" } } },
    { id: "7.3.5", family: F, title: "close with a 123-byte reason", steps: [], end: { peerClose: { code: 1000, reason: stars(123) } } },
    { id: "7.3.6", family: F, title: "close with a 124-byte reason (payload too long)", steps: [{ send: [frame.close(1000, stars(124))] }], end: { fail: 1002 } },
    { id: "7.3.7", family: F, title: "close with a code and reason, 1 byte at a time", steps: [], end: { peerClose: { code: 1000, reason: "byte by byte", chop: 1 } } },
    {
      id: "7.5.1",
      family: F,
      title: "close reason that is not UTF-8",
      steps: [{ send: [frame.close(1000, Buffer.concat([Buffer.from("κόσμε"), Buffer.from("eda080", "hex"), Buffer.from("edited")]))] }],
      end: { fail: 1007 },
    },
    { id: "7.5.2", family: F, title: "close reason with multi-byte UTF-8", steps: [], end: { peerClose: { code: 1000, reason: "κόσμε 😀" } } },
  ];
  const valid = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999];
  valid.forEach((code, i) => cases.push({ id: `7.7.${i + 1}`, family: F, title: `close with valid code ${code}: echoed`, steps: [], end: { peerClose: { code } } }));
  const invalid = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535];
  invalid.forEach((code, i) =>
    cases.push({ id: `7.9.${i + 1}`, family: F, title: `close with invalid code ${code}`, steps: [{ send: [frame.close(code)] }], end: { fail: 1002 } }),
  );
  return cases;
}

/** Family 9: big messages, fragmented and chopped, with a large read limit. */
function bigMessages(): Case[] {
  const F = "9 big messages";
  const cases: Case[] = [];
  const sizes = [64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB];
  const timeoutMs = 20_000;
  for (const [n, kind] of [[1, "text"], [2, "binary"]] as const) {
    sizes.forEach((size, i) => {
      const f = kind === "text" ? frame.text(stars(size)) : frame.binary(fill(size, 0xfe));
      cases.push({ id: `9.${n}.${i + 1}`, family: F, title: `${kind} message of ${size / KiB} KiB`, steps: echoOf(f), timeoutMs });
    });
  }
  const fragSizes = [64, 256, KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB];
  for (const [n, kind] of [[3, "text"], [4, "binary"]] as const) {
    fragSizes.forEach((fragSize, i) => {
      const data = kind === "text" ? stars(4 * MiB) : fill(4 * MiB, 0xfe);
      const frames: RawFrame[] = [];
      for (let off = 0; off < data.length; off += fragSize) {
        const part = data.subarray(off, off + fragSize);
        const fin = off + fragSize >= data.length;
        frames.push(off === 0 ? (kind === "text" ? frame.text(part, { fin }) : frame.binary(part, { fin })) : frame.cont(part, { fin }));
      }
      const expect = kind === "text" ? text(data) : binary(data);
      cases.push({ id: `9.${n}.${i + 1}`, family: F, title: `4 MiB ${kind} message in fragments of ${fragSize} bytes`, steps: [{ send: frames }, { expect }], timeoutMs });
    });
  }
  for (const [n, kind] of [[5, "text"], [6, "binary"]] as const) {
    [64, 128, 256, 512, 1024, 2048].forEach((chop, i) => {
      const f = kind === "text" ? frame.text(stars(MiB)) : frame.binary(fill(MiB, 0xfe));
      cases.push({ id: `9.${n}.${i + 1}`, family: F, title: `1 MiB ${kind} message delivered in ${chop}-byte chunks`, steps: echoOf(f, chop), timeoutMs });
    });
  }
  for (const [n, kind] of [[7, "text"], [8, "binary"]] as const) {
    const steps: Step[] = [];
    for (let i = 0; i < 1000; i++) {
      const payload = Buffer.from(`message ${String(i).padStart(6, "0")}`);
      steps.push(...echoOf(kind === "text" ? frame.text(payload) : frame.binary(payload)));
    }
    cases.push({ id: `9.${n}.1`, family: F, title: `1000 ${kind} round trips, one at a time`, steps, timeoutMs });
  }
  return cases;
}

/** Family 10: miscellaneous. */
function misc(): Case[] {
  const data = stars(65536);
  const frames: RawFrame[] = [];
  for (let off = 0; off < data.length; off += 1300) {
    const part = data.subarray(off, off + 1300);
    const fin = off + 1300 >= data.length;
    frames.push(off === 0 ? frame.text(part, { fin }) : frame.cont(part, { fin }));
  }
  return [
    { id: "10.1.1", family: "10 misc", title: "64 KiB text in 1300-byte fragments", steps: [{ send: frames }, { expect: text(data) }] },
    {
      id: "10.1.2",
      family: "10 misc",
      title: "64 KiB text in 1300-byte fragments with a ping after each",
      steps: [{ send: frames.flatMap((f, i) => [f, frame.ping(String(i))]) }, ...frames.map((_, i): Step => ({ expect: pong(String(i)) })), { expect: text(data) }],
    },
  ];
}

/** Family L: the default read limit (32768 bytes). */
function readLimit(): Case[] {
  const F = "L read limit";
  const d = (c: Omit<Case, "family" | "limit">): Case => ({ family: F, limit: "default", ...c });
  const half = stars(16384);
  return [
    d({ id: "L.1", title: "text of exactly 32768 bytes", steps: echoOf(frame.text(stars(32768))) }),
    d({ id: "L.2", title: "text of 32769 bytes: 1009 as soon as the header arrives", steps: [{ send: [frame.text(stars(32769), { cut: 0 })] }], end: { fail: 1009 } }),
    d({ id: "L.3", title: "binary of exactly 32768 bytes", steps: echoOf(frame.binary(fill(32768, 1))) }),
    d({ id: "L.4", title: "binary of 32769 bytes", steps: [{ send: [frame.binary(fill(32769, 1))] }], end: { fail: 1009 } }),
    d({ id: "L.5", title: "32768 bytes in 2 fragments", steps: [{ send: [frame.text(half, { fin: false }), frame.cont(half)] }, { expect: text(stars(32768)) }] }),
    d({
      id: "L.6",
      title: "fragments adding up to 32769: 1009 at the second header, before its payload",
      steps: [{ send: [frame.text(half, { fin: false }), frame.cont(stars(16385), { cut: 0 })] }],
      end: { fail: 1009 },
    }),
    d({ id: "L.7", title: "a header declaring 2^40 bytes", steps: [{ send: [{ opcode: Op.Binary, declaredLength: 2n ** 40n }] }], end: { fail: 1009 } }),
    d({ id: "L.8", title: "a header declaring 2^63-1 bytes", steps: [{ send: [{ opcode: Op.Binary, declaredLength: 2n ** 63n - 1n }] }], end: { fail: 1009 } }),
    d({
      id: "L.9",
      title: "3 messages of 20000 bytes: the limit is per message",
      steps: [0, 1, 2].flatMap(() => echoOf(frame.binary(fill(20000, 7)))),
    }),
    d({ id: "L.10", title: "pings do not count toward the limit", steps: [{ send: [frame.text(stars(32768), { fin: false }), frame.ping(fill(125, 1)), frame.cont("")] }, { expect: pong(fill(125, 1)) }, { expect: text(stars(32768)) }] }),
    { id: "L.11", family: F, title: "a 2^63-1 byte header under the large limit still fails (1009)", steps: [{ send: [{ opcode: Op.Binary, declaredLength: 2n ** 63n - 1n }] }], end: { fail: 1009 } },
  ];
}

/** Family P: the core issue's protocol violations, each sent 1 byte at a time. */
function violations(): Case[] {
  const F = "P violations, byte by byte";
  const v = (id: string, title: string, frames: RawFrame[], code: number, roles?: Case["roles"]): Case => ({
    id: `P.${id}`,
    family: F,
    title,
    steps: [{ send: frames, chop: 1 }],
    end: { fail: code },
    ...(roles ? { roles } : {}),
  });
  const badUtf8 = Buffer.from("cebae1bdb9cf83cebcceb5eda080656469746564", "hex");
  return [
    v("1", "RSV1 without extension", [frame.text("x", { rsv: RSV1 })], 1002),
    v("2", "RSV2 without extension", [frame.binary("x", { rsv: RSV2 })], 1002),
    v("3", "RSV3 without extension", [frame.ping("x", { rsv: RSV3 })], 1002),
    v("4", "unknown data opcode 3", [{ opcode: 3, payload: "x" }], 1002),
    v("5", "unknown control opcode 11", [{ opcode: 11, payload: "x" }], 1002),
    v("6", "continuation without a start", [frame.cont("x")], 1002),
    v("7", "a new start inside a fragmented message", [frame.text("a", { fin: false }), frame.text("b")], 1002),
    v("8", "64-bit length with the top bit set", [{ opcode: Op.Binary, declaredLength: 2n ** 63n, lengthBits: 64 }], 1002),
    v("9", "ping payload of 126 bytes", [frame.ping(fill(126, 0))], 1002),
    v("10", "close payload of 126 bytes", [frame.close(1000, stars(124))], 1002),
    v("11", "fragmented ping", [frame.ping("a", { fin: false }), frame.cont("b")], 1002),
    v("12", "unmasked client frame", [frame.text("x", { mask: false })], 1002, ["server"]),
    v("13", "masked server frame", [frame.text("x", { mask: true })], 1002, ["client"]),
    v("14", "invalid UTF-8 text", [frame.text(badUtf8)], 1007),
    v("15", "invalid close code 1004", [frame.close(1004)], 1002),
    v("16", "close reason not UTF-8", [frame.close(1000, Buffer.from([0xc0, 0xaf]))], 1007),
    v("17", "close payload of 1 byte", [{ opcode: Op.Close, payload: Buffer.from([0x03]) }], 1002),
  ];
}

/** Family H: frames that arrive in the same TCP segment as the handshake (accept's / dial's `head`). */
function withHandshake(): Case[] {
  const F = "H frames with the handshake";
  return [
    { id: "H.1", family: F, title: "a text message right behind the handshake", early: [frame.text("early bird")], steps: [{ expect: text("early bird") }] },
    { id: "H.2", family: F, title: "a ping right behind the handshake", early: [frame.ping("early")], steps: [{ expect: pong("early") }] },
    { id: "H.3", family: F, title: "a protocol violation right behind the handshake", early: [frame.text("x", { rsv: RSV2 })], steps: [], end: { fail: 1002 } },
    { id: "H.4", family: F, title: "a close right behind the handshake", early: [frame.close(1001, "bye")], steps: [], end: { peerClose: { code: 1001, reason: "bye", alreadySent: true } } },
  ];
}

/** allCases is the whole table, in family order. */
export function allCases(): Case[] {
  return [
    ...framing(),
    ...pings(),
    ...reservedBits(),
    ...opcodes(),
    ...fragmentation(),
    ...utf8Cases(),
    ...closing(),
    ...bigMessages(),
    ...misc(),
    ...readLimit(),
    ...violations(),
    ...withHandshake(),
  ];
}
