#!/usr/bin/env node
/**
 * What BURST_CONNS compressed connections (default 10 000) cost a server when
 * every one of them sends one message at the same moment.
 *
 * One server process per contender, fresh for each (run with --expose-gc):
 *   wsconn  serve({ compression: "no-context-takeover" }), echoing with `for await … conn.write`
 *   ws      WebSocketServer({ perMessageDeflate: { serverNoContextTakeover, clientNoContextTakeover, threshold: 0 } })
 *           with its native helpers (bufferutil) if installed
 * BURST_CLIENTS client processes (default 2) share the connections: raw
 * net sockets from 127.0.0.1 that offer
 * `permessage-deflate; client_no_context_takeover; server_no_context_takeover`
 * and fail unless the server accepts exactly that. Each connection has one
 * ~1 KiB JSON-like text (its own ids and numbers), compressed once with
 * deflateRawSync (sync flush, trailing 00 00 ff ff removed), masked, RSV1 set.
 *
 * Steps: connect all (200 handshakes at a time per client); wave 1: every
 * connection writes its frame at one agreed moment, then every echo is
 * awaited (frames parsed, RSV1 checked, 1 in BURST_SAMPLE echoes inflated and
 * compared with what was sent); wave 2 the same; then every client sends a
 * close frame and awaits the server's close and the socket's end.
 * The server samples its RSS every 25 ms from a worker thread (the main
 * thread is busy during a wave) and keeps the peak per phase; "wave time" is
 * from the first client write to the last echo received, over all clients.
 *
 *   npm run bench:compression          (npm run build && node bench/compression-burst.mjs)
 *   BURST_CONNS=2000 node bench/compression-burst.mjs ws
 *   WSCONN_OPTIONS='{"compression":{"mode":"no-context-takeover","maxWindowBits":10}}' node bench/compression-burst.mjs wsconn
 *
 * Arguments / environment:
 *   [servers]        comma list of wsconn, ws (or BURST_SERVERS); default both, one after the other
 *   BURST_CONNS      connections (default 10000; 2000 with BENCH_QUICK=1)
 *   BURST_CLIENTS    client processes (default 2)
 *   BURST_SAMPLE     inflate and compare 1 echo in this many (default 100)
 *   WSCONN_OPTIONS   JSON merged into wsconn's serve options (bench/lib/options.mjs)
 *   WS_OPTIONS       JSON merged into ws's WebSocketServer options
 * Needs a file descriptor limit above BURST_CONNS + 256 (the server holds
 * every connection); it raises nothing itself. Prints a table and writes
 * bench/results/compression-burst.json. Every step has a time limit, the whole
 * run one more, and no child outlives it.
 */

import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { connect } from "node:net";
import { performance } from "node:perf_hooks";
import { Worker } from "node:worker_threads";
import { constants as Z, deflateRawSync, inflateRawSync } from "node:zlib";
import { distUrl, serveCommands, startChild } from "./lib/ipc.mjs";
import { machineInfo } from "./lib/machine.mjs";
import { envOptions, mergeOptions } from "./lib/options.mjs";
import { jsonText } from "./lib/text.mjs";

const CONNS = positive("BURST_CONNS", process.env.BENCH_QUICK === "1" ? 2000 : 10_000);
const CLIENTS = positive("BURST_CLIENTS", 2);
const SAMPLE = positive("BURST_SAMPLE", 100);
const KINDS = ["wsconn", "ws"];
const MESSAGE_SIZE = 1024;
const FD_MARGIN = 256;
const HANDSHAKE_BATCH = 200;
const RSS_INTERVAL_MS = 25;
const SETTLE_MS = 2000;
// Per step: generous for 2 cores, and far below what a stuck step would take.
const CONNECT_MS = 120_000;
const WAVE_MS = 60_000;
const CLOSE_MS = 60_000;
const LIMIT_MS = 10 * 60_000;
const MAX_MESSAGE = 1024 * 1024;
const OFFER = "permessage-deflate; client_no_context_takeover; server_no_context_takeover";
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// ---- the parent ----

