/**
 * The memory suite: RSS and heap per idle WebSocket connection, measured in a
 * fresh server process (with --expose-gc) before and after the load generator
 * opens N connections that then stay silent.
 */

import { execFileSync } from "node:child_process";
import { startChild } from "../lib/ipc.mjs";
import { SERVERS, startServer } from "./echo.mjs";

export async function runMemory(plan) {
  const { soft, hard } = fdLimits();
  const wanted = plan.memory.connections;
  const connections = Math.min(wanted, hard - 200);
  const fdLimit = connections + 200 > soft ? connections + 200 : undefined;
  if (connections < wanted) console.log(`   hard fd limit ${hard}: measuring ${connections} connections instead of ${wanted}`);
  const rows = [];
  for (const id of plan.memory.servers) {
    const server = SERVERS.find((s) => s.id === id);
    rows.push(await measureServer(server, connections, fdLimit));
    const r = rows.at(-1);
    console.log(`   ${server.label}: ${r.open} open, ${(r.rssPerConn / 1024).toFixed(1)} KiB RSS and ${(r.heapPerConn / 1024).toFixed(1)} KiB heap per connection (${r.connectSeconds.toFixed(1)} s to connect)`);
  }
  return { connections, fd: { soft, hard, raisedTo: fdLimit }, rows };
}

async function measureServer(server, connections, fdLimit) {
  const child = await startServer(server, { execArgv: ["--expose-gc"], fdLimit });
  const loadgen = await startChild("loadgen.mjs", [], { fdLimit });
  try {
    const before = await child.call("memory", { expect: 0 });
    const opened = await loadgen.call("idle", { port: child.info.port, count: connections, proto: server.proto }, 120_000);
    const after = await child.call("memory", { expect: connections }, 30_000);
    await loadgen.call("release", {}, 60_000);
    return {
      id: server.id,
      label: server.label,
      open: after.open,
      connectSeconds: opened.seconds,
      rssPerConn: (after.rss - before.rss) / connections,
      heapPerConn: (after.heapUsed - before.heapUsed) / connections,
      externalPerConn: (after.external - before.external) / connections,
    };
  } finally {
    await Promise.all([loadgen.stop(), child.stop()]);
  }
}

/** fdLimits reads the shell's soft and hard open-file limits (ulimit -n / -Hn). */
function fdLimits() {
  const read = (flag) => {
    const out = execFileSync("/bin/sh", ["-c", `ulimit ${flag}`], { encoding: "utf8" }).trim();
    return out === "unlimited" ? Infinity : Number(out);
  };
  return { soft: read("-n"), hard: read("-Hn") };
}
