/**
 * Every dial settles. Answers cut short (the server closes, resets or goes
 * quiet mid-head or mid-body), directly, through an HTTP CONNECT proxy and
 * under TLS, reject with a clear error: the HandshakeError for what arrived,
 * the socket error, `WS_ERR_HANDSHAKE_TIMEOUT` after `handshakeTimeout`, or
 * the signal's reason on abort. `Infinity` timeouts arm no timer at all (Node
 * would turn them into 1 ms), 0 means none for handshakes, and a finite
 * timeout setTimeout cannot honour is a RangeError before anything happens.
 *
 * The other side is a raw `net` server on 127.0.0.1 port 0 scripted byte by
 * byte, so no wsconn code plays it. No test measures time: each has its own
 * tap timeout, so a dial that never settles fails the test that made it.
 */

import { once } from "node:events";
import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import t, { type Test } from "tap";
import { accept, Conn, dial, type DialOptions, ErrorCode, HandshakeError, serve } from "../../src/index.js";
import { frame, rawConnect, type RawHead, readHead, startRawServer, switchingProtocols } from "../helpers/raw-peer.js";

/** The handshakeTimeout of dials that are expected to time out, in ms. */
const SHORT = 300;

/** The handshakeTimeout of dials that must settle by themselves: reaching it is a failure. */
const LONG = 8000;

/** How many dials the byte-by-byte sweeps run at once. */
const CONCURRENCY = 24;

/** How many dials the sweeps that wait for timeouts run at once: each one only waits. */
const WAITING_CONCURRENCY = 80;

/** How long the slow peers of the Infinity tests wait before answering, in ms (well past Node's 1 ms clamp). */
const DELAY = 30;

/** The timeout of each tap test: a dial that hangs fails its test in this time. */
const TEST_TIMEOUT = 15_000;

// ---- scripted servers ----

/** One request head a scripted server read, with its socket. */
interface Exchange {
  request: RawHead;
  socket: net.Socket;
}

/** A raw TCP server on 127.0.0.1 that reads one HTTP head per connection and lets the test answer. */
interface Scripted {
  port: number;
  url: string;
  /** The proxy URL of this server, for dials that use it as a CONNECT proxy. */
  proxyUrl: string;
  /** Connections accepted so far. */
  connections(): number;
  /** Request heads received so far, in order. */
  requests: RawHead[];
  /** Resolves with the next exchange, in arrival order. */
  next(): Promise<Exchange>;
  /** Resolves with the next socket accepted (before anything is read from it). */
  nextSocket(): Promise<net.Socket>;
}

/**
 * scriptedServer listens on 127.0.0.1:0; every connection's first HTTP head
 * goes to `respond` (when given) with its socket. Everything is closed at
 * the end of the test.
 */
async function scriptedServer(t: Test, respond?: (x: Exchange) => void): Promise<Scripted> {
  const sockets = new Set<net.Socket>();
  const requests: RawHead[] = [];
  const exchanges = queue<Exchange>();
  const accepted = queue<net.Socket>();
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    accepted.push(socket);
    // Without a script it reads and drops everything, so a client's FIN closes the socket.
    if (respond === undefined) return void socket.resume();
    readHead(socket).then(
      (request) => {
        requests.push(request);
        const x = { request, socket };
        respond(x);
        exchanges.push(x);
      },
      () => undefined,
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    port,
    url: `ws://127.0.0.1:${port}`,
    proxyUrl: `http://127.0.0.1:${port}`,
    connections: () => connections,
    requests,
    next: exchanges.shift,
    nextSocket: accepted.shift,
  };
}

/** queue hands pushed values to shift callers in order, whichever comes first. */
function queue<T>(): { push(v: T): void; shift(): Promise<T> } {
  const values: T[] = [];
  const waiting: Array<(v: T) => void> = [];
  return {
    push: (v) => {
      const w = waiting.shift();
      if (w) w(v);
      else values.push(v);
    },
    shift: () => (values.length > 0 ? Promise.resolve(values.shift()!) : new Promise((resolve) => waiting.push(resolve))),
  };
}

/** keyOf is the Sec-WebSocket-Key of a request head. */
function keyOf(request: RawHead): string {
  return request.headers.get("sec-websocket-key")?.[0] ?? "";
}

/** pathOf is the request target of a head ("/cut/12", or "host:port" for CONNECT). */
function pathOf(request: RawHead): string {
  return request.startLine.split(" ")[1] ?? "";
}

