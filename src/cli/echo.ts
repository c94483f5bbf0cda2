/**
 * `wsconn echo`: a WebSocket echo server, for trying clients out and for
 * `npm start`. Every message comes back as it was sent, text as text,
 * binary as binary.
 */

import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import { CloseError } from "../close.js";
import type { Conn } from "../conn.js";
import { serve } from "../serve.js";
import { formatHostPort, integer, parse, SERVER_HELP, SERVER_OPTIONS, serverOptions } from "./args.js";
import { outcome } from "./bridge.js";
import { describe, log, type Context } from "./runtime.js";

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
