/**
 * The client side of the opening handshake over node:http(s): build the
 * request, check the server's answer, hand the socket to a Conn.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-4.1
 */

import { randomBytes } from "node:crypto";
import * as http from "node:http";
import * as https from "node:https";
import * as net from "node:net";
import type { Socket } from "node:net";
import type { ConnectionOptions } from "node:tls";
import { Conn } from "../conn/conn.js";
import { checkConnOptions, type ConnOptions, DEFAULT_HANDSHAKE_TIMEOUT, type HandshakeTimeouts } from "../conn/options.js";
import { bindAbort, isNoTimeout, noop, startTimer } from "../internal/waiting.js";
import { codedError, ErrorCode, HandshakeError, wrapError } from "../protocol/errors.js";
import { acceptKey, acceptResponse, checkCompressionOptions, checkHeaders, clientOffer, type CompressionOptions, deflateConfig, hasToken, headerList, isToken, settingsFor, singleHeader } from "../protocol/handshake.js";
import { connectThroughProxy, type CreateConnection, type DialTarget, directConnection, proxyFor } from "./proxy.js";

/** The most bytes of a refused handshake's body kept in HandshakeError. */
const MAX_ERROR_BODY = 64 * 1024;

/** DialOptions configure `dial`. Every field is optional. */
export interface DialOptions extends ConnOptions, CompressionOptions, HandshakeTimeouts {
  /** Extra request headers (Authorization, Cookie, …). CR, LF and NUL are refused. */
  headers?: http.OutgoingHttpHeaders;
  /** Subprotocols to offer, in order of preference. */
  subprotocols?: string[];
  /** Origin header to send, as a browser would. Default none. */
  origin?: string;
  /** Aborts the handshake; dial rejects with the signal's reason. */
  signal?: AbortSignal;
  /** TLS options for wss:// (ca, cert, key, servername, rejectUnauthorized, …). */
  tls?: ConnectionOptions;
  /**
   * createConnection supplies the transport, like Go's NetDial: it receives
   * the request options and returns a connected (or connecting) socket.
   */
  createConnection?: CreateConnection;
  /**
   * proxy is an HTTP CONNECT proxy URL (`http://user:pass@proxy:3128`) to
   * tunnel through, or `"env"` to take it from `https_proxy` (wss) or
   * `http_proxy` (ws), uppercase forms too, honouring `no_proxy`. Default
   * none: the environment is ignored unless asked. For wss the TLS session
   * runs end to end through the tunnel. With `createConnection`, that
   * function opens the connection to the proxy.
   */
  proxy?: string;
  /**
   * followRedirects is how many 3xx answers (with a Location) dial follows.
   * Default 0: a redirect rejects with its HandshakeError. It never follows
   * a redirect from wss to ws or to a unix socket, and drops Authorization
   * and Cookie headers when the redirect leads to another host.
   * `handshakeTimeout` bounds all hops together.
   */
  followRedirects?: number;
}

type Target = DialTarget;

/**
 * dial opens a WebSocket connection to `url`: `ws://`, `wss://` (also
 * `http://`, `https://`), or `ws+unix:///path/to.sock:/request/path` for a
 * unix domain socket. It rejects with a HandshakeError (status, headers and up
 * to 64 KiB of body) when the server refuses or answers wrongly, with the
 * signal's reason on abort, with a `WS_ERR_HANDSHAKE_TIMEOUT` error after
 * `handshakeTimeout`, and with "failed to dial" errors (the socket error as
 * `cause`) when the connection itself fails. Throws (rejects) a coded error
 * for a bad URL or bad headers, and a TypeError or RangeError for invalid
 * compression options, before connecting.
 */
export async function dial(url: string | URL, options: DialOptions = {}): Promise<Conn> {
  const first = parseTarget(url);
  checkHeaders(options.headers);
  checkCompressionOptions(options);
  checkConnOptions(options);
  for (const p of options.subprotocols ?? []) {
    if (!isToken(p)) throw new TypeError(`subprotocol ${JSON.stringify(p)} is not a token`);
  }
  if (options.signal?.aborted) throw options.signal.reason;
  const timeout = options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
  const deadline = isNoTimeout(timeout) ? Infinity : performance.now() + timeout;
  let target = first;
  for (let hops = 0; ; hops++) {
    const headers = sameHost(first, target) ? options.headers : withoutCredentials(options.headers);
    try {
      return await dialTarget(target, { ...options, headers }, deadline);
    } catch (err) {
      target = followRedirect(err, target, hops, options.followRedirects ?? 0);
    }
  }
}

/** dialTarget makes one handshake attempt, through a proxy if one applies, before `deadline`. */
async function dialTarget(target: Target, options: DialOptions, deadline: number): Promise<Conn> {
  const proxy = proxyFor(target, options.proxy);
  const createConnection = proxy
    ? await connectThroughProxy(proxy, target, { ...options, handshakeTimeout: remaining(deadline) })
    : (options.createConnection ?? directConnection(target, options.tls));
  return handshake(target, { ...options, handshakeTimeout: remaining(deadline) }, createConnection);
}