/** cutAt reads the number at the end of a request target: /cut/12 or cut-12.test:80. */
function cutAt(request: RawHead): number {
  return Number(/(\d+)(?:\.test:\d+)?$/.exec(pathOf(request))?.[1]);
}

/**
 * spying returns a createConnection for dial that connects to `port` and
 * calls `onData` with every chunk the client socket receives, before dial's
 * own reader sees it.
 */
function spying(port: number, onData: (chunk: Buffer, received: Buffer) => void): NonNullable<DialOptions["createConnection"]> {
  return () => {
    const socket = net.connect({ host: "127.0.0.1", port });
    let received = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      onData(chunk, received);
    });
    return socket;
  };
}

/** outcome is what a dial ended with: the error it rejected with, or "connected" (the Conn is dropped at once). */
async function outcome(dialing: Promise<Conn>): Promise<unknown> {
  try {
    (await dialing).closeNow();
    return "connected";
  } catch (err) {
    return err;
  }
}

/** closedBy waits until the client side dropped `socket` (it is the server's end). */
async function closedBy(socket: net.Socket): Promise<void> {
  if (!socket.destroyed) await once(socket, "close");
}

/** inPool runs `fn` over `items`, at most `limit` at a time. */
async function inPool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** offsets is 0, 1, …, n-1. */
function offsets(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function isTimeout(err: unknown): boolean {
  return (err as { code?: unknown } | undefined)?.code === ErrorCode.HandshakeTimeout;
}

const CUT_BODY = /\(the connection closed before the end of its body\)/;
const HANG_UP = /^failed to dial: socket hang up$/;

// ---- 1. cut and stalled bodies ----

/** A refusal whose body never arrives whole. */
interface CutShape {
  name: string;
  /** The response head, blank line included. */
  head: string;
  /** The body bytes sent before the server stops. */
  partial: string;
  /** What arrives of the body in HandshakeError.body (chunk framing removed). */
  body: string;
  status: number;
  /** The message when the connection closes mid-body. */
  message: RegExp;
}

const CUT_SHAPES: CutShape[] = [
  {
    name: "403 with Content-Length: 100000",
    head: "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n",
    partial: "you may not",
    body: "you may not",
    status: 403,
    message: /^failed to dial: server answered 403 instead of 101 \(the connection closed before the end of its body\)$/,
  },
  {
    name: "302 with a Location, followRedirects unset",
    head: "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 100000\r\n\r\n",
    partial: "moved to",
    body: "moved to",
    status: 302,
    message: /server answered 302 redirecting to "\/elsewhere"; redirects are not followed unless followRedirects is set/,
  },
  {
    name: "200 with Transfer-Encoding: chunked, cut mid-chunk",
    head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    partial: "5\r\nfirst\r\n20\r\nthe second chu",
    body: "firstthe second chu",
    status: 200,
    message: /^failed to dial: server answered 200 instead of 101 \(the connection closed before the end of its body\)$/,
  },
];

t.test("a refusal cut mid-body by FIN rejects with the status and the partial body", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const c of CUT_SHAPES) {
    const srv = await scriptedServer(t, ({ socket }) => socket.end(c.head + c.partial));
    const err = await outcome(dial(srv.url, { handshakeTimeout: LONG }));
    t.type(err, HandshakeError, c.name);
    t.match(err, { code: ErrorCode.BadHandshake, status: c.status, message: c.message }, c.name);
    t.equal((err as HandshakeError).body.toString("latin1"), c.body, `${c.name}: the partial body is kept`);
  }
});

t.test("a refusal cut mid-body by RST rejects with the status and the partial body", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const c of CUT_SHAPES) {
    const srv = await scriptedServer(t, ({ socket }) => socket.write(c.head + c.partial));
    // Reset only once the client holds every byte, so the kernel cannot drop any of them.
    const createConnection = spying(srv.port, (_chunk, received) => {
      if (received.toString("latin1").endsWith(c.partial)) void srv.next().then(({ socket }) => socket.resetAndDestroy());
    });
    const err = await outcome(dial(srv.url, { handshakeTimeout: LONG, createConnection }));
    t.type(err, HandshakeError, c.name);
    t.match(err, { status: c.status, message: c.message }, c.name);
    t.equal((err as Partial<HandshakeError>).body?.toString("latin1"), c.body, `${c.name}: the partial body is kept`);
  }
});

