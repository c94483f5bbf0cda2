/**
 * The Hub's options, events and counters, and the checks that turn options
 * into settings.
 */

import { checkTimeout } from "../internal/waiting.js";
import type { CloseInfo } from "../protocol/close.js";
import type { HubBus } from "./bus.js";
import type { HeartbeatOptions, HubClient } from "./client.js";

/** The default bound on the bytes queued for one client: 1 MiB. */
export const DEFAULT_MAX_QUEUED_BYTES = 1024 * 1024;

/** How long closing lets a client's queue drain before the close frame, by default, in ms. */
export const DEFAULT_FLUSH_TIMEOUT = 2000;

/** The default prefix of the hub's bus channels. */
export const DEFAULT_CHANNEL_PREFIX = "wsconn:hub";

/**
 * SlowPolicy says what happens to a client whose queue is full: "close"
 * closes it with 1008 "too slow", "drop" drops the messages that do not fit
 * (the client misses them, and stays).
 */
export type SlowPolicy = "close" | "drop";

/** HubOptions configure a Hub. Every field is optional. */
export interface HubOptions {
  /**
   * maxQueuedBytes bounds the bytes (whole frames) queued for one client
   * and not yet taken by its socket; past it, `slowPolicy` applies. A
   * message larger than the bound still goes to a client whose queue is
   * empty. Queued messages are shared between clients, so the memory of a
   * broadcast is paid once, but a client that falls behind keeps old
   * messages alive: this bound is what caps it. Messages broadcast in one
   * synchronous run all count until the event loop lets the sockets take
   * them, so a burst larger than the bound overflows every client: yield
   * between large batches. Default 1 MiB.
   */
  maxQueuedBytes?: number;
  /** slowPolicy applies when a client's queue is full. Default "close". */
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
  /** Clients closed for being too slow. */
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
  /** A client's queue was full and the slow policy applied: closed, or dropping messages. */
  slow: [client: HubClient<Meta>, queuedBytes: number];
  /** A client missed `maxMissed` heartbeat pings and is being closed with 1011. */
  unresponsive: [client: HubClient<Meta>];
  /** The bus failed (publish, subscribe, or a malformed message). Without a listener, one process warning is printed. */
  busError: [error: Error];
}

export function checkMaxQueuedBytes(value: number): number {
  if (typeof value !== "number" || Number.isNaN(value) || value <= 0) {
    throw new RangeError(`maxQueuedBytes must be a positive number or Infinity, not ${String(value)}`);
  }
  return value;
}

export function checkFlushTimeout(value: number): number {
  return checkTimeout("flushTimeout", value);
}

export function checkSlowPolicy(value: SlowPolicy): SlowPolicy {
  if (value !== "close" && value !== "drop") throw new TypeError(`slowPolicy must be "close" or "drop", not ${String(value)}`);
  return value;
}
