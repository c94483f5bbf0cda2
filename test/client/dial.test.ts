import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { accept, type Conn, dial, HandshakeError, MessageType } from "../../src/index.js";

/** What a scripted server read from the client. */
interface SeenRequest {
  requestLine: string;
  headers: Record<string, string>;
  key: string;
  socket: net.Socket;
}

interface ScriptedServer {
  port: number;
  url: string;
  /** Resolves with the next request head received. */
  nextRequest(): Promise<SeenRequest>;
}

/** acceptFor computes Sec-WebSocket-Accept by hand (RFC 6455 §4.2.2). */
function acceptFor(key: string): string {
  return createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
}

/**
 * scriptedServer is a raw TCP server that reads one request head per
 * connection and lets `respond` answer it byte by byte.
 */
async function scriptedServer(t: Test, respond: (req: SeenRequest) => void, host = "127.0.0.1"): Promise<ScriptedServer> {
  const sockets = new Set<net.Socket>();
  const seen: SeenRequest[] = [];
  const waiting: Array<(r: SeenRequest) => void> = [];
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    let buffered = "";
    const onData = (chunk: Buffer): void => {
      buffered += chunk.toString("latin1");
      const end = buffered.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      const [requestLine, ...lines] = buffered.slice(0, end).split("\r\n");
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(":");
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const req = { requestLine: requestLine!, headers, key: headers["sec-websocket-key"] ?? "", socket };
      const w = waiting.shift();
      if (w) w(req);
      else seen.push(req);
      respond(req);
    };
    socket.on("data", onData);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as AddressInfo).port;
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const authority = host.includes(":") ? `[${host}]` : host;
  return {
    port,
    url: `ws://${authority}:${port}`,
    nextRequest: () => {
      const r = seen.shift();
      return r ? Promise.resolve(r) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

/** answer101 writes a switching-protocols answer with the given extra header lines. */
function answer101(req: SeenRequest, lines: string[] = [`Sec-WebSocket-Accept: ${acceptFor(req.key)}`], trailer?: Buffer): void {
  const head = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", ...lines, "", ""].join("\r\n");
  req.socket.write(trailer ? Buffer.concat([Buffer.from(head), trailer]) : head);
}

/** track closes a Conn at the end of the test. */
function track(t: Test, conn: Conn): Conn {
  t.teardown(() => conn.closeNow());
  return conn;
}


t.test("a correct answer: request headers, subprotocol, frames in the same write as the 101", async (t) => {
  const frame = Buffer.concat([Buffer.from([0x81, 5]), Buffer.from("hello")]); // unmasked server text frame
  const srv = await scriptedServer(t, (req) =>
    answer101(req, [`Sec-WebSocket-Accept: ${acceptFor(req.key)}`, "Sec-WebSocket-Protocol: v2.chat"], frame),
  );
  const conn = track(
    t,
    await dial(`${srv.url}/room/1?token=abc`, {
      subprotocols: ["v1.chat", "v2.chat"],
      origin: "https://app.example.org",
      headers: { Authorization: "Bearer secret", "X-Trace": "t-1" },
    }),
  );
  const req = await srv.nextRequest();
  t.equal(req.requestLine, "GET /room/1?token=abc HTTP/1.1");
  t.equal(req.headers["host"], `127.0.0.1:${srv.port}`);
  t.match(req.headers["connection"], /\bUpgrade\b/i);
  t.equal(req.headers["upgrade"], "websocket");
  t.equal(req.headers["sec-websocket-version"], "13");
  t.equal(Buffer.from(req.key, "base64").length, 16, "key is 16 random bytes in base64");
  t.equal(req.headers["sec-websocket-protocol"], "v1.chat, v2.chat");
  t.equal(req.headers["origin"], "https://app.example.org");
  t.equal(req.headers["authorization"], "Bearer secret");
  t.equal(req.headers["x-trace"], "t-1");
  t.equal(req.headers["sec-websocket-extensions"], undefined, "no extension offered by default");
  t.equal(conn.subprotocol, "v2.chat");
  const msg = await conn.read();
  t.equal(msg.type, MessageType.Text);
  t.equal(msg.text(), "hello", "the frame sent with the 101 is not lost");
});

t.test("keys differ between handshakes; no Origin unless asked", async (t) => {
  const srv = await scriptedServer(t, (req) => answer101(req));
  const keys = new Set<string>();
  for (let i = 0; i < 3; i++) {
    track(t, await dial(srv.url));
    const req = await srv.nextRequest();
    keys.add(req.key);
    t.equal(req.headers["origin"], undefined);
    t.equal(req.headers["sec-websocket-protocol"], undefined);
    t.equal(req.requestLine, "GET / HTTP/1.1", "empty path becomes /");
  }
  t.equal(keys.size, 3);
});

interface BadAnswer {
  name: string;
  answer: (req: SeenRequest) => void;
  subprotocols?: string[];
  message: RegExp;
}

const BAD_ANSWERS: BadAnswer[] = [
  { name: "wrong Sec-WebSocket-Accept", answer: (req) => answer101(req, [`Sec-WebSocket-Accept: ${acceptFor("x" + req.key)}`]), message: /Sec-WebSocket-Accept does not match/ },
  { name: "missing Sec-WebSocket-Accept", answer: (req) => answer101(req, []), message: /Sec-WebSocket-Accept does not match/ },
  {
    name: "Sec-WebSocket-Accept twice",
    answer: (req) => answer101(req, [`Sec-WebSocket-Accept: ${acceptFor(req.key)}`, `Sec-WebSocket-Accept: ${acceptFor(req.key)}`]),
    message: /Sec-WebSocket-Accept/,
  },
  {
    name: "missing Upgrade",
    answer: (req) => req.socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(req.key)}\r\n\r\n`),
    message: /server answered 101 without Upgrade: websocket and Connection: Upgrade/,
  },
  {
    name: "Upgrade: h2c",
    answer: (req) => req.socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(req.key)}\r\n\r\n`),
    message: /Upgrade header of the answer does not contain websocket/,
  },
  {
    name: "missing Connection",
    answer: (req) => req.socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: ${acceptFor(req.key)}\r\n\r\n`),
    message: /server answered 101 without Upgrade: websocket and Connection: Upgrade/,
  },
  {
    name: "subprotocol when none was offered",
    answer: (req) => answer101(req, [`Sec-WebSocket-Accept: ${acceptFor(req.key)}`, "Sec-WebSocket-Protocol: chat"]),
    message: /subprotocol "chat" which was not offered/,
  },
  {
    name: "subprotocol not among those offered",
    subprotocols: ["a", "b"],
    answer: (req) => answer101(req, [`Sec-WebSocket-Accept: ${acceptFor(req.key)}`, "Sec-WebSocket-Protocol: c"]),
    message: /not offered/,
  },
  {
    name: "two subprotocols",
    subprotocols: ["a", "b"],
    answer: (req) => answer101(req, [`Sec-WebSocket-Accept: ${acceptFor(req.key)}`, "Sec-WebSocket-Protocol: a, b"]),
    message: /not offered/,
  },
  {
    name: "extension not offered",
    answer: (req) => answer101(req, [`Sec-WebSocket-Accept: ${acceptFor(req.key)}`, "Sec-WebSocket-Extensions: x-custom"]),
    message: /extensions "x-custom" which were not offered/,
  },
  {
    name: "permessage-deflate not offered",
    answer: (req) => answer101(req, [`Sec-WebSocket-Accept: ${acceptFor(req.key)}`, "Sec-WebSocket-Extensions: permessage-deflate"]),
    message: /not offered/,
  },
];

t.test("a wrong 101 answer rejects with a HandshakeError and closes the socket", async (t) => {
  for (const c of BAD_ANSWERS) {
    let serverSocket: net.Socket | undefined;
    const srv = await scriptedServer(t, (req) => {
      serverSocket = req.socket;
      c.answer(req);
    });
    const err = await dial(srv.url, { subprotocols: c.subprotocols, handshakeTimeout: 3000 }).then(
      (conn) => {
        conn.closeNow();
        return undefined;
      },
      (e: unknown) => e,
    );
    t.type(err, HandshakeError, c.name);
    t.match(err, { code: "WS_ERR_BAD_HANDSHAKE", status: 101, message: c.message }, c.name);
    t.equal((err as HandshakeError).headers["sec-websocket-accept"] !== undefined || c.name.startsWith("missing Sec"), true, `${c.name}: headers kept`);
    if (!serverSocket!.destroyed) await once(serverSocket!, "close");
    t.pass(`${c.name}: the client closed the connection`);
  }
});

t.test("a refusal rejects with status, headers and body", async (t) => {
  const body = "origin not allowed\n";
  const srv = await scriptedServer(t, (req) =>
    req.socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Reason: origin\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
  );
  const err = await dial(srv.url).catch((e: unknown) => e);
  t.type(err, HandshakeError);
  const he = err as HandshakeError;
  t.equal(he.status, 403);
  t.equal(he.code, "WS_ERR_BAD_HANDSHAKE");
  t.match(he.message, /failed to dial: server answered 403 instead of 101/);
  t.equal(he.headers["x-reason"], "origin");
  t.equal(he.body.toString(), body);
});

t.test("a refusal body is kept up to 64 KiB", async (t) => {
  const big = Buffer.alloc(200 * 1024, "z");
  for (const framing of ["content-length", "chunked", "close-delimited"]) {
    const srv = await scriptedServer(t, (req) => {
      if (framing === "content-length") {
        req.socket.write(`HTTP/1.1 400 Bad Request\r\nContent-Length: ${big.length}\r\n\r\n`);
        req.socket.end(big);
      } else if (framing === "chunked") {
        req.socket.write("HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n");
        for (let i = 0; i < 10; i++) req.socket.write(`${(big.length / 10).toString(16)}\r\n${big.subarray(0, big.length / 10).toString()}\r\n`);
        req.socket.end("0\r\n\r\n");
      } else {
        req.socket.write("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
        req.socket.end(big);
      }
    });
    const err = (await dial(srv.url).catch((e: unknown) => e)) as HandshakeError;
    t.equal(err.status, 400, framing);
    t.equal(err.body.length, 64 * 1024, `${framing}: body cut at 64 KiB`);
    t.ok(err.body.every((b) => b === 0x7a), `${framing}: body content`);
  }
});

t.test("a refusal from a keep-alive server frees the connection", async (t) => {
  // like an HTTP server answering 404 on a wrong path and keeping the connection for the next request
  const srv = await scriptedServer(t, (req) => req.socket.write("HTTP/1.1 404 Not Found\r\nConnection: keep-alive\r\nContent-Length: 9\r\n\r\nnot found"));
  const err = (await dial(srv.url).catch((e: unknown) => e)) as HandshakeError;
  t.equal(err.status, 404);
  t.equal(err.body.toString(), "not found");
  const req = await srv.nextRequest();
  if (!req.socket.destroyed) await once(req.socket, "close");
  t.pass("the client closed its connection");
});

t.test("an empty refusal body", async (t) => {
  const srv = await scriptedServer(t, (req) => req.socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"));
  const err = (await dial(srv.url).catch((e: unknown) => e)) as HandshakeError;
  t.equal(err.status, 404);
  t.equal(err.body.length, 0);
});

t.test("handshake timeout when the server never answers", async (t) => {
  const srv = await scriptedServer(t, () => undefined);
  const started = Date.now();
  const err = await dial(srv.url, { handshakeTimeout: 100 }).catch((e: unknown) => e);
  t.match(err, { code: "WS_ERR_HANDSHAKE_TIMEOUT", message: /handshake not done within 100 ms/ });
  t.ok(Date.now() - started >= 90, "not before the timeout");
  const req = await srv.nextRequest();
  if (!req.socket.destroyed) await once(req.socket, "close");
  t.pass("the connection was closed");
});

t.test("handshake timeout while the refusal body trickles", async (t) => {
  const srv = await scriptedServer(t, (req) => req.socket.write("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100\r\n\r\npartial"));
  const err = await dial(srv.url, { handshakeTimeout: 100 }).catch((e: unknown) => e);
  t.match(err, { code: "WS_ERR_HANDSHAKE_TIMEOUT" });
});

t.test("abort rejects with the signal's reason", async (t) => {
  const srv = await scriptedServer(t, () => undefined);
  const ac = new AbortController();
  const reason = new Error("user navigated away");
  const dialing = dial(srv.url, { signal: ac.signal });
  const req = await srv.nextRequest();
  ac.abort(reason);
  const err = await dialing.catch((e: unknown) => e);
  t.equal(err, reason);
  if (!req.socket.destroyed) await once(req.socket, "close");
  t.pass("the connection was closed");

  const before = AbortSignal.abort(new Error("too late"));
  await t.rejects(dial(srv.url, { signal: before }), { message: "too late" }, "an already aborted signal");

  // a signal that aborts after the handshake does not touch the connection
  const srv2 = await scriptedServer(t, (r) => answer101(r));
  const ac2 = new AbortController();
  const conn = track(t, await dial(srv2.url, { signal: ac2.signal }));
  ac2.abort();
  t.equal(await Promise.race([conn.closed.then(() => "closed"), new Promise((r) => setImmediate(r, "open"))]), "open");
});

t.test("connection refused rejects with the socket error as cause", async (t) => {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const err = (await dial(`ws://127.0.0.1:${port}`).catch((e: unknown) => e)) as Error & { code?: string };
  t.type(err, Error);
  t.match(err.message, /^failed to dial: .*ECONNREFUSED/);
  t.equal(err.code, "ECONNREFUSED");
  t.match(err.cause, { code: "ECONNREFUSED" });
});

