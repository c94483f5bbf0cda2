/**
 * The load generator, in its own process. Commands:
 *   echo { client, port, proto, size, conns, inflight, warmupMs, durationMs }
 *     keeps `inflight` messages of `size` bytes outstanding on each of `conns`
 *     connections, sending the next as soon as an echo comes back; counts the
 *     echoes and their round-trip times during the measured window only.
 *   idle { port, count } / release: opens and holds idle WebSocket connections.
 * Clients: "raw" (bench/lib/wire.mjs: frames built once; proto "ws" or "len"),
 * "wsconn" (wsconn's dial) and "ws" (ws's WebSocket).
 * For the compression suite, echo also takes `text` (send JSON-like text
 * messages of exactly `size` bytes, 64 variants in turn, instead of one
 * random binary payload), `deflate` (ws's perMessageDeflate client option)
 * and `dialOptions` (merged into wsconn's dial options), and reports the
 * extensions the server agreed to and, for ws, the bytes read per echo.
 * Connects to 127.0.0.1 only.
 */

import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { distUrl, serveCommands } from "./lib/ipc.mjs";
import { jsonText } from "./lib/text.mjs";
import { connectRaw, encodeMessage, MessageCounter } from "./lib/wire.mjs";

const require = createRequire(import.meta.url);
const MAX_SAMPLES = 1_000_000;
const TEXT_VARIANTS = 64;
const idle = [];

serveCommands({ echo, idle: openIdle, release: releaseIdle });

const clients = { raw: openRaw, wsconn: openWsconn, ws: openWs };

async function echo(p) {
  if (p.text && p.client === "raw") throw new Error("the raw client sends one binary payload; text needs client ws or wsconn");
  const payloads = p.text ? Array.from({ length: TEXT_VARIANTS }, (_, i) => jsonText(p.size, i)) : [randomBytes(p.size)];
  const open = clients[p.client];
  const conns = await Promise.all(Array.from({ length: p.conns }, (_, i) => open(p, payloads[0], new Cycle(payloads, i * 7))));
  const readBefore = conns.reduce((n, c) => n + (c.bytesRead?.() ?? NaN), 0);
  const cpuStart = process.cpuUsage();
  const run = new EchoRun(p.inflight);
  for (const c of conns) run.drive(c);
  await sleep(p.warmupMs);
  run.startMeasuring();
  await sleep(p.durationMs);
  const result = run.stopMeasuring();
  await run.drained(5000);
  const cpu = process.cpuUsage(cpuStart);
  const wireBytesPerMsg = (conns.reduce((n, c) => n + (c.bytesRead?.() ?? NaN), 0) - readBefore) / run.total;
  const extensions = [...new Set(conns.map((c) => c.extensions ?? ""))];
  const badEchoes = conns.reduce((n, c) => n + (c.bad ?? 0), 0);
  await Promise.all(conns.map((c) => c.close()));
  return { ...result, total: run.total, clientCpuPerMsg: (cpu.user + cpu.system) / run.total, bytes: result.messages * p.size, wireBytesPerMsg, extensions, badEchoes };
}

/** Cycle hands out a connection's messages in turn, each connection from its own offset. */
class Cycle {
  constructor(items, offset) {
    this.items = items;
    this.i = offset % items.length;
  }

  next() {
    const item = this.items[this.i];
    this.i = (this.i + 1) % this.items.length;
    return item;
  }
}

/** EchoRun keeps every connection busy and records round trips, FIFO per connection. */
class EchoRun {
  constructor(inflight) {
    this.inflight = inflight;
    this.measuring = false;
    this.stopped = false;
    this.messages = 0;
    this.total = 0;
    this.samples = [];
    this.outstanding = 0;
    this.onIdle = undefined;
  }

  drive(c) {
    const ring = new Float64Array(this.inflight);
    let head = 0;
    let tail = 0;
    const send = () => {
      ring[tail] = performance.now();
      tail = (tail + 1) % this.inflight;
      this.outstanding++;
      c.send();
    };
    c.onMessage = () => {
      const rtt = performance.now() - ring[head];
      head = (head + 1) % this.inflight;
      this.outstanding--;
      this.total++;
      if (this.measuring) {
        this.messages++;
        if (this.samples.length < MAX_SAMPLES) this.samples.push(rtt);
      }
      if (!this.stopped) send();
      else if (this.outstanding === 0) this.onIdle?.();
    };
    c.batch(() => {
      for (let i = 0; i < this.inflight; i++) send();
    });
  }

