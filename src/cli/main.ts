#!/usr/bin/env node
/**
 * The wsconn command line: `wsconn echo`, `wsconn connect`, `wsconn tunnel`
 * and `wsconn serve`. Plain Node, no dependency; arguments are parsed with
 * node:util parseArgs. Documented in docs/cli.md. `wsconn echo`, for trying
 * clients out and for `npm start`, lives here: every message comes back as it
 * was sent, text as text, binary as binary.
 *
 * Exit status: 0 on success (and after Ctrl-C, which closes every connection
 * with 1001), 1 when a connection fails or closes abnormally, 2 for bad
 * arguments, 130 when a second Ctrl-C forces the exit. Errors are one line
 * on stderr, never a stack trace.
 */

import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import type { Conn } from "../conn/conn.js";
import { CloseError } from "../protocol/close.js";
import { serve } from "../server/serve.js";
import { connectCommand } from "./connect.js";
import { type Context, describe, formatHostPort, integer, log, parse, SERVER_HELP, SERVER_OPTIONS, serverOptions, Shutdown, UsageError } from "./runtime.js";
import { outcome, serveCommand, tunnelCommand } from "./tunnel.js";

type Command = (args: string[], ctx: Context) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  echo: echoCommand,
  connect: connectCommand,
  tunnel: tunnelCommand,
  serve: serveCommand,
};

const HELP = `Usage: wsconn COMMAND [options]

WebSocket from the command line, built on the wsconn library.

Commands:
  echo      run an echo server                  wsconn echo --port 8080
  connect   talk to a server from stdin/stdout  wsconn connect ws://127.0.0.1:8080/
  tunnel    carry local TCP connections over WebSocket (client side)
                                               wsconn tunnel --listen 15432 --to ws://host:8080/pg
  serve     forward WebSocket connections to a TCP address (server side)
                                               wsconn serve --port 8080 --forward 5432 --path /pg

Run \`wsconn COMMAND --help\` for the options of a command.
  -h, --help      show this help
  -v, --version   print the version`;

/**
 * main runs the command named by `argv[0]` and resolves with the exit
 * status. Errors are written to stderr as one line.
 */
async function main(argv: string[], ctx: Context): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === "-h" || name === "--help" || name === "help") {
    (name === undefined ? ctx.stderr : ctx.stdout).write(`${HELP}\n`);
    return name === undefined ? 2 : 0;
  }
  if (name === "-v" || name === "--version") return void ctx.stdout.write(`${version()}\n`), 0;
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (command === undefined) {
    ctx.stderr.write(`wsconn: unknown command ${JSON.stringify(name)} (commands: ${Object.keys(COMMANDS).join(", ")})\n`);
    return 2;
  }
  try {
    return await command(args, ctx);
  } catch (err) {
    if (err instanceof UsageError) {
      ctx.stderr.write(`wsconn ${name}: ${err.message} (see wsconn ${name} --help)\n`);
      return 2;
    }
    ctx.stderr.write(`wsconn ${name}: ${describe(err)}\n`);
    return 1;
  }
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string };
    return pkg.version ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** run is the process entry: wires signals and streams, exits with main's status. */
async function run(): Promise<void> {
  const shutdown = new Shutdown();
  shutdown.install(process);
  const fatal = (err: unknown): void => {
    process.stderr.write(`wsconn: internal error: ${describe(err)}\n`);
    process.exit(1);
  };
  process.on("uncaughtException", fatal);
  process.on("unhandledRejection", fatal);
  // A closed reader (`wsconn connect … | head -1`) is not an error.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => (err.code === "EPIPE" ? process.exit(0) : fatal(err)));
  const status = await main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, shutdown });
  // Exit once stdout has flushed: pipes may be asynchronous.
  process.stdout.write("", () => process.exit(status));
}


/** The echo server's read limit when --read-limit is not given: 16 MiB. */
const ECHO_READ_LIMIT = 16 * 1024 * 1024;

/** Help of `wsconn echo`. */
export const ECHO_HELP = `Usage: wsconn echo [options]

Run a WebSocket echo server: every message is sent back unchanged. One
access log line per connection goes to stderr. Ctrl-C closes every
connection with 1001 and exits.

Options:
${SERVER_HELP}
      --read-limit BYTES  largest message accepted (default 16777216)
  -h, --help         show this help

Example:
  wsconn echo --port 8080
  wsconn connect ws://127.0.0.1:8080/`;

/** echoCommand runs `wsconn echo` until shutdown; resolves with the exit status. */
export async function echoCommand(args: string[], ctx: Context): Promise<number> {
  const { values } = parse(args, { ...SERVER_OPTIONS, "read-limit": { type: "string" } });
  if (values["help"]) return void ctx.stdout.write(`${ECHO_HELP}\n`), 0;
  const options = { ...serverOptions(values), readLimit: integer(values, "read-limit", ECHO_READ_LIMIT, 1) };
  const server = await serve(options, (conn) => {
    ctx.shutdown.track(conn);
    return echoOne(conn, ctx);
  });
  const address = server.address() as AddressInfo;
  const url = `${options.tls ? "wss" : "ws"}://${formatHostPort(address.address, address.port)}${options.path ?? "/"}`;
  log(ctx, `wsconn echo listening on ${url}`);
  ctx.shutdown.onStop(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await ctx.shutdown.stopped;
  return 0;
}

/** echoOne answers every message of one connection, then logs how it went. */
async function echoOne(conn: Conn, ctx: Context): Promise<void> {
  const started = performance.now();
  const from = formatHostPort(conn.remoteAddress, conn.remotePort);
  let messages = 0;
  let bytes = 0;
  let error: string | undefined;
  try {
    for await (const msg of conn) {
      await conn.write(msg.type, msg.data);
      messages += 1;
      bytes += msg.data.length;
    }
  } catch (err) {
    // A CloseError is how the connection ended, which the close code tells.
    if (!(err instanceof CloseError)) error = describe(err);
  }
  const close = await conn.closed;
  const time = ((performance.now() - started) / 1000).toFixed(3);
  log(ctx, `${from} echo ${outcome(close, error)} messages=${messages} bytes=${bytes} time=${time}s`);
}

void run();
