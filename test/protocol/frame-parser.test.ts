import t from "tap";
import { ErrorCode, FAILURE_STATUS, type FailureCode } from "../../src/protocol/errors.js";
import { FrameParser, type FrameParserOptions, type FrameSink } from "../../src/protocol/frame.js";
import { chunkers, seededRng } from "../helpers/chunkers.js";

/** What the recording sink saw, in order; payload chunks are joined per frame. */
type Event =
  | { kind: "data"; opcode: number; fin: boolean; rsv1: boolean; length: number; payload: Buffer; ended: boolean | undefined }
  | { kind: "control"; opcode: number; payload: Buffer }
  | { kind: "error"; code: number; errorCode: string };

/** Recorder is a FrameSink that checks the call order as it records. */
class Recorder implements FrameSink {
  readonly events: Event[] = [];
  private current: { chunks: Buffer[]; event: Event & { kind: "data" } } | undefined;
  readonly problems: string[] = [];
  onEvent: ((e: Event) => void) | undefined;
  onEnd: (() => void) | undefined;

  onDataFrame(opcode: number, fin: boolean, rsv1: boolean, length: number): void {
    if (this.current) this.problems.push("onDataFrame before the previous frame ended");
    const event = { kind: "data" as const, opcode, fin, rsv1, length, payload: Buffer.alloc(0), ended: undefined };
    this.current = { chunks: [], event };
    this.events.push(event);
    this.onEvent?.(event);
  }

  onDataPayload(chunk: Buffer): void {
    if (!this.current) return void this.problems.push("payload outside a data frame");
    if (chunk.length === 0) this.problems.push("empty payload chunk");
    this.current.chunks.push(Buffer.from(chunk));
  }

  onDataFrameEnd(fin: boolean): void {
    if (!this.current) return void this.problems.push("frame end outside a data frame");
    this.current.event.payload = Buffer.concat(this.current.chunks);
    this.current.event.ended = fin;
    this.current = undefined;
    this.onEnd?.();
  }

  onControlFrame(opcode: number, payload: Buffer): void {
    if (this.current) this.problems.push("control frame delivered inside a data frame");
    const event = { kind: "control" as const, opcode, payload: Buffer.from(payload) };
    this.events.push(event);
    this.onEvent?.(event);
  }

  fail(errorCode: FailureCode): void {
    // The close code comes from the one table in errors.ts; the cases below say which they expect.
    const event = { kind: "error" as const, code: FAILURE_STATUS[errorCode], errorCode };
    this.events.push(event);
    this.onEvent?.(event);
  }

  /** partial returns the payload received so far for an unfinished frame. */
  get partial(): Buffer | undefined {
    return this.current ? Buffer.concat(this.current.chunks) : undefined;
  }
}

interface FrameSpec {
  fin?: boolean;
  rsv?: number;
  opcode: number;
  payload?: Uint8Array;
  /** A 4-byte key: the frame is masked with it. */
  mask?: Uint8Array;
  /** Write this length in the header instead of the payload's (no payload then follows unless given). */
  claimedLength?: bigint;
  /** Force the 16-bit or 64-bit length form. */
  lengthForm?: 16 | 64;
}

/** encode builds a frame by hand, independently of src/frame.ts. */
function encode(spec: FrameSpec): Buffer {
  const payload = Buffer.from(spec.payload ?? new Uint8Array(0));
  const length = spec.claimedLength ?? BigInt(payload.length);
  const b0 = ((spec.fin ?? true) ? 0x80 : 0) | ((spec.rsv ?? 0) << 4) | spec.opcode;
  const maskBit = spec.mask ? 0x80 : 0;
  let header: Buffer;
  if (spec.lengthForm === 64 || (spec.lengthForm === undefined && length > 65535n)) {
    header = Buffer.alloc(10);
    header[1] = maskBit | 127;
    header.writeBigUInt64BE(length, 2);
  } else if (spec.lengthForm === 16 || length > 125n) {
    header = Buffer.alloc(4);
    header[1] = maskBit | 126;
    header.writeUInt16BE(Number(length), 2);
  } else {
    header = Buffer.alloc(2);
    header[1] = maskBit | Number(length);
  }
  header[0] = b0;
  if (!spec.mask) return Buffer.concat([header, payload]);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i] ^= spec.mask[i & 3]!;
  return Buffer.concat([header, Buffer.from(spec.mask), masked]);
}

