/**
 * The multi-node side of the hub: the HubBus interface a broker adapter
 * implements, the in-process MemoryBus, the RedisBus adapter over the
 * application's own node-redis clients, and the envelope that carries a
 * message with the id of the node that sent it.
 */

import { noop } from "../internal/waiting.js";
import { MessageType } from "../protocol/frame.js";

/** BusListener receives the bytes published on a channel. */
export type BusListener = (message: Buffer) => void;

/**
 * HubBus is what a hub needs from a message broker to share broadcasts and
 * topics with hubs in other processes: publish bytes on a channel, and
 * subscribe and unsubscribe a listener. Methods may return promises; a
 * rejection is reported as the hub's 'busError' event, and so is what
 * `watch` reports. Delivery is at most once, like Redis pub/sub: a message
 * published while a node is not (yet) subscribed is not delivered to it.
 */
export interface HubBus {
  /** publish sends `message` to every listener of `channel`, in every process. */
  publish(channel: string, message: Buffer): unknown;
  /** subscribe adds `listener` to `channel`. */
  subscribe(channel: string, listener: BusListener): unknown;
  /** unsubscribe removes `listener` from `channel`. */
  unsubscribe(channel: string, listener: BusListener): unknown;
  /**
   * watch, optional, passes `onError` the failures the bus notices outside
   * any call (a lost broker connection, a failed reconnection) until the
   * function it returns is called. A hub watches its bus from its
   * constructor until `close()` has left the bus, and reports what it is
   * told as 'busError'.
   */
  watch?(onError: (err: Error) => void): () => void;
}

/**
 * MemoryBus is a HubBus within one process: several hubs in the same
 * process (tests, or one hub per server in a process that runs several)
 * share their messages through it. Delivery is asynchronous (a microtask
 * later), in publish order, like a broker's. It does not cross processes:
 * `cluster` workers are processes, so they need a broker (RedisBus).
 */
export class MemoryBus implements HubBus {
  private readonly channels = new Map<string, Set<BusListener>>();

  /** publish delivers `message` to the channel's listeners on a microtask. */
  publish(channel: string, message: Buffer): void {
    const listeners = this.channels.get(channel);
    if (listeners === undefined) return;
    const targets = [...listeners];
    queueMicrotask(() => {
      for (const listener of targets) listener(message);
    });
  }

  /** subscribe adds `listener` to `channel`; adding it twice has no effect. */
  subscribe(channel: string, listener: BusListener): void {
    let listeners = this.channels.get(channel);
    if (listeners === undefined) this.channels.set(channel, (listeners = new Set()));
    listeners.add(listener);
  }

  /** unsubscribe removes `listener` from `channel`. */
  unsubscribe(channel: string, listener: BusListener): void {
    const listeners = this.channels.get(channel);
    if (listeners?.delete(listener) && listeners.size === 0) this.channels.delete(channel);
  }

  /** The number of channels with at least one listener. */
  get channelCount(): number {
    return this.channels.size;
  }
}

/** RedisConnection is what RedisBus watches on both node-redis (v4 or later) clients. */
export interface RedisConnection {
  /** isReady is false while the client is disconnected or reconnecting. */
  readonly isReady: boolean;
  /** on adds a listener: RedisBus listens to 'error' on both clients, and to 'ready' on the subscriber. */
  on(event: "error" | "ready", listener: (...args: unknown[]) => void): unknown;
}

/** RedisPublisher is the part of a node-redis (v4 or later) client RedisBus publishes with. */
export interface RedisPublisher extends RedisConnection {
  publish(channel: string, message: Buffer): Promise<unknown>;
}

/**
 * RedisSubscriber is the part of a node-redis (v4 or later) client in
 * subscriber mode that RedisBus listens with; RedisBus passes `bufferMode`
 * true so binary messages arrive as Buffers.
 */
export interface RedisSubscriber extends RedisConnection {
  subscribe(channel: string, listener: (message: Buffer, channel: Buffer) => unknown, bufferMode: true): Promise<unknown>;
  unsubscribe(channel: string, listener: (message: Buffer, channel: Buffer) => unknown, bufferMode: true): Promise<unknown>;
}

