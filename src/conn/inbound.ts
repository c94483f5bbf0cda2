/**
 * The inbound path of a connection: the frame parser and its sink. Data
 * frames go to the read side, through the inflater when a message is
 * compressed (https://www.rfc-editor.org/rfc/rfc7692#section-6.2); control
 * frames and failures go back to the connection. The socket stays paused for
 * as long as any reason to hold its bytes remains.
 */

import type { Socket } from "node:net";
import type { InboundBudget } from "./options.js";
import type { DeflateSettings } from "../protocol/handshake.js";
import { MessageInflater } from "./deflate.js";
import { ErrorCode } from "../protocol/errors.js";
import { Opcode, type MessageType } from "../protocol/frame.js";
import { FrameParser, type FrameSink } from "../protocol/frame.js";
import { ReadSide, type ReadHost } from "./read.js";

/** What the inbound path needs from its connection. */
export interface InboundHost {
  /** A ping, pong or close frame arrived. */
  onControlFrame(opcode: number, payload: Buffer): void;
  /**
   * Fail the connection with `code`, in wire order: parsing stops at once,
   * and messages completed before the failure are still handed to the
   * application before the close frame goes out.
   */
  failInbound(code: number, errorCode: ErrorCode, message: string): void;
  /** Fail the connection at once, for something the application did. */
  fail(code: number, errorCode: ErrorCode, message: string): void;
  /** The connection is closing: nobody reads messages any more. */
  readonly closing: boolean;
}

/** Why the socket is paused; it resumes when no reason is left. */
const PAUSE_UNREAD = 1;
const PAUSE_INFLATING = 2;
const PAUSE_INFLATER_FULL = 4;

/** Inbound settings fixed by the handshake. */
export interface InboundOptions {
  /** Server side: every frame must be masked. */
  expectMasked: boolean;
  readLimit: number;
  /** permessage-deflate as negotiated, if it was. */
  deflate: DeflateSettings | undefined;
  /** The process-wide bound on unfinished messages, if any. */
  budget: InboundBudget | undefined;
}

/**
 * Compressed bytes are handed to zlib at most once per socket read and
 * message, copied together when small: a message sent as one-byte fragments
 * would otherwise queue one zlib write, a hundred bytes of overhead, per byte.
 */
const INFLATE_BATCH_MAX = 16 * 1024;

/** Inbound is the parser's sink and the read side's host for one connection. */
export class Inbound implements FrameSink, ReadHost {
  readonly parser: FrameParser;
  readonly reads: ReadSide;
  private readonly inflater: MessageInflater | undefined;
  private compressedMessage = false;
  private pauseReasons = 0;
  /** Compressed payload of this socket read not yet handed to zlib. */
  private inflateBatch: Buffer[] | undefined;
  private inflateBatchSize = 0;

  constructor(
    private readonly socket: Socket,
    private readonly host: InboundHost,
    options: InboundOptions,
  ) {
    const deflate = options.deflate;
    this.parser = new FrameParser(this, { expectMasked: options.expectMasked, allowRsv1: deflate !== undefined });
    this.reads = new ReadSide(this, options.readLimit, options.budget);
    if (deflate !== undefined) {
      this.inflater = new MessageInflater(
        !deflate.receiveNoContextTakeover,
        (chunk) => this.reads.appendPayload(chunk),
        (err) => host.failInbound(1007, ErrorCode.InvalidCompressedData, `invalid compressed data: ${err.message}`),
      );
    }
  }

  /** push parses bytes read from the socket, then hands zlib what they held of a compressed message. */
  push(chunk: Buffer): void {
    this.parser.push(chunk);
    if (this.inflateBatch !== undefined) this.flushInflate();
  }

  // ---- FrameSink ----

  onDataFrame(opcode: number, fin: boolean, rsv1: boolean, length: number): boolean {
    if (opcode !== Opcode.Continuation) {
      if (!this.reads.startMessage(opcode as MessageType)) return false;
      this.compressedMessage = rsv1;
    }
    // Compressed frames are checked as they inflate: their size says nothing.
    if (this.compressedMessage || !this.reads.admitsFrame(length, fin)) return false;
    return this.reads.keepsMasked(fin, length);
  }