async function main(which) {
  const kinds = (which ?? KINDS.join(",")).split(",").map((s) => s.trim()).filter(Boolean);
  for (const k of kinds) if (!KINDS.includes(k)) fail(`unknown server ${k} (known: ${KINDS})`);
  for (const name of ["WSCONN_OPTIONS", "WS_OPTIONS"]) {
    try {
      envOptions(name);
    } catch (err) {
      fail(err.message);
    }
  }
  checkLimits();
  const children = new Set();
  process.on("exit", () => {
    for (const c of children) c.child.kill("SIGKILL");
  });
  const guard = setTimeout(() => {
    console.error(`compression-burst: stopped after the ${LIMIT_MS / 1000} s time limit`);
    process.exit(2);
  }, LIMIT_MS);
  guard.unref();

  const machine = machineInfo();
  console.log(
    `compression-burst: ${CONNS} connections from ${CLIENTS} client processes, one ~${MESSAGE_SIZE} B text message each per wave, ` +
      `2 waves; ${machine.cpu} (${machine.nproc} cores), node ${machine.node}`,
  );
  const results = [];
  for (const kind of kinds) {
    console.log(`\n== ${kind} ==`);
    try {
      results.push(await runOne(kind, children));
    } catch (err) {
      console.error(`compression-burst: ${kind} failed: ${err.message}`);
      results.push({ kind, error: err.message });
    }
  }
  const report = { date: new Date().toISOString(), machine, conns: CONNS, clients: CLIENTS, sampleEvery: SAMPLE, messageSize: MESSAGE_SIZE, offer: OFFER, results };
  console.log(`\n${renderTable(report)}`);
  const outDir = new URL("./results/", import.meta.url);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(new URL("compression-burst.json", outDir), JSON.stringify(report, null, 2));
  console.log("\ncompression-burst: results in bench/results/compression-burst.json");
  process.exitCode = results.some((r) => r.error || !r.ok) ? 1 : 0;
}

