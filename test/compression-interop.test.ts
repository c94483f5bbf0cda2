/**
 * permessage-deflate (RFC 7692) with real peers and on the raw wire:
 * - echo matrices against `ws` (client and server, with its context and
 *   window options, threshold 0) and undici's WebSocket client (which offers
 *   permessage-deflate and inflates, but never compresses what it sends), in
 *   both wsconn modes, whole and fragmented, 0 B to 16 MiB;
 * - every negotiation case checked on the handshake bytes, from a raw client
 *   to accept and from a raw server to dial;
 * - what goes on the wire: threshold, RSV1 on the first frame only, control
 *   frames never compressed, writer streaming, enableWriteCompression and
 *   setCompressionLevel.
 */

import t from "tap";
import type { PerMessageDeflateOptions, WebSocket } from "ws";
import { type CompressionMode, type Conn, dial, HandshakeError, MessageType } from "../src/index.js";
import { clientOffer } from "../src/protocol/handshake.js";
import { deflateMessage, frame, offerAnswer, PeerDeflater, PeerInflater, rawUpgrade, startAnsweringServer } from "./helpers/deflate-peer.js";
import { type Accepted, binaryPayload, fragmentCuts, OP, openUndici, rejection, splitAt, startWsconnServer, startWsServer, textPayload, wsClient, wsMessages } from "./helpers/interop.js";

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];

const MiB = 1024 * 1024;
const BIG = 16 * MiB;
const LIMIT = BIG + 1024;
const MODES: CompressionMode[] = ["context-takeover", "no-context-takeover"];

interface Case {
  name: string;
  type: MessageType;
  data: Buffer;
}

function cases(): Case[] {
  const list: Case[] = [];
  for (const n of [0, 1, 125, 126, 4096, 65535, 65536]) {
    list.push({ name: `text ${n}`, type: MessageType.Text, data: textPayload(n) });
    list.push({ name: `binary ${n}`, type: MessageType.Binary, data: binaryPayload(n, n) });
    // The same again: with context takeover it refers to the first one.
    list.push({ name: `text ${n} again`, type: MessageType.Text, data: textPayload(n) });
  }
  return list;
}

const CASES = cases();
// 16 MiB messages cost about half a second each through zlib both ways: every
// peer and mode sends one, not every option set.
const BIG_TEXT: Case = { name: "text 16 MiB", type: MessageType.Text, data: textPayload(BIG) };
const BIG_BINARY: Case = { name: "binary 16 MiB", type: MessageType.Binary, data: binaryPayload(BIG, 5) };

async function writeFragments(conn: Conn, type: MessageType, data: Buffer): Promise<void> {
  const w = conn.writer(type);
  for (const piece of splitAt(data, fragmentCuts(data.length))) {
    await new Promise<void>((resolve, reject) => w.write(piece, (err) => (err ? reject(err) : resolve())));
  }
  await new Promise<void>((resolve) => w.end(resolve));
}

/** wsSendCompressedFragments sends a message as several frames, compressed by ws. */
function wsSendCompressedFragments(ws: WebSocket, data: Buffer, binary: boolean): Promise<void> {
  const pieces = splitAt(data, fragmentCuts(data.length));
  return Promise.all(
    pieces.map(
      (piece, i) =>
        new Promise<void>((resolve, reject) =>
          ws.send(piece, { binary, fin: i === pieces.length - 1, compress: true }, (err) => (err ? reject(err) : resolve())),
        ),
    ),
  ).then(() => undefined);
}

function wsconnEcho({ conn, req }: Accepted): void {
  const frag = req.url === "/frag";
  void (async () => {
    try {
      for await (const msg of conn) {
        if (frag) await writeFragments(conn, msg.type, msg.data);
        else await conn.write(msg.type, msg.data);
      }
    } catch {
      // the client checks what it received
    }
  })();
}

interface Client {
  send(c: Case, frag: boolean): Promise<void>;
  receive(): Promise<{ type: MessageType; data: Buffer }>;
  /** Bytes the client's socket received so far. */
  bytesRead(): number;
  extensions: string;
  close(): Promise<void>;
}