  onMaskedPayload(chunk: Buffer, maskKey: number): void {
    this.reads.appendMaskedPayload(chunk, maskKey);
  }

  onDataPayload(chunk: Buffer): void {
    // Once the connection is closing nobody reads messages: don't inflate them.
    if (!this.compressedMessage) this.reads.appendPayload(chunk);
    else if (!this.host.closing) this.inflate(chunk);
  }

  onDataFrameEnd(fin: boolean): void {
    if (!fin) return;
    if (this.compressedMessage && !this.host.closing) this.endInflate();
    else this.reads.endMessage();
  }

  onControlFrame(opcode: number, payload: Buffer): void {
    this.host.onControlFrame(opcode, payload);
  }

  onFramingError(code: number, errorCode: ErrorCode, message: string): void {
    this.host.failInbound(code, errorCode, message);
  }

  // ---- ReadHost ----

  pauseSocket(): void {
    this.pauseFor(PAUSE_UNREAD);
    this.inflater?.pause();
  }

  resumeSocket(): void {
    this.inflater?.resume();
    this.resumeFor(PAUSE_UNREAD);
  }

  fail(code: number, errorCode: ErrorCode, message: string): void {
    this.host.fail(code, errorCode, message);
  }

  failInbound(code: number, errorCode: ErrorCode, message: string): void {
    this.host.failInbound(code, errorCode, message);
  }

  // ---- decompression ----

  /**
   * stopInflating drops decompression that nobody will read: without it, the
   * rest of a bomb already handed to zlib would still be inflated (and
   * thrown away) after the 1009, hundreds of milliseconds of CPU per message.
   */
  stopInflating(): void {
    this.inflateBatch = undefined;
    this.inflateBatchSize = 0;
    this.inflater?.stop();
    this.resumeFor(PAUSE_INFLATER_FULL);
  }

  /** release frees the zlib state once the socket is closed. */
  release(): void {
    this.parser.stop();
    this.inflater?.release();
  }

  private pauseFor(reason: number): void {
    if (this.pauseReasons === 0) this.socket.pause();
    this.pauseReasons |= reason;
  }

  private resumeFor(reason: number): void {
    if ((this.pauseReasons & reason) === 0) return;
    this.pauseReasons &= ~reason;
    if (this.pauseReasons === 0) this.socket.resume();
  }

  private inflate(chunk: Buffer): void {
    (this.inflateBatch ??= []).push(chunk);
    this.inflateBatchSize += chunk.length;
    if (this.inflateBatchSize >= INFLATE_BATCH_MAX) this.flushInflate();
  }

  /** flushInflate hands zlib the compressed bytes batched so far, as one write. */
  private flushInflate(): void {
    const batch = this.inflateBatch!;
    const size = this.inflateBatchSize;
    this.inflateBatch = undefined;
    this.inflateBatchSize = 0;
    if (size === 0) return;
    // One view that is most of its socket chunk goes as it is; anything else
    // is copied, so that zlib's queue never pins socket chunks it barely uses.
    const only = batch[0]!;
    const data = batch.length === 1 && only.length * 2 >= only.buffer.byteLength ? only : Buffer.concat(batch, size);
    if (this.inflater!.write(data)) return;
    // The rest of a socket chunk keeps coming while paused: one drain listener is enough.
    if ((this.pauseReasons & PAUSE_INFLATER_FULL) !== 0) return;
    this.pauseFor(PAUSE_INFLATER_FULL);
    this.inflater!.onDrain(() => this.resumeFor(PAUSE_INFLATER_FULL));
  }

  /** endInflate holds later frames until the message's last bytes are decompressed. */
  private endInflate(): void {
    if (this.inflateBatch !== undefined) this.flushInflate();
    this.parser.suspend();
    this.pauseFor(PAUSE_INFLATING);
    this.inflater!.end(() => {
      this.reads.endMessage();
      this.resumeFor(PAUSE_INFLATING);
      this.parser.resume();
      // The bytes held meanwhile may have begun the next compressed message: hand them over now.
      if (this.inflateBatch !== undefined) this.flushInflate();
    });
  }
}
