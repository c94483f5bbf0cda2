/**
 * serve: an HTTP(S) server with safe limits that accepts WebSocket
 * connections, for users who do not bring their own server.
 */

import * as http from "node:http";
import * as https from "node:https";
import type { Duplex } from "node:stream";
import type { Conn } from "../conn/conn.js";
import { checkConnOptions, DEFAULT_HANDSHAKE_TIMEOUT, InboundBudget } from "../conn/options.js";
import { handlerErrorChannel, handshakeRefusedChannel } from "../internal/diagnostics.js";
import { bindAbort, checkTimeout, isNoTimeout, noop } from "../internal/waiting.js";
import { CloseError } from "../protocol/close.js";
import { StatusCode } from "../protocol/errors.js";
import { checkCompressionOptions, checkHeaders, hasToken } from "../protocol/handshake.js";
import { accept, type AcceptOptions, type HandshakeRefusedMessage, refuse } from "./accept.js";
import { ConnectionTracker, DEFAULT_RETRY_AFTER, type ShutdownOptions, type WebSocketServer } from "./lifecycle.js";

/** The largest request head serve accepts, in bytes (Node's default is 16 KiB). */
export const SERVE_MAX_HEADER_SIZE = 8 * 1024;

/** The most request headers serve parses. */
export const SERVE_MAX_HEADERS = 64;

/** ServeOptions configure `serve`; the accept options apply to every connection. */
export interface ServeOptions extends AcceptOptions {
  /** TCP port. Default 0: any free port (read it from `server.address()`). */
  port?: number;
  /** Interface to listen on. Default: all interfaces, as with net.Server. */
  host?: string;
  /** Only upgrade requests for this path (query ignored); others get 404. Default any path. */
  path?: string;
  /** When given, serve HTTPS (wss://) with these options (key, cert, …). */
  tls?: https.ServerOptions;
  /**
   * Bound on the request head (slowloris), in ms. Default handshakeTimeout,
   * 10000; 0 or `Infinity` means none. A RangeError for a finite value above
   * 2^31−1.
   */
  headersTimeout?: number;
  /** Largest request head in bytes. Default 8192. */
  maxHeaderSize?: number;
  /**
   * onError is called with what a handler threw or rejected with, the
   * connection it was handling and its request; the connection is closed
   * with 1011 either way. Default: the error is written to stderr with its
   * stack, once per error object. An error thrown by onError itself is
   * written to stderr. A handler that ends with a CloseError once its
   * connection is closing (a `for await` loop over a connection the peer
   * closed or dropped) has not failed: that is not reported.
   */
  onError?: (err: unknown, conn: Conn, req: http.IncomingMessage) => void;
  /**
   * maxConnections caps the open connections (handshakes under way hold a
   * place too, so the cap holds however many finish at once). Upgrades past
   * it are answered 503 with `Retry-After` before any WebSocket is made.
   * Default `Infinity`. A RangeError for anything but a positive integer or
   * Infinity.
   */
  maxConnections?: number | undefined;
  /** The Retry-After of a 503 (past maxConnections, or during shutdown), in seconds. Default 5. */
  retryAfter?: number | undefined;
  /**
   * signal shuts the server down gracefully when it aborts, as
   * `server.shutdown()` does with its defaults (Node's convention for
   * servers). serve rejects with its reason when it is aborted already.
   */
  signal?: AbortSignal | undefined;
}

/** The message on the `wsconn:handler:error` diagnostics channel: a serve handler threw or rejected. */
export interface HandlerErrorMessage {
  error: unknown;
  conn: Conn;
  req: http.IncomingMessage;
}

/**
 * Handler is called for every accepted connection. A throw or rejection
 * closes it with 1011 and is reported to `onError`.
 */
export type Handler = (conn: Conn, req: http.IncomingMessage) => void | Promise<void>;

