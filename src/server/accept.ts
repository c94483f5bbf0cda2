/**
 * The server side of the opening handshake: validate the request, check its
 * origin, pick a subprotocol, answer 101 or an HTTP error. The default origin
 * policy guards against cross-site WebSocket hijacking, where a page on
 * another site opens a WebSocket to this server with the visitor's cookies
 * (https://www.rfc-editor.org/rfc/rfc6455#section-10.2).
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-4.2
 */

import { type IncomingMessage, type OutgoingHttpHeaders, STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { Conn } from "../conn/conn.js";
import { checkConnOptions, type ConnOptions, DEFAULT_HANDSHAKE_TIMEOUT, type HandshakeTimeouts, InboundBudget } from "../conn/options.js";
import { handshakeRefusedChannel } from "../internal/diagnostics.js";
import { isNoTimeout } from "../internal/waiting.js";
import { codedError, ErrorCode, HandshakeError } from "../protocol/errors.js";
import { acceptKey, checkCompressionOptions, checkHeaders, type CompressionOptions, deflateConfig, hasToken, headerList, isValidKey, selectOffer, settingsFor, singleHeader } from "../protocol/handshake.js";

/** AcceptOptions configure `accept` (and `serve`). Every field is optional. */
export interface AcceptOptions extends ConnOptions, CompressionOptions, HandshakeTimeouts {
  /** Subprotocols this server speaks, in order of preference. Default none. */
  subprotocols?: string[];
  /**
   * Host glob patterns (`*.example.com`, `localhost:*`, or with a scheme,
   * `https://*.example.com`) whose Origin is allowed besides the same origin.
   */
  originPatterns?: string[];
  /**
   * insecureSkipVerify accepts any Origin. It removes the protection against
   * cross-site WebSocket hijacking: use it only when requests carry no
   * ambient credentials (cookies, HTTP auth). Default false.
   */
  insecureSkipVerify?: boolean;
  /** checkOrigin replaces the origin policy: return true to accept. */
  checkOrigin?: (req: IncomingMessage) => boolean | Promise<boolean>;
  /** Extra response headers, e.g. Set-Cookie. CR, LF and NUL are refused. */
  headers?: OutgoingHttpHeaders;
}

/**
 * The message on the `wsconn:handshake:refused` diagnostics channel: the
 * server answered an opening handshake with an HTTP error.
 */
export interface HandshakeRefusedMessage {
  /** The request, or undefined when Node's parser refused it (400, 408, 431). */
  req: IncomingMessage | undefined;
  /** The HTTP status answered. */
  status: number;
  /** Why, as the response body says. */
  reason: string;
}

/**
 * accept completes the WebSocket handshake for a request received in an
 * `http`/`https` server's `'upgrade'` event and returns the connection. Bytes
 * in `head` are the start of the WebSocket stream and are not lost.
 *
 * On a bad request it answers the HTTP error itself and rejects with a
 * HandshakeError: 400 for a malformed handshake, 403 for a refused origin,
 * 405 for a method other than GET, 426 (with `Sec-WebSocket-Version: 13`) for
 * another protocol version. Rejects with a coded error
 * (`WS_ERR_HANDSHAKE_TIMEOUT`) after `handshakeTimeout`, and with
 * `WS_ERR_INVALID_HEADER` (answering 500) for bad extra headers. When
 * `checkOrigin` throws, it answers 500 and rejects with that error; invalid
 * compression options answer 500 and reject with a TypeError or RangeError.
 *
 * The default origin policy accepts requests without an Origin header
 * (non-browser clients) and browser requests from the same host, and refuses
 * other origins unless `originPatterns`, `checkOrigin` or
 * `insecureSkipVerify` allow them.
 */
export async function accept(req: IncomingMessage, socket: Duplex, head: Buffer, options: AcceptOptions = {}): Promise<Conn> {
  const sock = socket as Socket;
  try {
    checkHeaders(options.headers);
    checkCompressionOptions(options);
    checkConnOptions(options);
  } catch (err) {
    refuse(req, sock, 500, "server misconfigured");
    throw err;
  }
  const timeout = options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
  if (isNoTimeout(timeout)) return handshake(req, sock, head, options);
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      sock.destroy();
      reject(codedError(ErrorCode.HandshakeTimeout, `failed to accept: handshake not done within ${timeout} ms`));
    }, timeout);
  });
  try {
    return await Promise.race([handshake(req, sock, head, options), expired]);
  } finally {
    clearTimeout(timer);
  }
}

async function handshake(req: IncomingMessage, socket: Socket, head: Buffer, options: AcceptOptions): Promise<Conn> {
  const problem = validateRequest(req);
  if (problem) throw refuse(req, socket, problem.status, problem.message);
  let originProblem: string | undefined;
  try {
    originProblem = await checkOrigin(req, options);
  } catch (err) {
    // Answer rather than leave the socket open with no response until the client gives up.
    refuse(req, socket, 500, "origin check failed");
    throw err;
  }
  if (originProblem) throw refuse(req, socket, 403, originProblem);
  if (socket.destroyed || !socket.writable) {
    throw new HandshakeError("failed to accept: the client went away during the handshake", 0);
  }
  const subprotocol = selectSubprotocol(req, options.subprotocols);
  const config = deflateConfig(options.compression, options.compressionLevel);
  const compression = selectOffer(req.headers["sec-websocket-extensions"], config);
  const extensions = compression?.response ?? "";
  socket.write(switchingProtocols(req, subprotocol, extensions, options.headers));
  const deflate = compression && settingsFor(compression.params, "server", extensions, config);
  const inboundBudget = options.inboundBudget ?? InboundBudget.shared;
  return new Conn(socket, head, { ...options, role: "server", subprotocol, deflate, inboundBudget });
}