t.test("a refusal whose chunked body turns malformed settles with the refusal", { timeout: TEST_TIMEOUT }, async (t) => {
  // The parser fails mid-body and the client drops the socket; the server keeps it open.
  const srv = await scriptedServer(t, ({ socket }) => socket.write("HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ngood\r\nzz\r\n"));
  const err = await outcome(dial(srv.url, { handshakeTimeout: LONG }));
  t.type(err, HandshakeError);
  t.match(err, { status: 403, message: CUT_BODY });
  t.equal((err as Partial<HandshakeError>).body?.toString(), "good", "the body up to the bad chunk");
  await closedBy((await srv.next()).socket);
});

t.test("a refusal stalled mid-body times out within handshakeTimeout", { timeout: TEST_TIMEOUT }, async (t) => {
  // The shapes run side by side: each dial only waits for its timer.
  await Promise.all(
    CUT_SHAPES.map(async (c) => {
      const srv = await scriptedServer(t, ({ socket }) => socket.write(c.head + c.partial));
      const started = performance.now();
      const err = await outcome(dial(srv.url, { handshakeTimeout: SHORT }));
      t.match(err, { code: ErrorCode.HandshakeTimeout, message: `failed to dial: handshake not done within ${SHORT} ms` }, `${c.name} (after ${(performance.now() - started).toFixed(0)} ms)`);
      await closedBy((await srv.next()).socket);
      t.pass(`${c.name}: the client dropped the connection`);
    }),
  );
});

t.test("a refusal stalled mid-body rejects with the signal's reason on abort", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const c of CUT_SHAPES) {
    const srv = await scriptedServer(t, ({ socket }) => socket.write(c.head + c.partial));
    const controller = new AbortController();
    const reason = new Error(`gave up on ${c.name}`);
    // Abort once the partial body has reached the client and its reader (a turn later): dial is reading the body.
    const createConnection = spying(srv.port, (_chunk, received) => {
      if (received.toString("latin1").endsWith(c.partial)) setImmediate(() => controller.abort(reason));
    });
    // No timeout: only the abort can end this dial.
    const err = await outcome(dial(srv.url, { handshakeTimeout: Infinity, signal: controller.signal, createConnection }));
    t.equal(err, reason, c.name);
    await closedBy((await srv.next()).socket);
    t.pass(`${c.name}: the client dropped the connection`);
  }
});

t.test("followRedirects: 1 over cut bodies follows once, then settles", { timeout: TEST_TIMEOUT }, async (t) => {
  const cases = [
    {
      name: "a cut 302 to a cut 403",
      start: "/first",
      want: { status: 403, message: /^failed to dial: server answered 403 instead of 101 \(the connection closed before the end of its body\)$/ },
      body: "not here either",
      paths: ["/first", "/second"],
    },
    {
      name: "a cut 302 to itself",
      start: "/loop",
      want: { status: 302, message: /redirecting to "\/loop"; followed 1 redirects already \(followRedirects\)/ },
      body: "around",
      paths: ["/loop", "/loop"],
    },
  ];
  for (const c of cases) {
    const srv = await scriptedServer(t, ({ request, socket }) => {
      const path = pathOf(request);
      if (path === "/first") socket.end("HTTP/1.1 302 Found\r\nLocation: /second\r\nContent-Length: 100000\r\n\r\nmoved");
      else if (path === "/second") socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 100000\r\n\r\nnot here either");
      else socket.end("HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 100000\r\n\r\naround");
    });
    const err = await outcome(dial(`${srv.url}${c.start}`, { followRedirects: 1, handshakeTimeout: LONG }));
    t.type(err, HandshakeError, c.name);
    t.match(err, c.want, c.name);
    t.equal((err as HandshakeError).body.toString(), c.body, `${c.name}: the last partial body`);
    t.same(srv.requests.map(pathOf), c.paths, `${c.name}: hops`);
  }
});

t.test("a stalled redirect hop times out: handshakeTimeout bounds all hops", { timeout: TEST_TIMEOUT }, async (t) => {
  const srv = await scriptedServer(t, ({ request, socket }) => {
    if (pathOf(request) === "/first") socket.end("HTTP/1.1 302 Found\r\nLocation: /second\r\nContent-Length: 100000\r\n\r\nmoved");
    else socket.write("HTTP/1.1 403 Forbidden\r\nContent-Length: 100000\r\n\r\nstalled");
  });
  const err = await outcome(dial(`${srv.url}/first`, { followRedirects: 1, handshakeTimeout: SHORT }));
  t.match(err, { code: ErrorCode.HandshakeTimeout, message: /^failed to dial: handshake not done within \d+ ms$/ });
  t.same(srv.requests.map(pathOf), ["/first", "/second"]);
});

