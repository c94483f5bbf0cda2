/**
 * A TCP-over-WebSocket tunnel built on netConn.
 *
 *   TCP client ──► tunnel client ══ WebSocket ══► tunnel server ──► TCP target
 *   (psql, ssh)    (listenPort)                   (port)            (host:port)
 *
 * The tunnel client listens for TCP connections and carries each one over
 * its own WebSocket connection to the tunnel server, which opens a TCP
 * connection to the target and splices the two. Both ends use `carry`: a
 * netConn and a TCP socket piped into each other, with backpressure both
 * ways; an end on one side ends the other, an error destroys both.
 *
 * As a script, with a TypeScript runner such as tsx:
 *
 *   npx tsx docs/examples/tunnel.ts server 8080 db.internal:5432  # WebSockets on :8080
 *   npx tsx docs/examples/tunnel.ts client 5433 ws://gateway:8080 # then: psql -h 127.0.0.1 -p 5433
 *
 * In your code import from "wsconn"; this example imports the sources so
 * the tests run it as it is.
 */

import { once } from "node:events";
import type { Server as HttpServer } from "node:http";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import { pathToFileURL } from "node:url";
import { dial, MessageType, netConn, serve, StatusCode, type Conn } from "../../src/index.js";

/** Where the tunnel server connects each tunnelled connection. */
export interface TunnelTarget {
  host?: string;
  port: number;
}

/** TunnelServerOptions configure startTunnelServer. */
export interface TunnelServerOptions {
  /** WebSocket port to listen on. Default 0 (any free port). */
  port?: number;
  /** Interface to listen on. Default 127.0.0.1. */
  host?: string;
  /** The TCP service every connection is carried to. */
  target: TunnelTarget;
  /** Called with the error of a tunnelled connection that failed. Default: ignored. */
  onError?: (err: Error) => void;
}

/** TunnelClientOptions configure startTunnelClient. */
export interface TunnelClientOptions {
  /** TCP port to listen on. Default 0 (any free port). */
  listenPort?: number;
  /** Interface to listen on. Default 127.0.0.1. */
  listenHost?: string;
  /** The tunnel server's WebSocket URL. */
  url: string;
  /** Called with the error of a tunnelled connection that failed. Default: ignored. */
  onError?: (err: Error) => void;
}

/** A running end of the tunnel. */
export interface Tunnel {
  /** The port it listens on. */
  port: number;
  /** Stops listening and drops every tunnelled connection. */
  close(): Promise<void>;
}

/**
 * carry splices a WebSocket connection and a TCP socket, and resolves once
 * both are closed. The TCP side's end (FIN) ends the WebSocket (close 1000)
 * and the WebSocket's end ends the TCP side, so a clean close on either side
 * is a clean close on the other; an error on either side destroys both, so a
 * reset is passed on as an abrupt close. A WebSocket close is a full close:
 * after a TCP half close, data still on its way from the other end is lost.
 */
export function carry(conn: Conn, tcp: net.Socket, onError: (err: Error) => void = ignore): Promise<void> {
  tcp.setNoDelay(true);
  const ws = netConn(conn, MessageType.Binary);
  let failed = false;
  const fail = (err: Error): void => {
    if (!failed) onError(err);
    failed = true;
    // A reset, not a FIN, so the TCP peer knows the data did not all arrive.
    if (!tcp.destroyed) tcp.resetAndDestroy();
    ws.destroy();
  };
  tcp.on("error", fail);
  ws.on("error", fail);
  tcp.pipe(ws);
  ws.pipe(tcp);
  // A side that closes without ending (destroyed) takes the other with it.
  tcp.on("close", () => tcp.readableEnded || ws.destroy());
  ws.on("close", () => ws.readableEnded || tcp.destroy());
  return Promise.all([closedOf(tcp), closedOf(ws)]).then(ignore);
}

function closedOf(stream: net.Socket | Duplex): Promise<void> {
  return stream.closed ? Promise.resolve() : new Promise((resolve) => stream.once("close", () => resolve()));
}

/**
 * startTunnelServer accepts WebSocket connections on `port` and carries each
 * one to a new TCP connection to `target`. When the target cannot be reached
 * the WebSocket is closed with 1014 (bad gateway).
 */
export async function startTunnelServer(options: TunnelServerOptions): Promise<Tunnel & { url: string }> {
  const onError = options.onError ?? ignore;
  const live = new Set<Conn>();
  const server: HttpServer = await serve({ port: options.port ?? 0, host: options.host ?? "127.0.0.1" }, async (conn) => {
    live.add(conn);
    try {
      const tcp = net.connect({ host: options.target.host ?? "127.0.0.1", port: options.target.port });
      try {
        await once(tcp, "connect");
      } catch (err) {
        onError(err as Error);
        return await conn.close(StatusCode.BadGateway, "failed to connect to the target");
      }
      await carry(conn, tcp, onError);
    } finally {
      live.delete(conn);
    }
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: `ws://${options.host ?? "127.0.0.1"}:${port}`,
    close: () => closeAll(server, live),
  };
}

/**
 * startTunnelClient listens for TCP connections on `listenPort` and carries
 * each one over a new WebSocket connection to `url`. A connection whose dial
 * fails is dropped.
 */
export async function startTunnelClient(options: TunnelClientOptions): Promise<Tunnel> {
  const onError = options.onError ?? ignore;
  const live = new Set<Conn>();
  const server = net.createServer((tcp) => {
    tcp.on("error", onError);
    dial(options.url).then(
      (conn) => {
        live.add(conn);
        void carry(conn, tcp, onError).then(() => live.delete(conn));
      },
      (err: Error) => {
        onError(err);
        tcp.destroy();
      },
    );
  });
  server.listen(options.listenPort ?? 0, options.listenHost ?? "127.0.0.1");
  await once(server, "listening");
  return { port: (server.address() as net.AddressInfo).port, close: () => closeAll(server, live) };
}

/** closeAll stops `server` and drops the connections it still carries. */
async function closeAll(server: net.Server, live: Set<Conn>): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const conn of live) conn.closeNow();
  await closed;
}

/**
 * main runs the tunnel from command-line arguments,
 * `server <port> <targetHost:targetPort>` or `client <listenPort> <url>`,
 * and returns it; `log` receives what it reports. Throws a usage error for
 * anything else.
 */
export async function main(args: string[], log: (line: string) => void = console.log): Promise<Tunnel> {
  const [mode, port, where] = args;
  const onError = (err: Error): void => log(`tunnel: ${err.message}`);
  if (mode === "server" && port && where) {
    const [host, targetPort] = splitHostPort(where);
    const tunnel = await startTunnelServer({ port: Number(port), host: "0.0.0.0", target: { host, port: targetPort }, onError });
    log(`tunnel server: ws://0.0.0.0:${tunnel.port} -> ${host}:${targetPort}`);
    return tunnel;
  }
  if (mode === "client" && port && where) {
    const tunnel = await startTunnelClient({ listenPort: Number(port), url: where, onError });
    log(`tunnel client: 127.0.0.1:${tunnel.port} -> ${where}`);
    return tunnel;
  }
  throw new Error("usage: tunnel server <port> <targetHost:targetPort> | tunnel client <listenPort> <ws-url>");
}

function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(":");
  if (i <= 0) throw new Error(`expected host:port, not ${JSON.stringify(s)}`);
  return [s.slice(0, i).replace(/^\[|\]$/g, ""), Number(s.slice(i + 1))];
}

function ignore(): void {}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: Error) => {
    console.error(err.message);
    process.exitCode = 2;
  });
}
