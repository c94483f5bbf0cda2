/**
 * The read queue of one connection: data messages assembled as their frames
 * arrive, in wire order, validated (UTF-8, read limit), and held with a
 * bounded number of unread bytes until a read takes them. It asks its host to
 * pause the socket past a high-water mark and to resume it as bytes are
 * taken. No promises and no socket: read.ts waits on it, and the tests feed
 * it frames directly.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-6.2
 */

import type { CloseError } from "../protocol/close.js";
import { ErrorCode, type FailureCode, type FailureHost } from "../protocol/errors.js";
import { MessageType } from "../protocol/frame.js";
import { Utf8Validator } from "../protocol/payload.js";
import { InboundMessage } from "./inbound-message.js";
import { type BudgetAccount, type InboundBudget, READ_HIGH_WATER_MARK } from "./options.js";

/**
 * What the read queue needs from the inbound path. `fail` fails the
 * connection for what the peer sent, so in wire order (see Inbound.fail).
 */
export interface ReadQueueHost extends FailureHost {
  pauseSocket(): void;
  resumeSocket(): void;
}


/**
 * Single-frame binary messages from this size on stay masked until they are
 * read: smaller ones mostly arrive in one socket read, with nothing to copy
 * together.
 */
const KEEP_MASKED_MIN = 16 * 1024;

/**
 * What a queued message costs besides its payload (its objects, about 140
 * bytes of heap), counted as unread bytes so that a flood of empty messages
 * nobody reads pauses the socket too, instead of growing the queue forever.
 */
const MESSAGE_COST = 128;

/**
 * ReadQueue holds the messages of one connection that no read has taken,
 * oldest first, and the message being received. Every change calls the wake
 * function set with setWake, once.
 */
export class ReadQueue implements BudgetAccount {
  /** The largest message a read accepts (see claim). */
  readLimit: number;
  /** The process-wide bound this connection's unfinished messages count against, if any. */
  private readonly budget: InboundBudget | undefined;
  /** BudgetAccount: what the message being received has charged to `budget`. */
  budgeted = 0;
  budgetPrev: BudgetAccount | undefined;
  budgetNext: BudgetAccount | undefined;
  /** The frame being received ends its message. */
  private finalFrame = false;
  /** The queue, linked through `next`: no array per connection. */
  private first: InboundMessage | undefined;
  private last: InboundMessage | undefined;
  private receiving: InboundMessage | undefined;
  /** Made for the first text message: binary-only connections never need it. */
  private utf8Validator: Utf8Validator | undefined;
  private buffered = 0;
  private paused = false;
  private wake: ((this: unknown) => void) | undefined;
  private wakeThis: unknown;
  private error: CloseError | undefined;
  /** The queue failed the connection for what arrived; it takes effect on the next turn. */
  private halted = false;
  private closeReading = false;

  constructor(
    private readonly host: ReadQueueHost,
    readLimit: number,
    budget?: InboundBudget,
  ) {
    this.readLimit = readLimit;
    this.budget = budget;
  }

  // ---- fed by the inbound path, in wire order ----

  /**
   * startMessage opens a new data message. It returns false after failing the
   * connection. Once the connection is closing, messages are parsed and dropped.
   */
  startMessage(type: MessageType): boolean {
    const message = new InboundMessage(type);
    this.receiving = message;
    if (this.error) return true;
    if (this.closeReading) {
      this.halt(ErrorCode.UnexpectedData, "unexpected data message after closeRead");
      return false;
    }
    if (this.last === undefined) this.first = message;
    else this.last.next = message;
    this.last = message;
    this.addBuffered(MESSAGE_COST);
    this.notify();
    return true;
  }

  /**
   * admitsFrame tells whether `length` more bytes fit the read limit, failing
   * the connection with 1009 before any of them arrives when they do not.
   * The limit applies to a message once a read takes it, as in nhooyr, so
   * setReadLimit works for messages that arrived before it was called; until
   * then unread bytes are bounded by READ_HIGH_WATER_MARK instead.
   */
  admitsFrame(length: number, fin: boolean): boolean {
    const message = this.receiving!;
    message.declared = message.size + length;
    this.finalFrame = fin;
    if (this.error || !message.claimed || message.declared <= this.readLimit) return true;
    this.halt(ErrorCode.MessageTooBig, this.tooBig(message.declared));
    return false;
  }

  /**
   * keepsMasked decides, as a message's only frame begins, to queue its
   * payload still masked (appendMaskedPayload) and unmask it when it is
   * taken: a message in several socket chunks is then unmasked in the same
   * pass that copies it together, one pass over its bytes less. Only binary
   * messages: text is validated as it arrives.
   */
  keepsMasked(fin: boolean, length: number): boolean {
    const message = this.receiving!;
    return fin && message.type === MessageType.Binary && message.size === 0 && length >= KEEP_MASKED_MIN && !this.error;
  }

