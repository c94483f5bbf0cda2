/**
 * permessage-deflate against a real browser: headless Chromium's WebSocket
 * (driven over the DevTools protocol, see helpers/chromium.ts) talks to a
 * wsconn server in each compression mode. The page sends text (JSON-like,
 * with non-ASCII characters) and binary (pseudo-random and compressible)
 * messages from 0 B to 1 MiB and checks every echo byte for byte; the server
 * checks the negotiated extension, a SHA-256 of each message as it arrived,
 * and, from the socket's byte count, that Chromium's messages came
 * compressed. One more case: a close with 4001 and a reason, as the page sees
 * it. Skipped, and saying so, when Chromium is not installed.
 */

import { createHash } from "node:crypto";
import * as http from "node:http";
import type * as net from "node:net";
import type { AddressInfo } from "node:net";
import t, { type Test } from "tap";
import { accept, type CompressionMode, type CompressionSettings, type Conn, MessageType } from "../src/index.js";
import { type Chromium, chromiumMissing, launchChromium } from "./helpers/chromium.js";

const MiB = 1024 * 1024;
const READ_LIMIT = 2 * MiB;
const SIZES = [0, 1, 125, 126, 1000, 16 * 1024, 64 * 1024, MiB];
const CLOSE_REASON = "4001: the server is done with you, ünïcödé";

/**
 * The page, loaded from the server's own origin so that wsconn's default
 * origin check passes. `echoAll` sends every case in turn and awaits its
 * echo; `closeSeen` reports the CloseEvent of a connection the server closes.
 */
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>wsconn permessage-deflate echo</title>
<script>
const SIZES = ${JSON.stringify(SIZES)};
const encoder = new TextEncoder();

// Exactly n UTF-8 bytes of JSON records with non-ASCII text; a character the
// cut would split is replaced by ASCII padding.
function jsonText(n) {
  const parts = [];
  let bytes = 0;
  for (let id = 0; bytes < n; id++) {
    const record = JSON.stringify({ id, name: "Zoë Ångström", city: "København", note: "naïve café — 東京 🚀", ok: id % 3 === 0 }) + ",";
    parts.push(record);
    bytes += encoder.encode(record).length;
  }
  const all = encoder.encode(parts.join(""));
  let end = n;
  while (end < all.length && (all[end] & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(all.subarray(0, end)) + "x".repeat(n - end);
}

function randomBytes(n, seed) {
  const out = new Uint8Array(n);
  let x = seed * 2654435761 + 1 >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

function compressibleBytes(n) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i % 251) ^ (i >> 12 & 0x0f);
  return out;
}

function cases() {
  const list = [];
  for (const n of SIZES) {
    list.push({ name: "text " + n, kind: "text", data: jsonText(n) });
    list.push({ name: "random binary " + n, kind: "random", data: randomBytes(n, n + 1) });
    list.push({ name: "compressible binary " + n, kind: "compressible", data: compressibleBytes(n) });
  }
  return list;
}

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// Opens a WebSocket and returns it with a function that resolves with the next message.
function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const queue = [];
    const waiting = [];
    ws.onmessage = (e) => (waiting.length ? waiting.shift().resolve(e.data) : queue.push(e.data));
    ws.onerror = () => reject(new Error("WebSocket error before open"));
    ws.onclose = (e) => {
      const err = new Error("closed early: " + e.code + " " + e.reason);
      for (const w of waiting.splice(0)) w.reject(err);
      reject(err);
    };
    ws.onopen = () => {
      const next = () => queue.length ? Promise.resolve(queue.shift()) : new Promise((res, rej) => waiting.push({ resolve: res, reject: rej }));
      resolve({ ws, next });
    };
  });
}

