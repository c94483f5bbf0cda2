/**
 * The hub's heartbeat: every interval it pings each client that has no ping
 * in flight, records the round trip, and reports a client that missed too
 * many pings in a row.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-5.5.2
 */

import type { ClientState } from "./hub-client.js";
import { MAX_TIMEOUT } from "./internal/timeout.js";

/**
 * HeartbeatOptions configure the hub's pings. A client's pongs are only seen
 * while something reads its connection (a read loop, `for await`, a stream
 * adapter or `conn.closeRead()`), so turn the heartbeat on only for
 * connections the application reads.
 */
export interface HeartbeatOptions {
  /** Time between pings to a client, in ms. Default 30000. */
  interval?: number;
  /** How long a ping waits for its pong before it counts as missed, in ms. Default 10000. */
  timeout?: number;
  /** Pings missed in a row after which the client is closed. Default 2. */
  maxMissed?: number;
}

/** The heartbeat defaults, in ms and pings. */
export const DEFAULT_HEARTBEAT: Readonly<Required<HeartbeatOptions>> = Object.freeze({
  interval: 30_000,
  timeout: 10_000,
  maxMissed: 2,
});

/** What the heartbeat needs from the hub. */
export interface HeartbeatHost {
  clients(): Iterable<ClientState<unknown>>;
  /** Called once a client has missed `maxMissed` pings in a row. */
  unresponsive(state: ClientState<unknown>): void;
}

/** normalizeHeartbeat fills in the defaults; it throws a RangeError for a bad value. */
export function normalizeHeartbeat(options: HeartbeatOptions | true): Required<HeartbeatOptions> {
  const given = options === true ? {} : options;
  const result = {
    interval: given.interval ?? DEFAULT_HEARTBEAT.interval,
    timeout: given.timeout ?? DEFAULT_HEARTBEAT.timeout,
    maxMissed: given.maxMissed ?? DEFAULT_HEARTBEAT.maxMissed,
  };
  for (const [name, value] of Object.entries(result)) {
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0 || value > MAX_TIMEOUT) {
      throw new RangeError(`heartbeat.${name} must be a positive number up to ${MAX_TIMEOUT}, not ${String(value)}`);
    }
  }
  return result;
}

/**
 * Heartbeat pings the hub's clients on one unref'd interval timer. Each ping
 * gets its own timeout (an AbortController and an unref'd timer rather than
 * AbortSignal.timeout, so that stop() can clear it and nothing outlives the
 * hub).
 */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;
  private readonly inFlight = new Set<AbortController>();

  constructor(
    private readonly options: Required<HeartbeatOptions>,
    private readonly host: HeartbeatHost,
  ) {}

  /** start arms the interval timer. */
  start(): void {
    this.timer = setInterval(() => this.tick(), this.options.interval);
    this.timer.unref();
  }

  /** stop clears the timer and abandons every ping in flight. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    for (const controller of this.inFlight) controller.abort(new Error("hub closed"));
    this.inFlight.clear();
  }

  private tick(): void {
    for (const state of this.host.clients()) {
      if (!state.pinging) this.ping(state);
    }
  }

  private ping(state: ClientState<unknown>): void {
    state.pinging = true;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error("ping timed out")), this.options.timeout);
    timer.unref();
    this.inFlight.add(controller);
    const done = (): void => {
      clearTimeout(timer);
      this.inFlight.delete(controller);
      state.pinging = false;
    };
    state.conn.ping(controller.signal).then(
      (rtt) => {
        done();
        state.rtt = rtt;
        state.missedPings = 0;
      },
      () => {
        const timedOut = controller.signal.aborted && this.timer !== undefined;
        done();
        if (timedOut && state.online) this.missed(state);
      },
    );
  }

  private missed(state: ClientState<unknown>): void {
    state.missedPings++;
    if (state.missedPings >= this.options.maxMissed) this.host.unresponsive(state);
  }
}
