/**
 * CompressionSettings end to end ({ mode, maxWindowBits, memLevel, level })
 * and the per-message `compress` option, checked by real peers (`ws`,
 * undici) and on the raw wire:
 * - maxWindowBits bounds both directions: a wsconn server at 10 bits with
 *   ws, undici and a raw client (whose 10-bit inflater fails on any
 *   reference further back), a wsconn client at 9 bits against a ws server
 *   (its frames recorded by a relay and inflated with a 9-bit window), and
 *   the handshake failures a client owes a server that ignores the bound;
 * - 8 bits: read compressed, send plain;
 * - level and memLevel reach zlib;
 * - write / writePrepared / PreparedMessage / Hub with `compress: false`,
 *   and the older positional signal form.
 */

import * as net from "node:net";
import * as zlib from "node:zlib";
import t from "tap";
import type { WebSocket } from "ws";
import { type Conn, dial, HandshakeError, Hub, MemoryBus, MessageType, PreparedMessage } from "../../src/index.js";
import { frame, PeerDeflater, rawUpgrade, type RawUpgrade, startAnsweringServer } from "../helpers/deflate-peer.js";
import { type Accepted, type FrameReader, OP, openUndici, type RawFrame, rejection, rng, startWsconnServer, startWsServer, type WsconnServer, wsClient, wsMessages } from "../helpers/interop.js";
import { FrameReader as ByteFrameReader, listenLocal, type ReceivedFrame } from "../helpers/raw-peer.js";

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];

const MiB = 1024 * 1024;
/** The echo sizes: empty, under the threshold, one-call, thread-pool, and several output chunks. */
const SIZES = [0, 100, 5_000, 40_000, 300_000];
/** The same messages again each round: with context takeover the later ones could refer to the earlier (beyond a small window). */
const ROUNDS = 3;
const SYNC = zlib.constants.Z_SYNC_FLUSH;
/** The bytes a sync flush ends with, removed from each message (RFC 7692 §7.2.1). */
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

// ---- payloads ----

const WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma"];
const texts = new Map<string, Buffer>();

/** jsonText returns `size` bytes of compressible JSON-ish ASCII text, the same for the same seed. */
function jsonText(size: number, seed: number): Buffer {
  const key = `${size}:${seed}`;
  const cached = texts.get(key);
  if (cached !== undefined) return cached;
  const next = rng(size * 7919 + seed);
  const pick = (): string => WORDS[Math.floor(next() * WORDS.length)]!;
  const parts: string[] = [];
  for (let length = 0, i = 0; length < size; i++) {
    const line = JSON.stringify({ id: seed * 100_000 + i, name: pick(), score: Math.floor(next() * 10_000), tags: [pick(), pick()], ok: next() < 0.5 }) + "\n";
    parts.push(line);
    length += line.length;
  }
  const data = Buffer.from(parts.join("").slice(0, size), "latin1");
  texts.set(key, data);
  return data;
}

/** The messages of an echo run, in order. */
function sequence(seed = 1): Buffer[] {
  const out: Buffer[] = [];
  for (let round = 0; round < ROUNDS; round++) for (const size of SIZES) out.push(jsonText(size, seed));
  return out;
}

// ---- peeking at a Conn (private fields, for these tests only; as in compression-limits.test.ts) ----

/** windowBytes is what a Conn keeps of its context takeover windows, each way. */
function windowBytes(conn: Conn): { inbound: number; outbound: number } {
  const c = conn as unknown as {
    inbound: { inflater?: { windowSize: number } };
    writes: { compression?: { deflater: { windowSize: number } } };
  };
  return { inbound: c.inbound.inflater?.windowSize ?? 0, outbound: c.writes.compression?.deflater.windowSize ?? 0 };
}

function bytesRead(conn: Conn): number {
  return (conn as unknown as { socket: net.Socket }).socket.bytesRead;
}

function wsBytesRead(ws: WebSocket): number {
  return (ws as unknown as { _socket: net.Socket })._socket.bytesRead;
}

// ---- a wsconn echo server that records the largest windows it kept ----

interface Windows {
  inbound: number;
  outbound: number;
}

const peaks = new WeakMap<Conn, Windows>();

function note(conn: Conn, peak: Windows): void {
  const w = windowBytes(conn);
  peak.inbound = Math.max(peak.inbound, w.inbound);
  peak.outbound = Math.max(peak.outbound, w.outbound);
}

function echo({ conn }: Accepted): void {
  const peak = { inbound: 0, outbound: 0 };
  peaks.set(conn, peak);
  void (async () => {
    try {
      for await (const msg of conn) {
        note(conn, peak);
        await conn.write(msg.type, msg.data);
        note(conn, peak);
      }
    } catch {
      // the peer checks what it received
    }
  })();
}

async function echoServer(t: TestContext, options: Parameters<typeof startWsconnServer>[0]): Promise<WsconnServer> {
  const srv = await startWsconnServer({ readLimit: MiB, ...options }, echo);
  t.teardown(() => srv.close());
  return srv;
}

// ---- raw wire helpers ----

/** nextData returns the next data frame a raw peer receives: a whole message in one frame. */
async function nextData(frames: FrameReader): Promise<RawFrame> {
  const f = await frames.nextNonControl();
  if (f.opcode === OP.close) throw new Error(`closed with ${f.payload.length >= 2 ? f.payload.readUInt16BE(0) : "no code"}: ${f.payload.subarray(2).toString()}`);
  if (!f.fin || f.opcode === OP.cont) throw new Error("expected a message in one frame");
  return f;
}

/** compressed tells whether RSV1 is set (rsv 4) and no other reserved bit. */
function compressed(f: RawFrame): boolean {
  if ((f.rsv & 3) !== 0) throw new Error(`RSV2/RSV3 set: ${f.rsv}`);
  return f.rsv === 4;
}

