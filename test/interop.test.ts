/**
 * Interop echo matrix: wsconn against itself, against the `ws` client and
 * server, and against undici's WebSocket client, for the length boundaries of
 * the framing (0, 1, 125–127, 65535, 65536, 16 MiB), text and binary, whole
 * and fragmented messages; and the masking rules (RFC 6455 §5.1, §5.3) seen
 * from a raw peer.
 */

import t from "tap";
import type { WebSocket } from "ws";
import { type Conn, dial, MessageType } from "../src/index.js";
import { type Accepted, binaryPayload, fragmentCuts, OP, openUndici, splitAt, startRawServer, startWsconnServer, startWsServer, textPayload, wsClient, wsMessages, wsSendFragments } from "./helpers/interop.js";

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];

const MiB = 1024 * 1024;
const BIG = 16 * MiB;
const LIMIT = BIG + 1024;
const SIZES = [0, 1, 125, 126, 127, 65535, 65536];

interface Case {
  name: string;
  type: MessageType;
  data: Buffer;
}

/** cases lists every boundary size as text and binary, plus the 16 MiB ones. */
function cases(big: Array<{ type: MessageType }>): Case[] {
  const list: Case[] = [];
  for (const n of SIZES) {
    list.push({ name: `text ${n}`, type: MessageType.Text, data: textPayload(n) });
    list.push({ name: `binary ${n}`, type: MessageType.Binary, data: binaryPayload(n, n) });
  }
  for (const { type } of big) {
    const data = type === MessageType.Text ? textPayload(BIG) : binaryPayload(BIG, 3);
    list.push({ name: `${type === MessageType.Text ? "text" : "binary"} 16 MiB`, type, data });
  }
  return list;
}

const WHOLE_CASES = cases([{ type: MessageType.Binary }]);
const FRAG_CASES = cases([{ type: MessageType.Text }]);

/** writeFragments sends `data` through a writer, one frame per piece, each write awaited. */
async function writeFragments(conn: Conn, type: MessageType, data: Buffer): Promise<void> {
  const w = conn.writer(type);
  for (const piece of splitAt(data, fragmentCuts(data.length))) {
    await new Promise<void>((resolve, reject) => w.write(piece, (err) => (err ? reject(err) : resolve())));
  }
  await new Promise<void>((resolve) => w.end(resolve));
}

/** wsconnEcho answers each message with itself, fragmented when the request path says so. */
function wsconnEcho({ conn, req }: Accepted): void {
  const frag = req.url === "/frag";
  void (async () => {
    try {
      for await (const msg of conn) {
        if (frag) await writeFragments(conn, msg.type, msg.data);
        else await conn.write(msg.type, msg.data);
      }
    } catch {
      // the client looks at what it received
    }
  })();
}

function wsEcho(ws: WebSocket, req: { url?: string | undefined }): void {
  const frag = req.url === "/frag";
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (frag) void wsSendFragments(ws, splitAt(data, fragmentCuts(data.length)), isBinary).catch(() => undefined);
    else ws.send(data, { binary: isBinary });
  });
}

/** A client under test: sends one message and receives the next one. */
interface Client {
  send(c: Case, frag: boolean): Promise<void>;
  receive(): Promise<{ type: MessageType; data: Buffer }>;
  close(): Promise<void>;
}

async function wsconnClient(url: string): Promise<Client> {
  const conn = await dial(url, { readLimit: LIMIT });
  return {
    send: (c, frag) => (frag ? writeFragments(conn, c.type, c.data) : conn.write(c.type, c.data)),
    receive: () => conn.read(),
    close: () => conn.close(),
  };
}

async function wsPeerClient(url: string): Promise<Client> {
  const ws = await wsClient(url, { maxPayload: LIMIT });
  const messages = wsMessages(ws);
  return {
    send: (c, frag) =>
      frag
        ? wsSendFragments(ws, splitAt(c.data, fragmentCuts(c.data.length)), c.type === MessageType.Binary)
        : new Promise((resolve, reject) => ws.send(c.data, { binary: c.type === MessageType.Binary }, (e) => (e ? reject(e) : resolve()))),
    receive: async () => {
      const m = await messages.shift();
      return { type: m.isBinary ? MessageType.Binary : MessageType.Text, data: m.data };
    },
    close: async () => {
      ws.close(1000);
      await new Promise((resolve) => ws.once("close", resolve));
    },
  };
}

async function undiciClient(url: string): Promise<Client> {
  const peer = await openUndici(url);
  return {
    send: async (c) => peer.send(c.type, c.data),
    receive: () => peer.receive(),
    close: () => peer.close(),
  };
}