async function runOne(kind, children) {
  const started = [];
  const track = (handle) => (children.add(handle), started.push(handle), handle);
  try {
    const server = track(await startChild("compression-burst.mjs", ["server", kind], { execArgv: ["--expose-gc"] }));
    console.log(`   server: ${kind} on port ${server.info.port}, options ${JSON.stringify(server.info.options)}${server.info.helpers ? `, ${server.info.helpers}` : ""}`);
    const clients = [];
    for (let i = 0; i < CLIENTS; i++) clients.push(track(await startChild("compression-burst.mjs", ["client"])));
    const shares = split(CONNS, CLIENTS);
    const step = (label, p) => p.then((v) => (console.log(`   ${label}`), v));

    const atStart = await server.call("memory", { gc: true });
    const t0 = performance.now();
    const connected = await Promise.all(
      clients.map((c, i) => c.call("connect", { port: server.info.port, count: shares[i].count, first: shares[i].first }, CONNECT_MS)),
    );
    const open = await server.call("waitOpen", { count: CONNS, timeoutMs: 30_000 }, 35_000);
    if (open.open !== CONNS) throw new Error(`the server sees ${open.open} of ${CONNS} connections`);
    const connectMs = performance.now() - t0;
    const extensions = [...new Set(connected.flatMap((c) => c.extensions))];
    console.log(`   connected ${CONNS} in ${(connectMs / 1000).toFixed(1)} s; server answered ${extensions.map((e) => JSON.stringify(e)).join(", ")}`);
    const idle = await server.call("memory", { gc: true });

    await server.call("phase");
    const wave1 = await step("wave 1 done", wave(clients, 1));
    const phase1 = await server.call("phase");
    const wave2 = await step("wave 2 done", wave(clients, 2));
    const phase2 = await server.call("phase");

    const t1 = performance.now();
    const closes = await Promise.all(clients.map((c) => c.call("close", { timeoutMs: CLOSE_MS - 5000 }, CLOSE_MS)));
    const closedOnServer = await server.call("waitOpen", { count: 0, timeoutMs: 10_000 }, 15_000);
    const closeMs = performance.now() - t1;
    const afterClose = await server.call("memory", { gc: false });
    const phase3 = await server.call("phase");
    await sleep(SETTLE_MS);
    const settled = await server.call("memory", { gc: true });
    const close = sum(closes, ["closed", "forced", "errors", "serverCloses"]);
    console.log(`   closed: ${close.closed} sockets in ${(closeMs / 1000).toFixed(1)} s (${close.serverCloses} close frames answered, ${close.forced} forced, ${closedOnServer.open} still open on the server)`);

    const result = {
      kind,
      options: server.info.options,
      helpers: server.info.helpers,
      extensions,
      connectMs,
      rss: {
        start: atStart.rss,
        idle: idle.rss,
        wave1Peak: phase1.peak,
        wave2Peak: phase2.peak,
        closePeak: phase3.peak,
        afterClose: afterClose.rss,
        settled: settled.rss,
      },
      heap: { start: atStart.heapUsed, idle: idle.heapUsed, end: settled.heapUsed },
      external: { start: atStart.external, idle: idle.external, end: settled.external },
      arrayBuffers: { start: atStart.arrayBuffers, idle: idle.arrayBuffers, end: settled.arrayBuffers },
      waves: [
        { ...wave1, serverCpuMs: phase1.cpuMs, serverSystemMs: phase1.systemMs, rssSamples: phase1.samples },
        { ...wave2, serverCpuMs: phase2.cpuMs, serverSystemMs: phase2.systemMs, rssSamples: phase2.samples },
      ],
      close: { ...close, ms: closeMs, serverOpenAfter: closedOnServer.open },
    };
    const problems = [];
    for (const w of result.waves) {
      if (w.echoes !== CONNS) problems.push(`wave ${w.wave}: ${w.echoes} of ${CONNS} echoes`);
      if (w.uncompressed > 0) problems.push(`wave ${w.wave}: ${w.uncompressed} echoes not compressed`);
      if (w.mismatches > 0) problems.push(`wave ${w.wave}: ${w.mismatches} sampled echoes differ from what was sent`);
      if (w.errors > 0) problems.push(`wave ${w.wave}: ${w.errors} socket errors`);
    }
    if (close.closed !== CONNS || close.forced > 0) problems.push(`close: ${close.closed} of ${CONNS} closed, ${close.forced} forced`);
    result.ok = problems.length === 0;
    result.problems = problems;
    for (const p of problems) console.error(`   PROBLEM: ${p}`);
    return result;
  } finally {
    await Promise.all(started.map((h) => h.stop()));
    for (const h of started) children.delete(h);
  }
}

/** wave makes every client write at one agreed moment and sums what they saw. */
async function wave(clients, n) {
  const startAt = Date.now() + 100;
  const parts = await Promise.all(clients.map((c) => c.call("wave", { wave: n, startAt, sampleEvery: SAMPLE, timeoutMs: WAVE_MS - 5000 }, WAVE_MS)));
  const total = sum(parts, ["sent", "echoes", "uncompressed", "verified", "mismatches", "errors", "sentBytes", "echoBytes"]);
  const firstWrite = Math.min(...parts.map((p) => p.firstWrite));
  const lastEcho = Math.max(...parts.map((p) => p.lastEcho));
  return { wave: n, ...total, ms: lastEcho - firstWrite, writeMs: Math.max(...parts.map((p) => p.writeMs)), complete: parts.every((p) => p.complete) };
}

