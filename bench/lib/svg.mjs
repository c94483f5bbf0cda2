/**
 * renderThroughputSvg draws echo throughput by message size as grouped bars
 * on a log scale, one bar per server: plain SVG text, no plotting dependency.
 * Each bar is the server's best MB/s over the load shapes of that size.
 */

import { fmtMB, fmtSize } from "./stats.mjs";

const COLORS = { wsconn: "#2b6cb0", ws: "#dd6b20", "ws-native": "#d69e2e", tcp: "#718096" };
const W = 760;
const H = 400;
const PAD = { left: 70, right: 20, top: 50, bottom: 80 };

export function renderThroughputSvg(echo, machine, runs = 3) {
  const sizes = [...new Set(echo.rows.map((r) => r.size))];
  const best = (size, id) => Math.max(0, ...echo.rows.filter((r) => r.size === size).map((r) => r.results[id].bytesPerSec / 1e6).filter(Number.isFinite));
  const values = sizes.flatMap((size) => echo.servers.map((s) => best(size, s.id))).filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.min(...values)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...values)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const y = (v) => PAD.top + plotH - (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) * plotH;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">Echo throughput by message size (MB/s, log scale, best load shape)</text>`,
  ];
  if (machine) {
    const note = `${machine.cpu}, ${machine.nproc} cores (shared), node ${machine.node}; median of ${runs} runs`;
    out.push(`<text x="${W / 2}" y="40" text-anchor="middle" font-size="11" fill="#4a5568">${escapeXml(note)}</text>`);
  }
  for (let v = lo; v <= hi; v *= 10) {
    out.push(`<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${y(v)}" y2="${y(v)}" stroke="#e2e8f0"/>`);
    out.push(`<text x="${PAD.left - 8}" y="${y(v) + 4}" text-anchor="end">${v >= 1 ? v : v.toFixed(2)}</text>`);
  }
  const groupW = plotW / sizes.length;
  const barW = (groupW * 0.8) / echo.servers.length;
  sizes.forEach((size, g) => {
    const x0 = PAD.left + g * groupW + groupW * 0.1;
    echo.servers.forEach((s, i) => {
      const v = best(size, s.id);
      const top = y(v);
      const x = x0 + i * barW;
      out.push(`<rect x="${x.toFixed(1)}" y="${top.toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(PAD.top + plotH - top).toFixed(1)}" fill="${COLORS[s.id] ?? "#999"}"><title>${escapeXml(s.label)}, ${fmtSize(size)}: ${fmtMB(v * 1e6)} MB/s</title></rect>`);
      out.push(`<text x="${(x + barW / 2 - 1).toFixed(1)}" y="${(top - 4).toFixed(1)}" text-anchor="middle" font-size="9">${fmtMB(v * 1e6)}</text>`);
    });
    out.push(`<text x="${(x0 + groupW * 0.4).toFixed(1)}" y="${PAD.top + plotH + 18}" text-anchor="middle">${fmtSize(size)}</text>`);
  });
  out.push(`<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${PAD.top + plotH}" y2="${PAD.top + plotH}" stroke="#4a5568"/>`);
  echo.servers.forEach((s, i) => {
    const x = PAD.left + i * 170;
    out.push(`<rect x="${x}" y="${H - 30}" width="12" height="12" fill="${COLORS[s.id] ?? "#999"}"/>`);
    out.push(`<text x="${x + 18}" y="${H - 20}">${escapeXml(s.label)}</text>`);
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

function escapeXml(text) {
  return text.replace(/[<>&"]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]);
}