async function wsconnClient(url: string, mode: CompressionMode): Promise<Client> {
  const conn = await dial(url, { readLimit: LIMIT, compression: mode, compressionThreshold: 0 });
  const socket = (conn as unknown as { socket: { bytesRead: number } }).socket;
  return {
    send: (c, frag) => (frag ? writeFragments(conn, c.type, c.data) : conn.write(c.type, c.data)),
    receive: () => conn.read(),
    bytesRead: () => socket.bytesRead,
    extensions: conn.extensions,
    close: () => conn.close(),
  };
}

async function wsPeerClient(url: string, pmd: PerMessageDeflateOptions): Promise<Client> {
  const ws = await wsClient(url, { maxPayload: LIMIT, perMessageDeflate: { threshold: 0, ...pmd } });
  const messages = wsMessages(ws);
  const socket = (ws as unknown as { _socket: { bytesRead: number } })._socket;
  return {
    send: (c, frag) =>
      frag
        ? wsSendCompressedFragments(ws, c.data, c.type === MessageType.Binary)
        : new Promise((resolve, reject) => ws.send(c.data, { binary: c.type === MessageType.Binary }, (e) => (e ? reject(e) : resolve()))),
    receive: async () => {
      const m = await messages.shift();
      return { type: m.isBinary ? MessageType.Binary : MessageType.Text, data: m.data };
    },
    bytesRead: () => socket.bytesRead,
    extensions: ws.extensions,
    close: async () => {
      ws.close(1000);
      await new Promise((resolve) => ws.once("close", resolve));
    },
  };
}

async function undiciClient(url: string): Promise<Client & { protocolExtensions: string }> {
  const peer = await openUndici(url);
  return {
    send: async (c) => peer.send(c.type, c.data),
    receive: () => peer.receive(),
    bytesRead: () => 0,
    extensions: peer.extensions,
    protocolExtensions: peer.extensions,
    close: () => peer.close(),
  };
}

/** runMatrix echoes every case (and `big` ones) and compares bytes and type; big text must travel compressed. */
async function runMatrix(t: TestContext, client: Client, frag: boolean, big: Case[] = [], checkWire = true): Promise<void> {
  for (const c of [...CASES, ...big]) {
    const before = client.bytesRead();
    await client.send(c, frag);
    const got = await client.receive();
    t.equal(got.type, c.type, `${c.name}: type`);
    t.ok(got.data.equals(c.data), `${c.name}: ${got.data.length} bytes, byte-exact`);
    if (checkWire && c === BIG_TEXT) {
      const wire = client.bytesRead() - before;
      t.ok(wire < MiB, `${c.name} came compressed: ${wire} bytes on the wire`);
    }
  }
  await client.close();
}

/** ws client option sets, with the 16 MiB messages each gets when whole / fragmented. */
const WS_CLIENT_OPTIONS: Array<[string, PerMessageDeflateOptions, Case[], Case[]]> = [
  ["ws defaults", {}, [BIG_TEXT, BIG_BINARY], []],
  ["ws no context takeover both ways", { serverNoContextTakeover: true, clientNoContextTakeover: true }, [], [BIG_TEXT]],
  ["ws window bits 10/11", { serverMaxWindowBits: 10, clientMaxWindowBits: 11 }, [], []],
];

t.test("wsconn server with ws, undici and wsconn clients", async (t) => {
  for (const mode of MODES) {
    t.test(mode, async (t) => {
      const srv = await startWsconnServer({ readLimit: LIMIT, compression: mode, compressionThreshold: 0 }, wsconnEcho);
      t.teardown(() => srv.close());
      const answer = mode === "no-context-takeover" ? /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/ : /^permessage-deflate/;
      for (const path of ["whole", "frag"] as const) {
        const frag = path === "frag";
        for (const [name, pmd, bigWhole, bigFrag] of WS_CLIENT_OPTIONS) {
          t.test(`${name}, ${path}`, async (t) => {
            const client = await wsPeerClient(`${srv.url}/${path}`, pmd);
            t.equal(client.extensions, "permessage-deflate", "ws negotiated permessage-deflate");
            t.match((await srv.next()).conn.extensions, answer, "server's answer");
            await runMatrix(t, client, frag, frag ? bigFrag : bigWhole);
          });
        }
        for (const clientMode of MODES) {
          t.test(`wsconn client ${clientMode}, ${path}`, async (t) => {
            const client = await wsconnClient(`${srv.url}/${path}`, clientMode);
            t.match((await srv.next()).conn.extensions, answer, "server's answer");
            await runMatrix(t, client, frag, clientMode === mode ? [BIG_TEXT] : []);
          });
        }
        t.test(`undici client, ${path} echo`, async (t) => {
          const client = await undiciClient(`${srv.url}/${path}`);
          t.equal(client.protocolExtensions, mode === "no-context-takeover" ? "permessage-deflate; server_no_context_takeover; client_no_context_takeover" : "permessage-deflate", "undici negotiates permessage-deflate");
          t.match((await srv.next()).conn.extensions, answer, "server's answer");
          await runMatrix(t, client, false, frag ? [] : [BIG_TEXT], false);
        });
      }
    });
  }
});