function renderTable(report) {
  const rows = report.results;
  const mib = (b) => (Number.isFinite(b) ? (b / 2 ** 20).toFixed(1) : "–");
  const ms = (v) => (Number.isFinite(v) ? v.toFixed(0) : "–");
  const get = (r, f) => (r.error ? "failed" : f(r));
  const lines = [
    ["", ...rows.map((r) => r.kind)],
    ["RSS at start, listening (MiB, after gc)", ...rows.map((r) => get(r, (x) => mib(x.rss.start)))],
    [`RSS with ${report.conns} idle conns (MiB, after gc)`, ...rows.map((r) => get(r, (x) => mib(x.rss.idle)))],
    ["peak RSS in wave 1 (MiB)", ...rows.map((r) => get(r, (x) => mib(x.rss.wave1Peak)))],
    ["wave 1: first write to last echo (ms)", ...rows.map((r) => get(r, (x) => ms(x.waves[0].ms)))],
    ["wave 1: server CPU, of it system (ms)", ...rows.map((r) => get(r, (x) => `${ms(x.waves[0].serverCpuMs)}, ${ms(x.waves[0].serverSystemMs)}`))],
    ["peak RSS in wave 2 (MiB)", ...rows.map((r) => get(r, (x) => mib(x.rss.wave2Peak)))],
    ["wave 2: first write to last echo (ms)", ...rows.map((r) => get(r, (x) => ms(x.waves[1].ms)))],
    ["wave 2: server CPU, of it system (ms)", ...rows.map((r) => get(r, (x) => `${ms(x.waves[1].serverCpuMs)}, ${ms(x.waves[1].serverSystemMs)}`))],
    ["RSS right after all closed (MiB)", ...rows.map((r) => get(r, (x) => mib(x.rss.afterClose)))],
    [`RSS ${SETTLE_MS / 1000} s later, after gc (MiB)`, ...rows.map((r) => get(r, (x) => mib(x.rss.settled)))],
    ["heap used at end, after gc (MiB)", ...rows.map((r) => get(r, (x) => mib(x.heap.end)))],
    ["external at end, after gc (MiB)", ...rows.map((r) => get(r, (x) => mib(x.external.end)))],
    ["heap used / external, idle (MiB)", ...rows.map((r) => get(r, (x) => `${mib(x.heap.idle)} / ${mib(x.external.idle)}`))],
    ["message bytes sent / echoed (avg on the wire)", ...rows.map((r) => get(r, (x) => `${(x.waves[0].sentBytes / x.waves[0].sent).toFixed(0)} / ${(x.waves[0].echoBytes / x.waves[0].echoes).toFixed(0)}`))],
    ["echoes w1 / w2, sampled+verified", ...rows.map((r) => get(r, (x) => `${x.waves[0].echoes} / ${x.waves[1].echoes}, ${x.waves[0].verified + x.waves[1].verified} ok`))],
    ["connect all (s) / close all (s)", ...rows.map((r) => get(r, (x) => `${(x.connectMs / 1000).toFixed(1)} / ${(x.close.ms / 1000).toFixed(1)}`))],
    ["all checks passed", ...rows.map((r) => (r.error ? "no (failed, see above)" : r.ok ? "yes" : `no (${r.problems.join("; ")})`))],
  ];
  const widths = lines[0].map((_, i) => Math.max(...lines.map((l) => String(l[i]).length)));
  const fmt = (l) => l.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join("  ");
  return [fmt(lines[0]), ...lines.slice(1).map(fmt)].join("\n");
}

/**
 * checkLimits stops the run, before any child starts, if this process cannot
 * hold the connections (node raises its soft fd limit to the hard one by
 * itself; a shell started from here sees what the children will get) or the
 * ephemeral port range is too small for them.
 */
function checkLimits() {
  const fds = execFileSync("/bin/sh", ["-c", "ulimit -n"], { encoding: "utf8" }).trim();
  const limit = fds === "unlimited" ? Infinity : Number(fds);
  if (limit < CONNS + FD_MARGIN) {
    fail(
      `the file descriptor limit is ${limit}, but the server process holds ${CONNS} connections and needs about ${CONNS + FD_MARGIN}: ` +
        `raise it (e.g. \`ulimit -n ${Math.max(20_000, CONNS + FD_MARGIN)}\`, within the hard limit) or set BURST_CONNS lower`,
    );
  }
  try {
    const [lo, hi] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    if (hi - lo + 1 < CONNS + FD_MARGIN) fail(`the ephemeral port range ${lo}–${hi} has fewer than ${CONNS + FD_MARGIN} ports: set BURST_CONNS lower`);
  } catch (err) {
    if (err.code !== "ENOENT") throw err;
  }
}

// ---- the server ----

