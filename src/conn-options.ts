/**
 * The options of a connection, how it reports its end, and their checks.
 */

import type { InboundBudget } from "./budget.js";
import type { DeflateSettings } from "./compress.js";
import { checkTimeout } from "./internal/timeout.js";

/** The default read limit in bytes, as in nhooyr's websocket. */
export const DEFAULT_READ_LIMIT = 32768;

/** How long close waits for the peer's close frame and TCP close, in ms. */
export const DEFAULT_CLOSE_TIMEOUT = 5000;

/** The default bound on a whole opening handshake (accept and dial), in ms. */
export const DEFAULT_HANDSHAKE_TIMEOUT = 10_000;

/** CloseInfo is how a connection ended, as `Conn.closed` reports it. */
export interface CloseInfo {
  /**
   * The code of the close frame received (1005 if it had none), or 1006 when
   * none came, as in the WebSocket API. Why this side closed or failed the
   * connection is in the CloseError that reads and writes reject with.
   */
  code: number;
  /** The reason of the close frame received, or "". */
  reason: string;
  /** True when close frames went both ways and the socket closed without error. */
  wasClean: boolean;
}

/** ConnOptions are the per-connection settings shared by accept and dial. */
export interface ConnOptions {
  /**
   * readLimit is the largest message accepted, in bytes (after decompression);
   * a larger one fails the connection with 1009. Default 32768; `Infinity`
   * disables it. Memory per connection grows with it.
   */
  readLimit?: number;
  /**
   * closeTimeout bounds the close handshake in ms: past it the socket is
   * destroyed. Default 5000; `Infinity` waits for the peer as long as it
   * takes; 0 drops the connection as soon as the close frame is written.
   * A RangeError for a finite value above 2^31−1.
   */
  closeTimeout?: number;
  /** onPing is called with the payload of every ping received, from the read path. */
  onPing?: (payload: Buffer) => void;
  /** onPong is called with the payload of every pong received, from the read path. */
  onPong?: (payload: Buffer) => void;
  /** autoPong answers every ping with a pong. Default true. */
  autoPong?: boolean;
  /**
   * writeQueueLimit bounds the bytes of messages waiting for their turn to be
   * written (writes not awaited, to a peer that reads slowly); past it write
   * rejects with `WS_ERR_WRITE_QUEUE_FULL`. One waiting message is always
   * accepted, whatever its size. Default 8 MiB.
   */
  writeQueueLimit?: number;
  /**
   * inboundBudget is the bound, shared with other connections, on the bytes
   * held for unfinished inbound messages (see InboundBudget). Default for
   * `accept` and `serve`: `InboundBudget.shared`, 64 MiB for the whole
   * process; for `dial`: none.
   */
  inboundBudget?: InboundBudget;
}

/** What accept and dial hand to the Conn constructor. */
export interface ConnInit extends ConnOptions {
  /** "server" expects masked frames and closes TCP first; "client" masks its frames. */
  role: "client" | "server";
  subprotocol?: string;
  /** permessage-deflate as negotiated, if it was. */
  deflate?: DeflateSettings;
  compressionThreshold?: number;
  compressionLevel?: number;
}

/** The timeouts of an opening handshake, checked with the connection options. */
export interface HandshakeTimeouts {
  /**
   * handshakeTimeout bounds the whole opening handshake, in ms. Default
   * 10000; 0 or `Infinity` means none. A RangeError for a finite value
   * above 2^31−1.
   */
  handshakeTimeout?: number;
}

/** checkLevel returns a zlib level 0–9, or throws a RangeError. */
export function checkLevel(level: number): number {
  if (!Number.isInteger(level) || level < 0 || level > 9) {
    throw new RangeError(`compression level must be an integer from 0 to 9, not ${String(level)}`);
  }
  return level;
}

/**
 * checkConnOptions throws a RangeError for a limit that is not a
 * non-negative number or a timeout setTimeout cannot honour (see
 * checkTimeout), before accept answers 101 or dial connects.
 */
export function checkConnOptions(options: ConnOptions & HandshakeTimeouts): void {
  if (options.readLimit !== undefined) checkLimit("read limit", options.readLimit);
  if (options.writeQueueLimit !== undefined) checkLimit("write queue limit", options.writeQueueLimit);
  if (options.closeTimeout !== undefined) checkTimeout("closeTimeout", options.closeTimeout);
  if (options.handshakeTimeout !== undefined) checkTimeout("handshakeTimeout", options.handshakeTimeout);
}

/** checkLimit returns a non-negative limit (Infinity allowed), or throws a RangeError naming `what`. */
export function checkLimit(what: string, limit: number): number {
  if (typeof limit !== "number" || Number.isNaN(limit) || limit < 0) {
    throw new RangeError(`${what} must be a non-negative number or Infinity, not ${String(limit)}`);
  }
  return limit;
}
