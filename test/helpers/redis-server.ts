/**
 * A redis-server of a test's own: started on 127.0.0.1 on a free port with
 * no persistence, killed (SIGKILL, as a crash) and started again on the same
 * port, and always stopped when the test ends. `redisMissing` says, loudly
 * and once, when the binary is absent, so the tests that need it skip.
 */

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import type { Test } from "tap";
import { freePort } from "./peers.js";

const probe = spawnSync("redis-server", ["--version"], { encoding: "utf8" });

/** redisMissing is a skip reason when the redis-server binary is absent, else false. */
export const redisMissing: string | false =
  probe.error !== undefined || probe.status !== 0 ? "redis-server is not installed (apt-get install -y redis-server)" : false;

if (redisMissing) {
  process.stderr.write(
    "\n*** redis-server not found: the Redis tests are SKIPPED (install it: apt-get install -y redis-server) ***\n\n",
  );
}

/** RedisServer is one redis-server process at a time, on one port. */
export interface RedisServer {
  url: string;
  port: number;
  /** kill sends SIGKILL and resolves once the process has exited. */
  kill(): Promise<void>;
  /** start starts redis-server again on the same port; it resolves once it accepts connections. */
  start(): Promise<void>;
}

/** startRedis runs redis-server on a free port; whatever process is running when `t` ends is stopped. */
export async function startRedis(t: Test): Promise<RedisServer> {
  const port = await freePort();
  let proc: ChildProcess | undefined;
  const kill = async (signal: NodeJS.Signals = "SIGKILL"): Promise<void> => {
    const running = proc;
    proc = undefined;
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return;
    const exited = once(running, "exit");
    running.kill(signal);
    await exited;
  };
  const server: RedisServer = {
    url: `redis://127.0.0.1:${port}`,
    port,
    kill: () => kill(),
    async start() {
      if (proc !== undefined) throw new Error("redis-server is running already");
      proc = await spawnRedis(port);
    },
  };
  t.teardown(() => kill("SIGTERM"));
  await server.start();
  return server;
}

/** spawnRedis starts redis-server on `port` and resolves once it is ready. */
async function spawnRedis(port: number): Promise<ChildProcess> {
  const proc = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let log = "";
  await new Promise<void>((resolve, reject) => {
    const onExit = (code: number | null): void => reject(new Error(`redis-server exited with ${code}: ${log}`));
    proc.once("exit", onExit);
    proc.stdout!.on("data", (chunk: Buffer) => {
      log += chunk.toString();
      if (!log.includes("Ready to accept connections")) return;
      proc.off("exit", onExit);
      proc.stdout!.removeAllListeners("data").resume();
      resolve();
    });
  });
  proc.stderr!.resume();
  return proc;
}
