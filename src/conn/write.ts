/**
 * The write side of a connection: one message at a time on the wire (control
 * frames may pass between the frames of a streamed message), a single
 * function, writeFrame, through which every frame leaves, and
 * PreparedMessage, a message framed (and compressed) once for many
 * connections, like gorilla's PreparedMessage.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-5.4
 */

import type { Socket } from "node:net";
import { Writable } from "node:stream";
import { AbortableLock, bindAbort, noop } from "../internal/waiting.js";
import type { CloseError } from "../protocol/close.js";
import { codedError, ErrorCode, type FailureHost } from "../protocol/errors.js";
import { firstHeaderByte, frameHeaderSize, MessageType, Opcode, writeFrameHeader } from "../protocol/frame.js";
import { EMPTY_PAYLOAD, maskInto, readMaskWord } from "../protocol/payload.js";
import type { DeflateTuning, FrameVariant, MessageDeflater } from "./deflate.js";
import { DEFAULT_WRITE_QUEUE_LIMIT } from "./options.js";

/** Data accepted by write: bytes, or a string sent as its UTF-8 encoding. */
export type MessageData = Buffer | Uint8Array | string;

/**
 * Payloads up to this size are copied behind their header into one buffer;
 * larger ones go out as two corked writes, without a copy.
 */
const COALESCE_LIMIT = 16 * 1024;


const RESOLVED = Promise.resolve();
/** The RSV1 bit of the first header byte: a compressed message (RFC 7692 §6). */
const RSV1 = 0x40;

/** toPayload turns message data into bytes without copying bytes it is given. */
export function toPayload(data: MessageData): Uint8Array {
  if (typeof data === "string") return Buffer.from(data, "utf8");
  if (data instanceof Uint8Array) return data;
  throw new TypeError("message data must be a Buffer, a Uint8Array or a string");
}

/** checkMessageType throws a TypeError for anything but Text or Binary. */
export function checkMessageType(type: MessageType): void {
  if (type !== MessageType.Text && type !== MessageType.Binary) {
    throw new TypeError(`message type must be MessageType.Text or MessageType.Binary, not ${String(type)}`);
  }
}

/**
 * WriteOptions are the per-message options of `write`, `writePrepared` and
 * Hub broadcasts.
 */
export interface WriteOptions {
  /** Rejects the write when aborted before any byte of the message went out (see `write`). */
  signal?: AbortSignal | undefined;
  /**
   * compress: false sends this message uncompressed (data already
   * compressed, say) when permessage-deflate was negotiated; true (the
   * default) leaves the choice to the connection's threshold and
   * enableWriteCompression.
   */
  compress?: boolean | undefined;
}

/**
 * writeOptions splits the last argument of a write: a signal (the older
 * form) or WriteOptions. A signal is told by its shape, not by instanceof, so
 * that one from another realm or a polyfill still counts as one.
 */
export function writeOptions(options: AbortSignal | WriteOptions | undefined): WriteOptions {
  if (options === undefined) return NO_OPTIONS;
  if (typeof options !== "object" || options === null) throw new TypeError("write options must be an AbortSignal or an object");
  if (isAbortSignal(options)) return { signal: options };
  return options;
}

function isAbortSignal(value: object): value is AbortSignal {
  const candidate = value as Partial<AbortSignal>;
  return typeof candidate.aborted === "boolean" && typeof candidate.addEventListener === "function";
}

const NO_OPTIONS: WriteOptions = Object.freeze({});

/** Compression of outgoing messages, when permessage-deflate was negotiated. */
export interface WriteCompression {
  deflater: MessageDeflater;
  /** Messages shorter than this go out uncompressed. */
  threshold: number;
  /** Off after enableWriteCompression(false). */
  enabled: boolean;
  /** The compressor's parameters: window (RFC 7692 §7.1.2), memLevel, level. */
  tuning: DeflateTuning;
  /** The PreparedMessage variant for these parameters, made on first use. */
  variant: FrameVariant | undefined;
}

/** A write waiting for the socket to drain. */
interface DrainWaiter {
  resolve(): void;
  reject(err: unknown): void;
}

/** A send step: true/false as socket.write returns, or a promise of it. */
type Send = () => boolean | Promise<boolean>;

/**
 * WriteSide owns the outgoing frames of one connection. It is its own write
 * lock, held by a write or writer for one whole message.
 */
