#!/usr/bin/env node
/**
 * The wsconn command line: `wsconn echo`, `wsconn connect`, `wsconn tunnel`
 * and `wsconn serve`. Plain Node, no dependency; arguments are parsed with
 * node:util parseArgs. Documented in docs/cli.md.
 *
 * Exit status: 0 on success (and after Ctrl-C, which closes every connection
 * with 1001), 1 when a connection fails or closes abnormally, 2 for bad
 * arguments, 130 when a second Ctrl-C forces the exit. Errors are one line
 * on stderr, never a stack trace.
 */

import { readFileSync } from "node:fs";
import { connectCommand } from "./cli/connect.js";
import { UsageError } from "./cli/args.js";
import { echoCommand } from "./cli/echo.js";
import { describe, Shutdown, type Context } from "./cli/runtime.js";
import { serveCommand, tunnelCommand } from "./cli/tunnel.js";

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
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version?: string };
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

void run();