// ---- 2. every byte of the answer ----

/** An answer to cut at every byte offset. */
interface Answer {
  name: string;
  /** The whole answer to a request with this key. */
  bytes(key: string): string;
  /** Length of its head, blank line included. */
  headLength: number;
  /** The body the client keeps when it got `n` bytes of the answer past the head (chunk framing removed). */
  bodyAt(n: number): string;
}

const SWITCHING = switchingProtocols("x".repeat(24)); // a key's Sec-WebSocket-Accept always has 28 characters
const REFUSAL_HEAD = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n";
const CHUNKED_HEAD = "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n";
const CHUNKED_BODY = "4\r\ntry \r\n6\r\nlater!\r\n0\r\n\r\n";

const ANSWERS: Answer[] = [
  { name: "101", bytes: (key) => switchingProtocols(key), headLength: SWITCHING.length, bodyAt: () => "" },
  { name: "403 with a body", bytes: () => REFUSAL_HEAD + "origin refused", headLength: REFUSAL_HEAD.length, bodyAt: (n) => "origin refused".slice(0, n) },
  {
    name: "503 with a chunked body",
    bytes: () => CHUNKED_HEAD + CHUNKED_BODY,
    headLength: CHUNKED_HEAD.length,
    bodyAt: (n) => {
      // Data bytes are passed on as they arrive; framing bytes are not.
      const framed = CHUNKED_BODY.slice(0, n);
      const data = [[3, 7], [12, 18]] as const;
      return data.map(([from, to]) => framed.slice(from, to)).join("");
    },
  },
];

/** scriptedAnswers answers `/cut/N` with the first N bytes of `answer`, then FIN (`stall`: then nothing). */
async function scriptedAnswers(t: Test, answer: Answer, stall: boolean): Promise<Scripted> {
  return scriptedServer(t, ({ request, socket }) => {
    const bytes = answer.bytes(keyOf(request)).slice(0, cutAt(request));
    if (stall) socket.write(bytes);
    else socket.end(bytes);
  });
}

t.test("an answer cut by FIN at every byte offset settles at once with the right error", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const a of ANSWERS) {
    const total = a.bytes("x".repeat(24)).length;
    const srv = await scriptedAnswers(t, a, false);
    const wrong: string[] = [];
    const check = (n: number, ok: boolean, what: unknown): void => {
      if (!ok) wrong.push(`${n}: ${what instanceof Error ? `${what.constructor.name} ${what.message}` : String(what)}`);
    };
    await inPool(offsets(total + 1), CONCURRENCY, async (n) => {
      const err = await outcome(dial(`${srv.url}/cut/${n}`, { handshakeTimeout: LONG }));
      if (isTimeout(err)) return check(n, false, err);
      if (n < a.headLength) return check(n, err instanceof Error && HANG_UP.test(err.message) && (err as { code?: string }).code === "ECONNRESET", err);
      if (a.name === "101") return check(n, err === "connected", err);
      const he = err as HandshakeError;
      const whole = n === total;
      check(n, he instanceof HandshakeError && he.status === Number(a.name.slice(0, 3)) && CUT_BODY.test(he.message) !== whole, err);
      check(n, he.body?.toString("latin1") === a.bodyAt(n - a.headLength), `body ${JSON.stringify(he.body?.toString("latin1"))}`);
    });
    t.same(wrong, [], `${a.name}: ${total + 1} cuts, each rejected with the socket error, the refusal, or connected when whole`);
    t.equal(srv.requests.length, total + 1, `${a.name}: every cut was dialled`);
  }
});

