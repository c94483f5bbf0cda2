/**
 * Opcodes and the pure encoding of frame headers; no I/O.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-5.2
 */

import { nextMaskKey } from "./mask.js";

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
