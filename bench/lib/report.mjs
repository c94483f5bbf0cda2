/**
 * Renders a benchmark run as Markdown tables, and splices them into
 * docs/performance.md between its bench markers.
 */

import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fmtCount, fmtMB, fmtMs, fmtRatio, fmtSize } from "./stats.mjs";

const START = "<!-- bench:results:start -->";
const END = "<!-- bench:results:end -->";

/** renderMarkdown returns every table of the run. */
export function renderMarkdown(results) {
  const m = results.machine;
  const parts = [
    `Run: ${results.plan} plan, ${results.date.slice(0, 16).replace("T", " ")} UTC, ${Math.round(results.seconds)} s. ` +
      `Machine: ${m.cpu}, ${m.nproc} cores (nproc), ${m.memoryGiB} GiB, ${m.os}, node ${m.node}; load average at start ${m.load}.`,
  ];
  if (results.echo) parts.push(summaryTable(results.echo), echoTable(results.echo), cpuTable(results.echo), latencyTable(results.echo));
  if (results.clients) parts.push(clientsTable(results.clients));
  if (results.compression) parts.push(compressionTable(results.compression));
  if (results.tunnel) parts.push(tunnelTable(results.tunnel));
  if (results.memory) parts.push(memoryTable(results.memory));
  if (results.micro) parts.push(microTables(results.micro));
  return `${parts.join("\n\n")}\n`;
}

function table(header, rows) {
  const line = (cells) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map((_, i) => (i === 0 ? "---" : "---:"))), ...rows.map(line)].join("\n");
}

function shapeLabel(r) {
  return `${r.conns} × ${r.inflight}`;
}

function geomean(values) {
  const ok = values.filter((v) => Number.isFinite(v) && v > 0);
  return ok.length ? Math.exp(ok.reduce((s, v) => s + Math.log(v), 0) / ok.length) : NaN;
}

/** summaryTable: per message size, wsconn's throughput ratios (geometric mean over the load shapes). */
function summaryTable(echo) {
  const sizes = [...new Set(echo.rows.map((r) => r.size))];
  const rows = sizes.map((size) => {
    const rs = echo.rows.filter((r) => r.size === size);
    const ratio = (other) => geomean(rs.map((r) => r.results.wsconn.msgsPerSec / r.results[other].msgsPerSec));
    const fmt = (v) => (Number.isFinite(v) ? `${v.toFixed(2)}×` : "–");
    return [fmtSize(size), String(rs.length), fmt(ratio("ws")), fmt(ratio("ws-native")), fmt(ratio("tcp"))];
  });
  return (
    "### Summary: wsconn's echo throughput as a ratio\n\n" +
    "Geometric mean over the load shapes measured for each size; > 1 means wsconn is faster.\n\n" +
    table(["message size", "shapes", "wsconn / ws (JS)", "wsconn / ws + native", "wsconn / raw TCP ceiling"], rows)
  );
}

function echoTable(echo) {
  const rows = echo.rows.map((r) => {
    const x = r.results;
    return [
      fmtSize(r.size),
      shapeLabel(r),
      ...echo.servers.map((s) => `${fmtCount(x[s.id].msgsPerSec)} (${fmtMB(x[s.id].bytesPerSec)})`),
      fmtRatio(x.wsconn.msgsPerSec, x.ws.msgsPerSec),
      fmtRatio(x.wsconn.msgsPerSec, x["ws-native"].msgsPerSec),
      fmtRatio(x.wsconn.msgsPerSec, x.tcp.msgsPerSec),
    ];
  });
  const helpers = Object.entries(echo.helpers ?? {}).map(([id, h]) => `- ${id}: ${h}`).join("\n");
  return (
    "### Echo throughput by server\n\n" +
    "Messages echoed per second (payload MB/s, one direction, in parentheses); conns × in flight per connection. " +
    "The same raw frame load generator drives every server, so only the server differs.\n\n" +
    table(["size", "conns × in flight", ...echo.servers.map((s) => s.label), "wsconn/ws", "wsconn/ws+native", "wsconn/ceiling"], rows) +
    (helpers ? `\n\nws helpers as loaded in the server processes:\n${helpers}` : "")
  );
}

function cpuTable(echo) {
  const us = (v) => (Number.isFinite(v) ? (v >= 10 ? v.toFixed(0) : v.toFixed(1)) : "–");
  const rows = echo.rows.map((r) => {
    const x = r.results;
    return [
      fmtSize(r.size),
      shapeLabel(r),
      ...echo.servers.map((s) => us(x[s.id].cpuPerMsg)),
      fmtRatio(x.ws.cpuPerMsg, x.wsconn.cpuPerMsg),
      fmtRatio(x["ws-native"].cpuPerMsg, x.wsconn.cpuPerMsg),
      fmtRatio(x.tcp.cpuPerMsg, x.wsconn.cpuPerMsg),
    ];
  });
  return (
    "### Server CPU time per echoed message (µs)\n\n" +
    "User + system CPU of the server process over a whole measurement, divided by the messages it echoed. " +
    "Unlike throughput this barely depends on what else the machine is running. Ratios are written so that > 1 means wsconn uses less CPU.\n\n" +
    table(["size", "conns × in flight", ...echo.servers.map((s) => s.label), "ws/wsconn", "ws+native/wsconn", "ceiling/wsconn"], rows)
  );
}