t.test("an answer stalled at every byte offset times out within handshakeTimeout", { timeout: TEST_TIMEOUT }, async (t) => {
  const servers = await Promise.all(ANSWERS.map((a) => scriptedAnswers(t, a, true)));
  // The chunked answer is complete only with its last byte: every shorter one must wait.
  const stalls = ANSWERS.flatMap((a, i) => offsets(a.bytes("x".repeat(24)).length).map((n) => ({ a, srv: servers[i]!, n })));
  const wrong = new Map<string, string[]>(ANSWERS.map((a) => [a.name, []]));
  await inPool(stalls, WAITING_CONCURRENCY, async ({ a, srv, n }) => {
    const err = await outcome(dial(`${srv.url}/cut/${n}`, { handshakeTimeout: SHORT }));
    if (!isTimeout(err)) wrong.get(a.name)!.push(`${n}: ${err instanceof Error ? err.message : String(err)}`);
  });
  for (const [i, a] of ANSWERS.entries()) {
    t.same(wrong.get(a.name), [], `${a.name}: ${servers[i]!.requests.length} stalls, each ended by the timeout`);
  }
});

// ---- 3. CONNECT proxies ----

const ESTABLISHED = "HTTP/1.1 200 Connection Established\r\n\r\n";
const PROXY_AUTH_HEAD = 'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\nContent-Length: 100000\r\n\r\n';
const PROXY_AUTH = PROXY_AUTH_HEAD + "credentials, please";

t.test("a CONNECT answer cut by FIN at every byte settles at once", { timeout: TEST_TIMEOUT }, async (t) => {
  const cases = [
    { name: "200 Connection Established", bytes: ESTABLISHED, head: ESTABLISHED.length },
    { name: "407 with a Content-Length body", bytes: PROXY_AUTH, head: PROXY_AUTH_HEAD.length },
  ];
  for (const c of cases) {
    // The target host carries the offset: ws://cut-N.test:80/ (host names are never resolved, the proxy is).
    const proxy = await scriptedServer(t, ({ request, socket }) => socket.end(c.bytes.slice(0, cutAt(request))));
    const wrong: string[] = [];
    await inPool(offsets(c.bytes.length + 1), CONCURRENCY, async (n) => {
      const err = await outcome(dial(`ws://cut-${n}.test:80/`, { proxy: proxy.proxyUrl, handshakeTimeout: LONG }));
      const message = err instanceof Error ? err.message : String(err);
      let ok: boolean;
      if (n < c.head) ok = message === `failed to dial: proxy 127.0.0.1:${proxy.port}: socket hang up` && (err as { code?: string }).code === "ECONNRESET";
      else if (c.name.startsWith("407")) {
        ok = err instanceof HandshakeError && err.status === 407 && message.includes(`refused CONNECT to cut-${n}.test:80 with 407 Proxy Authentication Required`);
      } else ok = HANG_UP.test(message); // the tunnel was open, and closed before the upgrade was answered
      if (!ok) wrong.push(`${n}: ${message}`);
    });
    t.same(wrong, [], `${c.name}: ${c.bytes.length + 1} cuts`);
    t.equal(proxy.requests.length, c.bytes.length + 1, `${c.name}: every cut reached the proxy`);
    t.ok(proxy.requests.every((r) => r.startLine.startsWith("CONNECT cut-")), `${c.name}: CONNECT requests`);
  }
});

t.test("a CONNECT answer stalled at every byte times out, or refuses once the 407 head is whole", { timeout: TEST_TIMEOUT }, async (t) => {
  const proxy = await scriptedServer(t, ({ request, socket }) => socket.write(PROXY_AUTH.slice(0, cutAt(request))));
  const wrong: string[] = [];
  await inPool(offsets(PROXY_AUTH.length), WAITING_CONCURRENCY, async (n) => {
    const err = await outcome(dial(`ws://cut-${n}.test:80/`, { proxy: proxy.proxyUrl, handshakeTimeout: SHORT }));
    const message = err instanceof Error ? err.message : String(err);
    const ok =
      n < PROXY_AUTH_HEAD.length
        ? isTimeout(err) && new RegExp(`^failed to dial: proxy 127\\.0\\.0\\.1:${proxy.port} did not answer CONNECT within \\d+ ms$`).test(message)
        : err instanceof HandshakeError && err.status === 407; // the head is enough; the body is not waited for
    if (!ok) wrong.push(`${n}: ${message}`);
  });
  t.same(wrong, [], `${PROXY_AUTH.length} stalls`);
});