  /**
   * appendMaskedPayload queues payload bytes as they arrived, masked with
   * `maskKey` (0: not masked); the message's one frame began with
   * keepsMasked, so the whole message has that key, and each chunk's place
   * in the key's cycle is its offset in the message.
   */
  appendMaskedPayload(chunk: Buffer, maskKey: number): void {
    this.receiving!.maskKey = maskKey;
    this.appendPayload(chunk);
  }

  /** appendPayload adds (decompressed) payload bytes to the message being received. */
  appendPayload(chunk: Buffer): void {
    if (this.error || this.halted) return;
    const message = this.receiving!;
    if (message.type === MessageType.Text && !this.utf8().push(chunk)) {
      return this.halt(ErrorCode.InvalidUtf8, "text message is not valid UTF-8");
    }
    const size = message.size + chunk.length;
    if (message.claimed && size > this.readLimit) return this.halt(ErrorCode.MessageTooBig, this.tooBig(size));
    if (message.discard) {
      message.size = size;
      return;
    }
    const held = message.held;
    // Compressed messages never declare their size: their chunks are never `last`.
    const last = this.finalFrame && size === message.declared;
    message.append(chunk, last);
    this.notify();
    // Last: a charge over the process budget may shed this very connection.
    // The chunk that completes a message is not charged: the message is done
    // before anything else runs.
    this.charge(message, message.held - held, !last);
  }

  /**
   * appendWhole adds the whole payload of the message being received, in
   * one piece (decompressed by one call), and completes the message.
   */
  appendWhole(payload: Buffer): void {
    const message = this.receiving!;
    message.declared = message.size + payload.length;
    this.finalFrame = true;
    this.appendPayload(payload);
    this.endMessage();
  }

  /**
   * allowance is how many more bytes the message being received may have
   * under the read limit: Infinity until a read claims it (the limit applies
   * then, as admitsFrame says).
   */
  get allowance(): number {
    const message = this.receiving!;
    return message.claimed ? this.readLimit - message.size : Infinity;
  }

  /**
   * chargeBudget counts `bytes` held outside the message for it (a zlib
   * stream inflating it) against the process budget until the message ends,
   * is streamed or is dropped; unread-byte accounting is not affected.
   */
  chargeBudget(bytes: number): void {
    const message = this.receiving;
    if (this.budget === undefined || message === undefined || message.streamed || this.error) return;
    this.budget.adjust(this, bytes);
  }

  /** tooLarge fails the connection with 1009 for a message of at least `size` bytes. */
  tooLarge(size: number): void {
    this.halt(ErrorCode.MessageTooBig, this.tooBig(size));
  }

  /** endMessage completes the message being received. */
  endMessage(): void {
    const message = this.receiving!;
    if (this.error) {
      this.receiving = undefined;
      return;
    }
    // Failing (the close comes on the next turn): the message must not complete meanwhile.
    if (this.halted) return;
    // Still `receiving` while failing, so terminate() fails this message and
    // wakes a read waiting for its end.
    if (message.type === MessageType.Text && !this.utf8().end()) {
      return this.halt(ErrorCode.InvalidUtf8, "text message ends inside a UTF-8 sequence");
    }
    this.receiving = undefined;
    message.complete = true;
    this.releaseBudget();
    this.notify();
  }

  /**
   * terminate ends reading with `err`: an incomplete message fails, complete
   * queued messages stay readable, then every read rejects with `err`.
   */
  terminate(err: CloseError): void {
    if (this.error) return;
    this.error = err;
    const message = this.receiving;
    if (message) {
      message.failed = true;
      // A message no read claimed still counts its MESSAGE_COST.
      if (this.unqueue(message) && !message.claimed) this.consumed(MESSAGE_COST);
      this.dropMessage(message);
    }
    this.utf8Validator?.reset();
    this.notify();
    // The peer's close frame may sit behind unread data: keep parsing so the
    // close handshake completes. Data frames are dropped from now on, so the
    // queue cannot grow.
    this.resumeIfPaused();
  }

  // ---- taken by the reads ----

  /** The oldest message not yet taken, complete or not. */
  get head(): InboundMessage | undefined {
    return this.first;
  }

  /** Why reading ended, once it has. */
  get failure(): CloseError | undefined {
    return this.error;
  }

  /** The bytes counted against the high-water mark. */
  get unreadBytes(): number {
    return this.buffered;
  }

  /**
   * setWake makes the next change of the queue or its state call `fn`, once,
   * with `self` as `this`: a method and its object wake an idle read without a
   * closure per connection.
   */
  setWake<T>(fn: ((this: T) => void) | undefined, self?: T): void {
    this.wake = fn as ((this: unknown) => void) | undefined;
    this.wakeThis = self;
  }

  /** shift takes the oldest message off the queue. */
  shift(): InboundMessage | undefined {
    const head = this.first;
    if (head === undefined) return undefined;
    this.first = head.next;
    head.next = undefined;
    if (this.first === undefined) this.last = undefined;
    return head;
  }

