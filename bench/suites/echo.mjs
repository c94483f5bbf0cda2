/**
 * Echo suites. runEcho varies the server (one load generator for all, the
 * raw frame client, so only the server differs); runClients varies the client
 * against one server (ws with its native helpers).
 */

import { startChild } from "../lib/ipc.mjs";
import { median } from "../lib/stats.mjs";

const WS_JS_ENV = { WS_NO_BUFFER_UTIL: "1", WS_NO_UTF_8_VALIDATE: "1" };
export const WS_NATIVE_ENV = { WS_NO_BUFFER_UTIL: "", WS_NO_UTF_8_VALIDATE: "" };

/** The servers compared; `proto` is what the raw client speaks to them. */
export const SERVERS = [
  { id: "wsconn", label: "wsconn", kind: "wsconn", proto: "ws", env: {} },
  { id: "ws", label: "ws (JS)", kind: "ws", proto: "ws", env: WS_JS_ENV, expect: "not loaded" },
  { id: "ws-native", label: "ws + native", kind: "ws", proto: "ws", env: WS_NATIVE_ENV, expect: "native" },
  { id: "tcp", label: "raw TCP", kind: "tcp", proto: "len", env: {} },
];

/** The clients compared against the ws + native server. */
export const CLIENTS = [
  { id: "raw", label: "raw frames", client: "raw", loadgen: "native" },
  { id: "wsconn", label: "wsconn", client: "wsconn", loadgen: "native" },
  { id: "ws", label: "ws (JS)", client: "ws", loadgen: "js" },
  { id: "ws-native", label: "ws + native", client: "ws", loadgen: "native" },
];

/**
 * startServer forks one echo server (with `server.options`, if any, merged
 * into its serve or WebSocketServer options) and checks that ws loaded the
 * helpers it should.
 */
export async function startServer(server, options = {}) {
  const args = server.options ? [server.kind, JSON.stringify(server.options)] : [server.kind];
  const child = await startChild("echo-server.mjs", args, { env: server.env, ...options });
  if (server.expect && child.info.bufferutil !== server.expect) {
    await child.stop();
    throw new Error(`${server.label}: bufferutil is ${child.info.bufferutil}, expected ${server.expect}`);
  }
  return child;
}

export async function runEcho(plan) {
  const { warmupMs, durationMs, shapes } = plan.echo;
  const servers = [];
  const loadgen = await startChild("loadgen.mjs");
  try {
    for (const s of SERVERS) servers.push({ ...s, child: await startServer(s) });
    const helpers = Object.fromEntries(servers.filter((s) => s.kind === "ws").map((s) => [s.id, describeHelpers(s.child.info)]));
    const samples = await interleave(plan.runs, shapes, servers, async (shape, s) => {
      const cpuBefore = await s.child.call("cpu");
      const r = await loadgen.call("echo", { client: "raw", port: s.child.info.port, proto: s.proto, ...shape, warmupMs, durationMs }, warmupMs + durationMs + 30_000);
      // CPU time per message hardly depends on what else the machine runs, unlike throughput
      return { ...r, cpuPerMsg: ((await s.child.call("cpu")) - cpuBefore) / r.total };
    });
    return { servers: SERVERS.map(({ id, label }) => ({ id, label })), helpers, rows: summarize(shapes, servers, samples) };
  } finally {
    await Promise.all([loadgen.stop(), ...servers.map((s) => s.child.stop())]);
  }
}

export async function runClients(plan) {
  const { warmupMs, durationMs, shapes } = plan.clients;
  const loadgens = {};
  let server;
  try {
    server = await startServer(SERVERS.find((s) => s.id === "ws-native"));
    loadgens.native = await startChild("loadgen.mjs", [], { env: WS_NATIVE_ENV });
    loadgens.js = await startChild("loadgen.mjs", [], { env: WS_JS_ENV });
    const samples = await interleave(plan.runs, shapes, CLIENTS, (shape, c) =>
      loadgens[c.loadgen].call("echo", { client: c.client, port: server.info.port, proto: "ws", ...shape, warmupMs, durationMs }, warmupMs + durationMs + 30_000),
    );
    return { server: "ws + native", clients: CLIENTS.map(({ id, label }) => ({ id, label })), rows: summarize(shapes, CLIENTS, samples) };
  } finally {
    await Promise.all([server?.stop(), ...Object.values(loadgens).map((l) => l.stop())]);
  }
}

export function describeHelpers(info) {
  return `bufferutil ${info.bufferutil}; UTF-8 validation by ${info.utf8}; utf-8-validate ${info.utf8ValidateLoads ? "loads (native)" : "does not load"}`;
}

/**
 * interleave runs `measure(shape, contender)` for every run, shape and
 * contender, contenders innermost, and collects the results per pair.
 */
export async function interleave(runs, shapes, contenders, measure) {
  const samples = new Map();
  for (let run = 1; run <= runs; run++) {
    for (const shape of shapes) {
      const line = [];
      for (const c of contenders) {
        const key = `${c.id}|${shapeKey(shape)}`;
        if (!samples.has(key)) samples.set(key, []);
        try {
          const r = await measure(shape, c);
          samples.get(key).push(r);
          line.push(`${c.id} ${Math.round(r.messages / r.seconds)}/s`);
        } catch (err) {
          line.push(`${c.id} FAILED`);
          console.error(`bench: ${key} run ${run}: ${err.message}`);
        }
      }
      console.log(`   run ${run}/${runs} ${shapeKey(shape)}: ${line.join(", ")}`);
    }
  }
  return samples;
}

export function shapeKey({ size, conns, inflight }) {
  return `${size}B×${conns}c×${inflight}f`;
}

/** summarize turns the samples into one row per shape: medians per contender (also of the results' `extraKeys`). */
export function summarize(shapes, contenders, samples, extraKeys = []) {
  return shapes.map((shape) => {
    const row = { ...shape, results: {} };
    for (const c of contenders) {
      const list = samples.get(`${c.id}|${shapeKey(shape)}`) ?? [];
      row.results[c.id] = {
        runs: list.length,
        msgsPerSec: median(list.map((r) => r.messages / r.seconds)),
        bytesPerSec: median(list.map((r) => r.bytes / r.seconds)),
        p50: median(list.map((r) => r.p50)),
        p99: median(list.map((r) => r.p99)),
        cpuPerMsg: median(list.map((r) => r.cpuPerMsg ?? NaN)),
        clientCpuPerMsg: median(list.map((r) => r.clientCpuPerMsg)),
        ...Object.fromEntries(extraKeys.map((k) => [k, median(list.map((r) => r[k]))])),
      };
    }
    return row;
  });
}
