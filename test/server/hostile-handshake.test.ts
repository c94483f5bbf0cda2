/**
 * Hostile opening handshakes against `serve` with its default safety limits:
 * missing, duplicated and invalid headers, oversized heads, too many headers
 * (the request that crashed ws, CVE-2024-37890), a Sec-WebSocket-Protocol made
 * for regex backtracking (the ReDoS of ws, CVE-2021-32640), a slowloris head,
 * request smuggling with a body on the upgrade. Each must get the right HTTP
 * status (or a closed socket) within its time limit, and the server must keep
 * serving: a normal client connects and echoes afterwards.
 */

import * as net from "node:net";
import type { AddressInfo } from "node:net";
import t, { type Test } from "tap";
import { type Conn, dial, HandshakeError, MessageType, serve } from "../../src/index.js";
import { acceptFor, encodeFrame, Op, rawExchange, type RawExchange, upgradeRequest } from "../helpers/raw-peer.js";

/** The head timeout used here, in ms: small, so the slowloris case runs quickly. */
const HEADERS_TIMEOUT = 500;

interface Served {
  port: number;
  close(): Promise<void>;
}

async function startServe(t: Test, options: Parameters<typeof serve>[0] = {}): Promise<Served> {
  const conns = new Set<Conn>();
  const server = await serve({ host: "127.0.0.1", headersTimeout: HEADERS_TIMEOUT, subprotocols: ["chat"], ...options }, async (conn) => {
    conns.add(conn);
    try {
      for await (const m of conn) await conn.write(m.type, m.data);
    } finally {
      conns.delete(conn);
    }
  });
  const served = {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      for (const c of conns) c.closeNow();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  t.teardown(() => served.close());
  return served;
}

/** stillServes: a normal client connects, gets an echo and closes cleanly. */
async function stillServes(t: Test, port: number): Promise<void> {
  const conn = await dial(`ws://127.0.0.1:${port}/`);
  await conn.write(MessageType.Text, "still here");
  t.equal((await conn.read()).text(), "still here", "a normal client is served afterwards");
  await conn.close();
  t.equal((await conn.closed).wasClean, true);
}

/** guarded fails the test instead of hanging if the server never closes the socket. */
async function guarded(p: Promise<RawExchange>, ms: number): Promise<RawExchange> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<RawExchange>((resolve) => {
    timer = setTimeout(() => resolve({ status: -1, response: "(socket still open)", elapsedMs: ms }), ms);
  });
  const result = await Promise.race([p, guard]);
  clearTimeout(timer);
  return result;
}

const KEY = "dGhlIHNhbXBsZSBub25jZQ==";

/** head builds a request head from its lines. */
function head(lines: string[]): string {
  return lines.map((l) => `${l}\r\n`).join("") + "\r\n";
}

function upgradeLines(port: number, skip: string[] = []): string[] {
  const lines = [
    "GET / HTTP/1.1",
    `Host: 127.0.0.1:${port}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${KEY}`,
    "Sec-WebSocket-Version: 13",
  ];
  return lines.filter((l) => !skip.some((s) => l.toLowerCase().startsWith(s.toLowerCase())));
}

interface HostileCase {
  name: string;
  request(port: number): string | Buffer;
  /** Acceptable statuses (0: the server just closed the socket). */
  status: number[];
  /** A header the response must carry, as a regular expression. */
  header?: RegExp;
  /** Time limit in ms for the answer and the closed socket. Default 2000. */
  limitMs?: number;
}

