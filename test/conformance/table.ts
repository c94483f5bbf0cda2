/**
 * Runs the whole case table for one role as tap subtests, one per case, and
 * prints the summary: case family -> passed / failed, with the ids of the
 * failed cases.
 */

import type { Test } from "tap";
import { allCases } from "./cases.js";
import type { Harness } from "./peer.js";
import { type Case, runCase } from "./runner.js";

/** FamilyResult counts the cases of one family. */
export interface FamilyResult {
  passed: number;
  failed: number;
  failedIds: string[];
}

/** formatTable renders the results as an aligned text table. */
export function formatTable(title: string, results: Map<string, FamilyResult>): string {
  const rows = [...results.entries()];
  const width = Math.max(6, ...rows.map(([family]) => family.length));
  const line = (a: string, b: string, c: string, d = ""): string => `${a.padEnd(width)}  ${b.padStart(6)}  ${c.padStart(6)}  ${d}`;
  const out = [title, line("family", "passed", "failed", "failed cases"), "-".repeat(width + 30)];
  let passed = 0;
  let failed = 0;
  for (const [family, r] of rows) {
    out.push(line(family, String(r.passed), String(r.failed), r.failedIds.slice(0, 12).join(" ") + (r.failedIds.length > 12 ? " …" : "")));
    passed += r.passed;
    failed += r.failed;
  }
  out.push("-".repeat(width + 30), line("total", String(passed), String(failed)));
  return out.join("\n");
}

/**
 * runTable runs every case of the table that applies to the harness's role,
 * then prints the summary with t.comment and asserts that no case failed.
 */
export async function runTable(t: Test, harness: Harness, filter: (c: Case) => boolean = () => true): Promise<Map<string, FamilyResult>> {
  const results = new Map<string, FamilyResult>();
  for (const c of allCases()) {
    if (c.roles && !c.roles.includes(harness.role)) continue;
    if (!filter(c)) continue;
    const r = results.get(c.family) ?? { passed: 0, failed: 0, failedIds: [] };
    results.set(c.family, r);
    const problems = await runCase(harness, c);
    if (problems.length === 0) {
      r.passed++;
      t.pass(`${c.id} ${c.title}`);
    } else {
      r.failed++;
      r.failedIds.push(c.id);
      t.fail(`${c.id} ${c.title}: ${problems.join("; ")}`);
    }
  }
  t.comment(formatTable(`conformance, wsconn as ${harness.role}`, results));
  return results;
}
