/**
 * Test helper: a real HTTP CONNECT proxy (node:http's 'connect' event) on
 * 127.0.0.1 port 0. It resolves every host name to 127.0.0.1, so a test can
 * dial `ws://ws.test:PORT` and be sure the bytes went through the proxy.
 */

import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo } from "node:net";

/** How the test proxy behaves. */
export interface ProxyBehaviour {
  /** Require these basic credentials ("user:password"); answer 407 otherwise. */
  auth?: string;
  /** Answer every CONNECT with this status instead of tunnelling. */
  refuse?: number;
  /** Accept the TCP connection but never answer. */
  silent?: boolean;
}

/** A CONNECT request the proxy received. */
export interface SeenConnect {
  target: string;
  proxyAuthorization: string | undefined;
}

/** A running test proxy. */
export interface TestProxy {
  url: string;
  port: number;
  /** Every CONNECT received, in order. */
  seen: SeenConnect[];
  /** Resolves when the next CONNECT request arrives. */
  nextConnect(): Promise<SeenConnect>;
  /** Bytes the proxy carried from client to target, concatenated. */
  upstreamBytes(): Buffer;
  close(): Promise<void>;
}

/** startProxy runs a CONNECT proxy with `behaviour` on 127.0.0.1:0. */
export async function startProxy(behaviour: ProxyBehaviour = {}): Promise<TestProxy> {
  const server = http.createServer((_req, res) => res.writeHead(405).end());
  const sockets = new Set<net.Socket>();
  const seen: SeenConnect[] = [];
  const carried: Buffer[] = [];
  const waiting: Array<(c: SeenConnect) => void> = [];
  const track = (s: net.Socket): void => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  };
  server.on("connection", track);
  server.on("connect", (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    const request = { target: req.url ?? "", proxyAuthorization: req.headers["proxy-authorization"] };
    seen.push(request);
    for (const resolve of waiting.splice(0)) resolve(request);
    client.on("error", () => client.destroy());
    if (behaviour.silent) return;
    const expected = behaviour.auth && `Basic ${Buffer.from(behaviour.auth).toString("base64")}`;
    if (expected && req.headers["proxy-authorization"] !== expected) {
      return void client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n');
    }
    if (behaviour.refuse) return void client.end(`HTTP/1.1 ${behaviour.refuse} Refused\r\nContent-Length: 0\r\n\r\n`);
    tunnel(req.url ?? "", client, head, carried, track);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    seen,
    nextConnect: () => new Promise((resolve) => waiting.push(resolve)),
    upstreamBytes: () => Buffer.concat(carried),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function tunnel(authority: string, client: net.Socket, head: Buffer, carried: Buffer[], track: (s: net.Socket) => void): void {
  const port = Number(authority.slice(authority.lastIndexOf(":") + 1));
  const upstream = net.connect({ host: "127.0.0.1", port });
  track(upstream);
  upstream.on("error", () => {
    if (client.writable) client.end("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
  });
  upstream.on("connect", () => {
    client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    if (head.length > 0) upstream.write(head);
    client.on("data", (chunk: Buffer) => carried.push(chunk));
    client.pipe(upstream);
    upstream.pipe(client);
    upstream.on("close", () => client.destroy());
    client.on("close", () => upstream.destroy());
  });
}