export class WriteSide extends AbortableLock {
  /** Set when permessage-deflate was negotiated. */
  compression: WriteCompression | undefined;
  /** The most bytes of messages that may wait for the write lock. */
  writeQueueLimit = DEFAULT_WRITE_QUEUE_LIMIT;
  private queued = 0;
  private error: CloseError | undefined;
  /** Writes waiting for the socket to drain; made when the first one waits. */
  private drainWaiters: DrainWaiter[] | undefined;
  /** The socket is corked by writeBatched until the next tick. */
  private batching = false;
  /** A compressed message being compressed: written as soon as zlib is done. */
  private compressing: Promise<unknown> | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly masked: boolean,
    readonly host: FailureHost,
  ) {
    super();
  }

  /**
   * writeFrame is the one place a frame leaves: header and payload in one
   * buffer or one corked write, masked with a fresh key on the client side.
   * Frames written in the same tick leave together (see writeBatched). It
   * returns false when the socket's buffer is full.
   */
  writeFrame(firstByte: number, payload: Uint8Array): boolean {
    const length = payload.length;
    const headerSize = frameHeaderSize(length, this.masked);
    if (this.masked || length <= COALESCE_LIMIT) {
      const frame = Buffer.allocUnsafe(headerSize + length);
      const offset = writeFrameHeader(frame, 0, firstByte, length, this.masked);
      // A client copies and masks in one pass: the caller's bytes stay as they were.
      if (this.masked) maskInto(frame, offset, payload, readMaskWord(frame, offset - 4));
      else frame.set(payload, offset);
      return this.writeBatched(frame);
    }
    const header = Buffer.allocUnsafe(headerSize);
    writeFrameHeader(header, 0, firstByte, length, false);
    this.socket.cork();
    this.socket.write(header);
    const ok = this.socket.write(payload);
    this.socket.uncork();
    return ok;
  }

  /** writeControl sends a control frame at once, between message frames if need be. */
  writeControl(opcode: number, payload: Uint8Array): boolean {
    return this.writeFrame(firstHeaderByte(true, false, opcode), payload);
  }

  /** write implements Conn.write. */
  write(type: MessageType, data: MessageData, options?: AbortSignal | WriteOptions): Promise<void> {
    let payload: Uint8Array;
    let signal: AbortSignal | undefined;
    let compress: boolean | undefined;
    try {
      checkMessageType(type);
      payload = toPayload(data);
      ({ signal, compress } = writeOptions(options));
    } catch (err) {
      return Promise.reject(err);
    }
    const compression = this.compression;
    if (compression === undefined || !compression.enabled || compress === false || payload.length < compression.threshold) {
      return this.submit(() => this.writeFrame(firstHeaderByte(true, false, type), payload), signal, payload.length);
    }
    const send = (): boolean | Promise<boolean> => {
      let compressed: Buffer | Promise<Buffer>;
      try {
        compressed = compression.deflater.compressMessage(payload);
      } catch (err) {
        return Promise.reject(err as Error);
      }
      // Small messages are compressed at once, on this thread: written like plain ones.
      if (!(compressed instanceof Promise)) return this.writeFrame(firstHeaderByte(true, true, type), compressed);
      return compressed.then(
        (out) => {
          // Nothing follows a close frame (RFC 6455 §5.5.1).
          if (this.error) throw this.error;
          return this.writeFrame(firstHeaderByte(true, true, type), out);
        },
        // Closed meanwhile: the close is the reason, not the compressor that was stopped.
        (err: unknown) => {
          throw this.error ?? err;
        },
      );
    };
    return this.submit(send, signal, payload.length);
  }

  /**
   * writePrepared implements Conn.writePrepared: a server writes the shared
   * frame bytes as they are; a client frames the payload again, masked.
   */
  writePrepared(prepared: PreparedFrame, signal?: AbortSignal): Promise<void> {
    const write = this.masked
      ? () => this.writeFrame(prepared.firstByte, prepared.payload)
      : () => this.writeBatched(prepared.frame);
    // A compressed prepared frame is its own deflate stream, and the peer's
    // window now holds its bytes: with context takeover ours must too.
    const compressed = (prepared.firstByte & RSV1) !== 0;
    const send = compressed ? () => (this.compression?.deflater.remember(prepared.data), write()) : write;
    return this.submit(send, signal, prepared.frame.length);
  }

  /**
   * writeBatched writes a whole frame, batching small ones: the socket stays
   * corked until the end of the tick, so a burst of messages (an echo loop
   * answering the frames of one socket read, a hub draining its queue)
   * leaves in one writev instead of one syscall per message. The batch is flushed before it would reach the socket's
   * high-water mark, and a frame that large is written uncorked, so batching
   * never makes a write report backpressure the kernel would not.
   */
  private writeBatched(frame: Buffer): boolean {
    const socket = this.socket;
    const limit = socket.writableHighWaterMark;
    if (frame.length >= limit) {
      if (!this.batching) return socket.write(frame);
      socket.uncork();
      const ok = socket.write(frame);
      socket.cork();
      return ok;
    }
    if (!this.batching) {
      this.batching = true;
      socket.cork();
      process.nextTick(() => {
        this.batching = false;
        socket.uncork();
      });
    } else if (socket.writableLength + frame.length >= limit) {
      socket.uncork(); // flush the batch, then start another
      socket.cork();
    }
    return socket.write(frame);
  }

  /**
   * submit runs `send` (which writes one whole message of `size` bytes) under
   * the write lock. Messages that must wait for the lock count against
   * writeQueueLimit; past it the write rejects with WS_ERR_WRITE_QUEUE_FULL
   * and the connection stays usable. One waiting message is always allowed.
   */
  private submit(send: Send, signal: AbortSignal | undefined, size: number): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.error) return Promise.reject(this.error);
    if (this.tryAcquire()) return this.sendLocked(send, signal);
    if (this.queued > 0 && this.queued + size > this.writeQueueLimit) {
      return Promise.reject(
        codedError(ErrorCode.WriteQueueFull, `failed to write: ${this.queued} bytes already wait, the limit is ${this.writeQueueLimit}`),
      );
    }
    this.queued += size;
    return this.acquire(signal).then(
      () => {
        this.queued -= size;
        return this.sendLocked(send, signal);
      },
      (err: unknown) => {
        this.queued -= size;
        throw err;
      },
    );
  }

  /**
   * whenSent calls `fn` once a message being compressed now has been
   * written (at once when none is): a close frame decided meanwhile goes out
   * after it, not before. Bounded by the compression of one message.
   */
  whenSent(fn: () => void): void {
    if (this.compressing === undefined) return fn();
    void this.compressing.then(fn);
  }

  /** True while a message is being compressed (or waits for the CompressionQueue): whenSent would wait. */
  get compressionPending(): boolean {
    return this.compressing !== undefined;
  }

  /** queuedBytes is the size of the messages waiting for their turn. */
  get queuedBytes(): number {
    return this.queued;
  }

  private sendLocked(send: Send, signal: AbortSignal | undefined): Promise<void> {
    if (this.error) {
      this.release();
      return Promise.reject(this.error);
    }
    const sent = send();
    if (sent === true) {
      this.release();
      return RESOLVED;
    }
    if (sent !== false) {
      const settled = (this.compressing = sent.then(noop, noop).then(() => {
        if (this.compressing === settled) this.compressing = undefined;
      }));
      return this.afterCompression(sent, signal);
    }
    return this.waitDrainLocked(signal);
  }

  /**
   * afterCompression finishes a compressed write. Once the compressor has
   * taken a message, its window includes it, so an abort from then on fails
   * the connection like an abort with bytes on the wire.
   */
  private afterCompression(sent: Promise<boolean>, signal: AbortSignal | undefined): Promise<void> {
    return sent.then(
      (ok) => {
        if (ok) return void this.release();
        return this.waitDrainLocked(signal);
      },
      (err: unknown) => {
        this.release();
        if (err !== this.error) this.host.fail(ErrorCode.AbortedMidMessage, "compression failed");
        throw err;
      },
    );
  }

  private waitDrainLocked(signal: AbortSignal | undefined): Promise<void> {
    const drained = this.drained(signal);
    drained.then(
      () => this.release(),
      () => this.release(),
    );
    return drained;
  }

  /** writer implements Conn.writer. */
  writer(type: MessageType, options?: AbortSignal | WriteOptions): Writable {
    checkMessageType(type);
    const { signal, compress } = writeOptions(options);
    return new MessageWritable(this, type, signal, compress !== false);
  }

  /**
   * drained resolves when the socket drains. An abort while waiting fails the
   * connection, since bytes of the message are already on the wire.
   */
  drained(signal: AbortSignal | undefined): Promise<void> {
    if (this.error) return Promise.reject(this.error);
    return new Promise<void>((resolve, reject) => {
      const waiter = { resolve, reject };
      // Listen only while someone waits: an idle connection holds no listener.
      if (!this.drainWaiters?.length) this.socket.once("drain", () => this.onDrain());
      (this.drainWaiters ??= []).push(waiter);
      if (signal === undefined) return;
      const unbind = bindAbort(signal, () => {
        this.removeWaiter(waiter);
        this.host.fail(ErrorCode.AbortedMidMessage, "write aborted after bytes of the message were sent");
        reject(signal.reason);
      });
      waiter.resolve = () => (unbind(), resolve());
      waiter.reject = (err) => (unbind(), reject(err));
    });
  }

  /** terminate rejects every waiting write with `err`; later writes reject with it too. */
  terminate(err: CloseError): void {
    if (this.error) return;
    this.error = err;
    this.shut(err);
    const waiters = this.drainWaiters;
    this.drainWaiters = undefined;
    for (const waiter of waiters ?? []) waiter.reject(err);
  }

  get failure(): CloseError | undefined {
    return this.error;
  }

  private onDrain(): void {
    const waiters = this.drainWaiters;
    if (waiters === undefined || waiters.length === 0) return;
    this.drainWaiters = undefined;
    for (const waiter of waiters) waiter.resolve();
  }

  private removeWaiter(waiter: DrainWaiter): void {
    const index = this.drainWaiters?.indexOf(waiter) ?? -1;
    if (index >= 0) this.drainWaiters!.splice(index, 1);
  }
}

