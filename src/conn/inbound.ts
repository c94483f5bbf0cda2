/**
 * The inbound path of a connection: the frame parser, its sink, and the read
 * queue. Data frames go to the queue, through the inflater when a message is
 * compressed (https://www.rfc-editor.org/rfc/rfc7692#section-6.2); control
 * frames go back to the connection. A failure found in what the peer sent
 * takes effect in wire order (see fail). The socket stays paused for as long
 * as any reason to hold its bytes remains. Pongs settle the pings this side
 * sent (PingTracker).
 */

import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { bindAbort } from "../internal/waiting.js";
import type { CloseError } from "../protocol/close.js";
import { ErrorCode, type FailureCode, type FailureHost } from "../protocol/errors.js";
import { FrameParser, type FrameSink, type MessageType, Opcode } from "../protocol/frame.js";
import type { DeflateSettings } from "../protocol/handshake.js";
import type { CompressionQueue } from "./compression-queue.js";
import { TAIL } from "./deflate.js";
import { FAST_INFLATE_MAX, FAST_INFLATE_OUTPUT, MessageInflater, OUTPUT_OVER_CAP } from "./inflate.js";
import type { Liveness } from "./liveness.js";
import type { InboundBudget } from "./options.js";
import { ReadQueue, type ReadQueueHost } from "./read-queue.js";

/** What the inbound path needs from its connection; `fail` fails it at once. */
export interface InboundHost extends FailureHost {
  /** A ping, pong or close frame arrived. */
  onControlFrame(opcode: number, payload: Buffer): void;
  /** The connection is closing: nobody reads messages any more. */
  readonly closing: boolean;
  /** whenSent runs `fn` once no message is being compressed for the write side (WriteSide.whenSent). */
  whenSent(fn: () => void): void;
}

/** A failure fail deferred to the next turn of the event loop, and its timer. */
interface PendingFailure {
  errorCode: FailureCode;
  message: string;
  timer: NodeJS.Immediate | undefined;
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
  /** The process-wide bound on zlib work off the main thread. */
  compressionQueue: CompressionQueue;
}

/**
 * Compressed bytes are handed to zlib at most once per socket read and
 * message, copied together when small: a message sent as one-byte fragments
 * would otherwise queue one zlib write, a hundred bytes of overhead, per byte.
 */
const INFLATE_BATCH_MAX = 16 * 1024;

/**
 * What a zlib stream inflating one message holds besides the message's own
 * bytes (its 16 KiB output buffer, a 32 KiB window, ~7 KiB of state),
 * charged to the process budget while the message is received: ten thousand
 * peers each beginning a large compressed message cannot hold half a
 * gigabyte of zlib streams unbounded.
 */
export const INFLATE_STREAM_COST = 56 * 1024;

