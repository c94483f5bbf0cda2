import t from "tap";
import { firstHeaderByte, frameHeaderSize, FrameParser, type FrameSink, isControlOpcode, MAX_CONTROL_PAYLOAD, MAX_HEADER_SIZE, MessageType, Opcode, writeFrameHeader } from "../../src/protocol/frame.js";
import { maskInPlace } from "../../src/protocol/payload.js";
import { chunkers, seededRng } from "../helpers/chunkers.js";

interface Header {
  opcode: number;
  fin: boolean;
  rsv1: boolean;
  length: number;
}

/** parseHeader feeds `bytes` to a parser and returns the data frame header it reports, plus the payload. */
function parse(chunks: Buffer[], expectMasked: boolean): { header?: Header; payload: Buffer; error?: string; ended: boolean } {
  const out: { header?: Header; payload: Buffer; error?: string; ended: boolean } = { payload: Buffer.alloc(0), ended: false };
  const parts: Buffer[] = [];
  const sink: FrameSink = {
    onDataFrame: (opcode, fin, rsv1, length) => void (out.header = { opcode, fin, rsv1, length }),
    onDataPayload: (chunk) => void parts.push(Buffer.from(chunk)),
    onDataFrameEnd: () => {
      out.payload = Buffer.concat(parts);
      out.ended = true;
    },
    onControlFrame: (opcode, payload) => {
      out.header = { opcode, fin: true, rsv1: false, length: payload.length };
      out.payload = Buffer.from(payload);
      out.ended = true;
    },
    fail: (errorCode) => void (out.error = errorCode),
  };
  const parser = new FrameParser(sink, { expectMasked, allowRsv1: true });
  for (const c of chunks) parser.push(c);
  return out;
}

const rng = seededRng(t, "frame chunkers");

t.test("constants and opcodes", async (t) => {
  t.equal(MAX_CONTROL_PAYLOAD, 125);
  t.equal(MAX_HEADER_SIZE, 14);
  t.equal(MessageType.Text, Opcode.Text);
  t.equal(MessageType.Binary, Opcode.Binary);
  t.same(Opcode, { Continuation: 0, Text: 1, Binary: 2, Close: 8, Ping: 9, Pong: 10 });
  for (let op = 0; op < 16; op++) t.equal(isControlOpcode(op), op >= 8, `opcode ${op}`);
});

t.test("firstHeaderByte", async (t) => {
  t.equal(firstHeaderByte(true, false, Opcode.Text), 0x81);
  t.equal(firstHeaderByte(false, false, Opcode.Continuation), 0x00);
  t.equal(firstHeaderByte(true, true, Opcode.Binary), 0xc2);
  t.equal(firstHeaderByte(false, true, Opcode.Text), 0x41);
  t.equal(firstHeaderByte(true, false, Opcode.Close), 0x88);
});

t.test("frameHeaderSize at the length boundaries", async (t) => {
  const cases: Array<[number, number]> = [
    [0, 2], [125, 2], [126, 4], [127, 4], [65535, 4], [65536, 10], [2 ** 32, 10], [Number.MAX_SAFE_INTEGER, 10],
  ];
  for (const [length, size] of cases) {
    t.equal(frameHeaderSize(length, false), size, `${length} unmasked`);
    t.equal(frameHeaderSize(length, true), size + 4, `${length} masked`);
  }
});

t.test("writeFrameHeader round-trips through the parser", async (t) => {
  const lengths = [0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER];
  for (const length of lengths) {
    for (const masked of [false, true]) {
      for (const [fin, rsv1, opcode] of [[true, false, 1], [false, true, 2], [true, true, 1], [false, false, 2]] as const) {
        const target = Buffer.alloc(3 + MAX_HEADER_SIZE, 0xee);
        const end = writeFrameHeader(target, 3, firstHeaderByte(fin, rsv1, opcode), length, masked);
        const name = `${length} bytes, masked ${masked}, fin ${fin}, rsv1 ${rsv1}`;
        t.equal(end - 3, frameHeaderSize(length, masked), `${name}: size`);
        t.same(target.subarray(0, 3), Buffer.alloc(3, 0xee), `${name}: bytes before untouched`);
        t.same(target.subarray(end), Buffer.alloc(target.length - end, 0xee), `${name}: bytes after untouched`);
        const got = parse([target.subarray(3, end)], masked);
        t.same(got.header, { opcode, fin, rsv1, length }, `${name}: parsed header`);
        t.equal(got.error, undefined);
      }
    }
  }
});

t.test("a masked frame built with writeFrameHeader and maskInPlace parses back to its payload", async (t) => {
  for (const length of [0, 1, 31, 32, 125, 126, 1000, 65536]) {
    const payload = rng.bytes(length);
    const header = Buffer.alloc(MAX_HEADER_SIZE);
    const end = writeFrameHeader(header, 0, firstHeaderByte(true, false, Opcode.Binary), length, true);
    const key = header.subarray(end - 4, end);
    const body = Buffer.from(payload);
    maskInPlace(body, key);
    if (length >= 4) t.notSame(body, payload, `${length}: masked on the wire`);
    const frame = Buffer.concat([header.subarray(0, end), body]);
    for (const chunker of chunkers(rng)) {
      const got = parse(chunker.split(frame), true);
      t.ok(got.ended && got.payload.equals(payload), `${length} bytes, ${chunker.name}`);
    }
  }
});

t.test("control frames built with writeFrameHeader", async (t) => {
  for (const opcode of [Opcode.Close, Opcode.Ping, Opcode.Pong]) {
    const payload = Buffer.from("control payload");
    const header = Buffer.alloc(MAX_HEADER_SIZE);
    const end = writeFrameHeader(header, 0, firstHeaderByte(true, false, opcode), payload.length, false);
    const got = parse([Buffer.concat([header.subarray(0, end), payload])], false);
    t.same(got.header, { opcode, fin: true, rsv1: false, length: payload.length });
    t.same(got.payload, payload);
  }
});

t.test("masked headers carry fresh keys", async (t) => {
  const keys = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const header = Buffer.alloc(6);
    t.equal(writeFrameHeader(header, 0, 0x82, 5, true), 6);
    keys.add(header.subarray(2).toString("hex"));
  }
  t.ok(keys.size > 990, `${keys.size} distinct keys out of 1000`);
});
