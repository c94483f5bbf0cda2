import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { CloseError, type Conn, dial, type Handler, HandshakeError, MessageType, serve } from "../../src/index.js";
import { SERVE_MAX_HEADER_SIZE, SERVE_MAX_HEADERS } from "../../src/server/serve.js";
import { startServe } from "../helpers/peers.js";


/** echo answers every message until the connection ends. */
async function echo(conn: Conn): Promise<void> {
  for await (const msg of conn) await conn.write(msg.type, msg.data);
}

/** rawExchange writes `data` on a fresh connection and reads until the server closes it. */
async function rawExchange(t: Test, port: number, data: string | Buffer): Promise<string> {
  const socket = net.connect(port, "127.0.0.1");
  t.teardown(() => void socket.destroy());
  socket.on("error", () => undefined);
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  await once(socket, "connect");
  socket.write(data);
  await once(socket, "close");
  return Buffer.concat(chunks).toString("latin1");
}

/** get makes a plain HTTP request without keep-alive. */
function get(port: number, headers: http.OutgoingHttpHeaders = {}, path = "/"): Promise<{ res: http.IncomingMessage; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path, headers, agent: false }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ res, body }));
      })
      .on("error", reject);
  });
}

t.test("safe limits are set on the server", async (t) => {
  const { server } = await startServe(t, {}, () => undefined);
  t.equal(server.maxHeadersCount, SERVE_MAX_HEADERS);
  t.equal(SERVE_MAX_HEADERS, 64);
  t.equal(SERVE_MAX_HEADER_SIZE, 8192);
  t.equal(server.headersTimeout, 10000, "headersTimeout defaults to handshakeTimeout's default");
  t.equal(server.requestTimeout, 10000);
  const { server: custom } = await startServe(t, { handshakeTimeout: 3000 }, () => undefined);
  t.equal(custom.headersTimeout, 3000, "headersTimeout follows handshakeTimeout");
  const { server: explicit } = await startServe(t, { handshakeTimeout: 3000, headersTimeout: 2000 }, () => undefined);
  t.equal(explicit.headersTimeout, 2000);
  t.equal((explicit.address() as AddressInfo).address, "127.0.0.1");
});

t.test("a plain GET gets 426 Upgrade Required", async (t) => {
  const { port } = await startServe(t, {}, () => undefined);
  const { res, body } = await get(port);
  t.equal(res.statusCode, 426);
  t.equal(res.headers["upgrade"], "websocket");
  t.equal(res.headers["sec-websocket-version"], "13");
  t.equal(res.headers["content-type"], "text/plain; charset=utf-8");
  t.equal(body, "this endpoint speaks WebSocket only\n");
  // an upgrade attempt Node does not see as one (no Connection: upgrade) is told what is missing
  const half = await get(port, { Upgrade: "websocket" });
  t.equal(half.res.statusCode, 426);
  t.equal(half.body, "WebSocket upgrade requests must use GET with Connection: Upgrade\n");
});

t.test("connections reach the handler with their request, and echo", async (t) => {
  const urls: string[] = [];
  const { port } = await startServe(t, { subprotocols: ["echo"] }, (conn, req) => {
    urls.push(req.url ?? "");
    return echo(conn).catch(() => undefined);
  });
  const conn = await dial(`ws://127.0.0.1:${port}/any/path?q=1`, { subprotocols: ["echo"] });
  t.teardown(() => conn.closeNow());
  t.equal(conn.subprotocol, "echo", "accept options apply");
  await conn.write(MessageType.Binary, Buffer.from([1, 2, 3]));
  t.same((await conn.read()).data, Buffer.from([1, 2, 3]));
  t.same(urls, ["/any/path?q=1"]);
  await conn.close();
  t.equal((await conn.closed).code, 1000);
});

t.test("path: other paths get 404, the query is ignored", async (t) => {
  const { port } = await startServe(t, { path: "/ws" }, (conn) => echo(conn).catch(() => undefined));
  for (const path of ["/", "/other", "/ws/", "/WS"]) {
    const err = await dial(`ws://127.0.0.1:${port}${path}`).catch((e: unknown) => e);
    t.type(err, HandshakeError, path);
    t.equal((err as HandshakeError).status, 404, `${path}: 404`);
  }
  for (const path of ["/ws", "/ws?token=1"]) {
    const conn = await dial(`ws://127.0.0.1:${port}${path}`);
    t.teardown(() => conn.closeNow());
    await conn.write(MessageType.Text, path);
    t.equal((await conn.read()).text(), path, `${path}: accepted`);
  }
});

t.test("a bad handshake gets accept's HTTP error and the server keeps serving", async (t) => {
  let handled = 0;
  const { port } = await startServe(t, {}, (conn) => {
    handled++;
    void conn.close(4000, "seen");
  });
  const response = await rawExchange(
    t,
    port,
    "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
  );
  t.match(response, /^HTTP\/1\.1 426 Upgrade Required\r\n/);
  t.match(response, /\r\nSec-WebSocket-Version: 13\r\n/);
  const crossOrigin = await dial(`ws://127.0.0.1:${port}`, { origin: "https://evil.example" }).catch((e: unknown) => e);
  t.match(crossOrigin, { status: 403 });
  const conn = await dial(`ws://127.0.0.1:${port}`);
  t.teardown(() => conn.closeNow());
  t.match(await conn.closed, { code: 4000, reason: "seen" });
  t.equal(handled, 1, "only the good handshake reached the handler");
});

