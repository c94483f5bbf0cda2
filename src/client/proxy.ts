/**
 * Client transports: direct TCP, TLS, unix sockets, and tunnels through an
 * HTTP CONNECT proxy (https://www.rfc-editor.org/rfc/rfc9110#section-9.3.6),
 * either given as a URL or taken from the usual environment variables.
 */

import * as http from "node:http";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { DEFAULT_PROXY_TIMEOUT } from "../conn/options.js";
import { bindAbort, startTimer } from "../internal/waiting.js";
import { codedError, ErrorCode, HandshakeError, wrapError } from "../protocol/errors.js";

/** Where dial connects: host and port, or a unix socket path. */
export interface DialTarget {
  secure: boolean;
  host: string;
  port: number;
  path: string;
  socketPath: string | undefined;
}

/** The options http.request hands to a createConnection function. */
export type ConnectOptions = http.ClientRequestArgs;

/** A transport factory, the shape of http.request's createConnection. */
export type CreateConnection = (options: ConnectOptions) => Duplex;

/** What connectThroughProxy needs from the dial options. */
export interface ProxyDialOptions {
  tls?: tls.ConnectionOptions;
  signal?: AbortSignal;
  handshakeTimeout?: number;
  createConnection?: CreateConnection;
}


/** directConnection connects over TCP, TLS (with SNI) or a unix socket. */
export function directConnection(target: DialTarget, tlsOptions: tls.ConnectionOptions | undefined): CreateConnection {
  if (target.socketPath !== undefined) {
    const path = target.socketPath;
    return () => net.connect({ path });
  }
  if (!target.secure) return () => net.connect({ host: target.host, port: target.port });
  return () => tls.connect(secureOptions(target, tlsOptions));
}

function secureOptions(target: DialTarget, tlsOptions: tls.ConnectionOptions | undefined): tls.ConnectionOptions {
  // SNI carries host names only (https://www.rfc-editor.org/rfc/rfc6066#section-3).
  const servername = net.isIP(target.host) === 0 ? target.host : undefined;
  return { servername, ...tlsOptions, host: target.host, port: target.port };
}

// ---- choosing a proxy ----

/**
 * proxyFor returns the proxy URL to reach `target` through, or undefined
 * for a direct connection. `proxy` is the dial option: a URL is used as is,
 * `"env"` reads the environment (see proxyFromEnv). Unix socket targets are
 * never proxied; an explicit proxy for one throws a `WS_ERR_INVALID_URL` error.
 */
export function proxyFor(target: DialTarget, proxy: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (proxy === undefined || proxy === "") return undefined;
  if (target.socketPath !== undefined) {
    if (proxy === "env") return undefined;
    throw codedError(ErrorCode.InvalidUrl, "failed to dial: a proxy cannot reach a unix socket (ws+unix URL)");
  }
  return proxy === "env" ? proxyFromEnv(target, env) : proxy;
}

/**
 * proxyFromEnv applies the conventions curl and Go share: `https_proxy` /
 * `HTTPS_PROXY` for wss, `http_proxy` / `HTTP_PROXY` for ws (the lowercase
 * form wins when both are set), no proxy for hosts `no_proxy` / `NO_PROXY`
 * matches. A value without a scheme means `http://`. Loopback hosts are not
 * exempt unless listed, as with curl.
 */
export function proxyFromEnv(target: DialTarget, env: NodeJS.ProcessEnv): string | undefined {
  // Under CGI, HTTP_PROXY is the client's `Proxy:` request header, not
  // configuration ("httpoxy", CVE-2016-5385): ignore the uppercase form there.
  const upperHttp = env["REQUEST_METHOD"] === undefined ? "HTTP_PROXY" : undefined;
  const value = target.secure ? firstSet(env, "https_proxy", "HTTPS_PROXY") : firstSet(env, "http_proxy", upperHttp);
  if (value === undefined) return undefined;
  if (noProxyMatches(target, firstSet(env, "no_proxy", "NO_PROXY") ?? "")) return undefined;
  return value.includes("://") ? value : `http://${value}`;
}

function firstSet(env: NodeJS.ProcessEnv, ...names: Array<string | undefined>): string | undefined {
  for (const name of names) {
    const value = name === undefined ? undefined : env[name]?.trim();
    if (value) return value;
  }
  return undefined;
}

