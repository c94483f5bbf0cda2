/**
 * `wsconn connect URL`: a command-line WebSocket client. Lines of stdin
 * become text messages and messages received go to stdout, so it works
 * typed at a terminal and in a pipe (`echo hi | wsconn connect ws://…`).
 */

import { once } from "node:events";
import { performance } from "node:perf_hooks";
import * as readline from "node:readline";
import { setTimeout as delay } from "node:timers/promises";
import { dial } from "../client/dial.js";
import type { Conn } from "../conn/conn.js";
import { noop } from "../internal/waiting.js";
import { MAX_CLOSE_REASON_BYTES } from "../protocol/close.js";
import { isSendableCloseCode, StatusCode } from "../protocol/errors.js";
import { MessageType } from "../protocol/frame.js";
import { checkUrl, closeText, type Context, describe, DIAL_HELP, DIAL_OPTIONS, dialOptions, integer, isNormalClose, parse, text, UsageError } from "./runtime.js";

/** How long /ping waits for its pong, in ms. */
const PING_TIMEOUT = 10_000;

/** The client's read limit when --read-limit is not given: 16 MiB. */
const CONNECT_READ_LIMIT = 16 * 1024 * 1024;

/** Help of `wsconn connect`. */
export const CONNECT_HELP = `Usage: wsconn connect URL [options]

Connect to a WebSocket server. Each line of stdin is sent as a text message;
each message received is printed on stdout, one per line (text as is, binary
as hex or base64). Status lines (pong times, the close) go to stderr.

When stdin ends (Ctrl-D, or the end of a pipe), wsconn keeps printing what
arrives until --wait ms pass without a message, then closes with 1000 and
waits for the close handshake. The exit status is 0 after a normal close
(1000, 1001, or a close you asked for, Ctrl-C included), 1 after any other
close or error, 130 for Ctrl-C before the connection is open.

Commands, at a terminal or with --commands (a line starting with // sends
the line with one slash less):
  /ping                 send a ping, print the round-trip time
  /close [CODE [REASON]] close the connection (default 1000)
  /binary HEX           send a binary message
  /help                 list the commands

Options:
  -b, --binary hex|base64     how binary messages are printed (default hex)
  -w, --wait MS               after stdin ends, wait this long for quiet
                              before closing (default 1000; 0 closes at once)
  -c, --commands              recognise /commands when stdin is not a terminal
      --read-limit BYTES      largest message accepted (default 16777216)
${DIAL_HELP}
  -h, --help                  show this help

Examples:
  wsconn connect ws://127.0.0.1:8080/
  echo '{"op":"subscribe"}' | wsconn connect wss://example.com/feed --wait 3000
  wsconn connect wss://example.com/chat -s chat -H "Authorization: Bearer $TOKEN"`;

/** connectCommand runs `wsconn connect`; resolves with the exit status. */
export async function connectCommand(args: string[], ctx: Context): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...DIAL_OPTIONS,
      binary: { type: "string", short: "b" },
      wait: { type: "string", short: "w" },
      commands: { type: "boolean", short: "c" },
      "read-limit": { type: "string" },
    },
    true,
  );
  if (values["help"]) return void ctx.stdout.write(`${CONNECT_HELP}\n`), 0;
  if (positionals.length > 1) throw new UsageError(`connect takes one URL, got ${positionals.length}`);
  const url = checkUrl(positionals[0], "URL");
  const binary = text(values, "binary") ?? "hex";
  if (binary !== "hex" && binary !== "base64") throw new UsageError(`--binary must be hex or base64, not ${JSON.stringify(binary)}`);
  const wait = integer(values, "wait", 1000);
  const interactive = ctx.stdin.isTTY === true;
  const options = { ...dialOptions(values), readLimit: integer(values, "read-limit", CONNECT_READ_LIMIT, 1), signal: ctx.shutdown.signal };
  let conn: Conn;
  try {
    conn = await dial(url, options);
  } catch (err) {
    if (ctx.shutdown.signal.aborted) return 130; // Ctrl-C while connecting: nothing to report
    throw err;
  }
  ctx.shutdown.track(conn);
  if (interactive) status(ctx, banner(url, conn));
  const session = new Session(conn, ctx, binary);
  const printing = session.printMessages();
  const ended = await session.sendInput(interactive || values["commands"] === true);
  if (ended === "eof") {
    await session.quiet(wait);
    session.closedByUs = true;
    await conn.close(StatusCode.NormalClosure).catch(noop);
  }
  await printing;
  return session.exitStatus(interactive);
}

function banner(url: string, conn: Conn): string {
  const details = [conn.subprotocol && `subprotocol ${conn.subprotocol}`, conn.extensions && `extensions ${conn.extensions}`].filter(Boolean);
  return `connected to ${url}${details.length > 0 ? ` (${details.join(", ")})` : ""}; /help lists the commands`;
}

function status(ctx: Context, line: string): void {
  ctx.stderr.write(`${line}\n`);
}

