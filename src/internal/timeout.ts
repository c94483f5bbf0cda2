/**
 * Timeouts, checked and armed in one place. Node's setTimeout turns any delay
 * above 2^31−1 ms into 1 ms, so a large "never" would fire at once: here
 * `Infinity` means no timer at all, and a finite delay that setTimeout cannot
 * honour is refused up front.
 */

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
