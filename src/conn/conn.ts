/**
 * The Conn class: one WebSocket connection over a socket, with the read side,
 * the write side, control frames, pings that wait for their pong, and
 * teardown. The close handshake's decisions live in close-handshake.ts.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-5
 * https://www.rfc-editor.org/rfc/rfc6455#section-7
 */

import type { Socket } from "node:net";
import type { Writable } from "node:stream";
import { bindAbort, noop } from "../internal/waiting.js";
import { CloseError, type CloseInfo, encodeClosePayload } from "../protocol/close.js";
import { connCloseChannel, connOpenChannel, keepaliveTimeoutChannel } from "../internal/diagnostics.js";
import { ErrorCode, type FailureCode, isSendableCloseCode, StatusCode } from "../protocol/errors.js";
import { type MessageType, Opcode } from "../protocol/frame.js";
import { defaultThreshold, type DeflateSettings } from "../protocol/handshake.js";
import { EMPTY_PAYLOAD } from "../protocol/payload.js";
import { CloseHandshake } from "./close-handshake.js";
import { CompressionQueue } from "./compression-queue.js";
import { compressedVariant, type DeflateTuning, type FrameVariant, MessageDeflater, PLAIN_VARIANT } from "./deflate.js";
import { Inbound, listenTo, PingTracker, RareState, type SocketOwner } from "./inbound.js";
import { Liveness, type LivenessHost, livenessSettings } from "./liveness.js";
import { checkLevel, checkLimit, type ConnInit, DEFAULT_READ_LIMIT } from "./options.js";
import { type Message, MessageIterator, ReadSide, type StreamedMessage } from "./read.js";
import { type MessageData, type PreparedMessage, type WriteOptions, writeOptions, WriteSide } from "./write.js";

/**
 * Conn is a WebSocket connection, made by `accept` (server) or `dial`
 * (client). Reads and writes are independent and may run at the same time:
 * reads are served one at a time in call order, and so are writes. Every
 * waiting method takes an optional AbortSignal and also settles when the
 * connection closes.
 */
export class Conn implements AsyncIterable<Message>, LivenessHost, SocketOwner {
  /** The subprotocol the handshake selected, or "". */
  readonly subprotocol: string;
  /** The Sec-WebSocket-Extensions the handshake agreed on, or "". */
  readonly extensions: string;
  /** Settles once, with how the connection ended, however it ended. Never rejects. */
  get closed(): Promise<CloseInfo> {
    return this.handshake.closed;
  }

  // Every field here costs 8 bytes on each of possibly many thousand
  // connections: what most of them never use lives in RareState.
  private readonly socket: Socket;
  private readonly isServer: boolean;
  /** The frame parser, the read queue and the inflater. */
  private readonly inbound: Inbound;
  private readonly writes: WriteSide;
  private readonly reads: ReadSide;
  private readonly autoPong: boolean;
  private readonly handshake: CloseHandshake;
  /** State most connections never need (pings, closeRead, ping callbacks): made on first use. */
  private rareState: RareState | undefined;
  /** The keepalive and idle timeout, when either is on. */
  private readonly liveness: Liveness | undefined;
  /** Told when the socket closes: the server that holds this connection (watchClose). */
  private closeWatcher: CloseWatcher | undefined;

  /**
   * The constructor is internal: connections come from accept and dial. It
   * takes over `socket` (an upgraded HTTP socket) and first parses `head`,
   * bytes that arrived with the handshake.
   */
  constructor(socket: Socket, head: Buffer, init: ConnInit) {
    this.socket = socket;
    this.autoPong = init.autoPong !== false;
    this.isServer = init.role === "server";
    this.subprotocol = init.subprotocol ?? "";
    this.extensions = init.deflate?.header ?? "";
    if (init.onPing !== undefined || init.onPong !== undefined) {
      const rare = this.rare;
      rare.onPing = init.onPing;
      rare.onPong = init.onPong;
    }
    this.handshake = new CloseHandshake(this, this.isServer, init.closeTimeout);
    const deflate = init.deflate;
    const readLimit = checkLimit("read limit", init.readLimit ?? DEFAULT_READ_LIMIT);
    const compressionQueue = init.compressionQueue ?? CompressionQueue.shared;
    this.inbound = new Inbound(socket, this, { expectMasked: this.isServer, readLimit, deflate, budget: init.inboundBudget, compressionQueue });
    this.reads = new ReadSide(this.inbound.queue, this);
    this.writes = new WriteSide(socket, !this.isServer, this);
    if (init.writeQueueLimit !== undefined) this.writes.writeQueueLimit = checkLimit("write queue limit", init.writeQueueLimit);
    if (deflate !== undefined) this.setupWriteCompression(deflate, init.compressionThreshold, compressionQueue);
    const liveness = livenessSettings(init.keepalive, init.idleTimeout);
    if (liveness !== undefined) this.inbound.liveness = this.liveness = new Liveness(this, liveness);
    this.attachSocket(head);
    if (connOpenChannel.hasSubscribers) connOpenChannel.publish({ conn: this, role: init.role } satisfies ConnOpenMessage);
  }

