/**
 * Test helpers: servers and clients on 127.0.0.1 port 0, closed by the test
 * that opened them.
 */

import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { accept, type AcceptOptions, type Conn, type Handler, MessageType, serve, type ServeOptions } from "../../src/index.js";

/** A wsconn server on an ephemeral port, handing each Conn to `onConn`. */
export interface TestServer {
  url: string;
  port: number;
  server: http.Server;
  /** Every Conn accepted so far. */
  conns: Conn[];
  /** Resolves with the next Conn accepted. */
  nextConn(): Promise<Conn>;
  /** Closes the server and drops every connection. */
  close(): Promise<void>;
}

/** startServer listens on 127.0.0.1:0 and accepts every upgrade with `options`. */
export async function startServer(options: AcceptOptions = {}, onConn?: (conn: Conn) => void): Promise<TestServer> {
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  const conns: Conn[] = [];
  const waiting: Array<(c: Conn) => void> = [];
  const sockets = new Set<net.Socket>();
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("upgrade", (req, socket, head) => {
    accept(req, socket, head, options).then(
      (conn) => {
        conns.push(conn);
        onConn?.(conn);
        waiting.shift()?.(conn);
      },
      () => undefined,
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    port,
    server,
    conns,
    nextConn: () => new Promise((resolve) => waiting.push(resolve)),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** echo answers every message with itself until the connection closes. */
export async function echo(conn: Conn): Promise<void> {
  await echoOutcome(conn);
}

/** echoOutcome echoes like `echo` and settles with what the loop threw (undefined if it ended quietly). It never throws. */
export async function echoOutcome(conn: Conn): Promise<unknown> {
  try {
    for await (const msg of conn) await conn.write(msg.type, msg.data);
    return undefined;
  } catch (err) {
    return err;
  }
}

/** What tap's teardown needs: helpers here take the test to close what they open. */
interface Teardown {
  teardown(fn: () => unknown): void;
}

/** startServe runs serve on 127.0.0.1:0 and closes it, and every connection, after the test. */
export async function startServe(t: Teardown, options: ServeOptions, handler: Handler): Promise<{ server: http.Server; port: number; conns: Conn[] }> {
  const conns: Conn[] = [];
  const server = await serve({ host: "127.0.0.1", ...options }, (conn, req) => {
    conns.push(conn);
    return handler(conn, req);
  });
  t.teardown(async () => {
    for (const c of conns) c.closeNow();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { server, port: (server.address() as AddressInfo).port, conns };
}

/** roundTrip sends one text message, returns the echo, then closes `conn`. */
export async function roundTrip(conn: Conn, text: string): Promise<string> {
  await conn.write(MessageType.Text, text);
  const answer = (await conn.read()).text();
  await conn.close();
  return answer;
}

/** freePort returns a TCP port on 127.0.0.1 that was free a moment ago, for a process that must pick its own. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
