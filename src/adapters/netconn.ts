/**
 * netConn: a connection as a byte stream, the Node form of nhooyr's NetConn.
 * Also the base that netConn and messageStream share: how a close becomes the
 * end of the readable side or an error, how end() closes, how destroy() drops
 * the connection.
 *
 * Backpressure is never buffered away: the readable side pulls one message
 * stream at a time and pauses it when the Duplex is full, which lets the
 * connection's read queue fill and pause the socket; the writable side calls
 * back only when Conn.write resolves, which is when the socket has taken the
 * bytes below its high-water mark.
 */

import { isIPv6 } from "node:net";
import { Duplex, type DuplexOptions, type Readable } from "node:stream";
import type { Conn } from "../conn/conn.js";
import type { StreamedMessage } from "../conn/read.js";
import { checkMessageType } from "../conn/write.js";
import { bindAbort, checkTimeout, isNoTimeout, noop, startTimer } from "../internal/waiting.js";
import { CloseError } from "../protocol/close.js";
import { ErrorCode, StatusCode } from "../protocol/errors.js";
import { MessageType } from "../protocol/frame.js";

/** Close codes that end a stream quietly: normal, going away, and a close frame without a status. */
const QUIET_CLOSE_CODES: ReadonlySet<number> = new Set([
  StatusCode.NormalClosure,
  StatusCode.GoingAway,
  StatusCode.NoStatusRcvd,
]);

/** The buffer of each side of a netConn, in bytes: one socket read. */
const NET_CONN_HIGH_WATER_MARK = 64 * 1024;

type Callback = (error?: Error | null) => void;

/**
 * isQuietClose tells whether `err` is a close that means "no more data"
 * rather than a failure: 1000, 1001, or 1005, as for `Conn` iteration.
 */
export function isQuietClose(err: unknown): boolean {
  return err instanceof CloseError && QUIET_CLOSE_CODES.has(err.code);
}

/**
 * ConnDuplex is what netConn and messageStream share. Subclasses implement
 * `_read` and `_write` and report failures through `readFailed` and
 * `writeFailed`. Like a net.Socket it does not stay half open: once the
 * readable side ends, the writable side ends too.
 */
export abstract class ConnDuplex extends Duplex {
  /** The connection this stream reads and writes. */
  protected readonly conn: Conn;
  /** A close has begun (received, sent or finished): destroy leaves it to finish. */
  protected closing = false;
  /** Stops listening to the constructor's signal. */
  private readonly unbindAbort: () => void;

  protected constructor(conn: Conn, options: DuplexOptions, signal: AbortSignal | undefined) {
    super({ ...options, allowHalfOpen: false });
    this.conn = conn;
    void conn.closed.then(() => (this.closing = true));
    const onAbort = (): void => void this.destroy(signal!.reason as Error);
    // Destroying in the constructor would emit 'error' before anyone listens.
    if (signal?.aborted) process.nextTick(onAbort);
    this.unbindAbort = signal?.aborted ? noop : bindAbort(signal, onAbort);
  }

  /**
   * readFailed ends the readable side for a quiet close (EOF) and destroys
   * the stream with any other error, which carries the close code.
   */
  protected readFailed(err: unknown): void {
    if (err instanceof CloseError) this.closing = true;
    if (this.destroyed) return;
    if (isQuietClose(err)) this.push(null);
    else this.destroy(err as Error);
  }

  /**
   * writeFailed fails a write. After any close, even a normal one, a write
   * fails with the CloseError, as a TCP write fails once the peer is gone.
   */
  protected writeFailed(err: unknown, callback: Callback): void {
    if (err instanceof CloseError) this.closing = true;
    callback(err as Error);
  }

  /** _final closes the connection with 1000 once every write is on the socket. */
  override _final(callback: Callback): void {
    this.closing = true;
    this.conn.close(StatusCode.NormalClosure).then(() => callback(), callback);
  }

