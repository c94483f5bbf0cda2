/**
 * Hub: a registry of connections with broadcast, topics, a heartbeat, a
 * bound on what a slow client may hold up, graceful shutdown, and a
 * pluggable bus that shares broadcasts and topics between processes.
 *
 * Every client has its own send queue drained by its own loop (see
 * hub-client.ts): a broadcast frames the message once and queues it to each
 * client without waiting for any of them, so no client's slowness delays
 * another. A client is judged slow on what its socket fails to drain over
 * time, not on what one tick queued: when its queue stays past
 * `maxQueuedBytes` for `slowTimeout`, or at once when a message would take
 * it past `hardQueueLimit`. It is then closed (or its new messages dropped).
 */

import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Conn } from "../conn/conn.js";
import { type MessageData, PreparedMessage } from "../conn/write.js";
import { hubSlowChannel } from "../internal/diagnostics.js";
import { noop, startTimer } from "../internal/waiting.js";
import { type CloseInfo, encodeClosePayload } from "../protocol/close.js";
import { StatusCode } from "../protocol/errors.js";
import type { MessageType } from "../protocol/frame.js";
import { BusLink, type Envelope } from "./bus.js";
import { type ClientOwner, ClientState, Heartbeat, HubClient, normalizeHeartbeat, type QueueLimits, wireSize } from "./client.js";
import {
  type AddOptions,
  checkFlushTimeout,
  checkHardQueueLimit,
  checkMaxQueuedBytes,
  checkSlowPolicy,
  checkSlowTimeout,
  DEFAULT_CHANNEL_PREFIX,
  DEFAULT_FLUSH_TIMEOUT,
  DEFAULT_MAX_QUEUED_BYTES,
  DEFAULT_SLOW_TIMEOUT,
  type HubEvents,
  type HubOptions,
  type HubSlowMessage,
  type HubStats,
  type SendOptions,
  type SlowPolicy,
} from "./options.js";

type Counters = Omit<HubStats, "clients" | "topics">;

/**
 * Hub keeps track of connections and sends to all of them, or to topics,
 * without letting one slow client hold up the others. Reading stays the
 * application's: the hub only writes (and pings).
 *
 * Closing codes: 1008 "too slow" for a client judged slow (as in nhooyr's
 * chat example); 1011 "ping timeout" for a client that stops
 * answering the heartbeat (the server cannot serve it: an unexpected
 * condition, not the server going away); 1001 for `hub.close()` (the server
 * is going away). A close to a client that no longer reads completes after
 * the connection's close timeout (5 s by default).
 *
 * Events are emitted synchronously from what caused them: 'open' from
 * `add`, 'slow' from the `broadcast`, `publish` or `send` that would have
 * passed a queue's hard limit (a listener that throws makes that call
 * throw, and a broadcast then stops at that client) or from the timer that
 * found a queue still past `maxQueuedBytes` after `slowTimeout` (a throw
 * there is an uncaught exception), 'close' when `conn.closed` settles (a
 * throw there is an unhandled rejection).
 */
export class Hub<Meta = Record<string, unknown>> extends EventEmitter<HubEvents<Meta>> {
  private readonly byConn = new Map<Conn, ClientState<Meta>>();
  private readonly byId = new Map<string, ClientState<Meta>>();
  private readonly topicMembers = new Map<string, Set<ClientState<Meta>>>();
  /** Clients the hub is closing whose connection has not ended yet. */
  private readonly leaving = new Set<ClientState<Meta>>();
  private readonly limits: QueueLimits;
  /** Past this, a message is not queued and the client is judged slow at once. */
  private readonly immediateLimit: number;
  private readonly slowPolicy: SlowPolicy;
  private readonly flushTimeout: number;
  private readonly heartbeat: Heartbeat | undefined;
  private readonly link: BusLink | undefined;
  private readonly owner: ClientOwner<Meta>;
  private readonly counters: Counters = {
    added: 0, broadcasts: 0, published: 0, prepared: 0, queued: 0, dropped: 0,
    slowClosed: 0, heartbeatClosed: 0, busSent: 0, busReceived: 0, busErrors: 0,
  };
  private shutdown: { promise: Promise<void>; code: number; reason: string } | undefined;
  private warned = false;