t.test("invalid URLs and schemes", async (t) => {
  const cases = ["not a url", "", "ftp://example.com/", "file:///etc/passwd", "ws://example.com/#fragment", "ws+unix://", "ws+unix:"];
  for (const url of cases) {
    await t.rejects(dial(url), { code: "WS_ERR_INVALID_URL" }, JSON.stringify(url));
  }
  const err = (await dial("::bad::").catch((e: unknown) => e)) as Error;
  t.ok(err.cause, "the URL parser's error is the cause");
});

t.test("bad request headers and subprotocols are refused before connecting", async (t) => {
  let connections = 0;
  const srv = await scriptedServer(t, () => void connections++);
  const bad = [{ "X-A": "a\r\nInjected: yes" }, { "X-A": "a\nb" }, { "X-A": "a\0" }, { "Bad Name": "v" }];
  for (const headers of bad) await t.rejects(dial(srv.url, { headers }), { code: "WS_ERR_INVALID_HEADER" }, JSON.stringify(headers));
  for (const p of ["two words", "a,b", ""]) await t.rejects(dial(srv.url, { subprotocols: [p] }), TypeError, `subprotocol ${JSON.stringify(p)}`);
  t.equal(connections, 0);
});

t.test("http:// URLs and IPv6 literals", async (t) => {
  const srv = await scriptedServer(t, (req) => answer101(req));
  track(t, await dial(`http://127.0.0.1:${srv.port}/x`));
  t.equal((await srv.nextRequest()).requestLine, "GET /x HTTP/1.1");
  const v6 = await scriptedServer(t, (req) => answer101(req), "::1");
  track(t, await dial(`${v6.url}/six`));
  const req = await v6.nextRequest();
  t.equal(req.requestLine, "GET /six HTTP/1.1");
  t.equal(req.headers["host"], `[::1]:${v6.port}`);
});