/** pattern returns `n` bytes that differ from one frame length to the next. */
function pattern(n: number, salt = 7): Buffer {
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + salt) & 0xff;
  return out;
}

const KEY = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);
const CLIENT: FrameParserOptions = { expectMasked: true, allowRsv1: false };
const SERVER: FrameParserOptions = { expectMasked: false, allowRsv1: false };

/** run feeds `chunks` to a fresh parser and returns the recorder. */
function run(chunks: Buffer[], options: FrameParserOptions): Recorder {
  const rec = new Recorder();
  const parser = new FrameParser(rec, options);
  for (const c of chunks) parser.push(c);
  return rec;
}

const rng = seededRng(t, "frame-parser chunkers");
const CHUNKERS = chunkers(rng);

/** data is the expected record of a whole data frame. */
function data(opcode: number, payload: Buffer, fin = true, rsv1 = false): Event {
  return { kind: "data", opcode, fin, rsv1, length: payload.length, payload, ended: fin };
}

function control(opcode: number, payload: Buffer): Event {
  return { kind: "control", opcode, payload };
}

function error(errorCode: string, code = 1002): Event {
  return { kind: "error", code, errorCode };
}

t.test("data frames of every boundary length, masked and unmasked, at every chunking", async (t) => {
  const lengths = [0, 1, 124, 125, 126, 127, 65535, 65536, 65537];
  for (const length of lengths) {
    for (const masked of [false, true]) {
      const payload = pattern(length, length);
      const bytes = encode({ opcode: 2, payload, mask: masked ? KEY : undefined });
      for (const chunker of CHUNKERS) {
        const rec = run(chunker.split(bytes), masked ? CLIENT : SERVER);
        const name = `${length} bytes, ${masked ? "masked" : "unmasked"}, ${chunker.name}`;
        t.same(rec.problems, [], `${name}: call order`);
        t.equal(rec.events.length, 1, `${name}: one event`);
        const e = rec.events[0]!;
        t.match(e, { kind: "data", opcode: 2, fin: true, rsv1: false, length, ended: true }, `${name}: header`);
        t.ok(e.kind === "data" && e.payload.equals(payload), `${name}: payload`);
      }
    }
  }
});

t.test("non-minimal length encodings are accepted", async (t) => {
  const payload = pattern(5);
  for (const lengthForm of [16, 64] as const) {
    for (const chunker of CHUNKERS) {
      const rec = run(chunker.split(encode({ opcode: 1, payload, lengthForm })), SERVER);
      t.same(rec.events, [data(1, payload)], `${lengthForm}-bit length, ${chunker.name}`);
    }
  }
});

t.test("a header claiming 2^32 bytes reports that length before any payload", async (t) => {
  for (const masked of [false, true]) {
    const header = encode({ opcode: 2, claimedLength: 2n ** 32n, mask: masked ? KEY : undefined });
    for (const chunker of CHUNKERS) {
      const rec = run(chunker.split(header), masked ? CLIENT : SERVER);
      t.same(rec.events.length, 1, chunker.name);
      t.match(rec.events[0], { kind: "data", length: 2 ** 32, ended: undefined }, chunker.name);
    }
  }
  // and the largest safe length
  const rec = run([encode({ opcode: 2, claimedLength: 2n ** 53n - 1n })], SERVER);
  t.match(rec.events, [{ kind: "data", length: Number.MAX_SAFE_INTEGER }]);
});

t.test("a length past 2^53 fails with 1009", async (t) => {
  const rec = run([encode({ opcode: 2, claimedLength: 2n ** 53n })], SERVER);
  t.same(rec.events, [error(ErrorCode.MessageTooBig, 1009)]);
});

