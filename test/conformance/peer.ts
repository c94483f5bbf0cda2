/**
 * The two sides of a conformance run. A Harness opens one connection per case
 * between a wsconn echo (for await … write back) and a RawPeer that scripts
 * the frames:
 *
 * - server role: wsconn `accept`s behind an http server; the raw peer is a
 *   TCP client that does the handshake by hand and masks its frames;
 * - client role: wsconn `dial`s a raw `net` server that answers the handshake
 *   by hand and sends unmasked frames.
 *
 * Each connection uses a read limit: "large" (64 MiB, for the size cases) or
 * wsconn's default (for the limit cases).
 */

import * as http from "node:http";
import type * as net from "node:net";
import type { AddressInfo } from "node:net";
import { accept, type Conn, dial } from "../../src/index.js";
import { rawConnect, type RawPeer, type RawServer, startRawServer } from "../helpers/raw-peer.js";

/** Which wsconn role is under test. */
export type Role = "server" | "client";

/** The read limit a case runs with. */
export type Limit = "large" | "default";

/** The read limit of "large" connections. */
export const LARGE_READ_LIMIT = 64 * 1024 * 1024;

/** EchoOutcome is how the echo loop on the wsconn side ended. */
export interface EchoOutcome {
  /** The error iteration or a write threw; undefined when iteration ended quietly. */
  error: unknown;
}

/** Pair is one connection under test. */
export interface Pair {
  peer: RawPeer;
  conn: Conn;
  /** Settles when the echo loop stops. */
  echo: Promise<EchoOutcome>;
}

/** OpenOptions choose the read limit, and bytes sent along with the handshake. */
export interface OpenOptions {
  limit: Limit;
  /** Frames sent in the same TCP write as the request (server role) or the 101 (client role). */
  early?: Buffer;
}

/** Harness opens connections for one role. */
export interface Harness {
  role: Role;
  open(options: OpenOptions): Promise<Pair>;
  close(): Promise<void>;
}

/** runEcho writes every message back until the connection closes; it never throws. */
export async function runEcho(conn: Conn): Promise<EchoOutcome> {
  try {
    for await (const msg of conn) await conn.write(msg.type, msg.data);
    return { error: undefined };
  } catch (error) {
    return { error };
  }
}

/**
 * serverHarness: wsconn accepts on an http server on 127.0.0.1:0; the request
 * path picks the read limit.
 */
export async function serverHarness(): Promise<Harness> {
  // Cases run one at a time, so the next accepted Conn belongs to the open() waiting.
  const waiting: Array<(c: Conn) => void> = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  server.on("connection", (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const readLimit = req.url === "/large" ? LARGE_READ_LIMIT : undefined;
    accept(req, socket, head, { readLimit }).then((conn) => waiting.shift()?.(conn), () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    role: "server",
    async open({ limit, early }) {
      const connP = new Promise<Conn>((resolve) => waiting.push(resolve));
      const peer = await rawConnect(port, { path: `/${limit}`, early });
      const conn = await connP;
      return { peer, conn, echo: runEcho(conn) };
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** clientHarness: wsconn dials a raw server that answers the handshake by hand. */
export async function clientHarness(): Promise<Harness> {
  const raw: RawServer = await startRawServer();
  return {
    role: "client",
    async open({ limit, early }) {
      const next = raw.nextPeer({ early });
      const conn = await dial(raw.url, { readLimit: limit === "large" ? LARGE_READ_LIMIT : undefined });
      const { peer } = await next;
      return { peer, conn, echo: runEcho(conn) };
    },
    close: () => raw.close(),
  };
}
