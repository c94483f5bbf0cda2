/**
 * Conformance, compression family (the intent of Autobahn 12.* and 13.*):
 * echo round trips of many message sizes over permessage-deflate, for every
 * combination of server and client window bits 9..15, with and without
 * context takeover either way, in both wsconn modes and both roles.
 *
 * The raw peer compresses and decompresses with its own zlib streams
 * (test/helpers/deflate-peer.ts). It inflates what wsconn sends with exactly
 * the window wsconn promised and, where wsconn agreed not to take context
 * over, with a fresh inflater per message: a wider window or a reference
 * into an earlier message breaks the inflate, so the case fails. Echoes must
 * be byte-exact; RSV1 may only be on the first frame; messages under the
 * threshold must arrive uncompressed.
 */

import { deflateRawSync } from "node:zlib";
import t from "tap";
import { type CompressionMode, type Conn, dial } from "../../src/index.js";
import { PeerDeflater, PeerInflater } from "../helpers/deflate-peer.js";
import { rng, startWsconnServer } from "../helpers/interop.js";
import { acceptFor, frame, Op, rawConnect, type RawFrame, type RawPeer, startRawServer } from "../helpers/raw-peer.js";
import { LARGE_READ_LIMIT, runEcho } from "./peer.js";

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];

/** Autobahn 12.* sizes, with the empty message added. */
const SIZES = [0, 16, 64, 256, 1024, 4096, 16384, 65536, 131072];
const ROUNDS = 2;
const MODES: CompressionMode[] = ["context-takeover", "no-context-takeover"];

/** Combo is one negotiation: window bits and context takeover each way. */
interface Combo {
  serverBits: number;
  clientBits: number;
  serverNoContext: boolean;
  clientNoContext: boolean;
}

/** combos returns every pair of window bits 9..15, cycling through the four context settings. */
function combos(): Combo[] {
  const list: Combo[] = [];
  let i = 0;
  for (let serverBits = 9; serverBits <= 15; serverBits++) {
    for (let clientBits = 9; clientBits <= 15; clientBits++) {
      list.push({ serverBits, clientBits, serverNoContext: (i & 1) === 1, clientNoContext: (i & 2) === 2 });
      i++;
    }
  }
  return list;
}

function describe(c: Combo): string {
  return `s${c.serverBits}${c.serverNoContext ? "/nct" : ""} c${c.clientBits}${c.clientNoContext ? "/nct" : ""}`;
}

const payloads = new Map<string, { type: "text" | "binary"; data: Buffer }>();

/** payload returns message `i` of `size` bytes, built once: text of words (compressible) or binary. */
function payload(size: number, i: number): { type: "text" | "binary"; data: Buffer } {
  const key = `${size}:${i}`;
  let p = payloads.get(key);
  if (p === undefined) payloads.set(key, (p = buildPayload(size, i)));
  return p;
}

function buildPayload(size: number, i: number): { type: "text" | "binary"; data: Buffer } {
  const next = rng(size * 31 + i);
  if (i % 2 === 1) {
    const data = Buffer.allocUnsafe(size);
    for (let k = 0; k < size; k++) data[k] = next() < 0.7 ? k & 0x3f : Math.floor(next() * 256);
    return { type: "binary", data };
  }
  const words = ["permessage", "deflate", "window", "context", "takeover", "échange", "données", "✓", "🚀", "frame"];
  const parts: string[] = [];
  for (let length = 0; length < size; ) {
    const word = words[Math.floor(next() * words.length)]! + " ";
    parts.push(word);
    length += Buffer.byteLength(word);
  }
  let data = Buffer.from(parts.join(""));
  // Cut on a character boundary, then pad with ASCII to the exact size.
  let end = size;
  while (end > 0 && end < data.length && (data[end]! & 0xc0) === 0x80) end--;
  data = Buffer.concat([data.subarray(0, end), Buffer.alloc(size - end, 0x2e)]);
  return { type: "text", data };
}

/** Side is one end of the raw peer's compression. */
interface PeerCodec {
  deflater: PeerDeflater;
  inflater: PeerInflater;
  /** Messages shorter than this must reach the peer uncompressed. */
  threshold: number;
  /** wsconn cannot compress at all (window bits 8). */
  plainOnly: boolean;
}

