/**
 * Scaling a hub out with node:cluster: the primary forks the workers, every
 * worker serves WebSocket on the same port with a Hub of its own, and the
 * hubs share their broadcasts through Redis pub/sub (RedisBus), so a message
 * from a client on any worker reaches the clients on every worker.
 *
 *                    ┌─ worker 1: serve + Hub ─┐
 *   clients ══ :8080 ┼─ worker 2: serve + Hub ─┼── RedisBus ──► redis-server
 *   (the primary     ├─ worker 3: serve + Hub ─┤   (PUBLISH, SUBSCRIBE
 *    hands them out) └─ worker 4: serve + Hub ─┘    wsconn:hub:all)
 *
 * The primary accepts the connections and hands them to the workers in turn
 * (round-robin, the default everywhere but Windows). Each connection gets a
 * welcome naming its worker, `{"type":"welcome","pid":…,"worker":…}`; each
 * text message a client sends is broadcast to every client of every worker
 * as `{"type":"message","pid":…,"text":…}`. A worker that dies is replaced.
 * SIGTERM or SIGINT to the primary closes every worker gracefully (1001 to
 * each client), and the primary ends once they have exited.
 *
 * As a script (with a TypeScript runner such as tsx, or once compiled):
 *
 *   REDIS_URL=redis://127.0.0.1:6379 node cluster-hub.js [port] [workers]
 *
 * port defaults to 8080 (0: any free port, the same for every worker),
 * workers to the number of cores. In your code import from "wsconn"; this
 * example imports the sources so the tests run it as it is
 * (test/hub/cluster.test.ts).
 */

import cluster from "node:cluster";
import { availableParallelism } from "node:os";
import { pathToFileURL } from "node:url";
import { createClient } from "redis";
import { type Conn, Hub, MessageType, RedisBus, serve } from "../../src/index.js";

/** What a worker sends each new connection first. */
export interface WorkerWelcome {
  type: "welcome";
  pid: number;
  worker: number;
}

/** What every client receives for each message a client sent. */
export interface ClusterMessage {
  type: "message";
  /** The pid of the worker of the client that sent it. */
  pid: number;
  text: string;
}

/** The longest message a client may send, in bytes; a longer one closes its connection with 1009. */
const MAX_MESSAGE = 4096;

/** runPrimary forks `workers` workers, replaces those that die, and stops them all on SIGTERM or SIGINT. */
export async function runPrimary(workers: number): Promise<void> {
  let stopping = false;
  cluster.on("exit", (worker, code, signal) => {
    console.log(`cluster-hub: worker ${worker.id} (pid ${worker.process.pid}) exited with code ${code}${signal ? ` (${signal})` : ""}`);
    if (!stopping) cluster.fork();
  });
  const stop = (): void => {
    stopping = true;
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill("SIGTERM");
  };
  process.once("SIGTERM", stop).once("SIGINT", stop);
  const port = await new Promise<number>((resolve, reject) => {
    let listening = 0;
    cluster.on("listening", (_worker, address) => void (++listening === workers && resolve(address.port)));
    cluster.once("exit", () => void (listening < workers && reject(new Error("a worker exited before listening"))));
    for (let i = 0; i < workers; i++) cluster.fork();
  });
  console.log(`cluster-hub: ${workers} workers listening on port ${port}`);
}

/**
 * runWorker connects to Redis, starts the worker's Hub on a RedisBus and
 * serves on `port` once the hub is subscribed; it resolves with the
 * function that shuts the worker down.
 */
export async function runWorker(port: number, redisUrl: string): Promise<() => Promise<void>> {
  const publisher = createClient({ url: redisUrl });
  const subscriber = publisher.duplicate(); // pub/sub needs its own connection
  await Promise.all([publisher.connect(), subscriber.connect()]);
  const hub = new Hub({ bus: new RedisBus(publisher, subscriber), nodeId: `worker-${process.pid}`, heartbeat: true });
  let quietUntil = 0;
  hub.on("busError", (err) => {
    // An outage reports every dropped broadcast: log one line per 10 s.
    if (Date.now() < quietUntil) return;
    quietUntil = Date.now() + 10_000;
    console.error(`cluster-hub: worker ${process.pid}: ${err.message} (${hub.stats.busErrors} bus errors so far)`);
  });
  await hub.settled(); // subscribed to the broadcast channel before the first client arrives
  const server = await serve({ port, readLimit: MAX_MESSAGE }, (conn) => relay(hub, conn));
  return async () => {
    const stopped = new Promise((resolve) => server.close(resolve)); // no new connections
    await hub.close(); // 1001 to this worker's clients, then leave Redis
    await stopped;
    await Promise.all([quit(publisher), quit(subscriber)]);
  };
}

/** quit closes a Redis client gracefully, or at once while it is disconnected (close() would wait for Redis to come back). */
function quit(client: { readonly isReady: boolean; close(): Promise<unknown>; destroy(): void }): Promise<unknown> {
  return client.isReady ? client.close() : Promise.resolve(client.destroy());
}

/** relay welcomes a connection and broadcasts its text messages to the whole cluster until it ends. */
async function relay(hub: Hub, conn: Conn): Promise<void> {
  let client;
  try {
    client = hub.add(conn);
  } catch {
    return; // the worker is shutting down and closed the connection
  }
  const welcome: WorkerWelcome = { type: "welcome", pid: process.pid, worker: cluster.worker?.id ?? 0 };
  client.send(MessageType.Text, JSON.stringify(welcome));
  for await (const msg of conn) {
    if (msg.type !== MessageType.Text) continue;
    const message: ClusterMessage = { type: "message", pid: process.pid, text: msg.text() };
    hub.broadcast(MessageType.Text, JSON.stringify(message));
  }
}

/** main runs the primary or, in a forked process, a worker. */
async function main(port: number, workers: number): Promise<void> {
  if (cluster.isPrimary) return runPrimary(workers);
  const close = await runWorker(port, process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
  let closing: Promise<void> | undefined;
  const stop = (): void => {
    // Once closed, leaving the primary lets the process end by itself.
    closing ??= close().then(() => void cluster.worker?.disconnect());
  };
  process.once("SIGTERM", stop).once("SIGINT", stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(Number(process.argv[2] ?? 8080), Number(process.argv[3] ?? availableParallelism())).catch((err: unknown) => {
    console.error(`cluster-hub: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