  /**
   * _destroy drops a connection that is still open (the peer sees 1006); a
   * close already under way is left to finish its handshake.
   */
  override _destroy(err: Error | null, callback: Callback): void {
    this.unbindAbort();
    if (!this.closing) {
      this.closing = true;
      this.conn.closeNow();
    }
    callback(err);
  }
}

/**
 * NetConn is the Duplex that netConn returns: a byte stream over one
 * connection, with the parts of the net.Socket interface that make sense
 * for it.
 */
export class NetConn extends ConnDuplex {
  /** Payload bytes delivered by the readable side. */
  bytesRead = 0;
  /** Payload bytes the connection has taken from the writable side. */
  bytesWritten = 0;
  private readonly type: MessageType;
  /** The stream of the message being read, if one is. */
  private message: Readable | undefined;
  /** A reader() call is waiting for the next message. */
  private awaitingMessage = false;
  /** The readable side asked for data and has not been refused since. */
  private wanted = false;
  private idleTimer: NodeJS.Timeout | undefined;

  /** Use netConn(conn, type, signal). */
  constructor(conn: Conn, type: MessageType, signal?: AbortSignal) {
    checkMessageType(type);
    super(conn, { readableHighWaterMark: NET_CONN_HIGH_WATER_MARK, writableHighWaterMark: NET_CONN_HIGH_WATER_MARK }, signal);
    this.type = type;
    conn.setReadLimit(Infinity);
  }

  // ---- net.Socket pass-through ----

  /** The remote IP address, as net.Socket's. */
  get remoteAddress(): string | undefined {
    return this.conn.remoteAddress;
  }

  /** The remote port, as net.Socket's. */
  get remotePort(): number | undefined {
    return this.conn.remotePort;
  }

  /** "IPv4" or "IPv6", from the remote address. */
  get remoteFamily(): string | undefined {
    return ipFamily(this.conn.remoteAddress);
  }

  /** The local IP address, as net.Socket's. */
  get localAddress(): string | undefined {
    return this.conn.localAddress;
  }

  /** The local port, as net.Socket's. */
  get localPort(): number | undefined {
    return this.conn.localPort;
  }

  /** "IPv4" or "IPv6", from the local address. */
  get localFamily(): string | undefined {
    return ipFamily(this.conn.localAddress);
  }

  /** Bytes the socket has taken but not sent yet (the WebSocket's bufferedAmount). */
  get bufferedAmount(): number {
    return this.conn.bufferedAmount;
  }

  /** address returns the local address, port and family, as net.Socket's. */
  address(): { address: string; family: string; port: number } | Record<string, never> {
    const { localAddress: address, localPort: port } = this.conn;
    if (address === undefined || port === undefined) return {};
    return { address, family: ipFamily(address) ?? "", port };
  }

  /** setNoDelay sets TCP_NODELAY on the underlying socket (on by default in wsconn). */
  setNoDelay(noDelay = true): this {
    this.conn.setNoDelay(noDelay);
    return this;
  }

  /** setKeepAlive turns TCP keep-alive on the underlying socket on or off, as net.Socket's. */
  setKeepAlive(enable = false, initialDelay = 0): this {
    this.conn.setKeepAlive(enable, initialDelay);
    return this;
  }

  /**
   * setTimeout emits 'timeout' after `timeout` ms without bytes read or
   * written, as net.Socket's: the connection stays open, the listener
   * decides. 0 or `Infinity` turns it off. `callback` is added as a
   * 'timeout' listener. Throws a RangeError for a negative value or a finite
   * one above 2^31−1.
   */
  setTimeout(timeout: number, callback?: () => void): this {
    checkTimeout("timeout", timeout);
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const on = !isNoTimeout(timeout);
    if (on) this.idleTimer = startTimer(timeout, () => this.emit("timeout"), true);
    if (callback) {
      if (on) this.once("timeout", callback);
      else this.removeListener("timeout", callback);
    }
    return this;
  }

  // ---- readable side ----

  override _read(): void {
    this.wanted = true;
    if (this.message) this.message.resume();
    else if (!this.awaitingMessage) this.nextMessage();
  }