/**
 * noProxyMatches tells whether a NO_PROXY list (comma or space separated)
 * exempts `target`: `*` matches every host; `example.com` or `.example.com`
 * match that domain and its subdomains; an IP address matches itself, a CIDR
 * block (`10.0.0.0/8`) the addresses in it; an entry with `:port` matches
 * that port only.
 */
export function noProxyMatches(target: DialTarget, noProxy: string): boolean {
  const host = target.host.toLowerCase().replace(/\.$/, "");
  return noProxy
    .split(/[\s,]+/)
    .filter((entry) => entry !== "")
    .some((entry) => entryMatches(entry.toLowerCase(), host, target.port));
}

function entryMatches(raw: string, host: string, port: number): boolean {
  if (raw === "*") return true;
  const entry = splitEntryPort(raw);
  if (entry.port !== undefined && entry.port !== port) return false;
  if (entry.host.includes("/")) return inSubnet(entry.host, host);
  if (net.isIP(entry.host) !== 0) return sameAddress(entry.host, host);
  const domain = entry.host.replace(/^\*?\./, "").replace(/\.$/, "");
  return domain !== "" && (host === domain || host.endsWith(`.${domain}`));
}

function splitEntryPort(entry: string): { host: string; port: number | undefined } {
  if (entry.startsWith("[")) {
    const close = entry.indexOf("]");
    const rest = entry.slice(close + 1);
    return { host: entry.slice(1, close), port: rest.startsWith(":") ? Number(rest.slice(1)) : undefined };
  }
  const colon = entry.indexOf(":");
  // Several colons without brackets: a bare IPv6 address (or block), no port.
  if (colon < 0 || entry.indexOf(":", colon + 1) >= 0) return { host: entry, port: undefined };
  return { host: entry.slice(0, colon), port: Number(entry.slice(colon + 1)) };
}

function inSubnet(block: string, host: string): boolean {
  const [address = "", bits = ""] = block.split("/");
  const family = net.isIP(address);
  if (family === 0 || net.isIP(host) !== family || !/^\d+$/.test(bits)) return false;
  const list = new net.BlockList();
  const type = family === 4 ? "ipv4" : "ipv6";
  try {
    list.addSubnet(address, Number(bits), type);
  } catch {
    return false; // a prefix too long for the family: the entry matches nothing
  }
  return list.check(host, type);
}

function sameAddress(entry: string, host: string): boolean {
  const family = net.isIP(entry);
  if (net.isIP(host) !== family) return false;
  const list = new net.BlockList();
  const type = family === 4 ? "ipv4" : "ipv6";
  list.addAddress(entry, type);
  return list.check(host, type);
}

// ---- tunnelling ----

/**
 * connectThroughProxy opens a CONNECT tunnel to the target through the proxy
 * at `proxyUrl` (basic credentials in the URL are sent as
 * Proxy-Authorization) and returns a transport over it; for wss the TLS
 * session runs end to end inside the tunnel, so the proxy sees only
 * ciphertext. `options.createConnection`, when given, opens the connection
 * to the proxy itself. Rejects with a HandshakeError when the proxy answers
 * other than 2xx (407 when it wants credentials), a `WS_ERR_HANDSHAKE_TIMEOUT`
 * error when it does not answer within `handshakeTimeout`, the signal's
 * reason on abort, and a "failed to dial: proxy host:port: …" error (the
 * socket error as `cause`, its `code` copied) when it cannot be reached or
 * hangs up.
 */
export async function connectThroughProxy(proxyUrl: string, target: DialTarget, options: ProxyDialOptions): Promise<CreateConnection> {
  const proxy = parseProxyUrl(proxyUrl);
  const authority = `${net.isIPv6(target.host) ? `[${target.host}]` : target.host}:${target.port}`;
  const headers: http.OutgoingHttpHeaders = { Host: authority };
  if (proxy.username !== "") {
    const credentials = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
    headers["Proxy-Authorization"] = `Basic ${Buffer.from(credentials).toString("base64")}`;
  }
  const socket = await openTunnel(proxy, authority, headers, options);
  if (!target.secure) return () => socket;
  return () => tls.connect({ ...secureOptions(target, options.tls), socket });
}