t.test("createConnection supplies the transport", async (t) => {
  const srv = await scriptedServer(t, (req) => answer101(req));
  const calls: Array<{ host?: string | null; port?: number | string | null }> = [];
  const conn = track(
    t,
    await dial("ws://unresolvable.invalid:1/custom", {
      createConnection: (options) => {
        calls.push({ host: options.host, port: options.port });
        return net.connect(srv.port, "127.0.0.1");
      },
    }),
  );
  t.same(calls, [{ host: "unresolvable.invalid", port: 1 }]);
  t.equal((await srv.nextRequest()).headers["host"], "unresolvable.invalid:1");
  t.ok(conn);
});

t.test("ws+unix:// reaches a wsconn server on a unix socket", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "wsconn-dial-"));
  const socketPath = join(dir, "ws.sock");
  const urls: string[] = [];
  const server = http.createServer();
  const conns: Conn[] = [];
  server.on("upgrade", (req, socket, head) => {
    urls.push(req.url ?? "");
    void accept(req, socket, head).then(async (conn) => {
      conns.push(conn);
      for await (const msg of conn) await conn.write(msg.type, msg.data);
    }).catch(() => undefined);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  t.teardown(async () => {
    for (const c of conns) c.closeNow();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });
  const conn = track(t, await dial(`ws+unix://${socketPath}:/chat/room?x=1`));
  await conn.write(MessageType.Text, "over a unix socket");
  t.equal((await conn.read()).text(), "over a unix socket");
  const plain = track(t, await dial(`ws+unix://${socketPath}`));
  t.ok(plain);
  t.same(urls, ["/chat/room?x=1", "/"]);
  await conn.close();
  t.equal((await conn.closed).code, 1000);
});