async function runServer(kind) {
  const sampler = new RssSampler(RSS_INTERVAL_MS);
  let open = 0;
  let started;
  if (kind === "wsconn") started = await startWsconn(() => open++, () => open--);
  else if (kind === "ws") started = await startWs(() => open++, () => open--);
  else throw new Error(`unknown server kind ${kind}`);
  let cpuMark = process.cpuUsage();
  serveCommands(
    {
      memory: async ({ gc }) => {
        if (gc) {
          for (let i = 0; i < 3; i++) {
            globalThis.gc?.();
            await new Promise((r) => setImmediate(r));
          }
        }
        const { rss, heapUsed, external, arrayBuffers } = process.memoryUsage();
        return { open, rss, heapUsed, external, arrayBuffers, gc: Boolean(gc && globalThis.gc) };
      },
      // ends the current phase: its peak RSS, CPU time and sample count; starts the next
      phase: () => {
        const cpu = process.cpuUsage(cpuMark);
        cpuMark = process.cpuUsage();
        return { ...sampler.next(), cpuMs: (cpu.user + cpu.system) / 1000, systemMs: cpu.system / 1000 };
      },
      waitOpen: async ({ count, timeoutMs }) => {
        const deadline = Date.now() + timeoutMs;
        while (open !== count && Date.now() < deadline) await sleep(10);
        return { open };
      },
      exit: () => started.close(),
    },
    { port: started.port, kind, options: started.options, helpers: started.helpers },
  );
}

async function startWsconn(opened, closed) {
  const { serve, MessageType } = await import(distUrl("index.js"));
  const options = mergeOptions({ host: "127.0.0.1", port: 0, readLimit: MAX_MESSAGE, compression: "no-context-takeover" }, envOptions("WSCONN_OPTIONS"));
  const server = await serve(options, async (conn) => {
    opened();
    try {
      for await (const msg of conn) await conn.write(msg.type === MessageType.Text ? MessageType.Text : MessageType.Binary, msg.data);
    } catch {
      // a client that hangs up without a close frame: counted by the client
    } finally {
      closed();
    }
  });
  return { port: server.address().port, options, close: () => server.close() };
}

async function startWs(opened, closed) {
  const require = createRequire(import.meta.url);
  const { WebSocketServer } = require("ws");
  const options = mergeOptions(
    {
      host: "127.0.0.1",
      port: 0,
      maxPayload: MAX_MESSAGE,
      perMessageDeflate: { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 0 },
    },
    envOptions("WS_OPTIONS"),
  );
  const wss = new WebSocketServer(options);
  wss.on("connection", (ws) => {
    opened();
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on("error", () => {});
    ws.on("close", closed);
  });
  await new Promise((resolve, reject) => {
    wss.once("listening", resolve);
    wss.once("error", reject);
  });
  const loaded = (name) => Object.keys(require.cache).some((k) => k.includes(`/node_modules/${name}/`));
  return { port: wss.address().port, options, helpers: `bufferutil ${loaded("bufferutil") ? "loaded" : "not loaded"}`, close: () => wss.close() };
}

/**
 * RssSampler reads the process's RSS every `intervalMs` in a worker thread,
 * which keeps its pace while the main thread works through a wave, and keeps
 * the peak of the current phase in shared memory.
 */
class RssSampler {
  constructor(intervalMs) {
    this.control = new Int32Array(new SharedArrayBuffer(8)); // [phase, samples in it]
    this.peaks = new Float64Array(new SharedArrayBuffer(8 * 1024));
    const source = `
      const { workerData: { control, peaks, intervalMs } } = require("node:worker_threads");
      setInterval(() => {
        const rss = process.memoryUsage.rss();
        const phase = Atomics.load(control, 0) % peaks.length;
        if (rss > peaks[phase]) peaks[phase] = rss;
        Atomics.add(control, 1, 1);
      }, intervalMs);`;
    this.worker = new Worker(source, { eval: true, workerData: { control: this.control, peaks: this.peaks, intervalMs } });
    this.worker.unref();
  }