t.test("a client that resets during an async origin check: the refusal's write error is handled, the server keeps serving", async (t) => {
  let handled = 0;
  let checks = 0;
  let entered!: () => void;
  const inCheck = new Promise<void>((resolve) => (entered = resolve));
  let clientGone!: () => void;
  const gone = new Promise<void>((resolve) => (clientGone = resolve));
  let serverSocketClosed!: Promise<boolean>;
  const { port } = await startServe(
    t,
    {
      checkOrigin: async (req) => {
        if (checks++ > 0) return true;
        // Not events.once: that would reject on the very 'error' serve must handle.
        serverSocketClosed = new Promise((resolve) => req.socket.once("close", resolve));
        entered();
        await gone;
        return false; // the 403 is written to a socket the peer has reset
      },
    },
    (conn) => {
      handled++;
      void conn.close(4000, "seen");
    },
  );
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => undefined);
  await once(socket, "connect");
  socket.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
  await inCheck;
  socket.resetAndDestroy();
  await once(socket, "close");
  clientGone();
  t.equal(await serverSocketClosed, true, "writing the refusal failed on the server");
  const conn = await dial(`ws://127.0.0.1:${port}`);
  t.teardown(() => conn.closeNow());
  t.match(await conn.closed, { code: 4000 }, "the server still serves");
  t.equal(handled, 1, "only the second connection reached the handler");
});

t.test("an oversized request head gets 431", async (t) => {
  const { port } = await startServe(t, {}, () => undefined);
  const big = `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(SERVE_MAX_HEADER_SIZE)}\r\n\r\n`;
  const response = await rawExchange(t, port, big);
  t.match(response, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
  // and the limit is configurable
  const { port: roomy } = await startServe(t, { maxHeaderSize: 32 * 1024 }, () => undefined);
  const ok = await rawExchange(t, roomy, big.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"));
  t.match(ok, /^HTTP\/1\.1 426 /, "a 9 KiB head passes a 32 KiB limit");
});

t.test("a malformed request gets 400", async (t) => {
  const { port } = await startServe(t, {}, () => undefined);
  const response = await rawExchange(t, port, "NONSENSE\r\n\r\n");
  t.match(response, /^HTTP\/1\.1 400 Bad Request\r\n/);
  const client = net.connect(port, "127.0.0.1");
  t.teardown(() => void client.destroy());
  await once(client, "connect");
  client.end(); // a client that leaves mid-request is simply dropped
  await once(client, "close");
  t.pass("no crash on an aborted request");
});

t.test("a handler that fails closes the connection with 1011", async (t) => {
  const handlers: Array<[string, Handler]> = [
    ["throws", () => {
      throw new Error("boom");
    }],
    ["rejects", async (conn) => {
      await conn.read();
      throw new Error("boom after a read");
    }],
  ];
  for (const [name, handler] of handlers) {
    const { port } = await startServe(t, {}, handler);
    const conn = await dial(`ws://127.0.0.1:${port}`);
    t.teardown(() => conn.closeNow());
    // the close may already have arrived with the 101 (the "throws" case), failing this write
    await conn.write(MessageType.Text, "trigger").catch(() => undefined);
    const err = await conn.read().catch((e: unknown) => e);
    t.type(err, CloseError, name);
    t.match(err, { code: 1011, reason: "handler failed", remote: true }, `${name}: close status`);
    t.match(await conn.closed, { code: 1011, reason: "handler failed" }, `${name}: closed`);
  }
});

t.test("serve rejects when it cannot listen", async (t) => {
  const { port } = await startServe(t, {}, () => undefined);
  await t.rejects(serve({ host: "127.0.0.1", port }, () => undefined), { code: "EADDRINUSE" });
});

/** makeCert generates a self-signed certificate for localhost and 127.0.0.1 with openssl. */
function makeCert(): { key: string; cert: string } {
  execFileSync("which", ["openssl"], { stdio: "ignore" }); // throws, failing the test, without openssl
  const dir = mkdtempSync(join(tmpdir(), "wsconn-serve-"));
  try {
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
        "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
      { stdio: "ignore" },
    );
    return { key: readFileSync(join(dir, "key.pem"), "utf8"), cert: readFileSync(join(dir, "cert.pem"), "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

t.test("wss: serve with tls, dial with the certificate as CA", async (t) => {
  const { key, cert } = makeCert();
  const { port } = await startServe(t, { tls: { key, cert } }, (conn) => echo(conn).catch(() => undefined));
  for (const url of [`wss://localhost:${port}/`, `wss://127.0.0.1:${port}/`, `https://localhost:${port}/`]) {
    const conn = await dial(url, { tls: { ca: cert } });
    t.teardown(() => conn.closeNow());
    await conn.write(MessageType.Text, `secure ${url}`);
    t.equal((await conn.read()).text(), `secure ${url}`, url);
    await conn.close();
  }
  const insecure = await dial(`wss://localhost:${port}/`, { tls: { rejectUnauthorized: false } });
  t.teardown(() => insecure.closeNow());
  await insecure.write(MessageType.Text, "unverified");
  t.equal((await insecure.read()).text(), "unverified", "rejectUnauthorized: false");
  // without the CA the self-signed certificate is refused
  const err = (await dial(`wss://localhost:${port}/`).catch((e: unknown) => e)) as Error & { code?: string };
  t.match(err.message, /^failed to dial: /);
  t.match(err.code, /SELF_SIGNED|UNABLE_TO_VERIFY/);
  // a plain ws:// client does not get through a TLS server
  const plain = await dial(`ws://127.0.0.1:${port}/`, { handshakeTimeout: 2000 }).catch((e: unknown) => e);
  t.type(plain, Error);
});
