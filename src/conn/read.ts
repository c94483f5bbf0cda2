/**
 * The consumer side of a connection's reads: read, reader, closeRead and
 * iteration (`for await (const msg of conn)`), served one at a time from the
 * read queue. Control frames never come here; the connection answers them as
 * they arrive.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-6.2
 */

import { Readable } from "node:stream";
import { AbortableLock } from "../internal/waiting.js";
import { CloseError, StatusCode } from "../protocol/close.js";
import { ErrorCode } from "../protocol/errors.js";
import { MessageType } from "../protocol/frame.js";
import { Utf8Validator } from "../protocol/payload.js";
import { InboundMessage } from "./inbound-message.js";
import type { BudgetAccount, InboundBudget } from "./options.js";

/** Message is one data message returned by `Conn.read`. */
export interface Message {
  /** Text or binary. */
  readonly type: MessageType;
  /** The whole payload. For text it is valid UTF-8. */
  readonly data: Buffer;
  /** text decodes the payload as UTF-8. */
  text(): string;
}

/** StreamedMessage is one data message returned by `Conn.reader`. */
export interface StreamedMessage {
  /** Text or binary. */
  readonly type: MessageType;
  /** The payload, delivered as its frames arrive; ends with the message. */
  readonly stream: Readable;
}

class ReceivedMessage implements Message {
  constructor(
    readonly type: MessageType,
    readonly data: Buffer,
  ) {}

  text(): string {
    return this.data.toString("utf8");
  }
}

/** Iteration is how a `for await` loop over a connection ends (see MessageIterator). */
export interface Iteration {
  /** end returns the loop's last result for a read that rejected with `err`, or throws it. */
  end(err: unknown): IteratorResult<Message>;
}

function toResult(value: Message): IteratorResult<Message> {
  return { done: false, value };
}

/** What the read side needs from its connection. */
export interface ReadHost {
  pauseSocket(): void;
  resumeSocket(): void;
  /** fail fails the connection at once: sends `code`, rejects everything pending. */
  fail(code: number, errorCode: ErrorCode, message: string): void;
  /** failInbound fails it for what the peer sent, in wire order (see Conn.failInbound). */
  failInbound(code: number, errorCode: ErrorCode, message: string): void;
}

/** Unread bytes past which the socket is paused. */
export const READ_HIGH_WATER_MARK = 256 * 1024;

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
 * ReadSide owns the incoming message queue of one connection. It is its own
 * read lock, held by a read or reader for one whole message.
 */
export class ReadSide extends AbortableLock implements BudgetAccount {
  readLimit: number;
  /** The process-wide bound this connection's unfinished messages count against, if any. */
  private readonly budget: InboundBudget | undefined;
  /** BudgetAccount: what the message being received has charged to `budget`. */
  budgeted = 0;
  budgetPrev: BudgetAccount | undefined;
  budgetNext: BudgetAccount | undefined;
  /** The frame being received ends its message. */
  private finalFrame = false;
  /** The queue of messages not yet taken, oldest first, linked through `next`: no array per connection. */
  private first: InboundMessage | undefined;
  private last: InboundMessage | undefined;
  private receiving: InboundMessage | undefined;
  /** Made for the first text message: binary-only connections never need it. */
  private utf8Validator: Utf8Validator | undefined;
  private buffered = 0;
  private paused = false;
  private wake: ((this: ReadSide) => void) | undefined;
  /** The settle functions of a read waiting in readWhenNext, and the iteration it reads for. */
  private idleResolve: ((value: unknown) => void) | undefined;
  private idleReject: ((err: unknown) => void) | undefined;
  private idleIteration: Iteration | undefined;
  private error: CloseError | undefined;
  private closeReading = false;

  constructor(
    private readonly host: ReadHost,
    readLimit: number,
    budget?: InboundBudget,
  ) {
    super();
    this.readLimit = readLimit;
    this.budget = budget;
  }

  // ---- fed by the connection, in wire order ----