t.test("a proxy that never answers times out; an abort ends it too", { timeout: TEST_TIMEOUT }, async (t) => {
  const proxy = await scriptedServer(t, () => undefined);
  const timedOut = await outcome(dial("ws://ws.test:80/", { proxy: proxy.proxyUrl, handshakeTimeout: SHORT }));
  t.match(timedOut, { code: ErrorCode.HandshakeTimeout, message: `failed to dial: proxy 127.0.0.1:${proxy.port} did not answer CONNECT within ` });
  await closedBy((await proxy.next()).socket);

  const controller = new AbortController();
  const reason = new Error("no proxy today");
  const dialing = outcome(dial("ws://ws.test:80/", { proxy: proxy.proxyUrl, handshakeTimeout: Infinity, signal: controller.signal }));
  const { socket } = await proxy.next(); // the CONNECT request arrived
  controller.abort(reason);
  t.equal(await dialing, reason);
  await closedBy(socket);
  t.pass("the client dropped the connection to the proxy");
});

t.test("an abort between two steps of a dial is not lost", { timeout: TEST_TIMEOUT }, async (t) => {
  // Each abort runs in a microtask queued while the client receives the answer that
  // ends one step (the CONNECT, or a redirect): after dial's listener for that step is
  // gone, before the next step starts. The next step never gets an answer.
  const MOVED = "HTTP/1.1 302 Found\r\nLocation: /second\r\nContent-Length: 5\r\n\r\nmoved";
  const cases: Array<{ name: string; url: string; proxy: boolean; redirect: boolean; last: string }> = [
    { name: "ws: tunnel open, upgrade not sent yet", url: "ws://ws.test:80/", proxy: true, redirect: false, last: ESTABLISHED },
    { name: "wss: tunnel open, TLS not started yet", url: "wss://ws.test:443/", proxy: true, redirect: false, last: ESTABLISHED },
    { name: "a redirect followed, next request not sent yet", url: "ws://127.0.0.1/first", proxy: false, redirect: true, last: MOVED },
    { name: "a redirect through a proxy, next CONNECT not sent yet", url: "ws://ws.test:80/first", proxy: true, redirect: true, last: MOVED },
  ];
  for (const c of cases) {
    // One server plays the proxy (CONNECT is answered, then it reads the upgrade in the tunnel) and the target.
    const srv = await scriptedServer(t, ({ request, socket }) => {
      const answer = (upgrade: RawHead): void => {
        if (pathOf(upgrade) === "/first" && c.redirect) socket.write(MOVED);
      };
      if (request.startLine.startsWith("CONNECT")) {
        if (srv.requests.length > 1 && c.redirect) return; // the second CONNECT is never answered
        socket.write(ESTABLISHED);
        readHead(socket).then(answer, () => undefined);
      } else answer(request);
    });
    const controller = new AbortController();
    const reason = new Error(`aborted: ${c.name}`);
    let armed = true;
    let opened = 0;
    const spy = spying(srv.port, (_chunk, received) => {
      if (armed && received.toString("latin1").endsWith(c.last)) {
        armed = false;
        queueMicrotask(() => controller.abort(reason));
      }
    });
    const createConnection: DialOptions["createConnection"] = (o) => {
      opened++;
      return spy(o);
    };
    const url = c.proxy ? c.url : c.url.replace("127.0.0.1", `127.0.0.1:${srv.port}`);
    const options: DialOptions = { createConnection, signal: controller.signal, handshakeTimeout: LONG / 4, followRedirects: 1 };
    if (c.proxy) options.proxy = srv.proxyUrl;
    const err = await outcome(dial(url, options));
    t.equal(err, reason, `${c.name}: dial rejects with the reason, not a timeout`);
    t.equal(opened, c.redirect ? 2 : 1, `${c.name}: createConnection opened every connection${c.proxy ? " to the proxy" : ""}`);
    const sockets = await Promise.all(srv.requests.map(() => srv.next()));
    for (const x of sockets) await closedBy(x.socket);
    t.pass(`${c.name}: every connection was dropped`);
  }
});

// ---- 4. TLS that never starts ----

