/**
 * The parent's side of test/helpers/memory-server.ts: fork a server child
 * with a config, talk to it over IPC, stop it.
 */

import { fork } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import type { MemorySample } from "./deflate-peer.js";
import type { MemoryReply, MemoryServerConfig } from "./memory-server.js";
import { TEST_EXTENSION } from "./root.js";

export interface MemoryServer {
  config: MemoryServerConfig;
  port: number;
  /** Resolves with the next message from the child. */
  reply(): Promise<MemoryReply>;
  send(message: unknown): void;
  /** measure asks for a sample after a full garbage collection, with the budget's figures (wsconn). */
  measure(): Promise<MemorySample & Pick<MemoryReply, "budget">>;
  stop(): Promise<void>;
}

/**
 * withoutCoverage copies `env` with NODE_V8_COVERAGE emptied, so a child
 * process is not instrumented by c8 (Node puts the variable back when it is
 * merely missing from a child's env).
 */
function withoutCoverage(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...env, NODE_V8_COVERAGE: "" };
}

/** startMemoryServer forks test/helpers/memory-server (.ts, or .js once compiled) with `config` and waits for its port. */
export async function startMemoryServer(config: MemoryServerConfig): Promise<MemoryServer> {
  const child = fork(fileURLToPath(new URL(`./memory-server${TEST_EXTENSION}`, import.meta.url)), [JSON.stringify(config)], {
    // Only the TypeScript loader: tap's process tracking and mocks slow children down.
    execArgv: process.execArgv.filter((arg) => arg.includes("typescript")),
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    // Without coverage: V8's block counters double the child's CPU in these
    // hot loops, and the server code it runs is covered by the rest of the suite.
    env: withoutCoverage(process.env),
  });
  const exited = once(child, "exit");
  const replies: Array<(m: MemoryReply) => void> = [];
  child.on("message", (m: MemoryReply) => replies.shift()?.(m));
  const reply = (): Promise<MemoryReply> => new Promise((resolve) => replies.push(resolve));
  const { port } = await reply();
  const send = (message: unknown): void => void child.send(message as never);
  return {
    config,
    port: port!,
    reply,
    send,
    measure: async () => {
      send({ type: "measure" });
      const { sample, budget } = await reply();
      return { ...sample!, budget };
    },
    stop: async () => {
      if (child.connected) child.send({ type: "exit" });
      await exited;
    },
  };
}
