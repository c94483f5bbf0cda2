/**
 * What every wsconn command shares: argument parsing on node:util parseArgs
 * with the option sets commands share (dialling, listening) and checks that
 * turn bad input into one readable usage line; its standard streams, the log
 * lines on stderr, the one-line description of an error, and the shutdown on
 * SIGINT/SIGTERM that closes every open connection with 1001.
 */

import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { parseArgs, type ParseArgsConfig } from "node:util";
import type { DialOptions } from "../client/dial.js";
import type { Conn } from "../conn/conn.js";
import { noop } from "../internal/waiting.js";
import { CloseError } from "../protocol/close.js";
import { HandshakeError, StatusCode } from "../protocol/errors.js";
import type { ServeOptions } from "../server/serve.js";

/** UsageError is bad command-line input: printed as one line, exit status 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** The options parseArgs accepts, as an object literal. */
export type OptionSpecs = NonNullable<ParseArgsConfig["options"]>;

/** The parsed values of any option set. */
export type Values = Record<string, string | boolean | Array<string | boolean> | undefined>;

/** parse runs parseArgs, turning its errors into a UsageError naming the option. */
export function parse(args: string[], options: OptionSpecs, positionals = false): { values: Values; positionals: string[] } {
  try {
    return parseArgs({ args, options: { help: { type: "boolean", short: "h" }, ...options }, allowPositionals: positionals, strict: true });
  } catch (err) {
    // Node's messages go on to explain "--" in a second sentence; the first says it all.
    const first = (err as Error).message.split(/\.\s/)[0] ?? "bad arguments";
    throw new UsageError(first.charAt(0).toLowerCase() + first.slice(1));
  }
}

/** text returns a string option, undefined when absent. */
export function text(values: Values, name: string): string | undefined {
  const value = values[name];
  return typeof value === "string" ? value : undefined;
}

/** list returns a repeatable string option as an array. */
export function list(values: Values, name: string): string[] {
  const value = values[name];
  if (value === undefined) return [];
  return (Array.isArray(value) ? value : [value]).filter((v): v is string => typeof v === "string");
}

/** integer parses an option as an integer in [min, max], or returns `fallback` when absent. */
export function integer(values: Values, name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const raw = text(values, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, not ${JSON.stringify(raw)}`);
  }
  return Number(raw);
}

/** An address to listen on or connect to. */
export interface HostPort {
  host: string;
  port: number;
}

/**
 * hostPort parses `host:port`, `[v6]:port` or a bare `port` (on
 * `defaultHost`). Throws a UsageError naming `option` for anything else.
 */
export function hostPort(raw: string, option: string, defaultHost = "127.0.0.1"): HostPort {
  let host = defaultHost;
  let port = raw;
  const bracket = /^\[([^\]]+)\]:(\d+)$/.exec(raw);
  if (bracket) [, host = "", port = ""] = bracket;
  else if (raw.includes(":")) {
    const colon = raw.lastIndexOf(":");
    host = raw.slice(0, colon);
    port = raw.slice(colon + 1);
    if (host.includes(":")) throw new UsageError(`--${option}: write an IPv6 address in brackets, as [${host}]:${port}`);
  }
  if (!/^\d+$/.test(port) || Number(port) > 65535 || host === "") {
    throw new UsageError(`--${option} must be host:port or a port, not ${JSON.stringify(raw)}`);
  }
  return { host, port: Number(port) };
}

/** formatHostPort renders an address for messages, bracketing IPv6. */
export function formatHostPort(host: string | undefined, port: number | undefined): string {
  const h = host ?? "?";
  return `${isIP(h) === 6 ? `[${h}]` : h}:${port ?? "?"}`;
}

/** readOptionFile reads a file named by an option; throws a UsageError (one line) when it cannot. */
export function readOptionFile(path: string, option: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new UsageError(`cannot read --${option} file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

// ---- dialling ----

/** The options of commands that dial: connect and tunnel. */
export const DIAL_OPTIONS = {
  header: { type: "string", short: "H", multiple: true },
  subprotocol: { type: "string", short: "s", multiple: true },
  origin: { type: "string" },
  proxy: { type: "string" },
  ca: { type: "string" },
  insecure: { type: "boolean", short: "k" },
  compress: { type: "boolean" },
  "handshake-timeout": { type: "string" },
  "follow-redirects": { type: "string" },
} as const satisfies OptionSpecs;

/** Help lines for DIAL_OPTIONS, shared by the commands' --help. */
export const DIAL_HELP = `  -H, --header "Name: value"  add a request header (repeatable)
  -s, --subprotocol NAME      offer a subprotocol (repeatable, in preference order)
      --origin URL            send an Origin header
      --proxy URL|env|none    HTTP CONNECT proxy; default env: https_proxy (wss),
                              http_proxy (ws) and no_proxy, uppercase forms too
      --ca FILE               trust the PEM certificate(s) in FILE for wss://
  -k, --insecure              do not verify the server's certificate
      --compress              offer permessage-deflate (context takeover)
      --handshake-timeout MS  bound on connecting and the handshake (default 10000)
      --follow-redirects N    follow up to N redirects (default 0)`;

/** dialOptions builds dial options from parsed DIAL_OPTIONS values. */
export function dialOptions(values: Values): DialOptions {
  const options: DialOptions = {
    headers: headers(list(values, "header")),
    subprotocols: list(values, "subprotocol"),
    handshakeTimeout: integer(values, "handshake-timeout", 10_000, 1),
    followRedirects: integer(values, "follow-redirects", 0, 0, 100),
  };
  const origin = text(values, "origin");
  if (origin !== undefined) options.origin = origin;
  const proxy = text(values, "proxy") ?? "env";
  if (proxy !== "none") options.proxy = proxy;
  const ca = text(values, "ca");
  if (ca !== undefined || values["insecure"] === true) {
    options.tls = { ...(ca !== undefined && { ca: readOptionFile(ca, "ca") }), ...(values["insecure"] === true && { rejectUnauthorized: false }) };
  }
  if (values["compress"] === true) options.compression = "context-takeover";
  return options;
}

/** headers parses repeated `Name: value` options into a header object. */
export function headers(lines: string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    const name = colon < 0 ? "" : line.slice(0, colon).trim();
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) {
      throw new UsageError(`--header must be "Name: value", not ${JSON.stringify(line)}`);
    }
    const value = line.slice(colon + 1).trim();
    const prior = out[name];
    out[name] = prior === undefined ? value : [...(Array.isArray(prior) ? prior : [prior]), value];
  }
  return out;
}