/**
 * MessageWritable sends one message as one frame per write (several writes
 * buffered together become one frame). It asks for the write lock when it is
 * created, so writes made after it wait for its end().
 */
class MessageWritable extends Writable {
  private readonly ready: Promise<void>;
  private holdsLock = false;
  private started = false;
  private deflater: MessageDeflater | undefined;
  private ended = false;
  /** Stops listening to the signal (see bindAbort). */
  private readonly unbind: () => void;

  constructor(
    private readonly side: WriteSide,
    private readonly type: MessageType,
    private readonly signal: AbortSignal | undefined,
    /** False: the message goes out uncompressed (WriteOptions.compress). */
    private readonly compress: boolean,
  ) {
    super({ decodeStrings: true });
    this.ready = side.acquire(signal).then(() => {
      this.holdsLock = true;
      if (this.destroyed) this.releaseLock();
    });
    this.ready.catch((err: unknown) => this.destroy(err as Error));
    this.unbind = signal?.aborted ? noop : bindAbort(signal, () => this.abort());
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.ready.then(() => this.sendFrame(chunk, false, callback), callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    const payload = chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk));
    this.ready.then(() => this.sendFrame(payload, false, callback), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.ready.then(() => this.sendFrame(EMPTY_PAYLOAD, true, callback), callback);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.unbind();
    if (this.started && !this.ended) {
      this.ended = true;
      this.side.host.fail(ErrorCode.AbortedMidMessage, "message writer destroyed in the middle of a message");
    }
    this.releaseLock();
    callback(err);
  }

