/**
 * Liveness watches one connection for the two ways a long-lived connection
 * goes bad without anyone closing it: a peer that is gone (keepalive: a ping
 * after a quiet interval, and an end when nothing answers it) and a
 * connection nobody uses any more (idle timeout). It keeps two timestamps
 * and at most one timer, armed for the nearer deadline; the hot paths only
 * store a timestamp, and a connection without either option has no Liveness
 * at all.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-5.5.2 (a ping may serve as a keepalive)
 */

import { performance } from "node:perf_hooks";
import { checkTimeout, MAX_TIMEOUT } from "../internal/waiting.js";

/**
 * KeepaliveOptions turn on the keepalive: once nothing has arrived from the
 * peer for `interval` ms, a ping is sent; when nothing (its pong, or any
 * other frame) arrives within `timeout` ms of it, the connection is failed
 * with 1011 and the socket destroyed at most `closeTimeout` later.
 */
export interface KeepaliveOptions {
  /** Quiet time before a ping, in ms: a positive number up to 2^31−1. */
  interval: number;
  /** How long the ping waits for an answer, in ms. Default: `interval`. */
  timeout?: number | undefined;
}

/** What Liveness asks of its connection. */
export interface LivenessHost {
  /** Send a keepalive ping (it may sit behind queued data: a peer that does not read never answers it). */
  sendKeepalivePing(): void;
  /** Nothing answered the ping within the timeout. */
  keepaliveExpired(waitedMs: number): void;
  /** No data message went either way for idleTimeout ms. */
  idleExpired(): void;
  /**
   * True while the connection holds the socket paused because the
   * application has not read what arrived: the peer cannot prove it is alive
   * then, and is not blamed for it.
   */
  readonly pausedForReader: boolean;
}

/** Settings checked once, shared by every connection made with the same options. */
export interface LivenessSettings {
  interval: number;
  timeout: number;
  idleTimeout: number;
}

/**
 * livenessSettings checks the keepalive and idleTimeout options and returns
 * the settings, or undefined when both are off. Throws a RangeError for an
 * interval or timeout that is not a positive number of ms up to 2^31−1, a
 * TypeError for a keepalive that is not an object, and checks idleTimeout as
 * any timeout (0 or Infinity: off).
 */
export function livenessSettings(keepalive: KeepaliveOptions | undefined, idleTimeout: number | undefined): LivenessSettings | undefined {
  let interval = Infinity;
  let timeout = Infinity;
  if (keepalive !== undefined) {
    if (typeof keepalive !== "object" || keepalive === null) {
      throw new TypeError(`keepalive must be an object { interval, timeout? }, not ${String(keepalive)}`);
    }
    interval = checkPositive("keepalive.interval", keepalive.interval);
    timeout = keepalive.timeout === undefined ? interval : checkPositive("keepalive.timeout", keepalive.timeout);
  }
  let idle = idleTimeout === undefined ? Infinity : checkTimeout("idleTimeout", idleTimeout);
  if (idle === 0) idle = Infinity;
  if (interval === Infinity && idle === Infinity) return undefined;
  return { interval, timeout, idleTimeout: idle };
}

function checkPositive(what: string, ms: number): number {
  if (typeof ms !== "number" || !(ms > 0) || ms > MAX_TIMEOUT) {
    throw new RangeError(`${what} must be a number of ms from 1 to ${MAX_TIMEOUT}, not ${String(ms)}`);
  }
  return ms;
}

/** The shortest delay Liveness arms, in ms: deadlines closer than this are checked then. */
const MIN_DELAY = 1;

/**
 * Liveness is the keepalive and idle state of one connection: five fields
 * and one timer.
 */
export class Liveness {
  /** When something last arrived from the peer (performance.now()). */
  lastArrival: number;
  /** When a data message (a frame of one) last went either way. */
  lastData: number;
  /** When the unanswered keepalive ping went out, or -1. */
  private pingSentAt = -1;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly host: LivenessHost,
    private readonly settings: LivenessSettings,
  ) {
    const now = performance.now();
    this.lastArrival = now;
    this.lastData = now;
    this.arm(now);
  }

  /** arrived records bytes from the peer: the hot path, a timestamp and nothing else. */
  arrived(): void {
    this.lastArrival = performance.now();
  }

  /** dataMessage records a data frame sent or received. */
  dataMessage(): void {
    this.lastData = performance.now();
  }

  /** stop disarms the timer for good: the connection is closing. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** @internal check runs when the timer fires: it acts on what is due and re-arms for the next deadline. */
  check(): void {
    this.timer = undefined;
    if (this.stopped) return;
    const now = performance.now();
    const { interval, timeout, idleTimeout } = this.settings;
    if (this.host.pausedForReader) this.lastArrival = now;
    if (idleTimeout !== Infinity && now - this.lastData >= idleTimeout) {
      this.stop();
      return this.host.idleExpired();
    }
    if (interval !== Infinity) {
      if (this.pingSentAt >= 0 && this.lastArrival > this.pingSentAt) this.pingSentAt = -1;
      if (this.pingSentAt >= 0) {
        if (now - this.pingSentAt >= timeout) {
          this.stop();
          return this.host.keepaliveExpired(now - this.pingSentAt);
        }
      } else if (now - this.lastArrival >= interval) {
        this.pingSentAt = now;
        this.host.sendKeepalivePing();
        if (this.stopped) return;
      }
    }
    this.arm(now);
  }

  /** arm sets the one timer for the nearest deadline. */
  private arm(now: number): void {
    const { interval, timeout, idleTimeout } = this.settings;
    let due = Infinity;
    if (interval !== Infinity) {
      const sent = this.pingSentAt;
      if (sent < 0) due = this.lastArrival + interval;
      // A ping's answer is looked for after `interval` too, so that pings keep
      // their pace when the timeout is longer than the interval.
      else due = now < sent + interval && interval < timeout ? sent + interval : sent + timeout;
    }
    if (idleTimeout !== Infinity) due = Math.min(due, this.lastData + idleTimeout);
    const delay = Math.min(Math.max(Math.ceil(due - now), MIN_DELAY), MAX_TIMEOUT);
    this.timer = setTimeout(onLivenessTimer, delay, this);
    this.timer.unref();
  }
}

/** One shared timer callback: no closure per connection. */
function onLivenessTimer(liveness: Liveness): void {
  liveness.check();
}