/** A subscription RedisBus was asked for, until it is withdrawn. */
interface Subscription {
  readonly channel: string;
  readonly listener: BusListener;
  /** Resolves when the subscription is withdrawn, so nobody waits for a SUBSCRIBE that no longer matters. */
  readonly withdrawn: Promise<void>;
  withdraw(): void;
}

/**
 * RedisBus carries hub messages over Redis pub/sub, through the
 * application's own node-redis clients, so wsconn depends on no Redis
 * package. Redis needs two connections: `publisher` (a normal client) and
 * `subscriber` (one in subscriber mode, e.g. `publisher.duplicate()`), both
 * connected by the application, which also closes them after the hubs.
 * Other clients (ioredis, …) fit by implementing HubBus in a few lines.
 *
 * Outages: node-redis reconnects by itself and then restores the
 * subscriptions Redis had confirmed. RedisBus does the rest. It listens to
 * both clients' 'error' events, which node-redis emits on every lost
 * connection and failed reconnection attempt (unheard, one would crash the
 * process), and reports them as the hubs' 'busError'. While the publisher is
 * disconnected, `publish` rejects at once: the message is dropped, reported,
 * and never delivered late (node-redis would hold it in its unbounded
 * offline queue and send it on reconnection, to whichever nodes had
 * resubscribed by then); only a message published in the instant before
 * node-redis notices a dead connection still goes to that queue (create the
 * publisher with `disableOfflineQueue: true` to drop it too). A SUBSCRIBE
 * that failed with its connection, which node-redis does not restore, is
 * sent again on the subscriber's next 'ready'. An UNSUBSCRIBE while
 * disconnected resolves at once, so a hub closes during an outage.
 */
export class RedisBus implements HubBus {
  private readonly watchers = new Set<(err: Error) => void>();
  /** The subscriptions asked for and not withdrawn, by channel, then listener. */
  private readonly wanted = new Map<string, Map<BusListener, Subscription>>();
  /** Wanted subscriptions whose SUBSCRIBE failed, to send again on 'ready'. */
  private readonly lost = new Set<Subscription>();

  /** The constructor adds the 'error' and 'ready' listeners; they stay as long as the clients. */
  constructor(
    private readonly publisher: RedisPublisher,
    private readonly subscriber: RedisSubscriber,
  ) {
    publisher.on("error", (err) => this.report(`the Redis publisher's connection failed: ${messageOf(err)}`, err));
    subscriber.on("error", (err) => this.report(`the Redis subscriber's connection failed: ${messageOf(err)}`, err));
    subscriber.on("ready", () => this.restore());
  }

  /** publish runs PUBLISH and resolves with the number of receivers; it rejects at once while the publisher is disconnected. */
  publish(channel: string, message: Buffer): Promise<unknown> {
    if (!this.publisher.isReady) return Promise.reject(new Error("the Redis publisher is disconnected: message dropped"));
    return this.publisher.publish(channel, message);
  }

  /**
   * subscribe runs SUBSCRIBE (node-redis shares one SUBSCRIBE per channel
   * among listeners). It resolves once Redis confirms it, or once the
   * subscription is withdrawn; it rejects if the SUBSCRIBE failed, and then
   * tries again on the subscriber's next 'ready'.
   */
  subscribe(channel: string, listener: BusListener): Promise<unknown> {
    const subscription = this.want(channel, listener);
    return Promise.race([this.take(subscription), subscription.withdrawn]);
  }

  /**
   * unsubscribe removes the listener, and the SUBSCRIBE once the channel has
   * no listener left. While the subscriber is disconnected it resolves at
   * once: Redis ended that connection's subscriptions with it, and
   * node-redis sends the UNSUBSCRIBE on reconnection, so it does not restore
   * the channel.
   */
  unsubscribe(channel: string, listener: BusListener): Promise<unknown> {
    this.withdraw(channel, listener);
    const done = this.subscriber.unsubscribe(channel, listener, true);
    if (this.subscriber.isReady) return done;
    done.catch(noop); // the connection's end took the subscription already
    return Promise.resolve();
  }

