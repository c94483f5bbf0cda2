/**
 * The benchmark plan: what runs, how long, how often. The full plan is sized
 * for < 10 minutes on 2 cores, the quick one for about 30 seconds.
 */

const KiB = 1024;
const MiB = 1024 * 1024;

/** No echo configuration keeps more than this many bytes in flight (1 MiB × 64 × 16 would be 1 GiB). */
export const MAX_INFLIGHT_BYTES = 128 * MiB;

const FULL = {
  name: "full",
  runs: 3,
  limitMs: 15 * 60_000,
  echo: {
    warmupMs: 200,
    durationMs: 600,
    shapes: cross([32, KiB, 64 * KiB, MiB], [1, 64], [1, 16]),
  },
  clients: { warmupMs: 200, durationMs: 600, shapes: cross([32, KiB, 64 * KiB, MiB], [1, 64], [16]) },
  compression: { warmupMs: 200, durationMs: 800, shapes: [shape(KiB, 16, 8), shape(64 * KiB, 4, 4)] },
  tunnel: { warmupMs: 300, durationMs: 1000, streams: [1, 8], directions: ["up", "down"] },
  memory: { connections: 10_000, servers: ["wsconn", "ws-native", "tcp"] },
  microQuick: false,
};

const QUICK = {
  name: "quick",
  runs: 3,
  limitMs: 2 * 60_000,
  echo: {
    warmupMs: 80,
    durationMs: 200,
    shapes: [shape(32, 64, 16), shape(KiB, 1, 16), shape(64 * KiB, 1, 16), shape(MiB, 1, 1)],
  },
  clients: { warmupMs: 80, durationMs: 200, shapes: [shape(32, 64, 16)] },
  compression: { warmupMs: 80, durationMs: 250, shapes: [shape(KiB, 16, 8), shape(64 * KiB, 4, 4)] },
  tunnel: { warmupMs: 150, durationMs: 400, streams: [1], directions: ["up"] },
  memory: { connections: 1000, servers: ["wsconn", "ws-native"] },
  microQuick: true,
};

const ALL_SUITES = ["micro", "echo", "clients", "compression", "tunnel", "memory"];

function shape(size, conns, inflight) {
  return { size, conns, inflight };
}

function cross(sizes, conns, inflights) {
  const shapes = [];
  for (const size of sizes) {
    for (const c of conns) {
      for (const f of inflights) if (size * c * f <= MAX_INFLIGHT_BYTES) shapes.push(shape(size, c, f));
    }
  }
  return shapes;
}

/** loadPlan picks the plan from the environment (BENCH_QUICK, BENCH_ONLY, BENCH_DOCS, BENCH_CONNS). */
export function loadPlan(env) {
  const base = env.BENCH_QUICK === "1" ? QUICK : FULL;
  const only = env.BENCH_ONLY ? env.BENCH_ONLY.split(",").map((s) => s.trim()) : ALL_SUITES;
  for (const s of only) if (!ALL_SUITES.includes(s)) throw new Error(`BENCH_ONLY: unknown suite ${s} (known: ${ALL_SUITES})`);
  const complete = only.length === ALL_SUITES.length && base === FULL;
  const connections = env.BENCH_CONNS ? Number(env.BENCH_CONNS) : base.memory.connections;
  return {
    ...base,
    suites: ALL_SUITES.filter((s) => only.includes(s)),
    memory: { ...base.memory, connections },
    writeDocs: env.BENCH_DOCS ? env.BENCH_DOCS === "1" : complete,
  };
}