  startMeasuring() {
    this.measuring = true;
    this.samples = [];
    this.start = performance.now();
  }

  stopMeasuring() {
    const seconds = (performance.now() - this.start) / 1000;
    this.measuring = false;
    this.stopped = true;
    const sorted = Float64Array.from(this.samples).sort();
    const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN);
    return { messages: this.messages, seconds, p50: at(0.5), p99: at(0.99) };
  }

  drained(timeoutMs) {
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.onIdle = () => (clearTimeout(timer), resolve());
    });
  }
}

async function openRaw(p, payload) {
  const { socket, head } = await connectRaw(p.port, p.proto);
  const frame = encodeMessage(p.proto, payload);
  const c = {
    onMessage: undefined,
    send: () => socket.write(frame),
    // writes made while parsing one chunk leave in one writev
    batch: (fn) => {
      socket.cork();
      fn();
      socket.uncork();
    },
    close: () => socket.destroy(),
  };
  const counter = new MessageCounter(p.proto, () => c.onMessage());
  socket.on("data", (chunk) => c.batch(() => counter.push(chunk)));
  socket.on("error", () => {});
  if (head.length > 0) counter.push(head);
  return c;
}

async function openWsconn(p, payload, messages) {
  const { dial, MessageType } = await import(distUrl("index.js"));
  const conn = await dial(`ws://127.0.0.1:${p.port}/`, { readLimit: Infinity, ...p.dialOptions });
  if (p.dialOptions?.compression && !conn.extensions.includes("permessage-deflate")) throw new Error(`compression not agreed: ${JSON.stringify(conn.extensions)}`);
  const c = {
    onMessage: undefined,
    extensions: conn.extensions,
    bad: 0,
    send: () => {
      const m = messages.next();
      void conn.write(typeof m === "string" ? MessageType.Text : MessageType.Binary, m).catch(() => {});
    },
    batch: (fn) => fn(),
    close: () => Promise.race([conn.close().catch(() => {}), sleep(2000)]),
  };
  (async () => {
    for (;;) {
      const msg = await conn.read();
      if (msg.data.length !== p.size) c.bad++;
      c.onMessage();
    }
  })().catch(() => {});
  return c;
}

async function openWs(p, payload, messages) {
  const { WebSocket } = require("ws");
  const ws = new WebSocket(`ws://127.0.0.1:${p.port}/`, { perMessageDeflate: p.deflate ?? false, maxPayload: 0 });
  // ws.extensions names the extensions only: the parameters agreed are in the response
  let extensions = "";
  ws.once("upgrade", (res) => (extensions = res.headers["sec-websocket-extensions"] ?? ""));
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  ws.on("error", () => {});
  if (p.deflate && !ws.extensions.includes("permessage-deflate")) throw new Error(`compression not agreed: ${JSON.stringify(extensions)}`);
  const c = {
    onMessage: undefined,
    extensions,
    bad: 0,
    send: () => {
      const m = messages.next();
      ws.send(m, { binary: typeof m !== "string" });
    },
    batch: (fn) => fn(),
    close: () => ws.terminate(),
    // ws keeps its socket private; only to count bytes on the wire
    bytesRead: () => ws._socket?.bytesRead ?? NaN,
  };
  ws.on("message", (data) => {
    if (data.length !== p.size) c.bad++;
    c.onMessage();
  });
  return c;
}

/** openIdle opens `count` WebSocket connections that then send nothing, 256 handshakes at a time. */
async function openIdle(p) {
  const started = performance.now();
  for (let done = 0; done < p.count; ) {
    const n = Math.min(256, p.count - done);
    const batch = await Promise.all(Array.from({ length: n }, () => connectRaw(p.port, p.proto ?? "ws")));
    for (const { socket } of batch) {
      socket.on("error", () => {});
      idle.push(socket);
    }
    done += n;
  }
  return { opened: idle.length, seconds: (performance.now() - started) / 1000 };
}

async function releaseIdle() {
  const sockets = idle.splice(0);
  await Promise.all(
    sockets.map((s) => {
      s.destroy();
      return new Promise((resolve) => (s.closed ? resolve() : s.once("close", resolve)));
    }),
  );
  return { closed: sockets.length };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
