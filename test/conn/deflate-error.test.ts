/**
 * Invalid compressed data (https://www.rfc-editor.org/rfc/rfc7692#section-6.2):
 * a frame with RSV1 whose payload is not DEFLATE data fails the connection
 * with 1007 (WS_ERR_INVALID_COMPRESSED_DATA), in wire order, and the close
 * handshake then completes as fast as the peer allows. Before the fix the
 * socket stayed paused behind the failed inflate, the peer's FIN was never
 * read, and `closed` settled only when the close timeout dropped the socket;
 * here the server has `closeTimeout: Infinity`, so only the fixed path can
 * settle it (a regression hangs until the subtest's timeout fails it).
 *
 * The raw client negotiates permessage-deflate by hand and compresses with
 * node:zlib directly (deflate-peer.ts), never with src/deflate.ts.
 */

import { performance } from "node:perf_hooks";
import t from "tap";
import { CloseError, type CompressionMode, type Conn, ErrorCode } from "../../src/index.js";
import { deflateMessage, inflateMessage } from "../helpers/deflate-peer.js";
import { rng } from "../helpers/interop.js";
import { echoOutcome, startServer } from "../helpers/peers.js";
import { frame, Op, rawConnect, type RawFrame, type RawPeer, type ReceivedFrame, RSV1 } from "../helpers/raw-peer.js";

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];

/** The payload of a ping sent after the bad frame, where it must never be answered. */
const TRAILING_PING = "trailing ping";

/**
 * Not DEFLATE data wherever it lands: as a block header, 0xff is a final
 * block of the reserved type 3; as the LEN/NLEN of a stored block (after a
 * message cut before its 00 00 ff ff), ffff/ffff do not complement each other.
 */
const GARBAGE = Buffer.alloc(16, 0xff);

/** A short message, echoed uncompressed (below both default thresholds). */
const SHORT = Buffer.from("short and valid");
/**
 * A long message, echoed compressed in both modes: 128 KiB of base64 of
 * seeded noise, which deflate barely shrinks, so that compressing the echo
 * takes a few milliseconds, longer than finding the garbage behind it.
 */
const LONG = Buffer.from(noise(96 * 1024, 7).toString("base64"));

/** Room for LONG. */
const READ_LIMIT = 1024 * 1024;

/** A message whose first fragment is valid compressed data. */
const FIRST_PART = deflateMessage(Buffer.from("the first fragment of a compressed message, "));

/** noise returns `n` bytes from a seeded PRNG. */
function noise(n: number, seed: number): Buffer {
  const next = rng(seed);
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(next() * 256);
  return b;
}

/** A message (its original bytes) that wsconn must echo before the close frame. */
interface Echo {
  opcode: number;
  data: Buffer;
}

interface Case {
  name: string;
  /** Sent in one TCP write. */
  frames: RawFrame[];
  /** Echoes due before the close frame. */
  echoes: Echo[];
}

const CASES: Case[] = [
  {
    name: "one text frame with RSV1 and garbage, then a ping",
    frames: [frame.text(GARBAGE, { rsv: RSV1 }), frame.ping(TRAILING_PING)],
    echoes: [],
  },
  {
    name: "one binary frame with RSV1 and garbage, then a ping",
    frames: [frame.binary(GARBAGE, { rsv: RSV1 }), frame.ping(TRAILING_PING)],
    echoes: [],
  },
  {
    // No frame after the garbage: the message is still open, the parser waits
    // for its next frame (a ping here would be parsed, and answered, before
    // zlib had even seen the garbage).
    name: "garbage in the middle of a fragmented compressed message",
    frames: [frame.text(FIRST_PART, { rsv: RSV1, fin: false }), frame.cont(GARBAGE, { fin: false })],
    echoes: [],
  },
  {
    // The last frame suspends the parser until inflation ends: the ping behind it must stay unparsed.
    name: "garbage in the last frame of a fragmented compressed message, then a ping",
    frames: [frame.text(FIRST_PART, { rsv: RSV1, fin: false }), frame.cont(GARBAGE), frame.ping(TRAILING_PING)],
    echoes: [],
  },
  {
    name: "a short valid compressed message, then a garbage one and a ping",
    frames: [frame.text(deflateMessage(SHORT), { rsv: RSV1 }), frame.binary(GARBAGE, { rsv: RSV1 }), frame.ping(TRAILING_PING)],
    echoes: [{ opcode: Op.Text, data: SHORT }],
  },
  {
    name: "a long valid compressed message (echoed compressed), then a garbage one and a ping",
    frames: [frame.text(deflateMessage(LONG), { rsv: RSV1 }), frame.binary(GARBAGE, { rsv: RSV1 }), frame.ping(TRAILING_PING)],
    echoes: [{ opcode: Op.Text, data: LONG }],
  },
];


