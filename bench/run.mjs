#!/usr/bin/env node
/**
 * `npm run bench`: wsconn against ws (pure JS, and with bufferutil +
 * utf-8-validate) and the raw TCP ceiling, in one run, as ratios.
 *
 * Every server and load generator is its own process, all on 127.0.0.1.
 * Each figure is the median of several runs, interleaved so that drift in the
 * machine's load hits every contender alike. Every step is bounded in time and
 * the whole run stops by itself.
 *
 * Environment:
 *   BENCH_QUICK=1     a ~30 s subset
 *   BENCH_ONLY=a,b    only these suites: micro, echo, clients, compression, tunnel, memory
 *   BENCH_DOCS=0|1    write docs/performance.md and docs/performance-throughput.svg
 *                     (default: 1 for a full run, 0 for a quick or partial one)
 *   BENCH_CONNS=N     idle connections for the memory suite (default 10000)
 *   BENCH_COMPRESSION_CLIENT=ws|wsconn   the compression suite's client (default ws)
 *   WSCONN_OPTIONS, WS_OPTIONS           JSON merged into the compression suite's
 *                     wsconn (serve and dial) and ws server options
 * Results: bench/results/latest.json and latest.md (git-ignored).
 */

import { mkdirSync, writeFileSync } from "node:fs";
import { loadPlan } from "./lib/plan.mjs";
import { machineInfo } from "./lib/machine.mjs";
import { renderMarkdown, updatePerformanceDoc } from "./lib/report.mjs";
import { renderThroughputSvg } from "./lib/svg.mjs";
import { runCompression } from "./suites/compression.mjs";
import { runClients, runEcho } from "./suites/echo.mjs";
import { runMemory } from "./suites/memory.mjs";
import { runMicro } from "./suites/micro.mjs";
import { runTunnel } from "./suites/tunnel.mjs";

const plan = loadPlan(process.env);
const guard = setTimeout(() => {
  console.error(`bench: stopped after the ${plan.limitMs / 1000} s time limit`);
  process.exit(2);
}, plan.limitMs);
guard.unref();

const suites = { micro: runMicro, echo: runEcho, clients: runClients, compression: runCompression, tunnel: runTunnel, memory: runMemory };
const started = Date.now();
const results = { plan: plan.name, machine: machineInfo(), date: new Date().toISOString() };
console.log(`bench: ${plan.name} run on ${results.machine.cpu} (${results.machine.nproc} cores), node ${results.machine.node}`);
for (const name of plan.suites) {
  const t0 = Date.now();
  console.log(`\n== ${name} ==`);
  results[name] = await suites[name](plan);
  console.log(`   ${name} took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}
results.seconds = (Date.now() - started) / 1000;

const markdown = renderMarkdown(results);
const outDir = new URL("./results/", import.meta.url);
mkdirSync(outDir, { recursive: true });
writeFileSync(new URL("latest.json", outDir), JSON.stringify(results, null, 2));
writeFileSync(new URL("latest.md", outDir), markdown);
console.log(`\n${markdown}`);
if (plan.writeDocs) {
  const docs = new URL("../docs/", import.meta.url);
  if (results.echo) writeFileSync(new URL("performance-throughput.svg", docs), renderThroughputSvg(results.echo, results.machine, plan.runs));
  updatePerformanceDoc(new URL("performance.md", docs), markdown);
  console.log("bench: updated docs/performance.md and docs/performance-throughput.svg");
}
console.log(`bench: done in ${results.seconds.toFixed(0)} s; results in bench/results/latest.{md,json}`);
