/**
 * The fragment flood at scale: a default `serve()` echo server (in a child
 * process, default heap) against FLOOD_CONNS peers (default 10 000) that each
 * start a 31 KiB binary message in FLOOD_FRAGMENT-byte fragments (default 2)
 * and never finish it; then an honest client asks for an echo. Prints the
 * server's live memory, its budget figures and whether it kept serving.
 *
 *   npm run build && node bench/flood.mjs
 *
 * Traffic stays on 127.0.0.1. Needs a file descriptor limit above FLOOD_CONNS.
 */

import { fork } from "node:child_process";
import { once } from "node:events";
import * as net from "node:net";
import { fileURLToPath } from "node:url";

const CONNS = Number(process.env.FLOOD_CONNS ?? 10_000);
const FRAGMENT = Number(process.env.FLOOD_FRAGMENT ?? 2);
const PAYLOAD = 31 * 1024;
const KEY = "dGhlIHNhbXBsZSBub25jZQ==";

if (process.argv[2] === "server") {
  const { serve, InboundBudget } = await import("../dist/index.js");
  const v8 = await import("node:v8");
  const vm = await import("node:vm");
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc");
  const server = await serve({ port: 0, host: "127.0.0.1" }, async (conn) => {
    try {
      for await (const m of conn) await conn.write(m.type, m.data);
    } catch {
      // shed or dropped: counted by the budget
    }
  });
  process.on("message", () => {
    gc();
    gc();
    const m = process.memoryUsage();
    const b = InboundBudget.shared;
    process.send({ heap: m.heapUsed, external: m.external, rss: m.rss, used: b.used, holders: b.holders, shed: b.shed });
  });
  process.send({ port: server.address().port });
} else {
  await main();
}

function frame(opcode, fin, payload) {
  const head = Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | payload.length, 0, 0, 0, 0]);
  return Buffer.concat([head, payload]);
}

function floodBytes() {
  const frames = [];
  for (let sent = 0; sent < PAYLOAD; sent += FRAGMENT) frames.push(frame(sent === 0 ? 2 : 0, false, Buffer.alloc(Math.min(FRAGMENT, PAYLOAD - sent), 0x61)));
  frames.push(frame(9, true, Buffer.from("sync")));
  return Buffer.concat(frames);
}

/** attack upgrades by hand, sends the flood, resolves when the pong (or a close, or the end) says the server parsed it. */
function attack(port, bytes) {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    let seen = Buffer.alloc(0);
    let upgraded = false;
    socket.on("error", () => resolve({ socket, outcome: "error" }));
    socket.on("close", () => resolve({ socket, outcome: "closed" }));
    socket.on("data", (chunk) => {
      seen = Buffer.concat([seen, chunk]);
      if (!upgraded) {
        const end = seen.indexOf("\r\n\r\n");
        if (end < 0) return;
        upgraded = true;
        seen = seen.subarray(end + 4);
        socket.write(bytes);
      }
      // Server frames are unmasked: opcode in the low bits of the first byte.
      if (seen.length >= 2 && (seen[0] & 0x0f) === 0xa) resolve({ socket, outcome: "held" });
      if (seen.length >= 4 && (seen[0] & 0x0f) === 0x8) resolve({ socket, outcome: `close ${seen.readUInt16BE(2)}` });
    });
    socket.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  });
}

async function main() {
  const child = fork(fileURLToPath(import.meta.url), ["server"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const [{ port }] = await once(child, "message");
  const sample = async () => {
    child.send("measure");
    const [m] = await once(child, "message");
    return m;
  };
  const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;
  const before = await sample();
  const bytes = floodBytes();
  const started = Date.now();
  const results = [];
  for (let i = 0; i < CONNS; i += 200) {
    results.push(...(await Promise.all(Array.from({ length: Math.min(200, CONNS - i) }, () => attack(port, bytes)))));
  }
  const elapsed = Date.now() - started;
  const after = await sample();
  const outcomes = {};
  for (const r of results) outcomes[r.outcome] = (outcomes[r.outcome] ?? 0) + 1;
  const { dial, MessageType } = await import("../dist/index.js");
  const honest = await dial(`ws://127.0.0.1:${port}/`);
  const t0 = performance.now();
  await honest.write(MessageType.Text, "still there?");
  const echo = (await honest.read()).text();
  const rtt = performance.now() - t0;
  await honest.close();
  console.log(`flood: ${CONNS} connections x ${PAYLOAD / 1024} KiB in ${FRAGMENT}-byte fragments (${(bytes.length / 1024).toFixed(0)} KiB on the wire each, ${mib(bytes.length * CONNS)} in all) in ${(elapsed / 1000).toFixed(1)} s`);
  console.log(`first answers: ${JSON.stringify(outcomes)}`);
  console.log(`server heap+external ${mib(before.heap + before.external)} -> ${mib(after.heap + after.external)}, rss ${mib(before.rss)} -> ${mib(after.rss)}`);
  console.log(`budget: ${after.shed} shed with 1013, ${after.holders} holding ${mib(after.used)}`);
  console.log(`honest client: ${echo === "still there?" ? "echo answered" : "WRONG ECHO"} in ${rtt.toFixed(1)} ms`);
  for (const r of results) r.socket.destroy();
  child.kill();
}