t.test("undici against a server with compression disabled falls back to plain frames", async (t) => {
  const srv = await startWsconnServer({ readLimit: LIMIT }, wsconnEcho);
  t.teardown(() => srv.close());
  const client = await undiciClient(`${srv.url}/whole`);
  t.equal(client.protocolExtensions, "", "no extension in use");
  const { conn } = await srv.next();
  t.equal(conn.extensions, "");
  await runMatrix(t, client, false, [], false);
});

/** ws server option sets, each with threshold 0. */
const WS_SERVER_OPTIONS: Array<[string, PerMessageDeflateOptions]> = [
  ["ws defaults", {}],
  ["ws server_no_context_takeover", { serverNoContextTakeover: true }],
  ["ws client_no_context_takeover", { clientNoContextTakeover: true }],
  ["ws server_max_window_bits=9", { serverMaxWindowBits: 9 }],
  ["ws client_max_window_bits=10", { clientMaxWindowBits: 10 }],
];

t.test("ws server with the wsconn client", async (t) => {
  for (const [name, pmd] of WS_SERVER_OPTIONS) {
    t.test(name, async (t) => {
      const srv = await startWsServer({ maxPayload: LIMIT, perMessageDeflate: { threshold: 0, ...pmd } }, (ws, req) => {
        ws.on("message", (data: Buffer, isBinary: boolean) => {
          if (req.url === "/frag") void wsSendCompressedFragments(ws, data, isBinary).catch(() => undefined);
          else ws.send(data, { binary: isBinary });
        });
      });
      t.teardown(() => srv.close());
      for (const mode of MODES) {
        for (const path of ["whole", "frag"] as const) {
          t.test(`${mode}, ${path}`, async (t) => {
            const client = await wsconnClient(`${srv.url}/${path}`, mode);
            t.match(client.extensions, /^permessage-deflate/, `negotiated: ${client.extensions}`);
            const big = name === "ws defaults" && (mode === "context-takeover") === (path === "whole") ? [BIG_TEXT] : [];
            await runMatrix(t, client, path === "frag", big);
          });
        }
      }
    });
  }
});

// ---- negotiation on the raw handshake bytes ----

interface OfferCase {
  name: string;
  offer: string | string[] | undefined;
  /** The answer in context-takeover mode, undefined when declined. */
  answer: string | undefined;
}

const NCT = "server_no_context_takeover; client_no_context_takeover";