  // ---- reading ----

  /**
   * read returns the next data message, whole, answering control frames on
   * the way. Concurrent reads are served in call order.
   *
   * An abort of `signal` while no frame of the next message has arrived
   * rejects with the signal's reason and leaves the connection usable; an
   * abort once the message has begun fails the connection (1011), since the
   * rest of it could not be told apart from the next message.
   *
   * Rejects with a CloseError once the connection is closed (complete
   * messages received before the close are still returned first), and fails
   * the connection with 1009 for a message larger than the read limit.
   */
  read(signal?: AbortSignal): Promise<Message> {
    return this.reads.read(signal);
  }

  /**
   * reader returns the next data message as a Readable of its payload,
   * delivered as frames arrive without buffering the whole message (the read
   * limit still applies). The stream must be consumed, or destroyed, before
   * the next read begins; destroying it early discards the rest of the
   * message and keeps the connection usable. The signal behaves as in `read`:
   * an abort before the message begins leaves the connection usable, an abort
   * while the stream is still receiving fails the connection (1011).
   */
  reader(signal?: AbortSignal): Promise<StreamedMessage> {
    return this.reads.reader(signal);
  }

  /**
   * closeRead is for connections that only write: it keeps reading in the
   * background so pings are answered and the close handshake completes, and
   * fails the connection with 1008 if a data message arrives (or is already
   * waiting). It returns a signal aborted, with the CloseError as reason, as
   * soon as the connection is closing. Aborting `signal` closes the
   * connection with 1008, like an expired context in nhooyr's CloseRead.
   */
  closeRead(signal?: AbortSignal): AbortSignal {
    this.reads.closeRead();
    const abort = (): void => void this.close(StatusCode.PolicyViolation, "closeRead aborted").catch(noop);
    if (signal?.aborted) abort();
    else bindAbort(signal, abort);
    // Made on first use: most connections never call closeRead.
    const rare = this.rare;
    if (rare.closeReadController === undefined) {
      rare.closeReadController = new AbortController();
      if (this.handshake.error) rare.closeReadController.abort(this.handshake.error);
    }
    return rare.closeReadController.signal;
  }

  /**
   * setReadLimit sets the largest message accepted, in bytes (counted after
   * decompression). Past it the connection fails with 1009. Default 32768;
   * `Infinity` removes the limit. Throws a RangeError for a negative or
   * non-numeric limit.
   */
  setReadLimit(limit: number): void {
    this.inbound.queue.readLimit = checkLimit("read limit", limit);
  }

  /**
   * Iterating a Conn reads messages until the connection closes. Iteration
   * ends quietly on a close with 1000, 1001 or 1005 (a close frame without a
   * status, what browsers send for a bare `close()`), and throws the
   * CloseError of any other close. Breaking out of the loop leaves the
   * connection open.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    return new MessageIterator(this.reads);
  }

  // ---- writing ----

  /**
   * write sends one message of `type` (text data must be valid UTF-8; a
   * string is encoded as UTF-8). It resolves once the socket has taken the
   * bytes without passing its high-water mark, else when it drains, so a
   * producer that awaits its writes uses bounded memory. Writes go out one
   * message at a time, in call order, after any open writer ends.
   *
   * The last argument is a signal, or WriteOptions: `{ signal, compress }`,
   * where `compress: false` sends this message uncompressed although
   * permessage-deflate was negotiated. An abort of the signal before the
   * message is written rejects with the signal's reason and leaves the
   * connection usable; an abort while waiting for the socket to drain fails
   * the connection (1011). Rejects with a CloseError once the connection is
   * closing, a TypeError for a bad type, data or options.
   */
  write(type: MessageType, data: MessageData, options?: AbortSignal | WriteOptions): Promise<void> {
    this.liveness?.dataMessage();
    return this.writes.write(type, data, options);
  }

