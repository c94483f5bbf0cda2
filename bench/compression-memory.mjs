#!/usr/bin/env node
/**
 * `npm run bench:compression-memory`: what a compressed connection keeps
 * between messages, per compression preset, wsconn against ws.
 *
 * Each server (bench/echo-server.mjs, run with --expose-gc) runs alone in its
 * own process. N connections (env MEMORY_CONNS, default 2000) from wsconn
 * clients in this process each send K = 12 messages of 4 KiB of JSON-like
 * text and read the echoes, one at a time: 48 KiB each way, more than the
 * largest window, so every context takeover window is full. The server is
 * measured after a full garbage collection before the connections open and
 * again while they are open and idle; the difference divided by N is the
 * cost of a connection that has carried traffic. RSS includes zlib's own
 * memory (malloc'd outside the JS heap); heap + external is what JavaScript
 * holds. Results: bench/results/compression-memory.json.
 */

import { mkdirSync, writeFileSync } from "node:fs";
import { startChild, distUrl } from "./lib/ipc.mjs";
import { jsonText } from "./lib/text.mjs";

const N = Number(process.env.MEMORY_CONNS ?? 2000);
const MESSAGES = 12;
const SIZE = 4096;
const guard = setTimeout(() => {
  console.error("compression-memory: stopped after 10 minutes");
  process.exit(2);
}, 600_000);
guard.unref();

/** The presets measured: a label, the server and the options of both ends. */
const PRESETS = [
  { label: "wsconn, disabled", kind: "wsconn", server: {}, client: {} },
  { label: "wsconn, no-context-takeover", kind: "wsconn", server: { compression: "no-context-takeover" }, client: { compression: "no-context-takeover" } },
  { label: "wsconn, context-takeover (15-bit windows)", kind: "wsconn", server: { compression: "context-takeover" }, client: { compression: "context-takeover" } },
  { label: "wsconn, low memory { maxWindowBits: 11 }", kind: "wsconn", server: { compression: { maxWindowBits: 11 } }, client: { compression: "context-takeover" } },
  { label: "wsconn, minimal { maxWindowBits: 9, memLevel: 1 }", kind: "wsconn", server: { compression: { maxWindowBits: 9, memLevel: 1 } }, client: { compression: "context-takeover" } },
  { label: "ws, no context takeover", kind: "ws", server: { perMessageDeflate: { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 0 } }, client: { compression: "no-context-takeover" } },
  { label: "ws, context takeover", kind: "ws", server: { perMessageDeflate: { threshold: 0 } }, client: { compression: "context-takeover" } },
  { label: "ws, { serverMaxWindowBits: 11, clientMaxWindowBits: 11, memLevel: 4 }", kind: "ws", server: { perMessageDeflate: { threshold: 0, serverMaxWindowBits: 11, clientMaxWindowBits: 11, memLevel: 4 } }, client: { compression: "context-takeover" } },
];

const { dial, MessageType } = await import(distUrl("index.js"));
const messages = Array.from({ length: MESSAGES }, (_, i) => jsonText(SIZE, i + 1));
const results = [];
for (const preset of PRESETS) {
  const serverOptions = preset.kind === "wsconn" ? { compressionThreshold: 0, ...preset.server } : preset.server;
  const child = await startChild("echo-server.mjs", [preset.kind, JSON.stringify(serverOptions)], { execArgv: ["--expose-gc"], fdLimit: N + 100 });
  try {
    const before = await child.call("memory", { expect: 0 });
    const url = `ws://127.0.0.1:${child.info.port}/`;
    const conns = [];
    for (let i = 0; i < N; i += 200) {
      const batch = Array.from({ length: Math.min(200, N - i) }, () => dial(url, { compressionThreshold: 0, readLimit: 1 << 20, ...preset.client }));
      conns.push(...(await Promise.all(batch)));
    }
    const extensions = conns[0].extensions;
    await Promise.all(
      conns.map(async (conn, c) => {
        for (let m = 0; m < MESSAGES; m++) {
          await conn.write(MessageType.Text, messages[(m + c) % MESSAGES]);
          await conn.read();
        }
      }),
    );
    const after = await child.call("memory", { expect: N }, 30_000);
    const perConn = (a, b) => (a - b) / N / 1024;
    const row = {
      label: preset.label,
      extensions,
      heapExternalKiB: perConn(after.heapUsed + after.external, before.heapUsed + before.external),
      rssKiB: perConn(after.rss, before.rss),
    };
    results.push(row);
    console.log(`${row.label.padEnd(72)} heap+external ${row.heapExternalKiB.toFixed(1).padStart(6)} KiB  RSS ${row.rssKiB.toFixed(1).padStart(6)} KiB  (${extensions || "no extension"})`);
    await Promise.all(conns.map((conn) => conn.close().catch(() => undefined)));
  } finally {
    await child.stop();
  }
}

mkdirSync(new URL("./results/", import.meta.url), { recursive: true });
writeFileSync(new URL("./results/compression-memory.json", import.meta.url), JSON.stringify({ connections: N, messages: MESSAGES, size: SIZE, results }, null, 2));
console.log(`compression-memory: ${N} connections, ${MESSAGES} × ${SIZE} B each way; results in bench/results/compression-memory.json`);
