/**
 * The netConn tunnel suite: bulk TCP bytes through TCP → WebSocket (wsconn
 * netConn on both ends) → TCP, against a plain node:net proxy as the ceiling,
 * both directions, with one and several parallel streams.
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
    const paths = [
      { id: "netConn", port: entry.info.port },
      { id: "tcp-proxy", port: proxy.info.port },
    ];
    const samples = new Map();
    for (let run = 1; run <= plan.runs; run++) {
      for (const direction of directions) {
        for (const conns of streams) {
          const line = [];
          for (const path of paths) {
            const key = `${path.id}|${direction}|${conns}`;
            const r = await load.call("blast", { port: path.port, direction, conns, warmupMs, durationMs }, warmupMs + durationMs + 30_000);
            if (!samples.has(key)) samples.set(key, []);
            samples.get(key).push(r.bytes / r.seconds);
            line.push(`${path.id} ${(r.bytes / r.seconds / 1e6).toFixed(0)} MB/s`);
          }
          console.log(`   run ${run}/${plan.runs} ${direction} ×${conns}: ${line.join(", ")}`);
        }
      }
    }
    const rows = [];
    for (const direction of directions) {
      for (const conns of streams) {
        const get = (id) => median(samples.get(`${id}|${direction}|${conns}`) ?? []);
        rows.push({ direction, streams: conns, netConn: get("netConn"), ceiling: get("tcp-proxy") });
      }
    }
    return { rows };
  } finally {
    await Promise.all(children.map((c) => c.stop()));
  }
}
