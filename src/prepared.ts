/**
 * PreparedMessage: a message framed (and, once compression is negotiated,
 * compressed) once and written to many connections, like gorilla's
 * PreparedMessage. Broadcasts pay for framing once instead of once per client.
 */

import { firstHeaderByte, frameHeaderSize, MessageType, writeFrameHeader } from "./frame.js";
import { checkMessageType, toPayload, type MessageData } from "./write.js";

/** How a connection wants its frames: the key of one cached variant. */
export interface FrameVariant {
  /** A cache key naming the variant ("plain", "deflate:15", …). */
  key: string;
  /** Builds the payload and RSV1 bit of this variant. */
  encode(data: Uint8Array): { payload: Uint8Array; rsv1: boolean };
}

/** The variant for connections without compression. */
export const PLAIN_VARIANT: FrameVariant = {
  key: "plain",
  encode: (data) => ({ payload: data, rsv1: false }),
};

/** A prepared frame: the unmasked frame bytes and where its payload starts. */
export interface PreparedFrame {
  /** Header and payload, unmasked: what a server writes as is. */
  frame: Buffer;
  /** The first header byte (FIN, RSV1, opcode), for a client that frames it again, masked. */
  firstByte: number;
  /** The payload alone (compressed when the variant compresses). */
  payload: Uint8Array;
}

/**
 * PreparedMessage holds one data message and its frames for each connection
 * variant (plain, or compressed with given parameters), each computed once,
 * lazily, on the first write that needs it. Send it with
 * `conn.writePrepared(pm)`. The data is copied when the message is made, so
 * later changes to the caller's buffer do not leak into it. Throws a
 * TypeError for a bad type or data.
 */
export class PreparedMessage {
  /** Text or binary. */
  readonly type: MessageType;
  /** The message payload, uncompressed. */
  readonly data: Buffer;
  private readonly variants = new Map<string, PreparedFrame>();
  /** How many frames were built, one per variant used (for tests and metrics). */
  framings = 0;

  constructor(type: MessageType, data: MessageData) {
    checkMessageType(type);
    this.type = type;
    this.data = Buffer.from(toPayload(data));
  }

  /** frameFor returns (building it on first use) the frame of `variant`. */
  frameFor(variant: FrameVariant): PreparedFrame {
    let prepared = this.variants.get(variant.key);
    if (prepared === undefined) {
      prepared = this.build(variant);
      this.variants.set(variant.key, prepared);
    }
    return prepared;
  }

  private build(variant: FrameVariant): PreparedFrame {
    this.framings++;
    const { payload, rsv1 } = variant.encode(this.data);
    const firstByte = firstHeaderByte(true, rsv1, this.type);
    const frame = Buffer.allocUnsafe(frameHeaderSize(payload.length, false) + payload.length);
    const offset = writeFrameHeader(frame, 0, firstByte, payload.length, false);
    frame.set(payload, offset);
    return { frame, firstByte, payload };
  }
}
