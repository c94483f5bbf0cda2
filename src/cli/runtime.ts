/**
 * What every wsconn command shares at run time: its standard streams, the
 * log lines on stderr, the one-line description of an error, and the
 * shutdown on SIGINT/SIGTERM that closes every open connection with 1001.
 */

import { CloseError, StatusCode } from "../close.js";
import type { Conn } from "../conn.js";
import { HandshakeError } from "../errors.js";
import { noop } from "../internal/noop.js";

/** Context is what a command runs with: its streams, environment and shutdown. */
export interface Context {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  shutdown: Shutdown;
}

/** log writes one timestamped line to stderr: access and status lines of the servers. */
export function log(ctx: Context, line: string): void {
  ctx.stderr.write(`${new Date().toISOString()} ${line}\n`);
}

/**
 * describe renders an error as one line without a stack: the message, the
 * close code of a CloseError, the status of a refused handshake.
 */
export function describe(err: unknown): string {
  if (err instanceof CloseError) return closeText(err.code, err.reason);
  if (err instanceof HandshakeError) return err.message.replace(/^failed to dial: /, "");
  if (err instanceof Error) {
    const tls = tlsReason(err);
    if (tls !== undefined) return `TLS error: ${tls}`;
    const message = oneLine(err.message.replace(/^failed to dial: /, ""));
    return message === "" ? err.name : message;
  }
  return oneLine(String(err));
}

/**
 * tlsReason digs OpenSSL's short reason out of an error whose message is
 * OpenSSL's raw error queue ("…:SSL routines:func:wrong version number:file:line:").
 */
function tlsReason(err: Error): string | undefined {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const reason = (e as { reason?: unknown }).reason;
    if (typeof reason === "string" && String((e as { code?: unknown }).code).startsWith("ERR_SSL_")) return reason;
    const match = /SSL routines:[^:]*:([^:\n]+)/.exec(e.message);
    if (match) return match[1];
  }
  return undefined;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}

/** closeText renders a close code with its name and reason: `1001 going away "bye"`. */
export function closeText(code: number, reason: string): string {
  const name = StatusCode[code]?.replace(/[A-Z]/g, (c, i: number) => (i === 0 ? c.toLowerCase() : ` ${c.toLowerCase()}`));
  return `${code}${name ? ` ${name}` : ""}${reason ? ` ${JSON.stringify(reason)}` : ""}`;
}

/** A close code that means the connection ended as intended. */
export function isNormalClose(code: number): boolean {
  return code === StatusCode.NormalClosure || code === StatusCode.GoingAway || code === StatusCode.NoStatusRcvd;
}

/**
 * Shutdown stops a command on SIGINT or SIGTERM: it aborts `signal` (pending
 * dials give up), runs the stop hooks (servers stop listening), and closes
 * every tracked connection with 1001 Going Away, waiting for their close
 * handshakes (each bounded by the connection's close timeout). A second
 * signal exits at once with status 130.
 */
export class Shutdown {
  private readonly controller = new AbortController();
  private readonly conns = new Set<Conn>();
  private readonly hooks: Array<() => void | Promise<void>> = [];
  private started = false;
  private resolveStopped!: () => void;
  /** Resolves once a shutdown has begun and completed. */
  readonly stopped = new Promise<void>((resolve) => (this.resolveStopped = resolve));

  /** Aborted when the shutdown begins. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** install listens for SIGINT and SIGTERM on `proc`. */
  install(proc: NodeJS.Process): void {
    const onSignal = (): void => {
      if (this.signal.aborted) proc.exit(130);
      void this.stop();
    };
    proc.on("SIGINT", onSignal);
    proc.on("SIGTERM", onSignal);
  }

  /** track adds a connection to close on shutdown (at once, if it has begun). */
  track(conn: Conn): void {
    if (this.signal.aborted) return void conn.close(StatusCode.GoingAway, "shutting down").catch(noop);
    this.conns.add(conn);
    void conn.closed.then(() => this.conns.delete(conn));
  }

  /** onStop registers a hook run when the shutdown begins. */
  onStop(hook: () => void | Promise<void>): void {
    this.hooks.push(hook);
  }

  /** stop begins the shutdown (once) and resolves when it is complete. */
  stop(): Promise<void> {
    if (!this.started) {
      this.started = true;
      void this.run().then(this.resolveStopped);
    }
    return this.stopped;
  }

  private async run(): Promise<void> {
    this.controller.abort(new Error("interrupted"));
    const closing = [...this.conns].map((c) => c.close(StatusCode.GoingAway, "shutting down").catch(noop));
    const hooks = this.hooks.map((hook) => Promise.resolve().then(hook).catch(noop));
    await Promise.all([...hooks, ...closing]);
  }
}
