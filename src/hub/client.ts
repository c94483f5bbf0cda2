/**
 * The hub's view of one connection: the public HubClient handle, the
 * per-client send queue drained by its own loop, so that a client that reads
 * slowly only ever delays itself, and the heartbeat that pings each client
 * and reports one that missed too many pings in a row
 * (https://www.rfc-editor.org/rfc/rfc6455#section-5.5.2).
 */

import type { Conn } from "../conn/conn.js";
import type { MessageData, PreparedMessage } from "../conn/write.js";
import { MAX_TIMEOUT } from "../internal/waiting.js";
import { frameHeaderSize, type MessageType } from "../protocol/frame.js";

/**
 * QueueLimits are what every client's queue of one hub shares: the soft
 * bound, the grace a queue may stay past it, and whom to tell when that ran
 * out.
 */
export interface QueueLimits {
  /** maxQueuedBytes: past it, the grace timer runs. */
  readonly soft: number;
  /** slowTimeout, in ms (0 and Infinity arm no timer). */
  readonly grace: number;
  /** overdue is called when a client's queue stayed past `soft` for `grace` ms. */
  overdue(state: ClientState<unknown>): void;
}

/** What a HubClient asks of the hub that owns it. */
export interface ClientOwner<Meta> {
  sendTo(client: HubClient<Meta>, type: MessageType, data: MessageData): boolean;
  closeClient(client: HubClient<Meta>, code: number, reason: string): Promise<void>;
}

/**
 * ClientState is what the hub keeps about a client: its queue, its topics
 * and the heartbeat's counters. The HubClient handle shows parts of it.
 */
export class ClientState<Meta = unknown> {
  readonly topics = new Set<string>();
  readonly queue: SendQueue;
  /** In the hub's registry (false once removed, closed or closing). */
  online = true;
  /** Removed by the application with hub.remove: no 'close' event then. */
  released = false;
  rtt: number | undefined;
  missedPings = 0;
  /** A heartbeat ping is in flight. */
  pinging = false;
  client!: HubClient<Meta>;

  constructor(
    readonly conn: Conn,
    limits: QueueLimits,
  ) {
    this.queue = new SendQueue(conn, limits, () => limits.overdue(this as ClientState<unknown>));
  }
}

/**
 * HubClient is the handle `hub.add` returns for one connection: the
 * connection itself, the application's `meta` (set it, or change its fields,
 * at any time), an optional unique `id`, the topics it is subscribed to and
 * what the heartbeat measured. It stays valid after the client left the hub;
 * `online` tells whether it is still there.
 */
export class HubClient<Meta = Record<string, unknown>> {
  /** The connection. Reading it stays the application's job. */
  readonly conn: Conn;
  /** The id given to `hub.add`, unique within the hub, or undefined. */
  readonly id: string | undefined;
  /** The application's data about this client, free to replace or mutate. */
  meta: Meta;
  /** When the client was added, in ms since the epoch. */
  readonly addedAt = Date.now();
  readonly #state: ClientState<Meta>;
  readonly #owner: ClientOwner<Meta>;

  /** The constructor is internal: clients come from `hub.add`. */
  constructor(state: ClientState<Meta>, meta: Meta, id: string | undefined, owner: ClientOwner<Meta>) {
    this.conn = state.conn;
    this.meta = meta;
    this.id = id;
    this.#state = state;
    this.#owner = owner;
    state.client = this;
  }

  /** The topics this client is subscribed to (a live, read-only view). */
  get topics(): ReadonlySet<string> {
    return this.#state.topics;
  }

  /** True while the client is in its hub: not removed, closed or being closed. */
  get online(): boolean {
    return this.#state.online;
  }

  /** The round-trip time of the last heartbeat ping in ms, or undefined before the first pong. */
  get rtt(): number | undefined {
    return this.#state.rtt;
  }

  /** Heartbeat pings missed in a row; reset by every pong. */
  get missedPings(): number {
    return this.#state.missedPings;
  }

  /** Bytes (whole frames) queued for this client and not yet taken by its socket. */
  get queuedBytes(): number {
    return this.#state.queue.bytes;
  }

  /** Messages queued for this client and not yet taken by its socket. */
  get queuedMessages(): number {
    return this.#state.queue.length;
  }

  /** Messages dropped for this client under the "drop" slow policy. */
  get droppedMessages(): number {
    return this.#state.queue.dropped;
  }

  /**
   * send queues one message for this client alone, through the same queue
   * and slow-consumer policy as broadcasts, so it never waits. Returns false
   * when the message was not queued (client gone, or too slow). Throws a
   * TypeError for a bad type or data.
   */
  send(type: MessageType, data: MessageData): boolean {
    return this.#owner.sendTo(this, type, data);
  }

