// A tap reporter for npm test that stays readable when piped: one line per
// test file as it finishes, then every failed assertion with its subtest path
// and diagnostics, then tap's own summary line (`# { total: N, pass: N, ... }`,
// which .ci/run reads). The whole TAP stream goes to .tap/last-run.tap, for
// when the summary is not enough.
//
// tap loads a reporter module whose default export is a stream class and
// pipes the run's TAP through it (see "reporter" in package.json).

import { createWriteStream, mkdirSync } from "node:fs";
import { Transform } from "node:stream";

const FULL_TAP = ".tap/last-run.tap";

const RESULT = /^( *)(not ok|ok) \d+(?: - (.*?))?(?: # (.*))?$/;
const SUBTEST = /^( *)# Subtest: (.*)$/;
const PLAN = /^( *)1\.\.\d+/;

export default class SummaryReporter extends Transform {
  constructor() {
    super();
    mkdirSync(".tap", { recursive: true });
    this.full = createWriteStream(FULL_TAP);
    this.rest = "";
    /** Subtest names, one per depth (indent / 4). */
    this.path = [];
    /** The indent of the plan line just before this one, or -1. */
    this.planIndent = -1;
    /** Assertions and failures of the file running now. */
    this.assertions = 0;
    this.fileFailures = 0;
    /** Every failure: { title, details } */
    this.failures = [];
    /** How many failures there were when the subtest at each depth began. */
    this.failuresAt = [];
    /** The failure whose YAML diagnostics are being collected, and their indent. */
    this.collecting = undefined;
  }

  _transform(chunk, _encoding, callback) {
    this.full.write(chunk);
    const lines = (this.rest + chunk.toString("utf8")).split("\n");
    this.rest = lines.pop();
    for (const line of lines) this.line(line);
    callback();
  }

  _flush(callback) {
    if (this.rest) this.line(this.rest);
    this.full.end(() => callback());
  }

  line(line) {
    if (this.collecting) {
      const { failure, indent } = this.collecting;
      if (line.startsWith(indent)) {
        failure.details.push(line.slice(indent.length));
        if (line.trim() === "...") this.collecting = undefined;
        return;
      }
      this.collecting = undefined;
    }
    const subtest = SUBTEST.exec(line);
    if (subtest) {
      const depth = subtest[1].length / 4;
      this.path.length = depth;
      this.path.push(subtest[2]);
      this.failuresAt[depth] = this.failures.length;
      this.planIndent = -1;
      return;
    }
    const plan = PLAN.exec(line);
    if (plan) {
      this.planIndent = plan[1].length;
      return;
    }
    const result = RESULT.exec(line);
    if (result) return this.result(result);
    if (line.startsWith("# {")) this.summary(line);
    else if (/^# time=/.test(line)) this.push(`${line}\n`);
    if (line.trim() !== "" && !line.trimStart().startsWith("#")) this.planIndent = -1;
  }

  result([, indent, status, name = "", directive = ""]) {
    const depth = indent.length / 4;
    // A subtest's own result follows its plan: its assertions are counted already.
    const isSubtest = this.planIndent === indent.length + 4;
    this.planIndent = -1;
    if (depth === 0) return this.fileDone(status === "ok", name, directive);
    const failed = status === "not ok" && !/^(TODO|SKIP)\b/i.test(directive);
    if (!isSubtest) {
      this.assertions++;
      if (failed) this.addFailure(`${this.where(depth)} > ${name}`, indent + "  ");
      return;
    }
    // A subtest that failed with nothing failing inside it (a timeout, a thrown error) is a failure of its own.
    if (failed && this.failures.length === this.failuresAt[depth]) this.addFailure(this.where(depth + 1), indent + "  ");
    this.path.length = depth;
  }

  /** where names the subtest path down to `depth`. */
  where(depth) {
    return this.path.slice(0, depth).join(" > ");
  }

  addFailure(title, indent) {
    const failure = { title, details: [] };
    this.failures.push(failure);
    this.fileFailures++;
    this.collecting = { failure, indent };
  }

  fileDone(ok, name, directive) {
    const time = /time=([\d.]+)ms/.exec(directive);
    const seconds = time ? `${(Number(time[1]) / 1000).toFixed(1).padStart(5)} s` : "       ";
    const skip = /^SKIP\b/i.exec(directive) ? `, skipped: ${directive.replace(/^SKIP\W*/i, "")}` : "";
    const failed = this.fileFailures > 0 ? `, ${this.fileFailures} failed` : "";
    this.push(`${ok ? "ok  " : "FAIL"} ${seconds}  ${name}  (${this.assertions} assertions${failed}${skip})\n`);
    if (!ok && this.fileFailures === 0) this.addFailure(`${name}: the file failed (crash, timeout or exit code)`, "  ");
    this.path.length = 0;
    this.assertions = 0;
    this.fileFailures = 0;
  }

  summary(line) {
    for (const { title, details } of this.failures) {
      this.push(`\nnot ok ${title}\n`);
      for (const detail of details) this.push(`    ${detail}\n`);
    }
    if (this.failures.length > 0) this.push(`\n${this.failures.length} failed; the whole TAP output is in ${FULL_TAP}\n`);
    this.push(`${line}\n`);
  }
}