t.test("payload bytes arrive as they come, unmasked at the right key phase", async (t) => {
  const payload = pattern(1000);
  const bytes = encode({ opcode: 2, payload, mask: KEY });
  const rec = new Recorder();
  const parser = new FrameParser(rec, CLIENT);
  // header plus 3 bytes, then odd-sized pieces: every key phase is a chunk start
  parser.push(bytes.subarray(0, 8 + 3));
  t.same(rec.partial, payload.subarray(0, 3));
  let at = 11;
  for (const size of [1, 2, 5, 7, 333]) {
    parser.push(Buffer.from(bytes.subarray(at, at + size)));
    at += size;
    t.same(rec.partial, payload.subarray(0, at - 8), `after ${at} bytes`);
  }
  parser.push(Buffer.from(bytes.subarray(at)));
  t.same(rec.events, [data(2, payload)]);
});

t.test("control frames of 0, 1, 124 and 125 bytes", async (t) => {
  for (const opcode of [0x8, 0x9, 0xa]) {
    for (const length of [0, 1, 124, 125]) {
      for (const masked of [false, true]) {
        const payload = pattern(length);
        const bytes = encode({ opcode, payload, mask: masked ? KEY : undefined });
        for (const chunker of CHUNKERS) {
          const rec = run(chunker.split(bytes), masked ? CLIENT : SERVER);
          t.same(rec.events, [control(opcode, payload)], `opcode ${opcode}, ${length} bytes, masked ${masked}, ${chunker.name}`);
        }
      }
    }
  }
});

t.test("a fragmented message with pings between its frames", async (t) => {
  const parts = [pattern(3, 1), pattern(0), pattern(200, 2), pattern(70000, 3)];
  for (const masked of [false, true]) {
    const mask = masked ? KEY : undefined;
    const bytes = Buffer.concat([
      encode({ opcode: 1, fin: false, payload: parts[0], mask }),
      encode({ opcode: 9, payload: Buffer.from("ping-1"), mask }),
      encode({ opcode: 0, fin: false, payload: parts[1], mask }),
      encode({ opcode: 0xa, payload: Buffer.alloc(0), mask }),
      encode({ opcode: 0, fin: false, payload: parts[2], mask }),
      encode({ opcode: 9, payload: pattern(125), mask }),
      encode({ opcode: 0, fin: true, payload: parts[3], mask }),
      encode({ opcode: 2, payload: Buffer.from("next"), mask }),
      encode({ opcode: 8, payload: Buffer.from([0x03, 0xe8]), mask }),
    ]);
    const expected = [
      data(1, parts[0]!, false),
      control(9, Buffer.from("ping-1")),
      data(0, parts[1]!, false),
      control(0xa, Buffer.alloc(0)),
      data(0, parts[2]!, false),
      control(9, pattern(125)),
      data(0, parts[3]!, true),
      data(2, Buffer.from("next")),
      control(8, Buffer.from([0x03, 0xe8])),
    ];
    for (const chunker of CHUNKERS) {
      const rec = run(chunker.split(bytes), masked ? CLIENT : SERVER);
      t.same(rec.problems, [], `${chunker.name}: call order`);
      t.same(rec.events, expected, `masked ${masked}, ${chunker.name}`);
    }
  }
});

t.test("RSV1 is delivered on the first frame of a message when allowed", async (t) => {
  const options = { expectMasked: false, allowRsv1: true };
  const bytes = Buffer.concat([
    encode({ opcode: 1, rsv: 4, fin: false, payload: Buffer.from("ab") }),
    encode({ opcode: 0, fin: true, payload: Buffer.from("cd") }),
    encode({ opcode: 2, rsv: 4, payload: Buffer.from("ef") }),
  ]);
  for (const chunker of CHUNKERS) {
    const rec = run(chunker.split(bytes), options);
    t.same(
      rec.events,
      [data(1, Buffer.from("ab"), false, true), data(0, Buffer.from("cd")), data(2, Buffer.from("ef"), true, true)],
      chunker.name,
    );
  }
});

interface ViolationCase {
  name: string;
  frames: FrameSpec[];
  options?: FrameParserOptions;
  errorCode: string;
  /** Events expected before the error. */
  before?: Event[];
}

const masking = (spec: FrameSpec): FrameSpec => ({ ...spec, mask: KEY });