async function echoAll(url) {
  const { ws, next } = await open(url);
  const sent = [];
  const mismatches = [];
  for (const c of cases()) {
    const bytes = c.kind === "text" ? encoder.encode(c.data) : c.data;
    sent.push({ name: c.name, kind: c.kind, bytes: bytes.length, sha256: await sha256(bytes) });
    ws.send(c.data);
    const echo = await next();
    const exact = c.kind === "text" ? echo === c.data : echo instanceof ArrayBuffer && sameBytes(new Uint8Array(echo), c.data);
    if (!exact) mismatches.push(c.name);
  }
  const extensions = ws.extensions;
  const closed = new Promise((resolve) => ws.addEventListener("close", (e) => resolve({ code: e.code, wasClean: e.wasClean })));
  ws.onclose = null;
  ws.close(1000);
  return { count: sent.length, mismatches, extensions, sent, closed: await closed };
}

function closeSeen(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.onmessage = () => reject(new Error("no message was expected"));
    ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
  });
}
</script>
`;

/** What the page's echoAll returns. */
interface EchoSummary {
  count: number;
  mismatches: string[];
  extensions: string;
  sent: Array<{ name: string; kind: "text" | "random" | "compressible"; bytes: number; sha256: string }>;
  closed: { code: number; wasClean: boolean };
}

/** One message as the server received it: `wire` is what the socket read for it, frame headers included. */
interface Arrival {
  type: MessageType;
  bytes: number;
  wire: number;
  sha256: string;
}

/** One WebSocket connection the server accepted, with the offer Chromium made. */
interface ServerSide {
  conn: Conn;
  offer: string;
  arrivals: Arrival[];
  /** Settles when the echo loop ends, with what it threw (undefined when the close was normal). */
  ended: Promise<unknown>;
}

/** EchoServer serves PAGE on GET / and WebSocket upgrades on /echo and /close. */
interface EchoServer {
  origin: string;
  wsOrigin: string;
  /** Resolves with the next connection accepted. */
  next(): Promise<ServerSide>;
}

/** startEchoServer listens on 127.0.0.1:0; /echo echoes every message and notes how it arrived, /close closes with 4001. */
async function startEchoServer(t: Test, compression: Compression): Promise<EchoServer> {
  const accepted: Array<(side: ServerSide) => void> = [];
  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/") res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(PAGE);
    else res.writeHead(404).end();
  });
  server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    if (req.url !== "/echo" && req.url !== "/close") {
      socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    void accept(req, socket, head, { compression, readLimit: READ_LIMIT }).then((conn) => {
      const arrivals: Arrival[] = [];
      const ended =
        req.url === "/close"
          ? conn.close(4001, CLOSE_REASON).then(() => undefined, (err: unknown) => err)
          : (async () => {
              let counted = socket.bytesRead;
              try {
                for await (const m of conn) {
                  // Chromium sends the next message only after this echo, so the bytes read since the last one are this message's.
                  arrivals.push({ type: m.type, bytes: m.data.length, wire: socket.bytesRead - counted, sha256: createHash("sha256").update(m.data).digest("hex") });
                  counted = socket.bytesRead;
                  await conn.write(m.type, m.data);
                }
                return undefined;
              } catch (err) {
                return err;
              }
            })();
      accepted.shift()?.({ conn, offer: String(req.headers["sec-websocket-extensions"] ?? ""), arrivals, ended });
    }, (err: unknown) => t.fail(`accept refused Chromium's handshake: ${String(err)}`));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    wsOrigin: `ws://127.0.0.1:${port}`,
    next: () => new Promise((resolve) => accepted.push(resolve)),
  };
}

/** A server's compression option, as accept takes it. */
type Compression = CompressionMode | CompressionSettings;

/** The server settings tried, and what wsconn answers to Chromium's offer with each (so what both ends must report). */
const CASES: Array<{ label: string; compression: Compression; negotiated: string }> = [
  { label: '"context-takeover"', compression: "context-takeover", negotiated: "permessage-deflate" },
  {
    label: '"no-context-takeover"',
    compression: "no-context-takeover",
    negotiated: "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
  },
  {
    label: "{ maxWindowBits: 10 }",
    compression: { mode: "context-takeover", maxWindowBits: 10 },
    negotiated: "permessage-deflate; client_max_window_bits=10",
  },
  { label: '"disabled"', compression: "disabled", negotiated: "" },
];

