import { once } from "node:events";
import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import t, { type Test } from "tap";
import { DEFAULT_HANDSHAKE_TIMEOUT } from "../../src/conn/options.js";
import { accept, type AcceptOptions, type Conn, HandshakeError, isWebSocketUpgrade, MessageType } from "../../src/index.js";

const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; // RFC 6455 §1.3

/** One call of accept made by the test server, and how it settled. */
interface Attempt {
  req: http.IncomingMessage;
  head: Buffer;
  /** Which server event delivered the request. */
  via: "upgrade" | "request";
  outcome: Promise<{ conn?: Conn; err?: unknown }>;
}

/** AcceptServer hands every request, upgrade or not, to accept with the given options. */
interface AcceptServer {
  port: number;
  host: string;
  next(): Promise<Attempt>;
  close(): Promise<void>;
}

async function startAcceptServer(t: Test, options: AcceptOptions = {}): Promise<AcceptServer> {
  const server = http.createServer();
  const sockets = new Set<net.Socket>();
  const conns: Conn[] = [];
  const queue: Attempt[] = [];
  const waiting: Array<(a: Attempt) => void> = [];
  const deliver = (attempt: Attempt): void => {
    const w = waiting.shift();
    if (w) w(attempt);
    else queue.push(attempt);
  };
  const run = (req: http.IncomingMessage, socket: net.Socket, head: Buffer, via: Attempt["via"]): void => {
    const outcome = accept(req, socket, head, options).then(
      (conn) => {
        conns.push(conn);
        return { conn };
      },
      (err: unknown) => ({ err }),
    );
    deliver({ req, head, via, outcome });
  };
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("upgrade", (req, socket, head) => run(req, socket as net.Socket, head, "upgrade"));
  // A request Node does not see as an upgrade (no Connection: upgrade) still goes to accept, which must refuse it.
  server.on("request", (req: http.IncomingMessage) => run(req, req.socket, Buffer.alloc(0), "request"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const srv: AcceptServer = {
    port,
    host: `127.0.0.1:${port}`,
    next: () => {
      const a = queue.shift();
      return a ? Promise.resolve(a) : new Promise((resolve) => waiting.push(resolve));
    },
    close: async () => {
      for (const c of conns) c.closeNow();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  t.teardown(srv.close);
  return srv;
}

type HeaderSpec = Record<string, string | string[] | null>;

/** upgradeRequest writes a valid handshake request, with `overrides` replacing (null: removing) headers. */
function upgradeRequest(srv: AcceptServer, overrides: HeaderSpec = {}, requestLine = "GET /chat HTTP/1.1"): string {
  const headers: HeaderSpec = {
    Host: srv.host,
    Connection: "Upgrade",
    Upgrade: "websocket",
    "Sec-WebSocket-Key": KEY,
    "Sec-WebSocket-Version": "13",
    ...overrides,
  };
  let text = `${requestLine}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (value === null) continue;
    for (const v of Array.isArray(value) ? value : [value]) text += `${name}: ${v}\r\n`;
  }
  return `${text}\r\n`;
}

interface RawResponse {
  status: number;
  statusLine: string;
  headers: Record<string, string[]>;
  /** Bytes after the head: the body of an error, or the first frames after a 101. */
  rest: Buffer;
}

function parseHead(head: string, rest: Buffer): RawResponse {
  const [statusLine, ...lines] = head.split("\r\n");
  const headers: Record<string, string[]> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).trim().toLowerCase();
    (headers[name] ??= []).push(line.slice(colon + 1).trim());
  }
  return { status: Number(statusLine!.split(" ")[1]), statusLine: statusLine!, headers, rest };
}

/** connect opens a raw TCP connection to the server, closed at the end of the test. */
async function connect(t: Test, srv: AcceptServer): Promise<net.Socket> {
  const socket = net.connect(srv.port, "127.0.0.1");
  socket.on("error", () => undefined);
  t.teardown(() => void socket.destroy());
  await once(socket, "connect");
  return socket;
}

/** exchange sends `data` and reads until the server closes the connection. */
async function exchange(t: Test, srv: AcceptServer, data: string | Buffer): Promise<RawResponse & { raw: Buffer }> {
  const socket = await connect(t, srv);
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  socket.write(data);
  await once(socket, "close");
  const raw = Buffer.concat(chunks);
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) return { status: 0, statusLine: "", headers: {}, rest: raw, raw };
  return { ...parseHead(raw.subarray(0, end).toString("latin1"), raw.subarray(end + 4)), raw };
}

/** upgrade sends `data` and resolves once the response head arrived; the socket stays open. */
async function upgrade(t: Test, srv: AcceptServer, data: string | Buffer): Promise<RawResponse & { socket: net.Socket }> {
  const socket = await connect(t, srv);
  let buffered = Buffer.alloc(0);
  const head = new Promise<RawResponse>((resolve, reject) => {
    const onData = (c: Buffer): void => {
      buffered = Buffer.concat([buffered, c]);
      const end = buffered.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      resolve(parseHead(buffered.subarray(0, end).toString("latin1"), buffered.subarray(end + 4)));
    };
    socket.on("data", onData);
    socket.once("close", () => reject(new Error(`closed before a response head: ${JSON.stringify(buffered.toString())}`)));
  });
  socket.write(data);
  return { ...(await head), socket };
}

/** maskedFrame builds a client frame (FIN, masked with a fixed key). */
function maskedFrame(opcode: number, payload: Buffer): Buffer {
  const key = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.from(payload.map((b, i) => b ^ key[i & 3]!));
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length]), key, masked]);
}

interface Refusal {
  name: string;
  request: (srv: AcceptServer) => string;
  status: number;
  body: RegExp;
  via?: Attempt["via"];
  /** What isWebSocketUpgrade says of the request; default true. */
  upgrade?: boolean;
}

const REFUSALS: Refusal[] = [
  { name: "POST", request: (s) => upgradeRequest(s, {}, "POST /chat HTTP/1.1"), status: 405, body: /^method POST is not GET\n$/, upgrade: false },
  { name: "PUT", request: (s) => upgradeRequest(s, { "Content-Length": "0" }, "PUT / HTTP/1.1"), status: 405, body: /method PUT/, upgrade: false },
  { name: "HTTP/1.0", request: (s) => upgradeRequest(s, {}, "GET / HTTP/1.0"), status: 400, body: /^WebSocket needs HTTP\/1\.1\n$/ },
  { name: "no Connection header", request: (s) => upgradeRequest(s, { Connection: null }), status: 400, body: /Connection header/, via: "request", upgrade: false },
  { name: "Connection: keep-alive", request: (s) => upgradeRequest(s, { Connection: "keep-alive" }), status: 400, body: /Connection header/, via: "request", upgrade: false },
  { name: "Connection: upgrade-ish", request: (s) => upgradeRequest(s, { Connection: "keep-alive, upgrades" }), status: 400, body: /Connection header/, via: "request", upgrade: false },
  { name: "no Upgrade header", request: (s) => upgradeRequest(s, { Upgrade: null }), status: 400, body: /Upgrade header/, via: "request", upgrade: false },
  { name: "Upgrade: h2c", request: (s) => upgradeRequest(s, { Upgrade: "h2c" }), status: 400, body: /^Upgrade header does not contain websocket\n$/, via: "upgrade", upgrade: false },
  { name: "no version", request: (s) => upgradeRequest(s, { "Sec-WebSocket-Version": null }), status: 426, body: /unsupported Sec-WebSocket-Version ""/ },
  { name: "version 8", request: (s) => upgradeRequest(s, { "Sec-WebSocket-Version": "8" }), status: 426, body: /unsupported Sec-WebSocket-Version "8"/ },
  { name: "version 13 twice", request: (s) => upgradeRequest(s, { "Sec-WebSocket-Version": ["13", "13"] }), status: 426, body: /"13, 13"/ },
  { name: "no key", request: (s) => upgradeRequest(s, { "Sec-WebSocket-Key": null }), status: 400, body: /^invalid Sec-WebSocket-Key\n$/ },
  { name: "short key", request: (s) => upgradeRequest(s, { "Sec-WebSocket-Key": "c2hvcnQ=" }), status: 400, body: /invalid Sec-WebSocket-Key/ },
  { name: "key not base64", request: (s) => upgradeRequest(s, { "Sec-WebSocket-Key": "!!!!!!!!!!!!!!!!!!!!!!==" }), status: 400, body: /invalid Sec-WebSocket-Key/ },
  { name: "key twice", request: (s) => upgradeRequest(s, { "Sec-WebSocket-Key": [KEY, KEY] }), status: 400, body: /invalid Sec-WebSocket-Key/ },
  { name: "Content-Length body", request: (s) => upgradeRequest(s, { "Content-Length": "5" }) + "hello", status: 400, body: /must not have a body/ },
  {
    name: "chunked body",
    request: (s) => upgradeRequest(s, { "Transfer-Encoding": "chunked" }) + "5\r\nhello\r\n0\r\n\r\n",
    status: 400,
    body: /must not have a body/,
  },
  { name: "cross-origin", request: (s) => upgradeRequest(s, { Origin: "https://evil.example" }), status: 403, body: /Origin "https:\/\/evil.example" is not authorized/ },
  { name: "null origin", request: (s) => upgradeRequest(s, { Origin: "null" }), status: 403, body: /is not a URL/ },
  { name: "same host, other port", request: (s) => upgradeRequest(s, { Origin: "http://127.0.0.1:1" }), status: 403, body: /not authorized/ },
];

t.test("bad handshakes get the right HTTP error and accept rejects with a HandshakeError", async (t) => {
  const srv = await startAcceptServer(t);
  for (const c of REFUSALS) {
    const response = await exchange(t, srv, c.request(srv));
    const attempt = await srv.next();
    const { err } = await attempt.outcome;
    t.equal(response.status, c.status, `${c.name}: status`);
    t.equal(response.statusLine, `HTTP/1.1 ${c.status} ${http.STATUS_CODES[c.status]}`, `${c.name}: status line`);
    t.match(response.rest.toString(), c.body, `${c.name}: body`);
    t.same(response.headers["content-type"], ["text/plain; charset=utf-8"], `${c.name}: content type`);
    t.same(response.headers["content-length"], [String(response.rest.length)], `${c.name}: content length`);
    t.same(response.headers["connection"], ["close"], `${c.name}: connection close`);
    if (c.status === 426) t.same(response.headers["sec-websocket-version"], ["13"], `${c.name}: names the supported version`);
    else t.equal(response.headers["sec-websocket-version"], undefined, `${c.name}: no version header`);
    if (c.via) t.equal(attempt.via, c.via, `${c.name}: delivered as ${c.via}`);
    t.equal(isWebSocketUpgrade(attempt.req), c.upgrade ?? true, `${c.name}: isWebSocketUpgrade`);
    t.type(err, HandshakeError, `${c.name}: HandshakeError`);
    const he = err as HandshakeError;
    t.equal(he.status, c.status, `${c.name}: error status`);
    t.equal(he.code, "WS_ERR_BAD_HANDSHAKE");
    t.match(he.message, /^failed to accept: /);
    t.match(he.body.toString() + "\n", c.body, `${c.name}: error body`);
    if (c.status === 426) t.same(he.headers, { "Sec-WebSocket-Version": "13" });
  }
});

t.test("a valid handshake answers 101 with the accept hash", async (t) => {
  const srv = await startAcceptServer(t);
  const res = await upgrade(t, srv, upgradeRequest(srv));
  const { conn, err } = await (await srv.next()).outcome;
  t.equal(err, undefined);
  t.equal(res.statusLine, "HTTP/1.1 101 Switching Protocols");
  t.same(res.headers["upgrade"], ["websocket"]);
  t.same(res.headers["connection"], ["Upgrade"]);
  t.same(res.headers["sec-websocket-accept"], [ACCEPT]);
  t.equal(res.headers["sec-websocket-protocol"], undefined, "no subprotocol");
  t.equal(res.headers["sec-websocket-extensions"], undefined, "no extension");
  t.equal(conn!.subprotocol, "");
  t.equal(DEFAULT_HANDSHAKE_TIMEOUT, 10000);
});

t.test("Connection and Upgrade are token lists, matched without case", async (t) => {
  const srv = await startAcceptServer(t);
  const variants: HeaderSpec[] = [
    { Connection: "keep-alive, Upgrade" },
    { Connection: "UPGRADE" },
    { Connection: "upgrade , keep-alive" },
    { Connection: ["keep-alive", "Upgrade"] },
    { Upgrade: "WebSocket" },
    { Upgrade: "h2c, websocket" },
    { Origin: `http://${srv.host.toUpperCase()}` },
    { "Content-Length": "0" },
  ];
  for (const headers of variants) {
    const res = await upgrade(t, srv, upgradeRequest(srv, headers));
    const attempt = await srv.next();
    const { conn } = await attempt.outcome;
    t.ok(isWebSocketUpgrade(attempt.req), `${JSON.stringify(headers)}: isWebSocketUpgrade`);
    t.equal(res.status, 101, JSON.stringify(headers));
    t.ok(conn, `${JSON.stringify(headers)}: accepted`);
    res.socket.destroy();
  }
});

t.test("cross-origin requests allowed by configuration", async (t) => {
  const origin = "https://app.example.org";
  const cases: Array<[string, AcceptOptions]> = [
    ["originPatterns on host", { originPatterns: ["*.example.org"] }],
    ["originPatterns with scheme", { originPatterns: ["https://*.example.org"] }],
    ["checkOrigin sync", { checkOrigin: (req) => req.headers.origin === origin }],
    ["checkOrigin async", { checkOrigin: async (req) => (await Promise.resolve(req.headers.origin)) === origin }],
    ["insecureSkipVerify", { insecureSkipVerify: true }],
  ];
  for (const [name, options] of cases) {
    const srv = await startAcceptServer(t, options);
    const res = await upgrade(t, srv, upgradeRequest(srv, { Origin: origin }));
    const { conn } = await (await srv.next()).outcome;
    t.equal(res.status, 101, name);
    t.ok(conn, name);
    res.socket.destroy();
  }
  // and refused when the configuration does not cover it
  const refused: Array<[string, AcceptOptions]> = [
    ["originPatterns for another site", { originPatterns: ["*.example.com"] }],
    ["originPatterns with another scheme", { originPatterns: ["http://*.example.org"] }],
    ["checkOrigin sync false", { checkOrigin: () => false }],
    ["checkOrigin async false", { checkOrigin: async () => false }],
  ];
  for (const [name, options] of refused) {
    const srv = await startAcceptServer(t, options);
    const res = await exchange(t, srv, upgradeRequest(srv, { Origin: origin }));
    const { err } = await (await srv.next()).outcome;
    t.equal(res.status, 403, name);
    t.match(err, { status: 403 }, name);
  }
});

t.test("checkOrigin replaces the default policy, even for same-origin requests", async (t) => {
  let seen: string | undefined;
  const srv = await startAcceptServer(t, {
    checkOrigin: (req) => {
      seen = req.headers.origin;
      return false;
    },
  });
  const res = await exchange(t, srv, upgradeRequest(srv, { Origin: `http://${srv.host}` }));
  t.equal(res.status, 403);
  t.match(res.rest.toString(), /^origin refused\n$/);
  t.equal(seen, `http://${srv.host}`);
});

t.test("a checkOrigin that throws answers 500 and rejects with its error", async (t) => {
  const boom = new Error("policy store down");
  for (const checkOrigin of [() => Promise.reject(boom), (): boolean => { throw boom; }]) {
    const srv = await startAcceptServer(t, { checkOrigin });
    const res = await exchange(t, srv, upgradeRequest(srv));
    const { err } = await (await srv.next()).outcome;
    t.equal(res.status, 500, "the client gets an answer and the socket is closed");
    t.equal(err, boom, "accept rejects with the checkOrigin error");
  }
});

t.test("subprotocols are chosen in the server's order of preference", async (t) => {
  const srv = await startAcceptServer(t, { subprotocols: ["v3.chat", "v2.chat", "v1.chat"] });
  const cases: Array<[HeaderSpec, string]> = [
    [{ "Sec-WebSocket-Protocol": "v1.chat, v2.chat" }, "v2.chat"],
    [{ "Sec-WebSocket-Protocol": "v1.chat,v3.chat,v2.chat" }, "v3.chat"],
    [{ "Sec-WebSocket-Protocol": ["v1.chat", "v2.chat"] }, "v2.chat"],
    [{ "Sec-WebSocket-Protocol": "v1.chat" }, "v1.chat"],
    [{ "Sec-WebSocket-Protocol": "other, V3.CHAT" }, ""],
    [{}, ""],
  ];
  for (const [headers, expected] of cases) {
    const res = await upgrade(t, srv, upgradeRequest(srv, headers));
    const { conn } = await (await srv.next()).outcome;
    const name = JSON.stringify(headers);
    t.equal(conn!.subprotocol, expected, `${name}: conn.subprotocol`);
    t.same(res.headers["sec-websocket-protocol"], expected === "" ? undefined : [expected], `${name}: response header`);
    res.socket.destroy();
  }
  const none = await startAcceptServer(t, {});
  const res = await upgrade(t, none, upgradeRequest(none, { "Sec-WebSocket-Protocol": "v1.chat" }));
  t.equal(res.headers["sec-websocket-protocol"], undefined, "a server without subprotocols selects none");
  t.equal((await (await none.next()).outcome).conn!.subprotocol, "");
});

t.test("extra response headers appear in the 101", async (t) => {
  const srv = await startAcceptServer(t, {
    headers: { "Set-Cookie": ["a=1; HttpOnly", "b=2"], "X-Served-By": "wsconn", "X-Count": 3, "X-Skipped": undefined },
  });
  const res = await upgrade(t, srv, upgradeRequest(srv));
  t.equal(res.status, 101);
  t.same(res.headers["set-cookie"], ["a=1; HttpOnly", "b=2"]);
  t.same(res.headers["x-served-by"], ["wsconn"]);
  t.same(res.headers["x-count"], ["3"]);
  t.equal(res.headers["x-skipped"], undefined);
});

t.test("a response header with CR, LF or NUL answers 500 and rejects with WS_ERR_INVALID_HEADER", async (t) => {
  const bad: AcceptOptions["headers"][] = [
    { "X-Evil": "a\r\nSet-Cookie: session=stolen" },
    { "X-Evil": "a\nb" },
    { "X-Evil": ["ok", "a\0b"] },
    { "Bad Name": "v" },
  ];
  for (const headers of bad) {
    const srv = await startAcceptServer(t, { headers });
    const res = await exchange(t, srv, upgradeRequest(srv));
    const { err } = await (await srv.next()).outcome;
    t.equal(res.status, 500, JSON.stringify(headers));
    t.notMatch(res.raw.toString("latin1"), /session=stolen|X-Evil/i, "the bad header is not sent");
    t.match(err, { code: "WS_ERR_INVALID_HEADER" });
  }
});

t.test("bytes sent right after the request head are the first frame", async (t) => {
  const srv = await startAcceptServer(t);
  const socket = await connect(t, srv);
  const frame = maskedFrame(0x1, Buffer.from("early bird"));
  socket.write(Buffer.concat([Buffer.from(upgradeRequest(srv)), frame]));
  const attempt = await srv.next();
  t.ok(attempt.head.length > 0, `the frame arrived in head (${attempt.head.length} bytes)`);
  const { conn } = await attempt.outcome;
  const msg = await conn!.read();
  t.equal(msg.type, MessageType.Text);
  t.equal(msg.text(), "early bird");
  // the connection keeps working after the head bytes
  socket.write(maskedFrame(0x2, Buffer.from([1, 2, 3])));
  const next = await conn!.read();
  t.same(next.data, Buffer.from([1, 2, 3]));
});

t.test("handshakeTimeout: a checkOrigin that never resolves", async (t) => {
  const srv = await startAcceptServer(t, { handshakeTimeout: 50, checkOrigin: () => new Promise<boolean>(() => undefined) });
  const socket = await connect(t, srv);
  const received: Buffer[] = [];
  socket.on("data", (c: Buffer) => received.push(c));
  socket.write(upgradeRequest(srv));
  const { err } = await (await srv.next()).outcome;
  t.match(err, { code: "WS_ERR_HANDSHAKE_TIMEOUT", message: /failed to accept: handshake not done within 50 ms/ });
  await once(socket, "close");
  t.equal(Buffer.concat(received).length, 0, "the socket is dropped without an answer");
});

t.test("the socket dies while checkOrigin runs", async (t) => {
  for (const allow of [true, false]) {
    const srv = await startAcceptServer(t, {
      checkOrigin: (req) => {
        req.socket.destroy(); // as if the connection reset
        return allow;
      },
    });
    const client = await connect(t, srv);
    const received: Buffer[] = [];
    client.on("data", (c: Buffer) => received.push(c));
    client.write(upgradeRequest(srv));
    const { err } = await (await srv.next()).outcome;
    t.type(err, HandshakeError, `allow ${allow}`);
    t.equal((err as HandshakeError).status, allow ? 0 : 403, `allow ${allow}: status`);
    if (allow) t.match((err as Error).message, /went away/);
    await once(client, "close");
    t.equal(Buffer.concat(received).length, 0, `allow ${allow}: nothing written to a dead socket`);
  }
});