  /**
   * writer returns a Writable that sends one message of `type` as one frame
   * per write; `end()` sends the final frame. It reserves the write side when
   * created: later writes and writers wait until it ends. Pings, pongs and
   * close frames can still go out between its frames. An abort of `signal`
   * before its first frame destroys it and leaves the connection usable; an
   * abort, an error or destroy() after it fails the connection (1011), since
   * the message is half sent. The last argument is a signal or WriteOptions
   * (`{ signal, compress: false }` sends the message uncompressed). Throws a
   * TypeError for a bad type or options.
   */
  writer(type: MessageType, options?: AbortSignal | WriteOptions): Writable {
    this.liveness?.dataMessage();
    return this.writes.writer(type, options);
  }

  /**
   * writePrepared sends a PreparedMessage, framed once for every connection
   * that shares its settings. Ordering, backpressure, abort, errors and
   * options (`{ signal, compress }`) are those of `write`.
   */
  writePrepared(message: PreparedMessage, options?: AbortSignal | WriteOptions): Promise<void> {
    this.liveness?.dataMessage();
    let signal: AbortSignal | undefined;
    let compress: boolean | undefined;
    try {
      ({ signal, compress } = writeOptions(options));
    } catch (err) {
      return Promise.reject(err);
    }
    return this.writes.writePrepared(message.frameFor(this.preparedVariant(message, compress)), signal);
  }