function remaining(deadline: number): number {
  return deadline === Infinity ? Infinity : Math.max(1, Math.ceil(deadline - performance.now()));
}

/**
 * followRedirect returns the target a 3xx answer points to when
 * followRedirects allows one more hop; otherwise it throws `err`, or a
 * HandshakeError saying why the redirect was not followed.
 */
function followRedirect(err: unknown, from: Target, hops: number, limit: number): Target {
  if (!(err instanceof HandshakeError) || err.status < 300 || err.status > 399) throw err;
  const location = singleHeader(err.headers, "location");
  if (location === undefined) throw err;
  const refuse = (why: string): never => {
    throw new HandshakeError(`failed to dial: server answered ${err.status} redirecting to ${JSON.stringify(location)}; ${why}`, err.status, err.headers, err.body);
  };
  if (hops >= limit) refuse(limit === 0 ? "redirects are not followed unless followRedirects is set" : `followed ${limit} redirects already (followRedirects)`);
  let url: URL;
  try {
    url = new URL(location, `${from.secure ? "wss" : "ws"}://${net.isIPv6(from.host) ? `[${from.host}]` : from.host}:${from.port}${from.path}`);
  } catch {
    return refuse("the location is not a valid URL");
  }
  if (url.protocol === "ws+unix:") refuse("refusing to redirect to a unix socket");
  url.hash = "";
  // A relative location on a unix socket keeps the socket and changes the path.
  const relative = !/^([a-z][a-z0-9+.-]*:|\/\/)/i.test(location);
  let to: Target;
  try {
    to = from.socketPath !== undefined && relative ? { ...from, path: url.pathname + url.search } : parseTarget(url);
  } catch (parseErr) {
    return refuse((parseErr as Error).message);
  }
  if (from.secure && !to.secure) refuse("refusing to leave wss for ws");
  return to;
}

/** sameHost: credentials may follow a redirect to the host they were meant for, any port (as Go's http client). */
function sameHost(a: Target, b: Target): boolean {
  return a.host.toLowerCase() === b.host.toLowerCase() && a.socketPath === b.socketPath;
}

function withoutCredentials(headers: http.OutgoingHttpHeaders | undefined): http.OutgoingHttpHeaders | undefined {
  if (headers === undefined) return undefined;
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !/^(authorization|cookie)$/i.test(name)));
}

function parseTarget(input: string | URL): Target {
  let url: URL;
  try {
    url = new URL(input);
  } catch (err) {
    throw codedError(ErrorCode.InvalidUrl, `invalid WebSocket URL ${JSON.stringify(String(input))}`, err);
  }
  if (url.protocol === "ws+unix:") return unixTarget(url);
  const secure = url.protocol === "wss:" || url.protocol === "https:";
  if (!secure && url.protocol !== "ws:" && url.protocol !== "http:") {
    throw codedError(ErrorCode.InvalidUrl, `unsupported URL scheme ${url.protocol}`);
  }
  if (url.hash !== "") throw codedError(ErrorCode.InvalidUrl, "a WebSocket URL must not have a fragment");
  const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port === "" ? (secure ? 443 : 80) : Number(url.port);
  return { secure, host, port, path: (url.pathname || "/") + url.search, socketPath: undefined };
}

function unixTarget(url: URL): Target {
  const [socketPath, path] = splitOnce(decodeURIComponent(url.pathname), ":");
  if (socketPath === "") throw codedError(ErrorCode.InvalidUrl, "ws+unix URL without a socket path");
  return { secure: false, host: "localhost", port: 80, path: (path || "/") + url.search, socketPath };
}

function splitOnce(s: string, sep: string): [string, string] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, ""] : [s.slice(0, i), s.slice(i + 1)];
}

