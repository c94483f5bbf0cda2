#!/usr/bin/env node
/**
 * Broadcast throughput of wsconn's Hub to many clients, against `ws`'s usual
 * broadcast loop (`for (const c of wss.clients) c.send(data)`), on 127.0.0.1.
 *
 * The server (this process) broadcasts N messages to C connected clients;
 * the clients live in a child process with a minimal raw WebSocket reader
 * (handshake by hand, frames counted, nothing else), so the figures are the
 * server's. A run ends when every client has every message. Broadcasts are
 * paced in bursts of at most 64 messages and 256 KiB per event-loop turn, as
 * a server fed by I/O would be (a synchronous burst larger than the hub's
 * maxQueuedBytes would overflow every client's queue by design).
 *
 * Reported per case (median of RUNS runs): deliveries per second (messages
 * times clients), MB/s of payload delivered, server CPU per delivery, the
 * server's peak RSS growth during the run (sampled every 10 ms) and its heap
 * growth once the run is over (after a GC: what stays).
 *
 *   npm run build && node --expose-gc bench/hub-broadcast.mjs
 *   HUB_CLIENTS=1000 HUB_RUNS=3 HUB_CASES=32B,1KiB,16KiB HUB_IMPLS=wsconn,ws node --expose-gc bench/hub-broadcast.mjs
 *
 * Uses ../dist (or BENCH_DIST). Exits by itself within its time limit.
 */

import { fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import * as http from "node:http";
import { connect } from "node:net";
import { pathToFileURL } from "node:url";

const CLIENTS = Number(process.env.HUB_CLIENTS ?? 1000);
const RUNS = Number(process.env.HUB_RUNS ?? 3);
const CASES = [
  { name: "32 B", size: 32, messages: 2000 },
  { name: "1 KiB", size: 1024, messages: 500 },
  { name: "16 KiB", size: 16 * 1024, messages: 60 },
].filter((c) => !process.env.HUB_CASES || process.env.HUB_CASES.split(",").includes(c.name.replace(" ", "")));
const IMPLS = ["wsconn Hub", "ws loop"].filter((i) => !process.env.HUB_IMPLS || process.env.HUB_IMPLS.split(",").includes(i.split(" ")[0]));
const BURST_BYTES = 256 * 1024;
const BURST_MESSAGES = 64;
const LIMIT_MS = 10 * 60_000;

if (process.argv[2] === "clients") runClients();
else await runServer();

// ---- server side ----

async function runServer() {
  const guard = setTimeout(() => {
    console.error("hub-broadcast: time limit reached");
    process.exit(2);
  }, LIMIT_MS);
  guard.unref();
  const distDir = process.env.BENCH_DIST ? pathToFileURL(`${process.env.BENCH_DIST.replace(/\/$/, "")}/`) : new URL("../dist/", import.meta.url);
  const wsconn = await import(new URL("index.js", distDir).href);
  const { WebSocketServer } = await import("ws");
  console.log(`hub-broadcast: ${CLIENTS} clients, node ${process.version}, ${RUNS} runs per case (median)`);
  const results = [];
  for (const c of CASES) {
    for (const impl of IMPLS) {
      const runs = [];
      for (let r = 0; r < RUNS; r++) runs.push(await oneRun(impl, c, wsconn, WebSocketServer));
      const med = (key) => runs.map((x) => x[key]).sort((a, b) => a - b)[Math.floor(runs.length / 2)];
      const row = { impl, case: c.name, deliveriesPerSec: med("deliveriesPerSec"), mbPerSec: med("mbPerSec"), cpuNsPerDelivery: med("cpuNsPerDelivery"), heapGrowthMiB: med("heapGrowthMiB"), peakRssMiB: med("peakRssMiB"), framings: runs[0].framings };
      results.push(row);
      console.log(
        `${row.case.padEnd(7)} ${impl.padEnd(11)} ${fmt(row.deliveriesPerSec)} deliveries/s  ${row.mbPerSec.toFixed(0).padStart(5)} MB/s  ` +
          `${row.cpuNsPerDelivery.toFixed(0).padStart(5)} ns CPU/delivery  peak RSS +${row.peakRssMiB.toFixed(0)} MiB  heap after +${global.gc ? row.heapGrowthMiB.toFixed(1) : "? (run with --expose-gc)"} MiB` +
          (row.framings === undefined ? "" : `  frames built per message: ${row.framings}`),
      );
    }
  }
  console.log(JSON.stringify(results));
}

async function oneRun(impl, c, wsconn, WebSocketServer) {
  const server = http.createServer();
  let broadcast;
  let closeAll;
  let framings;
  if (impl === "wsconn Hub") {
    const hub = new wsconn.Hub();
    server.on("upgrade", (req, socket, head) =>
      wsconn.accept(req, socket, head).then((conn) => {
        conn.closeRead();
        hub.add(conn);
      }, () => undefined),
    );
    broadcast = (data) => {
      const pm = new wsconn.PreparedMessage(wsconn.MessageType.Binary, data);
      hub.broadcast(pm);
      framings = pm;
    };
    closeAll = () => hub.close();
  } else {
    const wss = new WebSocketServer({ noServer: true });
    server.on("upgrade", (req, socket, head) => wss.handleUpgrade(req, socket, head, () => undefined));
    broadcast = (data) => {
      for (const client of wss.clients) client.send(data);
    };
    closeAll = async () => {
      for (const client of wss.clients) client.terminate();
      wss.close();
    };
  }
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const child = fork(new URL(import.meta.url).pathname, ["clients"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  child.send({ port: server.address().port, clients: CLIENTS, expect: c.messages });
  // The child reports once every handshake was answered: by then every
  // connection is in the hub (added right after accept) or in wss.clients.
  await nextMessage(child, "connected");

  const payloads = Array.from({ length: 16 }, () => randomBytes(c.size));
  global.gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const rss0 = process.memoryUsage().rss;
  let peakRss = rss0;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 10);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const done = nextMessage(child, "done");
  const perBurst = Math.max(1, Math.min(BURST_MESSAGES, Math.floor(BURST_BYTES / c.size)));
  for (let sent = 0; sent < c.messages; ) {
    for (let i = 0; i < perBurst && sent < c.messages; i++, sent++) broadcast(payloads[sent % payloads.length]);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await done;
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  clearInterval(sampler);
  global.gc?.();
  const heap = process.memoryUsage().heapUsed - heap0;
  const deliveries = c.messages * CLIENTS;
  child.kill();
  await closeAll();
  server.closeAllConnections?.();
  await new Promise((resolve) => server.close(resolve));
  return {
    deliveriesPerSec: deliveries / elapsed,
    mbPerSec: (deliveries * c.size) / elapsed / 1e6,
    cpuNsPerDelivery: ((cpu.user + cpu.system) * 1000) / deliveries,
    heapGrowthMiB: heap / 2 ** 20,
    peakRssMiB: (peakRss - rss0) / 2 ** 20,
    framings: framings?.framings,
  };
}

function nextMessage(child, type) {
  return new Promise((resolve, reject) => {
    const onMessage = (msg) => {
      if (msg.type !== type) return;
      child.off("message", onMessage);
      resolve(msg);
    };
    child.on("message", onMessage);
    child.once("exit", (code) => reject(new Error(`clients exited (${code}) before "${type}"`)));
  });
}

function fmt(n) {
  return (n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : `${(n / 1e3).toFixed(0)} k`).padStart(8);
}

// ---- client side: raw sockets that count frames ----

function runClients() {
  process.once("message", async ({ port, clients, expect }) => {
    let complete = 0;
    const sockets = [];
    for (let i = 0; i < clients; i += 100) {
      const batch = Array.from({ length: Math.min(100, clients - i) }, () => openClient(port, expect, () => {
        if (++complete === clients) process.send({ type: "done" });
      }));
      sockets.push(...(await Promise.all(batch)));
    }
    process.send({ type: "connected" });
  });
  process.on("disconnect", () => process.exit(0));
}

function openClient(port, expect, onComplete) {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: "127.0.0.1" });
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.write(
        `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    let head = Buffer.alloc(0);
    let counter;
    socket.on("data", (chunk) => {
      if (counter) return counter.push(chunk);
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      counter = new FrameCounter(expect, onComplete);
      resolve(socket);
      counter.push(head.subarray(end + 4));
    });
  });
}

/** FrameCounter counts unmasked data frames; it calls onComplete at `expect`. */
class FrameCounter {
  constructor(expect, onComplete) {
    this.expect = expect;
    this.onComplete = onComplete;
    this.count = 0;
    this.left = 0;
    this.carry = undefined;
  }

  push(chunk) {
    if (this.carry) {
      chunk = Buffer.concat([this.carry, chunk]);
      this.carry = undefined;
    }
    let pos = 0;
    while (pos < chunk.length) {
      if (this.left > 0) {
        const take = Math.min(this.left, chunk.length - pos);
        pos += take;
        this.left -= take;
        if (this.left === 0) this.frameDone();
        continue;
      }
      const avail = chunk.length - pos;
      if (avail < 2) break;
      const len7 = chunk[pos + 1] & 0x7f;
      const size = len7 < 126 ? 2 : len7 === 126 ? 4 : 10;
      if (avail < size) break;
      this.opcode = chunk[pos] & 0x0f;
      this.left = len7 < 126 ? len7 : len7 === 126 ? chunk.readUInt16BE(pos + 2) : Number(chunk.readBigUInt64BE(pos + 2));
      pos += size;
      if (this.left === 0) this.frameDone();
    }
    if (pos < chunk.length) this.carry = chunk.subarray(pos);
  }

  frameDone() {
    if (this.opcode !== 1 && this.opcode !== 2) return;
    if (++this.count === this.expect) this.onComplete();
  }
}