/** Inbound is the parser's sink and the read side's host for one connection. */
export class Inbound implements FrameSink, ReadQueueHost {
  private readonly parser: FrameParser;
  readonly queue: ReadQueue;
  private readonly inflater: MessageInflater | undefined;
  private compressedMessage = false;
  /** A small compressed message in one frame, copied here to be inflated by one call (with room for TAIL). */
  private whole: WholeMessage | undefined;
  /** The parser waits for the reader: a one-call inflate passed the unread mark. */
  private heldForReader = false;
  /** The message being streamed to zlib was charged INFLATE_STREAM_COST. */
  private streamCharged = false;
  private pauseReasons = 0;
  /** Compressed payload of this socket read not yet handed to zlib. */
  private inflateBatch: Buffer[] | undefined;
  private inflateBatchSize = 0;
  private pendingFailure: PendingFailure | undefined;
  /** Told of every data frame, when the connection has a keepalive or idle timeout. */
  liveness: Liveness | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly host: InboundHost,
    options: InboundOptions,
  ) {
    const deflate = options.deflate;
    this.parser = new FrameParser(this, { expectMasked: options.expectMasked, allowRsv1: deflate !== undefined });
    this.queue = new ReadQueue(this, options.readLimit, options.budget);
    if (deflate !== undefined) {
      this.inflater = new MessageInflater(
        !deflate.receiveNoContextTakeover,
        deflate.receiveWindowBits,
        options.compressionQueue,
        (chunk) => this.queue.appendPayload(chunk),
        (err) => this.fail(ErrorCode.InvalidCompressedData, `invalid compressed data: ${err.message}`),
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
    this.liveness?.dataMessage();
    if (opcode !== Opcode.Continuation) {
      if (!this.queue.startMessage(opcode as MessageType)) return false;
      this.compressedMessage = rsv1;
      this.streamCharged = false;
      if (rsv1 && fin && length <= FAST_INFLATE_MAX) {
        this.whole = new WholeMessage(length);
      }
    }
    // Compressed frames are checked as they inflate: their size says nothing.
    if (this.compressedMessage || !this.queue.admitsFrame(length, fin)) return false;
    return this.queue.keepsMasked(fin, length);
  }

  onMaskedPayload(chunk: Buffer, maskKey: number): void {
    this.queue.appendMaskedPayload(chunk, maskKey);
  }

  onDataPayload(chunk: Buffer): void {
    // Once the connection is closing nobody reads messages: don't inflate them.
    if (!this.compressedMessage) this.queue.appendPayload(chunk);
    else if (this.host.closing) return;
    else if (this.whole !== undefined) {
      // Bytes held across socket reads count against the budget like any unfinished message's.
      if (!this.whole.add(chunk)) this.queue.chargeBudget(chunk.length);
    } else this.inflate(chunk);
  }

  onDataFrameEnd(fin: boolean): void {
    if (!fin) return;
    if (!this.compressedMessage || this.host.closing) {
      this.whole = undefined;
      return this.queue.endMessage();
    }
    if (this.whole !== undefined) this.inflateWhole();
    else this.endInflate();
  }

  onControlFrame(opcode: number, payload: Buffer): void {
    this.host.onControlFrame(opcode, payload);
  }

  // ---- failing, and ReadQueueHost ----

  /**
   * fail fails the connection for something the peer sent (FrameSink,
   * ReadQueueHost), in wire order: parsing stops at once, but the failure
   * takes effect on the next turn of the event loop, so that messages that
   * were complete before the bad frame reach a waiting reader and the
   * replies it writes at once go out before the close frame (as the
   * Autobahn suite expects of cases 3.2–5.15). Bounded: one turn, whether or
   * not anything reads, plus the compression of a reply begun in it.
   */
  fail(errorCode: FailureCode, message: string): void {
    this.parser.stop();
    if (this.host.closing) return this.host.fail(errorCode, message);
    if (this.pendingFailure !== undefined) return;
    const pending: PendingFailure = { errorCode, message, timer: undefined };
    this.pendingFailure = pending;
    // After one turn, and after a reply being compressed then (zlib works off the thread).
    pending.timer = setImmediate(() => this.host.whenSent(() => this.failNowIfPending()));
  }

  /** failNowIfPending carries out a failure fail deferred, if one waits: the socket ended, or the application closes. */
  failNowIfPending(): void {
    const pending = this.pendingFailure;
    if (pending === undefined) return;
    clearImmediate(pending.timer);
    this.pendingFailure = undefined;
    this.host.fail(pending.errorCode, pending.message);
  }

  /** stop stops parsing: the connection is closing and what follows on the wire is not read. */
  stop(): void {
    this.parser.stop();
  }

  /** terminate ends reading with `err` and drops decompression nobody will read. */
  terminate(err: CloseError): void {
    this.queue.terminate(err);
    // After the queue: a message cut short must fail, not complete.
    this.stopInflating();
  }


  /** True while the socket is paused because the application has not read what arrived. */
  get pausedForReader(): boolean {
    return (this.pauseReasons & PAUSE_UNREAD) !== 0;
  }

  pauseSocket(): void {
    this.pauseFor(PAUSE_UNREAD);
    this.inflater?.pause();
  }

  resumeSocket(): void {
    this.inflater?.resume();
    this.resumeFor(PAUSE_UNREAD);
    if (this.heldForReader) {
      // On the next turn, as socket data would come: not inside the read that freed the room.
      setImmediate(() => {
        if (!this.heldForReader || this.pausedForReader) return;
        this.heldForReader = false;
        this.parser.resume();
      });
    }
  }

  // ---- decompression ----

  /**
   * stopInflating drops decompression that nobody will read: without it, the
   * rest of a bomb already handed to zlib would still be inflated (and
   * thrown away) after the 1009, hundreds of milliseconds of CPU per message.
   */
  private stopInflating(): void {
    this.inflateBatch = undefined;
    this.inflateBatchSize = 0;
    this.whole = undefined;
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
    this.chargeStream();
    if (this.inflater!.write(data)) return;
    // The rest of a socket chunk keeps coming while paused: one drain listener is enough.
    if ((this.pauseReasons & PAUSE_INFLATER_FULL) !== 0) return;
    this.pauseFor(PAUSE_INFLATER_FULL);
    this.inflater!.onDrain(() => this.resumeFor(PAUSE_INFLATER_FULL));
  }

  /**
   * inflateWhole decompresses a small one-frame message with one call. Its
   * output is capped by the read limit when a read already claimed the
   * message (1009 past it), else by FAST_INFLATE_OUTPUT: a message that
   * inflates to more is streamed instead, its bytes counted as they come.
   */
  private inflateWhole(): void {
    const whole = this.whole!;
    this.whole = undefined;
    const data = whole.withTail();
    const allowance = this.queue.allowance;
    const limitDecides = allowance < FAST_INFLATE_OUTPUT;
    let out: Buffer | typeof OUTPUT_OVER_CAP;
    try {
      out = this.inflater!.inflateWhole(data, limitDecides ? allowance + 1 : FAST_INFLATE_OUTPUT);
    } catch (err) {
      return this.fail(ErrorCode.InvalidCompressedData, `invalid compressed data: ${(err as Error).message}`);
    }
    if (out !== OUTPUT_OVER_CAP) {
      this.queue.appendWhole(out);
      // Past the unread mark the rest of the socket chunk must wait for the
      // reader too: one call per small frame would inflate every frame of
      // the chunk, 128 KiB apiece, into the queue.
      if (this.pausedForReader && !this.heldForReader) {
        this.heldForReader = true;
        this.parser.suspend();
      }
      return;
    }
    if (limitDecides) return this.queue.tooLarge(allowance + 1);
    // Streamed instead: end() adds the TAIL itself.
    this.chargeStream();
    this.inflater!.write(data.subarray(0, data.length - TAIL.length));
    this.endInflate();
  }

  /** chargeStream charges the message its zlib stream, once (may shed this connection). */
  private chargeStream(): void {
    if (this.streamCharged) return;
    this.streamCharged = true;
    this.queue.chargeBudget(INFLATE_STREAM_COST);
  }

  /** endInflate holds later frames until the message's last bytes are decompressed. */
  private endInflate(): void {
    if (this.inflateBatch !== undefined) this.flushInflate();
    this.parser.suspend();
    this.pauseFor(PAUSE_INFLATING);
    this.inflater!.end(() => {
      this.queue.endMessage();
      this.resumeFor(PAUSE_INFLATING);
      this.parser.resume();
      // The bytes held meanwhile may have begun the next compressed message: hand them over now.
      if (this.inflateBatch !== undefined) this.flushInflate();
    });
  }
}

/**
 * WholeMessage gathers the payload of a small compressed message in one
 * frame, to be inflated by one call. Nothing is allocated from the declared
 * length: a payload that arrives in one piece is copied once, behind room
 * for the TAIL; one that arrives in several is copied piece by piece.
 */
class WholeMessage {
  private single: Buffer | undefined;
  private readonly parts: Buffer[] = [];
  private length = 0;

  constructor(private readonly declared: number) {}

  /** add copies a piece of the payload; it returns false for a piece held across socket reads (to be charged). */
  add(chunk: Buffer): boolean {
    if (this.length === 0 && chunk.length === this.declared) {
      const single = Buffer.allocUnsafe(chunk.length + TAIL.length);
      chunk.copy(single);
      this.single = single;
      this.length = chunk.length;
      return true;
    }
    this.parts.push(Buffer.from(chunk));
    this.length += chunk.length;
    return false;
  }

  /** withTail returns the payload followed by the four TAIL bytes. */
  withTail(): Buffer {
    const single = this.single;
    if (single === undefined) return Buffer.concat([...this.parts, TAIL], this.length + TAIL.length);
    TAIL.copy(single, this.length);
    return single;
  }
}

interface PendingPing {
  resolve(rtt: number): void;
  reject(err: unknown): void;
  sentAt: number;
}

/**
 * PingTracker gives every ping a unique 8-byte payload and settles it when
 * the pong with that payload arrives. A peer may answer only the latest of
 * several pings (§5.5.3), so a pong also settles every ping sent before its
 * own.
 */
export class PingTracker {
  /** Made on the first ping: most connections never send one. */
  private pending: Map<string, PendingPing> | undefined;
  private counter = 0;
  /** A random prefix, so payloads tell the peer nothing about this process. */
  private prefix = 0;

  /** ping sends a ping through `send` and resolves with the round trip in ms. */
  ping(send: (payload: Buffer) => void, signal: AbortSignal | undefined): Promise<number> {
    if (this.counter === 0) this.prefix = randomBytes(4).readUInt32BE(0);
    const payload = Buffer.allocUnsafe(8);
    payload.writeUInt32BE(this.prefix, 0);
    payload.writeUInt32BE(++this.counter >>> 0, 4);
    const key = payload.toString("latin1");
    const map = (this.pending ??= new Map());
    return new Promise<number>((resolve, reject) => {
      const pending: PendingPing = { resolve, reject, sentAt: performance.now() };
      map.set(key, pending);
      if (signal) {
        const unbind = bindAbort(signal, () => {
          map.delete(key);
          reject(signal.reason);
        });
        pending.resolve = (rtt) => (unbind(), resolve(rtt));
        pending.reject = (err) => (unbind(), reject(err));
      }
      send(payload);
    });
  }

  /** onPong settles the ping `payload` answers, and every earlier one; unsolicited pongs are ignored. */
  onPong(payload: Buffer): void {
    const key = payload.toString("latin1");
    const map = this.pending;
    if (map === undefined || !map.has(key)) return;
    const now = performance.now();
    for (const [k, pending] of map) {
      map.delete(k);
      pending.resolve(now - pending.sentAt);
      if (k === key) break;
    }
  }

  /** rejectAll fails every waiting ping with `err`. */
  rejectAll(err: unknown): void {
    const map = this.pending;
    if (map === undefined) return;
    for (const pending of map.values()) pending.reject(err);
    map.clear();
  }
}

/**
 * Socket listeners are shared functions that find their connection through a
 * symbol on the socket: four closures less per connection.
 */
const OWNER = Symbol("wsconn.conn");

/** What the socket listeners call on the connection that owns the socket. */
export interface SocketOwner {
  receive(chunk: Buffer): void;
  onSocketEnd(): void;
  onSocketError(err: Error): void;
  onSocketClose(): void;
}

interface OwnedSocket extends Socket {
  [OWNER]: SocketOwner;
}

/** listenTo attaches the shared socket listeners, which find `owner` through a symbol on the socket. */
export function listenTo(socket: Socket, owner: SocketOwner): void {
  (socket as OwnedSocket)[OWNER] = owner;
  socket.on("data", onSocketData);
  socket.on("end", onSocketEnd);
  socket.on("error", onSocketError);
  socket.on("close", onSocketClose);
}

function onSocketData(this: OwnedSocket, chunk: Buffer): void {
  this[OWNER].receive(chunk);
}

function onSocketEnd(this: OwnedSocket): void {
  this[OWNER].onSocketEnd();
}

function onSocketError(this: OwnedSocket, err: Error): void {
  this[OWNER].onSocketError(err);
}

function onSocketClose(this: OwnedSocket): void {
  this[OWNER].onSocketClose();
}

/**
 * RareState holds what a connection needs only for pings, ping callbacks or
 * closeRead: one object made on first use instead of fields on every Conn,
 * unused by most for their whole life.
 */
export class RareState {
  /** The onPing and onPong options. */
  onPing: ((payload: Buffer) => void) | undefined;
  onPong: ((payload: Buffer) => void) | undefined;
  closeReadController: AbortController | undefined;
  /** Made on the first ping: most connections never send one. */
  pingTracker: PingTracker | undefined;
  /** The latest ping's payload, while the socket is too full to answer it. */
  pendingPong: Buffer | undefined;
}
