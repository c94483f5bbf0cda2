/**
 * Failures in wire order: a protocol error in what the peer sent stops
 * parsing at once, but messages that were complete before the bad frame
 * still reach the application, and the replies it writes at once go out
 * before the close frame (what the Autobahn TestSuite expects of cases
 * 3.2–3.4, 4.1.3–4.1.5, 4.2.3–4.2.5 and 5.15). A frame after the bad one is
 * never parsed: a trailing ping gets no pong.
 *
 * Every case sends, in ONE TCP write, one or two valid messages, a bad frame
 * and a ping, and runs in both roles: a wsconn server (`accept`) with an echo
 * loop against a raw masking client, and a wsconn client (`dial`) with the
 * same echo loop against a raw server that sends unmasked frames.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-7.1.7
 */

import t from "tap";
import { CloseError, type Conn, dial, ErrorCode, MessageType } from "../../src/index.js";
import { rejection } from "../helpers/interop.js";
import { echoOutcome, startServer } from "../helpers/peers.js";
import { frame, Op, rawConnect, type RawFrame, type RawPeer, type ReceivedFrame, RSV1, RSV2, RSV3, startRawServer } from "../helpers/raw-peer.js";

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];
type Role = "server" | "client";

/** The read limit of every wsconn side here: small, so that case "read limit" stays small. */
const READ_LIMIT = 1024;

/** The payload of the ping sent after the bad frame: it must never come back as a pong. */
const TRAILING_PING = "trailing ping";

/** Wanted is one frame wsconn must send before its close frame. */
interface Wanted {
  opcode: number;
  payload: Buffer;
}

const text = (s: string | Buffer): Wanted => ({ opcode: Op.Text, payload: Buffer.from(s) });
const binary = (b: Buffer): Wanted => ({ opcode: Op.Binary, payload: b });
const pong = (s: string): Wanted => ({ opcode: Op.Pong, payload: Buffer.from(s) });

/** A valid prefix: the frames sent before the bad one, and what the echo loop must send back for them. */
interface Valid {
  name: string;
  frames: RawFrame[];
  echoes: Wanted[];
}

const BYTES = Buffer.from([0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff]);

const VALID = {
  none: { name: "nothing (a read is waiting)", frames: [], echoes: [] },
  text: { name: "a text message", frames: [frame.text("Hello, wire order")], echoes: [text("Hello, wire order")] },
  utf8: { name: "a text message of multi-byte UTF-8", frames: [frame.text("κόσμε 😀")], echoes: [text("κόσμε 😀")] },
  binary: { name: "a binary message", frames: [frame.binary(BYTES)], echoes: [binary(BYTES)] },
  fragmented: {
    name: "a text message in three fragments, a ping between them",
    frames: [frame.text("frag", { fin: false }), frame.ping("between"), frame.cont("men", { fin: false }), frame.cont("ted")],
    // The pong goes out as the ping is parsed, the echo once the message is whole.
    echoes: [pong("between"), text("fragmented")],
  },
  fragmentedBinary: {
    name: "a binary message in two fragments",
    frames: [frame.binary(BYTES.subarray(0, 2), { fin: false }), frame.cont(BYTES.subarray(2))],
    echoes: [binary(BYTES)],
  },
  emptyText: { name: "a zero-length text message", frames: [frame.text("")], echoes: [text("")] },
  emptyBinary: { name: "a zero-length binary message", frames: [frame.binary(Buffer.alloc(0))], echoes: [binary(Buffer.alloc(0))] },
  two: {
    name: "two messages, text then binary",
    frames: [frame.text("first"), frame.binary(BYTES)],
    echoes: [text("first"), binary(BYTES)],
  },
} satisfies Record<string, Valid>;

/** A bad frame (or frames) and how wsconn must fail the connection for it. */
interface Bad {
  name: string;
  frames: RawFrame[];
  code: number;
  errorCode: ErrorCode;
  /**
   * The read limit applies when a read takes a message (so that setReadLimit
   * works for messages already queued, as in nhooyr): while the echo loop is
   * busy with an earlier message the big one waits in the queue, parsing goes
   * on, and the trailing ping is answered before the 1009.
   */
  checkedWhenRead?: true;
}