const CASES: HostileCase[] = [
  { name: "missing Upgrade header", request: (p) => head(upgradeLines(p, ["upgrade:"])), status: [426] },
  { name: "missing Connection header", request: (p) => head(upgradeLines(p, ["connection:"])), status: [426] },
  { name: "missing Sec-WebSocket-Key", request: (p) => head(upgradeLines(p, ["sec-websocket-key"])), status: [400] },
  { name: "missing Sec-WebSocket-Version", request: (p) => head(upgradeLines(p, ["sec-websocket-version"])), status: [426], header: /^Sec-WebSocket-Version: 13\r$/im },
  { name: "Sec-WebSocket-Version 8", request: (p) => head([...upgradeLines(p, ["sec-websocket-version"]), "Sec-WebSocket-Version: 8"]), status: [426], header: /^Sec-WebSocket-Version: 13\r$/im },
  { name: "Sec-WebSocket-Key of 15 bytes", request: (p) => head([...upgradeLines(p, ["sec-websocket-key"]), "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"]), status: [400] },
  { name: "Sec-WebSocket-Key not base64", request: (p) => head([...upgradeLines(p, ["sec-websocket-key"]), "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!=="]), status: [400] },
  { name: "duplicated Sec-WebSocket-Key", request: (p) => head([...upgradeLines(p), `Sec-WebSocket-Key: ${KEY}`]), status: [400] },
  { name: "duplicated Sec-WebSocket-Version", request: (p) => head([...upgradeLines(p), "Sec-WebSocket-Version: 13"]), status: [400, 426] },
  { name: "POST upgrade", request: (p) => head(["POST / HTTP/1.1", ...upgradeLines(p).slice(1), "Content-Length: 0"]), status: [405] },
  { name: "HTTP/1.0 upgrade", request: (p) => head(["GET / HTTP/1.0", ...upgradeLines(p).slice(1)]), status: [400] },
  { name: "NUL in a header value", request: (p) => head([...upgradeLines(p), "X-Evil: a\0b"]), status: [400] },
  { name: "bare CR inside a header value", request: (p) => head([...upgradeLines(p), "X-Evil: a\rb"]), status: [400] },
  { name: "space before the colon", request: (p) => head([...upgradeLines(p), "X-Evil : a"]), status: [400] },
  { name: "obsolete line folding", request: (p) => head([...upgradeLines(p), "X-Evil: a", " folded"]), status: [400] },
  { name: "garbage instead of a request", request: () => Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x00, 0x0d, 0x0a, 0x0d, 0x0a]), status: [400] },
  { name: "request head of 16 KiB", request: (p) => head([...upgradeLines(p), `X-Big: ${"a".repeat(16 * 1024)}`]), status: [431] },
  { name: "request target of 10 KiB", request: (p) => head([`GET /${"a".repeat(10 * 1024)} HTTP/1.1`, ...upgradeLines(p).slice(1)]), status: [414, 431] },
  {
    // ws crashed on this (CVE-2024-37890): past maxHeadersCount Node drops the
    // WebSocket headers, and the handshake code read an undefined key.
    name: "100 headers before the WebSocket ones",
    request: (p) => head([upgradeLines(p)[0]!, ...Array.from({ length: 100 }, (_, i) => `X-Filler-${i}: ${i}`), ...upgradeLines(p).slice(1)]),
    status: [400, 426, 431],
  },
  {
    // Node counts only name and value bytes toward maxHeaderSize, so 2000 tiny
    // headers fit in 8 KiB; maxHeadersCount (64) drops all but the first ones.
    name: "2000 tiny headers before the WebSocket ones",
    request: (p) => head([upgradeLines(p)[0]!, ...Array.from({ length: 2000 }, () => "a: b"), ...upgradeLines(p).slice(1)]),
    status: [400, 431],
  },
  { name: "cross-origin browser request", request: (p) => head([...upgradeLines(p), "Origin: http://evil.example"]), status: [403] },
  { name: "Origin that is not a URL", request: (p) => head([...upgradeLines(p), "Origin: null"]), status: [403] },
  // Request smuggling: a body on an upgrade request, which a proxy in front might read differently.
  {
    name: "Upgrade with Content-Length and a smuggled request as body",
    request: (p) => {
      const smuggled = "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
      return head([...upgradeLines(p), `Content-Length: ${smuggled.length}`]) + smuggled;
    },
    status: [400],
  },
  { name: "Upgrade with Transfer-Encoding: chunked", request: (p) => head([...upgradeLines(p), "Transfer-Encoding: chunked"]) + "5\r\nhello\r\n0\r\n\r\n", status: [400] },
  { name: "Upgrade with both Content-Length and Transfer-Encoding", request: (p) => head([...upgradeLines(p), "Content-Length: 5", "Transfer-Encoding: chunked"]) + "0\r\n\r\n", status: [400] },
  { name: "Upgrade with two Content-Length headers", request: (p) => head([...upgradeLines(p), "Content-Length: 0", "Content-Length: 5"]) + "hello", status: [400] },
];

t.test("hostile handshakes get their status, and the server keeps serving", async (t) => {
  const { port } = await startServe(t);
  for (const c of CASES) {
    const limit = c.limitMs ?? 2000;
    const res = await guarded(rawExchange(port, c.request(port)), limit + 1000);
    const statusLines = res.response.match(/^HTTP\/1\.1 \d{3}/gm) ?? [];
    t.ok(c.status.includes(res.status), `${c.name}: status ${res.status} is one of ${c.status.join("/")}`, { response: res.response.slice(0, 300) });
    t.ok(statusLines.length <= 1, `${c.name}: at most one response (nothing smuggled through)`);
    t.ok(res.elapsedMs <= limit, `${c.name}: answered and closed in ${res.elapsedMs} ms (limit ${limit})`);
    if (c.header) t.match(res.response, c.header, `${c.name}: response header`);
  }
  await stillServes(t, port);
});

