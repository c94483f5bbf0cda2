/**
 * The node:cluster recipe of docs/examples/cluster-hub.ts, run as users run
 * it: a primary forking 4 workers that serve on one port, each with a Hub on
 * a RedisBus to the test's own redis-server. Clients are dialled until every
 * worker has some; a message from a client on each worker reaches every
 * client on every worker; SIGTERM then closes everything (1001 to each
 * client, every worker exiting with 0). Skipped, loudly, without the
 * redis-server binary.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import t, { type Test } from "tap";
import type { ClusterMessage, WorkerWelcome } from "../../docs/examples/cluster-hub.js";
import { closeStatus, type Conn, dial, MessageType } from "../../src/index.js";
import { redisMissing, startRedis } from "../helpers/redis-server.js";

const script = fileURLToPath(new URL("../../docs/examples/cluster-hub.js", import.meta.url));
const WORKERS = 4;

/** The primary's process and the lines it printed. */
interface Primary {
  proc: ChildProcess;
  lines: string[];
  /** line resolves with the first line, printed or to come, that matches `pattern`. */
  line(pattern: RegExp): Promise<RegExpExecArray>;
}

/** startPrimary runs the example's primary; it is killed if still running when `t` ends (its workers follow). */
function startPrimary(t: Test, redisUrl: string): Primary {
  const proc = spawn(process.execPath, [script, "0", String(WORKERS)], {
    env: { ...process.env, REDIS_URL: redisUrl },
    stdio: ["ignore", "pipe", "inherit"],
  });
  t.teardown(async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = once(proc, "exit");
    proc.kill("SIGKILL");
    await exited;
  });
  const lines: string[] = [];
  let waiters: Array<{ pattern: RegExp; resolve(m: RegExpExecArray): void }> = [];
  let rest = "";
  proc.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
    const parts = (rest + chunk).split("\n");
    rest = parts.pop()!;
    for (const text of parts) {
      lines.push(text);
      waiters = waiters.filter((w) => {
        const match = w.pattern.exec(text);
        return match === null || (w.resolve(match), false);
      });
    }
  });
  return {
    proc,
    lines,
    line(pattern) {
      for (const text of lines) {
        const match = pattern.exec(text);
        if (match !== null) return Promise.resolve(match);
      }
      return new Promise((resolve, reject) => {
        waiters.push({ pattern, resolve });
        proc.once("exit", (code) => reject(new Error(`the primary exited with ${code} before printing ${pattern}`)));
      });
    },
  };
}

async function next<T>(conn: Conn): Promise<T> {
  return JSON.parse((await conn.read()).text()) as T;
}

/** closeCode reads until the connection closes and returns the close code the server sent (-1: none). */
async function closeCode(conn: Conn): Promise<number> {
  for (;;) {
    try {
      await conn.read();
    } catch (err) {
      return closeStatus(err);
    }
  }
}

t.test("node:cluster: 4 workers share one port and their broadcasts through Redis", { skip: redisMissing }, async (t) => {
  const started = performance.now();
  const redis = await startRedis(t);
  const primary = startPrimary(t, redis.url);
  const port = Number((await primary.line(/listening on port (\d+)$/))[1]);
  const listening = performance.now();

  // Dial until every worker has clients (round-robin: 2 each, but tolerate more).
  const clients: Array<{ conn: Conn; pid: number }> = [];
  const byWorker = new Map<number, number>();
  while ((byWorker.size < WORKERS || clients.length < 2 * WORKERS) && clients.length < 40) {
    const conn = await dial(`ws://127.0.0.1:${port}/`);
    t.teardown(() => conn.close().catch(() => undefined));
    const welcome = await next<WorkerWelcome>(conn);
    clients.push({ conn, pid: welcome.pid });
    byWorker.set(welcome.pid, (byWorker.get(welcome.pid) ?? 0) + 1);
  }
  t.equal(byWorker.size, WORKERS, `the clients are spread over the ${WORKERS} workers: ${[...byWorker.values()].join(", ")}`);

  // A client on each worker sends a message; every client of every worker gets the four.
  const senders = [...byWorker.keys()].map((pid) => clients.find((c) => c.pid === pid)!);
  await Promise.all(senders.map((s) => s.conn.write(MessageType.Text, `hello from ${s.pid}`)));
  const received = await Promise.all(
    clients.map(async (c) => {
      const got: ClusterMessage[] = [];
      while (got.length < WORKERS) got.push(await next<ClusterMessage>(c.conn));
      return got;
    }),
  );
  const expected = senders.map((s) => ({ type: "message", pid: s.pid, text: `hello from ${s.pid}` })).sort((a, b) => a.pid - b.pid);
  for (const [i, got] of received.entries()) {
    t.same(got.sort((a, b) => a.pid - b.pid), expected, `client ${i} (worker ${clients[i]!.pid}) got the message from every worker`);
  }
  const delivered = performance.now();

  // SIGTERM to the primary: every worker closes its clients with 1001 and exits with 0.
  const exited = once(primary.proc, "exit");
  primary.proc.kill("SIGTERM");
  t.same(await Promise.all(clients.map((c) => closeCode(c.conn))), clients.map(() => 1001), "every client is told 1001");
  const [code] = (await exited) as [number | null];
  t.equal(code, 0, "the primary exits with 0 once its workers are gone");
  const exits = primary.lines.filter((l) => / exited with code /.test(l));
  t.equal(exits.length, WORKERS, "every worker exited");
  t.ok(exits.every((l) => / exited with code 0$/.test(l)), "with code 0");
  const ms = (from: number, to: number): string => `${(to - from).toFixed(0)} ms`;
  t.comment(
    `cluster: ${WORKERS} workers listening after ${ms(started, listening)}, ${clients.length} clients and ` +
      `the messages delivered after ${ms(started, delivered)}, all exited after ${ms(started, performance.now())}`,
  );
});
