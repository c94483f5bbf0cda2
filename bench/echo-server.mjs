/**
 * An echo server in its own process, one kind per process:
 *   wsconn     wsconn's serve(), echoing with `for await … conn.write`
 *   ws         ws's WebSocketServer (run with WS_NO_BUFFER_UTIL / WS_NO_UTF_8_VALIDATE
 *              for its pure-JS paths, or without them for bufferutil + utf-8-validate)
 *   tcp        node:net, 4-byte length-prefixed messages, the echoes of one read
 *              corked into one write: the ceiling
 * Usage: node echo-server.mjs <kind> [options JSON]: the JSON object (e.g.
 * '{"compression":"no-context-takeover"}' for wsconn, '{"perMessageDeflate":{}}'
 * for ws) is merged into serve's or WebSocketServer's options and reported in
 * `ready`. Commands: memory { expect }; cpu (µs of CPU used so far).
 * Listens on 127.0.0.1 only, on a free port it reports in `ready`.
 */

import { createRequire } from "node:module";
import { createServer } from "node:net";
import { distUrl, serveCommands } from "./lib/ipc.mjs";
import { mergeOptions } from "./lib/options.mjs";

const require = createRequire(import.meta.url);
const MAX_MESSAGE = 2 * 1024 * 1024;
const kind = process.argv[2];
const extraOptions = process.argv[3] ? JSON.parse(process.argv[3]) : {};
let open = 0;

const servers = { wsconn: startWsconn, ws: startWs, tcp: startTcp };
if (!servers[kind]) throw new Error(`unknown server kind ${kind}`);
const { port, close, info = {} } = await servers[kind]();

serveCommands(
  {
    memory: (p) => memory(p.expect ?? 0),
    cpu: () => {
      const { user, system } = process.cpuUsage();
      return user + system;
    },
    exit: close,
  },
  { port, kind, ...info },
);

async function startWsconn() {
  const { serve, MessageType } = await import(distUrl("index.js"));
  const options = mergeOptions({ host: "127.0.0.1", port: 0, readLimit: MAX_MESSAGE }, extraOptions);
  const server = await serve(options, async (conn) => {
    open++;
    try {
      for await (const msg of conn) await conn.write(msg.type === MessageType.Text ? MessageType.Text : MessageType.Binary, msg.data);
    } catch {
      // the load generator hangs up without a close frame (1006): expected
    } finally {
      open--;
    }
  });
  return { port: server.address().port, close: () => server.close(), info: { options } };
}

async function startWs() {
  const { WebSocketServer } = require("ws");
  const options = mergeOptions({ host: "127.0.0.1", port: 0, maxPayload: MAX_MESSAGE, perMessageDeflate: false }, extraOptions);
  const wss = new WebSocketServer(options);
  wss.on("connection", (ws) => {
    open++;
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on("error", () => {});
    ws.on("close", () => open--);
  });
  await new Promise((resolve) => wss.on("listening", resolve));
  return { port: wss.address().port, close: () => wss.close(), info: { ...wsHelpers(), options } };
}

/**
 * wsHelpers tells which native helpers ws really loaded in this process, so a
 * run cannot silently compare the JS fallback with itself.
 */
function wsHelpers() {
  const loaded = (name) => Object.keys(require.cache).some((k) => k.includes(`/node_modules/${name}/`));
  const native = (name) => {
    try {
      return String(require(name).mask ?? require(name)).includes("[native code]");
    } catch {
      return false;
    }
  };
  const { isUtf8 } = require("node:buffer");
  return {
    bufferutil: loaded("bufferutil") ? (native("bufferutil") ? "native" : "js fallback") : "not loaded",
    // ws ≥ 8.16 prefers Node's buffer.isUtf8 when it exists, whatever the env says
    utf8: typeof isUtf8 === "function" ? "buffer.isUtf8 (node)" : loaded("utf-8-validate") ? "utf-8-validate" : "js",
    utf8ValidateLoads: native("utf-8-validate"),
  };
}

async function startTcp() {
  const server = createServer((socket) => {
    open++;
    socket.setNoDelay(true);
    const framer = new LengthFramer((message) => echoLength(socket, message));
    // the ceiling batches: every echo of one read leaves in one writev
    socket.on("data", (chunk) => {
      socket.cork();
      framer.push(chunk);
      socket.uncork();
    });
    socket.on("error", () => {});
    socket.on("close", () => open--);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: server.address().port, close: () => server.close() };
}

/** echoLength writes a message back the way wsconn writes a frame: small ones copied behind the header, big ones corked. */
function echoLength(socket, message) {
  if (message.length <= 16 * 1024) {
    const out = Buffer.allocUnsafe(4 + message.length);
    out.writeUInt32BE(message.length, 0);
    message.copy(out, 4);
    return socket.write(out);
  }
  const header = Buffer.allocUnsafe(4);
  header.writeUInt32BE(message.length, 0);
  socket.cork();
  socket.write(header);
  socket.write(message);
  socket.uncork();
}

/** LengthFramer assembles 4-byte length-prefixed messages, like a WebSocket server assembles frames. */
class LengthFramer {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.carry = Buffer.alloc(0);
    this.chunks = [];
    this.have = 0;
    this.need = -1;
  }

  push(chunk) {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.need < 0 && this.carry.length === 0 && chunk.length - pos >= 4) {
        this.need = chunk.readUInt32BE(pos);
        pos += 4;
      } else if (this.need < 0) {
        if (this.carry.length + chunk.length - pos < 4) {
          this.carry = Buffer.concat([this.carry, chunk.subarray(pos)]);
          return;
        }
        const head = Buffer.concat([this.carry, chunk.subarray(pos, pos + 4)]);
        pos += 4 - this.carry.length;
        this.carry = Buffer.alloc(0);
        this.need = head.readUInt32BE(0);
      }
      const take = Math.min(this.need - this.have, chunk.length - pos);
      this.chunks.push(chunk.subarray(pos, pos + take));
      this.have += take;
      pos += take;
      if (this.have === this.need) this.finish();
    }
  }

  finish() {
    const message = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.have);
    this.chunks = [];
    this.have = 0;
    this.need = -1;
    this.onMessage(message);
  }
}

async function memory(expect) {
  const deadline = Date.now() + 10_000;
  while (open < expect && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  for (let i = 0; i < 3; i++) {
    globalThis.gc?.();
    await new Promise((r) => setImmediate(r));
  }
  const { rss, heapUsed, external, arrayBuffers } = process.memoryUsage();
  return { open, rss, heapUsed, external, arrayBuffers };
}
