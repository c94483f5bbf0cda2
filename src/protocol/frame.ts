/**
 * The WebSocket framing layer, no I/O: opcodes, the encoding of frame
 * headers, and a push parser the socket feeds chunks as they arrive, which
 * validates every header rule of RFC 6455 §5 and hands unmasked payload bytes
 * to a sink without copying them.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-5.2
 */

import { ErrorCode, type FailureCode, type FailureHost } from "./errors.js";
import { maskWithWord, nextMaskKey, readMaskWord } from "./payload.js";

/**
 * MessageType is the type of a data message; its values are the opcodes of
 * RFC 6455 §5.6, as in nhooyr's websocket.MessageType.
 */
export enum MessageType {
  /** UTF-8 text. */
  Text = 1,
  /** Arbitrary bytes. */
  Binary = 2,
}

/** Frame opcodes (https://www.rfc-editor.org/rfc/rfc6455#section-11.8). */
export const Opcode = {
  Continuation: 0x0,
  Text: 0x1,
  Binary: 0x2,
  Close: 0x8,
  Ping: 0x9,
  Pong: 0xa,
} as const;

/** isControlOpcode: opcodes with the high bit set are control frames (§5.5). */
export function isControlOpcode(opcode: number): boolean {
  return (opcode & 0x8) !== 0;
}

/** The largest payload of a control frame (§5.5). */
export const MAX_CONTROL_PAYLOAD = 125;

/** The largest header: 2 bytes, 8 of extended length, 4 of mask key. */
export const MAX_HEADER_SIZE = 14;

/** frameHeaderSize returns how many bytes the header of such a frame takes. */
export function frameHeaderSize(payloadLength: number, masked: boolean): number {
  const lengthBytes = payloadLength < 126 ? 0 : payloadLength < 65536 ? 2 : 8;
  return 2 + lengthBytes + (masked ? 4 : 0);
}