  /**
   * close removes the client from the hub and closes its connection with the
   * close handshake (`code` 1000 by default), once the messages already
   * queued for it are sent (within the hub's flushTimeout); it resolves when
   * the connection is closed. Rejects with a RangeError, leaving the client in
   * the hub, for a code that may not be sent or a reason over 123 bytes.
   */
  close(code = 1000, reason = ""): Promise<void> {
    return this.#owner.closeClient(this, code, reason);
  }
}

/** wireSize is the size of a message's frame as a server sends it. */
export function wireSize(message: PreparedMessage): number {
  return frameHeaderSize(message.data.length, false) + message.data.length;
}

/**
 * SendQueue holds the messages waiting for one connection and writes them
 * one after the other with `conn.writePrepared`, awaiting each: the socket's
 * backpressure stops this loop only. Bytes are counted from the moment a
 * message is queued until the socket has taken it. While the bytes stay
 * past the soft bound, one timer runs; if they are still past it when it
 * fires, the queue calls `overdue`. Falling back to the bound clears it.
 */
export class SendQueue {
  /** Bytes of the queued messages, the one being written included. */
  bytes = 0;
  /** Messages dropped because the client was judged slow (drop policy). */
  dropped = 0;
  /** The client was judged slow and its queue has not been empty since. */
  slow = false;
  private items: Array<PreparedMessage | undefined> = [];
  private head = 0;
  private running = false;
  private closed = false;
  private idleWaiters: Array<() => void> = [];
  /** Runs while the bytes are past the soft bound (and the client is not judged slow yet). */
  private graceTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly conn: Conn,
    private readonly limits: QueueLimits,
    private readonly overdue: () => void,
  ) {}

  /** Messages waiting, the one being written included. */
  get length(): number {
    return this.items.length - this.head + (this.running ? 1 : 0);
  }

  /**
   * fits tells whether `size` more bytes stay within `max`. A message that
   * alone is larger than `max` still fits an empty queue, so a big message
   * reaches the clients that keep up.
   */
  fits(size: number, max: number): boolean {
    return this.bytes === 0 || this.bytes + size <= max;
  }

  /**
   * push queues `message` of `size` wire bytes, starts the drain loop if it
   * is idle, and the grace timer if the queue just passed the soft bound.
   */
  push(message: PreparedMessage, size: number): void {
    if (this.closed) return;
    this.items.push(message);
    this.bytes += size;
    if (this.bytes > this.limits.soft && this.graceTimer === undefined && !this.slow) this.startGrace();
    if (!this.running) void this.drain();
  }

  /** close drops every queued message; the queue accepts no more. */
  close(): void {
    this.closed = true;
    this.items = [];
    this.head = 0;
    this.bytes = 0;
    this.stopGrace();
    this.wakeIdle();
  }

  /** judged marks the client slow until the queue has drained, and ends its grace. */
  judged(): void {
    this.slow = true;
    this.stopGrace();
  }

  /** stopGrace clears the grace timer: the queue is back within the soft bound, judged, or closed. */
  stopGrace(): void {
    if (this.graceTimer === undefined) return;
    clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
  }

  private startGrace(): void {
    const grace = this.limits.grace;
    // 0: the hub judges at the soft bound itself; Infinity: never by time.
    if (grace === 0 || grace === Infinity) return;
    this.graceTimer = setTimeout(() => {
      this.graceTimer = undefined;
      if (!this.closed && !this.slow && this.bytes > this.limits.soft) this.overdue();
    }, grace);
    this.graceTimer.unref();
  }

  /** idle resolves once nothing is queued (at once if nothing is), or the queue is closed. */
  idle(): Promise<void> {
    if (!this.running || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    this.running = true;
    while (this.head < this.items.length) {
      const message = this.take();
      try {
        await this.conn.writePrepared(message);
      } catch {
        // The connection is closing: the hub removes the client when
        // conn.closed settles, so the rest of the queue has nowhere to go.
        this.close();
        break;
      }
      if (this.closed) break;
      this.bytes -= wireSize(message);
      if (this.graceTimer !== undefined && this.bytes <= this.limits.soft) this.stopGrace();
    }
    this.running = false;
    if (this.bytes === 0) this.slow = false;
    this.wakeIdle();
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  private take(): PreparedMessage {
    const message = this.items[this.head]!;
    this.items[this.head++] = undefined;
    // Empty: let the array's storage go, or an idle client would keep room
    // for its longest backlog. Otherwise compact now and then (shift() is O(n)).
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return message;
  }
}

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