const VIOLATIONS: ViolationCase[] = [
  ...[3, 4, 5, 6, 7].map((op) => ({ name: `reserved data opcode ${op}`, frames: [{ opcode: op }], errorCode: ErrorCode.InvalidOpcode })),
  ...[11, 12, 13, 14, 15].map((op) => ({ name: `reserved control opcode ${op}`, frames: [{ opcode: op }], errorCode: ErrorCode.InvalidOpcode })),
  { name: "RSV1 without extension", frames: [{ opcode: 1, rsv: 4 }], errorCode: ErrorCode.UnexpectedRsv },
  { name: "RSV2 without extension", frames: [{ opcode: 1, rsv: 2 }], errorCode: ErrorCode.UnexpectedRsv },
  { name: "RSV3 without extension", frames: [{ opcode: 1, rsv: 1 }], errorCode: ErrorCode.UnexpectedRsv },
  { name: "RSV2 even with RSV1 allowed", frames: [{ opcode: 2, rsv: 2 }], options: { expectMasked: false, allowRsv1: true }, errorCode: ErrorCode.UnexpectedRsv },
  { name: "RSV1 on a ping with RSV1 allowed", frames: [{ opcode: 9, rsv: 4 }], options: { expectMasked: false, allowRsv1: true }, errorCode: ErrorCode.UnexpectedRsv },
  {
    name: "RSV1 on a continuation with RSV1 allowed",
    frames: [{ opcode: 1, rsv: 4, fin: false, payload: Buffer.from("x") }, { opcode: 0, rsv: 4, payload: Buffer.from("y") }],
    options: { expectMasked: false, allowRsv1: true },
    errorCode: ErrorCode.UnexpectedRsv,
    before: [data(1, Buffer.from("x"), false, true)],
  },
  { name: "unmasked client frame", frames: [{ opcode: 1, payload: Buffer.from("hi") }], options: CLIENT, errorCode: ErrorCode.ExpectedMask },
  { name: "masked server frame", frames: [masking({ opcode: 1, payload: Buffer.from("hi") })], options: SERVER, errorCode: ErrorCode.UnexpectedMask },
  { name: "fragmented ping", frames: [{ opcode: 9, fin: false }], errorCode: ErrorCode.InvalidControlFrame },
  { name: "fragmented close", frames: [{ opcode: 8, fin: false, payload: Buffer.from([3, 232]) }], errorCode: ErrorCode.InvalidControlFrame },
  { name: "ping of 126 bytes", frames: [{ opcode: 9, payload: pattern(126) }], errorCode: ErrorCode.InvalidControlFrame },
  { name: "close of 65536 bytes", frames: [{ opcode: 8, payload: pattern(65536) }], errorCode: ErrorCode.InvalidControlFrame },
  { name: "continuation without a start", frames: [{ opcode: 0, payload: Buffer.from("x") }], errorCode: ErrorCode.UnexpectedContinuation },
  {
    name: "continuation after a finished message",
    frames: [{ opcode: 1, payload: Buffer.from("a") }, { opcode: 0, payload: Buffer.from("b") }],
    errorCode: ErrorCode.UnexpectedContinuation,
    before: [data(1, Buffer.from("a"))],
  },
  {
    name: "new text message inside a fragmented one",
    frames: [{ opcode: 2, fin: false, payload: Buffer.from("a") }, { opcode: 1, payload: Buffer.from("b") }],
    errorCode: ErrorCode.ExpectedContinuation,
    before: [data(2, Buffer.from("a"), false)],
  },
  {
    name: "new binary message inside a fragmented one, after a ping",
    frames: [{ opcode: 1, fin: false }, { opcode: 9 }, { opcode: 2, fin: false }],
    errorCode: ErrorCode.ExpectedContinuation,
    before: [data(1, Buffer.alloc(0), false), control(9, Buffer.alloc(0))],
  },
  { name: "64-bit length with the top bit set", frames: [{ opcode: 2, claimedLength: 2n ** 63n }], errorCode: ErrorCode.InvalidLength },
  { name: "64-bit length of all ones", frames: [{ opcode: 2, claimedLength: 2n ** 64n - 1n }], errorCode: ErrorCode.InvalidLength },
  {
    name: "masked 64-bit length with the top bit set",
    frames: [masking({ opcode: 2, claimedLength: 2n ** 63n + 5n })],
    options: CLIENT,
    errorCode: ErrorCode.InvalidLength,
  },
];