  /** next closes the current phase and returns its peak (at least the RSS now) and how many samples it had. */
  next() {
    const phase = Atomics.load(this.control, 0) % this.peaks.length;
    const rss = process.memoryUsage.rss();
    this.peaks[(phase + 1) % this.peaks.length] = 0;
    Atomics.store(this.control, 0, phase + 1);
    const samples = Atomics.exchange(this.control, 1, 0);
    return { peak: Math.max(this.peaks[phase], rss), rss, samples };
  }
}

// ---- a client process ----

function runClient() {
  const conns = [];
  serveCommands({
    connect: async ({ port, count, first }) => {
      const started = performance.now();
      for (let done = 0; done < count; ) {
        const n = Math.min(HANDSHAKE_BATCH, count - done);
        const batch = await Promise.allSettled(Array.from({ length: n }, (_, i) => openConn(port, first + done + i)));
        const failed = batch.filter((b) => b.status === "rejected");
        for (const b of batch) if (b.status === "fulfilled") conns.push(b.value);
        if (failed.length > 0) throw new Error(`${failed.length} of ${n} handshakes failed, e.g. ${failed[0].reason?.message}`);
        done += n;
      }
      return { opened: conns.length, seconds: (performance.now() - started) / 1000, extensions: [...new Set(conns.map((c) => c.extensions))] };
    },
    wave: (p) => runWave(conns, p),
    close: (p) => closeAll(conns, p),
    exit: () => conns.forEach((c) => c.socket.destroy()),
  });
}

/** openConn connects, does the handshake with the deflate offer and prepares the connection's one frame. */
function openConn(port, index) {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: "127.0.0.1" });
    socket.setNoDelay(true);
    const key = randomBytes(16).toString("base64");
    const timer = setTimeout(() => (socket.destroy(), reject(new Error("handshake timed out after 30 s"))), 30_000);
    const done = (err, value) => {
      clearTimeout(timer);
      socket.off("data", onData);
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve(value);
    };
    let received = Buffer.alloc(0);
    const onData = (chunk) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf("\r\n\r\n");
      if (end < 0) return;
      const [status, ...lines] = received.subarray(0, end).toString("latin1").split("\r\n");
      const headers = new Map(lines.map((l) => [l.slice(0, l.indexOf(":")).trim().toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
      if (!/^HTTP\/1\.1 101 /.test(status)) return done(new Error(`handshake refused: ${status}`));
      const accept = createHash("sha1").update(key + GUID).digest("base64");
      if (headers.get("sec-websocket-accept") !== accept) return done(new Error("wrong Sec-WebSocket-Accept"));
      const extensions = headers.get("sec-websocket-extensions") ?? "";
      const tokens = extensions.split(";").map((t) => t.trim());
      if (tokens[0] !== "permessage-deflate" || !tokens.includes("server_no_context_takeover") || !tokens.includes("client_no_context_takeover")) {
        return done(new Error(`the server did not accept ${JSON.stringify(OFFER)}: it answered ${JSON.stringify(extensions)}`));
      }
      const conn = new ClientConn(socket, index, extensions);
      done(undefined, conn);
      if (received.length > end + 4) conn.push(received.subarray(end + 4));
    };
    socket.on("data", onData);
    socket.once("error", (err) => done(err));
    socket.once("connect", () =>
      socket.write(
        `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: ${OFFER}\r\n\r\n`,
      ),
    );
  });
}

/**
 * ClientConn is one connection's state: its text and compressed frame, and a
 * parser for the server's frames that counts complete messages, keeps the
 * payload of the ones to verify, answers pings and ends the socket after the
 * server's close frame.
 */
