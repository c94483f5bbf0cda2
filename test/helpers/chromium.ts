/**
 * A headless Chromium of a test's own, driven over the DevTools protocol
 * (CDP) with wsconn's own client: no browser download, no dependency. The
 * binary is Debian's `chromium` (/usr/bin/chromium) or `CHROMIUM_PATH`;
 * `chromiumMissing` says, loudly and once, when it is absent, so the tests
 * that need it skip.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Conn, dial, MessageType } from "../../src/index.js";

/** The browser binary: `CHROMIUM_PATH` when set, else Debian's launcher. */
const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

/** How long the browser may take to print its DevTools address. */
const LAUNCH_TIMEOUT = 15_000;

let warned = false;

/**
 * chromiumMissing is a skip reason when the Chromium binary is absent or not
 * executable, else undefined. The first time it finds none it also says so on
 * stderr, so a skipped browser test is never mistaken for a passing one.
 */
export function chromiumMissing(): string | undefined {
  try {
    accessSync(chromiumPath, constants.X_OK);
    return undefined;
  } catch {
    const reason = `no Chromium at ${chromiumPath} (apt-get install -y chromium, or set CHROMIUM_PATH)`;
    if (!warned) {
      warned = true;
      process.stderr.write(`\n*** Chromium not found: the browser tests are SKIPPED (${reason}) ***\n\n`);
    }
    return reason;
  }
}

/** A page (tab) the browser is attached to; commands for it carry its session. */
export interface Page {
  targetId: string;
  sessionId: string;
}

/** A running headless Chromium and the CDP connection to it. */
export interface Chromium {
  /** The browser's product and version, as Browser.getVersion tells it (e.g. "Chrome/120.0.6099.224"). */
  version: string;
  /** newPage opens a tab, loads `url` in it and resolves once its load event fired. */
  newPage(url: string): Promise<Page>;
  /**
   * evaluate runs `expression` in the page, awaits it if it is a promise and
   * resolves with its value (which must be JSON-serialisable). An exception
   * in the page rejects with its message.
   */
  evaluate<T = unknown>(page: Page, expression: string): Promise<T>;
  /** close kills the browser (and its helper processes) and removes its profile directory. */
  close(): Promise<void>;
}

/** The flags for a browser with no state, no UI and nothing running in the background; root in a container needs --no-sandbox. */
function flags(profile: string): string[] {
  return [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--metrics-recording-only",
    "--mute-audio",
    "--remote-debugging-port=0",
    `--user-data-dir=${profile}`,
    "about:blank",
  ];
}

/** launchChromium starts a headless Chromium on a fresh profile and connects to its DevTools endpoint. */
export async function launchChromium(): Promise<Chromium> {
  const profile = mkdtempSync(join(tmpdir(), "wsconn-chromium-"));
  // Its own process group, so that close() ends the renderer and zygote processes with it.
  const proc = spawn(chromiumPath, flags(profile), { stdio: ["ignore", "ignore", "pipe"], detached: true });
  // 'error' instead of 'exit' when the binary could not be started at all.
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()).once("error", () => resolve()));
  const killGroup = (): void => {
    if (proc.exitCode !== null || proc.signalCode !== null || proc.pid === undefined) return;
    try {
      process.kill(-proc.pid, "SIGKILL");
    } catch {
      // already gone
    }
  };
  // A test process that ends without close() leaves no browser behind (nor, at best, its profile).
  const onExit = (): void => {
    killGroup();
    try {
      rmSync(profile, { recursive: true, force: true });
    } catch {
      // a helper process still writing; the directory is in tmpdir
    }
  };
  process.once("exit", onExit);
  const cleanup = async (): Promise<void> => {
    process.off("exit", onExit);
    killGroup();
    await exited;
    rmSync(profile, { recursive: true, force: true, maxRetries: 3 });
  };

  let cdp: Cdp;
  let product: string;
  try {
    const endpoint = await devtoolsEndpoint(proc);
    cdp = new Cdp(await dial(endpoint, { readLimit: 64 * 1024 * 1024 }));
    ({ product } = await cdp.send<{ product: string }>("Browser.getVersion"));
  } catch (err) {
    await cleanup();
    throw err;
  }

  return {
    version: product,
    async newPage(url) {
      const { targetId } = await cdp.send<{ targetId: string }>("Target.createTarget", { url: "about:blank" });
      const { sessionId } = await cdp.send<{ sessionId: string }>("Target.attachToTarget", { targetId, flatten: true });
      const page = { targetId, sessionId };
      await cdp.send("Page.enable", {}, sessionId);
      const loaded = cdp.nextEvent("Page.loadEventFired", sessionId);
      const nav = await cdp.send<{ errorText?: string }>("Page.navigate", { url }, sessionId);
      if (nav.errorText) throw new Error(`Chromium could not load ${url}: ${nav.errorText}`);
      await loaded;
      return page;
    },
    async evaluate<T>(page: Page, expression: string) {
      const answer = await cdp.send<EvaluateResult>("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true }, page.sessionId);
      const failure = answer.exceptionDetails;
      if (failure) throw new Error(`in the page: ${failure.exception?.description ?? failure.text}`);
      return answer.result.value as T;
    },
    async close() {
      cdp.conn.closeNow();
      await cleanup();
    },
  };
}

