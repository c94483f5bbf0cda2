/**
 * The README's quick start, run as a new user would: each TypeScript block
 * (plain JavaScript apart from the fence) is saved as an ES module inside the
 * package, where `import ... from "wsconn"` resolves to the built package by
 * self-reference, and run with node. Port 8080 becomes a free port.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { dial, MessageType } from "../src/index.js";
import { freePort } from "./helpers/peers.js";
import { ROOT } from "./helpers/root.js";

const root = ROOT;
const blocks = [...readFileSync(join(root, "README.md"), "utf8").matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
const dir = mkdtempSync(join(root, ".readme-test-"));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/**
 * Loaded before each example: tells the test, over the IPC channel, when a
 * server of the example listens, so that it dials once instead of retrying
 * while the child starts (which, on a loaded machine, took longer than any
 * bound on retries).
 */
const reportListening = join(dir, "report-listening.mjs");
writeFileSync(
  reportListening,
  `import net from "node:net";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  this.once("listening", () => process.send?.({ listening: this.address().port }));
  return listen.apply(this, args);
};
`,
);

function run(name: string, code: string, port: number): ChildProcess {
  const file = join(dir, `${name}.mjs`);
  writeFileSync(file, code.replaceAll("8080", String(port)));
  return spawn(process.execPath, ["--import", reportListening, file], { stdio: ["ignore", "pipe", "pipe", "ipc"] });
}

function output(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  return once(child, "exit").then(([code]) => ({ code: code as number | null, stdout, stderr }));
}

/** dialWhenUp dials once the server child says it listens on `port`; it fails if the child exits first. */
async function dialWhenUp(port: number, child: ChildProcess) {
  await new Promise<void>((resolve, reject) => {
    const onMessage = (message: { listening?: number }): void => {
      if (message.listening !== port) return;
      child.off("exit", onExit);
      child.off("message", onMessage);
      resolve();
    };
    const onExit = (code: number | null): void => reject(new Error(`the example server exited (${code}) before it listened`));
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
  return dial(`ws://127.0.0.1:${port}`);
}

function block(fragment: string): string {
  const found = blocks.find((b) => b.includes(fragment));
  if (found === undefined) throw new Error(`no README block contains ${fragment}`);
  return found;
}

t.test("the README has its quick start blocks", async (t) => {
  t.ok(blocks.length >= 4, `found ${blocks.length} TypeScript blocks`);
});

t.test("echo server and client of the quick start", async (t) => {
  const port = await freePort();
  const server = run("echo-server", block("await serve("), port);
  t.teardown(() => void server.kill());
  (await dialWhenUp(port, server)).closeNow();
  const client = await output(run("echo-client", block('await dial("ws://'), port));
  t.equal(client.stderr, "");
  t.equal(client.stdout, "hello\n", "the client prints the echo");
  t.equal(client.code, 0, "and exits once closed");
});

t.test("accept on your own http server", async (t) => {
  const port = await freePort();
  const server = run("accept-server", block("server.on(\"upgrade\""), port);
  t.teardown(() => void server.kill());
  const conn = await dialWhenUp(port, server);
  await conn.write(MessageType.Binary, Buffer.from([1, 2, 3]));
  t.same([...(await conn.read()).data], [1, 2, 3]);
  await conn.close();
});

t.test("netConn upper-case echo", async (t) => {
  const port = await freePort();
  const server = run("netconn-server", block("netConn(conn"), port);
  t.teardown(() => void server.kill());
  const conn = await dialWhenUp(port, server);
  await conn.write(MessageType.Binary, "hello, stream");
  t.equal((await conn.read()).text(), "HELLO, STREAM");
  await conn.close();
  t.equal((await conn.closed).code, 1000);
});

t.test("the production server shuts down on SIGTERM with 1001 to its clients", async (t) => {
  const port = await freePort();
  const server = run("production-server", block("server.shutdown("), port);
  t.teardown(() => void server.kill());
  const conn = await dialWhenUp(port, server);
  await conn.write(MessageType.Text, "still here");
  t.equal((await conn.read()).text(), "still here", "it echoes");
  const exited = output(server);
  const closing = conn.read().catch((err: unknown) => err);
  server.kill("SIGTERM");
  t.match(await closing, { code: 1001, remote: true }, "the client got 1001");
  const result = await exited;
  t.equal(result.code, 0, "the process exits by itself once everything is closed");
  t.equal(result.stdout, "shut down, 0 connections left\n");
});