class ClientConn {
  constructor(socket, index, extensions) {
    this.socket = socket;
    this.index = index;
    this.extensions = extensions;
    this.text = jsonText(MESSAGE_SIZE, index);
    const compressed = deflateRawSync(Buffer.from(this.text), { finishFlush: Z.Z_SYNC_FLUSH });
    if (!compressed.subarray(-4).equals(TAIL)) throw new Error("deflateRawSync did not end with a sync flush");
    this.payloadLength = compressed.length - 4;
    this.frame = encodeFrame(0x1, compressed.subarray(0, -4), true);
    this.onMessage = undefined; // (rsv1, payloadParts | undefined, bytes)
    this.collect = false;
    this.closeCode = undefined;
    this.closed = false;
    this.errors = 0;
    this.carry = undefined;
    this.left = -1; // payload bytes left in the current frame; -1 between frames
    this.op = 0; // the current frame's opcode (0 for a continuation)
    this.fin = false;
    this.rsv1 = false;
    this.parts = [];
    this.bytes = 0;
    this.control = [];
    socket.on("data", (chunk) => this.push(chunk));
    socket.on("error", () => this.errors++);
    socket.on("close", () => (this.closed = true));
  }

  push(chunk) {
    if (this.carry) {
      chunk = Buffer.concat([this.carry, chunk]);
      this.carry = undefined;
    }
    let pos = 0;
    while (pos < chunk.length) {
      if (this.left < 0) {
        const used = this.header(chunk, pos);
        if (used === 0) {
          this.carry = chunk.subarray(pos);
          return;
        }
        pos += used;
        if (this.left === 0) this.endFrame();
        continue;
      }
      const take = Math.min(this.left, chunk.length - pos);
      const piece = chunk.subarray(pos, pos + take);
      if (this.op >= 0x8) this.control.push(piece);
      else {
        this.bytes += take;
        if (this.collect) this.parts.push(piece);
      }
      pos += take;
      this.left -= take;
      if (this.left === 0) this.endFrame();
    }
  }

  /** header decodes a frame header at `pos`: its length, or 0 when it is not all there yet. */
  header(buf, pos) {
    const avail = buf.length - pos;
    if (avail < 2) return 0;
    const b0 = buf[pos];
    const b1 = buf[pos + 1];
    if (b1 & 0x80) throw new Error("the server sent a masked frame");
    const len7 = b1 & 0x7f;
    const size = len7 < 126 ? 2 : len7 === 126 ? 4 : 10;
    if (avail < size) return 0;
    const op = b0 & 0x0f;
    this.fin = (b0 & 0x80) !== 0;
    if (op === 0x1 || op === 0x2) {
      this.rsv1 = (b0 & 0x40) !== 0;
      this.parts = [];
      this.bytes = 0;
    } else if (op !== 0x0) {
      this.control = [];
    }
    this.op = op;
    this.left = len7 < 126 ? len7 : len7 === 126 ? buf.readUInt16BE(pos + 2) : Number(buf.readBigUInt64BE(pos + 2));
    return size;
  }

  endFrame() {
    this.left = -1;
    if (this.op === 0x8) {
      const body = Buffer.concat(this.control);
      this.closeCode = body.length >= 2 ? body.readUInt16BE(0) : 1005;
      this.socket.end();
    } else if (this.op === 0x9) {
      this.socket.write(encodeFrame(0xa, Buffer.concat(this.control), false));
    } else if (this.op < 0x8 && this.fin) {
      const parts = this.parts;
      this.parts = [];
      this.onMessage?.(this.rsv1, this.collect ? parts : undefined, this.bytes);
    }
  }
}