/** handshake sends the upgrade request and settles with the connection or the reason it failed. */
function handshake(target: Target, options: DialOptions, createConnection: CreateConnection): Promise<Conn> {
  const key = randomBytes(16).toString("base64");
  const request = (target.secure ? https : http).request({
    method: "GET",
    host: target.host,
    port: target.port,
    path: target.path,
    headers: requestHeaders(key, options),
    createConnection: createConnection as http.RequestOptions["createConnection"],
  });
  return new Promise<Conn>((resolve, reject) => {
    const timeout = options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
    const signal = options.signal;
    // Why dial stopped the request itself (timeout or abort): what it rejects with, whatever the socket says then.
    let stopped: unknown;
    let settled = false;
    const stop = (why: unknown): void => {
      stopped ??= why;
      request.destroy(why as Error);
    };
    // dial hands each step what is left of its deadline: at least 1 ms, or Infinity (no timer).
    const timer = startTimer(timeout, () => stop(codedError(ErrorCode.HandshakeTimeout, `failed to dial: handshake not done within ${timeout} ms`)));
    const unbindAbort = bindAbort(signal, () => stop(signal!.reason));
    // An abort between two steps (the CONNECT and this request, or two redirect hops) fired no listener.
    if (signal?.aborted) stop(signal.reason);
    // Set once a refusal's head arrived: from then on readBody settles, with what came of the body.
    let answered = false;
    /** finish settles once: the first of upgrade, refusal, error, timeout or abort wins. */
    const finish = (settle: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      unbindAbort();
      settle();
    };
    request.on("error", (err) => {
      // A reset mid-body: the refusal is the answer (readBody ends with the socket's close).
      if (answered && stopped === undefined) return;
      finish(() => reject(stopped ?? wrapError("failed to dial", err)));
    });
    request.on("response", (res) => {
      answered = true;
      const socket = res.socket;
      readBody(res, (body, whole) => {
        // Without an agent nobody reuses the socket: free it even if the server keeps it alive.
        socket?.destroy();
        finish(() => reject(stopped ?? refusal(res, body, whole)));
      });
    });
    request.on("upgrade", (res: http.IncomingMessage, socket: Socket, head: Buffer) => {
      if (settled) return void socket.destroy();
      const problem = checkResponse(res, key, options.subprotocols ?? []);
      const config = deflateConfig(options.compression, options.compressionLevel);
      const extensions = acceptResponse(res.headers["sec-websocket-extensions"], config);
      if (problem !== undefined || typeof extensions === "string") {
        socket.destroy();
        const why = problem ?? (extensions as string);
        return finish(() => reject(new HandshakeError(`failed to dial: ${why}`, res.statusCode ?? 101, res.headers)));
      }
      const subprotocol = singleHeader(res.headers, "sec-websocket-protocol") ?? "";
      const deflate = extensions.params && settingsFor(extensions.params, "client", extensions.header, config);
      finish(() => resolve(new Conn(socket, head, { ...options, role: "client", subprotocol, deflate })));
    });
    request.end();
  });
}

/** refusal is the HandshakeError for an answer other than a valid 101. */
function refusal(res: http.IncomingMessage, body: Buffer, whole: boolean): HandshakeError {
  const what = res.statusCode === 101 ? "101 without Upgrade: websocket and Connection: Upgrade" : `${res.statusCode} instead of 101`;
  const cut = whole ? "" : " (the connection closed before the end of its body)";
  return new HandshakeError(`failed to dial: server answered ${what}${cut}`, res.statusCode ?? 0, res.headers, body);
}

function requestHeaders(key: string, options: DialOptions): http.OutgoingHttpHeaders {
  const headers: http.OutgoingHttpHeaders = { ...options.headers };
  if (options.origin !== undefined) headers["Origin"] = options.origin;
  if (options.subprotocols && options.subprotocols.length > 0) {
    headers["Sec-WebSocket-Protocol"] = options.subprotocols.join(", ");
  }
  headers["Connection"] = "Upgrade";
  headers["Upgrade"] = "websocket";
  headers["Sec-WebSocket-Key"] = key;
  headers["Sec-WebSocket-Version"] = "13";
  const offer = clientOffer(deflateConfig(options.compression, options.compressionLevel));
  if (offer !== undefined) headers["Sec-WebSocket-Extensions"] = offer;
  return headers;
}

/** checkResponse returns what is wrong with a 101 answer, if anything (§4.1). */
function checkResponse(res: http.IncomingMessage, key: string, offered: string[]): string | undefined {
  const h = res.headers;
  if (!hasToken(h.upgrade, "websocket")) return "Upgrade header of the answer does not contain websocket";
  if (!hasToken(h.connection, "upgrade")) return "Connection header of the answer does not contain Upgrade";
  if (singleHeader(h, "sec-websocket-accept") !== acceptKey(key)) return "Sec-WebSocket-Accept does not match the key";
  const protocols = headerList(h["sec-websocket-protocol"]);
  if (protocols.length > 1 || (protocols.length === 1 && !offered.includes(protocols[0]!))) {
    return `server selected subprotocol ${JSON.stringify(h["sec-websocket-protocol"])} which was not offered`;
  }
  return undefined;
}

/**
 * readBody collects up to 64 KiB of a refusal's body, then stops reading,
 * and calls `done` once: with `whole` false when the body was cut short (the
 * server closed mid-body, or dial destroyed the request). It never waits on a
 * body that does not come: the socket's close ends it.
 */
function readBody(res: http.IncomingMessage, done: (body: Buffer, whole: boolean) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let called = false;
  const finish = (whole: boolean): void => {
    if (called) return;
    called = true;
    res.destroy();
    done(Buffer.concat(chunks).subarray(0, MAX_ERROR_BODY), whole);
  };
  res.on("data", (chunk: Buffer) => {
    chunks.push(chunk);
    size += chunk.length;
    if (size >= MAX_ERROR_BODY) finish(true); // enough of it: the rest is not read
  });
  res.on("end", () => finish(true));
  // 'close' without 'end': the body was cut. Its 'error' says the same.
  res.on("close", () => finish(false));
  res.on("error", noop);
}
