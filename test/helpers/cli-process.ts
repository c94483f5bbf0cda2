/**
 * Test helper: the wsconn CLI as a child process, run from the package's
 * own build (dist/cli/main.js), as the `wsconn` bin runs it.
 */

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { ROOT } from "./root.js";

const root = ROOT;

/** A compiled CLI: the path of cli/main.js and a cleanup. */
export interface BuiltCli {
  cliPath: string;
  remove(): void;
}

/**
 * buildCli returns the package's own dist/cli/main.js, the file the `wsconn` bin
 * runs, building it first when it is missing or older than a source file
 * (npm test builds it before the tests). Running the real build output lets
 * c8 map the child processes' coverage back to src/ through the source maps.
 */
export async function buildCli(): Promise<BuiltCli> {
  const cliPath = join(root, "dist", "cli", "main.js");
  if (!existsSync(cliPath) || newestSource(join(root, "src")) > statSync(cliPath).mtimeMs) {
    const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
    await new Promise<void>((resolve) => execFile(process.execPath, [tsc, "-p", join(root, "tsconfig.json")], { cwd: root }, () => resolve()));
  }
  if (!existsSync(cliPath)) throw new Error(`the build did not produce ${cliPath}`);
  return { cliPath, remove: () => undefined };
}

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestSource(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/** What a finished CLI run printed, and its exit status. */
export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** CliProcess is a running CLI whose output the test can wait on. */
export interface CliProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first match of `pattern` in stderr, now or later. */
  waitStderr(pattern: RegExp): Promise<RegExpMatchArray>;
  /** Resolves with the first match of `pattern` in stdout, now or later. */
  waitStdout(pattern: RegExp): Promise<RegExpMatchArray>;
  /** Resolves when the process exits. */
  exited: Promise<CliResult>;
  /** Sends SIGINT and resolves when the process exits. */
  interrupt(): Promise<CliResult>;
}

/** Options of startCli. */
export interface StartOptions {
  /** Environment of the child; proxy variables are removed unless given here. */
  env?: NodeJS.ProcessEnv;
  /** Written to stdin, which is then closed. Leave undefined to keep stdin open. */
  input?: string;
}

/** How long waitStderr/waitStdout wait before failing the test. */
const WAIT_GUARD_MS = 15_000;

const PROXY_VARIABLES = ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"];

/** startCli runs `node cli/main.js ...args`. */
export function startCli(cli: BuiltCli, args: string[], options: StartOptions = {}): CliProcess {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of PROXY_VARIABLES) delete env[name];
  delete env["NODE_OPTIONS"]; // the test runner's loaders are not for the child
  const child = spawn(process.execPath, [cli.cliPath, ...args], { env: { ...env, ...options.env }, stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let err = "";
  const watchers: Array<() => void> = [];
  const notify = (): void => {
    for (const w of [...watchers]) w();
  };
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => ((out += chunk), notify()));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => ((err += chunk), notify()));
  child.stdin!.on("error", () => undefined);
  if (options.input !== undefined) child.stdin!.end(options.input);
  const exited = new Promise<CliResult>((resolve) => {
    child.on("close", (code, signal) => {
      notify();
      resolve({ code, signal, stdout: out, stderr: err });
    });
  });
  const wait = (read: () => string, pattern: RegExp): Promise<RegExpMatchArray> =>
    new Promise((resolve, reject) => {
      // A guard, not a wait: it turns a missing line into a failure that shows the output.
      const guard = setTimeout(() => settle(new Error(`no ${pattern} within ${WAIT_GUARD_MS} ms; stderr: ${err}`)), WAIT_GUARD_MS);
      const settle = (outcome: RegExpMatchArray | Error): void => {
        clearTimeout(guard);
        watchers.splice(watchers.indexOf(check), 1);
        if (outcome instanceof Error) reject(outcome);
        else resolve(outcome);
      };
      const check = (): void => {
        const match = read().match(pattern);
        if (match) settle(match);
        else if (child.exitCode !== null || child.signalCode !== null) settle(new Error(`process exited without printing ${pattern}; stderr: ${err}`));
      };
      watchers.push(check);
      check();
    });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    waitStderr: (pattern) => wait(() => err, pattern),
    waitStdout: (pattern) => wait(() => out, pattern),
    exited,
    interrupt: () => {
      child.kill("SIGINT");
      return exited;
    },
  };
}

/** runCli runs the CLI to completion. */
export function runCli(cli: BuiltCli, args: string[], options: StartOptions = {}): Promise<CliResult> {
  return startCli(cli, args, { input: "", ...options }).exited;
}
