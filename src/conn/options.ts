/**
 * The options of a connection, their defaults and checks, how a connection
 * reports its end, and InboundBudget, the one option many connections share:
 * a bound on the bytes they hold for inbound messages that have begun but not
 * ended. Each connection bounds its own unread bytes and message size; the
 * budget bounds their sum, so that ten thousand peers each holding an
 * unfinished message just under the read limit cannot add up to an
 * out-of-memory.
 */

import { checkTimeout } from "../internal/waiting.js";
import type { DeflateSettings } from "../protocol/handshake.js";
import type { CompressionQueue } from "./compression-queue.js";
import { type KeepaliveOptions, livenessSettings } from "./liveness.js";

/** The default read limit in bytes, as in nhooyr's websocket. */
export const DEFAULT_READ_LIMIT = 32768;

/** How long close waits for the peer's close frame and TCP close, in ms. */
export const DEFAULT_CLOSE_TIMEOUT = 5000;

/** The default bound on a whole opening handshake (accept and dial), in ms. */
export const DEFAULT_HANDSHAKE_TIMEOUT = 10_000;

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
  /**
   * compressionQueue bounds the zlib work done off the main thread, shared
   * with other connections (see CompressionQueue). Default
   * `CompressionQueue.shared`: 4 operations at once for the whole process.
   */
  compressionQueue?: CompressionQueue | undefined;
  /**
   * keepalive pings the peer after `interval` ms in which nothing arrived
   * from it, and fails the connection with 1011 (`WS_ERR_KEEPALIVE_TIMEOUT`)
   * when nothing arrives within `timeout` ms (default: `interval`) of the
   * ping; the socket is destroyed at most `closeTimeout` later. It catches
   * peers that vanished without a FIN and peers that stopped reading. Bytes
   * the application has not read hold the socket paused and the peer is not
   * blamed for that. One timer per connection. Default off.
   */
  keepalive?: KeepaliveOptions | undefined;
  /**
   * idleTimeout closes the connection with 1001 "idle timeout" once no data
   * message (a frame of one) has gone either way for that many ms; pings and
   * pongs do not count. Default off (0 or `Infinity`: off).
   */
  idleTimeout?: number | undefined;
}

/** What accept and dial hand to the Conn constructor. */
export interface ConnInit extends ConnOptions {
  /** "server" expects masked frames and closes TCP first; "client" masks its frames. */
  role: "client" | "server";
  subprotocol?: string;
  /** permessage-deflate as negotiated, if it was. */
  deflate?: DeflateSettings | undefined;
  compressionThreshold?: number | undefined;
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
 * checkTimeout), and a RangeError or TypeError for a bad keepalive, before
 * accept answers 101 or dial connects.
 */
export function checkConnOptions(options: ConnOptions & HandshakeTimeouts): void {
  if (options.readLimit !== undefined) checkLimit("read limit", options.readLimit);
  if (options.writeQueueLimit !== undefined) checkLimit("write queue limit", options.writeQueueLimit);
  if (options.closeTimeout !== undefined) checkTimeout("closeTimeout", options.closeTimeout);
  if (options.handshakeTimeout !== undefined) checkTimeout("handshakeTimeout", options.handshakeTimeout);
  livenessSettings(options.keepalive, options.idleTimeout);
}

/** checkLimit returns a non-negative limit (Infinity allowed), or throws a RangeError naming `what`. */
export function checkLimit(what: string, limit: number): number {
  if (typeof limit !== "number" || Number.isNaN(limit) || limit < 0) {
    throw new RangeError(`${what} must be a non-negative number or Infinity, not ${String(limit)}`);
  }
  return limit;
}

/** The default bound on bytes of messages waiting to be written (see WriteSide.submit). */
export const DEFAULT_WRITE_QUEUE_LIMIT = 8 * 1024 * 1024;

/** Unread bytes past which a connection pauses its socket; it resumes at half. */
export const READ_HIGH_WATER_MARK = 256 * 1024;

/** The bound on a proxy's CONNECT exchange when dial is given no handshakeTimeout, in ms. */
export const DEFAULT_PROXY_TIMEOUT = 10_000;

/** The default budget, shared by every server connection in the process: 64 MiB. */
export const DEFAULT_INBOUND_BUDGET = 64 * 1024 * 1024;

/**
 * What a connection shows the budget. The budget keeps its accounts in a
 * list, oldest holder first, linked through the accounts themselves.
 * @internal
 */
