/**
 * Client transports: direct TCP, TLS, unix sockets, and tunnels through an
 * HTTP CONNECT proxy (https://www.rfc-editor.org/rfc/rfc9110#section-9.3.6).
 */

import * as http from "node:http";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { codedError, ErrorCode, HandshakeError } from "./errors.js";

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
  const servername = net.isIP(target.host) === 0 ? target.host : undefined;
  return { servername, ...tlsOptions, host: target.host, port: target.port };
}

/**
 * connectThroughProxy opens a CONNECT tunnel to the target through the proxy
 * at `proxyUrl` (basic credentials in the URL are sent as
 * Proxy-Authorization) and returns a transport over it; for wss the TLS
 * session runs end to end inside the tunnel. Rejects with a HandshakeError
 * when the proxy answers other than 2xx.
 */
export async function connectThroughProxy(
  proxyUrl: string,
  target: DialTarget,
  options: { tls?: tls.ConnectionOptions; signal?: AbortSignal; handshakeTimeout?: number },
): Promise<CreateConnection> {
  const proxy = parseProxyUrl(proxyUrl);
  const authority = `${target.host.includes(":") ? `[${target.host}]` : target.host}:${target.port}`;
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
    throw codedError(ErrorCode.InvalidUrl, `invalid proxy URL ${JSON.stringify(proxyUrl)}`, err);
  }
  if (proxy.protocol !== "http:") throw codedError(ErrorCode.InvalidUrl, `unsupported proxy scheme ${proxy.protocol}`);
  return proxy;
}

function openTunnel(
  proxy: URL,
  authority: string,
  headers: http.OutgoingHttpHeaders,
  options: { signal?: AbortSignal; handshakeTimeout?: number },
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const request = http.request({
      host: proxy.hostname.startsWith("[") ? proxy.hostname.slice(1, -1) : proxy.hostname,
      port: proxy.port === "" ? 80 : Number(proxy.port),
      method: "CONNECT",
      path: authority,
      headers,
      agent: false,
      signal: options.signal,
      timeout: options.handshakeTimeout ?? 10_000,
    });
    request.on("timeout", () => request.destroy(codedError(ErrorCode.HandshakeTimeout, "failed to dial: proxy did not answer in time")));
    request.on("error", (err) => reject(err === options.signal?.reason || err.name === "AbortError" && options.signal?.aborted ? options.signal!.reason : proxyError(err)));
    request.on("connect", (res: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      const status = res.statusCode ?? 0;
      if (status < 200 || status > 299) {
        socket.destroy();
        return reject(new HandshakeError(`failed to dial: proxy answered CONNECT with ${status}`, status, res.headers));
      }
      socket.setTimeout(0);
      if (head.length > 0) socket.unshift(head);
      resolve(socket);
    });
    request.end();
  });
}

function proxyError(err: Error): Error {
  if ((err as { code?: string }).code === ErrorCode.HandshakeTimeout) return err;
  const wrapped = new Error(`failed to dial: proxy connection failed: ${err.message}`, { cause: err });
  (wrapped as Error & { code?: unknown }).code = (err as { code?: unknown }).code;
  return wrapped;
}