t.test("wss to a server that accepts TCP but never speaks TLS", { timeout: TEST_TIMEOUT }, async (t) => {
  const silent = await scriptedServer(t); // reads nothing, answers nothing
  const tunnel = await scriptedServer(t, ({ socket }) => socket.write(ESTABLISHED)); // a proxy whose target is as silent
  const cases: Array<{ name: string; options: DialOptions; server: Scripted }> = [
    { name: "direct", options: {}, server: silent },
    { name: "through a CONNECT proxy", options: { proxy: tunnel.proxyUrl }, server: tunnel },
  ];
  for (const c of cases) {
    const url = `wss://${c.name === "direct" ? "127.0.0.1" : "ws.test"}:${silent.port}/`;
    const first = c.server.nextSocket();
    const timedOut = await outcome(dial(url, { ...c.options, handshakeTimeout: SHORT }));
    await closedBy(await first);
    // Through the proxy the handshake gets what the CONNECT left of the deadline.
    t.match(timedOut, { code: ErrorCode.HandshakeTimeout, message: /^failed to dial: handshake not done within \d+ ms$/ }, `${c.name}: timeout`);

    const controller = new AbortController();
    const reason = new Error(`no TLS (${c.name})`);
    const accepted = c.server.nextSocket();
    const dialing = outcome(dial(url, { ...c.options, handshakeTimeout: Infinity, signal: controller.signal }));
    const socket = await accepted;
    // Abort once the ClientHello has arrived (through the proxy: the read after the CONNECT request).
    for (let reads = c.options.proxy ? 2 : 1; reads > 0; reads--) await once(socket, "data");
    controller.abort(reason);
    t.equal(await dialing, reason, `${c.name}: abort`);
    await closedBy(socket);
  }
});

// ---- 5. Infinity (and 0) mean no timer ----

t.test("handshakeTimeout Infinity or 0: dial waits for a slow 101", { timeout: TEST_TIMEOUT }, async (t) => {
  const srv = await scriptedServer(t, ({ request, socket }) => setTimeout(() => socket.write(switchingProtocols(keyOf(request))), DELAY));
  // A proxy that answers CONNECT late and then plays the target, answering the upgrade late too.
  const proxy = await scriptedServer(t, ({ socket }) =>
    setTimeout(() => {
      readHead(socket).then((upgrade) => setTimeout(() => socket.write(switchingProtocols(keyOf(upgrade))), DELAY), () => undefined);
      socket.write(ESTABLISHED);
    }, DELAY),
  );
  for (const handshakeTimeout of [Infinity, 0]) {
    t.equal(await outcome(dial(srv.url, { handshakeTimeout })), "connected", `direct, handshakeTimeout ${handshakeTimeout}`);
    t.equal(await outcome(dial("ws://ws.test:80/", { handshakeTimeout, proxy: proxy.proxyUrl })), "connected", `proxy, handshakeTimeout ${handshakeTimeout}`);
  }
  t.equal(await outcome(dial(srv.url, { handshakeTimeout: 2 ** 31 - 1 })), "connected", "the longest finite timeout works too");
});