const OFFER_CASES: OfferCase[] = [
  { name: "no offer", offer: undefined, answer: undefined },
  { name: "plain", offer: "permessage-deflate", answer: "permessage-deflate" },
  { name: "client_max_window_bits without value", offer: "permessage-deflate; client_max_window_bits", answer: "permessage-deflate" },
  { name: "client_max_window_bits=12", offer: "permessage-deflate; client_max_window_bits=12", answer: "permessage-deflate; client_max_window_bits=12" },
  { name: "server_max_window_bits=9", offer: "permessage-deflate; server_max_window_bits=9", answer: "permessage-deflate; server_max_window_bits=9" },
  { name: "server_no_context_takeover", offer: "permessage-deflate; server_no_context_takeover", answer: "permessage-deflate; server_no_context_takeover" },
  { name: "client_no_context_takeover", offer: "permessage-deflate; client_no_context_takeover", answer: "permessage-deflate; client_no_context_takeover" },
  {
    name: "multiple offers: first acceptable",
    offer: "permessage-deflate; server_max_window_bits=10; client_max_window_bits, permessage-deflate",
    answer: "permessage-deflate; server_max_window_bits=10",
  },
  {
    name: "multiple offers in several header lines",
    offer: ["permessage-deflate; bogus", "permessage-deflate; client_max_window_bits=9"],
    answer: "permessage-deflate; client_max_window_bits=9",
  },
  { name: "unknown param declined, next taken", offer: "permessage-deflate; x=1, permessage-deflate; server_no_context_takeover", answer: "permessage-deflate; server_no_context_takeover" },
  { name: "unknown param", offer: "permessage-deflate; mystery", answer: undefined },
  { name: "duplicate param", offer: "permessage-deflate; client_no_context_takeover; client_no_context_takeover", answer: undefined },
  { name: "window bits 7", offer: "permessage-deflate; server_max_window_bits=7", answer: undefined },
  { name: "window bits 16", offer: "permessage-deflate; client_max_window_bits=16", answer: undefined },
  { name: 'window bits "010"', offer: "permessage-deflate; server_max_window_bits=010", answer: undefined },
  { name: "server_max_window_bits without value", offer: "permessage-deflate; server_max_window_bits", answer: undefined },
  { name: "another extension only", offer: "x-webkit-deflate-frame", answer: undefined },
];

t.test("accept answers crafted offers exactly, and declines bad ones without failing", async (t) => {
  for (const mode of MODES) {
    const srv = await startWsconnServer({ compression: mode });
    for (const c of OFFER_CASES) {
      const up = await rawUpgrade(srv.port, c.offer);
      t.match(up.status, /^HTTP\/1\.1 101/, `${mode}, ${c.name}: 101, never an error`);
      const expected = c.answer === undefined ? undefined : mode === "context-takeover" ? c.answer : c.answer.replace(/^permessage-deflate(; server_no_context_takeover)?(; client_no_context_takeover)?/, `permessage-deflate; ${NCT}`);
      t.equal(up.extensions, expected, `${mode}, ${c.name}: answer`);
      const { conn } = await srv.next();
      t.equal(conn.extensions, expected ?? "", `${mode}, ${c.name}: conn.extensions`);
      // RSV1 is legal exactly when the extension was agreed.
      up.frames.socket.write(frame(OP.text, deflateMessage(Buffer.from("negotiated?")), { rsv1: true }));
      if (expected === undefined) {
        const closeFrame = await up.frames.nextNonControl();
        t.equal(closeFrame.payload.readUInt16BE(0), 1002, `${mode}, ${c.name}: RSV1 without the extension is 1002`);
      } else {
        t.equal((await conn.read()).text(), "negotiated?", `${mode}, ${c.name}: compressed message read`);
      }
      up.socket.destroy();
      conn.closeNow();
    }
    await srv.close();
  }
});

t.test("accept in disabled mode (the default) never answers an extension", async (t) => {
  for (const options of [{}, { compression: "disabled" as const }]) {
    const srv = await startWsconnServer(options);
    t.equal(await offerAnswer(srv.port, "permessage-deflate"), undefined, JSON.stringify(options));
    t.equal(await offerAnswer(srv.port, ["permessage-deflate; client_max_window_bits", "permessage-deflate"]), undefined);
    await srv.close();
  }
});

interface AnswerCase {
  name: string;
  answer: string | string[] | undefined;
  /** The extensions the client ends up with, or a RegExp its HandshakeError matches. */
  expect: string | RegExp;
}