const BAD = {
  rsv1: { name: "a text frame with RSV1 (no extension)", frames: [frame.text("x", { rsv: RSV1 })], code: 1002, errorCode: ErrorCode.UnexpectedRsv },
  rsv2: { name: "a text frame with RSV2", frames: [frame.text("Hello, world!", { rsv: RSV2 })], code: 1002, errorCode: ErrorCode.UnexpectedRsv },
  rsv3: { name: "a binary frame with RSV3", frames: [frame.binary(BYTES, { rsv: RSV3 })], code: 1002, errorCode: ErrorCode.UnexpectedRsv },
  rsvAll: { name: "a ping with all three reserved bits", frames: [frame.ping("p", { rsv: RSV1 | RSV2 | RSV3 })], code: 1002, errorCode: ErrorCode.UnexpectedRsv },
  opcode3: { name: "reserved data opcode 3", frames: [{ opcode: 3, payload: "x" }], code: 1002, errorCode: ErrorCode.InvalidOpcode },
  opcode11: { name: "reserved control opcode 11", frames: [{ opcode: 11, payload: "x" }], code: 1002, errorCode: ErrorCode.InvalidOpcode },
  orphanContinuation: {
    name: "a continuation without a message to continue",
    frames: [frame.cont("fragment3", { fin: false }), frame.text("fragment4")],
    code: 1002,
    errorCode: ErrorCode.UnexpectedContinuation,
  },
  nestedMessage: {
    name: "a new message inside a fragmented one",
    frames: [frame.text("par", { fin: false }), frame.text("tial")],
    code: 1002,
    errorCode: ErrorCode.ExpectedContinuation,
  },
  invalidUtf8: {
    name: "a text message that is not UTF-8",
    frames: [frame.text(Buffer.from([0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65, 0x64]))],
    code: 1007,
    errorCode: ErrorCode.InvalidUtf8,
  },
  invalidUtf8InContinuation: {
    name: "a fragmented text message whose continuation is not UTF-8",
    frames: [frame.text("ok so far ", { fin: false }), frame.cont(Buffer.from([0x61, 0xff, 0x62]))],
    code: 1007,
    errorCode: ErrorCode.InvalidUtf8,
  },
  truncatedUtf8: {
    name: "a text message that ends inside a UTF-8 sequence",
    frames: [frame.text(Buffer.from([0x61, 0xe2, 0x82]))],
    code: 1007,
    errorCode: ErrorCode.InvalidUtf8,
  },
  bigControl: {
    name: "a ping of 126 bytes",
    frames: [frame.ping(Buffer.alloc(126, 0x2a))],
    code: 1002,
    errorCode: ErrorCode.InvalidControlFrame,
  },
  fragmentedControl: {
    name: "a fragmented ping",
    frames: [frame.ping("half", { fin: false }), frame.cont("rest")],
    code: 1002,
    errorCode: ErrorCode.InvalidControlFrame,
  },
  readLimit: {
    name: `a binary message over the read limit (${READ_LIMIT + 1} bytes)`,
    frames: [frame.binary(Buffer.alloc(READ_LIMIT + 1, 0x42))],
    code: 1009,
    errorCode: ErrorCode.MessageTooBig,
    checkedWhenRead: true,
  },
  hugeFrame: {
    name: "a frame header declaring 2^60 bytes",
    frames: [{ opcode: Op.Binary, declaredLength: 2n ** 60n, lengthBits: 64 }],
    code: 1009,
    errorCode: ErrorCode.MessageTooBig,
  },
} satisfies Record<string, Bad>;

/** The table: each row is a valid prefix and a bad frame, sent with a trailing ping in one write. */
const CASES: Array<[Valid, Bad]> = [
  [VALID.none, BAD.rsv2],
  [VALID.text, BAD.rsv2], // Autobahn 3.2
  [VALID.text, BAD.rsv3],
  [VALID.utf8, BAD.rsv1],
  [VALID.binary, BAD.rsvAll],
  [VALID.text, BAD.opcode3], // 4.1.3
  [VALID.emptyText, BAD.opcode3],
  [VALID.binary, BAD.opcode11], // 4.2.3
  [VALID.emptyBinary, BAD.opcode11],
  [VALID.fragmented, BAD.orphanContinuation], // 5.15
  [VALID.text, BAD.nestedMessage],
  [VALID.fragmentedBinary, BAD.nestedMessage],
  [VALID.text, BAD.invalidUtf8],
  [VALID.two, BAD.invalidUtf8InContinuation],
  [VALID.emptyText, BAD.truncatedUtf8],
  [VALID.two, BAD.bigControl],
  [VALID.fragmented, BAD.fragmentedControl],
  [VALID.none, BAD.readLimit],
  [VALID.text, BAD.readLimit],
  [VALID.two, BAD.readLimit],
  [VALID.binary, BAD.hugeFrame],
];

// ---- the two roles ----

/** One connection under test: the raw peer, the wsconn Conn and, when it echoes, how its echo loop ended. */
interface Opened {
  peer: RawPeer;
  conn: Conn;
  /** Settles with what the echo loop threw (undefined if it ended quietly); undefined when not echoing. */
  echo: Promise<unknown> | undefined;
}


/**
 * open connects a raw peer to a wsconn Conn in `role`, starting the echo loop
 * (if `echo`) before the peer can send anything, and registers the teardown.
 */
async function open(t: TestContext, role: Role, echo: boolean): Promise<Opened> {
  if (role === "server") {
    let echoing: Promise<unknown> | undefined;
    const srv = await startServer({ readLimit: READ_LIMIT }, (conn) => {
      if (echo) echoing = echoOutcome(conn);
    });
    t.teardown(() => srv.close());
    const accepted = srv.nextConn();
    const peer = await rawConnect(srv.port);
    const conn = await accepted;
    t.teardown(() => {
      peer.destroy();
      conn.closeNow();
    });
    return { peer, conn, echo: echoing };
  }
  const raw = await startRawServer();
  t.teardown(() => raw.close());
  const next = raw.nextPeer();
  const conn = await dial(raw.url, { readLimit: READ_LIMIT });
  const { peer } = await next;
  t.teardown(() => {
    peer.destroy();
    conn.closeNow();
  });
  return { peer, conn, echo: echo ? echoOutcome(conn) : undefined };
}