function latencyTable(echo) {
  const rows = echo.rows.map((r) => [
    fmtSize(r.size),
    shapeLabel(r),
    ...echo.servers.map((s) => `${fmtMs(r.results[s.id].p50)} / ${fmtMs(r.results[s.id].p99)}`),
  ]);
  return "### Echo round-trip latency, p50 / p99 (ms)\n\n" + table(["size", "conns × in flight", ...echo.servers.map((s) => s.label)], rows);
}

function clientsTable(clients) {
  const us = (v) => (Number.isFinite(v) ? (v >= 10 ? v.toFixed(0) : v.toFixed(1)) : "–");
  const rows = clients.rows.map((r) => {
    const x = r.results;
    return [
      fmtSize(r.size),
      shapeLabel(r),
      ...clients.clients.map((c) => `${fmtCount(x[c.id].msgsPerSec)} (${fmtMB(x[c.id].bytesPerSec)}) ${us(x[c.id].clientCpuPerMsg)} µs`),
      fmtRatio(x.wsconn.msgsPerSec, x.ws.msgsPerSec),
      fmtRatio(x.wsconn.msgsPerSec, x["ws-native"].msgsPerSec),
      fmtRatio(x["ws-native"].clientCpuPerMsg, x.wsconn.clientCpuPerMsg),
    ];
  });
  return (
    `### Echo throughput by client (server: ${clients.server})\n\n` +
    "Messages per second (payload MB/s) and the client process's CPU time per message. " +
    "\"raw frames\" is the benchmark's own minimal client, the client-side ceiling. The last column is a CPU ratio: > 1 means wsconn's client uses less CPU.\n\n" +
    table(["size", "conns × in flight", ...clients.clients.map((c) => c.label), "wsconn/ws", "wsconn/ws+native", "CPU ws+native/wsconn"], rows)
  );
}

/** compressionTable: per shape and mode, wsconn against ws + native, server CPU per message first. */
function compressionTable(c) {
  const us = (v) => (Number.isFinite(v) ? (v >= 10 ? v.toFixed(0) : v.toFixed(1)) : "–");
  const bytes = (v) => (Number.isFinite(v) ? v.toFixed(0) : "–");
  const rows = [];
  for (const r of c.rows) {
    for (const mode of c.modes) {
      const w = r.results[`wsconn-${mode.id}`];
      const x = r.results[`ws-${mode.id}`];
      rows.push([
        fmtSize(r.size),
        shapeLabel(r),
        mode.label,
        us(w.cpuPerMsg),
        us(x.cpuPerMsg),
        fmtRatio(w.cpuPerMsg, x.cpuPerMsg),
        fmtCount(w.msgsPerSec),
        fmtCount(x.msgsPerSec),
        fmtRatio(w.msgsPerSec, x.msgsPerSec),
        `${bytes(w.wireBytesPerMsg)} / ${bytes(x.wireBytesPerMsg)}`,
        `${fmtMs(w.p50)} / ${fmtMs(w.p99)}`,
        `${fmtMs(x.p50)} / ${fmtMs(x.p99)}`,
      ]);
    }
  }
  const options = c.servers.map((s) => `- ${s.label}: \`${JSON.stringify(s.options)}\`; agreed \`${c.extensions?.[s.id] ?? "?"}\``).join("\n");
  return (
    "### Compressed echo (permessage-deflate): server CPU per message\n\n" +
    `JSON-like text messages, every one compressed by both servers (threshold 0) and by the client: ${c.client}, the same for all servers. ` +
    "CPU is the server process's user + system time over a whole measurement divided by the messages it echoed; " +
    "**CPU wsconn/ws < 1 means wsconn uses less CPU**, msg/s wsconn/ws > 1 means wsconn echoed more. " +
    "The compressing client is the bottleneck on a small machine, so the CPU columns say more about the servers than msg/s does. " +
    "\"Echo bytes\" is what the client read per echo, frame headers included (a measure of each server's compression ratio).\n\n" +
    table(
      ["size", "conns × in flight", "mode", "wsconn CPU µs/msg", "ws CPU µs/msg", "CPU wsconn/ws", "wsconn msg/s", "ws msg/s", "msg/s wsconn/ws", "echo bytes wsconn / ws", "wsconn p50 / p99 ms", "ws p50 / p99 ms"],
      rows,
    ) +
    `\n\nServer options and the extensions agreed:\n${options}\n- ws helpers: ${c.helpers}`
  );
}

