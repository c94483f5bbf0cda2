/**
 * The read side of a connection: incoming data messages are assembled as the
 * socket delivers their frames, validated (UTF-8, read limit), queued with a
 * bounded amount of unread bytes, and handed to read, reader, closeRead and
 * iteration. Control frames never come here; the connection answers them as
 * they arrive.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-6.2
 */

import { Readable } from "node:stream";
import type { CloseError } from "./close.js";
import { ErrorCode } from "./errors.js";
import { MessageType } from "./frame.js";
import { AbortableLock } from "./internal/lock.js";
import { Utf8Validator } from "./internal/utf8.js";
import { maskInto, maskWithWord } from "./mask.js";

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
  /** fail fails the connection: sends `code`, rejects everything pending. */
  fail(code: number, errorCode: ErrorCode, message: string): void;
}

/** InboundMessage is a message being received or waiting to be read. */
class InboundMessage {
  readonly chunks: Buffer[] = [];
  taken = 0;
  size = 0;
  complete = false;
  failed = false;
  /** A read or reader took it: the read limit applies from then on. */
  claimed = false;
  /** Its size once the frame being received has arrived whole, as headers declare it. */
  declared = 0;
  /** A read() has claimed it and buffers it whole, up to the read limit. */
  buffersWhole = false;
  /** Its reader stream was destroyed: later bytes are validated, then dropped. */
  discard = false;
  /** The message queued after it. */
  next: InboundMessage | undefined;
  /**
   * The mask key its chunks are still masked with (see keepsMasked), as
   * readMaskWord gives it; 0 once they are plain (or were never masked).
   */
  maskKey = 0;
  /** Bytes taken off its chunks so far: where the next chunk is in the mask key's cycle. */
  takenBytes = 0;

  constructor(readonly type: MessageType) {}

  hasChunk(): boolean {
    return this.taken < this.chunks.length;
  }

  /** nextChunk takes the next chunk, unmasked. */
  nextChunk(): Buffer {
    const chunk = this.chunks[this.taken]!;
    this.chunks[this.taken++] = undefined as unknown as Buffer;
    if (this.maskKey !== 0) maskWithWord(chunk, this.maskKey, this.takenBytes);
    this.takenBytes += chunk.length;
    return chunk;
  }

  /**
   * takeRest takes the chunks not taken yet as one unmasked buffer: a still
   * masked message is unmasked in the same pass that copies it together.
   */
  takeRest(): Buffer {
    const { chunks, taken } = this;
    const count = chunks.length - taken;
    if (count === 0) return EMPTY;
    if (count === 1) return this.nextChunk();
    const rest = Buffer.allocUnsafe(this.size - this.takenBytes);
    let offset = 0;
    for (let i = taken; i < chunks.length; i++) {
      const chunk = chunks[i]!;
      maskInto(rest, offset, chunk, this.maskKey, this.takenBytes + offset);
      offset += chunk.length;
    }
    this.taken = chunks.length;
    this.takenBytes = this.size;
    return rest;
  }
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
 * What each queued payload chunk costs besides its bytes (a Buffer view,
 * about 100 bytes of heap): a message sent as one-byte fragments would
 * otherwise hold 100 times READ_HIGH_WATER_MARK before the socket pauses.
 */
const CHUNK_COST = 96;

const EMPTY = Buffer.alloc(0);

/**
 * ReadSide owns the incoming message queue of one connection. It is its own
 * read lock, held by a read or reader for one whole message.
 */
export class ReadSide extends AbortableLock {
  readLimit: number;
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
  ) {
    super();
    this.readLimit = readLimit;
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
      this.host.fail(1008, ErrorCode.UnexpectedData, "unexpected data message after closeRead");
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
  admitsFrame(length: number): boolean {
    const message = this.receiving!;
    message.declared = message.size + length;
    if (this.error || !message.claimed || message.declared <= this.readLimit) return true;
    this.failTooBig(message.declared);
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
      return this.host.fail(1007, ErrorCode.InvalidUtf8, "text message is not valid UTF-8");
    }
    message.size += chunk.length;
    if (message.claimed && message.size > this.readLimit) return this.failTooBig(message.size);
    if (message.discard) return;
    message.chunks.push(chunk);
    if (!message.buffersWhole) this.addBuffered(chunk.length + CHUNK_COST);
    this.notify();
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
      return this.host.fail(1007, ErrorCode.InvalidUtf8, "text message ends inside a UTF-8 sequence");
    }
    this.receiving = undefined;
    message.complete = true;
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
      message.buffersWhole = true;
      this.consumed(this.bytesQueued(message));
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
    const { chunks, taken } = message;
    const count = chunks.length - taken;
    if (!message.buffersWhole) this.consumed(message.size + count * CHUNK_COST);
    return new ReceivedMessage(message.type, message.takeRest());
  }

  private bytesQueued(message: InboundMessage): number {
    let total = 0;
    for (let i = message.taken; i < message.chunks.length; i++) total += message.chunks[i]!.length + CHUNK_COST;
    return total;
  }

  /** takeChunk gives a reader stream the next chunk of its message. */
  takeChunk(message: InboundMessage): Buffer {
    const chunk = message.nextChunk();
    this.consumed(chunk.length + CHUNK_COST);
    return chunk;
  }

  /** abandon drops what is left of a message whose reader stream was destroyed. */
  abandon(message: InboundMessage): void {
    message.discard = true;
    this.consumed(this.bytesQueued(message));
    message.chunks.length = 0;
    message.taken = 0;
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
    this.failTooBig(size);
    return false;
  }

  private utf8(): Utf8Validator {
    return (this.utf8Validator ??= new Utf8Validator());
  }

  private failTooBig(size: number): void {
    this.host.fail(1009, ErrorCode.MessageTooBig, `message of at least ${size} bytes exceeds the read limit of ${this.readLimit}`);
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
    const { side, message } = this;
    while (message.hasChunk()) {
      if (!this.push(side.takeChunk(message))) return;
    }
    if (message.complete) {
      this.finish();
      this.push(null);
    } else if (message.failed) {
      this.destroy(side.failure);
    } else {
      side.setWake(() => this._read());
    }
  }

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
