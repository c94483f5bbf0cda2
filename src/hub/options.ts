/**
 * The Hub's options, events and counters, and the checks that turn options
 * into settings.
 */

import type { Conn } from "../conn/conn.js";
import { checkTimeout } from "../internal/waiting.js";
import type { CloseInfo } from "../protocol/close.js";
import type { HubBus } from "./bus.js";
import type { HeartbeatOptions, HubClient } from "./client.js";

/** The default soft bound on the bytes queued for one client: 1 MiB. */
export const DEFAULT_MAX_QUEUED_BYTES = 1024 * 1024;

/** How long a client's queue may stay past maxQueuedBytes before it is judged slow, by default, in ms. */
export const DEFAULT_SLOW_TIMEOUT = 1000;

/** The default hardQueueLimit is this many times maxQueuedBytes (16 MiB with the default bound). */
export const HARD_QUEUE_LIMIT_FACTOR = 16;

/** How long closing lets a client's queue drain before the close frame, by default, in ms. */
export const DEFAULT_FLUSH_TIMEOUT = 2000;

/** The default prefix of the hub's bus channels. */
export const DEFAULT_CHANNEL_PREFIX = "wsconn:hub";

/**
 * SlowPolicy says what happens to a client judged slow (its queue stayed
 * past `maxQueuedBytes` for `slowTimeout`, or would pass `hardQueueLimit`):
 * "close" closes it with 1008 "too slow"; "drop" drops the message that
 * would pass the hard limit and every message that comes while it is judged
 * slow, until its queue has drained (the client misses them, and stays).
 */
export type SlowPolicy = "close" | "drop";

/** HubOptions configure a Hub. Every field is optional. */
export interface HubOptions {
  /**
   * maxQueuedBytes is the soft bound on the bytes (whole frames) queued for
   * one client and not yet taken by its socket. Passing it is not slowness
   * in itself: a burst broadcast in one synchronous run is all queued before
   * any socket can take it. A client whose queue stays past this bound for
   * `slowTimeout` is judged slow and `slowPolicy` applies. Default 1 MiB;
   * `Infinity` turns the time judgement off. Throws a RangeError unless it
   * is a positive number (Infinity included).
   */
  maxQueuedBytes?: number;
  /**
   * slowTimeout is the grace, in ms, a client's queue may stay past
   * `maxQueuedBytes` before the client is judged slow; its queue falling
   * back to the bound ends the grace. It costs one timer per client past the
   * bound, none for the others. 0 judges a client slow as soon as a message
   * would take its queue past the bound (a message larger than the bound
   * still goes to an empty queue); `Infinity` leaves `hardQueueLimit` alone
   * to judge. Default 1000. Throws a RangeError for a negative number, NaN,
   * or a finite value over 2^31−1.
   */
  slowTimeout?: number;
  /**
   * hardQueueLimit is the hard cap on the bytes queued for one client: a
   * message that would take a non-empty queue past it is not queued, and
   * the client is judged slow at once, whatever `slowTimeout` says. Queued
   * messages are shared between clients (the memory of a broadcast is paid
   * once), so this caps what one slow client keeps alive. A message larger
   * than the cap still goes to an empty queue. Default 16 × maxQueuedBytes
   * (16 MiB with the default bound). Throws a RangeError unless it is a
   * number at least `maxQueuedBytes` (Infinity for no cap).
   */
  hardQueueLimit?: number;
  /** slowPolicy applies to a client judged slow. Default "close". Throws a TypeError for another value. */
  slowPolicy?: SlowPolicy;
  /**
   * flushTimeout bounds, in ms, how long `hub.close()` and `client.close()`
   * let a client's queue drain before sending the close frame; what is left
   * then is dropped. Clients closed for being slow or unresponsive are
   * closed at once. Default 2000; `Infinity` waits for the queue however
   * long it takes.
   */
  flushTimeout?: number;
  /**
   * heartbeat pings every client and closes (1011) those that miss
   * `maxMissed` pings in a row; `true` uses the defaults (every 30 s, 10 s
   * timeout, 2 misses). Pongs are only seen while the application reads the
   * connection (read loop, `for await`, or `conn.closeRead()`). Default off.
   */
  heartbeat?: HeartbeatOptions | boolean;
  /** bus shares broadcasts and topics with hubs in other processes. Default none. */
  bus?: HubBus;
  /** channelPrefix names the bus channels: `<prefix>:all`, `<prefix>:topic:<topic>`. Default "wsconn:hub". */
  channelPrefix?: string;
  /** nodeId tags what this hub publishes on the bus (1–255 bytes). Default a random UUID. */
  nodeId?: string;
}

/** AddOptions are the optional settings of `hub.add`. */
export interface AddOptions {
  /** An id unique within the hub, to find the client with `hub.get(id)`. */
  id?: string;
  /** Topics to subscribe the client to at once. */
  topics?: Iterable<string>;
}

