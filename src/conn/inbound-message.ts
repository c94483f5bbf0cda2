/**
 * The payload store of one incoming message: how its bytes are kept between
 * the socket and the application, and what they cost. Pieces large enough to
 * be worth a view are kept as views of the socket's chunks; everything else
 * is copied together into a small owned buffer, so that a message sent as
 * thousands of one-byte fragments costs about what it would as one frame.
 * Every byte kept, with a fixed cost per piece, is counted in `held`.
 */

import type { MessageType } from "../protocol/frame.js";
import { EMPTY_PAYLOAD, maskInto, maskWithWord } from "../protocol/payload.js";

/**
 * What each kept piece costs besides its bytes (a Buffer view and its array
 * slot, about 100 bytes of heap).
 */
export const PIECE_COST = 96;

/**
 * Pieces smaller than this are copied into the message's own buffer rather
 * than kept as views: per-piece overhead stays under 3 % of the payload.
 */
const VIEW_MIN = 4096;

/** The smallest and largest owned buffer a fragmented message is copied into. */
const TAIL_MIN = 256;
const TAIL_MAX = 16 * 1024;

/** Room left in an owned buffer below which it is not worth keeping. */
const TAIL_KEEP_MIN = 64;

/**
 * Socket reads up to this size may be kept whole behind a small message that
 * is one of several in them (pipelined small messages, the common case):
 * the message is then charged the whole read, which bounds what it pins,
 * and no copy is made.
 */
const SMALL_READ = 4096;


/**
 * keepsView tells whether a chunk is kept as a view of the buffer it came in:
 * only when it is at least half of that buffer, so a kept view never pins
 * more than twice the bytes it is charged for.
 */
function keepsView(chunk: Buffer): boolean {
  return chunk.length * 2 >= chunk.buffer.byteLength;
}

/** copyOf copies a chunk into a buffer of its own size. */
function copyOf(chunk: Buffer): Buffer {
  const copy = Buffer.allocUnsafe(chunk.length);
  chunk.copy(copy);
  return copy;
}

/** InboundMessage is a message being received or waiting to be read. */
export class InboundMessage {
  /** Pieces of the payload; those before `taken` were handed out. */
  private readonly pieces: Buffer[] = [];
  private taken = 0;
  /** The owned buffer small pieces are copied into, from its first unsealed byte; `tailFill` bytes are used. */
  private tail: Buffer | undefined;
  private tailFill = 0;
  /** Bytes of memory the message holds for its peer, as charged: payload kept plus PIECE_COST per piece. */
  held = 0;
  /** Payload bytes received so far (also those discarded). */
  size = 0;
  complete = false;
  failed = false;
  /** A read or reader took it: the read limit applies from then on. */
  claimed = false;
  /** Its size once the frame being received has arrived whole, as headers declare it. */
  declared = 0;
  /** A read() has claimed it and buffers it whole, up to the read limit. */
  buffersWhole = false;
  /** A reader() streams it: its consumer frees its bytes as they come. */
  streamed = false;
  /** Its reader stream was destroyed: later bytes are validated, then dropped. */
  discard = false;
  /** The message queued after it. */
  next: InboundMessage | undefined;
  /**
   * The mask key its pieces are still masked with (see ReadSide.keepsMasked),
   * as readMaskWord gives it; 0 once they are plain (or were never masked).
   */
  maskKey = 0;
  /** Bytes taken off its pieces so far: where the next piece is in the mask key's cycle. */
  takenBytes = 0;

  constructor(readonly type: MessageType) {}

  /**
   * append keeps `chunk` as the next bytes of the payload. `last` says the
   * chunk ends the message, so a small message in one chunk is kept as it is
   * (or copied to its own size) instead of being given an owned buffer.
   */
  append(chunk: Buffer, last: boolean): void {
    const length = chunk.length;
    this.size += length;
    if (length === 0) return;
    // The common case first: a whole message in one chunk.
    if (last && this.pieces.length === 0 && this.tail === undefined) return this.keepWhole(chunk);
    if (this.tail !== undefined && this.tail.length - this.tailFill >= length) {
      chunk.copy(this.tail, this.tailFill);
      this.tailFill += length;
      return;
    }
    if (length >= VIEW_MIN && keepsView(chunk)) {
      this.sealTail();
      return this.addPiece(chunk);
    }
    if (length > TAIL_MAX) {
      this.sealTail();
      return this.addPiece(copyOf(chunk));
    }
    this.openTail(length);
    chunk.copy(this.tail!, 0);
    this.tailFill = length;
  }