const ANSWER_CASES: AnswerCase[] = [
  { name: "declined (no header)", answer: undefined, expect: "" },
  { name: "plain", answer: "permessage-deflate", expect: "permessage-deflate" },
  { name: "server_no_context_takeover", answer: "permessage-deflate; server_no_context_takeover", expect: "permessage-deflate; server_no_context_takeover" },
  { name: "client_no_context_takeover", answer: "permessage-deflate; client_no_context_takeover", expect: "permessage-deflate; client_no_context_takeover" },
  { name: "client_max_window_bits=10", answer: "permessage-deflate; client_max_window_bits=10", expect: "permessage-deflate; client_max_window_bits=10" },
  { name: "server_max_window_bits=12", answer: "permessage-deflate; server_max_window_bits=12", expect: "permessage-deflate; server_max_window_bits=12" },
  { name: "unoffered extension", answer: "x-webkit-deflate-frame", expect: /not offered/ },
  { name: "two permessage-deflate elements", answer: "permessage-deflate, permessage-deflate", expect: /not offered/ },
  { name: "two header lines", answer: ["permessage-deflate", "permessage-deflate"], expect: /not offered/ },
  { name: "unknown param", answer: "permessage-deflate; foo=bar", expect: /invalid permessage-deflate parameters/ },
  { name: "duplicate param", answer: "permessage-deflate; client_no_context_takeover; client_no_context_takeover", expect: /invalid/ },
  { name: "window bits 7", answer: "permessage-deflate; server_max_window_bits=7", expect: /invalid/ },
  { name: "window bits 16", answer: "permessage-deflate; client_max_window_bits=16", expect: /invalid/ },
  { name: "window bits 010", answer: "permessage-deflate; client_max_window_bits=010", expect: /invalid/ },
  { name: "client_max_window_bits without value", answer: "permessage-deflate; client_max_window_bits", expect: /invalid/ },
  { name: "flag with a value", answer: "permessage-deflate; server_no_context_takeover=yes", expect: /invalid/ },
];

t.test("dial sends its offer and checks crafted answers", async (t) => {
  for (const mode of MODES) {
    for (const c of ANSWER_CASES) {
      const srv = await startAnsweringServer(() => c.answer);
      const attempt = dial(srv.url, { compression: mode });
      if (c.expect instanceof RegExp) {
        const err = await rejection(attempt);
        t.ok(err instanceof HandshakeError, `${mode}, ${c.name}: HandshakeError`);
        t.match((err as Error).message, c.expect, `${mode}, ${c.name}: says why`);
      } else {
        const conn = await attempt;
        t.equal(conn.extensions, c.expect, `${mode}, ${c.name}: extensions`);
        conn.closeNow();
      }
      t.match(srv.requests[0], new RegExp(`\r\nSec-WebSocket-Extensions: ${clientOffer(mode)}(\r\n|$)`, "i"), `${mode}, ${c.name}: offer sent`);
      await srv.close();
    }
  }
});

t.test("dial with compression disabled offers nothing and refuses an extension it did not offer", async (t) => {
  for (const options of [{}, { compression: "disabled" as const }]) {
    const srv = await startAnsweringServer(() => "permessage-deflate");
    const err = await rejection(dial(srv.url, options));
    t.ok(err instanceof HandshakeError, "HandshakeError");
    t.match((err as Error).message, /not offered/);
    t.notMatch(srv.requests[0], /sec-websocket-extensions/i, "no offer in the request");
    await srv.close();
  }
});

t.test("dial honours the parameters the server answered", async (t) => {
  // client_max_window_bits=10: every client message must decode within a 2^10 window;
  // client_no_context_takeover: each on its own.
  for (const [answer, bits, keep] of [
    ["permessage-deflate; client_max_window_bits=10", 10, true],
    ["permessage-deflate; client_no_context_takeover; client_max_window_bits=9", 9, false],
    ["permessage-deflate", 15, true],
  ] as Array<[string, number, boolean]>) {
    const srv = await startAnsweringServer(() => answer);
    const conn = await dial(srv.url, { compression: "context-takeover", compressionThreshold: 0 });
    const peer = await srv.next();
    const inflater = new PeerInflater(bits, keep);
    const text = textPayload(40_000);
    for (let i = 0; i < 3; i++) {
      await conn.write(MessageType.Text, text);
      const f = await peer.frames.next();
      t.equal(f.rsv, 4, `${answer}: RSV1 set`);
      t.ok((await inflater.decompress(f.payload)).equals(text), `${answer}: message ${i} decodes in a 2^${bits} window, keep=${keep}`);
    }
    inflater.close();
    conn.closeNow();
    await srv.close();
  }
});

// ---- what goes on the wire ----