export interface BudgetAccount {
  /** Bytes this account has charged. */
  budgeted: number;
  budgetPrev: BudgetAccount | undefined;
  budgetNext: BudgetAccount | undefined;
  /** shedForBudget must release everything the account charged, at once. */
  shedForBudget(): void;
}

/**
 * InboundBudget bounds the bytes held, across every connection that shares
 * it, for inbound messages that have begun but not ended and that no
 * `reader()` stream is consuming: bytes no application code can free, since
 * only the rest of the message (from the peer) completes them. Complete
 * messages waiting to be read are not counted (each connection pauses its
 * socket at 256 KiB of them, and reading them frees them).
 *
 * When a charge takes the total past `limit`, the budget sheds connections,
 * oldest holder first among those holding at least the average, until the
 * total is back under the limit: each is closed with 1013 (Try Again Later)
 * and releases what it held at once. A peer that trickles a message in
 * (slowloris) is thus the first to go, and honest peers that send their
 * messages promptly keep being served.
 *
 * `accept` and `serve` use one process-wide budget of 64 MiB by default
 * (`InboundBudget.shared`); `dial` uses none unless given one. A message
 * larger than the budget can never be received whole with `read`: keep
 * `limit` above the largest `readLimit` you allow. `new InboundBudget(Infinity)`
 * turns the bound off. Throws a RangeError for a limit that is not a
 * non-negative number.
 */
export class InboundBudget {
  /** The budget `accept` and `serve` use when given none: 64 MiB, for the whole process. */
  static readonly shared = new InboundBudget(DEFAULT_INBOUND_BUDGET);

  /** The most bytes the accounts may hold together. */
  readonly limit: number;
  private usedBytes = 0;
  private holderCount = 0;
  private shedCount = 0;
  private shedding = false;
  private first: BudgetAccount | undefined;
  private last: BudgetAccount | undefined;

  constructor(limit: number = DEFAULT_INBOUND_BUDGET) {
    this.limit = checkLimit("inbound budget", limit);
  }

  /** Bytes held now, over all connections. */
  get used(): number {
    return this.usedBytes;
  }

  /** How many connections hold bytes now. */
  get holders(): number {
    return this.holderCount;
  }

  /** How many connections the budget has closed with 1013 so far. */
  get shed(): number {
    return this.shedCount;
  }

  /**
   * @internal
   * adjust adds `delta` bytes (negative: releases) to `account`, then sheds
   * connections while the total is over the limit.
   */
  adjust(account: BudgetAccount, delta: number): void {
    if (delta === 0 || (delta < 0 && account.budgeted === 0)) return;
    if (account.budgeted === 0) this.link(account);
    // A release takes back at most what the account holds.
    const applied = delta < 0 ? -Math.min(-delta, account.budgeted) : delta;
    account.budgeted += applied;
    this.usedBytes += applied;
    if (account.budgeted === 0) this.unlink(account);
    if (delta > 0 && this.usedBytes > this.limit && !this.shedding) this.shedOverflow();
  }

  /**
   * shedOverflow closes holders until the total fits: each time the oldest
   * one holding at least the average, which exists whenever the total is
   * over the limit (the largest holder holds at least the average).
   */
  private shedOverflow(): void {
    this.shedding = true;
    try {
      while (this.usedBytes > this.limit && this.first !== undefined) {
        const average = this.usedBytes / this.holderCount;
        let account = this.first;
        while (account.budgeted < average && account.budgetNext !== undefined) account = account.budgetNext;
        this.shedCount++;
        account.shedForBudget();
        // An account that did not release everything must not stall this loop.
        if (account.budgeted > 0) this.adjust(account, -account.budgeted);
      }
    } finally {
      this.shedding = false;
    }
  }

  private link(account: BudgetAccount): void {
    account.budgetPrev = this.last;
    account.budgetNext = undefined;
    if (this.last === undefined) this.first = account;
    else this.last.budgetNext = account;
    this.last = account;
    this.holderCount++;
  }

  private unlink(account: BudgetAccount): void {
    const { budgetPrev: prev, budgetNext: next } = account;
    if (prev === undefined) this.first = next;
    else prev.budgetNext = next;
    if (next === undefined) this.last = prev;
    else next.budgetPrev = prev;
    account.budgetPrev = account.budgetNext = undefined;
    this.holderCount--;
  }
}