/** runMatrix echoes every case through one connection and compares bytes and type. */
async function runMatrix(t: TestContext, client: Client, list: Case[], frag: boolean): Promise<void> {
  for (const c of list) {
    await client.send(c, frag);
    const got = await client.receive();
    t.equal(got.type, c.type, `${c.name}: type`);
    t.ok(got.data.equals(c.data), `${c.name}: ${got.data.length} bytes, byte-exact`);
  }
  await client.close();
}

t.test("wsconn server", async (t) => {
  const srv = await startWsconnServer({ readLimit: LIMIT }, wsconnEcho);
  t.teardown(() => srv.close());
  for (const mode of ["whole", "frag"] as const) {
    const list = mode === "whole" ? WHOLE_CASES : FRAG_CASES;
    t.test(`wsconn client, ${mode}`, async (t) => runMatrix(t, await wsconnClient(`${srv.url}/${mode}`), list, mode === "frag"));
    t.test(`ws client, ${mode}`, async (t) => runMatrix(t, await wsPeerClient(`${srv.url}/${mode}`), list, mode === "frag"));
    // undici's WebSocket cannot send fragments; the server still echoes in fragments on /frag.
    t.test(`undici client, ${mode} echo`, async (t) => runMatrix(t, await undiciClient(`${srv.url}/${mode}`), list, false));
  }
});

t.test("ws server with the wsconn client", async (t) => {
  const srv = await startWsServer({ maxPayload: LIMIT }, wsEcho);
  t.teardown(() => srv.close());
  for (const mode of ["whole", "frag"] as const) {
    const list = mode === "whole" ? WHOLE_CASES : FRAG_CASES;
    t.test(mode, async (t) => runMatrix(t, await wsconnClient(`${srv.url}/${mode}`), list, mode === "frag"));
  }
});

t.test("client frames are masked with a fresh key per frame", async (t) => {
  const srv = await startRawServer();
  t.teardown(() => srv.close());
  const conn = await dial(srv.url);
  const peer = await srv.next();
  const payload = Buffer.from("same message, same bytes");
  await conn.write(MessageType.Binary, payload);
  await conn.write(MessageType.Binary, payload);
  const w = conn.writer(MessageType.Text);
  w.write("fragment one ");
  w.end("and two");
  void conn.ping().catch(() => undefined);
  const frames = [];
  for (let i = 0; i < 5; i++) frames.push(await peer.frames.next());
  for (const f of frames) {
    t.ok(f.masked, `opcode ${f.opcode} frame is masked`);
    t.equal(f.rsv, 0, "no reserved bits");
  }
  t.ok(frames[0]!.payload.equals(payload) && frames[1]!.payload.equals(payload), "payloads unmask to the message");
  const keys = new Set(frames.map((f) => f.maskKey!.toString("hex")));
  t.equal(keys.size, frames.length, "every frame has its own mask key");
  const text = Buffer.concat(frames.filter((f) => f.opcode !== OP.ping).slice(2).map((f) => f.payload)).toString();
  t.equal(text, "fragment one and two", "the fragmented message reassembles");
  t.equal(frames.find((f) => f.opcode === OP.ping)?.masked, true, "control frames are masked too");
  conn.closeNow();
});

t.test("server frames are not masked, and a masked server frame fails the client with 1002", async (t) => {
  const srv = await startWsconnServer();
  t.teardown(() => srv.close());
  const { rawClient } = await import("./helpers/interop.js");
  const peer = await rawClient(srv.port);
  const { conn } = await srv.next();
  await conn.write(MessageType.Text, "hello");
  void conn.ping().catch(() => undefined);
  const data = await peer.frames.next();
  const ping = await peer.frames.next();
  t.equal(data.masked, false, "data frame unmasked");
  t.equal(ping.masked, false, "ping unmasked");
  t.equal(data.payload.toString(), "hello");
  conn.closeNow();
  peer.socket.destroy();

  // The client side: a raw server sends a masked frame.
  const raw = await startRawServer();
  t.teardown(() => raw.close());
  const client = await dial(raw.url);
  const server = await raw.next();
  server.socket.write(Buffer.from([0x81, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2]));
  const err = await client.read().then(
    () => undefined,
    (e: unknown) => e,
  );
  t.match(err, { code: 1002 }, "read rejects with 1002");
  const close = await server.frames.nextNonControl();
  t.equal(close.opcode, OP.close);
  t.equal(close.payload.readUInt16BE(0), 1002, "the client sends 1002");
  server.socket.destroy();
  await client.closed;
});
