/**
 * The consumer side of a connection's reads: read, reader, closeRead and
 * iteration (`for await (const msg of conn)`), served one at a time from the
 * read queue. Control frames never come here; the connection answers them as
 * they arrive.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-6.2
 */

import { Readable } from "node:stream";
import { AbortableLock, bindAbort, noop } from "../internal/waiting.js";
import { CloseError } from "../protocol/close.js";
import { ErrorCode, type FailureHost, StatusCode } from "../protocol/errors.js";
import { MessageType } from "../protocol/frame.js";
import type { InboundMessage } from "./inbound-message.js";
import type { ReadQueue } from "./read-queue.js";

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

/**
 * ReadSide serves the reads of one connection from its read queue. It is its
 * own read lock, held by a read or reader for one whole message. Its host
 * fails the connection at once: what fails here is something the
 * application did (took a message over the read limit, aborted mid-message,
 * called closeRead with a message waiting).
 */
export class ReadSide extends AbortableLock {
  /** The settle functions of a read waiting in readWhenNext, and the iteration it reads for. */
  private idleResolve: ((value: unknown) => void) | undefined;
  private idleReject: ((err: unknown) => void) | undefined;
  private idleIteration: Iteration | undefined;

  constructor(
    readonly queue: ReadQueue,
    private readonly host: FailureHost,
  ) {
    super();
  }

  /** read implements Conn.read. */
  read(signal?: AbortSignal): Promise<Message> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (!this.tryAcquire()) return this.readSlowly(signal, false);
    const head = this.queue.head;
    if (head === undefined && signal === undefined && !this.queue.failure) return this.readWhenNext(undefined);
    if (head === undefined || !head.complete) return this.readSlowly(signal, true);
    const message = this.takeComplete();
    return message === undefined ? Promise.reject(this.queue.failure) : Promise.resolve(message);
  }

  /**
   * next serves MessageIterator.next: a read whose promise settles with the
   * iterator result itself, so a loop waiting for the next message holds one
   * promise, not a read's promise and a second one chained to it.
   */
  next(iteration: Iteration): Promise<IteratorResult<Message>> {
    if (this.tryAcquire()) {
      const head = this.queue.head;
      if (head === undefined && !this.queue.failure) return this.readWhenNext(iteration);
      if (head !== undefined && head.complete) {
        const message = this.takeComplete();
        if (message !== undefined) return Promise.resolve(toResult(message));
        const err = this.queue.failure;
        return new Promise((resolve) => resolve(iteration.end(err)));
      }
      this.release();
    }
    return this.read().then(toResult, (err: unknown) => iteration.end(err));
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
    this.queue.streams(message);
    return { type: message.type, stream: new MessageReadable(this, message, signal) };
  }

  /**
   * closeRead implements Conn.closeRead: from now on a data message, or one
   * already waiting, fails the connection with 1008.
   */
  closeRead(): void {
    if (!this.queue.closeRead()) this.host.fail(ErrorCode.UnexpectedData, "unexpected data message after closeRead");
  }

  /** takeComplete takes the complete message at the head of the queue and releases the lock; undefined after failing. */
  private takeComplete(): Message | undefined {
    const head = this.queue.shift()!;
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
      // The prototype method with `this`: no closure per connection.
      this.queue.setWake(this.resumeIdleRead, this);
    });
  }

  /** resumeIdleRead continues a read that waited in readWhenNext. */
  private resumeIdleRead(): void {
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
      this.queue.buffersWhole(message);
      while (!message.complete) {
        if (message.failed) throw this.queue.failure;
        await this.waitMidMessage(signal);
      }
      return this.takeWhole(message);
    } finally {
      this.release();
    }
  }

  /** nextMessage waits for the next message to begin and takes it off the queue. */
  private async nextMessage(signal: AbortSignal | undefined): Promise<InboundMessage> {
    for (;;) {
      const head = this.queue.shift();
      if (head !== undefined) {
        if (!this.claim(head)) throw this.queue.failure;
        return head;
      }
      if (this.queue.failure) throw this.queue.failure;
      await this.waitEvent(signal);
    }
  }

  /** claim applies the read limit to a message this read took; false after failing the connection with 1009. */
  private claim(message: InboundMessage): boolean {
    const tooBig = this.queue.claim(message);
    if (tooBig === undefined) return true;
    this.host.fail(ErrorCode.MessageTooBig, tooBig);
    return false;
  }

  private takeWhole(message: InboundMessage): Message {
    return new ReceivedMessage(message.type, this.queue.takeWhole(message));
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
    this.host.fail(ErrorCode.AbortedMidMessage, "read aborted in the middle of a message");
  }

  /** waitEvent resolves at the next change of the queue or state, rejects on abort. */
  waitEvent(signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const unbind = bindAbort(signal, () => {
        this.setWake(undefined);
        reject(signal!.reason);
      });
      this.setWake(unbind === noop ? resolve : () => (unbind(), resolve()));
    });
  }

  /** setWake makes the next change of the queue call `fn` (a read's wait, or a reader stream's pump). */
  setWake(fn: (() => void) | undefined): void {
    this.queue.setWake(fn);
  }
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
  /** Stops listening to the signal (see bindAbort). */
  private readonly unbind: () => void;

  constructor(
    private readonly side: ReadSide,
    private readonly message: InboundMessage,
    private readonly signal: AbortSignal | undefined,
  ) {
    super();
    this.unbind = bindAbort(signal, () => this.abortMidMessage());
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
    for (let chunk = side.queue.pull(message); chunk !== undefined; chunk = side.queue.pull(message)) {
      if (!this.push(chunk)) return;
    }
    if (message.complete) {
      this.finish();
      this.push(null);
    } else if (message.failed) {
      this.destroy(side.queue.failure);
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
      if (!this.message.complete) this.side.queue.abandon(this.message);
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
    this.unbind();
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