/** runWave writes every connection's frame at `startAt` (epoch ms) and resolves when every echo came back, or at the timeout. */
function runWave(conns, { wave, startAt, sampleEvery, timeoutMs }) {
  const now = () => performance.timeOrigin + performance.now();
  const r = { wave, sent: 0, echoes: 0, uncompressed: 0, verified: 0, mismatches: 0, errors: 0, sentBytes: 0, echoBytes: 0, firstWrite: NaN, lastEcho: NaN, writeMs: NaN, complete: false };
  const errorsBefore = conns.reduce((n, c) => n + c.errors, 0);
  return new Promise((resolve) => {
    const finish = (complete) => {
      clearTimeout(timer);
      r.complete = complete;
      r.errors = conns.reduce((n, c) => n + c.errors, 0) - errorsBefore;
      for (const c of conns) c.onMessage = undefined;
      resolve(r);
    };
    const timer = setTimeout(() => finish(false), timeoutMs + Math.max(0, startAt - Date.now()));
    for (const c of conns) {
      // a different 1 in sampleEvery connections each wave
      c.collect = (c.index + wave) % sampleEvery === 0;
      c.onMessage = (rsv1, parts, bytes) => {
        c.onMessage = undefined;
        r.echoes++;
        r.echoBytes += bytes;
        if (!rsv1) r.uncompressed++;
        if (parts) {
          const payload = Buffer.concat(parts);
          let text;
          try {
            text = (rsv1 ? inflateRawSync(Buffer.concat([payload, TAIL]), { finishFlush: Z.Z_SYNC_FLUSH }) : payload).toString();
          } catch {
            text = undefined;
          }
          if (text === c.text) r.verified++;
          else r.mismatches++;
        }
        r.lastEcho = now();
        if (r.echoes === conns.length) finish(true);
      };
    }
    setTimeout(() => {
      r.firstWrite = now();
      for (const c of conns) {
        c.socket.write(c.frame);
        r.sent++;
        r.sentBytes += c.payloadLength; // payload only, like echoBytes
      }
      r.writeMs = now() - r.firstWrite;
      if (conns.length === 0) finish(true);
    }, Math.max(0, startAt - Date.now()));
  });
}

/** closeAll sends a close frame on every connection and waits until every socket closed (destroying the rest at the timeout). */
async function closeAll(conns, { timeoutMs }) {
  const started = performance.now();
  const frame = encodeFrame(0x8, Buffer.from([0x03, 0xe8]), false); // 1000
  const closed = conns.map((c) => (c.closed ? Promise.resolve() : new Promise((resolve) => c.socket.once("close", resolve))));
  for (const c of conns) if (!c.closed) c.socket.write(frame);
  let timer;
  const timedOut = await Promise.race([Promise.all(closed).then(() => false), new Promise((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs)))]);
  clearTimeout(timer);
  let forced = 0;
  if (timedOut) {
    for (const c of conns) if (!c.closed) (forced++, c.socket.destroy());
  }
  const result = {
    closed: conns.filter((c) => c.closed).length - forced,
    forced,
    serverCloses: conns.filter((c) => c.closeCode === 1000).length,
    errors: conns.reduce((n, c) => n + c.errors, 0),
    ms: performance.now() - started,
  };
  conns.length = 0;
  return result;
}

/** encodeFrame builds one masked client frame (FIN set; RSV1 when compressed). */
function encodeFrame(opcode, payload, rsv1) {
  const n = payload.length;
  const extra = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const frame = Buffer.allocUnsafe(2 + extra + 4 + n);
  frame[0] = 0x80 | (rsv1 ? 0x40 : 0) | opcode;
  frame[1] = 0x80 | (n < 126 ? n : n < 65536 ? 126 : 127);
  if (extra === 2) frame.writeUInt16BE(n, 2);
  if (extra === 8) frame.writeBigUInt64BE(BigInt(n), 2);
  const key = randomBytes(4);
  key.copy(frame, 2 + extra);
  const body = 2 + extra + 4;
  for (let i = 0; i < n; i++) frame[body + i] = payload[i] ^ key[i & 3];
  return frame;
}

// ---- small helpers ----

function split(total, parts) {
  const out = [];
  let first = 0;
  for (let i = 0; i < parts; i++) {
    const count = Math.floor(total / parts) + (i < total % parts ? 1 : 0);
    out.push({ first, count });
    first += count;
  }
  return out;
}

function sum(list, keys) {
  return Object.fromEntries(keys.map((k) => [k, list.reduce((s, x) => s + (x[k] ?? 0), 0)]));
}

function positive(name, fallback) {
  const v = process.env[name] === undefined ? fallback : Number(process.env[name]);
  if (!Number.isInteger(v) || v < 1) fail(`${name} must be a positive integer, not ${process.env[name]}`);
  return v;
}

function fail(message) {
  console.error(`compression-burst: ${message}`);
  process.exit(1);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- which role this process plays (last: the classes above must be initialized) ----

const role = process.argv[2];
if (role === "server") await runServer(process.argv[3]);
else if (role === "client") runClient();
else await main(process.argv[2] ?? process.env.BURST_SERVERS);