/** acceptServer runs an http server whose upgrades go to accept with `options`; results are queued. */
async function acceptServer(t: Test, options: Parameters<typeof accept>[3]): Promise<{ url: string; port: number; next(): Promise<Conn | Error> }> {
  const results = queue<Conn | Error>();
  const conns: Conn[] = [];
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  server.on("upgrade", (req, socket, head) => {
    accept(req, socket, head, options).then(
      (conn) => {
        conns.push(conn);
        results.push(conn);
      },
      (err: Error) => results.push(err),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(async () => {
    for (const c of conns) c.closeNow();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const port = (server.address() as AddressInfo).port;
  return { url: `ws://127.0.0.1:${port}`, port, next: results.shift };
}

t.test("handshakeTimeout Infinity or 0: accept waits for a slow checkOrigin", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const handshakeTimeout of [Infinity, 0]) {
    let asked = 0;
    const checkOrigin = (): Promise<boolean> => {
      asked++;
      return new Promise((resolve) => setTimeout(() => resolve(true), DELAY));
    };
    const srv = await acceptServer(t, { handshakeTimeout, checkOrigin });
    const client = await dial(srv.url);
    t.teardown(() => client.closeNow());
    const accepted = await srv.next();
    t.type(accepted, Conn, `handshakeTimeout ${handshakeTimeout}: accepted`);
    t.equal(asked, 1, `handshakeTimeout ${handshakeTimeout}: checkOrigin was asked`);
  }
});

t.test("closeTimeout Infinity: close waits for a slow close frame and ends clean", { timeout: TEST_TIMEOUT }, async (t) => {
  // The client side: dial against a raw server that answers the close frame late, then closes TCP.
  const raw = await startRawServer();
  t.teardown(() => raw.close());
  const served = raw.nextPeer();
  const client = await dial(raw.url, { closeTimeout: Infinity });
  const { peer } = await served;
  const closing = client.close(1000, "bye");
  const got = await peer.nextFrame();
  t.match(got, { opcode: 8, masked: true }, "the client sent its close frame");
  setTimeout(() => {
    void peer.send([frame.close(1000, "late")]).then(() => peer.end());
  }, DELAY);
  await closing;
  t.same(await client.closed, { code: 1000, reason: "late", wasClean: true }, "client: clean");

  // The server side: accept against a raw client that answers late; the server closes TCP first.
  const srv = await acceptServer(t, { closeTimeout: Infinity });
  const rawClient = await rawConnect(srv.port);
  t.teardown(() => rawClient.destroy());
  const server = (await srv.next()) as Conn;
  const serverClosing = server.close(1001, "going away");
  t.match(await rawClient.nextFrame(), { opcode: 8, masked: false }, "the server sent its close frame");
  setTimeout(() => {
    // The server closes TCP first; this raw client (half-open allowed) answers its FIN.
    void rawClient.send([frame.close(1001, "late too")]).then(() => rawClient.ended).then(() => rawClient.end());
  }, DELAY);
  await serverClosing;
  t.same(await server.closed, { code: 1001, reason: "late too", wasClean: true }, "server: clean");
});

// ---- 6. finite timeouts setTimeout cannot honour ----

const BAD_TIMEOUTS = [2 ** 31, Number.MAX_SAFE_INTEGER, -1, Number.NaN, "100" as unknown as number];

t.test("dial refuses bad timeouts with a RangeError before connecting", { timeout: TEST_TIMEOUT }, async (t) => {
  const srv = await scriptedServer(t, ({ request, socket }) => socket.write(switchingProtocols(keyOf(request))));
  for (const option of ["handshakeTimeout", "closeTimeout"] as const) {
    for (const bad of BAD_TIMEOUTS) {
      const err = await outcome(dial(srv.url, { [option]: bad }));
      t.type(err, RangeError, `${option}: ${String(bad)}`);
      t.match(err, { message: new RegExp(`^${option} must be a number of ms from 0 to 2147483647, or Infinity for none, not `) }, `${option}: ${String(bad)}`);
    }
    // Through a proxy too: nothing reaches it.
    t.type(await outcome(dial("ws://ws.test:80/", { proxy: srv.proxyUrl, [option]: 2 ** 31 })), RangeError, `${option} with a proxy`);
  }
  t.equal(srv.connections(), 0, "no connection was made");
});

t.test("accept answers 500 and rejects with a RangeError for bad timeouts", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const option of ["handshakeTimeout", "closeTimeout"] as const) {
    for (const bad of [2 ** 31, -1, Number.NaN]) {
      const srv = await acceptServer(t, { [option]: bad });
      const clientErr = await outcome(dial(srv.url, { handshakeTimeout: LONG }));
      const serverErr = await srv.next();
      t.type(serverErr, RangeError, `${option}: ${String(bad)}: accept rejects`);
      t.match(serverErr, { message: new RegExp(`^${option} must be a number of ms`) }, `${option}: ${String(bad)}`);
      t.match(clientErr, { status: 500 }, `${option}: ${String(bad)}: the client got 500`);
    }
  }
});

t.test("serve refuses bad head, handshake and close timeouts before listening", { timeout: TEST_TIMEOUT }, async (t) => {
  const cases: Array<[string, Parameters<typeof serve>[0], RegExp]> = [
    ["headersTimeout 2 ** 31", { headersTimeout: 2 ** 31 }, /^headersTimeout must be a number of ms from 0 to 2147483647/],
    ["headersTimeout -1", { headersTimeout: -1 }, /^headersTimeout must be/],
    ["headersTimeout NaN", { headersTimeout: Number.NaN }, /^headersTimeout must be/],
    ["handshakeTimeout 2 ** 31", { handshakeTimeout: 2 ** 31 }, /^handshakeTimeout must be/],
    ["closeTimeout 2 ** 31", { closeTimeout: 2 ** 31 }, /^closeTimeout must be/],
    ["closeTimeout NaN", { closeTimeout: Number.NaN }, /^closeTimeout must be/],
  ];
  for (const [name, options, message] of cases) {
    await t.rejects(serve({ host: "127.0.0.1", ...options }, () => undefined), { name: "RangeError", message }, name);
  }
  // Infinity is none: serve listens and serves.
  const server = await serve({ host: "127.0.0.1", headersTimeout: Infinity, handshakeTimeout: Infinity }, (conn) => void conn.close());
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const conn = await dial(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  t.equal((await conn.closed).code, 1000, "headersTimeout Infinity serves");
});
