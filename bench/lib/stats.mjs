/** Small statistics and number formatting for the benchmark reports. */

/** median of a list of numbers (NaN for an empty list). */
export function median(values) {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** fmtCount prints 1234567 as "1.23M". */
export function fmtCount(n) {
  if (!Number.isFinite(n)) return "–";
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n.toFixed(0);
}

/** fmtMB prints bytes per second as MB/s (10^6). */
export function fmtMB(bytesPerSec) {
  if (!Number.isFinite(bytesPerSec)) return "–";
  const mb = bytesPerSec / 1e6;
  return mb >= 100 ? mb.toFixed(0) : mb >= 10 ? mb.toFixed(1) : mb.toFixed(2);
}

/** fmtMs prints milliseconds with sensible precision. */
export function fmtMs(ms) {
  if (!Number.isFinite(ms)) return "–";
  return ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2);
}

/** fmtRatio prints a / b as "1.23×". */
export function fmtRatio(a, b) {
  const r = a / b;
  if (!Number.isFinite(r)) return "–";
  return `${r >= 0.1 ? r.toFixed(2) : r.toPrecision(2)}×`;
}

/** fmtSize prints a byte count as "32 B", "1 KiB", "64 KiB", "1 MiB". */
export function fmtSize(n) {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}