/** The first header byte: FIN, RSV1 and the opcode. */
export function firstHeaderByte(fin: boolean, rsv1: boolean, opcode: number): number {
  return (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode;
}

/**
 * writeFrameHeader encodes a header into `target` at `offset` and returns the
 * offset just past it. With `masked`, a fresh random key is written last, where
 * the caller finds it to mask the payload.
 */
export function writeFrameHeader(
  target: Buffer,
  offset: number,
  firstByte: number,
  payloadLength: number,
  masked: boolean,
): number {
  const maskBit = masked ? 0x80 : 0;
  target[offset] = firstByte;
  if (payloadLength < 126) {
    target[offset + 1] = maskBit | payloadLength;
    offset += 2;
  } else if (payloadLength < 65536) {
    target[offset + 1] = maskBit | 126;
    target.writeUInt16BE(payloadLength, offset + 2);
    offset += 4;
  } else {
    target[offset + 1] = maskBit | 127;
    target.writeUInt32BE(Math.floor(payloadLength / 0x100000000), offset + 2);
    target.writeUInt32BE(payloadLength >>> 0, offset + 6);
    offset += 10;
  }
  if (!masked) return offset;
  nextMaskKey(target, offset);
  return offset + 4;
}

/** FrameSink receives what the parser finds, in wire order. */
export interface FrameSink extends FailureHost {
  /**
   * A text, binary or continuation frame begins. Returning true asks for its
   * payload still masked, through onMaskedPayload (a sink that copies the
   * payload anyway unmasks it in the same pass).
   */
  onDataFrame(opcode: number, fin: boolean, rsv1: boolean, length: number): boolean | void;
  /** Unmasked payload bytes of the current data frame; the sink may keep them. */
  onDataPayload(chunk: Buffer): void;
  /**
   * Payload bytes of the current data frame as they arrived, masked with
   * `maskKey` (as readMaskWord gives it; 0 for an unmasked frame) from key
   * byte `phase`; only for a frame whose onDataFrame returned true. The sink
   * must not keep `chunk`.
   */
  onMaskedPayload?(chunk: Buffer, maskKey: number, phase: number): void;
  /** The current data frame ended; `fin` ends the message. */
  onDataFrameEnd(fin: boolean): void;
  /** A whole control frame (close, ping or pong). */
  onControlFrame(opcode: number, payload: Buffer): void;
  /** fail (FailureHost): the stream broke a framing rule; the parser has stopped. */
}

/** FrameParserOptions say which frames are legal on this connection. */
export interface FrameParserOptions {
  /** Server side: every frame must be masked; client side: none may be. */
  expectMasked: boolean;
  /** RSV1 is legal on the first frame of a data message (permessage-deflate). */
  allowRsv1: boolean;
}

const enum State {
  Header,
  Payload,
}

/** FrameParser is a push parser with one method per state. */
export class FrameParser {
  private state = State.Header;
  /** Holds a header cut by a chunk boundary; made the first time one is. */
  private scratch: Buffer | undefined;
  private scratchLength = 0;
  /** The current frame's mask key as readMaskWord gives it: a small integer, not a Buffer. */
  private maskKey = 0;
  private readonly expectMasked: boolean;
  private readonly allowRsv1: boolean;
  private fin = false;
  private opcode = 0;
  private payloadLeft = 0;
  private payloadSeen = 0;
  private control: Buffer | undefined;
  private inFragmentedMessage = false;
  /** The current data frame's payload goes to onMaskedPayload, still masked. */
  private passMasked = false;
  private stopped = false;
  private suspended = false;
  /** Bytes held while suspended; made the first time the parser is. */
  private pending: Buffer[] | undefined;

  constructor(
    private readonly sink: FrameSink,
    options: FrameParserOptions,
  ) {
    // Copied out: the caller's options object need not live as long as the connection.
    this.expectMasked = options.expectMasked;
    this.allowRsv1 = options.allowRsv1;
  }

  /** stop makes the parser ignore everything from now on. */
  stop(): void {
    this.stopped = true;
  }

  /**
   * suspend holds every byte after the current frame until resume, while the
   * sink finishes a message asynchronously (decompression), so that nothing
   * that follows it overtakes it.
   */
  suspend(): void {
    this.suspended = true;
  }

  /** resume parses the bytes held since suspend. */
  resume(): void {
    this.suspended = false;
    const pending = this.pending;
    while (pending !== undefined && pending.length > 0 && !this.suspended && !this.stopped) this.push(pending.shift()!);
  }

  /** push parses a chunk of bytes read from the socket. */
  push(chunk: Buffer): void {
    let pos = 0;
    if (this.suspended) {
      (this.pending ??= []).push(chunk);
      return;
    }
    while (!this.stopped && (pos < chunk.length || this.zeroLengthPending())) {
      pos = this.state === State.Header ? this.readHeader(chunk, pos) : this.readPayload(chunk, pos);
      if (this.suspended && pos < chunk.length) {
        (this.pending ??= []).unshift(chunk.subarray(pos));
        return;
      }
    }
  }

  private zeroLengthPending(): boolean {
    return this.state === State.Payload && this.payloadLeft === 0;
  }

  private readHeader(chunk: Buffer, pos: number): number {
    if (this.scratchLength === 0) {
      const available = chunk.length - pos;
      const size = headerSize(chunk, pos, available);
      if (size !== 0 && available >= size) {
        this.decodeHeader(chunk, pos, size);
        return pos + size;
      }
      chunk.copy((this.scratch ??= Buffer.allocUnsafe(MAX_HEADER_SIZE)), 0, pos);
      this.scratchLength = available;
      return chunk.length;
    }
    return this.readSplitHeader(chunk, pos);
  }

  /** readSplitHeader completes a header that began in an earlier chunk. */
  private readSplitHeader(chunk: Buffer, pos: number): number {
    const had = this.scratchLength;
    const scratch = this.scratch!;
    const take = Math.min(MAX_HEADER_SIZE - had, chunk.length - pos);
    chunk.copy(scratch, had, pos, pos + take);
    const available = had + take;
    const size = headerSize(scratch, 0, available);
    if (size === 0 || available < size) {
      this.scratchLength = available;
      return pos + take;
    }
    this.scratchLength = 0;
    this.decodeHeader(scratch, 0, size);
    return pos + size - had;
  }

  private decodeHeader(buf: Buffer, pos: number, size: number): void {
    const b0 = buf[pos]!;
    const b1 = buf[pos + 1]!;
    this.fin = (b0 & 0x80) !== 0;
    this.opcode = b0 & 0x0f;
    const masked = (b1 & 0x80) !== 0;
    const rsv1 = (b0 & 0x40) !== 0;
    if ((b0 & 0x30) !== 0 || (rsv1 && !this.allowRsv1)) {
      return this.fail(ErrorCode.UnexpectedRsv, "reserved bits set without a negotiated extension");
    }
    // From here on every frame's masking is what expectMasked says.
    if (masked !== this.expectMasked) {
      return masked
        ? this.fail(ErrorCode.UnexpectedMask, "server frames must not be masked")
        : this.fail(ErrorCode.ExpectedMask, "client frames must be masked");
    }
    const length = this.decodeLength(buf, pos, b1 & 0x7f);
    if (length < 0) return;
    if (masked) this.maskKey = readMaskWord(buf, pos + size - 4);
    this.payloadLeft = length;
    this.payloadSeen = 0;
    this.state = State.Payload;
    if (this.opcode & 0x8) this.beginControlFrame(rsv1, length);
    else this.beginDataFrame(rsv1, length);
  }

  /** decodeLength returns the payload length, or -1 after failing. */
  private decodeLength(buf: Buffer, pos: number, length7: number): number {
    if (length7 < 126) return length7;
    if (length7 === 126) return buf.readUInt16BE(pos + 2);
    const high = buf.readUInt32BE(pos + 2);
    if (high & 0x80000000) {
      this.fail(ErrorCode.InvalidLength, "64-bit payload length has its most significant bit set");
      return -1;
    }
    const length = high * 0x100000000 + buf.readUInt32BE(pos + 6);
    if (length > Number.MAX_SAFE_INTEGER) {
      this.fail(ErrorCode.MessageTooBig, `frame of ${length} bytes is too big`);
      return -1;
    }
    return length;
  }

  private beginControlFrame(rsv1: boolean, length: number): void {
    const op = this.opcode;
    if (op !== Opcode.Close && op !== Opcode.Ping && op !== Opcode.Pong) {
      return this.fail(ErrorCode.InvalidOpcode, `reserved control opcode ${op}`);
    }
    if (!this.fin) return this.fail(ErrorCode.InvalidControlFrame, "control frames must not be fragmented");
    if (length > MAX_CONTROL_PAYLOAD) {
      return this.fail(ErrorCode.InvalidControlFrame, `control frame payload of ${length} bytes exceeds 125`);
    }
    if (rsv1) return this.fail(ErrorCode.UnexpectedRsv, "RSV1 set on a control frame");
    this.control = Buffer.allocUnsafe(length);
    this.passMasked = false;
  }

  private beginDataFrame(rsv1: boolean, length: number): void {
    const op = this.opcode;
    if (op === Opcode.Continuation) {
      if (!this.inFragmentedMessage) return this.fail(ErrorCode.UnexpectedContinuation, "continuation frame without a message to continue");
      if (rsv1) return this.fail(ErrorCode.UnexpectedRsv, "RSV1 set on a continuation frame");
    } else if (op === Opcode.Text || op === Opcode.Binary) {
      if (this.inFragmentedMessage) return this.fail(ErrorCode.ExpectedContinuation, "new message started before the fragmented one ended");
    } else {
      return this.fail(ErrorCode.InvalidOpcode, `reserved data opcode ${op}`);
    }
    this.inFragmentedMessage = !this.fin;
    this.control = undefined;
    this.passMasked = this.sink.onDataFrame(op, this.fin, rsv1, length) === true;
  }

  private readPayload(chunk: Buffer, pos: number): number {
    const n = Math.min(this.payloadLeft, chunk.length - pos);
    if (n > 0) {
      const data = chunk.subarray(pos, pos + n);
      if (this.passMasked) {
        this.sink.onMaskedPayload!(data, this.expectMasked ? this.maskKey : 0, this.payloadSeen);
      } else {
        if (this.expectMasked) maskWithWord(data, this.maskKey, this.payloadSeen);
        if (this.control) data.copy(this.control, this.payloadSeen);
        else this.sink.onDataPayload(data);
      }
      this.payloadSeen += n;
      this.payloadLeft -= n;
    }
    if (this.payloadLeft === 0 && !this.stopped) this.endFrame();
    return pos + n;
  }

  private endFrame(): void {
    this.state = State.Header;
    const control = this.control;
    if (control) {
      this.control = undefined;
      this.sink.onControlFrame(this.opcode, control);
    } else {
      this.sink.onDataFrameEnd(this.fin);
    }
  }

  /** fail stops the parser and reports the broken rule: 1002, or 1009 for a length past 2^53. */
  private fail(errorCode: FailureCode, message: string): void {
    this.stopped = true;
    this.sink.fail(errorCode, message);
  }
}

/** headerSize returns the size of the header at `pos`, or 0 when fewer than 2 bytes are there. */
function headerSize(buf: Buffer, pos: number, available: number): number {
  if (available < 2) return 0;
  const b1 = buf[pos + 1]!;
  const length7 = b1 & 0x7f;
  return 2 + (length7 === 126 ? 2 : length7 === 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0);
}
