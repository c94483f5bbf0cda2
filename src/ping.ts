/**
 * Pings that wait for their pong (https://www.rfc-editor.org/rfc/rfc6455#section-5.5.2).
 */

import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";

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
        const onAbort = (): void => {
          map.delete(key);
          reject(signal.reason);
        };
        signal.addEventListener("abort", onAbort, { once: true });
        pending.resolve = (rtt) => (signal.removeEventListener("abort", onAbort), resolve(rtt));
        pending.reject = (err) => (signal.removeEventListener("abort", onAbort), reject(err));
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