  /**
   * The constructor checks `options` and starts the heartbeat and the bus
   * subscription when asked for. Throws a RangeError or TypeError for a bad
   * option.
   */
  constructor(options: HubOptions = {}) {
    super();
    const soft = checkMaxQueuedBytes(options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES);
    const grace = checkSlowTimeout(options.slowTimeout ?? DEFAULT_SLOW_TIMEOUT);
    const hard = checkHardQueueLimit(options.hardQueueLimit, soft);
    this.immediateLimit = grace === 0 ? soft : hard;
    this.limits = { soft, grace, overdue: (state) => this.onOverdue(state as ClientState<Meta>) };
    this.slowPolicy = checkSlowPolicy(options.slowPolicy ?? "close");
    this.flushTimeout = checkFlushTimeout(options.flushTimeout ?? DEFAULT_FLUSH_TIMEOUT);
    this.owner = {
      sendTo: (client, type, data) => this.sendTo(client, type, data),
      closeClient: (client, code, reason) => this.closeClient(client, code, reason),
    };
    if (options.heartbeat !== undefined && options.heartbeat !== false) {
      this.heartbeat = new Heartbeat(normalizeHeartbeat(options.heartbeat), {
        clients: () => this.byConn.values(),
        unresponsive: (state) => this.onUnresponsive(state as ClientState<Meta>),
      });
      this.heartbeat.start();
    }
    if (options.bus !== undefined) {
      const prefix = options.channelPrefix ?? DEFAULT_CHANNEL_PREFIX;
      this.link = new BusLink(options.bus, prefix, options.nodeId ?? randomUUID(), {
        deliver: (topic, envelope) => this.onBusMessage(topic, envelope),
        error: (err) => this.onBusError(err),
      });
      this.link.join(undefined);
    }
  }

  // ---- registry ----

  /**
   * add registers `conn` with the application's `meta` (default `{}`) and
   * returns its handle, then emits 'open'. The client leaves the hub by
   * itself when its connection ends, however it ends; 'close' follows.
   * Throws an Error if the connection is already in the hub, if `id` is
   * taken, or if the hub is closed (the connection is then closed too, with
   * the hub's close code).
   */
  add(conn: Conn, meta?: Meta, options: AddOptions = {}): HubClient<Meta> {
    if (this.shutdown !== undefined) {
      void conn.close(this.shutdown.code, this.shutdown.reason).catch(noop);
      throw new Error("failed to add a client: the hub is closed");
    }
    if (this.byConn.has(conn)) throw new Error("failed to add a client: the connection is already in the hub");
    const id = options.id;
    if (id !== undefined && this.byId.has(id)) throw new Error(`failed to add a client: id ${JSON.stringify(id)} is taken`);
    const state = new ClientState<Meta>(conn, this.limits);
    const client = new HubClient<Meta>(state, meta ?? ({} as Meta), id, this.owner);
    this.byConn.set(conn, state);
    if (id !== undefined) this.byId.set(id, state);
    this.counters.added++;
    void conn.closed.then((info) => this.onConnClosed(state, info));
    for (const topic of options.topics ?? []) this.subscribe(client, topic);
    this.emit("open", client);
    return client;
  }

  /**
   * remove takes a client out of the hub without closing its connection:
   * its topics are left, its queued messages dropped, and no 'close' event
   * follows. Returns false if it was not in the hub.
   */
  remove(client: HubClient<Meta>): boolean {
    const state = this.stateOf(client);
    if (state === undefined) return false;
    state.released = true;
    this.detach(state);
    return true;
  }

  /** get returns the client added with `id`, if it is in the hub. */
  get(id: string): HubClient<Meta> | undefined {
    return this.byId.get(id)?.client;
  }

  /** has tells whether `client` is in the hub. */
  has(client: HubClient<Meta>): boolean {
    return this.stateOf(client) !== undefined;
  }

  /** The number of clients in the hub (the online count). */
  get size(): number {
    return this.byConn.size;
  }