t.test("a Sec-WebSocket-Protocol made for regex backtracking is answered quickly", async (t) => {
  // A large head limit so the header can be long enough to make a quadratic
  // (or worse) parser take seconds; a linear one takes microseconds.
  const { port } = await startServe(t, { maxHeaderSize: 256 * 1024, compression: "context-takeover" });
  const spaces = " ".repeat(200_000);
  const payloads = [
    ["spaces between two tokens (ws CVE-2021-32640)", `b${spaces}x`],
    ["commas and spaces", `chat${" ,".repeat(100_000)}`],
    ["a long run of token characters ending in a bad one", `${"a".repeat(200_000)}@`],
  ];
  for (const [name, value] of payloads) {
    for (const header of ["Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions"]) {
      const request = upgradeRequest(port, { headers: [`${header}: ${value}`] });
      const res = await guarded(rawExchange(port, request, { untilHead: true }), 5000);
      t.ok(res.status === 101 || res.status === 400, `${header}, ${name}: answered ${res.status}`);
      t.ok(res.elapsedMs < 1000, `${header}, ${name}: answered in ${res.elapsedMs} ms`);
    }
  }
  await stillServes(t, port);
});

t.test("slowloris: a head sent one byte at a time is cut off after headersTimeout", async (t) => {
  const { port } = await startServe(t);
  const request = upgradeRequest(port);
  // One byte every 20 ms would take seconds to finish the head; the server must not wait for it.
  const res = await guarded(rawExchange(port, request, { chop: 1, intervalMs: 20 }), 10_000);
  t.ok(res.status === 408 || res.status === 0, `answered ${res.status} (408 or a plain close)`);
  t.ok(res.elapsedMs >= HEADERS_TIMEOUT - 50, `not cut off early (${res.elapsedMs} ms)`);
  // Node sweeps for expired heads every min(timeout, 1 s): allow two sweeps and some scheduling slack.
  t.ok(res.elapsedMs <= HEADERS_TIMEOUT * 3 + 500, `closed in ${res.elapsedMs} ms, headersTimeout ${HEADERS_TIMEOUT} ms`);
  await stillServes(t, port);
});

t.test("slowloris: a complete request line, then silence", async (t) => {
  const { port } = await startServe(t);
  const res = await guarded(rawExchange(port, "GET / HTTP/1.1\r\nHost: x\r\n"), 10_000);
  t.ok(res.status === 408 || res.status === 0, `answered ${res.status}`);
  t.ok(res.elapsedMs <= HEADERS_TIMEOUT * 3 + 500, `closed in ${res.elapsedMs} ms`);
  await stillServes(t, port);
});

t.test("many hostile clients at once do not stop a normal one", async (t) => {
  const { port } = await startServe(t);
  const hostile = Array.from({ length: 50 }, (_, i) => guarded(rawExchange(port, CASES[i % CASES.length]!.request(port)), 5000));
  await stillServes(t, port);
  const results = await Promise.all(hostile);
  t.ok(results.every((r) => r.status !== -1), "every hostile socket was closed by the server");
});

t.test("a client that half-closes right after its request is not left half-open", async (t) => {
  // The FIN arrives while accept is still busy (here, an asynchronous origin check), before the Conn listens.
  const checkOrigin = (): Promise<boolean> => new Promise((resolve) => setImmediate(() => resolve(true)));
  const { port } = await startServe(t, { checkOrigin });
  const frames = Buffer.concat([encodeFrame({ opcode: Op.Text, payload: "hi" }, true), encodeFrame({ opcode: Op.Close, payload: Buffer.from([0x03, 0xe8]) }, true)]);
  for (const [name, request] of [
    ["request alone", Buffer.from(upgradeRequest(port))],
    ["request, a message and a close frame", Buffer.concat([Buffer.from(upgradeRequest(port)), frames])],
  ] as const) {
    const res = await guarded(rawExchange(port, request, { end: true }), 3000);
    t.equal(res.status, 101, `${name}: upgraded`);
    t.ok(res.elapsedMs < 2000, `${name}: the server closed its side too, in ${res.elapsedMs} ms`);
  }
  await stillServes(t, port);
});

/** HostileServer answers every connection with `answer`, and records when each socket closes. */
interface HostileServerCase {
  name: string;
  answer(socket: net.Socket, request: string): void;
  /** The error dial must reject with: a HandshakeError status, or an error code. */
  expect: { status: number } | { code: string } | { message: RegExp };
}

