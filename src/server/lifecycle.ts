/**
 * The lifecycle of the connections one `serve` server holds: the cap on how
 * many may be open, the handshakes under way, and the graceful shutdown that
 * closes them all (RFC 6455 §7.4.1: 1001 Going Away, "a server going down").
 */

import type * as http from "node:http";
import type { Duplex } from "node:stream";
import type { CloseWatcher, Conn } from "../conn/conn.js";
import { DEFAULT_CLOSE_TIMEOUT } from "../conn/options.js";
import { checkTimeout, noop, startTimer } from "../internal/waiting.js";
import { encodeClosePayload } from "../protocol/close.js";
import { isSendableCloseCode, StatusCode } from "../protocol/errors.js";

/** ShutdownOptions configure `server.shutdown`. */
export interface ShutdownOptions {
  /** The close code sent to every connection. Default 1001 (Going Away). */
  code?: number | undefined;
  /** The close reason, at most 123 bytes of UTF-8. Default "server shutting down". */
  reason?: string | undefined;
  /**
   * How long, in ms, the close handshakes may take; connections still open
   * then are dropped. Default 5000; `Infinity` waits for every peer.
   */
  timeout?: number | undefined;
}

/** What `serve`'s server adds to a node:http server. */
export interface ServerLifecycle {
  /** The open connections: added after the 101, removed when their socket closes. A read-only view. */
  readonly conns: ReadonlySet<Conn>;
  /**
   * shutdown closes the server gracefully: it stops listening, answers 503
   * to upgrade requests that still arrive on open HTTP connections, sends a
   * close frame with `code` and `reason` to every connection (and to those
   * whose handshake completes meanwhile), waits up to `timeout` for their
   * close handshakes, drops the rest, and resolves once the listening socket
   * and every connection are closed. Calling it again returns the same
   * promise. Rejects with a RangeError for a code that may not be sent, a
   * reason over 123 bytes or a bad timeout.
   */
  shutdown(options?: ShutdownOptions): Promise<void>;
}

/** The server `serve` resolves with: a node:http (or https) server with its WebSocket connections. */
export type WebSocketServer = http.Server & ServerLifecycle;

/** The default Retry-After, in seconds, of the 503 answered past maxConnections or during shutdown. */
export const DEFAULT_RETRY_AFTER = 5;

/** How a shutdown closes each connection. */
interface Closing {
  code: number;
  reason: string;
}

/**
 * ConnectionTracker counts and holds a server's connections. A handshake
 * holds a place from the moment it is admitted until it fails or its
 * connection closes, so the cap is never passed even by handshakes that
 * finish together; refused upgrades are answered before any WebSocket is
 * made and take no place.
 */
export class ConnectionTracker implements CloseWatcher {
  readonly conns = new Set<Conn>();
  /** Sockets whose handshake is under way. */
  private readonly handshaking = new Set<Duplex>();
  private closing: Closing | undefined;
  private done: Promise<void> | undefined;
  /** Resolves the wait of a shutdown once no connection or handshake is left. */
  private onEmpty: (() => void) | undefined;

  constructor(
    private readonly server: http.Server,
    private readonly maxConnections: number,
  ) {}

  /** admit reserves a place for the handshake on `socket`, or returns why it cannot have one. */
  admit(socket: Duplex): string | undefined {
    if (this.closing !== undefined) return "server shutting down";
    if (this.conns.size + this.handshaking.size >= this.maxConnections) return "too many connections";
    this.handshaking.add(socket);
    return undefined;
  }

  /** failed gives back the place of a handshake that did not make a connection. */
  failed(socket: Duplex): void {
    this.handshaking.delete(socket);
    this.checkEmpty();
  }

  /**
   * opened moves the handshake's place to its connection; it returns false
   * when the server is shutting down, after closing the connection.
   */
  opened(socket: Duplex, conn: Conn): boolean {
    this.handshaking.delete(socket);
    this.conns.add(conn);
    conn.watchClose(this);
    if (this.closing === undefined) return true;
    conn.close(this.closing.code, this.closing.reason).catch(noop);
    return false;
  }

  /** @internal A connection's socket closed (CloseWatcher). */
  connClosed(conn: Conn): void {
    this.conns.delete(conn);
    this.checkEmpty();
  }

  private checkEmpty(): void {
    if (this.onEmpty !== undefined && this.conns.size === 0 && this.handshaking.size === 0) this.onEmpty();
  }

  /** shutdown implements ServerLifecycle.shutdown. */
  shutdown(options: ShutdownOptions = {}): Promise<void> {
    if (this.done !== undefined) return this.done;
    const code = options.code ?? StatusCode.GoingAway;
    const reason = options.reason ?? "server shutting down";
    let timeout: number;
    try {
      if (!isSendableCloseCode(code)) throw new RangeError(`close code ${String(code)} may not be sent`);
      encodeClosePayload(code, reason);
      timeout = checkTimeout("shutdown timeout", options.timeout ?? DEFAULT_CLOSE_TIMEOUT);
    } catch (err) {
      return Promise.reject(err);
    }
    this.closing = { code, reason };
    this.done = this.closeAll(code, reason, timeout);
    return this.done;
  }

  private async closeAll(code: number, reason: string, timeout: number): Promise<void> {
    const server = this.server;
    const listenerClosed = new Promise<void>((resolve) => {
      if (server.listening) server.close(() => resolve());
      else resolve();
    });
    server.closeIdleConnections();
    // Connections whose handshake completes from now on are closed by opened().
    const empty = new Promise<void>((resolve) => (this.onEmpty = resolve));
    for (const conn of this.conns) conn.close(code, reason).catch(noop);
    this.checkEmpty();
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<void>((resolve) => (timer = startTimer(timeout, resolve, true)));
    await Promise.race([empty, expired]);
    clearTimeout(timer);
    // What is left has had its chance: drop it, handshakes under way included
    // (their accept fails on the destroyed socket, or times out, and makes nothing).
    for (const conn of this.conns) conn.closeNow();
    for (const socket of this.handshaking) socket.destroy();
    this.handshaking.clear();
    server.closeAllConnections();
    // node:http's close callback does not wait for upgraded sockets: the set does.
    await Promise.all([listenerClosed, empty]);
  }
}