  /** Iterating a hub yields its clients, in the order they were added. */
  *[Symbol.iterator](): IterableIterator<HubClient<Meta>> {
    for (const state of this.byConn.values()) yield state.client;
  }

  /** The hub's counters, as a snapshot. */
  get stats(): HubStats {
    return { clients: this.byConn.size, topics: this.topicMembers.size, ...this.counters };
  }

  // ---- sending ----

  /**
   * broadcast frames a message once and queues it to every client (but
   * `except`, and those `filter` refuses), and publishes it on the bus for
   * the other nodes. It never waits: it returns how many local clients it
   * was queued to. A client judged slow gets the slow policy. Pass
   * a PreparedMessage to reuse one. Throws a TypeError for a bad type or
   * data; after `close()` it sends nothing and returns 0.
   */
  broadcast(type: MessageType, data: MessageData, options?: SendOptions<Meta>): number;
  broadcast(message: PreparedMessage, options?: SendOptions<Meta>): number;
  broadcast(
    typeOrMessage: MessageType | PreparedMessage,
    dataOrOptions?: MessageData | SendOptions<Meta>,
    maybeOptions?: SendOptions<Meta>,
  ): number {
    const [message, options] = this.prepare(typeOrMessage, dataOrOptions, maybeOptions);
    if (this.shutdown !== undefined) return 0;
    this.counters.broadcasts++;
    this.publishOnBus(undefined, message);
    return this.deliverAll(this.byConn.values(), message, options);
  }

  /**
   * publish is broadcast restricted to the subscribers of `topic`, here and
   * on the other nodes of the bus. Returns how many local clients it was
   * queued to. Throws a TypeError for a bad topic, type or data.
   */
  publish(topic: string, type: MessageType, data: MessageData, options?: SendOptions<Meta>): number;
  publish(topic: string, message: PreparedMessage, options?: SendOptions<Meta>): number;
  publish(
    topic: string,
    typeOrMessage: MessageType | PreparedMessage,
    dataOrOptions?: MessageData | SendOptions<Meta>,
    maybeOptions?: SendOptions<Meta>,
  ): number {
    checkTopic(topic);
    const [message, options] = this.prepare(typeOrMessage, dataOrOptions, maybeOptions);
    if (this.shutdown !== undefined) return 0;
    this.counters.published++;
    this.publishOnBus(topic, message);
    const members = this.topicMembers.get(topic);
    return members === undefined ? 0 : this.deliverAll(members, message, options);
  }

  // ---- topics ----

  /**
   * subscribe adds `client` to `topic` (any string). Returns false if the
   * client is not in the hub or already subscribed. With a bus, the hub
   * subscribes to the topic's channel when its first local client joins;
   * await `settled()` to know the broker has taken the subscription.
   */
  subscribe(client: HubClient<Meta>, topic: string): boolean {
    checkTopic(topic);
    const state = this.stateOf(client);
    if (state === undefined || state.topics.has(topic)) return false;
    state.topics.add(topic);
    let members = this.topicMembers.get(topic);
    if (members === undefined) {
      this.topicMembers.set(topic, (members = new Set()));
      this.link?.join(topic);
    }
    members.add(state);
    return true;
  }

  /** unsubscribe removes `client` from `topic`. Returns false if it was not subscribed. */
  unsubscribe(client: HubClient<Meta>, topic: string): boolean {
    const state = this.stateOf(client);
    if (state === undefined || !state.topics.delete(topic)) return false;
    this.leaveTopic(state, topic);
    return true;
  }

  /** subscribers yields the local clients subscribed to `topic`. */
  *subscribers(topic: string): IterableIterator<HubClient<Meta>> {
    for (const state of this.topicMembers.get(topic) ?? []) yield state.client;
  }

  /** subscriberCount is the number of local clients subscribed to `topic`. */
  subscriberCount(topic: string): number {
    return this.topicMembers.get(topic)?.size ?? 0;
  }

  /**
   * settled resolves once every bus operation started so far (subscriptions,
   * publishes) has finished, failed ones included (they emit 'busError').
   * Without a bus it resolves at once.
   */
  async settled(): Promise<void> {
    await this.link?.settled();
  }

