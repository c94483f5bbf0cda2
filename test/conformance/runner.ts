/**
 * The case model and the runner that plays one case against one Harness.
 *
 * A case is a script: steps that send frames (delivered whole, frame by frame
 * or in n-byte chunks) and steps that expect what wsconn sends back (an echoed
 * message, a pong), then an ending: either wsconn must fail the connection
 * with a given close code, or the peer closes and wsconn must answer the close
 * handshake. Everything wsconn sends is checked frame by frame; anything
 * unexpected (an extra pong, an echo after a close, an unmasked client frame)
 * makes the case fail.
 */

import { CloseError, closeStatus } from "../../src/index.js";
import { type Chop, encodeFrame, frame, Op, type RawFrame, type ReceivedFrame } from "../helpers/raw-peer.js";
import type { Harness, Limit, Pair, Role } from "./peer.js";

/** Expect is one thing wsconn must send. */
export type Expect =
  | { message: { type: "text" | "binary"; data: Buffer } }
  | { pong: Buffer };

/** A step sends frames or expects something back. */
export type Step =
  | { send: RawFrame[]; chop?: Chop }
  | { expect: Expect; optional?: boolean };

/** How a case ends. */
export type Ending =
  /** wsconn must send a close frame with `code` and end its side of TCP, before the peer sends anything more. */
  | { fail: number }
  /**
   * The peer closes with `code`/`reason` (no code: an empty close frame),
   * after the steps unless `alreadySent` (the steps sent the close frame), and
   * wsconn must echo the code and finish the close handshake cleanly.
   */
  | { peerClose: { code?: number; reason?: Buffer | string; alreadySent?: boolean; chop?: Chop } };

/** Case is one row of the table. */
export interface Case {
  /** Autobahn-like number, e.g. "5.19" or "6.6.4". */
  id: string;
  /** The family it counts for in the summary table. */
  family: string;
  title: string;
  /** Roles it runs for. Default both. */
  roles?: Role[];
  /** Read limit of the wsconn side. Default "large". */
  limit?: Limit;
  /** Frames sent along with the handshake (in the request / the 101 response). */
  early?: RawFrame[];
  steps: Step[];
  /** Default: the peer closes with 1000. */
  end?: Ending;
  /** Guard for each expected frame, in ms. Default 3000. */
  timeoutMs?: number;
}

/** Item is what wsconn sent, assembled: a message, a control frame, the end of its stream. */
type Item =
  | { kind: "message"; type: "text" | "binary"; data: Buffer }
  | { kind: "ping" | "pong"; data: Buffer }
  | { kind: "close"; payload: Buffer }
  | { kind: "eof" }
  | { kind: "timeout" }
  | { kind: "bad"; why: string };

/** CaseFailure is thrown inside the runner to stop a case at its first problem. */
class CaseFailure extends Error {}

/**
 * runCase plays `c` against `harness` and returns the problems found (none
 * means the case passed). It always closes the connection it opened.
 */
export async function runCase(harness: Harness, c: Case): Promise<string[]> {
  const masks = harness.role === "server";
  const early = c.early ? Buffer.concat(c.early.map((f) => encodeFrame(f, masks))) : undefined;
  const pair = await harness.open({ limit: c.limit ?? "large", early });
  const run = new CaseRun(pair, harness.role, c);
  try {
    await run.play();
  } catch (err) {
    if (!(err instanceof CaseFailure)) run.problems.push(`runner error: ${String(err)}`);
  } finally {
    pair.peer.destroy();
    pair.conn.closeNow();
  }
  return run.problems;
}

/** CaseRun holds the state of one case being played. */
class CaseRun {
  readonly problems: string[] = [];
  private pending: Item | undefined;
  private message: { type: "text" | "binary"; parts: Buffer[] } | undefined;
  private lastMaskKey: number | undefined;

  constructor(
    private readonly pair: Pair,
    private readonly role: Role,
    private readonly c: Case,
  ) {}

  async play(): Promise<void> {
    for (const step of this.c.steps) {
      if ("send" in step) await this.pair.peer.send(step.send, step.chop ?? "whole");
      else await this.expect(step.expect, step.optional === true);
    }
    const end = this.c.end ?? { peerClose: { code: 1000 } };
    if ("fail" in end) await this.expectFailure(end.fail);
    else await this.closeByPeer(end.peerClose);
  }

