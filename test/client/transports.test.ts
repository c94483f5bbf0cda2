import { mkdtempSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import t from "tap";
import { accept, type Conn, dial, serve } from "../../src/index.js";
import { makeCert } from "../helpers/cert.js";
import { echo, roundTrip, startServer } from "../helpers/peers.js";

const cert = makeCert();

/** A server that records each upgrade request's URL and headers, then echoes. */
async function recordingServer(): Promise<{ url: string; port: number; requests: http.IncomingMessage[]; close(): Promise<void> }> {
  const requests: http.IncomingMessage[] = [];
  const srv = await startServer({}, (c) => void echo(c));
  srv.server.prependListener("upgrade", (req: http.IncomingMessage) => requests.push(req));
  return { url: srv.url, port: srv.port, requests, close: () => srv.close() };
}

t.test("ws+unix dials a unix domain socket with a request path", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "wsconn-unix-"));
  const socketPath = join(dir, "echo.sock");
  const urls: string[] = [];
  const conns: Conn[] = [];
  const server = http.createServer();
  server.on("upgrade", (req: http.IncomingMessage, socket, head) => {
    urls.push(req.url ?? "");
    void accept(req, socket, head).then((c) => (conns.push(c), echo(c)), () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  t.teardown(async () => {
    for (const c of conns) c.closeNow();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });
  const conn = await dial(`ws+unix://${socketPath}:/chat/room?x=1`);
  t.equal(await roundTrip(conn, "over a unix socket"), "over a unix socket");
  const bare = await dial(`ws+unix://${socketPath}`);
  t.equal(await roundTrip(bare, "no path"), "no path");
  t.same(urls, ["/chat/room?x=1", "/"]);

  const missing = await dial(`ws+unix://${join(dir, "absent.sock")}:/`).catch((e: unknown) => e);
  t.match(missing, { code: "ENOENT", message: /^failed to dial: connect ENOENT/ });
  const empty = await dial("ws+unix://:/path").catch((e: unknown) => e);
  t.match(empty, { code: "WS_ERR_INVALID_URL" });
});

t.test("createConnection supplies the transport", async (t) => {
  const srv = await recordingServer();
  t.teardown(() => srv.close());
  const seen: Array<{ host?: string | null; port?: number | string | null }> = [];
  const conn = await dial("ws://service.invalid:9999/app", {
    createConnection: (options) => {
      seen.push({ host: options.host, port: options.port });
      return net.connect({ host: "127.0.0.1", port: srv.port });
    },
  });
  t.equal(await roundTrip(conn, "custom transport"), "custom transport");
  t.same(seen, [{ host: "service.invalid", port: 9999 }], "createConnection got the target's host and port");
  t.equal(srv.requests[0]?.headers.host, "service.invalid:9999");
  t.equal(srv.requests[0]?.url, "/app");
});

t.test("headers and origin reach the server; bad headers are refused", async (t) => {
  const srv = await recordingServer();
  t.teardown(() => srv.close());
  const conn = await dial(`${srv.url}/h`, {
    headers: { Authorization: "Bearer token-1", "X-Trace": ["a", "b"] },
    origin: `http://127.0.0.1:${srv.port}`,
  });
  await conn.close();
  const h = srv.requests[0]!.headers;
  t.equal(h.authorization, "Bearer token-1");
  t.equal(h["x-trace"], "a, b");
  t.equal(h.origin, `http://127.0.0.1:${srv.port}`);

  const cases = [
    { name: "CRLF in a value", headers: { "X-A": "x\r\nInjected: 1" } },
    { name: "NUL in a value", headers: { "X-A": "x\0" } },
    { name: "not a token name", headers: { "X A": "x" } },
  ];
  for (const c of cases) {
    const err = await dial(srv.url, { headers: c.headers }).catch((e: unknown) => e);
    t.match(err, { code: "WS_ERR_INVALID_HEADER" }, c.name);
  }
  t.equal(srv.requests.length, 1, "no refused request reached the server");
});

t.test("tls options reach tls.connect", async (t) => {
  const peerCerts: Array<string | undefined> = [];
  const conns: Conn[] = [];
  const server = await serve(
    { host: "127.0.0.1", tls: { key: cert.key, cert: cert.cert, ca: cert.cert, requestCert: true, rejectUnauthorized: false } },
    (conn, req) => {
      const cn = (req.socket as TLSSocket).getPeerCertificate().subject?.CN;
      peerCerts.push(typeof cn === "string" ? cn : undefined);
      conns.push(conn);
      return echo(conn);
    },
  );
  t.teardown(async () => {
    for (const c of conns) c.closeNow();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const port = (server.address() as AddressInfo).port;

  const trusted = await dial(`wss://localhost:${port}/`, { tls: { ca: cert.cert } });
  t.equal(await roundTrip(trusted, "trusted"), "trusted");

  const withClientCert = await dial(`wss://127.0.0.1:${port}/`, { tls: { ca: cert.cert, cert: cert.cert, key: cert.key } });
  t.equal(await roundTrip(withClientCert, "mutual"), "mutual");
  t.same(peerCerts, [undefined, "localhost"], "the client certificate reached the server only when given");

  const insecure = await dial(`wss://127.0.0.1:${port}/`, { tls: { rejectUnauthorized: false } });
  t.equal(await roundTrip(insecure, "unverified"), "unverified");

  const untrusted = await dial(`wss://localhost:${port}/`).catch((e: unknown) => e);
  t.match(untrusted, { code: "DEPTH_ZERO_SELF_SIGNED_CERT", message: /^failed to dial: self[- ]signed certificate/ });

  const wrongName = await dial(`wss://localhost:${port}/`, { tls: { ca: cert.cert, servername: "other.example" } }).catch((e: unknown) => e);
  t.match(wrongName, { code: "ERR_TLS_CERT_ALTNAME_INVALID", message: /^failed to dial: .*other\.example/ });

  const plainToTls = await dial(`ws://127.0.0.1:${port}/`, { handshakeTimeout: 2000 }).catch((e: unknown) => e);
  t.match(plainToTls, { message: /^failed to dial:/ }, "ws:// to a TLS port fails with a dial error");
});

t.test("handshakeTimeout and signal bound a server that never answers", async (t) => {
  const held: net.Socket[] = [];
  const mute = net.createServer((s) => {
    held.push(s);
    s.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => mute.listen(0, "127.0.0.1", resolve));
  t.teardown(async () => {
    for (const s of held) s.destroy();
    await new Promise<void>((resolve) => mute.close(() => resolve()));
  });
  const url = `ws://127.0.0.1:${(mute.address() as AddressInfo).port}/`;

  const started = performance.now();
  const timedOut = await dial(url, { handshakeTimeout: 150 }).catch((e: unknown) => e);
  const elapsed = performance.now() - started;
  t.match(timedOut, { code: "WS_ERR_HANDSHAKE_TIMEOUT", message: /^failed to dial: handshake not done within 150 ms$/ });
  t.ok(elapsed >= 140 && elapsed < 1500, `timed out after ${elapsed.toFixed(0)} ms`);

  const controller = new AbortController();
  const reason = new Error("stop waiting");
  const connected = new Promise((resolve) => mute.once("connection", resolve));
  const aborted = dial(url, { signal: controller.signal }).catch((e: unknown) => e);
  await connected;
  controller.abort(reason);
  t.equal(await aborted, reason);

  const already = await dial(url, { signal: AbortSignal.abort(reason) }).catch((e: unknown) => e);
  t.equal(already, reason, "an aborted signal rejects before connecting");
});

t.test("connection failures name the cause", async (t) => {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const refused = await dial(`ws://127.0.0.1:${port}/`).catch((e: unknown) => e);
  t.match(refused, { code: "ECONNREFUSED", message: `failed to dial: connect ECONNREFUSED 127.0.0.1:${port}` });
  const scheme = await dial("ftp://example.com/").catch((e: unknown) => e);
  t.match(scheme, { code: "WS_ERR_INVALID_URL", message: /unsupported URL scheme ftp:/ });
});
