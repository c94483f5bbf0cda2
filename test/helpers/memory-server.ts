/**
 * A WebSocket echo server run in a child process (`fork`) so that a test can
 * measure the memory one server implementation needs per connection without
 * the test's own sockets and buffers in the figure. Argument: a JSON config
 * (MemoryServerConfig): the implementation, its compression mode, and for
 * wsconn an InboundBudget limit.
 *
 * IPC protocol (parent -> child):
 * - `{ type: "wait", connections: n }`: answers `{ type: "ready" }` once
 *   exactly n connections are open;
 * - `{ type: "measure" }`: answers `{ type: "sample", sample, connections,
 *   budget }` after a full garbage collection (`budget`: used, holders and
 *   shed of the server's InboundBudget);
 * - `{ type: "exit" }`: exits.
 * On start it sends `{ type: "listening", port }`.
 */

import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as v8 from "node:v8";
import * as vm from "node:vm";
import type { PerMessageDeflateOptions } from "ws";
import type { CompressionMode } from "../../src/protocol/handshake.js";

// Only the implementation measured is loaded (and compiled): the children start faster.

/** What the child serves. */
export interface MemoryServerConfig {
  impl: "wsconn" | "ws";
  compression: CompressionMode;
  /** wsconn: the limit of the server's own InboundBudget (default: the process-wide one). */
  budget?: number;
}

/** What the child answers. */
export interface MemoryReply {
  type: string;
  port?: number;
  sample?: NodeJS.MemoryUsage;
  connections?: number;
  budget?: { used: number; holders: number; shed: number };
}

const config = JSON.parse(process.argv[2] ?? "{}") as MemoryServerConfig;
let budget: { used: number; holders: number; shed: number } | undefined;
let open = 0;
let waitingFor: number | undefined;

function send(message: unknown): void {
  process.send?.(message);
}

function opened(): void {
  open++;
  answerWait();
}

function closed(): void {
  open--;
  answerWait();
}

function answerWait(): void {
  if (waitingFor === undefined || open !== waitingFor) return;
  waitingFor = undefined;
  send({ type: "ready" });
}

function wsOptions(mode: CompressionMode): PerMessageDeflateOptions | false {
  if (mode === "disabled") return false;
  if (mode === "context-takeover") return { threshold: 0 };
  return { threshold: 0, serverNoContextTakeover: true, clientNoContextTakeover: true };
}

async function start(): Promise<number> {
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  if (config.impl === "ws") {
    const { WebSocketServer } = await import("ws");
    const wss = new WebSocketServer({ server, perMessageDeflate: wsOptions(config.compression), maxPayload: 1 << 20 });
    wss.on("connection", (ws) => {
      opened();
      ws.on("message", (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
      ws.on("close", closed);
    });
  } else {
    const { accept } = await import("../../src/server/accept.js");
    const { InboundBudget } = await import("../../src/conn/options.js");
    const inboundBudget = config.budget === undefined ? InboundBudget.shared : new InboundBudget(config.budget);
    budget = inboundBudget;
    server.on("upgrade", (req, socket, head) => {
      accept(req, socket, head, { compression: config.compression, inboundBudget }).then((conn) => {
        opened();
        void (async () => {
          try {
            for await (const msg of conn) await conn.write(msg.type, msg.data);
          } catch {
            // the measurement only counts connections
          }
          await conn.closed;
          closed();
        })();
      }, () => undefined);
    });
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
}

process.on("message", (message: { type: string; connections?: number }) => {
  if (message.type === "wait") {
    waitingFor = message.connections!;
    answerWait();
  } else if (message.type === "measure") {
    const sample = memorySample();
    const b = budget && { used: budget.used, holders: budget.holders, shed: budget.shed };
    send({ type: "sample", sample, connections: open, budget: b });
  } else if (message.type === "exit") {
    process.exit(0);
  }
});

/** memorySample collects garbage twice, then reads process.memoryUsage(). */
function memorySample(): NodeJS.MemoryUsage {
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as () => void;
  gc();
  gc();
  return process.memoryUsage();
}

start().then((port) => send({ type: "listening", port }));
