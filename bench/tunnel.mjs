/**
 * TCP tunnelling through wsconn's netConn, one role per process:
 *   load  <>                  target server (sink or source) + TCP load; command blast
 *   exit  <targetPort>        wsconn server: each connection becomes netConn ⇄ TCP to the target
 *   entry <exitPort>          TCP listener: each socket is dialed through as netConn ⇄ socket
 *   proxy <targetPort>        the ceiling: a plain node:net proxy (socket.pipe both ways)
 * So the tunnelled path is load → entry → WebSocket → exit → target, and the
 * ceiling is load → proxy → target. All on 127.0.0.1.
 */

import { connect, createServer } from "node:net";
import { performance } from "node:perf_hooks";
import { pipeline } from "node:stream";
import { distUrl, serveCommands } from "./lib/ipc.mjs";

/** Commands every role answers: cpu (µs of CPU used so far). */
const common = {
  cpu: () => {
    const { user, system } = process.cpuUsage();
    return user + system;
  },
};

const [role, arg] = process.argv.slice(2);
const roles = { load: startLoad, exit: startExit, entry: startEntry, proxy: startProxy };
if (!roles[role]) throw new Error(`unknown tunnel role ${role}`);
await roles[role](Number(arg));

async function listen(server) {
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server.address().port;
}

function ignore() {}


/** loadNetConn returns wsconn's exports, or reports to the parent that netConn is not there yet. */
async function loadNetConn() {
  const mod = await import(distUrl("index.js"));
  if (typeof mod.netConn === "function") return mod;
  serveCommands({}, { unavailable: "netConn is not exported by dist/index.js yet" });
  return undefined;
}

async function startExit(targetPort) {
  const mod = await loadNetConn();
  if (!mod) return;
  const { serve, netConn, MessageType } = mod;
  const server = await serve({ host: "127.0.0.1", port: 0 }, (conn) => {
    const stream = netConn(conn, MessageType.Binary);
    const target = connect({ port: targetPort, host: "127.0.0.1" });
    target.setNoDelay(true);
    pipeline(stream, target, stream, ignore);
  });
  serveCommands(common, { port: server.address().port });
}

async function startEntry(exitPort) {
  const mod = await loadNetConn();
  if (!mod) return;
  const { dial, netConn, MessageType } = mod;
  const server = createServer(async (socket) => {
    socket.setNoDelay(true);
    socket.on("error", ignore);
    try {
      const conn = await dial(`ws://127.0.0.1:${exitPort}/`);
      const stream = netConn(conn, MessageType.Binary);
      pipeline(socket, stream, socket, ignore);
    } catch {
      socket.destroy();
    }
  });
  serveCommands(common, { port: await listen(server) });
}

async function startProxy(targetPort) {
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    const target = connect({ port: targetPort, host: "127.0.0.1" });
    target.setNoDelay(true);
    pipeline(socket, target, socket, ignore);
  });
  serveCommands(common, { port: await listen(server) });
}

/**
 * The load role hosts the target. In "up" runs the target counts what
 * arrives; in "down" runs it sends as fast as it may and the client counts.
 */
async function startLoad() {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const meter = { bytes: 0, direction: "up" };
  const targets = new Set();
  const target = createServer((socket) => {
    targets.add(socket);
    socket.on("close", () => targets.delete(socket));
    socket.on("error", ignore);
    if (meter.direction === "up") socket.on("data", (d) => (meter.bytes += d.length));
    else pump(socket, chunk);
  });
  const targetPort = await listen(target);
  serveCommands({ ...common, blast: (p) => blast(p, meter, chunk, targets) }, { targetPort });
}

/** pump writes `chunk` to `socket` for as long as it stays open, honouring backpressure. */
function pump(socket, chunk) {
  const go = () => {
    while (!socket.destroyed && socket.write(chunk));
  };
  socket.on("drain", go);
  socket.on("data", ignore);
  go();
}

async function blast(p, meter, chunk, targets) {
  meter.direction = p.direction;
  const sockets = await Promise.all(Array.from({ length: p.conns }, () => openSource(p.port)));
  for (const s of sockets) {
    if (p.direction === "up") pump(s, chunk);
    else s.on("data", (d) => (meter.bytes += d.length));
  }
  await sleep(p.warmupMs);
  meter.bytes = 0;
  const start = performance.now();
  await sleep(p.durationMs);
  const bytes = meter.bytes;
  const seconds = (performance.now() - start) / 1000;
  for (const s of sockets) s.destroy();
  for (const s of targets) s.destroy();
  return { bytes, seconds };
}

function openSource(port) {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: "127.0.0.1" }, () => resolve(socket));
    socket.setNoDelay(true);
    socket.once("error", reject);
    socket.on("error", ignore);
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