/** What Runtime.evaluate answers (the part used here). */
interface EvaluateResult {
  result: { value?: unknown };
  exceptionDetails?: { text: string; exception?: { description?: string } };
}

/** devtoolsEndpoint resolves with the browser's ws:// DevTools address from its stderr; it rejects, with the stderr so far, if the browser exits or takes too long. */
function devtoolsEndpoint(proc: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let stderr = "";
    const fail = (why: string): void => {
      finish();
      reject(new Error(`Chromium ${why}; its stderr:\n${stderr}`));
    };
    const onData = (chunk: Buffer): void => {
      stderr += chunk.toString();
      const match = /DevTools listening on (ws:\/\/\S+)/.exec(stderr);
      if (!match) return;
      finish();
      resolve(match[1]!);
    };
    const onExit = (code: number | null, signal: string | null): void => fail(`exited (${code ?? signal}) before DevTools listened`);
    const onError = (err: Error): void => fail(`could not start: ${err.message}`);
    const timer = setTimeout(() => fail(`printed no DevTools address within ${LAUNCH_TIMEOUT} ms`), LAUNCH_TIMEOUT);
    const finish = (): void => {
      clearTimeout(timer);
      proc.stderr!.off("data", onData);
      proc.off("exit", onExit);
      proc.off("error", onError);
      proc.stderr!.resume(); // keep draining, so the browser never blocks on a full pipe
    };
    proc.stderr!.on("data", onData);
    proc.once("exit", onExit);
    proc.once("error", onError);
  });
}

/** A CDP message: a command's answer (with `id`) or an event (with `method`). */
interface CdpMessage {
  id?: number;
  method?: string;
  sessionId?: string;
  params?: unknown;
  result?: unknown;
  error?: { code: number; message: string };
}

/** Cdp sends commands as JSON text messages with an `id` and matches the answers; events go to whoever waits for them. */
class Cdp {
  private lastId = 0;
  private readonly pending = new Map<number, { method: string; resolve(value: unknown): void; reject(err: Error): void }>();
  private readonly waiters: Array<{ method: string; sessionId: string | undefined; resolve(params: unknown): void; reject(err: Error): void }> = [];
  private ended: Error | undefined;

  constructor(readonly conn: Conn) {
    void this.readLoop();
  }

  /** send runs one command, in the page of `sessionId` when given, and resolves with its result. */
  send<T = unknown>(method: string, params: object = {}, sessionId?: string): Promise<T> {
    if (this.ended) return Promise.reject(this.ended);
    const id = ++this.lastId;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { method, resolve: resolve as (value: unknown) => void, reject });
      this.conn.write(MessageType.Text, JSON.stringify({ id, method, params, sessionId })).catch((err: Error) => {
        this.pending.delete(id);
        reject(err);
      });
    });
  }

  /** nextEvent resolves with the parameters of the next `method` event of `sessionId`; call it before the command that causes the event. */
  nextEvent(method: string, sessionId?: string): Promise<unknown> {
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => this.waiters.push({ method, sessionId, resolve, reject }));
  }

  private async readLoop(): Promise<void> {
    try {
      for await (const message of this.conn) this.dispatch(JSON.parse(message.text()) as CdpMessage);
      this.ended = new Error("the DevTools connection closed");
    } catch (err) {
      this.ended = new Error(`the DevTools connection failed: ${(err as Error).message}`, { cause: err });
    }
    for (const call of this.pending.values()) call.reject(new Error(`${call.method}: ${this.ended.message}`, { cause: this.ended }));
    this.pending.clear();
    for (const w of this.waiters.splice(0)) w.reject(new Error(`waiting for ${w.method}: ${this.ended.message}`, { cause: this.ended }));
  }

  private dispatch(message: CdpMessage): void {
    if (message.id !== undefined) {
      const call = this.pending.get(message.id);
      if (call === undefined) return;
      this.pending.delete(message.id);
      if (message.error) call.reject(new Error(`${call.method}: ${message.error.message} (${message.error.code})`));
      else call.resolve(message.result);
      return;
    }
    const i = this.waiters.findIndex((w) => w.method === message.method && w.sessionId === message.sessionId);
    if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(message.params);
  }
}