  private problem(text: string): never {
    this.problems.push(text);
    throw new CaseFailure(text);
  }

  // ---- reading what wsconn sends ----

  private async next(): Promise<Item> {
    if (this.pending) {
      const item = this.pending;
      this.pending = undefined;
      return item;
    }
    for (;;) {
      const f = await this.pair.peer.nextFrame(this.c.timeoutMs ?? 3000);
      if (f === "timeout") return { kind: "timeout" };
      if (f === null) {
        const why = this.pair.peer.parseError;
        return why ? { kind: "bad", why } : { kind: "eof" };
      }
      const item = this.assemble(f);
      if (item) return item;
    }
  }

  /** assemble checks one frame wsconn sent and returns an item once one is complete. */
  private assemble(f: ReceivedFrame): Item | undefined {
    const wantMask = this.role === "client";
    if (f.masked !== wantMask) return { kind: "bad", why: `wsconn ${this.role} sent a frame with mask=${f.masked}` };
    if (f.maskKey) {
      // Keys must be fresh for every frame (https://www.rfc-editor.org/rfc/rfc6455#section-10.3).
      // A repeat of the previous key has odds of 2^-32 with random keys.
      const key = f.maskKey.readUInt32BE(0);
      if (key === this.lastMaskKey) return { kind: "bad", why: `wsconn reused mask key ${key.toString(16)}` };
      this.lastMaskKey = key;
    }
    if (f.rsv !== 0) return { kind: "bad", why: `wsconn sent reserved bits ${f.rsv}` };
    if (f.opcode >= 8) return this.controlItem(f);
    if (f.opcode === Op.Continuation) {
      if (!this.message) return { kind: "bad", why: "wsconn sent a continuation without a message" };
    } else if (f.opcode === Op.Text || f.opcode === Op.Binary) {
      if (this.message) return { kind: "bad", why: "wsconn began a message inside another" };
      this.message = { type: f.opcode === Op.Text ? "text" : "binary", parts: [] };
    } else {
      return { kind: "bad", why: `wsconn sent opcode ${f.opcode}` };
    }
    this.message.parts.push(f.payload);
    if (!f.fin) return undefined;
    const { type, parts } = this.message;
    this.message = undefined;
    return { kind: "message", type, data: Buffer.concat(parts) };
  }

  private controlItem(f: ReceivedFrame): Item {
    if (!f.fin || f.payload.length > 125) return { kind: "bad", why: "wsconn sent an invalid control frame" };
    if (f.opcode === Op.Close) return { kind: "close", payload: f.payload };
    if (f.opcode === Op.Ping) return { kind: "ping", data: f.payload };
    if (f.opcode === Op.Pong) return { kind: "pong", data: f.payload };
    return { kind: "bad", why: `wsconn sent opcode ${f.opcode}` };
  }

  private async expect(want: Expect, optional: boolean): Promise<void> {
    const item = await this.next();
    const matches =
      "message" in want
        ? item.kind === "message" && item.type === want.message.type && item.data.equals(want.message.data)
        : item.kind === "pong" && item.data.equals(want.pong);
    if (matches) return;
    if (optional) {
      this.pending = item;
      return;
    }
    this.problem(`expected ${describeExpect(want)}, got ${describeItem(item)}`);
  }

  // ---- endings ----

  /** expectFailure: wsconn must send close `code`, then end TCP; the peer then echoes and ends. */
  private async expectFailure(code: number): Promise<void> {
    const item = await this.next();
    if (item.kind !== "close") this.problem(`expected close ${code}, got ${describeItem(item)}`);
    const got = closeCodeOf(item.payload);
    if (got !== code) this.problem(`expected close ${code}, got close ${got}`);
    this.checkReason(item.payload);
    const after = await this.next();
    if (after.kind !== "eof") this.problem(`expected TCP end after the close frame, got ${describeItem(after)}`);
    const peer = this.pair.peer;
    await peer.send([frame.close(code)]);
    peer.end();
    await this.settled(peer.closed, "the socket did not close after the failure");
    const info = await this.settled(this.pair.conn.closed, "conn.closed did not settle");
    if (info.wasClean) this.problem("conn.closed says wasClean after wsconn failed the connection");
    const { error } = await this.settled(this.pair.echo, "the echo loop did not stop");
    if (!(error instanceof CloseError) || closeStatus(error) !== code || error.remote) {
      this.problem(`the application saw ${String(error)} instead of a local CloseError ${code}`);
    }
  }