  /**
   * claim applies the read limit to a message a read took. It returns the
   * reason to fail the connection with 1009 when the message is over it (a
   * frame header may already have declared more: fail before its payload
   * arrives), else undefined.
   */
  claim(message: InboundMessage): string | undefined {
    message.claimed = true;
    this.consumed(MESSAGE_COST);
    const size = Math.max(message.size, message.declared);
    return size <= this.readLimit ? undefined : this.tooBig(size);
  }

  /**
   * buffersWhole hands a claimed message to a read that assembles it whole:
   * from now on the read limit bounds its bytes, not the unread mark.
   */
  buffersWhole(message: InboundMessage): void {
    this.consumed(message.held);
    message.buffersWhole = true;
  }

  /** streams hands a claimed message to a reader stream: its consumer frees its bytes, so they leave the budget. */
  streams(message: InboundMessage): void {
    message.streamed = true;
    if (message === this.receiving) this.releaseBudget();
  }

  /** takeWhole returns the payload of a complete message, releasing what it held. */
  takeWhole(message: InboundMessage): Buffer {
    const held = message.held;
    const data = message.takeRest();
    if (!message.buffersWhole) this.consumed(held);
    return data;
  }

  /** pull gives a reader stream the next chunk of its message, if one has arrived. */
  pull(message: InboundMessage): Buffer | undefined {
    const held = message.held;
    const chunk = message.hasChunk() ? message.nextChunk() : undefined;
    this.charge(message, message.held - held);
    return chunk;
  }

  /** abandon drops what is left of a message whose reader stream was destroyed. */
  abandon(message: InboundMessage): void {
    this.dropMessage(message);
    message.discard = true;
  }

  /**
   * closeRead makes any later data message fail the connection with 1008
   * (Conn.closeRead). It returns false when a message already waits: the
   * caller fails the connection at once.
   */
  closeRead(): boolean {
    this.closeReading = true;
    if (this.first !== undefined) return false;
    this.resumeIfPaused();
    return true;
  }

  /**
   * @internal
   * shedForBudget (BudgetAccount) drops the unfinished message at once and
   * fails the connection with 1013: the process-wide budget is exhausted.
   */
  shedForBudget(): void {
    const message = this.receiving;
    if (message !== undefined) {
      this.dropMessage(message);
      message.discard = true;
    }
    this.releaseBudget();
    this.host.fail(ErrorCode.BudgetExceeded, "server is out of memory for unfinished messages, try again later");
  }

  // ---- internals ----

  private notify(): void {
    const wake = this.wake;
    if (wake === undefined) return;
    this.wake = undefined;
    wake.call(this.wakeThis);
  }

  /** unqueue removes `message` from the queue, if it is there, and says whether it was. */
  private unqueue(message: InboundMessage): boolean {
    let previous: InboundMessage | undefined;
    for (let m = this.first; m !== undefined; previous = m, m = m.next) {
      if (m !== message) continue;
      if (previous === undefined) this.first = m.next;
      else previous.next = m.next;
      if (this.last === m) this.last = previous;
      m.next = undefined;
      return true;
    }
    return false;
  }

  /** dropMessage lets go of every byte a message holds, in every account it is charged to. */
  private dropMessage(message: InboundMessage): void {
    if (message === this.receiving) this.releaseBudget();
    this.charge(message, -message.held);
    message.drop();
  }

  /**
   * charge records that `message` holds `delta` more bytes (fewer when
   * negative): against the unread mark unless a read() buffers it whole, and
   * against the process budget while it is unfinished and not streamed.
   */
  private charge(message: InboundMessage, delta: number, budgeted = true): void {
    if (delta === 0) return;
    if (!message.buffersWhole) {
      if (delta > 0) this.addBuffered(delta);
      else this.consumed(-delta);
    }
    if (budgeted && this.budget !== undefined && message === this.receiving && !message.streamed) this.budget.adjust(this, delta);
  }

  private releaseBudget(): void {
    if (this.budgeted > 0) this.budget!.adjust(this, -this.budgeted);
  }

  private utf8(): Utf8Validator {
    return (this.utf8Validator ??= new Utf8Validator());
  }

  /** halt fails the connection for what the peer sent, and stops taking its bytes meanwhile. */
  private halt(errorCode: FailureCode, message: string): void {
    this.halted = true;
    this.host.fail(errorCode, message);
  }

  private tooBig(size: number): string {
    return `message of at least ${size} bytes exceeds the read limit of ${this.readLimit}`;
  }

  private addBuffered(n: number): void {
    this.buffered += n;
    if (!this.paused && this.buffered > READ_HIGH_WATER_MARK && !this.closeReading) {
      this.paused = true;
      this.host.pauseSocket();
    }
  }

  private consumed(n: number): void {
    this.buffered -= n;
    if (this.buffered <= READ_HIGH_WATER_MARK / 2) this.resumeIfPaused();
  }

  private resumeIfPaused(): void {
    if (!this.paused) return;
    this.paused = false;
    this.host.resumeSocket();
  }
}