  /**
   * watch passes `onError` the failures of the clients' connections, and of
   * the SUBSCRIBEs sent again on 'ready', until the returned function is
   * called.
   */
  watch(onError: (err: Error) => void): () => void {
    this.watchers.add(onError);
    return () => void this.watchers.delete(onError);
  }

  private want(channel: string, listener: BusListener): Subscription {
    this.withdraw(channel, listener);
    let withdraw = noop;
    const withdrawn = new Promise<void>((resolve) => (withdraw = resolve));
    const subscription: Subscription = { channel, listener, withdrawn, withdraw };
    let listeners = this.wanted.get(channel);
    if (listeners === undefined) this.wanted.set(channel, (listeners = new Map()));
    listeners.set(listener, subscription);
    return subscription;
  }

  private withdraw(channel: string, listener: BusListener): void {
    const listeners = this.wanted.get(channel);
    const subscription = listeners?.get(listener);
    if (subscription === undefined) return;
    listeners!.delete(listener);
    if (listeners!.size === 0) this.wanted.delete(channel);
    this.lost.delete(subscription);
    subscription.withdraw();
  }

  private isWanted(subscription: Subscription): boolean {
    return this.wanted.get(subscription.channel)?.get(subscription.listener) === subscription;
  }

  /** take sends the SUBSCRIBE; if it fails while still wanted, it is lost until the next 'ready'. */
  private take(subscription: Subscription): Promise<unknown> {
    const { channel, listener } = subscription;
    return this.subscriber.subscribe(channel, listener, true).catch((err: unknown) => {
      if (this.isWanted(subscription)) this.lost.add(subscription);
      throw err;
    });
  }

  /** restore sends again, once the subscriber is ready, the SUBSCRIBEs that failed. */
  private restore(): void {
    const lost = [...this.lost];
    this.lost.clear();
    for (const subscription of lost) {
      this.take(subscription).catch((err: unknown) => {
        this.report(`failed to subscribe to ${subscription.channel} again: ${messageOf(err)}`, err);
      });
    }
  }

  private report(message: string, cause: unknown): void {
    const err = new Error(message, { cause });
    for (const watcher of this.watchers) watcher(err);
  }
}

/** The first byte of an envelope: its format version. */
const ENVELOPE_VERSION = 1;

/** Set in an envelope's type byte for a message sent with `compress: false`. */
const UNCOMPRESSED_FLAG = 0x80;

/** A hub message as it travels on the bus. */
export interface Envelope {
  /** The id of the node that published it. */
  node: string;
  type: MessageType;
  data: Buffer;
  /** False when it was broadcast with `compress: false`. */
  compress: boolean;
}

/**
 * encodeEnvelope lays out a message for the bus: version, message type
 * (with UNCOMPRESSED_FLAG for `compress: false`), the length of the node id
 * (1–255 bytes), the node id, then the payload as is, so binary messages
 * cross the broker without re-encoding.
 */
export function encodeEnvelope(node: Buffer, type: MessageType, data: Uint8Array, compress = true): Buffer {
  const out = Buffer.allocUnsafe(3 + node.length + data.length);
  out[0] = ENVELOPE_VERSION;
  out[1] = compress ? type : type | UNCOMPRESSED_FLAG;
  out[2] = node.length;
  node.copy(out, 3);
  out.set(data, 3 + node.length);
  return out;
}

/** decodeEnvelope parses an envelope, or returns why it cannot. */
export function decodeEnvelope(bytes: unknown): Envelope | string {
  if (!Buffer.isBuffer(bytes)) return "the bus delivered a message that is not a Buffer (subscribe in buffer mode)";
  if (bytes.length < 3 || bytes[0] !== ENVELOPE_VERSION) return "the bus delivered a message that is not a hub envelope";
  const type = bytes[1]! & ~UNCOMPRESSED_FLAG;
  const nodeEnd = 3 + bytes[2]!;
  if ((type !== MessageType.Text && type !== MessageType.Binary) || bytes[2] === 0 || nodeEnd > bytes.length) {
    return "the bus delivered a malformed hub envelope";
  }
  return { node: bytes.toString("utf8", 3, nodeEnd), type, data: bytes.subarray(nodeEnd), compress: (bytes[1]! & UNCOMPRESSED_FLAG) === 0 };
}