/**
 * playEcho sends every message (compressed by the peer when it is at least
 * 32 B, in 1 or 3 frames with a ping between, delivered whole, frame by
 * frame or in 7-byte chunks) and checks the echo.
 */
async function playEcho(t: TestContext, peer: RawPeer, codec: PeerCodec, label: string): Promise<number> {
  let problems = 0;
  const fail = (why: string): void => {
    problems++;
    t.fail(`${label}: ${why}`);
  };
  let i = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (const size of SIZES) {
      const message = payload(size, i);
      const opcode = message.type === "text" ? Op.Text : Op.Binary;
      const compress = size >= 32;
      const body = compress ? await codec.deflater.compress(message.data) : message.data;
      // Every fourth message arrives in tiny chunks (headers split too) or frame by frame.
      const chop = i % 4 !== 0 ? "whole" : size <= 1024 ? 7 : "frames";
      await peer.send(framesOf(opcode, body, compress, i % 3 === 0), chop);
      const echo = await readMessage(peer);
      if (typeof echo === "string") {
        fail(`message ${i} (${size} B): ${echo}`);
        return problems;
      }
      if (echo.opcode !== opcode) fail(`message ${i}: opcode ${echo.opcode}`);
      const shouldCompress = !codec.plainOnly && size >= codec.threshold;
      if (echo.compressed !== shouldCompress) fail(`message ${i} (${size} B): compressed=${echo.compressed}, expected ${shouldCompress}`);
      let data: Buffer;
      try {
        data = echo.compressed ? await codec.inflater.decompress(echo.payload) : echo.payload;
      } catch (err) {
        fail(`message ${i} (${size} B) does not inflate within the agreed window/context: ${(err as Error).message}`);
        return problems;
      }
      if (!data.equals(message.data)) fail(`message ${i} (${size} B): echo differs`);
      i++;
    }
  }
  return problems;
}

function framesOf(opcode: number, body: Buffer, compressed: boolean, fragment: boolean): RawFrame[] {
  const rsv = compressed ? 4 : 0;
  if (!fragment || body.length < 3) return [{ opcode, payload: body, rsv }];
  const a = Math.floor(body.length / 3);
  const b = Math.floor((2 * body.length) / 3);
  return [
    { opcode, payload: body.subarray(0, a), rsv, fin: false },
    frame.ping("between"),
    frame.cont(body.subarray(a, b), { fin: false }),
    frame.cont(body.subarray(b)),
  ];
}

/** readMessage assembles the next data message wsconn sends, checking RSV1 placement. */
async function readMessage(peer: RawPeer): Promise<{ opcode: number; compressed: boolean; payload: Buffer } | string> {
  const parts: Buffer[] = [];
  let first: { opcode: number; compressed: boolean } | undefined;
  for (;;) {
    const f = await peer.nextFrame();
    if (f === null || f === "timeout") return `no echo (${f === null ? "connection ended" : "timeout"})`;
    if (f.opcode === Op.Pong) continue;
    if (f.opcode === Op.Close) return `closed with ${f.payload.length >= 2 ? f.payload.readUInt16BE(0) : "no code"}: ${f.payload.subarray(2).toString()}`;
    if (first === undefined) {
      if (f.opcode === Op.Continuation) return "continuation without a start";
      if ((f.rsv & 3) !== 0) return `RSV2/RSV3 set (${f.rsv})`;
      first = { opcode: f.opcode, compressed: f.rsv === 4 };
    } else if (f.rsv !== 0) {
      return "RSV1 on a continuation frame";
    }
    parts.push(f.payload);
    if (f.fin) return { ...first, payload: Buffer.concat(parts) };
  }
}

async function closeBoth(peer: RawPeer, conn: Conn, echo: Promise<unknown>): Promise<number | undefined> {
  await peer.send([frame.close(1000)]);
  let code: number | undefined;
  for (;;) {
    const f = await peer.nextFrame();
    if (f === null || f === "timeout") break;
    if (f.opcode === Op.Close) {
      code = f.payload.readUInt16BE(0);
      break;
    }
  }
  await echo;
  peer.destroy();
  await conn.closed;
  return code;
}