function parseProxyUrl(proxyUrl: string): URL {
  let proxy: URL;
  try {
    proxy = new URL(proxyUrl);
  } catch (err) {
    // The URL may hold credentials: name only its shape, not its text.
    throw codedError(ErrorCode.InvalidUrl, "failed to dial: invalid proxy URL", err);
  }
  if (proxy.protocol !== "http:") {
    throw codedError(ErrorCode.InvalidUrl, `failed to dial: unsupported proxy scheme ${proxy.protocol} (only http:// CONNECT proxies)`);
  }
  return proxy;
}

/** ProxyRequest is one CONNECT exchange being settled. */
interface ProxyRequest {
  request: http.ClientRequest;
  /** host:port of the proxy, for messages (never the credentials). */
  name: string;
  hasCredentials: boolean;
}

function openTunnel(proxy: URL, authority: string, headers: http.OutgoingHttpHeaders, options: ProxyDialOptions): Promise<net.Socket> {
  const host = proxy.hostname.startsWith("[") ? proxy.hostname.slice(1, -1) : proxy.hostname;
  const port = proxy.port === "" ? 80 : Number(proxy.port);
  const request = http.request({
    host,
    port,
    method: "CONNECT",
    path: authority,
    headers,
    // With `agent: false` node:http makes an Agent of its own, which ignores createConnection: give one or the other.
    ...(options.createConnection ? { createConnection: options.createConnection as http.RequestOptions["createConnection"] } : { agent: false }),
  });
  const pending: ProxyRequest = { request, name: proxy.host, hasCredentials: proxy.username !== "" };
  return new Promise<net.Socket>((resolve, reject) => {
    const settle = bound(pending, options, reject);
    request.on("error", (err) => settle.fail(err));
    request.on("connect", (res: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      settle.done();
      const problem = refusal(pending, res, authority);
      if (problem) {
        socket.destroy();
        return reject(problem);
      }
      if (head.length > 0) socket.unshift(head);
      resolve(socket);
    });
    request.end();
  });
}

/**
 * bound arms the timeout and the abort signal of a CONNECT exchange; `fail`
 * rejects with the right error for whatever ended it, `done` disarms both.
 */
function bound(pending: ProxyRequest, options: ProxyDialOptions, reject: (err: unknown) => void): { fail(err: Error): void; done(): void } {
  const timeout = options.handshakeTimeout ?? DEFAULT_PROXY_TIMEOUT;
  const signal = options.signal;
  let reason: unknown;
  const stop = (why: unknown): void => {
    reason = why;
    pending.request.destroy(new Error("CONNECT stopped")); // 'error' then rejects with `reason`
  };
  // dial hands this step what is left of its deadline: at least 1 ms, or Infinity (no timer).
  const timer = startTimer(timeout, () => {
    stop(codedError(ErrorCode.HandshakeTimeout, `failed to dial: proxy ${pending.name} did not answer CONNECT within ${timeout} ms`));
  });
  const unbindAbort = bindAbort(signal, () => stop(signal!.reason));
  // An abort between two redirect hops fired no listener.
  if (signal?.aborted) stop(signal.reason);
  const done = (): void => {
    clearTimeout(timer);
    unbindAbort();
  };
  return {
    done,
    fail(err) {
      done();
      reject(reason ?? unreachable(pending, err));
    },
  };
}

/** refusal turns a non-2xx answer to CONNECT into a HandshakeError, naming the likely cause. */
function refusal(pending: ProxyRequest, res: http.IncomingMessage, authority: string): HandshakeError | undefined {
  const status = res.statusCode ?? 0;
  if (status >= 200 && status <= 299) return undefined;
  const text = http.STATUS_CODES[status] ?? "unknown status";
  let message = `failed to dial: proxy ${pending.name} refused CONNECT to ${authority} with ${status} ${text}`;
  if (status === 407) message += pending.hasCredentials ? " (the credentials in the proxy URL were rejected)" : " (put user:password in the proxy URL)";
  return new HandshakeError(message, status, res.headers);
}

function unreachable(pending: ProxyRequest, err: Error): Error {
  return wrapError(`failed to dial: proxy ${pending.name}`, err);
}