/** SendOptions select the clients of a broadcast or publish on this node. */
export interface SendOptions<Meta> {
  /** A client to leave out, typically the sender. */
  except?: HubClient<Meta>;
  /** Only clients for which it returns true receive the message. */
  filter?: (client: HubClient<Meta>) => boolean;
  /**
   * compress: false sends the message uncompressed to every client, also on
   * the other nodes of the bus (see WriteOptions). Default true.
   */
  compress?: boolean | undefined;
}

/** HubStats are the hub's counters since it was made. */
export interface HubStats {
  /** Clients in the hub now. */
  clients: number;
  /** Topics with at least one local subscriber now. */
  topics: number;
  /** Clients ever added. */
  added: number;
  /** Calls of broadcast. */
  broadcasts: number;
  /** Calls of publish. */
  published: number;
  /** PreparedMessages the hub made (one per broadcast, publish, send or bus message): each is framed once. */
  prepared: number;
  /** Messages queued to clients (one per client reached). */
  queued: number;
  /** Messages dropped under the "drop" policy. */
  dropped: number;
  /** Clients closed for being too slow (1008). */
  slowClosed: number;
  /** Clients closed by the heartbeat. */
  heartbeatClosed: number;
  /** Messages published on the bus. */
  busSent: number;
  /** Messages from other nodes received on the bus. */
  busReceived: number;
  /** Bus failures (also emitted as 'busError'). */
  busErrors: number;
}

/**
 * HubEvents are the events a Hub emits. There is no 'error' event (which
 * Node throws when nobody listens): a client's failure shows in its 'close',
 * the hub's own interventions in 'slow' and 'unresponsive', and broker
 * trouble in 'busError'.
 */
export interface HubEvents<Meta> {
  /** A client was added. */
  open: [client: HubClient<Meta>];
  /** A client's connection ended (not emitted for clients taken back with `remove`). */
  close: [client: HubClient<Meta>, info: CloseInfo];
  /**
   * A client was judged slow and the slow policy applied: closed, or
   * dropping messages (once per episode: again only after its queue had
   * drained). Emitted from the broadcast, publish or send that would have
   * passed `hardQueueLimit` (a listener that throws makes that call throw),
   * or from the `slowTimeout` timer (a throw there is an uncaught exception).
   */
  slow: [client: HubClient<Meta>, queuedBytes: number];
  /** A client missed `maxMissed` heartbeat pings and is being closed with 1011. */
  unresponsive: [client: HubClient<Meta>];
  /**
   * The bus failed: a publish (dropped while the broker is unreachable), a
   * subscribe, a lost broker connection, or a malformed message. Without a
   * listener, one process warning is printed.
   */
  busError: [error: Error];
}

/**
 * HubSlowMessage is what a Hub publishes on the diagnostics channel
 * `wsconn:hub:slow` (DiagnosticsChannel.HubSlow) when it applies its slow
 * policy to a client, just before the 'slow' event; it is only built while
 * the channel has subscribers.
 */
export interface HubSlowMessage {
  /** The client judged slow (a HubClient of any hub). */
  client: HubClient<unknown>;
  /** Its connection. */
  conn: Conn;
  /** The bytes queued for it when it was judged slow. */
  queuedBytes: number;
  /** What happens to it: closed with 1008, or its messages dropped. */
  policy: SlowPolicy;
}

/** checkMaxQueuedBytes returns `value` if it is a positive number (Infinity too); otherwise it throws a RangeError. */
export function checkMaxQueuedBytes(value: number): number {
  if (typeof value !== "number" || Number.isNaN(value) || value <= 0) {
    throw new RangeError(`maxQueuedBytes must be a positive number or Infinity, not ${String(value)}`);
  }
  return value;
}

/**
 * checkHardQueueLimit returns `value`, or the default for `soft` when it is
 * undefined. Throws a RangeError unless it is a number at least `soft`.
 */
export function checkHardQueueLimit(value: number | undefined, soft: number): number {
  if (value === undefined) return soft * HARD_QUEUE_LIMIT_FACTOR;
  if (typeof value !== "number" || Number.isNaN(value) || value < soft) {
    throw new RangeError(`hardQueueLimit must be a number at least maxQueuedBytes (${soft}), or Infinity, not ${String(value)}`);
  }
  return value;
}

/** checkSlowTimeout returns `value` if it is a usable timeout (0 to 2^31−1 ms, or Infinity); otherwise it throws a RangeError. */
export function checkSlowTimeout(value: number): number {
  return checkTimeout("slowTimeout", value);
}

/** checkFlushTimeout returns `value` if it is a usable timeout; otherwise it throws a RangeError. */
export function checkFlushTimeout(value: number): number {
  return checkTimeout("flushTimeout", value);
}

/** checkSlowPolicy returns `value` if it is "close" or "drop"; otherwise it throws a TypeError. */
export function checkSlowPolicy(value: SlowPolicy): SlowPolicy {
  if (value !== "close" && value !== "drop") throw new TypeError(`slowPolicy must be "close" or "drop", not ${String(value)}`);
  return value;
}