/** validateRequest returns what is wrong with an upgrade request, if anything. */
function validateRequest(req: IncomingMessage): { status: number; message: string } | undefined {
  const h = req.headers;
  if (req.method !== "GET") return { status: 405, message: `method ${req.method} is not GET` };
  if (req.httpVersionMajor < 1 || (req.httpVersionMajor === 1 && req.httpVersionMinor < 1)) {
    return { status: 400, message: "WebSocket needs HTTP/1.1" };
  }
  if (!hasToken(h.connection, "upgrade")) return { status: 400, message: "Connection header does not contain Upgrade" };
  if (!hasToken(h.upgrade, "websocket")) return { status: 400, message: "Upgrade header does not contain websocket" };
  const version = singleHeader(h, "sec-websocket-version");
  if (version !== "13") return { status: 426, message: `unsupported Sec-WebSocket-Version ${JSON.stringify(version ?? "")}` };
  if (!isValidKey(singleHeader(h, "sec-websocket-key"))) return { status: 400, message: "invalid Sec-WebSocket-Key" };
  // A body on an upgrade request is a request-smuggling attempt.
  if (h["transfer-encoding"] !== undefined || (h["content-length"] !== undefined && h["content-length"] !== "0")) {
    return { status: 400, message: "an upgrade request must not have a body" };
  }
  return undefined;
}

async function checkOrigin(req: IncomingMessage, options: AcceptOptions): Promise<string | undefined> {
  if (options.insecureSkipVerify) return undefined;
  if (options.checkOrigin) {
    return (await options.checkOrigin(req)) ? undefined : "origin refused";
  }
  return authorizeOrigin(req.headers.origin, req.headers.host, options.originPatterns ?? []);
}

/** selectSubprotocol picks the first of the server's subprotocols the client offered. */
function selectSubprotocol(req: IncomingMessage, supported: string[] | undefined): string {
  if (!supported || supported.length === 0) return "";
  const offered = new Set(headerList(req.headers["sec-websocket-protocol"]));
  return supported.find((p) => offered.has(p)) ?? "";
}

function switchingProtocols(
  req: IncomingMessage,
  subprotocol: string,
  extensions: string,
  extra: OutgoingHttpHeaders | undefined,
): string {
  const key = singleHeader(req.headers, "sec-websocket-key")!;
  let response =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    `Sec-WebSocket-Accept: ${acceptKey(key)}\r\n`;
  if (subprotocol !== "") response += `Sec-WebSocket-Protocol: ${subprotocol}\r\n`;
  if (extensions !== "") response += `Sec-WebSocket-Extensions: ${extensions}\r\n`;
  return response + formatHeaders(extra) + "\r\n";
}

function formatHeaders(headers: OutgoingHttpHeaders | undefined): string {
  let out = "";
  if (headers === undefined) return out;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) out += `${name}: ${v}\r\n`;
  }
  return out;
}

/**
 * refuse answers an opening handshake with an HTTP error (`message` as its
 * body, with `headers`), closes the socket and publishes the refusal on the
 * diagnostics channel; it returns the HandshakeError for accept to reject
 * with. serve answers its own refusals (404, 503) with it too.
 */
export function refuse(req: IncomingMessage, socket: Duplex, status: number, message: string, headers: OutgoingHttpHeaders = {}): HandshakeError {
  if (handshakeRefusedChannel.hasSubscribers) handshakeRefusedChannel.publish({ req, status, reason: message } satisfies HandshakeRefusedMessage);
  const extra: OutgoingHttpHeaders = status === 426 ? { ...headers, "Sec-WebSocket-Version": "13" } : headers;
  if (!socket.destroyed && socket.writable) {
    const body = `${message}\n`;
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\nConnection: close\r\n` +
        `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        formatHeaders(extra) +
        `\r\n${body}`,
      () => socket.destroy(),
    );
  }
  return new HandshakeError(`failed to accept: ${message}`, status, extra as Record<string, string>, Buffer.from(message));
}

/**
 * authorizeOrigin returns undefined when a request with this Origin may
 * connect, else why not. No Origin header means a non-browser client and is
 * allowed; a browser Origin must name the request's Host or match one of
 * `patterns` (globs with `*` and `?`, matched against the origin's host, or
 * against `scheme://host` when the pattern contains `://`).
 */
export function authorizeOrigin(origin: string | undefined, host: string | undefined, patterns: string[]): string | undefined {
  if (origin === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return `Origin ${JSON.stringify(origin)} is not a URL`;
  }
  if (url.host === "") return `Origin ${JSON.stringify(origin)} has no host`;
  if (host !== undefined && url.host.toLowerCase() === host.toLowerCase()) return undefined;
  for (const pattern of patterns) {
    const subject = pattern.includes("://") ? `${url.protocol}//${url.host}` : url.host;
    if (globMatch(pattern.toLowerCase(), subject.toLowerCase())) return undefined;
  }
  return `Origin ${JSON.stringify(origin)} is not authorized for Host ${JSON.stringify(host ?? "")}`;
}

/**
 * globMatch matches `*` (any run of characters) and `?` (one character). It
 * backtracks only to the last star, so it runs in O(pattern × subject) time
 * whatever the input.
 */
export function globMatch(pattern: string, subject: string): boolean {
  let p = 0;
  let s = 0;
  let starP = -1;
  let starS = 0;
  while (s < subject.length) {
    const c = pattern[p];
    if (c === "*") {
      starP = p++;
      starS = s;
    } else if (c !== undefined && (c === "?" || c === subject[s])) {
      p++;
      s++;
    } else if (starP >= 0) {
      p = starP + 1;
      s = ++starS;
    } else {
      return false;
    }
  }
  while (pattern[p] === "*") p++;
  return p === pattern.length;
}