t.test("every framing violation fails with 1002 and its error code, then nothing more", async (t) => {
  // A well-formed frame after the bad one: it must never be delivered.
  for (const c of VIOLATIONS) {
    const options = c.options ?? SERVER;
    const trailer = encode({ opcode: 1, payload: Buffer.from("after"), mask: options.expectMasked ? KEY : undefined });
    const bytes = Buffer.concat([...c.frames.map(encode), trailer, trailer]);
    for (const chunker of CHUNKERS) {
      const rec = run(chunker.split(bytes), options);
      t.same(rec.events, [...(c.before ?? []), error(c.errorCode)], `${c.name}, ${chunker.name}`);
    }
  }
});

t.test("stop() ends delivery at once", async (t) => {
  const frames = Buffer.concat([
    encode({ opcode: 1, payload: Buffer.from("one") }),
    encode({ opcode: 9, payload: Buffer.from("p") }),
    encode({ opcode: 1, payload: Buffer.from("two") }),
  ]);

  t.test("stop between pushes", async (t) => {
    const rec = new Recorder();
    const parser = new FrameParser(rec, SERVER);
    parser.push(frames.subarray(0, 5));
    parser.stop();
    parser.push(frames.subarray(5));
    t.same(rec.events, [data(1, Buffer.from("one"))]);
  });

  t.test("stop from a sink callback drops the rest of the same chunk", async (t) => {
    for (const stopAt of ["data", "control"] as const) {
      const rec = new Recorder();
      const parser = new FrameParser(rec, SERVER);
      rec.onEvent = (e) => {
        if (e.kind === stopAt) parser.stop();
      };
      parser.push(Buffer.from(frames));
      t.equal(rec.events.length, stopAt === "data" ? 1 : 2, `stopped at ${stopAt}`);
      t.equal(rec.events.at(-1)!.kind, stopAt);
    }
  });

  t.test("stop in the middle of a payload: no frame end", async (t) => {
    const rec = new Recorder();
    const parser = new FrameParser(rec, SERVER);
    const long = encode({ opcode: 2, payload: pattern(300) });
    parser.push(long.subarray(0, 100));
    parser.stop();
    parser.push(long.subarray(100));
    t.match(rec.events, [{ kind: "data", length: 300, ended: undefined }]);
    t.same(rec.partial, pattern(300).subarray(0, 96));
  });

  t.test("stop while a zero-length frame is pending", async (t) => {
    const rec = new Recorder();
    const parser = new FrameParser(rec, SERVER);
    rec.onEvent = () => parser.stop();
    parser.push(encode({ opcode: 2 }));
    t.match(rec.events, [{ kind: "data", length: 0, ended: undefined }]);
  });

  t.test("after a framing error no push delivers anything", async (t) => {
    const rec = new Recorder();
    const parser = new FrameParser(rec, SERVER);
    parser.push(encode({ opcode: 3 }));
    parser.push(encode({ opcode: 1, payload: Buffer.from("late") }));
    parser.push(encode({ opcode: 9 }));
    t.same(rec.events, [error(ErrorCode.InvalidOpcode)]);
  });
});

t.test("random frame sequences survive every chunking", async (t) => {
  const seqRng = seededRng(t, "frame sequences");
  for (let round = 0; round < 200; round++) {
    const masked = seqRng.int(2) === 1;
    const specs: FrameSpec[] = [];
    const expected: Event[] = [];
    let fragmented = false;
    for (let i = 0; i < 1 + seqRng.int(8); i++) {
      const mask = masked ? seqRng.bytes(4) : undefined;
      if (seqRng.int(4) === 0) {
        const payload = seqRng.bytes(seqRng.int(126));
        specs.push({ opcode: 9 + seqRng.int(2), payload, mask });
        expected.push(control(specs.at(-1)!.opcode, payload));
        continue;
      }
      const sizes = [0, 1, 125, 126, 127, 300, 65536];
      const payload = seqRng.bytes(seqRng.int(3) === 0 ? sizes[seqRng.int(sizes.length)]! : seqRng.int(40));
      const fin = seqRng.int(2) === 0;
      const opcode = fragmented ? 0 : 1 + seqRng.int(2);
      specs.push({ opcode, fin, payload, mask });
      expected.push(data(opcode, payload, fin));
      fragmented = !fin;
    }
    const bytes = Buffer.concat(specs.map(encode));
    for (const chunker of CHUNKERS) {
      const rec = run(chunker.split(bytes), masked ? CLIENT : SERVER);
      if (rec.problems.length > 0 || !sameEvents(rec.events, expected)) {
        t.same(rec.events, expected, `round ${round}, ${chunker.name}`);
        return;
      }
    }
  }
  t.pass("200 random sequences parsed identically at every chunking");
});

