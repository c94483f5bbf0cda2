/**
 * The two ends of a TCP-over-WebSocket tunnel:
 *
 * - `wsconn tunnel --listen ADDR --to URL` (client side) accepts TCP
 *   connections and carries each over its own WebSocket connection to URL;
 * - `wsconn serve --forward ADDR` (server side) accepts WebSocket
 *   connections and carries each to its own TCP connection to ADDR.
 *
 * Each connection gets one access log line on stderr when it ends.
 *
 * WebSocket has no half close (https://www.rfc-editor.org/rfc/rfc6455#section-7):
 * once either side ends, the tunnel closes both directions. An orderly end
 * travels as a 1000 close and arrives as EOF on the other side's TCP
 * connection; a failure (a reset, an error, an abnormal close) travels as
 * 1011 or 1006 and arrives as a TCP reset, so neither end mistakes a broken
 * stream for a complete one.
 */

import * as net from "node:net";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { netConn } from "../adapters/netconn.js";
import { dial, type DialOptions } from "../client/dial.js";
import type { Conn } from "../conn/conn.js";
import { noop } from "../internal/waiting.js";
import { type CloseInfo, closeStatus } from "../protocol/close.js";
import { StatusCode } from "../protocol/errors.js";
import { MessageType } from "../protocol/frame.js";
import { serve } from "../server/serve.js";
import { checkUrl, type Context, describe, DIAL_HELP, DIAL_OPTIONS, dialOptions, formatHostPort, hostPort, type HostPort, isNormalClose, log, parse, SERVER_HELP, SERVER_OPTIONS, serverOptions, text, UsageError } from "./runtime.js";

/** How long serve waits for the forward target to accept a connection, in ms. */
const FORWARD_CONNECT_TIMEOUT = 10_000;

/** Help of `wsconn tunnel`. */
export const TUNNEL_HELP = `Usage: wsconn tunnel --listen [HOST:]PORT --to URL [options]

Listen for TCP connections and carry each one over its own WebSocket
connection to URL (binary messages), where \`wsconn serve --forward\` (or any
netConn server) passes the bytes on. One access log line per connection goes
to stderr. Ctrl-C closes every tunnel with 1001 and exits.

Options:
  -l, --listen [HOST:]PORT    address to listen on (default host 127.0.0.1)
  -t, --to URL                ws://, wss:// or ws+unix:// URL of the far end
${DIAL_HELP}
  -h, --help                  show this help

Example:
  wsconn tunnel --listen 127.0.0.1:15432 --to wss://db.example.com/pg
  psql -h 127.0.0.1 -p 15432 -U app`;

/** Help of `wsconn serve`. */
export const SERVE_HELP = `Usage: wsconn serve --forward [HOST:]PORT [options]

Accept WebSocket connections and carry each one to its own TCP connection
to the forward address: the server end of \`wsconn tunnel\`. One access log
line per connection goes to stderr. Ctrl-C closes every connection with
1001 and exits. There is no authentication: listen on 127.0.0.1 (the
default) behind a reverse proxy that checks clients, or on a private network.

Options:
  -f, --forward [HOST:]PORT  TCP address to forward to (default host 127.0.0.1)
${SERVER_HELP}
  -h, --help         show this help

Example:
  wsconn serve --port 8080 --forward 127.0.0.1:5432 --path /pg`;

/** tunnelCommand runs `wsconn tunnel` until shutdown; resolves with the exit status. */
export async function tunnelCommand(args: string[], ctx: Context): Promise<number> {
  const { values } = parse(args, { listen: { type: "string", short: "l" }, to: { type: "string", short: "t" }, ...DIAL_OPTIONS });
  if (values["help"]) return void ctx.stdout.write(`${TUNNEL_HELP}\n`), 0;
  const listen = hostPort(required(text(values, "listen"), "--listen"), "listen");
  const to = checkUrl(text(values, "to"), "--to URL");
  const options = { ...dialOptions(values), readLimit: Infinity }; // as in serveCommand
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => void carry(socket, to, options, ctx));
  await listenOn(server, listen);
  const address = server.address() as net.AddressInfo;
  log(ctx, `wsconn tunnel listening on ${formatHostPort(address.address, address.port)} -> ${to}`);
  ctx.shutdown.onStop(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await ctx.shutdown.stopped;
  return 0;
}

/** carry dials `to` for one accepted TCP connection and bridges the two. */
async function carry(socket: net.Socket, to: string, options: DialOptions, ctx: Context): Promise<void> {
  const started = performance.now();
  const from = formatHostPort(socket.remoteAddress, socket.remotePort);
  socket.on("error", () => undefined); // bridge reports errors once it owns the socket
  let conn: Conn;
  try {
    conn = await dial(to, { ...options, signal: ctx.shutdown.signal });
  } catch (err) {
    socket.resetAndDestroy();
    log(ctx, `${from} -> ${to} error=${JSON.stringify(describe(err))} time=${((performance.now() - started) / 1000).toFixed(3)}s`);
    return;
  }
  ctx.shutdown.track(conn);
  const result = await bridge(socket, conn, started);
  log(ctx, accessLine(from, to, result, result.tcpRead, result.tcpWritten));
}