  private sendFrame(payload: Buffer, fin: boolean, callback: (error?: Error | null) => void): void {
    // Destroyed while this write waited for the lock: it gave the lock back, so nothing may go out.
    if (this.destroyed) return callback();
    const failure = this.side.failure;
    if (failure) return callback(failure);
    const first = !this.started;
    const opcode = first ? this.type : Opcode.Continuation;
    this.started = true;
    if (first) this.deflater = this.compress && this.side.compression?.enabled ? this.side.compression.deflater : undefined;
    if (this.deflater === undefined) return this.emitFrame(firstHeaderByte(fin, false, opcode), payload, fin, callback);
    // RSV1 marks the first frame of a compressed message only (RFC 7692 §6.1).
    this.deflater.compress(payload, fin).then(
      (compressed) => this.emitFrame(firstHeaderByte(fin, first, opcode), compressed, fin, callback),
      // Closed meanwhile: the close is the reason, not the compressor that was stopped.
      (err: Error) => callback(this.side.failure ?? err),
    );
  }

  private emitFrame(firstByte: number, payload: Uint8Array, fin: boolean, callback: (error?: Error | null) => void): void {
    const failure = this.side.failure;
    if (failure) return callback(failure);
    const ok = this.side.writeFrame(firstByte, payload);
    if (fin) {
      this.ended = true;
      this.releaseLock();
    }
    if (ok) return callback();
    this.side.drained(undefined).then(() => callback(), callback);
  }

  private abort(): void {
    if (this.ended) return;
    this.destroy(this.signal!.reason);
  }

  private releaseLock(): void {
    if (!this.holdsLock) return;
    this.holdsLock = false;
    this.unbind();
    this.side.release();
  }
}

/** A prepared frame: the unmasked frame bytes and where its payload starts. */
export interface PreparedFrame {
  /** Header and payload, unmasked: what a server writes as is. */
  frame: Buffer;
  /** The first header byte (FIN, RSV1, opcode), for a client that frames it again, masked. */
  firstByte: number;
  /** The payload alone (compressed when the variant compresses). */
  payload: Uint8Array;
  /** The message's data, uncompressed. */
  data: Buffer;
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
  /** False: sent uncompressed to every connection (the `compress` option). */
  readonly compress: boolean;
  private readonly variants = new Map<string, PreparedFrame>();
  /** How many frames were built, one per variant used (for tests and metrics). */
  framings = 0;

  /**
   * `options.compress: false` sends the message uncompressed to every
   * connection, whatever they negotiated (data already compressed, say).
   */
  constructor(type: MessageType, data: MessageData, options?: { compress?: boolean | undefined }) {
    checkMessageType(type);
    this.type = type;
    this.data = Buffer.from(toPayload(data));
    this.compress = options?.compress !== false;
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
    return { frame, firstByte, payload, data: this.data };
  }
}
