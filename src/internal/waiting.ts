/**
 * The small mechanisms waiting APIs are built of: a first-come first-served
 * mutex whose waiters can give up, the binding of an AbortSignal, and
 * timeouts checked and armed in one place.
 */

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
  cleanup(): void;
  done: boolean;
}

/**
 * AbortableLock serializes reads or writes of one connection. The read and
 * write sides extend it, each being its own lock: two objects less per
 * connection. Its four fields are all an idle lock costs.
 */
export class AbortableLock {
  private held = false;
  /** Waiters in order; the shared empty array until someone waits. */
  private waiters: Waiter[] = NO_WAITERS;
  private head = 0;
  /** What `shut` was given; NOT_FAILED until then. */
  private failReason: unknown = NOT_FAILED;

  /** tryAcquire takes the lock when it is free and nobody waits. */
  tryAcquire(): boolean {
    if (this.held || this.failReason !== NOT_FAILED || this.head < this.waiters.length) return false;
    this.held = true;
    return true;
  }

  /**
   * acquire resolves once the lock is held. It rejects with the signal's reason
   * on abort (leaving the queue as if it never asked) and with the failure
   * given to `shut`.
   */
  acquire(signal?: AbortSignal): Promise<void> {
    if (this.failReason !== NOT_FAILED) return Promise.reject(this.failReason);
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.tryAcquire()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, cleanup: noop, done: false };
      if (signal) waiter.cleanup = bindAbort(signal, () => this.settle(waiter, signal.reason));
      if (this.waiters === NO_WAITERS) this.waiters = [];
      this.waiters.push(waiter);
    });
  }

  /** release hands the lock to the next live waiter, or frees it. */
  release(): void {
    while (this.head < this.waiters.length) {
      const waiter = this.waiters[this.head]!;
      this.waiters[this.head++] = undefined as unknown as Waiter;
      if (waiter.done) continue;
      this.compact();
      waiter.done = true;
      waiter.cleanup();
      waiter.resolve();
      return;
    }
    this.compact();
    this.held = false;
  }

  /** shut rejects every waiter and every later acquire with `err`: the connection is closing. */
  shut(err: unknown): void {
    if (this.failReason !== NOT_FAILED) return;
    this.failReason = err;
    for (let i = this.head; i < this.waiters.length; i++) this.settle(this.waiters[i]!, err);
    this.waiters = NO_WAITERS;
    this.head = 0;
  }

  /** isHeld tells whether someone holds the lock. */
  get isHeld(): boolean {
    return this.held;
  }

  private settle(waiter: Waiter, err: unknown): void {
    if (waiter.done) return;
    waiter.done = true;
    waiter.cleanup();
    waiter.reject(err);
  }

  private compact(): void {
    // The common case, a lock nobody waited for: nothing to compact, and no
    // new array per release (a hub writes millions of messages through here).
    if (this.head === 0 && this.waiters.length === 0) return;
    if (this.head === this.waiters.length) {
      this.waiters = NO_WAITERS;
      this.head = 0;
    } else if (this.head > 64 && this.head * 2 > this.waiters.length) {
      this.waiters = this.waiters.slice(this.head);
      this.head = 0;
    }
  }
}

/** Marks a lock that has not failed (`shut` may be given any value, even undefined). */
const NOT_FAILED: unique symbol = Symbol("not failed");

/** Never written to: an idle lock (most of them) holds no array of its own. */
const NO_WAITERS: Waiter[] = [];

/**
 * noop does nothing: one shared function for ignored rejections
 * (`.catch(noop)`) and empty callbacks, instead of a new closure each time.
 */
export function noop(): void {}

/**
 * bindAbort calls `onAbort` once, when `signal` aborts, and returns the undo
 * that stops listening; call it once the wait is over. Without a signal it
 * returns the shared noop and allocates nothing. A signal already aborted is
 * the caller's to check: its listener would never run.
 */
export function bindAbort(signal: AbortSignal | undefined, onAbort: () => void): () => void {
  if (signal === undefined) return noop;
  signal.addEventListener("abort", onAbort, { once: true });
  return () => signal.removeEventListener("abort", onAbort);
}

/** The longest delay setTimeout honours, in ms (about 24.8 days). */
export const MAX_TIMEOUT = 2 ** 31 - 1;

/**
 * checkTimeout returns `ms` when it is a usable timeout: a number of
 * milliseconds from 0 to 2^31−1, or Infinity for none. Throws a RangeError
 * naming `what` for anything else (NaN, a negative number, a finite delay
 * longer than setTimeout can wait, a non-number).
 */
export function checkTimeout(what: string, ms: number): number {
  if (typeof ms !== "number" || Number.isNaN(ms) || ms < 0 || (ms > MAX_TIMEOUT && ms !== Infinity)) {
    throw new RangeError(`${what} must be a number of ms from 0 to ${MAX_TIMEOUT}, or Infinity for none, not ${String(ms)}`);
  }
  return ms;
}

/**
 * startTimer calls `fn` after `ms` and returns the timer, or returns
 * undefined and arms nothing when `ms` is Infinity. With `unref` the timer
 * does not keep the process alive.
 */
export function startTimer(ms: number, fn: () => void, unref = false): NodeJS.Timeout | undefined {
  if (ms === Infinity) return undefined;
  const timer = setTimeout(fn, ms);
  if (unref) timer.unref();
  return timer;
}

/** isNoTimeout tells whether a timeout where 0 also means none (handshakes, as in node:http) is off. */
export function isNoTimeout(ms: number): boolean {
  return ms === 0 || ms === Infinity;
}