/**
 * ContextInflater decompresses one direction's messages holding the sender
 * to `windowBits`, synchronously (a zlib error throws at once instead of
 * leaving a stream hanging). The window is kept here, as the last
 * 2^windowBits bytes of the messages decompressed so far (with context
 * takeover), and handed to zlib as the preset dictionary. Output comes in
 * 64-byte chunks: zlib checks a distance against its window only when it
 * reaches past the output buffer of the current call, so with the default
 * 16 KiB chunks a sender could refer up to 16 KiB back unnoticed.
 */
class ContextInflater {
  private window = Buffer.alloc(0);

  constructor(
    private readonly windowBits = 15,
    private readonly keepContext = true,
  ) {}

  decompress(payload: Buffer): Buffer {
    const out = zlib.inflateRawSync(Buffer.concat([payload, TAIL]), {
      windowBits: this.windowBits,
      finishFlush: SYNC,
      chunkSize: 64,
      ...(this.window.length > 0 ? { dictionary: this.window } : {}),
    });
    if (this.keepContext) {
      const joined = Buffer.concat([this.window, out]);
      this.window = joined.subarray(Math.max(0, joined.length - 2 ** this.windowBits));
    }
    return out;
  }
}

/** controlFails compresses `messages` as one context-keeping stream of `senderBits` and tells whether a `readerBits` inflater rejects it. */
async function controlFails(messages: Buffer[], senderBits: number, readerBits: number): Promise<boolean> {
  const deflater = new PeerDeflater(senderBits, true);
  const inflater = new ContextInflater(readerBits, true);
  try {
    for (const m of messages) {
      if (m.length === 0) continue;
      if (!inflater.decompress(await deflater.compress(m)).equals(m)) return true;
    }
    return false;
  } catch {
    return true;
  } finally {
    deflater.close();
  }
}

/** deflateOracle is zlib's own one-shot output for a first message (no dictionary), trailer removed. */
function deflateOracle(data: Buffer, options: zlib.ZlibOptions): Buffer {
  const out = zlib.deflateRawSync(data, { finishFlush: SYNC, ...options });
  return out.subarray(0, out.length - 4);
}

// ---- a relay that records the client's frames ----

interface RecordingRelay {
  url: string;
  /** Request heads, as latin1. */
  requests: string[];
  /** Frames the client sent (unmasked), in order. */
  clientFrames: ReceivedFrame[];
  close(): Promise<void>;
}

/** startRecordingRelay forwards 127.0.0.1 connections to `port` and parses what the client sends after its request head. */
async function startRecordingRelay(port: number): Promise<RecordingRelay> {
  const requests: string[] = [];
  const clientFrames: ReceivedFrame[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (down) => {
    const up = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const reader = new ByteFrameReader();
    let head: Buffer | undefined = Buffer.alloc(0);
    for (const s of [down, up]) s.on("error", () => undefined);
    down.on("data", (chunk: Buffer) => {
      up.write(chunk);
      if (head !== undefined) {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        requests.push(head.subarray(0, end).toString("latin1"));
        chunk = head.subarray(end + 4);
        head = undefined;
      }
      reader.push(chunk);
      for (let f = reader.next(); f !== undefined; f = reader.next()) clientFrames.push(f);
    });
    up.on("data", (chunk: Buffer) => down.write(chunk));
    down.on("end", () => up.end());
    up.on("end", () => down.end());
    down.on("close", () => up.destroy());
    up.on("close", () => down.destroy());
  });
  const listener = await listenLocal(server);
  return { url: listener.url, requests, clientFrames, close: listener.close };
}

// ---- maxWindowBits ----