  /**
   * startMessage opens a new data message. It returns false after failing the
   * connection. Once the connection is closing, messages are parsed and dropped.
   */
  startMessage(type: MessageType): boolean {
    const message = new InboundMessage(type);
    this.receiving = message;
    if (this.error) return true;
    if (this.closeReading) {
      this.host.failInbound(1008, ErrorCode.UnexpectedData, "unexpected data message after closeRead");
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
    this.failTooBig(message.declared, true);
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
    if (this.error) return;
    const message = this.receiving!;
    if (message.type === MessageType.Text && !this.utf8().push(chunk)) {
      return this.host.failInbound(1007, ErrorCode.InvalidUtf8, "text message is not valid UTF-8");
    }
    const size = message.size + chunk.length;
    if (message.claimed && size > this.readLimit) return this.failTooBig(size, true);
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

  /** endMessage completes the message being received. */
  endMessage(): void {
    const message = this.receiving!;
    if (this.error) {
      this.receiving = undefined;
      return;
    }
    // Still `receiving` while failing, so terminate() fails this message and
    // wakes a read waiting for its end.
    if (message.type === MessageType.Text && !this.utf8().end()) {
      return this.host.failInbound(1007, ErrorCode.InvalidUtf8, "text message ends inside a UTF-8 sequence");
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
      this.unqueue(message);
      this.dropMessage(message);
    }
    this.utf8Validator?.reset();
    this.notify();
    // The peer's close frame may sit behind unread data: keep parsing so the
    // close handshake completes. Data frames are dropped from now on, so the
    // queue cannot grow.
    this.resumeIfPaused();
  }

  // ---- consumers ----

  /** read implements Conn.read. */
  read(signal?: AbortSignal): Promise<Message> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (!this.tryAcquire()) return this.readSlowly(signal, false);
    const head = this.first;
    if (head === undefined && signal === undefined && !this.error) return this.readWhenNext(undefined);
    if (head === undefined || !head.complete) return this.readSlowly(signal, true);
    const message = this.takeComplete();
    return message === undefined ? Promise.reject(this.error) : Promise.resolve(message);
  }

  /**
   * next serves MessageIterator.next: a read whose promise settles with the
   * iterator result itself, so a loop waiting for the next message holds one
   * promise, not a read's promise and a second one chained to it.
   */
  next(iteration: Iteration): Promise<IteratorResult<Message>> {
    if (this.tryAcquire()) {
      const head = this.first;
      if (head === undefined && !this.error) return this.readWhenNext(iteration);
      if (head !== undefined && head.complete) {
        const message = this.takeComplete();
        if (message !== undefined) return Promise.resolve(toResult(message));
        const err = this.error;
        return new Promise((resolve) => resolve(iteration.end(err)));
      }
      this.release();
    }
    return this.read().then(toResult, (err: unknown) => iteration.end(err));
  }

  /** shift takes the oldest message off the queue. */
  private shift(): InboundMessage | undefined {
    const head = this.first;
    if (head === undefined) return undefined;
    this.first = head.next;
    head.next = undefined;
    if (this.first === undefined) this.last = undefined;
    return head;
  }

  /** unqueue removes `message` from the queue, if it is there. */
  private unqueue(message: InboundMessage): void {
    let previous: InboundMessage | undefined;
    for (let m = this.first; m !== undefined; previous = m, m = m.next) {
      if (m !== message) continue;
      if (previous === undefined) this.first = m.next;
      else previous.next = m.next;
      if (this.last === m) this.last = previous;
      m.next = undefined;
      return;
    }
  }

  /** takeComplete takes the complete message at the head of the queue and releases the lock; undefined after failing. */
  private takeComplete(): Message | undefined {
    const head = this.shift()!;
    const message = this.claim(head) ? this.takeWhole(head) : undefined;
    this.release();
    return message;
  }

  /**
   * readWhenNext is an idle read's wait, holding the read lock: one promise
   * and one callback until the next message begins or the connection
   * closes, then the general path. Most connections spend their life here.
   */
  private readWhenNext<T>(iteration: Iteration | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.idleResolve = resolve as (value: unknown) => void;
      this.idleReject = reject;
      this.idleIteration = iteration;
      this.wake = continueIdleRead;
    });
  }

  /** resumeIdleRead continues a read that waited in readWhenNext. */
  resumeIdleRead(): void {
    const resolve = this.idleResolve!;
    const reject = this.idleReject!;
    const iteration = this.idleIteration;
    this.idleResolve = this.idleReject = this.idleIteration = undefined;
    const reading = this.readSlowly(undefined, true);
    if (iteration === undefined) {
      reading.then(resolve, reject);
      return;
    }
    reading.then(
      (message) => resolve(toResult(message)),
      (err: unknown) => {
        try {
          resolve(iteration.end(err));
        } catch (thrown) {
          reject(thrown);
        }
      },
    );
  }

  private async readSlowly(signal: AbortSignal | undefined, locked: boolean): Promise<Message> {
    if (!locked) await this.acquire(signal);
    try {
      const message = await this.nextMessage(signal);
      // From now on the read limit bounds its bytes, not the unread mark.
      this.consumed(message.held);
      message.buffersWhole = true;
      while (!message.complete) {
        if (message.failed) throw this.error;
        await this.waitMidMessage(signal);
      }
      return this.takeWhole(message);
    } finally {
      this.release();
    }
  }

  /** reader implements Conn.reader. */
  async reader(signal?: AbortSignal): Promise<StreamedMessage> {
    if (signal?.aborted) throw signal.reason;
    await this.acquire(signal);
    let message: InboundMessage;
    try {
      message = await this.nextMessage(signal);
    } catch (err) {
      this.release();
      throw err;
    }
    // Streamed: its consumer frees its bytes, so they leave the process budget.
    message.streamed = true;
    if (message === this.receiving) this.releaseBudget();
    return { type: message.type, stream: new MessageReadable(this, message, signal) };
  }

  /**
   * closeRead implements Conn.closeRead: from now on a data message, or one
   * already waiting, fails the connection with 1008.
   */
  closeRead(): void {
    this.closeReading = true;
    if (this.first !== undefined) {
      this.host.fail(1008, ErrorCode.UnexpectedData, "unexpected data message after closeRead");
      return;
    }
    this.resumeIfPaused();
  }

  /** nextMessage waits for the next message to begin and takes it off the queue. */
  private async nextMessage(signal: AbortSignal | undefined): Promise<InboundMessage> {
    for (;;) {
      const head = this.shift();
      if (head !== undefined) {
        if (!this.claim(head)) throw this.error;
        return head;
      }
      if (this.error) throw this.error;
      await this.waitEvent(signal);
    }
  }

  /** waitMidMessage waits for more of a begun message; an abort now fails the connection. */
  async waitMidMessage(signal: AbortSignal | undefined): Promise<void> {
    try {
      await this.waitEvent(signal);
    } catch (reason) {
      this.failMidMessage();
      throw reason;
    }
  }

  /** failMidMessage fails the connection after an abort left a message half read. */
  failMidMessage(): void {
    this.host.fail(1011, ErrorCode.AbortedMidMessage, "read aborted in the middle of a message");
  }

  /** waitEvent resolves at the next change of the queue or state, rejects on abort. */
  waitEvent(signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal === undefined) {
        this.wake = resolve;
        return;
      }
      if (signal.aborted) return reject(signal.reason);
      const onAbort = (): void => {
        this.wake = undefined;
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.wake = () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
    });
  }

  /** setWake makes the next change call `fn` (a reader stream's pump). */
  setWake(fn: (() => void) | undefined): void {
    this.wake = fn;
  }

  private notify(): void {
    const wake = this.wake;
    if (wake === undefined) return;
    this.wake = undefined;
    wake.call(this);
  }

  private takeWhole(message: InboundMessage): Message {
    const held = message.held;
    const data = message.takeRest();
    if (!message.buffersWhole) this.consumed(held);
    return new ReceivedMessage(message.type, data);
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
    this.host.failInbound(1013, ErrorCode.BudgetExceeded, "server is out of memory for unfinished messages, try again later");
  }

  get failure(): CloseError | undefined {
    return this.error;
  }

  /** claim applies the read limit to a message a read takes; false after failing. */
  private claim(message: InboundMessage): boolean {
    message.claimed = true;
    this.consumed(MESSAGE_COST);
    // A frame header may already have declared more than the limit: fail now,
    // before its payload arrives.
    const size = Math.max(message.size, message.declared);
    if (size <= this.readLimit) return true;
    this.failTooBig(size, false);
    return false;
  }

  private utf8(): Utf8Validator {
    return (this.utf8Validator ??= new Utf8Validator());
  }

  /** failTooBig fails with 1009: in wire order when arriving bytes broke the limit, at once when a read did. */
  private failTooBig(size: number, arriving: boolean): void {
    const message = `message of at least ${size} bytes exceeds the read limit of ${this.readLimit}`;
    if (arriving) this.host.failInbound(1009, ErrorCode.MessageTooBig, message);
    else this.host.fail(1009, ErrorCode.MessageTooBig, message);
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

/** continueIdleRead is the wake of an idle read: a shared function, no closure per read. */
function continueIdleRead(this: ReadSide): void {
  this.resumeIdleRead();
}

/**
 * MessageReadable streams one message's payload. It holds the read lock until
 * the message ends or the stream is destroyed; destroying it early discards the
 * rest of the message and leaves the connection usable, while an abort of the
 * reader's signal mid-message fails the connection.
 */
class MessageReadable extends Readable {
  private finished = false;
  /** Bytes arrived while the stream still held unread ones: pushed at the next read. */
  private deferred = false;
  private readonly onAbort: (() => void) | undefined;

  constructor(
    private readonly side: ReadSide,
    private readonly message: InboundMessage,
    private readonly signal: AbortSignal | undefined,
  ) {
    super();
    if (signal) {
      this.onAbort = () => this.abortMidMessage();
      signal.addEventListener("abort", this.onAbort, { once: true });
    }
  }

  override _read(): void {
    this.pump();
  }

  override read(size?: number): unknown {
    if (this.deferred) {
      this.deferred = false;
      this.pump();
    }
    return super.read(size);
  }

  /** pump pushes the bytes that have arrived, ends the stream or fails it, or waits for more. */
  private pump(): void {
    const { side, message } = this;
    for (let chunk = side.pull(message); chunk !== undefined; chunk = side.pull(message)) {
      if (!this.push(chunk)) return;
    }
    if (message.complete) {
      this.finish();
      this.push(null);
    } else if (message.failed) {
      this.destroy(side.failure);
    } else {
      side.setWake(this.onArrival);
    }
  }

  /**
   * onArrival is woken by each change of the message. While the stream still
   * holds bytes its consumer has not read, new bytes wait in the message
   * (copied together, counted against the unread mark) until the next read:
   * pushing each fragment at once would keep thousands of tiny chunks, each
   * a hundred bytes of overhead, in the stream's own buffer.
   */
  private readonly onArrival = (): void => {
    if (this.readableLength > 0 && !this.message.failed) {
      this.deferred = true;
      this.side.setWake(this.onArrival);
      return;
    }
    this.pump();
  };

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.finished) {
      this.side.setWake(undefined);
      if (!this.message.complete) this.side.abandon(this.message);
      this.finish();
    }
    callback(err);
  }

  private abortMidMessage(): void {
    if (this.finished) return;
    const receivedWhole = this.message.complete;
    this.destroy(this.signal!.reason);
    if (!receivedWhole) this.side.failMidMessage();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.onAbort) this.signal!.removeEventListener("abort", this.onAbort);
    this.side.release();
  }
}

/** Close codes after which iteration ends quietly instead of throwing. */
const QUIET_CLOSE_CODES = new Set<number>([StatusCode.NormalClosure, StatusCode.GoingAway, StatusCode.NoStatusRcvd]);

/**
 * MessageIterator reads messages for `for await`: a class rather than an
 * async generator, and served by ReadSide.next, so a loop waiting for a
 * message costs one promise, not several promises and closures.
 */
export class MessageIterator implements AsyncIterableIterator<Message>, Iteration {
  private done = false;

  constructor(private readonly reads: ReadSide) {}

  next(): Promise<IteratorResult<Message>> {
    if (this.done) return Promise.resolve(DONE);
    return this.reads.next(this);
  }

  return(): Promise<IteratorResult<Message>> {
    this.done = true;
    return Promise.resolve(DONE);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    return this;
  }

  /** end finishes the iteration after a read rejected: quietly for a normal close, else by throwing. */
  end(err: unknown): IteratorResult<Message> {
    this.done = true;
    if (err instanceof CloseError && QUIET_CLOSE_CODES.has(err.code)) return DONE;
    throw err;
  }
}

const DONE: IteratorResult<Message> = Object.freeze({ done: true, value: undefined });