/** Session is one connection driven by stdin and printed to stdout. */
class Session {
  /** This side began the close (stdin ended, /close, Ctrl-C). */
  closedByUs = false;
  private lastActivity = performance.now();
  private readError: unknown;

  constructor(
    private readonly conn: Conn,
    private readonly ctx: Context,
    private readonly binary: "hex" | "base64",
  ) {}

  /** printMessages prints every message until the connection closes. */
  async printMessages(): Promise<void> {
    for (;;) {
      let line: string;
      try {
        const msg = await this.conn.read();
        line = msg.type === MessageType.Text ? msg.text() : msg.data.toString(this.binary);
      } catch (err) {
        this.readError = err;
        return;
      }
      this.lastActivity = performance.now();
      if (!this.ctx.stdout.write(`${line}\n`)) await once(this.ctx.stdout, "drain");
    }
  }

  /**
   * sendInput sends stdin line by line until it ends ("eof"), the
   * connection closes ("closed"), or /close is typed ("closed").
   */
  async sendInput(commands: boolean): Promise<"eof" | "closed"> {
    const lines = readline.createInterface({ input: this.ctx.stdin, crlfDelay: Infinity, terminal: false });
    let open = true;
    void this.conn.closed.then(() => {
      open = false;
      lines.close();
    });
    try {
      for await (const line of lines) {
        const sent = commands && line.startsWith("/") && !line.startsWith("//") ? await this.command(line) : await this.send(commands && line.startsWith("//") ? line.slice(1) : line);
        if (!sent) return "closed";
      }
    } finally {
      lines.close();
    }
    this.lastActivity = performance.now();
    return open ? "eof" : "closed";
  }

  /** quiet waits until `wait` ms pass without a message, or the connection closes. */
  async quiet(wait: number): Promise<void> {
    let closed = false;
    void this.conn.closed.then(() => (closed = true));
    while (!closed) {
      const left = this.lastActivity + wait - performance.now();
      if (left <= 0) return;
      const timer = new AbortController();
      await Promise.race([delay(left, undefined, { signal: timer.signal }).catch(noop), this.conn.closed]);
      timer.abort();
    }
  }

  /** exitStatus reports how the connection ended and returns 0 or 1. */
  async exitStatus(interactive: boolean): Promise<number> {
    const close = await this.conn.closed;
    const ours = this.closedByUs || this.ctx.shutdown.signal.aborted;
    if (ours ? close.wasClean || isNormalClose(close.code) : isNormalClose(close.code)) {
      if (interactive) status(this.ctx, `closed: ${closeText(close.code, close.reason)}`);
      return 0;
    }
    const why = close.code === StatusCode.AbnormalClosure && this.readError !== undefined ? describe(this.readError) : closeText(close.code, close.reason);
    status(this.ctx, `wsconn: connection closed: ${why}`);
    return 1;
  }

  private async send(line: string, type = MessageType.Text, data: string | Buffer = line): Promise<boolean> {
    try {
      await this.conn.write(type, data);
      return true;
    } catch {
      return false; // closed: the exit status tells why
    }
  }

  /** command runs one /command; returns false once the connection is closing. */
  private async command(line: string): Promise<boolean> {
    const [name = "", ...rest] = line.split(" ");
    switch (name) {
      case "/ping":
        return this.ping();
      case "/close":
        return this.close(rest);
      case "/binary": {
        const hex = rest.join("").replace(/\s+/g, "");
        if (!/^([0-9a-f]{2})*$/i.test(hex)) return this.complain("/binary takes hex digits, two per byte");
        return this.send(line, MessageType.Binary, Buffer.from(hex, "hex"));
      }
      case "/help":
        status(this.ctx, "/ping | /close [CODE [REASON]] | /binary HEX | //text sends /text");
        return true;
      default:
        return this.complain(`unknown command ${name} (//${name.slice(1)} sends it as text)`);
    }
  }

  private async ping(): Promise<boolean> {
    try {
      const rtt = await this.conn.ping(AbortSignal.timeout(PING_TIMEOUT));
      status(this.ctx, `pong: ${rtt.toFixed(3)} ms`);
      return true;
    } catch (err) {
      if ((err as Error).name === "TimeoutError") return this.complain(`no pong within ${PING_TIMEOUT / 1000} s`);
      return false;
    }
  }

  private async close(args: string[]): Promise<boolean> {
    const [rawCode = "1000", ...words] = args;
    const code = /^\d+$/.test(rawCode) ? Number(rawCode) : NaN;
    const reason = words.join(" ");
    if (!isSendableCloseCode(code)) return this.complain(`close code ${rawCode} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)`);
    if (Buffer.byteLength(reason) > MAX_CLOSE_REASON_BYTES) return this.complain(`a close reason holds at most ${MAX_CLOSE_REASON_BYTES} bytes`);
    this.closedByUs = true;
    await this.conn.close(code, reason).catch(noop);
    return false;
  }

  private complain(message: string): true {
    status(this.ctx, `wsconn: ${message}`);
    return true;
  }
}