  /** closeByPeer: the peer closes; wsconn must echo the code and complete the close handshake. */
  private async closeByPeer(o: { code?: number; reason?: Buffer | string; alreadySent?: boolean; chop?: Chop }): Promise<void> {
    const peer = this.pair.peer;
    if (!o.alreadySent) await peer.send([frame.close(o.code, o.reason ?? "")], o.chop ?? "whole");
    const item = await this.next();
    if (item.kind !== "close") this.problem(`expected the close echo, got ${describeItem(item)}`);
    const got = closeCodeOf(item.payload);
    const want = o.code ?? 1005;
    if (got !== want && !(want === 1005 && got === 1000)) this.problem(`expected close echo ${want}, got ${got}`);
    if (this.role === "server") {
      // The server closes TCP first (https://www.rfc-editor.org/rfc/rfc6455#section-7.1.1).
      const after = await this.next();
      if (after.kind !== "eof") this.problem(`expected the server to end TCP after its close, got ${describeItem(after)}`);
      peer.end();
    } else {
      peer.end();
      const after = await this.next();
      if (after.kind !== "eof") this.problem(`expected the client to end TCP, got ${describeItem(after)}`);
    }
    await this.settled(peer.closed, "the socket did not close");
    const info = await this.settled(this.pair.conn.closed, "conn.closed did not settle");
    const reason = o.reason === undefined ? "" : Buffer.from(o.reason).toString("utf8");
    if (info.code !== want || info.reason !== reason || !info.wasClean) {
      this.problem(`conn.closed is ${JSON.stringify(info)}, expected code ${want}, reason ${JSON.stringify(reason)}, clean`);
    }
    const { error } = await this.settled(this.pair.echo, "the echo loop did not stop");
    // Iteration ends quietly on 1000/1001/1005; an echo write cut short by the close may still throw it.
    const quiet = want === 1000 || want === 1001 || want === 1005;
    if (!(quiet && error === undefined) && closeStatus(error) !== want) {
      this.problem(`the application saw ${String(error)} for a peer close ${want}`);
    }
  }

  private checkReason(payload: Buffer): void {
    if (payload.length > 2 && !Buffer.from(payload.subarray(2).toString("utf8")).equals(payload.subarray(2))) {
      this.problem("wsconn sent a close reason that is not UTF-8");
    }
  }

  private async settled<T>(promise: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const guard = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), this.c.timeoutMs ?? 3000)));
    const result = await Promise.race([promise, guard]);
    clearTimeout(timer);
    if (result === "timeout") this.problem(what);
    return result as T;
  }
}

function closeCodeOf(payload: Buffer): number {
  if (payload.length === 0) return 1005;
  if (payload.length === 1) return -1;
  return payload.readUInt16BE(0);
}

function describeExpect(e: Expect): string {
  return "message" in e ? `${e.message.type} message of ${e.message.data.length} bytes` : `pong of ${e.pong.length} bytes`;
}

function describeItem(item: Item): string {
  switch (item.kind) {
    case "message":
      return `${item.type} message of ${item.data.length} bytes`;
    case "ping":
    case "pong":
      return `${item.kind} of ${item.data.length} bytes`;
    case "close":
      return `close ${closeCodeOf(item.payload)}`;
    case "bad":
      return `bad output (${item.why})`;
    default:
      return item.kind;
  }
}

/** caseFilter keeps the cases whose id starts with one of the comma-separated prefixes (all when unset). */
export function caseFilter(spec: string | undefined): (c: Case) => boolean {
  const prefixes = (spec ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
  return (c) => prefixes.length === 0 || prefixes.some((p) => c.id.startsWith(p));
}