  private nextMessage(): void {
    this.awaitingMessage = true;
    this.conn.reader().then(
      (message) => this.onMessage(message),
      (err: unknown) => this.onReadError(err),
    );
  }

  private onMessage({ type, stream }: StreamedMessage): void {
    this.awaitingMessage = false;
    if (this.destroyed) return void stream.destroy();
    if (type !== this.type) return this.refuseType(type, stream);
    this.message = stream;
    stream.on("data", (chunk: Buffer) => this.onData(chunk));
    stream.once("end", () => this.onMessageEnd());
    stream.once("error", (err) => this.onReadError(err));
  }

  private onData(chunk: Buffer): void {
    this.bytesRead += chunk.length;
    this.idleTimer?.refresh();
    if (this.push(chunk)) return;
    this.wanted = false;
    this.message?.pause();
  }

  private onMessageEnd(): void {
    this.message = undefined;
    if (this.wanted && !this.destroyed) this.nextMessage();
  }

  private onReadError(err: unknown): void {
    this.awaitingMessage = false;
    this.message = undefined;
    this.readFailed(err);
  }

  /** refuseType fails the connection with 1003, as nhooyr's NetConn does for the wrong type. */
  private refuseType(type: MessageType, stream: Readable): void {
    stream.destroy();
    const reason = `expected ${typeName(this.type)} messages, received ${typeName(type)}`;
    this.closing = true;
    void this.conn.close(StatusCode.UnsupportedData, reason);
    this.destroy(new CloseError(StatusCode.UnsupportedData, reason, { errorCode: ErrorCode.UnexpectedData }));
  }

  // ---- writable side ----

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: Callback): void {
    this.conn.write(this.type, chunk).then(
      () => {
        this.bytesWritten += chunk.length;
        this.idleTimer?.refresh();
        callback();
      },
      (err: unknown) => this.writeFailed(err, callback),
    );
  }

  override _destroy(err: Error | null, callback: Callback): void {
    clearTimeout(this.idleTimer);
    const message = this.message;
    this.message = undefined;
    message?.destroy();
    super._destroy(err, callback);
  }
}

/**
 * netConn returns a Duplex that carries a byte stream over `conn`, like
 * nhooyr's NetConn or a net.Socket: each write is sent as one message of
 * `type` (use Binary unless every write is whole UTF-8), and the payloads of
 * incoming messages are read as one continuous stream: message boundaries are
 * not kept, as with TCP. It lifts the connection's read limit, since a byte
 * stream has no message size, and streams each message without buffering it.
 *
 * Ending: `end()` closes the connection with 1000 once pending writes are on
 * the socket; 'finish' follows the close handshake. A close from the peer with
 * 1000, 1001 or 1005 is the end of the readable side ('end'); any other close
 * code, a protocol error or a socket error destroys the stream with a
 * CloseError (`closeStatus(err)` gives the code, 1006 for a dropped socket). A
 * message of the other type fails the connection with 1003. Unlike TCP there
 * is no half close: once either side closes, no more data flows either way,
 * and a write after the close fails with the CloseError. `destroy()` (and an
 * abort of `signal`, with its reason) drops a connection that is still open:
 * the peer sees 1006.
 *
 * Backpressure flows both ways: while the readable side is full no frames are
 * read from the socket, and the writable side reports full while the socket's
 * buffer is. The Duplex owns the connection's reads and writes; do not read
 * or write `conn` directly while it is in use (ping and close are fine).
 * Throws a TypeError for a type other than Text or Binary.
 */
export function netConn(conn: Conn, type: MessageType, signal?: AbortSignal): NetConn {
  return new NetConn(conn, type, signal);
}

function typeName(type: MessageType): string {
  return type === MessageType.Text ? "text" : "binary";
}

function ipFamily(address: string | undefined): string | undefined {
  if (address === undefined) return undefined;
  return isIPv6(address) ? "IPv6" : "IPv4";
}
