/**
 * What the keepalive costs a server holding KA_CONNS idle connections
 * (default 10 000): the server runs in a child process, once without
 * keepalive and once with `keepalive: { interval: KA_INTERVAL }` (default
 * 1000 ms); the parent holds wsconn clients that answer pings by themselves.
 * Prints, for each run, the server's CPU over KA_ROUNDS intervals (default
 * 5) and its live memory (heap + external after GC) per connection; the
 * difference is the keepalive's cost.
 *
 *   npm run build && node bench/keepalive.mjs
 *
 * Traffic stays on 127.0.0.1. Needs a file descriptor limit above KA_CONNS.
 */

import { fork } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";

const CONNS = Number(process.env.KA_CONNS ?? 10_000);
const INTERVAL = Number(process.env.KA_INTERVAL ?? 1000);
const ROUNDS = Number(process.env.KA_ROUNDS ?? 5);

if (process.argv[2] === "server") {
  const { serve } = await import("../dist/index.js");
  const v8 = await import("node:v8");
  const vm = await import("node:vm");
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc");
  const keepalive = process.argv[3] === "on" ? { interval: INTERVAL } : undefined;
  let open = 0;
  const server = await serve({ port: 0, host: "127.0.0.1", keepalive }, (conn) => {
    open++;
    conn.closeRead();
    if (open === CONNS) process.send({ type: "all-open" });
  });
  const live = () => {
    gc();
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.external + m.arrayBuffers;
  };
  process.on("message", (msg) => {
    if (msg.type === "baseline") process.send({ type: "baseline", bytes: live() });
    if (msg.type === "measure") {
      const before = process.cpuUsage();
      const bytes = live();
      const start = performance.now();
      // Idle, apart from the keepalive: let ROUNDS intervals pass.
      setTimeout(() => {
        const cpu = process.cpuUsage(before);
        process.send({ type: "measured", bytes, cpuUs: cpu.user + cpu.system, wallMs: performance.now() - start });
      }, ROUNDS * INTERVAL);
    }
    if (msg.type === "exit") server.close(() => process.exit(0));
  });
  process.send({ type: "ready", port: server.address().port });
} else {
  const { dial } = await import("../dist/index.js");

  async function run(mode) {
    const child = fork(fileURLToPath(import.meta.url), ["server", mode], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    const next = (type) => new Promise((resolve) => child.on("message", function on(m) { if (m.type === type) { child.off("message", on); resolve(m); } }));
    const { port } = await next("ready");
    child.send({ type: "baseline" });
    const { bytes: baseline } = await next("baseline");
    const allOpen = next("all-open");
    const clients = [];
    for (let i = 0; i < CONNS; i += 500) {
      const batch = await Promise.all(Array.from({ length: Math.min(500, CONNS - i) }, () => dial(`ws://127.0.0.1:${port}`)));
      for (const c of batch) c.closeRead();
      clients.push(...batch);
    }
    await allOpen;
    // One quiet interval first, so that every connection's timer has fired once.
    await new Promise((resolve) => setTimeout(resolve, INTERVAL * 1.5));
    child.send({ type: "measure" });
    const m = await next("measured");
    for (const c of clients) c.closeNow();
    child.send({ type: "exit" });
    await once(child, "exit");
    return { mode, perConn: (m.bytes - baseline) / CONNS, cpuPerIntervalMs: m.cpuUs / 1000 / ROUNDS, wallMs: m.wallMs };
  }

  const off = await run("off");
  const on = await run("on");
  console.log(`${CONNS} idle connections, keepalive interval ${INTERVAL} ms, ${ROUNDS} intervals measured`);
  for (const r of [off, on]) {
    console.log(
      `keepalive ${r.mode.padEnd(3)}  server CPU ${r.cpuPerIntervalMs.toFixed(1)} ms per interval  live memory ${r.perConn.toFixed(0)} B per connection`,
    );
  }
  const cpuDelta = on.cpuPerIntervalMs - off.cpuPerIntervalMs;
  console.log(
    `keepalive cost: ${cpuDelta.toFixed(1)} ms CPU per interval (${((cpuDelta * 1000) / CONNS).toFixed(2)} µs per connection per ping, ` +
      `${((cpuDelta / INTERVAL) * 100).toFixed(1)} % of one core at this interval), ${(on.perConn - off.perConn).toFixed(0)} B per connection`,
  );
}