function offerOf(c: Combo): string {
  return (
    "permessage-deflate" +
    (c.serverNoContext ? "; server_no_context_takeover" : "") +
    (c.clientNoContext ? "; client_no_context_takeover" : "") +
    `; server_max_window_bits=${c.serverBits}; client_max_window_bits=${c.clientBits}`
  );
}

t.test("wsconn as server: every window-bits pair, both context settings, both modes", async (t) => {
  for (const mode of MODES) {
    const srv = await startWsconnServer({ compression: mode, readLimit: LARGE_READ_LIMIT });
    let failed = 0;
    for (const c of combos()) {
      const peer = await rawConnect(srv.port, { headers: [`Sec-WebSocket-Extensions: ${offerOf(c)}`] });
      const { conn } = await srv.next();
      const echo = runEcho(conn);
      const serverNoContext = c.serverNoContext || mode === "no-context-takeover";
      const clientNoContext = c.clientNoContext || mode === "no-context-takeover";
      const expected =
        "permessage-deflate" +
        (serverNoContext ? "; server_no_context_takeover" : "") +
        (clientNoContext ? "; client_no_context_takeover" : "") +
        `; server_max_window_bits=${c.serverBits}; client_max_window_bits=${c.clientBits}`;
      const label = `${mode} ${describe(c)}`;
      if (conn.extensions !== expected) {
        failed++;
        t.equal(conn.extensions, expected, `${label}: answer`);
      }
      const codec: PeerCodec = {
        deflater: new PeerDeflater(c.clientBits, !clientNoContext),
        inflater: new PeerInflater(c.serverBits, !serverNoContext),
        threshold: serverNoContext ? 512 : 128,
        plainOnly: false,
      };
      failed += await playEcho(t, peer, codec, label);
      codec.deflater.close();
      codec.inflater.close();
      const code = await closeBoth(peer, conn, echo);
      if (code !== 1000) {
        failed++;
        t.equal(code, 1000, `${label}: close handshake`);
      }
    }
    t.equal(failed, 0, `${mode}: ${combos().length} negotiations × ${SIZES.length * ROUNDS} messages echoed byte-exact within the agreed windows`);
    await srv.close();
  }
});

t.test("wsconn as client: every window-bits pair the server may answer, both modes", async (t) => {
  const raw = await startRawServer();
  t.teardown(() => raw.close());
  for (const mode of MODES) {
    let failed = 0;
    for (const c of combos()) {
      // The server answers what it likes among what the client allows (§7.1).
      const answer = offerOf(c);
      const next = raw.nextPeer({
        response: (req) => {
          const key = req.headers.get("sec-websocket-key")?.[0] ?? "";
          return (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            `Sec-WebSocket-Accept: ${acceptFor(key)}\r\nSec-WebSocket-Extensions: ${answer}\r\n\r\n`
          );
        },
      });
      const conn = await dial(raw.url, { compression: mode, readLimit: LARGE_READ_LIMIT });
      const { peer } = await next;
      const echo = runEcho(conn);
      const label = `${mode} ${describe(c)}`;
      if (conn.extensions !== answer) {
        failed++;
        t.equal(conn.extensions, answer, `${label}: extensions`);
      }
      // The client keeps no context in no-context-takeover mode whatever the answer says.
      const clientNoContext = c.clientNoContext || mode === "no-context-takeover";
      const codec: PeerCodec = {
        deflater: new PeerDeflater(c.serverBits, !c.serverNoContext),
        inflater: new PeerInflater(c.clientBits, !clientNoContext),
        threshold: clientNoContext ? 512 : 128,
        plainOnly: false,
      };
      failed += await playEcho(t, peer, codec, label);
      codec.deflater.close();
      codec.inflater.close();
      await peer.send([frame.close(1000)]);
      // The client echoes the close and waits for the server to close TCP.
      for (;;) {
        const f = await peer.nextFrame();
        if (f === null || f === "timeout" || f.opcode === Op.Close) break;
      }
      peer.destroy();
      await echo;
      await conn.closed;
    }
    t.equal(failed, 0, `${mode}: ${combos().length} answers × ${SIZES.length * ROUNDS} messages echoed byte-exact within the agreed windows`);
  }
});

