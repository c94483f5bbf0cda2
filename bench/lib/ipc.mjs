/**
 * Process plumbing for the benchmarks: the parent forks each server and load
 * generator as its own process and talks to it over the IPC channel with
 * request/response commands; a child exits by itself when its parent goes.
 */

import { fork, spawn } from "node:child_process";
import { once } from "node:events";
import { pathToFileURL } from "node:url";

const BENCH_DIR = new URL("../", import.meta.url);

/**
 * distUrl resolves a module of the wsconn build under test: ../dist by
 * default, or the directory in BENCH_DIST (to compare a change against a
 * build of another commit).
 */
export function distUrl(module) {
  const dir = process.env.BENCH_DIST ? pathToFileURL(`${process.env.BENCH_DIST.replace(/\/$/, "")}/`) : new URL("../dist/", BENCH_DIR);
  return new URL(module, dir).href;
}

/**
 * startChild forks `script` (relative to bench/) and resolves with a handle
 * once the child has sent its `ready` message. With `fdLimit`, the child is
 * started through `sh -c 'ulimit -n N; exec node …'` so it may hold that many
 * sockets (the IPC channel survives the exec).
 */
export async function startChild(script, args = [], { env = {}, execArgv = [], fdLimit, readyTimeoutMs = 20_000 } = {}) {
  const path = new URL(script, BENCH_DIR).pathname;
  const childEnv = { ...process.env, ...env };
  const stdio = ["ignore", "inherit", "inherit", "ipc"];
  const child = fdLimit
    ? spawn("/bin/sh", ["-c", `ulimit -n ${fdLimit} && exec "$0" "$@"`, process.execPath, ...execArgv, path, ...args], { env: childEnv, stdio })
    : fork(path, args, { env: childEnv, execArgv, stdio });
  const handle = new ChildHandle(child, script);
  const ready = await handle.nextReady(readyTimeoutMs);
  handle.info = ready;
  return handle;
}

class ChildHandle {
  constructor(child, name) {
    this.child = child;
    this.name = name;
    this.info = undefined;
    this.nextId = 1;
    this.pending = new Map();
    this.exited = once(child, "exit");
    child.on("message", (msg) => this.onMessage(msg));
    child.on("exit", (code, signal) => {
      for (const { reject } of this.pending.values()) reject(new Error(`${name} exited (${code ?? signal}) during a command`));
      this.pending.clear();
    });
  }

  nextReady(timeoutMs) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name} was not ready within ${timeoutMs} ms`)), timeoutMs);
      this.pending.set(0, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  }

  onMessage(msg) {
    const id = msg.ready ? 0 : msg.id;
    const waiter = this.pending.get(id);
    if (!waiter) return;
    this.pending.delete(id);
    if (msg.error) waiter.reject(new Error(`${this.name}: ${msg.error}`));
    else waiter.resolve(msg.ready ? msg : msg.result);
  }

  /** call sends a command and resolves with its result; rejects after `timeoutMs`. */
  call(cmd, params = {}, timeoutMs = 60_000) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.name}: ${cmd} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.child.send({ id, cmd, ...params });
    });
  }

  /** stop asks the child to exit, and kills it if it has not within 5 s. */
  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    if (this.child.connected) this.child.disconnect();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

/**
 * serveCommands is the child side: it answers the parent's commands with
 * `handlers[cmd](params)`, sends `ready` with `info`, and exits when the parent
 * disconnects (or dies), so no benchmark process outlives the run.
 */
export function serveCommands(handlers, info = {}) {
  process.on("message", async (msg) => {
    const handler = handlers[msg.cmd];
    try {
      if (!handler) throw new Error(`unknown command ${msg.cmd}`);
      const result = await handler(msg);
      process.send({ id: msg.id, result });
    } catch (err) {
      process.send({ id: msg.id, error: err?.stack ?? String(err) });
    }
  });
  process.on("disconnect", () => {
    if (handlers.exit) Promise.resolve(handlers.exit()).finally(() => process.exit(0));
    else process.exit(0);
  });
  process.send({ ready: true, ...info });
}