async function wireServer(t: TestContext, options: Parameters<typeof startWsconnServer>[0]) {
  const srv = await startWsconnServer(options);
  t.teardown(() => srv.close());
  const up = await rawUpgrade(srv.port, "permessage-deflate; client_max_window_bits");
  const { conn } = await srv.next();
  t.teardown(() => {
    conn.closeNow();
    up.socket.destroy();
  });
  return { conn, up };
}

t.test("threshold: smaller messages go out uncompressed (defaults 128 and 512)", async (t) => {
  for (const [mode, threshold] of [
    ["context-takeover", 128],
    ["no-context-takeover", 512],
  ] as Array<[CompressionMode, number]>) {
    const { conn, up } = await wireServer(t, { compression: mode });
    const inflater = new PeerInflater(15, mode === "context-takeover");
    for (const n of [0, 1, threshold - 1, threshold, threshold + 1, 5000]) {
      const data = textPayload(n);
      await conn.write(MessageType.Text, data);
      const f = await up.frames.next();
      const compressed = f.rsv === 4;
      t.equal(compressed, n >= threshold, `${mode}: ${n} B ${n >= threshold ? "compressed" : "sent as is"}`);
      const got = compressed ? await inflater.decompress(f.payload) : f.payload;
      t.ok(got.equals(data), `${mode}: ${n} B arrives intact`);
    }
    inflater.close();
  }
  const { conn, up } = await wireServer(t, { compression: "context-takeover", compressionThreshold: 10 });
  await conn.write(MessageType.Binary, Buffer.alloc(9));
  await conn.write(MessageType.Binary, Buffer.alloc(10));
  t.equal((await up.frames.next()).rsv, 0, "custom threshold 10: 9 B as is");
  t.equal((await up.frames.next()).rsv, 4, "custom threshold 10: 10 B compressed");
});

t.test("a streamed message: RSV1 on the first frame only, frames decodable as they come", async (t) => {
  for (const mode of MODES) {
    const { conn, up } = await wireServer(t, { compression: mode });
    const inflater = new PeerInflater(15, mode === "context-takeover");
    for (let round = 0; round < 2; round++) {
      const w = conn.writer(MessageType.Text);
      const pieces = ["ab", "c".repeat(3000), "😀", ""];
      for (const p of pieces) await new Promise<void>((resolve, reject) => w.write(p, (e) => (e ? reject(e) : resolve())));
      await new Promise<void>((resolve) => w.end(resolve));
      const frames = [];
      for (;;) {
        const f = await up.frames.next();
        frames.push(f);
        if (f.fin) break;
      }
      t.equal(frames[0]!.opcode, OP.text, `${mode}: first frame is text`);
      t.equal(frames[0]!.rsv, 4, `${mode}: RSV1 on the first frame`);
      t.ok(frames.slice(1).every((f) => f.opcode === OP.cont && f.rsv === 0), `${mode}: continuations without RSV1`);
      const got = await inflater.decompress(Buffer.concat(frames.map((f) => f.payload)));
      t.equal(got.toString(), pieces.join(""), `${mode} round ${round}: the message inflates whole`);
    }
    inflater.close();
  }
});

t.test("control frames and small data never carry RSV1; pings pass while a compressed writer is open", async (t) => {
  const { conn, up } = await wireServer(t, { compression: "context-takeover", compressionThreshold: 0 });
  void conn.closeRead();
  const w = conn.writer(MessageType.Binary);
  await new Promise<void>((resolve) => w.write(Buffer.alloc(1000, 1), () => resolve()));
  up.frames.socket.write(frame(OP.ping, "p1"));
  const first = await up.frames.next();
  const pong = await up.frames.next();
  t.equal(first.rsv, 4, "data frame compressed");
  t.equal(pong.opcode, OP.pong, "pong between frames");
  t.equal(pong.rsv, 0, "pong has no RSV1");
  t.equal(pong.payload.toString(), "p1");
  await new Promise<void>((resolve) => w.end(resolve));
  const last = await up.frames.next();
  t.same([last.opcode, last.rsv, last.fin], [OP.cont, 0, true], "final continuation");
  void conn.close(1000, "bye");
  const close = await up.frames.next();
  t.same([close.opcode, close.rsv], [OP.close, 0], "close frame has no RSV1");
});