/** checkUrl refuses, as a usage error, a URL dial cannot use. */
export function checkUrl(raw: string | undefined, what: string): string {
  if (raw === undefined) throw new UsageError(`missing ${what}`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`${what} ${JSON.stringify(raw)} is not a URL (expected ws://, wss:// or ws+unix://)`);
  }
  if (!["ws:", "wss:", "ws+unix:", "http:", "https:"].includes(url.protocol)) {
    throw new UsageError(`${what} must start with ws://, wss:// or ws+unix://, not ${url.protocol}//`);
  }
  return raw;
}

// ---- listening ----

/** The options of commands that run a WebSocket server: echo and serve. */
export const SERVER_OPTIONS = {
  port: { type: "string", short: "p" },
  host: { type: "string" },
  path: { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  compress: { type: "boolean" },
} as const satisfies OptionSpecs;

/** Help lines for SERVER_OPTIONS. */
export const SERVER_HELP = `  -p, --port PORT    TCP port (default 8080; 0 picks a free one)
      --host HOST    interface to listen on (default 127.0.0.1; 0.0.0.0 for all)
      --path PATH    accept WebSocket requests for this path only (others get 404)
      --cert FILE    serve wss:// with this PEM certificate (with --key)
      --key FILE     the PEM private key of --cert
      --compress     accept permessage-deflate (context takeover)`;

/** serverOptions builds serve options from parsed SERVER_OPTIONS values. */
export function serverOptions(values: Values): ServeOptions {
  const options: ServeOptions = {
    port: integer(values, "port", 8080, 0, 65535),
    host: text(values, "host") ?? "127.0.0.1",
  };
  const path = text(values, "path");
  if (path !== undefined) options.path = path.startsWith("/") ? path : `/${path}`;
  const cert = text(values, "cert");
  const key = text(values, "key");
  if ((cert === undefined) !== (key === undefined)) throw new UsageError("--cert and --key go together");
  if (cert !== undefined && key !== undefined) options.tls = { cert: readOptionFile(cert, "cert"), key: readOptionFile(key, "key") };
  if (values["compress"] === true) options.compression = "context-takeover";
  return options;
}

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
