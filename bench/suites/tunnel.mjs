/**
 * The netConn tunnel suite: bulk TCP bytes through TCP → WebSocket (wsconn
 * netConn on both ends, two processes) → TCP, against plain node:net proxies:
 * one proxy (the ceiling the issue asks for) and two chained proxies (the
 * tunnel's topology: two forwarding processes), both directions, with one and
 * several parallel streams. Besides MB/s it records the CPU time the
 * forwarding processes spend per MB, which a busy machine disturbs less.
 */

import { startChild } from "../lib/ipc.mjs";
import { median } from "../lib/stats.mjs";

export async function runTunnel(plan) {
  const { warmupMs, durationMs, streams, directions } = plan.tunnel;
  const children = [];
  const start = async (role, arg) => {
    const child = await startChild("tunnel.mjs", arg === undefined ? [role] : [role, String(arg)]);
    children.push(child);
    return child;
  };
  try {
    const load = await start("load");
    const exit = await start("exit", load.info.targetPort);
    if (exit.info.unavailable) return { unavailable: exit.info.unavailable, rows: [] };
    const entry = await start("entry", exit.info.port);
    const proxy = await start("proxy", load.info.targetPort);
    const second = await start("proxy", load.info.targetPort);
    const first = await start("proxy", second.info.port);
    const paths = [
      { id: "netConn", port: entry.info.port, procs: [entry, exit] },
      { id: "proxy2", port: first.info.port, procs: [first, second] },
      { id: "proxy", port: proxy.info.port, procs: [proxy] },
    ];
    const samples = new Map();
    for (let run = 1; run <= plan.runs; run++) {
      for (const direction of directions) {
        for (const conns of streams) {
          const line = [];
          for (const path of paths) {
            const r = await measurePath(load, path, { direction, conns, warmupMs, durationMs });
            const key = `${path.id}|${direction}|${conns}`;
            if (!samples.has(key)) samples.set(key, []);
            samples.get(key).push(r);
            line.push(`${path.id} ${(r.bytesPerSec / 1e6).toFixed(0)} MB/s`);
          }
          console.log(`   run ${run}/${plan.runs} ${direction} ×${conns}: ${line.join(", ")}`);
        }
      }
    }
    const rows = [];
    for (const direction of directions) {
      for (const conns of streams) {
        const row = { direction, streams: conns };
        for (const path of paths) {
          const list = samples.get(`${path.id}|${direction}|${conns}`) ?? [];
          row[path.id] = median(list.map((r) => r.bytesPerSec));
          row[`${path.id}CpuPerMB`] = median(list.map((r) => r.cpuMsPerMB));
        }
        rows.push(row);
      }
    }
    return { rows };
  } finally {
    await Promise.all(children.map((c) => c.stop()));
  }
}

/** measurePath blasts bytes through one path and adds up the CPU its forwarding processes used. */
async function measurePath(load, path, params) {
  const cpu = async () => (await Promise.all(path.procs.map((p) => p.call("cpu")))).reduce((a, b) => a + b, 0);
  const before = await cpu();
  const r = await load.call("blast", { port: path.port, ...params }, params.warmupMs + params.durationMs + 30_000);
  const used = (await cpu()) - before;
  // the blast moved bytes during warm-up too: scale by the measured rate over the whole call
  const seconds = (params.warmupMs + params.durationMs) / 1000;
  const bytesPerSec = r.bytes / r.seconds;
  return { bytesPerSec, cpuMsPerMB: used / 1000 / ((bytesPerSec * seconds) / 1e6) };
}