const accepting = (extra: string) => (socket: net.Socket, request: string): void => {
  const key = /sec-websocket-key: *(\S+)/i.exec(request)?.[1] ?? "";
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(key)}\r\n${extra}\r\n`);
};

const DIAL_TIMEOUT = 500;

const HOSTILE_SERVERS: HostileServerCase[] = [
  { name: "never answers", answer: () => undefined, expect: { code: "WS_ERR_HANDSHAKE_TIMEOUT" } },
  {
    name: "answers one byte every 50 ms",
    answer: (socket) => {
      const text = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n";
      let i = 0;
      const timer = setInterval(() => (socket.destroyed || i >= text.length ? clearInterval(timer) : socket.write(text[i++]!)), 50);
      socket.on("close", () => clearInterval(timer));
    },
    expect: { code: "WS_ERR_HANDSHAKE_TIMEOUT" },
  },
  {
    name: "a 200 whose body trickles forever",
    answer: (socket) => {
      socket.write("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
      const timer = setInterval(() => (socket.destroyed ? clearInterval(timer) : socket.write("x")), 50);
      socket.on("close", () => clearInterval(timer));
    },
    expect: { code: "WS_ERR_HANDSHAKE_TIMEOUT" },
  },
  {
    name: "a 403 with an endless body",
    answer: (socket) => {
      socket.write("HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n");
      const chunk = `4000\r\n${"x".repeat(0x4000)}\r\n`;
      const pump = (): void => {
        while (!socket.destroyed && socket.write(chunk));
      };
      socket.on("drain", pump);
      pump();
    },
    expect: { status: 403 },
  },
  { name: "a 101 without Sec-WebSocket-Accept", answer: (s) => s.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), expect: { status: 101 } },
  {
    name: "a 101 with a wrong Sec-WebSocket-Accept",
    answer: (s) => s.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor("x")}\r\n\r\n`),
    expect: { status: 101 },
  },
  { name: "a 101 choosing a subprotocol not offered", answer: accepting("Sec-WebSocket-Protocol: evil\r\n"), expect: { status: 101 } },
  { name: "a 101 choosing an extension not offered", answer: accepting("Sec-WebSocket-Extensions: x-evil\r\n"), expect: { status: 101 } },
  { name: "a 101 without Upgrade: websocket", answer: (s) => s.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n"), expect: { message: /./ } },
  { name: "a 1 MiB response head", answer: (s) => s.write(`HTTP/1.1 101 Switching Protocols\r\nX-Big: ${"a".repeat(1024 * 1024)}\r\n\r\n`), expect: { message: /failed to dial/ } },
  { name: "garbage instead of HTTP", answer: (s) => s.write(Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a])), expect: { message: /failed to dial/ } },
  { name: "closes the connection at once", answer: (s) => s.destroy(), expect: { message: /failed to dial/ } },
];

t.test("dial against hostile servers rejects with a clear error within handshakeTimeout", async (t) => {
  for (const c of HOSTILE_SERVERS) {
    const closed: Array<Promise<void>> = [];
    const server = net.createServer((socket) => {
      closed.push(new Promise((resolve) => socket.once("close", () => resolve())));
      socket.on("error", () => undefined);
      let request = "";
      socket.on("data", (d: Buffer) => {
        const done = request.includes("\r\n\r\n");
        request += d.toString("latin1");
        if (!done && request.includes("\r\n\r\n")) c.answer(socket, request);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const started = Date.now();
    const err: Error & { code?: string } = await dial(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/`, { handshakeTimeout: DIAL_TIMEOUT }).then(
      (conn) => (conn.closeNow(), new Error("dial resolved")),
      (e: unknown) => e as Error,
    );
    const elapsed = Date.now() - started;
    if ("status" in c.expect) {
      t.ok(err instanceof HandshakeError && err.status === c.expect.status, `${c.name}: HandshakeError ${c.expect.status} (${err.message})`);
      if (err instanceof HandshakeError) t.ok(err.body.length <= 64 * 1024, `${c.name}: body kept is bounded (${err.body.length} bytes)`);
    } else if ("code" in c.expect) {
      t.equal(err.code, c.expect.code, `${c.name}: ${err.message}`);
    } else {
      t.match(err.message, c.expect.message, `${c.name}: ${err.message}`);
      t.not(err.message, "dial resolved", `${c.name}: dial rejected`);
    }
    t.ok(elapsed < DIAL_TIMEOUT + 1000, `${c.name}: settled in ${elapsed} ms`);
    const allClosed = Promise.all(closed).then(() => true);
    const guard = new Promise<false>((resolve) => setTimeout(() => resolve(false), 2000).unref());
    t.ok(await Promise.race([allClosed, guard]), `${c.name}: dial closed its socket`);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