/**
 * serve starts an HTTP server (HTTPS with `tls`) listening on `port`/`host`
 * that accepts WebSocket upgrades and calls `handler` for each connection. It
 * sets safe limits: a request head must arrive within `headersTimeout`, be at
 * most `maxHeaderSize` bytes with at most 64 headers; plain HTTP requests are
 * answered 426 Upgrade Required. Resolves with the listening server, which
 * holds its open connections in `server.conns`; `server.shutdown()` (or
 * aborting `signal`) closes them all with 1001 and stops the server, while
 * `server.close()` stops listening and leaves open connections to you.
 * Rejects if the server cannot listen, with the signal's reason when it is
 * aborted already, and with a RangeError, TypeError or coded error for
 * invalid options, before listening.
 */
export async function serve(options: ServeOptions, handler: Handler): Promise<WebSocketServer> {
  // Misconfiguration fails here, before listening, not as a 500 on every upgrade.
  checkHeaders(options.headers);
  checkCompressionOptions(options);
  checkConnOptions(options);
  const maxConnections = checkMaxConnections(options.maxConnections ?? Infinity);
  const retryAfter = checkRetryAfter(options.retryAfter ?? DEFAULT_RETRY_AFTER);
  options.signal?.throwIfAborted();
  const timeout = checkTimeout("headersTimeout", options.headersTimeout ?? options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT);
  // node:http takes 0 for none, and refuses Infinity.
  const nodeTimeout = isNoTimeout(timeout) ? 0 : timeout;
  const serverOptions: http.ServerOptions = {
    maxHeaderSize: options.maxHeaderSize ?? SERVE_MAX_HEADER_SIZE,
    headersTimeout: nodeTimeout,
    requestTimeout: nodeTimeout,
    // Node enforces both timeouts only when it sweeps its connections, every
    // 30 s by default: a slow head would live up to 30 s past the limit.
    connectionsCheckingInterval: nodeTimeout > 0 ? Math.min(nodeTimeout, 1000) : undefined,
  };
  // One budget for all of this server's connections, checked before listening.
  const acceptOptions: ServeOptions = { ...options, inboundBudget: options.inboundBudget ?? InboundBudget.shared };
  const server = (options.tls ? https.createServer({ ...serverOptions, ...options.tls }) : http.createServer(serverOptions)) as http.Server;
  server.maxHeadersCount = SERVE_MAX_HEADERS;
  const tracker = new ConnectionTracker(server, maxConnections);
  const lifecycle = server as WebSocketServer;
  Object.defineProperty(lifecycle, "conns", { value: tracker.conns, enumerable: true });
  lifecycle.shutdown = (shutdownOptions?: ShutdownOptions) => tracker.shutdown(shutdownOptions);
  server.on("request", answerPlainRequest);
  server.on("clientError", (err: Error & { code?: string }, socket: Duplex) => refuseMalformed(err, socket));
  server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    void upgrade(req, socket, head, acceptOptions, handler, tracker, retryAfter);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const signal = options.signal;
  if (signal !== undefined) {
    const shutdown = (): void => void tracker.shutdown().catch(noop);
    if (signal.aborted) shutdown();
    else server.once("close", bindAbort(signal, shutdown));
  }
  return lifecycle;
}

async function upgrade(
  req: http.IncomingMessage,
  socket: Duplex,
  head: Buffer,
  options: ServeOptions,
  handler: Handler,
  tracker: ConnectionTracker,
  retryAfter: number,
): Promise<void> {
  socket.on("error", destroySocket);
  if (options.path !== undefined && pathOf(req.url) !== options.path) {
    refuse(req, socket, 404, "no WebSocket at this path");
    return;
  }
  const full = tracker.admit(socket);
  if (full !== undefined) {
    refuse(req, socket, 503, full, { "Retry-After": retryAfter });
    return;
  }
  let conn: Conn;
  try {
    conn = await accept(req, socket, head, options);
  } catch {
    tracker.failed(socket);
    return; // accept answered the HTTP error already
  }
  // The connection handles socket errors from now on.
  socket.off("error", destroySocket);
  // During a shutdown the connection is closed at once, and no handler sees it.
  if (!tracker.opened(socket, conn)) return;
  let result: void | Promise<void>;
  try {
    result = handler(conn, req);
  } catch (err) {
    return failHandler(err, conn, req, options.onError);
  }
  // Not awaited here: this frame would keep `req` (and `head`) alive for as
  // long as the connection lives; the rejection handler keeps it only while
  // the handler runs.
  if (result !== undefined && typeof result.then === "function") {
    Promise.resolve(result).catch(onRejected(conn, options.onError ? req : undefined, options.onError));
  }
}

