#!/usr/bin/env node
/**
 * Profiles wsconn under echo load with `node --cpu-prof` and prints the hot
 * spots (self time per function, and time per file).
 *
 *   node bench/profile.mjs [server|client] [size] [seconds] [conns] [inflight]
 *
 * "server" (default) profiles wsconn's echo server driven by the raw frame
 * client; "client" profiles wsconn's client against ws + native. Defaults:
 * 32-byte messages, 5 s, 64 connections × 16 in flight. Run `npm run build`
 * first. The .cpuprofile lands in bench/results/profile/ (open it in Chrome
 * DevTools for the flame chart).
 */

import { mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { startChild } from "./lib/ipc.mjs";
import { SERVERS, startServer } from "./suites/echo.mjs";

const [side = "server", size = "32", seconds = "5", conns = "64", inflight = "16"] = process.argv.slice(2);
const dir = new URL("./results/profile/", import.meta.url).pathname;
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
const profArgs = ["--cpu-prof", `--cpu-prof-dir=${dir}`, "--cpu-prof-interval=250"];
const guard = setTimeout(() => {
  console.error("profile: time limit reached");
  process.exit(2);
}, Number(seconds) * 1000 + 60_000);
guard.unref();

const serverDef = SERVERS.find((s) => s.id === (side === "server" ? "wsconn" : "ws-native"));
const server = await startServer(serverDef, side === "server" ? { execArgv: profArgs } : {});
const loadgen = await startChild("loadgen.mjs", [], side === "client" ? { execArgv: profArgs } : {});
const load = { client: side === "server" ? "raw" : "wsconn", port: server.info.port, proto: "ws" };
const shape = { size: Number(size), conns: Number(conns), inflight: Number(inflight) };
const r = await loadgen.call("echo", { ...load, ...shape, warmupMs: 300, durationMs: Number(seconds) * 1000 }, Number(seconds) * 1000 + 30_000);
console.log(`profile: ${side} under ${size} B × ${conns} conns × ${inflight} in flight: ${Math.round(r.messages / r.seconds)} msg/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`);
await Promise.all([loadgen.stop(), server.stop()]);

const file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile"));
if (!file) throw new Error(`no .cpuprofile written to ${dir}`);
report(JSON.parse(readFileSync(dir + file, "utf8")));
console.log(`\nprofile: ${dir}${file}`);

/** report prints self time per function and per file, from the profile's samples. */
function report(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  for (const id of profile.samples) self.set(id, (self.get(id) ?? 0) + 1);
  const total = profile.samples.length;
  const perFunction = new Map();
  const perFile = new Map();
  for (const [id, count] of self) {
    const { functionName, url, lineNumber } = byId.get(id).callFrame;
    const file = shortUrl(url) || functionName;
    const fn = `${functionName || "(anonymous)"} ${file}${url ? `:${lineNumber + 1}` : ""}`;
    perFunction.set(fn, (perFunction.get(fn) ?? 0) + count);
    perFile.set(file, (perFile.get(file) ?? 0) + count);
  }
  const print = (title, map, n) => {
    console.log(`\n${title}`);
    for (const [name, count] of [...map].sort((a, b) => b[1] - a[1]).slice(0, n)) {
      console.log(`${((100 * count) / total).toFixed(1).padStart(6)}%  ${name}`);
    }
  };
  print(`self time by function (top 30 of ${total} samples)`, perFunction, 30);
  print("self time by file (top 15)", perFile, 15);
}

function shortUrl(url) {
  if (!url) return "";
  const i = url.indexOf("/dist/");
  if (i >= 0) return `wsconn${url.slice(i)}`;
  const nm = url.lastIndexOf("/node_modules/");
  if (nm >= 0) return url.slice(nm + 14);
  return url.replace(/^file:\/\/.*\/bench\//, "bench/");
}