/** echoMatrix runs the page's echoAll against a server in `mode` and checks both sides. */
async function echoMatrix(t: Test, browser: Chromium, { compression, negotiated }: (typeof CASES)[number]): Promise<void> {
  const mode = typeof compression === "string" ? compression : "context-takeover";
  const server = await startEchoServer(t, compression);
  const page = await browser.newPage(`${server.origin}/`);
  const serverSide = server.next();
  const summary = await browser.evaluate<EchoSummary>(page, `echoAll(${JSON.stringify(`${server.wsOrigin}/echo`)})`);
  const { conn, offer, arrivals, ended } = await serverSide;
  t.comment(`Chromium offered: Sec-WebSocket-Extensions: ${offer}`);
  t.match(offer, /^permessage-deflate\b/, "Chromium offers permessage-deflate");

  t.equal(conn.extensions, negotiated, "the server's Conn reports the negotiated extension");
  t.equal(summary.extensions, conn.extensions, "the browser's ws.extensions matches the server's");
  t.equal(summary.count, SIZES.length * 3, "every case was sent");
  t.same(summary.mismatches, [], "every echo is byte-exact in the page");
  t.same(summary.closed, { code: 1000, wasClean: true }, "the page's close handshake completes");
  t.equal(await ended, undefined, "the server's echo loop ends quietly");

  t.equal(arrivals.length, summary.count, "the server received every message");
  const arrived = arrivals.map((a) => ({ type: a.type, bytes: a.bytes, sha256: a.sha256 }));
  const sent = summary.sent.map((s) => ({ type: s.kind === "text" ? MessageType.Text : MessageType.Binary, bytes: s.bytes, sha256: s.sha256 }));
  t.same(arrived, sent, "each message arrived with its type, length and SHA-256");

  // A compressible message of 16 KiB or more takes far fewer bytes on the
  // wire than its payload only if Chromium compressed it; uncompressed, a
  // frame is never smaller than its payload.
  const wireOf = summary.sent.map((s, i) => ({ ...s, wire: arrivals[i]?.wire ?? 0 }));
  const large = wireOf.filter((s) => s.kind !== "random" && s.bytes >= 16 * 1024);
  if (mode === "disabled") {
    const shrunk = wireOf.filter((s) => s.wire < s.bytes).map((s) => `${s.name}: ${s.wire} B`);
    t.same(shrunk, [], "without the extension no message is smaller on the wire than its payload");
  } else {
    const notShrunk = large.filter((s) => s.wire * 4 > s.bytes).map((s) => `${s.name}: ${s.wire} B`);
    t.same(notShrunk, [], "Chromium's large compressible messages arrived compressed (under a quarter of their size)");
    const mib = large.find((s) => s.kind === "text" && s.bytes === MiB)!;
    t.comment(`text 1 MiB from Chromium took ${mib.wire} bytes on the wire (${mode})`);
  }
}

t.test("Chromium's WebSocket against a wsconn server, with and without permessage-deflate", { skip: chromiumMissing() ?? false }, async (t) => {
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  t.comment(`browser: ${browser.version}`);

  for (const c of CASES) {
    await t.test(`server compression ${c.label}: every echo is exact`, (t) => echoMatrix(t, browser, c));
  }

  await t.test("a close with 4001 and a reason reaches the page as a clean CloseEvent", async (t) => {
    const server = await startEchoServer(t, "context-takeover");
    const page = await browser.newPage(`${server.origin}/`);
    const serverSide = server.next();
    const seen = await browser.evaluate<{ code: number; reason: string; wasClean: boolean }>(page, `closeSeen(${JSON.stringify(`${server.wsOrigin}/close`)})`);
    t.same(seen, { code: 4001, reason: CLOSE_REASON, wasClean: true }, "the page's CloseEvent");
    const { conn, ended } = await serverSide;
    t.equal(await ended, undefined, "the server's close() resolves");
    t.same(await conn.closed, { code: 4001, reason: CLOSE_REASON, wasClean: true }, "Chromium answered the close frame with the same code and reason");
  });
});
