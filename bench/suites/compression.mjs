/**
 * The compression suite: echo of permessage-deflate messages, wsconn against
 * ws with its native helpers (bufferutil), in both modes (context takeover,
 * no context takeover), every message compressed by both servers (wsconn
 * compressionThreshold 0, ws threshold 0). One load generator drives all four
 * servers, ws's client with perMessageDeflate (BENCH_COMPRESSION_CLIENT=wsconn:
 * wsconn's dial instead), sending JSON-like text (64 variants in turn) and
 * inflating the echoes, so only the server differs. The figure that matters
 * is the server's CPU time per echoed message: on a small machine the
 * compressing client is the bottleneck, so messages/s says as much about it
 * as about the server.
 *
 * WSCONN_OPTIONS / WS_OPTIONS (JSON objects, bench/lib/options.mjs) are
 * merged into the servers' options, WSCONN_OPTIONS also into the wsconn
 * client's dial options, so that new compression options can be measured
 * without changing this file.
 */

import { startChild } from "../lib/ipc.mjs";
import { envOptions, mergeOptions } from "../lib/options.mjs";
import { describeHelpers, interleave, startServer, summarize, WS_NATIVE_ENV } from "./echo.mjs";

/** The modes; `deflate` is ws's perMessageDeflate option, the same for ws's server and the client. */
export const MODES = [
  { id: "ctx", label: "context takeover", wsconn: "context-takeover", deflate: { threshold: 0 }, serverNoContextTakeover: false },
  {
    id: "noctx",
    label: "no context takeover",
    wsconn: "no-context-takeover",
    deflate: { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 0 },
    serverNoContextTakeover: true,
  },
];

const CLIENT_KINDS = ["ws", "wsconn"];

/** compressionServers lists the four servers with their effective options. */
export function compressionServers(env = process.env) {
  const wsconnExtra = envOptions("WSCONN_OPTIONS", env);
  const wsExtra = envOptions("WS_OPTIONS", env);
  return MODES.flatMap((mode) => [
    {
      id: `wsconn-${mode.id}`,
      label: `wsconn, ${mode.label}`,
      kind: "wsconn",
      mode: mode.id,
      env: {},
      options: mergeOptions({ compression: mode.wsconn, compressionThreshold: 0 }, wsconnExtra),
    },
    {
      id: `ws-${mode.id}`,
      label: `ws + native, ${mode.label}`,
      kind: "ws",
      mode: mode.id,
      env: WS_NATIVE_ENV,
      expect: "native",
      options: mergeOptions({ perMessageDeflate: mode.deflate }, wsExtra),
    },
  ]);
}

export async function runCompression(plan) {
  const { warmupMs, durationMs, shapes } = plan.compression;
  const client = process.env.BENCH_COMPRESSION_CLIENT ?? "ws";
  if (!CLIENT_KINDS.includes(client)) throw new Error(`BENCH_COMPRESSION_CLIENT: unknown client ${client} (known: ${CLIENT_KINDS})`);
  const wsconnExtra = envOptions("WSCONN_OPTIONS");
  const defs = compressionServers();
  const servers = [];
  const loadgen = await startChild("loadgen.mjs", [], { env: WS_NATIVE_ENV });
  try {
    for (const s of defs) servers.push({ ...s, child: await startServer(s) });
    const helpers = describeHelpers(servers.find((s) => s.kind === "ws").child.info);
    const extensions = {};
    const samples = await interleave(plan.runs, shapes, servers, async (shape, s) => {
      const mode = MODES.find((m) => m.id === s.mode);
      const dialOptions = mergeOptions({ compression: mode.wsconn, compressionThreshold: 0 }, wsconnExtra);
      const cpuBefore = await s.child.call("cpu");
      const r = await loadgen.call(
        "echo",
        { client, port: s.child.info.port, proto: "ws", text: true, deflate: mode.deflate, dialOptions, ...shape, warmupMs, durationMs },
        warmupMs + durationMs + 30_000,
      );
      const cpuPerMsg = ((await s.child.call("cpu")) - cpuBefore) / r.total;
      checkAgreed(s, mode, r.extensions);
      if (r.badEchoes > 0) throw new Error(`${r.badEchoes} echoes of the wrong size`);
      extensions[s.id] = r.extensions.join(" | ");
      return { ...r, cpuPerMsg };
    });
    return {
      client: client === "ws" ? "ws + native (perMessageDeflate)" : "wsconn (dial with compression)",
      modes: MODES.map(({ id, label }) => ({ id, label })),
      servers: servers.map(({ id, label, kind, mode, child }) => ({ id, label, kind, mode, options: child.info.options })),
      helpers,
      extensions,
      rows: summarize(shapes, servers, samples, ["wireBytesPerMsg"]),
    };
  } finally {
    await Promise.all([loadgen.stop(), ...servers.map((s) => s.child.stop())]);
  }
}

/** checkAgreed fails a measurement whose handshake did not agree on the mode its row is labelled with. */
function checkAgreed(server, mode, extensions) {
  for (const e of extensions) {
    const tokens = e.split(";").map((t) => t.trim());
    if (tokens[0] !== "permessage-deflate") throw new Error(`${server.id}: compression was not agreed (extensions ${JSON.stringify(e)})`);
    if (tokens.includes("server_no_context_takeover") !== mode.serverNoContextTakeover) {
      throw new Error(`${server.id}: the server answered ${JSON.stringify(e)}, which is not ${mode.label}`);
    }
  }
}