/** checkNodeId returns the node id as bytes; it throws a RangeError unless it is 1–255 bytes. */
export function checkNodeId(id: string): Buffer {
  const bytes = typeof id === "string" ? Buffer.from(id, "utf8") : undefined;
  if (bytes === undefined || bytes.length === 0 || bytes.length > 255) {
    throw new RangeError("nodeId must be a string of 1 to 255 bytes");
  }
  return bytes;
}

/** What a BusLink hands back to its hub. */
export interface BusLinkHost {
  /** A message from another node arrived on `topic` (undefined: a broadcast). */
  deliver(topic: string | undefined, envelope: Envelope): void;
  /** Something failed on the bus. */
  error(err: Error): void;
}

/**
 * BusLink is one hub's attachment to a bus: one channel for broadcasts and
 * one per topic that has local subscribers, joined when the first local
 * client subscribes and left when the last one goes. It tags what it
 * publishes with its node id and ignores its own messages when they come
 * back, since the hub delivered them locally already.
 */
export class BusLink {
  private readonly listeners = new Map<string, BusListener>();
  private readonly pending = new Set<Promise<unknown>>();
  private readonly node: Buffer;
  private readonly unwatch: () => void;

  constructor(
    private readonly bus: HubBus,
    private readonly prefix: string,
    readonly nodeId: string,
    private readonly host: BusLinkHost,
  ) {
    this.node = checkNodeId(nodeId);
    this.unwatch = bus.watch?.((err) => host.error(busError(err))) ?? noop;
  }

  /** join subscribes to the channel of `topic` (undefined: broadcasts). */
  join(topic: string | undefined): void {
    const channel = this.channel(topic);
    if (this.listeners.has(channel)) return;
    const listener: BusListener = (message) => this.receive(topic, message);
    this.listeners.set(channel, listener);
    this.track(() => this.bus.subscribe(channel, listener));
  }

  /** leave unsubscribes from the channel of `topic`. */
  leave(topic: string | undefined): void {
    const channel = this.channel(topic);
    const listener = this.listeners.get(channel);
    if (listener === undefined) return;
    this.listeners.delete(channel);
    this.track(() => this.bus.unsubscribe(channel, listener));
  }

  /** send publishes a message on the channel of `topic` (undefined: broadcasts). */
  send(topic: string | undefined, type: MessageType, data: Uint8Array, compress = true): void {
    const envelope = encodeEnvelope(this.node, type, data, compress);
    this.track(() => this.bus.publish(this.channel(topic), envelope));
  }

  /** settled resolves once every bus operation started so far has finished. */
  async settled(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  /** close leaves every channel, waits for the bus operations to finish, and stops watching the bus. */
  async close(): Promise<void> {
    for (const [channel, listener] of this.listeners) this.track(() => this.bus.unsubscribe(channel, listener));
    this.listeners.clear();
    await this.settled();
    this.unwatch();
  }

  private channel(topic: string | undefined): string {
    return topic === undefined ? `${this.prefix}:all` : `${this.prefix}:topic:${topic}`;
  }

  private receive(topic: string | undefined, message: unknown): void {
    const envelope = decodeEnvelope(message);
    if (typeof envelope === "string") return this.host.error(new Error(`failed to receive from the hub bus: ${envelope}`));
    if (envelope.node === this.nodeId) return;
    this.host.deliver(topic, envelope);
  }

  /** track runs a bus operation and reports its failure, thrown or rejected. */
  private track(operation: () => unknown): void {
    let result: unknown;
    try {
      result = operation();
    } catch (err) {
      return this.host.error(busError(err));
    }
    if (typeof (result as PromiseLike<unknown> | undefined)?.then !== "function") return;
    const settled: Promise<unknown> = Promise.resolve(result).catch((err: unknown) => this.host.error(busError(err)));
    this.pending.add(settled);
    void settled.finally(() => this.pending.delete(settled));
  }
}

function busError(err: unknown): Error {
  return new Error(`failed to use the hub bus: ${messageOf(err)}`, { cause: err });
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