t.test("window bits 8: wsconn agrees, reads compressed messages and sends plain ones", async (t) => {
  const srv = await startWsconnServer({ compression: "context-takeover", readLimit: LARGE_READ_LIMIT });
  t.teardown(() => srv.close());
  const peer = await rawConnect(srv.port, { headers: ["Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8; client_max_window_bits=9"] });
  const { conn } = await srv.next();
  t.equal(conn.extensions, "permessage-deflate; server_max_window_bits=8; client_max_window_bits=9");
  const echo = runEcho(conn);
  const codec: PeerCodec = { deflater: new PeerDeflater(9, true), inflater: new PeerInflater(15, true), threshold: 0, plainOnly: true };
  t.equal(await playEcho(t, peer, codec, "s8"), 0, "every echo byte-exact and uncompressed");
  codec.deflater.close();
  codec.inflater.close();
  t.equal(await closeBoth(peer, conn, echo), 1000);
});

t.test("context takeover across uncompressed messages (Autobahn 12.x mixes both)", async (t) => {
  // Small messages go out plain, large ones compressed: the peer's window must
  // hold only what went through deflate, on both sides.
  const srv = await startWsconnServer({ compression: "context-takeover", readLimit: LARGE_READ_LIMIT });
  t.teardown(() => srv.close());
  const peer = await rawConnect(srv.port, { headers: ["Sec-WebSocket-Extensions: permessage-deflate"] });
  const { conn } = await srv.next();
  const echo = runEcho(conn);
  const deflater = new PeerDeflater(15, true);
  const inflater = new PeerInflater(15, true);
  const text = Buffer.from("the same sentence again and again, ".repeat(20));
  let sizes = 0;
  for (let i = 0; i < 40; i++) {
    const data = i % 3 === 0 ? text.subarray(0, 20) : text;
    const compress = i % 2 === 0;
    await peer.send([{ opcode: Op.Text, payload: compress ? await deflater.compress(data) : data, rsv: compress ? 4 : 0 }]);
    const got = await readMessage(peer);
    if (typeof got === "string") throw new Error(got);
    const back = got.compressed ? await inflater.decompress(got.payload) : got.payload;
    t.ok(back.equals(data), `message ${i}`);
    if (got.compressed) sizes += got.payload.length;
  }
  t.ok(sizes < 40 * text.length * 0.1, `later compressed echoes refer to earlier ones: ${sizes} B in all`);
  deflater.close();
  inflater.close();
  t.equal(await closeBoth(peer, conn, echo), 1000);
});

t.test("messages ending their DEFLATE stream with BFINAL (RFC 7692 §7.2.3.4)", async (t) => {
  // A peer without a sync flush ends every message's stream with a final
  // block (plus the 0x00 that lets the receiver append 00 00 ff ff). The next
  // message then starts a new stream, which must not be lost or refused.
  const finalBlock = (text: string): Buffer => Buffer.concat([deflateRawSync(Buffer.from(text)), Buffer.from([0x00])]);
  for (const mode of MODES) {
    const srv = await startWsconnServer({ compression: mode, readLimit: LARGE_READ_LIMIT });
    const peer = await rawConnect(srv.port, { headers: ["Sec-WebSocket-Extensions: permessage-deflate"] });
    const { conn } = await srv.next();
    const texts = ["Hello", "Hello again", "x".repeat(5000), "last"];
    for (const text of texts) await peer.send([{ opcode: Op.Text, payload: finalBlock(text), rsv: 4 }]);
    for (const text of texts) t.equal((await conn.read()).text(), text, `${mode}: ${text.slice(0, 12)}`);
    // And a sync-flushed message after them.
    const deflater = new PeerDeflater(15, true);
    await peer.send([{ opcode: Op.Text, payload: await deflater.compress(Buffer.from("flushed")), rsv: 4 }]);
    t.equal((await conn.read()).text(), "flushed", `${mode}: sync-flushed message after BFINAL ones`);
    deflater.close();
    peer.destroy();
    conn.closeNow();
    await srv.close();
  }
});