  /**
   * keepWhole keeps a message that came whole in one chunk: as a view when
   * the chunk is most of its socket read, or when that read is small (the
   * message is then charged the whole read, which bounds what it pins);
   * else as a copy of its own size.
   */
  private keepWhole(chunk: Buffer): void {
    const read = chunk.buffer.byteLength;
    if (keepsView(chunk) || read <= SMALL_READ) {
      this.pieces.push(chunk);
      this.held += read + PIECE_COST;
      return;
    }
    this.addPiece(copyOf(chunk));
  }

  /** hasChunk tells whether bytes are waiting to be taken (sealing the owned buffer's part). */
  hasChunk(): boolean {
    if (this.tailFill > 0) this.sealTail();
    return this.taken < this.pieces.length;
  }

  /** nextChunk takes the next piece, unmasked; call hasChunk first. */
  nextChunk(): Buffer {
    const piece = this.pieces[this.taken]!;
    this.pieces[this.taken++] = EMPTY_PAYLOAD;
    this.held -= piece.length + PIECE_COST;
    if (this.maskKey !== 0) maskWithWord(piece, this.maskKey, this.takenBytes);
    this.takenBytes += piece.length;
    if (this.taken === this.pieces.length) {
      this.reset();
      // All that is left is the owned buffer's room (a piece kept with its small read was charged the read).
      this.held = this.tail === undefined ? 0 : this.tail.length + PIECE_COST;
    }
    return piece;
  }

  /**
   * takeRest takes the bytes not taken yet as one unmasked buffer: a still
   * masked message is unmasked in the same pass that copies it together.
   */
  takeRest(): Buffer {
    if (this.tail === undefined && this.pieces.length === 1 && this.taken === 0) return this.takeOnly();
    if (!this.hasChunk()) return this.drop();
    if (this.pieces.length - this.taken === 1) {
      const piece = this.nextChunk();
      this.drop();
      return piece;
    }
    const rest = Buffer.allocUnsafe(this.size - this.takenBytes);
    let offset = 0;
    for (let i = this.taken; i < this.pieces.length; i++) {
      const piece = this.pieces[i]!;
      maskInto(rest, offset, piece, this.maskKey, this.takenBytes + offset);
      offset += piece.length;
    }
    this.takenBytes = this.size;
    this.drop();
    return rest;
  }

  /** takeOnly takes the message's one piece, unmasked. */
  private takeOnly(): Buffer {
    // pop, not `length = 0`: setting an array's length is a runtime call in V8.
    const piece = this.pieces.pop()!;
    this.held = 0;
    if (this.maskKey !== 0) maskWithWord(piece, this.maskKey, 0);
    this.takenBytes = piece.length;
    return piece;
  }

  /** drop lets go of every byte kept; returns an empty buffer. */
  drop(): Buffer {
    this.reset();
    this.tail = undefined;
    this.tailFill = 0;
    this.held = 0;
    return EMPTY_PAYLOAD;
  }

  private reset(): void {
    this.pieces.length = 0;
    this.taken = 0;
  }

  private addPiece(piece: Buffer): void {
    this.pieces.push(piece);
    this.held += piece.length + PIECE_COST;
  }

  /**
   * openTail starts a new owned buffer for at least `length` bytes: sized
   * after what the message has so far (doubling), from 256 bytes to 16 KiB,
   * so that its unused room stays below the bytes already kept.
   */
  private openTail(length: number): void {
    this.sealTail();
    this.dropTailRoom();
    const capacity = Math.max(length, Math.min(TAIL_MAX, Math.max(TAIL_MIN, this.size)));
    this.tail = Buffer.allocUnsafeSlow(capacity);
    this.held += capacity + PIECE_COST;
  }

  /** sealTail makes the used part of the owned buffer a piece; the rest stays open. */
  private sealTail(): void {
    const tail = this.tail;
    if (tail === undefined || this.tailFill === 0) return;
    this.pieces.push(tail.subarray(0, this.tailFill));
    this.tail = tail.subarray(this.tailFill);
    this.tailFill = 0;
    // The piece is charged its bytes and PIECE_COST; the room left, its own.
    this.held += PIECE_COST;
    if (this.tail.length < TAIL_KEEP_MIN) this.dropTailRoom();
  }

  private dropTailRoom(): void {
    const tail = this.tail;
    if (tail === undefined) return;
    this.held -= tail.length - this.tailFill + PIECE_COST;
    this.tail = undefined;
  }
}