t.test("server maxWindowBits 10: ws, undici and a raw client, windows bounded both ways", async (t) => {
  const srv = await echoServer(t, { compression: { mode: "context-takeover", maxWindowBits: 10 } });
  const messages = sequence();

  t.test("ws client (perMessageDeflate default)", async (t) => {
    const ws = await wsClient(srv.url);
    const { conn, req, socket } = await srv.next();
    t.equal(req.headers["sec-websocket-extensions"], "permessage-deflate; client_max_window_bits", "ws offers client_max_window_bits without a value");
    t.equal(conn.extensions, "permessage-deflate; client_max_window_bits=10", "conn.extensions: the client's window bounded to 10");
    const params = (ws as unknown as { _extensions: Record<string, { params: Record<string, unknown> }> })._extensions["permessage-deflate"]?.params;
    t.equal(params?.client_max_window_bits, 10, "ws took the bound");
    const queue = wsMessages(ws);
    let exact = 0;
    let wireIn = -1;
    let wireOut = -1;
    for (const [i, data] of messages.entries()) {
      const inBefore = socket.bytesRead;
      const outBefore = wsBytesRead(ws);
      ws.send(data, { binary: false });
      const got = await queue.shift();
      if (!got.isBinary && got.data.equals(data)) exact++;
      else t.fail(`message ${i} (${data.length} B): echo differs`);
      if (data.length === 300_000 && wireIn < 0) {
        wireIn = socket.bytesRead - inBefore;
        wireOut = wsBytesRead(ws) - outBefore;
      }
    }
    t.equal(exact, messages.length, `${messages.length} text messages (0 B to 300 KB, ${ROUNDS} rounds) echoed byte-exact`);
    t.ok(wireIn > 0 && wireIn < 100_000, `300 KB arrived compressed from ws (${wireIn} B on the wire)`);
    t.ok(wireOut > 0 && wireOut < 100_000, `300 KB went back compressed (${wireOut} B on the wire)`);
    const peak = peaks.get(conn)!;
    t.ok(peak.inbound <= 1024, `inbound window never above 2^10 bytes (peak ${peak.inbound})`);
    t.equal(peak.inbound, 1024, "and it was used: filled to 2^10");
    t.ok(peak.outbound <= 1024, `outbound window never above 2^10 bytes (peak ${peak.outbound})`);
    t.equal(peak.outbound, 1024, "and it was used: filled to 2^10");
    ws.close(1000);
    await conn.closed;
  });

  t.test("undici client", async (t) => {
    const peer = await openUndici(srv.url);
    const { conn, req } = await srv.next();
    t.equal(req.headers["sec-websocket-extensions"], "permessage-deflate; client_max_window_bits", "undici offers what Chromium offers");
    t.equal(conn.extensions, "permessage-deflate; client_max_window_bits=10", "conn.extensions");
    t.equal(peer.extensions, "permessage-deflate; client_max_window_bits=10", "undici took the answer");
    let exact = 0;
    for (const [i, data] of messages.entries()) {
      peer.send(MessageType.Text, data);
      const got = await peer.receive();
      if (got.type === MessageType.Text && got.data.equals(data)) exact++;
      else t.fail(`message ${i} (${data.length} B): echo differs`);
    }
    t.equal(exact, messages.length, `${messages.length} text messages echoed byte-exact`);
    const peak = peaks.get(conn)!;
    t.ok(peak.inbound <= 1024, `inbound window never above 2^10 bytes (peak ${peak.inbound}; undici never compresses)`);
    t.ok(peak.outbound <= 1024, `outbound window never above 2^10 bytes (peak ${peak.outbound})`);
    t.equal(peak.outbound, 1024, "outbound window used");
    await peer.close();
    await conn.closed;
  });

  t.test("raw client: what the server sends inflates with a 10-bit window", async (t) => {
    t.ok(await controlFails(messages, 15, 10), "control: a 15-bit sender's stream does not inflate with 10 bits (the check can fail)");
    t.notOk(await controlFails(messages, 10, 10), "control: a 10-bit sender's does");
    const up = await rawUpgrade(srv.port, "permessage-deflate; client_max_window_bits");
    t.equal(up.extensions, "permessage-deflate; client_max_window_bits=10", "answer on the wire");
    const { conn } = await srv.next();
    const deflater = new PeerDeflater(10, true);
    const inflater = new ContextInflater(10, true);
    let exact = 0;
    let compressedCount = 0;
    for (const [i, data] of messages.entries()) {
      const compress = data.length > 0;
      up.socket.write(frame(OP.text, compress ? await deflater.compress(data) : data, { rsv1: compress }));
      const f = await nextData(up.frames);
      let got: Buffer;
      try {
        got = compressed(f) ? inflater.decompress(f.payload) : f.payload;
      } catch (err) {
        t.fail(`message ${i} (${data.length} B) does not inflate with 10 bits: ${(err as Error).message}`);
        break;
      }
      if (compressed(f)) compressedCount++;
      if (got.equals(data)) exact++;
      else t.fail(`message ${i}: echo differs`);
    }
    t.equal(exact, messages.length, "every echo byte-exact through a 10-bit, context-keeping inflater");
    t.equal(compressedCount, 3 * ROUNDS, "the messages over the threshold came compressed");
    t.ok(peaks.get(conn)!.inbound <= 1024 && peaks.get(conn)!.outbound <= 1024, "windows within 2^10");
    deflater.close();
    up.socket.destroy();
    await conn.closed;
  });
});