/** open starts a wsconn server in `mode` with an echo loop and no close timeout, and connects a raw deflate client. */
async function open(t: TestContext, mode: CompressionMode): Promise<{ peer: RawPeer; conn: Conn; echo: Promise<unknown> }> {
  let echo: Promise<unknown> | undefined;
  const srv = await startServer({ compression: mode, closeTimeout: Infinity, readLimit: READ_LIMIT }, (conn) => {
    echo = echoOutcome(conn);
  });
  t.teardown(() => srv.close());
  const accepted = srv.nextConn();
  const peer = await rawConnect(srv.port, { headers: ["Sec-WebSocket-Extensions: permessage-deflate"] });
  const conn = await accepted;
  t.teardown(() => {
    peer.destroy();
    conn.closeNow();
  });
  t.match(conn.extensions, mode === "no-context-takeover" ? /^permessage-deflate;.*client_no_context_takeover/ : /^permessage-deflate/, `negotiated: ${conn.extensions}`);
  return { peer, conn, echo: echo! };
}


/** original returns what a frame from the server carried: inflated when RSV1 says it is compressed. */
function original(f: ReceivedFrame): Buffer {
  // Each echo here is the server's first message: a fresh DEFLATE stream in either mode.
  return (f.rsv & RSV1) !== 0 ? inflateMessage(f.payload) : f.payload;
}

function describe(opcode: number, data: Buffer): string {
  const name = { 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong" }[opcode] ?? `opcode ${opcode}`;
  return `${name} [${data.length}] ${data.subarray(0, 40).toString("hex")}${data.length > 40 ? "…" : ""}`;
}

for (const mode of ["no-context-takeover", "context-takeover"] as CompressionMode[]) {
  t.test(`${mode}: invalid compressed data fails with 1007, and the close completes without a close timeout`, async (t) => {
    for (const c of CASES) {
      await t.test(c.name, { timeout: 5_000 }, async (t) => {
        const { peer, conn, echo } = await open(t, mode);
        await peer.send(c.frames, "whole");
        const got = await peer.receiveAll();
        t.equal(got.end, "eof", "the server ended TCP after its close frame");
        const closeAt = got.frames.findIndex((f) => f.opcode === Op.Close);
        t.not(closeAt, -1, "a close frame was sent");
        const before = got.frames.slice(0, closeAt === -1 ? undefined : closeAt);
        t.same(
          before.map((f) => describe(f.opcode, original(f))),
          c.echoes.map((e) => describe(e.opcode, e.data)),
          "before the close frame: exactly the echoes of the valid messages",
        );
        t.ok(
          before.length === c.echoes.length && before.every((f, i) => original(f).equals(c.echoes[i]!.data)),
          "the echoes are byte-exact",
        );
        const close = got.frames[closeAt];
        t.equal(close?.payload.readUInt16BE(0), 1007, "the close frame carries 1007");
        t.equal(got.frames.length - closeAt - 1, 0, "nothing after the close frame");
        t.notOk(
          got.frames.some((f) => f.opcode === Op.Pong),
          "the ping behind the bad message was not answered",
        );
        // The peer answers the close at once and ends its side.
        const start = performance.now();
        await peer.send([frame.close(1007)]);
        peer.end();
        const info = await conn.closed;
        const ms = performance.now() - start;
        t.pass(`closed in ${ms.toFixed(1)} ms`);
        t.match(info, { wasClean: false }, `conn.closed: ${JSON.stringify(info)}`);
        await peer.closed;
        const err = await echo;
        t.type(err, CloseError, "the echo loop ended with a CloseError");
        t.match(err, { code: 1007, remote: false, errorCode: ErrorCode.InvalidCompressedData }, "a local 1007, WS_ERR_INVALID_COMPRESSED_DATA");
      });
    }
  });
}

for (const mode of ["no-context-takeover", "context-takeover"] as CompressionMode[]) {
  t.test(`${mode}: a reply being compressed when the peer's close arrives goes out before the close echo`, { timeout: 5_000 }, async (t) => {
    const { peer, conn, echo } = await open(t, mode);
    // LONG takes zlib a few milliseconds: the close answer must wait for it, not overtake it.
    await peer.send([frame.text(deflateMessage(LONG), { rsv: RSV1 }), frame.close(1000)], "whole");
    const got = await peer.receiveAll();
    t.same(
      got.frames.map((f) => describe(f.opcode, f.opcode === Op.Close ? f.payload : original(f))),
      [describe(Op.Text, LONG), describe(Op.Close, Buffer.from([0x03, 0xe8]))],
      "the echo, then the close echo with 1000, then nothing",
    );
    t.equal(got.end, "eof", "the server ended TCP after its close echo");
    peer.end();
    t.match(await conn.closed, { code: 1000, wasClean: true }, "a clean close: close frames went both ways");
    // The echo loop ends quietly, or its last write, still waiting for the socket to drain
    // (128 KiB is past its high-water mark), rejects with the peer's 1000.
    const ended = await echo;
    t.ok(ended === undefined || (ended instanceof CloseError && ended.code === 1000 && ended.remote), `the echo loop ended with no error of its own (${String(ended)})`);
  });
}
