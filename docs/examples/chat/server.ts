/**
 * A chat server with rooms, built on accept and Hub: one http server serves
 * the page (index.html, next to this file) and upgrades `/ws` to WebSocket.
 *
 *   browser ──GET /──────────► http server ──► index.html
 *   browser ══/ws?room=r&name=n══► accept ──► hub.add(conn, { name, room })
 *                                             hub.subscribe(client, room)
 *   a text message from a client  ──► hub.publish(room, …) to everyone in it
 *
 * Each connection is read by its own `for await` loop (which also answers
 * pings and sees the heartbeat's pongs); everything sent goes through the
 * hub, which frames each message once and never lets a slow browser hold up
 * the others. With a RedisBus, several processes share the rooms.
 *
 * As a script (with a TypeScript runner such as tsx, or once compiled):
 *
 *   node server.js [port]                # then open http://localhost:8080
 *   REDIS_URL=redis://localhost:6379 node server.js 8081   # another node
 *
 * In your code import from "wsconn"; this example imports the sources so
 * the tests run it as it is.
 */

import { readFile } from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { pathToFileURL } from "node:url";
import { accept, Hub, MessageType, StatusCode, type Conn, type HubBus, type HubClient } from "../../../src/index.js";

/** What the hub keeps about each chatter. */
export interface Chatter {
  name: string;
  room: string;
}

/** ChatOptions configure startChat. */
export interface ChatOptions {
  /** TCP port. Default 0 (any free port). */
  port?: number;
  /** Interface to listen on. Default 127.0.0.1. */
  host?: string;
  /** A bus shared with other chat servers (RedisBus in production). Default none. */
  bus?: HubBus;
}

/** A running chat server. */
export interface Chat {
  url: string;
  hub: Hub<Chatter>;
  server: http.Server;
  /** Stops accepting, says goodbye to everyone (1001), and resolves when all is closed. */
  close(): Promise<void>;
}

/** The longest chat line accepted, in bytes; a longer message closes the connection with 1009. */
const MAX_LINE = 2048;

const page = readFile(new URL("./index.html", import.meta.url));

/** startChat starts the chat server and resolves once it listens. */
export async function startChat(options: ChatOptions = {}): Promise<Chat> {
  const hub = new Hub<Chatter>({ bus: options.bus, heartbeat: { interval: 30_000, timeout: 10_000 } });
  const server = http.createServer((req, res) => void servePage(req, res));
  server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    if (pathOf(req.url) !== "/ws") return void socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    accept(req, socket, head, { readLimit: MAX_LINE }).then(
      (conn) => chat(hub, conn, req),
      () => undefined, // accept answered the HTTP error already
    );
  });
  hub.on("open", (client) => announce(hub, client.meta.room, { type: "join", name: client.meta.name }));
  hub.on("close", (client) => announce(hub, client.meta.room, { type: "leave", name: client.meta.name }));
  server.listen(options.port ?? 0, options.host ?? "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hub,
    server,
    async close() {
      const stopped = new Promise((resolve) => server.close(resolve));
      await hub.close(StatusCode.GoingAway, "chat server shutting down");
      await stopped;
    },
  };
}

/** chat adds a connection to its room and relays its lines until it ends. */
async function chat(hub: Hub<Chatter>, conn: Conn, req: http.IncomingMessage): Promise<void> {
  const query = new URL(req.url ?? "/", "http://localhost").searchParams;
  const meta = { name: clean(query.get("name"), 32) || "guest", room: clean(query.get("room"), 32) || "lobby" };
  let client: HubClient<Chatter>;
  try {
    client = hub.add(conn, meta, { topics: [meta.room] });
  } catch {
    return; // the hub is shutting down and closed the connection
  }
  try {
    for await (const msg of conn) {
      if (msg.type !== MessageType.Text) {
        await client.close(StatusCode.UnsupportedData, "text only");
        return;
      }
      const text = clean(msg.text(), MAX_LINE);
      if (text !== "") announce(hub, meta.room, { type: "message", name: client.meta.name, text });
    }
  } catch {
    // The connection failed; the hub saw it end and announced the leave.
  }
}

/**
 * announce sends one event to everyone in `room`, on every node. `online`
 * counts this node's members: a cluster-wide count needs shared state (a
 * Redis counter, say), which pub/sub alone does not give.
 */
function announce(hub: Hub<Chatter>, room: string, event: Record<string, unknown>): void {
  const online = hub.subscriberCount(room);
  hub.publish(room, MessageType.Text, JSON.stringify({ ...event, online, at: Date.now() }));
}

async function servePage(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  if (req.method !== "GET" || pathOf(req.url) !== "/") return void res.writeHead(404).end();
  res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" }).end(await page);
}

function pathOf(url: string | undefined): string {
  return (url ?? "/").split("?")[0]!;
}

/** clean drops control characters and cuts to `max` characters. */
function clean(value: string | null, max: number): string {
  // eslint-disable-next-line no-control-regex
  return (value ?? "").replace(/[\u0000-\u001f\u007f]/g, " ").trim().slice(0, max);
}

/** main runs the chat server on `port` (default 8080), with Redis when REDIS_URL is set, until SIGINT or SIGTERM. */
async function main(port: number): Promise<void> {
  let bus: HubBus | undefined;
  if (process.env.REDIS_URL) {
    const { createClient } = await import("redis");
    const { RedisBus } = await import("../../../src/index.js");
    const publisher = createClient({ url: process.env.REDIS_URL });
    const subscriber = publisher.duplicate();
    await Promise.all([publisher.connect(), subscriber.connect()]);
    bus = new RedisBus(publisher, subscriber);
  }
  const chatServer = await startChat({ port, host: "0.0.0.0", bus });
  console.log(`chat on http://localhost:${port}${bus ? " (rooms shared through Redis)" : ""}`);
  const stop = async (): Promise<void> => {
    await chatServer.close();
    process.exit(0);
  };
  process.once("SIGINT", stop).once("SIGTERM", stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main(Number(process.argv[2] ?? 8080));
}