function sameEvents(a: Event[], b: Event[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((e, i) => {
    const f = b[i]!;
    if (e.kind !== f.kind) return false;
    if (e.kind === "error" || f.kind === "error") return JSON.stringify(e) === JSON.stringify(f);
    if (!e.payload.equals(f.payload) || e.opcode !== f.opcode) return false;
    return e.kind === "control" || (f.kind === "data" && e.fin === f.fin && e.length === f.length && e.ended === f.ended);
  });
}

t.test("empty chunks are harmless", async (t) => {
  const rec = new Recorder();
  const parser = new FrameParser(rec, SERVER);
  const bytes = encode({ opcode: 1, payload: Buffer.from("abc") });
  parser.push(Buffer.alloc(0));
  parser.push(bytes.subarray(0, 1));
  parser.push(Buffer.alloc(0));
  parser.push(bytes.subarray(1));
  parser.push(Buffer.alloc(0));
  t.same(rec.events, [data(1, Buffer.from("abc"))]);
});

t.test("suspend holds every byte after the current frame until resume", async (t) => {
  const bytes = Buffer.concat([
    encode({ opcode: 1, payload: Buffer.from("first") }),
    encode({ opcode: 2, fin: false, payload: Buffer.from("sec") }),
    encode({ opcode: 9, payload: Buffer.from("p") }),
    encode({ opcode: 0, payload: Buffer.from("ond") }),
    encode({ opcode: 0xa }),
    encode({ opcode: 1 }),
    encode({ opcode: 1, payload: Buffer.from("last") }),
  ]);
  const all = [
    data(1, Buffer.from("first")),
    data(2, Buffer.from("sec"), false),
    control(9, Buffer.from("p")),
    data(0, Buffer.from("ond")),
    control(0xa, Buffer.alloc(0)),
    data(1, Buffer.alloc(0)),
    data(1, Buffer.from("last")),
  ];
  for (const chunker of CHUNKERS) {
    const rec = new Recorder();
    const parser = new FrameParser(rec, SERVER);
    // like a sink that finishes each message asynchronously (decompression)
    rec.onEnd = () => parser.suspend();
    for (const c of chunker.split(bytes)) parser.push(c);
    t.same(rec.events, all.slice(0, 1), `${chunker.name}: held after the first frame`);
    parser.resume();
    t.same(rec.events, all.slice(0, 2), `${chunker.name}: one frame per resume`);
    parser.resume();
    t.same(rec.events, all.slice(0, 4), `${chunker.name}: controls flow until the next frame end`);
    parser.resume();
    t.same(rec.events, all.slice(0, 6), `${chunker.name}: a zero-length frame`);
    parser.resume();
    t.same(rec.events, all, `${chunker.name}: everything in order`);
    parser.resume();
    t.same(rec.events, all, `${chunker.name}: nothing more`);
    t.same(rec.problems, []);
  }
});

t.test("bytes pushed while suspended wait; stop drops them", async (t) => {
  const rec = new Recorder();
  const parser = new FrameParser(rec, SERVER);
  parser.suspend();
  parser.push(encode({ opcode: 1, payload: Buffer.from("a") }));
  parser.push(encode({ opcode: 1, payload: Buffer.from("b") }));
  t.same(rec.events, [], "nothing while suspended");
  parser.resume();
  t.same(rec.events, [data(1, Buffer.from("a")), data(1, Buffer.from("b"))]);

  const stopped = new Recorder();
  const p2 = new FrameParser(stopped, SERVER);
  p2.suspend();
  p2.push(encode({ opcode: 1, payload: Buffer.from("never") }));
  p2.stop();
  p2.resume();
  t.same(stopped.events, [], "stop while suspended drops the held bytes");
});