  // ---- closing ----

  /**
   * close shuts the hub down: it stops the heartbeat, leaves the bus, and
   * closes every client with the close handshake, all in parallel, with
   * `code` (default 1001, going away) and `reason`. Each client's queue
   * may drain first, for up to `flushTimeout`; what is left then is dropped.
   * It resolves when every connection is closed — bounded by flushTimeout
   * plus the connections' close timeout — and after their 'close' events.
   * Nothing is sent after close() is called. Later calls return the same
   * promise. Rejects with a RangeError for a code that
   * may not be sent or a reason over 123 bytes.
   */
  close(code: number = StatusCode.GoingAway, reason = "server shutting down"): Promise<void> {
    if (this.shutdown === undefined) {
      try {
        encodeClosePayload(code, reason);
      } catch (err) {
        return Promise.reject(err);
      }
      this.shutdown = { promise: this.shutDown(code, reason), code, reason };
    }
    return this.shutdown.promise;
  }

  private async shutDown(code: number, reason: string): Promise<void> {
    this.heartbeat?.stop();
    for (const state of this.byConn.values()) void this.closeState(state, code, reason, true).catch(noop);
    const leftBus = this.link?.close();
    await Promise.all(Array.from(this.leaving, (state) => state.conn.closed));
    await leftBus;
  }

  // ---- internals ----

  private stateOf(client: HubClient<Meta>): ClientState<Meta> | undefined {
    const state = this.byConn.get(client?.conn);
    return state?.client === client ? state : undefined;
  }

  private prepare(
    typeOrMessage: MessageType | PreparedMessage,
    dataOrOptions: MessageData | SendOptions<Meta> | undefined,
    maybeOptions: SendOptions<Meta> | undefined,
  ): [PreparedMessage, SendOptions<Meta> | undefined] {
    if (typeOrMessage instanceof PreparedMessage) {
      const options = dataOrOptions as SendOptions<Meta> | undefined;
      if (options?.compress !== false || !typeOrMessage.compress) return [typeOrMessage, options];
      this.counters.prepared++;
      return [new PreparedMessage(typeOrMessage.type, typeOrMessage.data, { compress: false }), options];
    }
    const message = new PreparedMessage(typeOrMessage, dataOrOptions as MessageData, { compress: maybeOptions?.compress });
    this.counters.prepared++;
    return [message, maybeOptions];
  }

  private deliverAll(states: Iterable<ClientState<Meta>>, message: PreparedMessage, options?: SendOptions<Meta>): number {
    const size = wireSize(message);
    const except = options?.except;
    const filter = options?.filter;
    let count = 0;
    for (const state of states) {
      if (state.client === except || (filter !== undefined && !filter(state.client))) continue;
      if (this.deliver(state, message, size)) count++;
    }
    return count;
  }

  /**
   * deliver queues `message` to one client, unless the client is judged
   * slow (dropping) or the message would pass the immediate limit, which
   * judges it slow now.
   */
  private deliver(state: ClientState<Meta>, message: PreparedMessage, size: number): boolean {
    const queue = state.queue;
    if (!queue.slow && queue.fits(size, this.immediateLimit)) {
      queue.push(message, size);
      this.counters.queued++;
      return true;
    }
    if (this.slowPolicy === "drop") {
      this.counters.dropped++;
      queue.dropped++;
    }
    if (!queue.slow) this.judgeSlow(state);
    return false;
  }

  /** onOverdue is called when a client's queue stayed past maxQueuedBytes for slowTimeout. */
  private onOverdue(state: ClientState<Meta>): void {
    if (state.online && !state.queue.slow) this.judgeSlow(state);
  }

  /** judgeSlow applies the slow policy to a client and reports it. */
  private judgeSlow(state: ClientState<Meta>): void {
    const queued = state.queue.bytes;
    state.queue.judged();
    if (hubSlowChannel.hasSubscribers) {
      const message: HubSlowMessage = { client: state.client as HubClient<unknown>, conn: state.conn, queuedBytes: queued, policy: this.slowPolicy };
      hubSlowChannel.publish(message);
    }
    if (this.slowPolicy === "close") {
      this.counters.slowClosed++;
      void this.closeState(state, StatusCode.PolicyViolation, "too slow").catch(noop);
    }
    this.emit("slow", state.client, queued);
  }