function tunnelTable(tunnel) {
  if (tunnel.unavailable) return `### netConn tunnel\n\nNot measured: ${tunnel.unavailable}.`;
  const ms = (v) => (Number.isFinite(v) ? v.toFixed(1) : "–");
  const rows = tunnel.rows.map((r) => [
    r.direction === "up" ? "client → server" : "server → client",
    String(r.streams),
    fmtMB(r.netConn),
    fmtMB(r.proxy2),
    fmtMB(r.proxy),
    fmtRatio(r.netConn, r.proxy2),
    fmtRatio(r.netConn, r.proxy),
    `${ms(r.netConnCpuPerMB)} / ${ms(r.proxy2CpuPerMB)} / ${ms(r.proxyCpuPerMB)}`,
  ]);
  return (
    "### netConn tunnel throughput (MB/s)\n\n" +
    "TCP → `dial` + `netConn` → WebSocket → `serve` + `netConn` → TCP (two processes), against two chained node:net proxies " +
    "(the same topology without WebSocket) and one proxy (the ceiling). The last column is the CPU time of the forwarding processes per MB moved, " +
    "which depends less on the machine's other load than MB/s does. \"client → server\" is the masked direction.\n\n" +
    table(["direction", "streams", "netConn tunnel", "2 TCP proxies", "1 TCP proxy (ceiling)", "tunnel / 2 proxies", "tunnel / ceiling", "CPU ms per MB: tunnel / 2 proxies / 1 proxy"], rows)
  );
}

function memoryTable(memory) {
  const kib = (b) => (Number.isFinite(b) ? (b / 1024).toFixed(1) : "–");
  const rows = memory.rows.map((r) => [r.label, String(r.open), kib(r.rssPerConn), kib(r.heapPerConn), kib(r.externalPerConn)]);
  const fd = memory.fd.raisedTo ? ` (fd limit raised to ${memory.fd.raisedTo} for the two processes; hard limit ${memory.fd.hard})` : "";
  return (
    `### Memory per idle connection (${memory.connections} connections)${fd}\n\n` +
    "Server process growth after GC, divided by the connection count (KiB).\n\n" +
    table(["server", "open", "RSS / conn", "JS heap / conn", "external / conn"], rows)
  );
}

function microTables(micro) {
  const groups = [
    ["mask", "Mask / unmask (MB/s)", "bufferutil.unmask (native)", "buf.copy (reference)"],
    ["utf8", "UTF-8 validation (MB/s)", "utf-8-validate (native)", "buffer.isUtf8 (reference)"],
    ["parse", "Frame parsing: frames/s (MB/s of frames); one pass = ~1 MiB fed in 64 KiB chunks", "ws Receiver (bufferutil)", "buf.copy (reference)"],
  ];
  return groups
    .map(([group, title, versus, reference]) => {
      const rows = micro.rows.filter((r) => r.group === group);
      if (rows.length === 0) return "";
      const variants = [...new Set(rows.map((r) => r.variant))];
      const inputs = [...new Set(rows.map((r) => `${r.input}|${r.size}`))];
      const body = inputs.map((key) => {
        const [input, size] = key.split("|");
        const of = (v) => rows.find((r) => r.input === input && String(r.size) === size && r.variant === v);
        const cell = (v) => (group === "parse" ? `${fmtCount(of(v).opsPerSec)} (${fmtMB(of(v).bytesPerSec)})` : fmtMB(of(v).bytesPerSec));
        const wsconn = of(variants[0]);
        return [
          `${input} ${fmtSize(Number(size))}`,
          ...variants.map(cell),
          fmtRatio(wsconn.opsPerSec, of(versus).opsPerSec),
          fmtRatio(wsconn.opsPerSec, of(reference).opsPerSec),
        ];
      });
      return `### Micro: ${title}\n\n` + table(["input", ...variants, `wsconn / ${versus.split(" ")[0]}`, "wsconn / reference"], body);
    })
    .filter(Boolean)
    .join("\n\n");
}

/** updatePerformanceDoc replaces the text between the bench markers of the doc (creating it if need be). */
export function updatePerformanceDoc(url, markdown) {
  const block = `${START}\n<!-- generated by bench/run.mjs; do not edit by hand -->\n\n${markdown}\n${END}`;
  const text = existsSync(url) ? readFileSync(url, "utf8") : `# Performance\n\n${START}\n${END}\n`;
  const start = text.indexOf(START);
  const end = text.indexOf(END);
  const next = start >= 0 && end > start ? text.slice(0, start) + block + text.slice(end + END.length) : `${text}\n${block}\n`;
  writeFileSync(url, next);
}