/** serveCommand runs `wsconn serve --forward` until shutdown; resolves with the exit status. */
export async function serveCommand(args: string[], ctx: Context): Promise<number> {
  const { values } = parse(args, { forward: { type: "string", short: "f" }, ...SERVER_OPTIONS });
  if (values["help"]) return void ctx.stdout.write(`${SERVE_HELP}\n`), 0;
  const forward = hostPort(required(text(values, "forward"), "--forward"), "forward");
  // A byte stream has no message size. Set at accept, the lifted limit also
  // covers frames that arrive before the bridge starts reading.
  const options = { ...serverOptions(values), readLimit: Infinity };
  const target = formatHostPort(forward.host, forward.port);
  const server = await serve(options, async (conn) => {
    ctx.shutdown.track(conn);
    await forwardOne(conn, forward, target, ctx);
  });
  const address = server.address() as net.AddressInfo;
  const url = `${options.tls ? "wss" : "ws"}://${formatHostPort(address.address, address.port)}${options.path ?? "/"}`;
  log(ctx, `wsconn serve listening on ${url} -> ${target}`);
  ctx.shutdown.onStop(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await ctx.shutdown.stopped;
  return 0;
}

/** forwardOne connects one accepted WebSocket connection to the forward address. */
async function forwardOne(conn: Conn, forward: HostPort, target: string, ctx: Context): Promise<void> {
  const started = performance.now();
  const from = formatHostPort(conn.remoteAddress, conn.remotePort);
  const upstream = net.connect({ host: forward.host, port: forward.port, allowHalfOpen: true });
  try {
    await connected(upstream);
  } catch (err) {
    upstream.destroy();
    // 1014: the server is a gateway whose upstream failed (IANA registry).
    const reason = "upstream unreachable";
    await conn.close(StatusCode.BadGateway, reason).catch(() => undefined);
    const close = { ...(await conn.closed), code: StatusCode.BadGateway, reason }; // what we sent, not the echo
    log(ctx, `${from} -> ${target} ${outcome(close, describe(err))} time=${((performance.now() - started) / 1000).toFixed(3)}s`);
    return;
  }
  const result = await bridge(upstream, conn, started);
  // up = client to forward target: what the target socket was written.
  log(ctx, accessLine(from, target, result, result.tcpWritten, result.tcpRead));
}

function connected(socket: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.setTimeout(FORWARD_CONNECT_TIMEOUT, () => socket.destroy(new Error(`connect timed out after ${FORWARD_CONNECT_TIMEOUT} ms`)));
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.setTimeout(0);
      socket.off("error", reject);
      resolve();
    });
  });
}

function listenOn(server: net.Server, address: HostPort): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(address.port, address.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

function required(value: string | undefined, option: string): string {
  if (value === undefined) throw new UsageError(`missing ${option}`);
  return value;
}

/** BridgeResult is how a bridged connection went, for the access log. */
export interface BridgeResult {
  close: CloseInfo;
  /** The first error seen on either side, if any. */
  error: string | undefined;
  /** Bytes read from the TCP socket (sent over the WebSocket). */
  tcpRead: number;
  /** Bytes written to the TCP socket (received over the WebSocket). */
  tcpWritten: number;
  /** How long the connection lived, in ms. */
  ms: number;
}

/**
 * bridge pipes `tcp` and `conn` both ways until both are closed, and
 * resolves with what happened. `tcp` should allow half-open (so the bytes in
 * flight when its peer ends still reach it) and may be paused.
 */
export async function bridge(tcp: Socket, conn: Conn, started = performance.now()): Promise<BridgeResult> {
  let error: string | undefined;
  const note = (err: unknown): void => void (error ??= describe(err));
  if (tcp.destroyed) {
    await conn.close(StatusCode.NormalClosure).catch(noop);
  } else {
    const tcpClosed = new Promise((resolve) => tcp.once("close", resolve));
    wire(tcp, conn, note);
    await tcpClosed;
  }
  const close = await conn.closed;
  return { close, error, tcpRead: tcp.bytesRead, tcpWritten: tcp.bytesWritten, ms: performance.now() - started };
}

function wire(tcp: Socket, conn: Conn, note: (err: unknown) => void): void {
  const ws = netConn(conn, MessageType.Binary);
  tcp.on("error", (err) => {
    note(err);
    tcp.destroy();
    // Not 1000: the other side must see a failure, not an orderly end.
    void conn.close(StatusCode.InternalError, "tcp connection failed").catch(noop);
  });
  ws.on("error", (err) => {
    const code = closeStatus(err);
    if (isNormalClose(code)) return void tcp.end(); // e.g. a write racing the peer's close
    // A close code and reason reach the log anyway; a dropped connection's cause would not.
    if (code === -1 || code === StatusCode.AbnormalClosure) note(err);
    tcp.resetAndDestroy();
  });
  // Once our FIN is out nothing more can flow: the WebSocket is closing too.
  tcp.on("finish", () => tcp.destroy());
  tcp.pipe(ws);
  ws.pipe(tcp);
}

/** accessLine renders a bridged connection as one log line. */
export function accessLine(from: string, to: string, result: BridgeResult, up: number, down: number): string {
  return `${from} -> ${to} ${outcome(result.close, result.error)} up=${up} down=${down} time=${(result.ms / 1000).toFixed(3)}s`;
}

/** outcome renders how a connection ended as `close=CODE [reason="…"] [error="…"]`. */
export function outcome(close: CloseInfo, error: string | undefined): string {
  const reason = close.reason === "" ? "" : ` reason=${JSON.stringify(close.reason)}`;
  return `close=${close.code}${reason}${error === undefined ? "" : ` error=${JSON.stringify(error)}`}`;
}