t.test("enableWriteCompression(false) sends plain frames; setCompressionLevel changes later messages", async (t) => {
  const { conn, up } = await wireServer(t, { compression: "context-takeover", compressionThreshold: 0 });
  const inflater = new PeerInflater(15, true);
  const data = textPayload(20_000);
  conn.enableWriteCompression(false);
  await conn.write(MessageType.Text, data);
  const plain = await up.frames.next();
  t.equal(plain.rsv, 0, "not compressed");
  t.ok(plain.payload.equals(data));
  conn.enableWriteCompression(true);
  await conn.write(MessageType.Text, data);
  const compressed = await up.frames.next();
  t.equal(compressed.rsv, 4);
  t.ok((await inflater.decompress(compressed.payload)).equals(data));
  conn.setCompressionLevel(0);
  await conn.write(MessageType.Text, data);
  const stored = await up.frames.next();
  t.equal(stored.rsv, 4, "level 0 still uses the extension");
  t.ok(stored.payload.length >= data.length, `level 0 stores: ${stored.payload.length} B`);
  t.ok((await inflater.decompress(stored.payload)).equals(data), "and decodes after the earlier messages");
  t.throws(() => conn.setCompressionLevel(10), RangeError);
  t.throws(() => conn.setCompressionLevel(1.5), RangeError);
  inflater.close();
});

t.test("a compressed write with window bits 8 requested falls back to plain frames", async (t) => {
  const srv = await startWsconnServer({ compression: "context-takeover", compressionThreshold: 0 });
  t.teardown(() => srv.close());
  const up = await rawUpgrade(srv.port, "permessage-deflate; server_max_window_bits=8");
  t.equal(up.extensions, "permessage-deflate; server_max_window_bits=8");
  const { conn } = await srv.next();
  await conn.write(MessageType.Text, textPayload(5000));
  const f = await up.frames.next();
  t.equal(f.rsv, 0, "zlib cannot keep a 256-byte window: the message goes out uncompressed, which is legal");
  t.ok(f.payload.equals(textPayload(5000)));
  // It still reads compressed messages.
  const peer = new PeerDeflater(15, true);
  up.frames.socket.write(frame(OP.text, await peer.compress(Buffer.from("inbound")), { rsv1: true }));
  t.equal((await conn.read()).text(), "inbound");
  peer.close();
  conn.closeNow();
  up.socket.destroy();
});

t.test("bad compression options: accept answers 500, dial rejects before connecting", async (t) => {
  const srv = await startWsconnServer({ compression: "context-takeover", compressionLevel: 12 });
  t.teardown(() => srv.close());
  const up = await rawUpgrade(srv.port, "permessage-deflate");
  t.match(up.status, /^HTTP\/1\.1 500/, "a misconfigured server answers 500, not 101");
  up.socket.destroy();
  const answering = await startAnsweringServer(() => "permessage-deflate");
  t.teardown(() => answering.close());
  for (const options of [{ compressionLevel: -1 }, { compression: "gzip" as CompressionMode }, { compressionThreshold: -5 }]) {
    const err = await rejection(dial(answering.url, { compression: "context-takeover", ...options }));
    t.ok(err instanceof RangeError || err instanceof TypeError, `${JSON.stringify(options)}: ${(err as Error).message}`);
  }
  t.equal(answering.requests.length, 0, "dial never connected");
});

t.test("the compressionLevel option sets the level from the first message", async (t) => {
  const data = textPayload(20_000);
  const sizes: number[] = [];
  for (const level of [0, 1, 9]) {
    const { conn, up } = await wireServer(t, { compression: "no-context-takeover", compressionThreshold: 0, compressionLevel: level });
    await conn.write(MessageType.Text, data);
    const f = await up.frames.next();
    t.equal(f.rsv, 4, `level ${level}: compressed frame`);
    const inflater = new PeerInflater(15, false);
    t.ok((await inflater.decompress(f.payload)).equals(data), `level ${level}: decodes`);
    inflater.close();
    sizes.push(f.payload.length);
  }
  t.ok(sizes[0]! >= data.length, `level 0 stores (${sizes[0]} B)`);
  t.ok(sizes[2]! <= sizes[1]! && sizes[1]! < data.length / 10, `level 1: ${sizes[1]} B, level 9: ${sizes[2]} B`);
});