  private onUnresponsive(state: ClientState<Meta>): void {
    this.counters.heartbeatClosed++;
    void this.closeState(state, StatusCode.InternalError, "ping timeout").catch(noop);
    this.emit("unresponsive", state.client);
  }

  private sendTo(client: HubClient<Meta>, type: MessageType, data: MessageData): boolean {
    const message = new PreparedMessage(type, data);
    this.counters.prepared++;
    const state = this.stateOf(client);
    return state !== undefined && this.deliver(state, message, wireSize(message));
  }

  private closeClient(client: HubClient<Meta>, code: number, reason: string): Promise<void> {
    try {
      encodeClosePayload(code, reason);
    } catch (err) {
      return Promise.reject(err);
    }
    const state = this.stateOf(client);
    return state === undefined ? client.conn.close(code, reason) : this.closeState(state, code, reason, true);
  }

  /**
   * closeState takes a client out of the hub and starts its close
   * handshake, after its queue drained (within flushTimeout) if `flush`.
   */
  private closeState(state: ClientState<Meta>, code: number, reason: string, flush = false): Promise<void> {
    const wasOnline = state.online;
    this.detach(state, !flush);
    this.leaving.add(state);
    if (!flush || !wasOnline) return state.conn.close(code, reason);
    return this.flush(state).then(() => state.conn.close(code, reason));
  }

  /** flush resolves when the client's queue is empty, or after flushTimeout, and closes the queue. */
  private async flush(state: ClientState<Meta>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = startTimer(this.flushTimeout, resolve, true);
    });
    await Promise.race([state.queue.idle(), timeout]);
    clearTimeout(timer);
    state.queue.close();
  }

  /** detach takes a client out of the registry and its topics, and drops its queue unless told not to. */
  private detach(state: ClientState<Meta>, dropQueue = true): void {
    if (dropQueue) state.queue.close();
    else state.queue.stopGrace(); // a client the hub closes is not judged slow any more
    if (!state.online) return;
    state.online = false;
    this.byConn.delete(state.conn);
    const id = state.client.id;
    if (id !== undefined && this.byId.get(id) === state) this.byId.delete(id);
    for (const topic of state.topics) this.leaveTopic(state, topic);
    state.topics.clear();
  }

  private leaveTopic(state: ClientState<Meta>, topic: string): void {
    const members = this.topicMembers.get(topic);
    if (members === undefined || !members.delete(state) || members.size > 0) return;
    this.topicMembers.delete(topic);
    this.link?.leave(topic);
  }

  private onConnClosed(state: ClientState<Meta>, info: CloseInfo): void {
    this.detach(state);
    this.leaving.delete(state);
    if (!state.released) this.emit("close", state.client, info);
  }

  // ---- bus ----

  private publishOnBus(topic: string | undefined, message: PreparedMessage): void {
    if (this.link === undefined) return;
    this.counters.busSent++;
    this.link.send(topic, message.type, message.data, message.compress);
  }

  private onBusMessage(topic: string | undefined, envelope: Envelope): void {
    if (this.shutdown !== undefined) return;
    this.counters.busReceived++;
    const states = topic === undefined ? this.byConn.values() : this.topicMembers.get(topic);
    if (states === undefined) return;
    const message = new PreparedMessage(envelope.type, envelope.data, { compress: envelope.compress });
    this.counters.prepared++;
    this.deliverAll(states, message);
  }

  private onBusError(err: Error): void {
    this.counters.busErrors++;
    if (this.listenerCount("busError") > 0) {
      this.emit("busError", err);
    } else if (!this.warned) {
      this.warned = true;
      process.emitWarning(`${err.message} (listen to the hub's 'busError' event to handle this)`, { code: "WSCONN_HUB_BUS" });
    }
  }
}

function checkTopic(topic: string): void {
  if (typeof topic !== "string") throw new TypeError(`a topic must be a string, not ${typeof topic}`);
}