t.test("client maxWindowBits 9 against a ws server: offer, answer, echo, frames within 2^9", async (t) => {
  const wss = await startWsServer({ perMessageDeflate: true }, (ws) => {
    ws.on("message", (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
  });
  t.teardown(() => wss.close());
  const relay = await startRecordingRelay(wss.port);
  t.teardown(() => relay.close());
  const messages = sequence(2);
  t.ok(await controlFails(messages, 15, 9), "control: a 15-bit sender's stream does not inflate with 9 bits");

  const client = await dial(relay.url, { compression: { maxWindowBits: 9 }, readLimit: MiB });
  const { req } = await wss.next();
  t.equal(req.headers["sec-websocket-extensions"], "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9", "the offer");
  t.match(relay.requests[0], /\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9; client_max_window_bits=9(\r\n|$)/i, "on the wire");
  t.equal(client.extensions, "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9", "ws's answer, accepted");
  let exact = 0;
  let peak = { inbound: 0, outbound: 0 };
  let wire = -1;
  for (const [i, data] of messages.entries()) {
    const before = bytesRead(client);
    await client.write(MessageType.Text, data);
    const got = await client.read();
    if (got.type === MessageType.Text && got.data.equals(data)) exact++;
    else t.fail(`message ${i} (${data.length} B): echo differs`);
    if (data.length === 300_000 && wire < 0) wire = bytesRead(client) - before;
    const w = windowBytes(client);
    peak = { inbound: Math.max(peak.inbound, w.inbound), outbound: Math.max(peak.outbound, w.outbound) };
  }
  t.equal(exact, messages.length, `${messages.length} messages echoed byte-exact by ws`);
  t.ok(wire > 0 && wire < 100_000, `ws's 300 KB echo came compressed (${wire} B)`);
  t.equal(peak.outbound, 512, "the client's outbound window is 2^9 bytes");
  t.equal(peak.inbound, 512, "its inbound window too");
  await client.close();

  // What the client sent, inflated with the 9-bit window it promised, context kept from message to message.
  const data = relay.clientFrames.filter((f) => f.opcode === OP.text || f.opcode === OP.binary || f.opcode === OP.cont);
  t.equal(data.length, messages.length, "one frame per message");
  t.ok(data.every((f) => f.masked), "masked");
  const inflater = new ContextInflater(9, true);
  let decoded = 0;
  let compressedCount = 0;
  for (const [i, f] of data.entries()) {
    try {
      const got = compressed(f) ? inflater.decompress(f.payload) : f.payload;
      if (compressed(f)) compressedCount++;
      if (got.equals(messages[i]!)) decoded++;
      else t.fail(`frame ${i}: differs from message ${i}`);
    } catch (err) {
      t.fail(`frame ${i} (${messages[i]!.length} B) does not inflate with 9 bits: ${(err as Error).message}`);
      break;
    }
  }
  t.equal(compressedCount, 3 * ROUNDS, "the messages over the threshold went compressed");
  t.equal(decoded, messages.length, "every frame the client sent decodes with a 2^9 window");
});

t.test("a server that ignores the client's bound fails the handshake", async (t) => {
  const cases: Array<[string, string | undefined, RegExp | undefined]> = [
    ["no server_max_window_bits", "permessage-deflate", /server ignored server_max_window_bits=10/],
    ["client_max_window_bits only", "permessage-deflate; client_max_window_bits=10", /server ignored server_max_window_bits=10/],
    ["server_max_window_bits=12", "permessage-deflate; server_max_window_bits=12", /window bits above the 10 offered/],
    ["client_max_window_bits=12", "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12", /window bits above the 10 offered/],
    // Controls: answers within the bound, and a declined offer.
    ["server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10", undefined],
    ["server_max_window_bits=9; client_max_window_bits=9", "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9", undefined],
    ["declined", undefined, undefined],
  ];
  for (const [name, answer, why] of cases) {
    const raw = await startAnsweringServer(() => answer);
    const dialing = dial(raw.url, { compression: { maxWindowBits: 10 } });
    if (why === undefined) {
      const conn = await dialing;
      t.equal(conn.extensions, answer ?? "", `${name}: accepted`);
      if (answer !== undefined) {
        // Whatever the answer leaves out, the client compresses within its own 10 bits (or what it was told).
        const bits = /client_max_window_bits=(\d+)/.exec(answer)?.[1] ?? "10";
        const peer = await raw.next();
        const inflater = new ContextInflater(Number(bits), true);
        const data = jsonText(5_000, 90);
        let ok = 0;
        for (let i = 0; i < 3; i++) {
          await conn.write(MessageType.Text, data);
          const f = await nextData(peer.frames);
          if (compressed(f) && inflater.decompress(f.payload).equals(data)) ok++;
        }
        t.equal(ok, 3, `${name}: the client's messages inflate with ${bits} bits`);
      }
      conn.closeNow();
    } else {
      const err = await rejection(dialing);
      t.ok(err instanceof HandshakeError, `${name}: HandshakeError`);
      t.match((err as Error).message, why, `${name}: says why`);
      t.equal((err as HandshakeError).status, 101, `${name}: status 101`);
    }
    t.match(raw.requests[0], /Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; client_max_window_bits=10\r?$/im, `${name}: the offer`);
    await raw.close();
  }
});

t.test("bad settings are refused before any handshake, by dial and by accept", async (t) => {
  const raw = await startAnsweringServer(() => "permessage-deflate");
  t.teardown(() => raw.close());
  for (const [settings, type] of [
    [{ maxWindowBits: 16 }, RangeError],
    [{ memLevel: 0 }, RangeError],
    [{ level: 10 }, RangeError],
    [{ mode: "gzip" }, TypeError],
  ] as const) {
    const err = await rejection(dial(raw.url, { compression: settings as never }));
    t.type(err, type, `dial ${JSON.stringify(settings)}: ${type.name}`);
  }
  t.equal(raw.requests.length, 0, "no request was sent");
  const srv = await startWsconnServer({ compression: { maxWindowBits: 7 } });
  t.teardown(() => srv.close());
  const up = await rawUpgrade(srv.port, "permessage-deflate; client_max_window_bits");
  t.match(up.status, /^HTTP\/1\.1 500/, "accept with maxWindowBits 7 answers 500");
  up.socket.destroy();
});

t.test("plain messages from the peer between compressed ones stay out of the inbound window", async (t) => {
  const srv = await echoServer(t, { compression: { maxWindowBits: 10 } });
  const ws = await wsClient(srv.url, { perMessageDeflate: { threshold: 0 } });
  const { conn } = await srv.next();
  const queue = wsMessages(ws);
  const X = jsonText(800, 95);
  const Y = jsonText(800, 96);
  const sent: Buffer[] = [];
  for (const [data, compress] of [
    [X, true],
    [Y, false],
    [X, true],
    [Y, true],
    [X, false],
    [Y, true],
  ] as const) {
    ws.send(data, { binary: false, compress });
    sent.push(data);
  }
  let exact = 0;
  for (const want of sent) if ((await queue.shift()).data.equals(want)) exact++;
  t.equal(exact, sent.length, "every message read and echoed byte-exact: only compressed messages fill the window");
  ws.close(1000);
  await conn.closed;
});

t.test("maxWindowBits 8: compressed messages are read, every message is sent plain", async (t) => {
  const srv = await echoServer(t, { compression: { maxWindowBits: 8 } });
  const messages = [100, 5_000, 40_000, 5_000, 40_000].map((n) => jsonText(n, 8));

  t.test("ws client", async (t) => {
    const ws = await wsClient(srv.url);
    const { conn, socket } = await srv.next();
    t.equal(conn.extensions, "permessage-deflate; client_max_window_bits=8");
    const queue = wsMessages(ws);
    let exact = 0;
    for (const data of messages) {
      const inBefore = socket.bytesRead;
      const outBefore = wsBytesRead(ws);
      ws.send(data, { binary: false });
      const got = await queue.shift();
      if (got.data.equals(data)) exact++;
      else t.fail(`${data.length} B: echo differs`);
      if (data.length === 40_000) {
        t.ok(socket.bytesRead - inBefore < 20_000, `ws sent 40 KB compressed (${socket.bytesRead - inBefore} B)`);
        t.ok(wsBytesRead(ws) - outBefore > 40_000, `the echo came plain (${wsBytesRead(ws) - outBefore} B)`);
      }
    }
    t.equal(exact, messages.length, "echoed byte-exact");
    t.equal(windowBytes(conn).outbound, 0, "no outbound compressor");
    t.ok(peaks.get(conn)!.inbound > 0 && peaks.get(conn)!.inbound <= 512, `inbound window kept within 512 B (zlib's smallest raw window): ${peaks.get(conn)!.inbound}`);
    ws.close(1000);
    await conn.closed;
  });

  t.test("raw client: RSV1 clear on every echo", async (t) => {
    const up = await rawUpgrade(srv.port, "permessage-deflate; client_max_window_bits");
    t.equal(up.extensions, "permessage-deflate; client_max_window_bits=8");
    const { conn } = await srv.next();
    const deflater = new PeerDeflater(8, true);
    for (const data of messages) {
      up.socket.write(frame(OP.text, await deflater.compress(data), { rsv1: true }));
      const f = await nextData(up.frames);
      t.equal(f.rsv, 0, `${data.length} B: RSV1 clear`);
      t.ok(f.payload.equals(data), `${data.length} B: plain payload, byte-exact`);
    }
    deflater.close();
    up.socket.destroy();
    await conn.closed;
  });

  t.test("wsconn client at 8 bits sends plain and reads compressed", async (t) => {
    const raw = await startAnsweringServer(() => "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8");
    t.teardown(() => raw.close());
    const client = await dial(raw.url, { compression: { maxWindowBits: 8 } });
    const peer = await raw.next();
    t.match(peer.request, /permessage-deflate; server_max_window_bits=8; client_max_window_bits=8/);
    const data = jsonText(5_000, 9);
    await client.write(MessageType.Text, data);
    const f = await nextData(peer.frames);
    t.equal(f.rsv, 0, "RSV1 clear");
    t.ok(f.payload.equals(data), "plain payload");
    const deflater = new PeerDeflater(8, true);
    for (let i = 0; i < 2; i++) {
      peer.socket.write(frame(OP.text, await deflater.compress(data), { rsv1: true, mask: false }));
      t.ok((await client.read()).data.equals(data), `compressed message ${i} read`);
    }
    deflater.close();
    client.closeNow();
  });
});

// ---- level and memLevel ----

t.test("level and memLevel reach zlib", async (t) => {
  const data = jsonText(10_000, 10);
  const srvFor = async (options: Parameters<typeof startWsconnServer>[0]): Promise<{ conn: Conn; up: RawUpgrade }> => {
    const srv = await startWsconnServer(options);
    t.teardown(() => srv.close());
    const up = await rawUpgrade(srv.port, "permessage-deflate");
    const { conn } = await srv.next();
    return { conn, up };
  };
  const sizes: Record<string, number> = {};
  for (const [name, options] of [
    ["level 0", { compression: { level: 0 }, compressionLevel: 9 }],
    ["level 9", { compression: { level: 9 }, compressionLevel: 0 }],
  ] as const) {
    const { conn, up } = await srvFor(options);
    await conn.write(MessageType.Text, data);
    const f = await nextData(up.frames);
    t.ok(compressed(f), `${name}: RSV1 set`);
    sizes[name] = f.payload.length;
    const inflater = new ContextInflater(15, true);
    t.ok(inflater.decompress(f.payload).equals(data), `${name}: inflates to the message`);
    // A prepared message is compressed at the connection's level too.
    await conn.writePrepared(new PreparedMessage(MessageType.Text, data));
    const p = await nextData(up.frames);
    t.ok(compressed(p), `${name}: prepared message compressed`);
    t.ok(inflater.decompress(p.payload).equals(data), `${name}: prepared message inflates`);
    sizes[`${name} prepared`] = p.payload.length;
    up.socket.destroy();
    conn.closeNow();
  }
  t.ok(sizes["level 0"]! >= data.length, `level 0 stores: ${sizes["level 0"]} B for ${data.length} (compression.level wins over compressionLevel 9)`);
  t.ok(sizes["level 0 prepared"]! >= data.length, `level 0, prepared: stored (${sizes["level 0 prepared"]} B)`);
  t.ok(sizes["level 9"]! < data.length / 4, `level 9 is small: ${sizes["level 9"]} B (compression.level wins over compressionLevel 0)`);
  t.ok(sizes["level 9 prepared"]! < data.length / 4, `level 9, prepared: ${sizes["level 9 prepared"]} B`);

  // memLevel: the first message (no dictionary yet) is exactly zlib's output for that memLevel.
  const low = deflateOracle(data, { memLevel: 1, level: 6, windowBits: 15 });
  const normal = deflateOracle(data, { memLevel: 8, level: 6, windowBits: 15 });
  t.not(low.length, normal.length, `control: memLevel changes zlib's output for this message (${low.length} vs ${normal.length} B)`);
  for (const [name, memLevel, expected] of [
    ["memLevel 1", 1, low],
    ["default memLevel", undefined, normal],
  ] as const) {
    const { conn, up } = await srvFor({ compression: { memLevel } });
    await conn.write(MessageType.Text, data);
    const f = await nextData(up.frames);
    t.ok(compressed(f) && f.payload.equals(expected), `${name}: the payload is zlib's at that memLevel (${f.payload.length} B)`);
    up.socket.destroy();
    conn.closeNow();
  }

  // The client role takes its level too.
  const raw = await startAnsweringServer(() => "permessage-deflate");
  t.teardown(() => raw.close());
  const client = await dial(raw.url, { compression: { level: 0 } });
  const peer = await raw.next();
  await client.write(MessageType.Text, data);
  const f = await nextData(peer.frames);
  t.ok(compressed(f) && f.payload.length >= data.length, `client at level 0 stores (${f.payload.length} B)`);
  t.ok(new ContextInflater(15, false).decompress(f.payload).equals(data), "and it inflates");
  client.closeNow();
});

t.test("memLevel 1 round-trips with ws, both directions, every size", async (t) => {
  const srv = await echoServer(t, { compression: { memLevel: 1 } });
  const ws = await wsClient(srv.url, { perMessageDeflate: { threshold: 0 } });
  const { conn, socket } = await srv.next();
  const queue = wsMessages(ws);
  const messages = sequence(11);
  let exact = 0;
  let wire = -1;
  for (const data of messages) {
    const before = wsBytesRead(ws);
    ws.send(data, { binary: false });
    const got = await queue.shift();
    if (got.data.equals(data)) exact++;
    else t.fail(`${data.length} B: echo differs`);
    if (data.length === 300_000 && wire < 0) wire = wsBytesRead(ws) - before;
  }
  t.equal(exact, messages.length, `${messages.length} messages echoed byte-exact`);
  t.ok(wire > 0 && wire < 100_000, `compressed on the way back (${wire} B for 300 KB)`);
  t.ok(socket.bytesRead < messages.reduce((n, m) => n + m.length, 0) / 3, "and on the way in");
  ws.close(1000);
  await conn.closed;
});

// ---- write options ----

t.test("write(type, data, { compress, signal }) and the positional signal", async (t) => {
  const srv = await startWsconnServer({ compression: "context-takeover" });
  t.teardown(() => srv.close());
  const up = await rawUpgrade(srv.port, "permessage-deflate");
  const { conn } = await srv.next();
  const inflater = new ContextInflater(15, true);
  const read = async (): Promise<{ rsv1: boolean; data: Buffer }> => {
    const f = await nextData(up.frames);
    const rsv1 = compressed(f);
    return { rsv1, data: rsv1 ? inflater.decompress(f.payload) : f.payload };
  };
  const X = jsonText(1_000, 20);
  const Y = jsonText(1_000, 21);
  const W = jsonText(1_000, 22);

  await conn.write(MessageType.Text, X, { compress: false });
  t.same(await read(), { rsv1: false, data: X }, "compress: false: RSV1 clear, the data as is");
  // Were X in the compressor's window, this would refer to bytes the peer's inflater never had.
  await conn.write(MessageType.Text, X);
  t.same(await read(), { rsv1: true, data: X }, "the next default write is compressed and inflates (the plain one stayed out of the window)");
  await conn.write(MessageType.Text, X, { compress: true });
  t.same(await read(), { rsv1: true, data: X }, "compress: true: the default");
  await conn.write(MessageType.Text, X, {});
  t.same(await read(), { rsv1: true, data: X }, "empty options: the default");

  // Aborted before the write: rejects with the reason, sends nothing, the connection stays usable.
  const reason = new Error("not now");
  const aborted = AbortSignal.abort(reason);
  t.equal(await rejection(conn.write(MessageType.Text, jsonText(1_000, 30), aborted)), reason, "positional signal, aborted: rejects with its reason");
  t.equal(await rejection(conn.write(MessageType.Text, jsonText(1_000, 31), { signal: aborted })), reason, "{ signal }, aborted: the same");
  t.equal(await rejection(conn.write(MessageType.Text, jsonText(1_000, 32), { signal: aborted, compress: false })), reason, "{ signal, compress: false }, aborted: the same");
  await conn.write(MessageType.Text, Y, new AbortController().signal);
  t.same(await read(), { rsv1: true, data: Y }, "positional live signal: written, compressed; nothing of the aborted writes went out");
  await conn.write(MessageType.Text, W, { signal: new AbortController().signal, compress: false });
  t.same(await read(), { rsv1: false, data: W }, "{ signal, compress: false }: plain");
  await conn.write(MessageType.Text, W, { signal: new AbortController().signal });
  t.same(await read(), { rsv1: true, data: W }, "{ signal }: compressed");
  // A signal from another realm or a polyfill is told by its shape, not by instanceof.
  const foreign = {
    aborted: true,
    reason,
    onabort: null,
    throwIfAborted: () => {
      throw reason;
    },
    addEventListener: () => undefined,
    removeEventListener: () => undefined,
    dispatchEvent: () => true,
  } as unknown as AbortSignal;
  t.equal(await rejection(conn.write(MessageType.Text, jsonText(1_000, 33), foreign)), reason, "a foreign aborted signal, positional: rejects with its reason");
  t.equal(await rejection(conn.writePrepared(new PreparedMessage(MessageType.Text, X), foreign)), reason, "writePrepared with it: the same");

  // Bad options: TypeError, nothing sent, still usable.
  for (const bad of [5, null, "signal", true]) {
    const err = await rejection(conn.write(MessageType.Text, X, bad as never));
    t.type(err, TypeError, `write(t, d, ${JSON.stringify(bad)}): TypeError`);
  }
  const err = await rejection(conn.writePrepared(new PreparedMessage(MessageType.Text, X), 5 as never));
  t.type(err, TypeError, "writePrepared(pm, 5): TypeError");
  await conn.write(MessageType.Text, "still usable");
  t.same(await read(), { rsv1: false, data: Buffer.from("still usable") }, "after them: the connection works (short: plain)");

  // writer(type, { compress: false }): every frame plain; the default writer compresses.
  for (const compress of [false, true]) {
    const w = conn.writer(MessageType.Text, { compress });
    w.end(X);
    const first = await up.frames.nextNonControl();
    const last = await up.frames.nextNonControl();
    t.equal(first.rsv, compress ? 4 : 0, `writer { compress: ${compress} }: RSV1 ${compress ? "set" : "clear"} on its first frame`);
    t.ok(last.fin && last.rsv === 0, "the final frame never carries RSV1");
    const data = compress ? inflater.decompress(Buffer.concat([first.payload, last.payload])) : Buffer.concat([first.payload, last.payload]);
    t.ok(data.equals(X), `writer { compress: ${compress} }: the data arrives`);
  }
  t.throws(() => conn.writer(MessageType.Text, 5 as never), TypeError, "writer with bad options: TypeError");

  // enableWriteCompression(false) wins over compress: true.
  conn.enableWriteCompression(false);
  await conn.write(MessageType.Text, X, { compress: true });
  t.same(await read(), { rsv1: false, data: X }, "compression off: compress: true does not force it");
  conn.enableWriteCompression(true);
  await conn.write(MessageType.Binary, X);
  t.same(await read(), { rsv1: true, data: X }, "back on");
  up.socket.destroy();
  await conn.closed;

  // The client role: masked frames, the same rules.
  const raw = await startAnsweringServer(() => "permessage-deflate");
  t.teardown(() => raw.close());
  const client = await dial(raw.url, { compression: "context-takeover" });
  const peer = await raw.next();
  const clientInflater = new ContextInflater(15, true);
  await client.write(MessageType.Text, X, { compress: false });
  const plain = await nextData(peer.frames);
  t.ok(plain.masked && plain.rsv === 0 && plain.payload.equals(X), "client, compress: false: masked, RSV1 clear");
  await client.write(MessageType.Text, X);
  const packed = await nextData(peer.frames);
  t.ok(packed.rsv === 4 && clientInflater.decompress(packed.payload).equals(X), "client, default: compressed, inflates");
  client.closeNow();
});

t.test("writePrepared(pm, { compress: false }) and PreparedMessage(…, { compress: false })", async (t) => {
  const srv = await startWsconnServer({ compression: "context-takeover" });
  t.teardown(() => srv.close());
  const up = await rawUpgrade(srv.port, "permessage-deflate");
  const { conn } = await srv.next();
  const inflater = new ContextInflater(15, true);
  const P = jsonText(1_000, 40);
  const Q = jsonText(1_000, 41);
  const pm = new PreparedMessage(MessageType.Text, P);
  const plainPm = new PreparedMessage(MessageType.Text, Q, { compress: false });
  t.equal(pm.compress, true, "default PreparedMessage: compress true");
  t.equal(plainPm.compress, false, "{ compress: false }: compress false");

  await conn.writePrepared(pm);
  let f = await nextData(up.frames);
  t.equal(f.rsv, 4, "default PreparedMessage: RSV1 set");
  t.ok(inflater.decompress(f.payload).equals(P), "and it inflates");
  await conn.writePrepared(pm, { compress: false });
  f = await nextData(up.frames);
  t.ok(f.rsv === 0 && f.payload.equals(P), "writePrepared(pm, { compress: false }): RSV1 clear, plain payload");
  await conn.writePrepared(plainPm);
  f = await nextData(up.frames);
  t.ok(f.rsv === 0 && f.payload.equals(Q), "PreparedMessage { compress: false }: RSV1 clear");
  await conn.writePrepared(plainPm, { compress: true });
  f = await nextData(up.frames);
  t.ok(f.rsv === 0 && f.payload.equals(Q), "and compress: true on the write does not override it");
  // Q went out plain twice: the compressor must not refer to it.
  await conn.write(MessageType.Text, Q);
  f = await nextData(up.frames);
  t.ok(f.rsv === 4 && inflater.decompress(f.payload).equals(Q), "an ordinary write of Q after it inflates");
  // P went out compressed once (a prepared frame): both windows hold it, a later P is all back-references.
  await conn.write(MessageType.Text, P);
  f = await nextData(up.frames);
  t.ok(f.rsv === 4 && inflater.decompress(f.payload).equals(P), "an ordinary write of P inflates");
  t.ok(f.payload.length < 50, `and refers to the prepared P (${f.payload.length} B for ${P.length}): the compressor remembered it`);

  const reason = new Error("aborted");
  t.equal(await rejection(conn.writePrepared(pm, AbortSignal.abort(reason))), reason, "positional aborted signal: rejects with the reason");
  t.equal(await rejection(conn.writePrepared(pm, { signal: AbortSignal.abort(reason), compress: false })), reason, "{ signal } aborted: the same");
  await conn.writePrepared(pm, new AbortController().signal);
  f = await nextData(up.frames);
  t.ok(f.rsv === 4 && inflater.decompress(f.payload).equals(P), "positional live signal: sent compressed, nothing of the aborted ones went out");
  up.socket.destroy();
  await conn.closed;
});

t.test("context takeover: a compressed prepared message then ordinary writes, checked by ws clients with different histories", async (t) => {
  const srv = await startWsconnServer({ compression: "context-takeover", readLimit: MiB });
  t.teardown(() => srv.close());
  const peers: Array<{ ws: WebSocket; conn: Conn; queue: ReturnType<typeof wsMessages> }> = [];
  for (let i = 0; i < 2; i++) {
    const ws = await wsClient(srv.url);
    const { conn } = await srv.next();
    peers.push({ ws, conn, queue: wsMessages(ws) });
  }
  const P = jsonText(5_000, 50);
  const pm = new PreparedMessage(MessageType.Text, P);
  // P with a change in the middle: compressed against the window, which holds P.
  const P2 = Buffer.concat([P.subarray(0, 2_000), Buffer.from("a change in the middle"), P.subarray(2_000)]);
  const expected: Buffer[][] = [];
  for (const [i, { conn }] of peers.entries()) {
    const history = [jsonText(3_000, 60 + i), jsonText(40_000, 70 + i)];
    for (const h of history) await conn.write(MessageType.Text, h);
    await conn.writePrepared(pm);
    await conn.write(MessageType.Text, P2);
    await conn.write(MessageType.Text, P);
    await conn.writePrepared(pm);
    await conn.write(MessageType.Text, history[0]!);
    expected.push([...history, P, P2, P, P, history[0]!]);
  }
  t.equal(pm.framings, 1, "framed once for both connections");
  for (const [i, { ws, queue }] of peers.entries()) {
    let exact = 0;
    for (const want of expected[i]!) if ((await queue.shift()).data.equals(want)) exact++;
    t.equal(exact, expected[i]!.length, `ws client ${i}: all ${expected[i]!.length} messages exact`);
    ws.close(1000);
  }
  await Promise.all(peers.map((p) => p.conn.closed));
});

// ---- Hub ----

t.test("Hub: broadcast { compress: false } reaches local and bus clients uncompressed", async (t) => {
  const bus = new MemoryBus();
  const nodes: Array<{ hub: Hub; srv: WsconnServer; up: RawUpgrade; inflater: ContextInflater }> = [];
  for (const nodeId of ["node-a", "node-b"]) {
    const hub = new Hub({ bus, nodeId });
    const srv = await startWsconnServer({ compression: "context-takeover" }, ({ conn }) => {
      conn.closeRead();
      hub.add(conn, {}, { topics: ["room"] });
    });
    const up = await rawUpgrade(srv.port, "permessage-deflate");
    await srv.next();
    nodes.push({ hub, srv, up, inflater: new ContextInflater(15, true) });
  }
  t.teardown(async () => {
    for (const n of nodes) {
      n.up.socket.destroy();
    }
    for (const n of nodes) await n.hub.close();
    for (const n of nodes) await n.srv.close();
  });
  for (const n of nodes) await n.hub.settled();
  const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
  const read = async (n: (typeof nodes)[0]): Promise<{ rsv1: boolean; data: Buffer }> => {
    const f = await nextData(n.up.frames);
    const rsv1 = compressed(f);
    return { rsv1, data: rsv1 ? n.inflater.decompress(f.payload) : f.payload };
  };
  const X = jsonText(2_000, 80);
  const Y = jsonText(2_000, 81);
  const Z = jsonText(2_000, 82);

  t.equal(a.hub.broadcast(MessageType.Text, X, { compress: false }), 1, "queued to the local client");
  t.same(await read(a), { rsv1: false, data: X }, "local client: RSV1 clear");
  t.same(await read(b), { rsv1: false, data: X }, "client of the other hub, through the MemoryBus: RSV1 clear");

  a.hub.broadcast(MessageType.Text, Y);
  t.same(await read(a), { rsv1: true, data: Y }, "default broadcast: compressed locally");
  t.same(await read(b), { rsv1: true, data: Y }, "and on the other node");

  b.hub.broadcast(new PreparedMessage(MessageType.Text, Z), { compress: false });
  t.same(await read(b), { rsv1: false, data: Z }, "a default PreparedMessage broadcast with compress: false: plain locally");
  t.same(await read(a), { rsv1: false, data: Z }, "and across the bus");

  b.hub.broadcast(MessageType.Binary, X);
  t.same(await read(b), { rsv1: true, data: X }, "then compressed again: the plain ones stayed out of the window");
  t.same(await read(a), { rsv1: true, data: X }, "on both nodes");
  t.equal(a.hub.publish("room", MessageType.Text, Y, { compress: false }), 1, "publish to a topic");
  t.same(await read(a), { rsv1: false, data: Y }, "publish { compress: false }: plain locally");
  t.same(await read(b), { rsv1: false, data: Y }, "and to the topic's subscribers on the other node");
  a.hub.publish("room", MessageType.Text, Z);
  t.same(await read(a), { rsv1: true, data: Z }, "default publish: compressed");
  t.same(await read(b), { rsv1: true, data: Z }, "on both nodes");
  t.match(a.hub.stats, { busSent: 4, busReceived: 2 }, "what crossed the bus");
});

t.test("maxWindowBits below 15 and an offer without client_max_window_bits (Firefox's): client_no_context_takeover, and it works", async (t) => {
  const srv = await echoServer(t, { compression: { mode: "context-takeover", maxWindowBits: 10 } });
  const up = await rawUpgrade(srv.port, "permessage-deflate");
  t.equal(up.extensions, "permessage-deflate; client_no_context_takeover", "the client is asked to take no context over");
  const { conn } = await srv.next();
  const inflater = new ContextInflater(10, true);
  for (let i = 0; i < 4; i++) {
    const data = jsonText(3_000, 40 + (i % 2));
    // A client that takes no context over: every message compressed on its own.
    up.socket.write(frame(OP.text, zlib.deflateRawSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH }).subarray(0, -4), { rsv1: true }));
    const f = await nextData(up.frames);
    t.ok(compressed(f) && inflater.decompress(f.payload).equals(data), `message ${i}: echoed compressed, within 2^10, with context`);
  }
  t.equal(windowBytes(conn).inbound, 0, "no inbound window is kept for that client");
  t.equal(windowBytes(conn).outbound, 1024, "the outbound window is 2^10");
  up.socket.destroy();
  await conn.closed;
});