/** What the raw peer received: every frame up to the end of the stream, and how the stream ended. */
interface Received {
  frames: ReceivedFrame[];
  end: "eof" | "timeout" | string;
}


const OPCODE_NAMES: Record<number, string> = { 0: "cont", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong" };

/** describe turns a frame into a line that t.same can compare and print: opcode, FIN, RSV and payload in hex. */
function describe(f: { opcode: number; payload: Buffer; fin?: boolean; rsv?: number }): string {
  const name = OPCODE_NAMES[f.opcode] ?? `opcode ${f.opcode}`;
  const flags = (f.fin === false ? " !fin" : "") + (f.rsv ? ` rsv=${f.rsv}` : "");
  return `${name}${flags} [${f.payload.length}] ${f.payload.toString("hex")}`;
}

function closeCode(f: ReceivedFrame | undefined): number | undefined {
  if (f === undefined || f.opcode !== Op.Close) return undefined;
  return f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
}

/**
 * checkFailure checks what wsconn sent after the case's single write: the
 * frames wanted, byte for byte, then one close frame with `code`, then the
 * end of TCP; no pong for the trailing ping; frames masked as the role
 * requires.
 */
function checkFailure(t: TestContext, role: Role, got: Received, wanted: Wanted[], code: number, pingAnswered = false): void {
  t.equal(got.end, "eof", "wsconn ended TCP after its close frame");
  t.ok(
    got.frames.every((f) => f.masked === (role === "client")),
    role === "client" ? "every frame from the client is masked" : "no frame from the server is masked",
  );
  const closeAt = got.frames.findIndex((f) => f.opcode === Op.Close);
  t.not(closeAt, -1, "a close frame was sent");
  t.same(
    got.frames.slice(0, closeAt === -1 ? undefined : closeAt).map(describe),
    wanted.map(describe),
    "before the close frame: the echoes of the valid messages (and the pongs sent between their frames), byte-exact, in order",
  );
  t.equal(closeCode(got.frames[closeAt]), code, `the close frame carries ${code}`);
  t.equal(got.frames.length - closeAt - 1, 0, "nothing after the close frame");
  if (pingAnswered) return;
  t.notOk(
    got.frames.some((f) => f.opcode === Op.Pong && f.payload.equals(Buffer.from(TRAILING_PING))),
    "the ping after the bad frame was not answered",
  );
}

/** finishClose has the raw peer answer the close and end TCP, then checks that the Conn's `closed` settles. */
async function finishClose(t: TestContext, opened: Opened, code: number): Promise<void> {
  const { peer, conn } = opened;
  await peer.send([frame.close(code)]);
  peer.end();
  await peer.closed;
  const info = await conn.closed;
  t.match(info, { wasClean: false }, `conn.closed settled (${JSON.stringify(info)}): wsconn failed the connection, not a clean close`);
}

for (const role of ["server", "client"] as Role[]) {
  t.test(`wsconn ${role}: valid messages, then a bad frame and a ping in the same write`, async (t) => {
    for (const [valid, bad] of CASES) {
      await t.test(`${valid.name}, then ${bad.name}`, async (t) => {
        const opened = await open(t, role, true);
        const { peer } = opened;
        await peer.send([...valid.frames, ...bad.frames, frame.ping(TRAILING_PING)], "whole");
        // A message checked when read, behind one being echoed: the ping is parsed (and answered) first.
        const queued = bad.checkedWhenRead === true && valid.frames.length > 0;
        const wanted = queued ? [pong(TRAILING_PING), ...valid.echoes] : valid.echoes;
        checkFailure(t, role, await peer.receiveAll(), wanted, bad.code, queued);
        await finishClose(t, opened, bad.code);
        const err = await opened.echo;
        t.type(err, CloseError, "the echo loop ended with a CloseError");
        t.match(err, { code: bad.code, remote: false, errorCode: bad.errorCode }, `a local ${bad.code}, ${bad.errorCode}`);
      });
    }
  });

  t.test(`wsconn ${role}: a bad frame while nothing reads`, async (t) => {
    const opened = await open(t, role, false);
    const { peer, conn } = opened;
    const message = Buffer.from("nobody is reading yet");
    await peer.send([frame.text(message), frame.text("Hello, world!", { rsv: RSV2 }), frame.ping(TRAILING_PING)], "whole");
    // Nothing reads: the failure must not wait for a read to take it.
    checkFailure(t, role, await peer.receiveAll(), [], 1002);
    const m = await conn.read();
    t.equal(m.type, MessageType.Text, "the message before the bad frame is still readable");
    t.ok(m.data.equals(message), "byte-exact");
    const err = await rejection(conn.read());
    t.type(err, CloseError, "the next read rejects with a CloseError");
    t.match(err, { code: 1002, remote: false, errorCode: ErrorCode.UnexpectedRsv });
    await finishClose(t, opened, 1002);
  });
}