  /**
   * ping sends a ping and resolves with the round-trip time in milliseconds
   * when its pong arrives. A pong answers its own ping and every earlier one.
   * Pongs are only seen while something reads the connection: a read loop,
   * iteration, a stream adapter or closeRead. Rejects with the signal's
   * reason on abort and with the CloseError if the connection closes first.
   */
  ping(signal?: AbortSignal): Promise<number> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.handshake.error) return Promise.reject(this.handshake.error);
    const tracker = (this.rare.pingTracker ??= new PingTracker());
    return tracker.ping((payload) => this.writes.writeControl(Opcode.Ping, payload), signal);
  }

  // ---- closing ----

  /**
   * close performs the close handshake: it sends a close frame with `code`
   * (default 1000) and `reason` (at most 123 bytes), waits for the peer's close
   * frame and for the TCP connection to end, and resolves then. After
   * `closeTimeout` (5 s by default) it drops the socket instead; `closed` then
   * reports `wasClean: false`. A message still being compressed when close
   * is called goes out first, and `closeTimeout` then counts from the call
   * (the compression may wait its turn in the CompressionQueue); pending
   * reads and writes reject with a CloseError. Calling it again, or after the peer closed, waits for the
   * same end. Rejects with a RangeError for a code that may not be sent or a
   * reason that is too long.
   */
  close(code: number = StatusCode.NormalClosure, reason = ""): Promise<void> {
    // encodeClosePayload maps 1005 to an empty body; close() must refuse it (§7.4.2).
    if (!isSendableCloseCode(code)) return Promise.reject(new RangeError(`close code ${String(code)} may not be sent`));
    let payload: Buffer;
    try {
      payload = encodeClosePayload(code, reason);
    } catch (err) {
      return Promise.reject(err);
    }
    // A message being compressed when close() is called goes out before the
    // close frame; closeTimeout bounds the wait for it too.
    if (this.writes.compressionPending) this.handshake.startCloseTimer(true);
    this.writes.whenSent(() => {
      // A protocol error already found wins over this close.
      this.inbound.failNowIfPending();
      this.handshake.close(code, reason, payload);
    });
    return this.closed.then(noop);
  }

  /** closeNow drops the connection at once, without a close handshake (1006). */
  closeNow(): void {
    this.inbound.failNowIfPending();
    this.handshake.terminate(new CloseError(StatusCode.AbnormalClosure, "connection dropped by closeNow"));
    this.socket.destroy();
  }

  /**
   * enableWriteCompression turns compression of later messages on or off
   * (gorilla's EnableWriteCompression), e.g. for data already compressed. It
   * has no effect when permessage-deflate was not negotiated. Default on.
   */
  enableWriteCompression(on: boolean): void {
    if (this.writes.compression) this.writes.compression.enabled = on;
  }

  /**
   * setCompressionLevel sets the zlib level (0–9) of messages written from
   * now on; a message already being compressed keeps its level. Throws a
   * RangeError for another value. No effect without permessage-deflate.
   */
  setCompressionLevel(level: number): void {
    checkLevel(level);
    const compression = this.writes.compression;
    if (compression === undefined || compression.deflater.level === level) return;
    compression.deflater.level = level;
    compression.variant = undefined;
  }

  /** The remote IP address, while the socket knows it. */
  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }

  /** The remote port, while the socket knows it. */
  get remotePort(): number | undefined {
    return this.socket.remotePort;
  }

  /** The local IP address, while the socket knows it. */
  get localAddress(): string | undefined {
    return this.socket.localAddress;
  }

  /** The local port, while the socket knows it. */
  get localPort(): number | undefined {
    return this.socket.localPort;
  }

  /** Bytes of messages not yet sent: in the socket's buffer, and waiting for their turn. */
  get bufferedAmount(): number {
    return this.socket.writableLength + this.writes.queuedBytes;
  }

  /**
   * setNoDelay sets TCP_NODELAY on the socket, as net.Socket's does. wsconn
   * turns it on for every connection (frames are written whole); `false`
   * lets Nagle's algorithm batch small frames.
   */
  setNoDelay(noDelay = true): void {
    if (typeof this.socket.setNoDelay === "function") this.socket.setNoDelay(noDelay);
  }

  /**
   * setKeepAlive turns TCP keep-alive probes on or off, the first one after
   * `initialDelay` ms of idleness, as net.Socket's does. Off by default; a
   * WebSocket ping (`ping`) also proves the peer is alive, end to end.
   */
  setKeepAlive(enable = false, initialDelay = 0): void {
    if (typeof this.socket.setKeepAlive === "function") this.socket.setKeepAlive(enable, initialDelay);
  }

  // ---- internals ----

  private setupWriteCompression(deflate: DeflateSettings, threshold: number | undefined, queue: CompressionQueue): void {
    // zlib cannot keep a raw deflate window of 256 bytes (it makes it 512):
    // a peer that demands window bits 8 gets uncompressed messages, which is legal.
    if (deflate.sendWindowBits === 8) return;
    const tuning: DeflateTuning = {
      windowBits: deflate.sendWindowBits,
      memLevel: deflate.memLevel,
      level: deflate.level,
      keepContext: !deflate.sendNoContextTakeover,
    };
    this.writes.compression = {
      deflater: new MessageDeflater(tuning, queue),
      threshold: threshold ?? defaultThreshold(deflate),
      enabled: true,
      tuning,
      variant: undefined,
    };
  }

  private preparedVariant(message: PreparedMessage, compress: boolean | undefined): FrameVariant {
    const compression = this.writes.compression;
    if (compression === undefined || !compression.enabled || !message.compress || compress === false) return PLAIN_VARIANT;
    return (compression.variant ??= compressedVariant({ ...compression.tuning, level: compression.deflater.level }, compression.threshold));
  }

  private attachSocket(head: Buffer): void {
    const socket = this.socket;
    // A transport from createConnection may be any Duplex, without TCP options.
    if (typeof socket.setNoDelay === "function") socket.setNoDelay(true);
    if (typeof socket.setTimeout === "function") socket.setTimeout(0);
    listenTo(socket, this);
    if (head.length > 0) this.inbound.push(head);
    if (socket.destroyed) queueMicrotask(() => this.onSocketClose());
    // The peer may have half-closed while accept was still busy (checkOrigin),
    // before these listeners: its 'end' is gone, so act on it now.
    else if (socket.readableEnded) queueMicrotask(() => this.onSocketEnd());
  }

  /** @internal A control frame arrived (InboundHost). */
  onControlFrame(opcode: number, payload: Buffer): void {
    if (opcode === Opcode.Ping) return this.onPing(payload);
    if (opcode === Opcode.Pong) return this.onPong(payload);
    const malformed = this.handshake.onCloseFrame(payload);
    if (malformed !== undefined) this.inbound.fail(malformed.errorCode, malformed.message);
  }

  private onPing(payload: Buffer): void {
    this.rareState?.onPing?.(payload);
    if (!this.autoPong || this.handshake.sent) return;
    if (!this.socket.writableNeedDrain) {
      this.writes.writeControl(Opcode.Pong, payload);
      return;
    }
    // The peer is not reading: keep one pong, for the latest ping (§5.5.3).
    const rare = this.rare;
    if (rare.pendingPong === undefined) this.socket.once("drain", () => this.flushPong());
    rare.pendingPong = payload;
  }

  private flushPong(): void {
    const rare = this.rare;
    const payload = rare.pendingPong;
    rare.pendingPong = undefined;
    if (payload !== undefined && !this.handshake.sent) this.writes.writeControl(Opcode.Pong, payload);
  }

  private onPong(payload: Buffer): void {
    this.rareState?.onPong?.(payload);
    this.rareState?.pingTracker?.onPong(payload);
  }

  /** rare returns the connection's rarely needed state, making it on first use. */
  private get rare(): RareState {
    return (this.rareState ??= new RareState());
  }

  /**
   * @internal
   * watchClose has `watcher` told once the socket is closed: at once when it
   * is already (a socket may close while accept is still busy).
   */
  watchClose(watcher: CloseWatcher): void {
    if (this.handshake.info !== undefined) watcher.connClosed(this);
    else this.closeWatcher = watcher;
  }

  // ---- LivenessHost ----

  /** @internal */
  sendKeepalivePing(): void {
    if (!this.handshake.sent) this.writes.writeControl(Opcode.Ping, EMPTY_PAYLOAD);
  }

  /** @internal */
  keepaliveExpired(waitedMs: number): void {
    if (keepaliveTimeoutChannel.hasSubscribers) keepaliveTimeoutChannel.publish({ conn: this, waitedMs } satisfies KeepaliveTimeoutMessage);
    this.fail(ErrorCode.KeepaliveTimeout, `keepalive timeout: no answer to a ping within ${Math.round(waitedMs)} ms`);
  }

  /** @internal */
  idleExpired(): void {
    this.close(StatusCode.GoingAway, "idle timeout").catch(noop);
  }

  /** @internal */
  get pausedForReader(): boolean {
    return this.inbound.pausedForReader;
  }

  // ---- hosts: what the inbound path, the read and write sides and the close handshake ask for ----

  /** @internal The connection is closing: no message will be read (InboundHost). */
  get closing(): boolean {
    return this.handshake.error !== undefined;
  }

  /**
   * @internal
   * fail fails the connection at once (FailureHost): every failure ends here,
   * those found in what the peer sent by way of Inbound.fail, in wire order.
   */
  fail(errorCode: FailureCode, message: string): void {
    this.handshake.fail(errorCode, message);
  }

  /** @internal whenSent runs `fn` once no message is being compressed (InboundHost, CloseHost). */
  whenSent(fn: () => void): void {
    this.writes.whenSent(fn);
  }

  /** @internal CloseHost. */
  stopReading(): void {
    this.inbound.stop();
  }

  /** @internal CloseHost: wake everything waiting on the connection with `err`. */
  terminate(err: CloseError): void {
    this.liveness?.stop();
    this.inbound.terminate(err);
    this.writes.terminate(err);
    this.rareState?.pingTracker?.rejectAll(err);
    this.rareState?.closeReadController?.abort(err);
  }

  /** @internal CloseHost. */
  sendCloseFrame(payload: Buffer): boolean {
    if (this.socket.destroyed) return false;
    this.writes.writeControl(Opcode.Close, payload);
    return true;
  }

  /** @internal CloseHost. */
  endSocket(): void {
    if (!this.socket.writableEnded && !this.socket.destroyed) this.socket.end();
  }

  /** @internal CloseHost. */
  destroySocket(): void {
    this.socket.destroy();
  }

  // ---- socket events ----

  /** @internal Bytes arrived from the socket. */
  receive(chunk: Buffer): void {
    this.liveness?.arrived();
    this.inbound.push(chunk);
  }

  /** @internal The peer ended its side of the TCP connection. */
  onSocketEnd(): void {
    this.inbound.failNowIfPending();
    this.handshake.onPeerEnd();
  }

  /** @internal The socket failed. */
  onSocketError(err: Error): void {
    this.inbound.failNowIfPending();
    this.handshake.onSocketError(err);
  }

  /** @internal The socket is closed: settle everything. */
  onSocketClose(): void {
    // Once: a socket destroyed before attachSocket may also still emit 'close'.
    if (this.handshake.info !== undefined) return;
    this.inbound.failNowIfPending();
    this.inbound.release();
    this.writes.compression?.deflater.close();
    this.handshake.onSocketClose();
    this.closeWatcher?.connClosed(this);
    if (connCloseChannel.hasSubscribers) {
      connCloseChannel.publish({ conn: this, info: this.handshake.info!, error: this.handshake.error! } satisfies ConnCloseMessage);
    }
  }
}

/** What watchClose tells when the socket of `conn` is closed. */
export interface CloseWatcher {
  connClosed(conn: Conn): void;
}

/** The message on the `wsconn:conn:open` diagnostics channel: a connection opened. */
export interface ConnOpenMessage {
  conn: Conn;
  role: "client" | "server";
}

/** The message on the `wsconn:conn:close` diagnostics channel: a connection's socket closed. */
export interface ConnCloseMessage {
  conn: Conn;
  /** What `conn.closed` settles with. */
  info: CloseInfo;
  /** Why it ended, as pending reads saw it: `errorCode` tells a failure this side found. */
  error: CloseError;
}

/** The message on the `wsconn:keepalive:timeout` diagnostics channel, just before the connection fails with 1011. */
export interface KeepaliveTimeoutMessage {
  conn: Conn;
  /** How long the ping waited, in ms. */
  waitedMs: number;
}