/** onRejected makes a handler's rejection handler; it keeps the request only for an onError that wants it. */
function onRejected(conn: Conn, req: http.IncomingMessage | undefined, onError: ServeOptions["onError"]): (err: unknown) => void {
  return (err) => failHandler(err, conn, req!, onError);
}

/**
 * failHandler closes a connection whose handler threw or rejected with 1011,
 * and reports the error. A CloseError thrown once the connection is closing
 * is how it ended (a `for await` over a connection the peer dropped), not a
 * failure of the handler: nothing to close or report.
 */
function failHandler(err: unknown, conn: Conn, req: http.IncomingMessage, onError: ServeOptions["onError"]): void {
  if (err instanceof CloseError && conn.closing) return;
  conn.close(StatusCode.InternalError, "handler failed").catch(noop);
  if (handlerErrorChannel.hasSubscribers) handlerErrorChannel.publish({ error: err, conn, req } satisfies HandlerErrorMessage);
  if (onError === undefined) return reportOnce(err);
  try {
    onError(err, conn, req);
  } catch (thrown) {
    reportOnce(thrown);
  }
}

/** Errors already written to stderr: the same error object rejected by many handlers is written once. */
const reported = new WeakSet<object>();

function reportOnce(err: unknown): void {
  if (typeof err === "object" && err !== null) {
    if (reported.has(err)) return;
    reported.add(err);
  }
  const text = err instanceof Error ? (err.stack ?? String(err)) : String(err);
  process.stderr.write(`wsconn serve: a connection handler failed (the client got 1011): ${text}\n`);
}

/** destroySocket is the socket's error listener until the connection takes over. */
function destroySocket(this: Duplex): void {
  this.destroy();
}

function pathOf(url: string | undefined): string {
  const path = url ?? "/";
  const q = path.indexOf("?");
  return q < 0 ? path : path.slice(0, q);
}

function checkMaxConnections(value: number): number {
  if (value !== Infinity && !(Number.isInteger(value) && value > 0)) {
    throw new RangeError(`maxConnections must be a positive integer or Infinity, not ${String(value)}`);
  }
  return value;
}

function checkRetryAfter(value: number): number {
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`retryAfter must be a whole number of seconds, not ${String(value)}`);
  return value;
}

function answerPlainRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
  if (handshakeRefusedChannel.hasSubscribers) {
    handshakeRefusedChannel.publish({ req, status: 426, reason: "not a WebSocket upgrade" } satisfies HandshakeRefusedMessage);
  }
  const body = hasToken(req.headers.upgrade, "websocket")
    ? "WebSocket upgrade requests must use GET with Connection: Upgrade\n"
    : "this endpoint speaks WebSocket only\n";
  res.writeHead(426, { "Content-Type": "text/plain; charset=utf-8", Upgrade: "websocket", Connection: "Upgrade, close", "Sec-WebSocket-Version": "13" });
  res.end(body);
}

/** refuseMalformed answers a request Node's parser rejected: 431 too large, 408 too slow, else 400. */
function refuseMalformed(err: Error & { code?: string }, socket: Duplex): void {
  if (!socket.writable) return void socket.destroy();
  const status =
    err.code === "HPE_HEADER_OVERFLOW" ? 431 : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
  const text = http.STATUS_CODES[status];
  if (handshakeRefusedChannel.hasSubscribers) {
    handshakeRefusedChannel.publish({ req: undefined, status, reason: err.message } satisfies HandshakeRefusedMessage);
  }
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => socket.destroy());
}
