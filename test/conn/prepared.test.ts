/**
 * PreparedMessage: framed (and compressed) once per connection variant,
 * lazily, and written to many connections: plain and permessage-deflate
 * connections of both modes, servers (shared frame bytes) and clients
 * (framed again, masked). Checked by real peers (`ws`, wsconn) and on the
 * raw wire.
 */

import t from "tap";
import type { WebSocket } from "ws";
import { type CompressionMode, type Conn, dial, MessageType, PreparedMessage } from "../../src/index.js";
import { PeerInflater, rawUpgrade, type RawUpgrade, startAnsweringServer } from "../helpers/deflate-peer.js";
import { startWsconnServer, textPayload, wsClient, type WsconnServer, wsMessages } from "../helpers/interop.js";

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];

async function server(t: TestContext, compression?: CompressionMode): Promise<WsconnServer> {
  const srv = await startWsconnServer(compression ? { compression } : {});
  t.teardown(() => srv.close());
  return srv;
}

/** connectRaw opens `n` raw clients with `offer` and returns them with their server-side Conns. */
async function connectRaw(srv: WsconnServer, n: number, offer: string | undefined): Promise<Array<{ up: RawUpgrade; conn: Conn }>> {
  const out: Array<{ up: RawUpgrade; conn: Conn }> = [];
  for (let i = 0; i < n; i++) {
    const up = await rawUpgrade(srv.port, offer);
    const { conn } = await srv.next();
    out.push({ up, conn });
  }
  return out;
}

function closeRaw(list: Array<{ up: RawUpgrade; conn: Conn }>): void {
  for (const { up, conn } of list) {
    conn.closeNow();
    up.socket.destroy();
  }
}

t.test("framed once per variant, lazily, for many connections", async (t) => {
  const data = textPayload(5000);
  const pm = new PreparedMessage(MessageType.Text, data);
  t.equal(pm.framings, 0, "nothing framed before the first write");

  const plainSrv = await server(t);
  const plain = await connectRaw(plainSrv, 10, undefined);
  for (const { conn } of plain) await conn.writePrepared(pm);
  t.equal(pm.framings, 1, "10 plain connections: one framing");

  const ctxSrv = await server(t, "context-takeover");
  const ctx = await connectRaw(ctxSrv, 10, "permessage-deflate");
  for (const { conn } of ctx) await conn.writePrepared(pm);
  t.equal(pm.framings, 2, "10 compressed connections: one more");

  const nctxSrv = await server(t, "no-context-takeover");
  const nctx = await connectRaw(nctxSrv, 10, "permessage-deflate");
  for (const { conn } of nctx) await conn.writePrepared(pm);
  t.equal(pm.framings, 3, "no-context-takeover (another threshold): one more");

  const small = await connectRaw(ctxSrv, 3, "permessage-deflate; server_max_window_bits=10");
  for (const { conn } of small) await conn.writePrepared(pm);
  t.equal(pm.framings, 4, "window bits 10: one more");

  for (const { conn } of plain) await conn.writePrepared(pm);
  t.equal(pm.framings, 4, "writing again frames nothing");

  // Every receiver gets the message; compressed ones with RSV1 and a self-contained stream.
  for (const [label, list, bits] of [
    ["plain", plain, 0],
    ["context-takeover", ctx, 15],
    ["no-context-takeover", nctx, 15],
    ["window 10", small, 10],
  ] as Array<[string, Array<{ up: RawUpgrade }>, number]>) {
    for (const { up } of list) {
      const f = await up.frames.next();
      t.equal(f.opcode, MessageType.Text, `${label}: text`);
      if (bits === 0) {
        t.equal(f.rsv, 0, `${label}: not compressed`);
        t.ok(f.payload.equals(data), `${label}: payload`);
      } else {
        t.equal(f.rsv, 4, `${label}: RSV1`);
        const inflater = new PeerInflater(bits, false);
        t.ok((await inflater.decompress(f.payload)).equals(data), `${label}: decodes alone within 2^${bits}`);
        inflater.close();
      }
    }
  }
  for (const { up } of plain) t.ok((await up.frames.next()).payload.equals(data), "plain, second write");
  closeRaw([...plain, ...ctx, ...nctx, ...small]);
});

t.test("below the threshold, or with write compression off, the plain frame is used", async (t) => {
  const srv = await server(t, "context-takeover");
  const [a, b] = await connectRaw(srv, 2, "permessage-deflate");
  const small = new PreparedMessage(MessageType.Binary, Buffer.alloc(127, 1));
  await a!.conn.writePrepared(small);
  const f1 = await a!.up.frames.next();
  t.same([f1.rsv, f1.payload.length], [0, 127], "127 B < 128: not compressed");
  const big = new PreparedMessage(MessageType.Binary, Buffer.alloc(10_000, 2));
  b!.conn.enableWriteCompression(false);
  await b!.conn.writePrepared(big);
  const f2 = await b!.up.frames.next();
  t.same([f2.rsv, f2.payload.length], [0, 10_000], "compression off: plain frame");
  closeRaw([a!, b!]);
});

t.test("data is copied at construction", async (t) => {
  const srv = await server(t);
  const [c] = await connectRaw(srv, 1, undefined);
  const source = Buffer.from("original");
  const pm = new PreparedMessage(MessageType.Binary, source);
  source.write("CHANGED!");
  t.equal(pm.data.toString(), "original");
  await c!.conn.writePrepared(pm);
  t.equal((await c!.up.frames.next()).payload.toString(), "original", "the wire carries the original bytes");
  const view = new Uint8Array([1, 2, 3]);
  const pm2 = new PreparedMessage(MessageType.Binary, view);
  view[0] = 9;
  t.same([...pm2.data], [1, 2, 3], "Uint8Array copied too");
  t.equal(new PreparedMessage(MessageType.Text, "héllo").data.toString(), "héllo", "strings are UTF-8 encoded");
  closeRaw([c!]);
});

t.test("bad type or data throws a TypeError", async (t) => {
  t.throws(() => new PreparedMessage(9 as MessageType, "x"), TypeError);
  t.throws(() => new PreparedMessage(MessageType.Text, 42 as unknown as string), TypeError);
});

t.test("prepared messages between ordinary ones keep context takeover intact", async (t) => {
  // The prepared frame is its own deflate stream, but the receiver's window
  // now holds its bytes: the connection's compressor must not refer past it.
  const text = "The quick brown fox jumps over the lazy dog. ".repeat(40);
  const other = "something else entirely, 0123456789 ".repeat(30);
  for (const mode of ["context-takeover", "no-context-takeover"] as CompressionMode[]) {
    const srv = await server(t, mode);
    const ws = await wsClient(srv.url, { perMessageDeflate: true });
    const received = wsMessages(ws);
    const { conn } = await srv.next();
    const wsconnClient = await dial(srv.url, { compression: mode });
    const { conn: conn2 } = await srv.next();
    const pm = new PreparedMessage(MessageType.Text, other);
    for (const c of [conn, conn2]) {
      await c.write(MessageType.Text, text);
      await c.writePrepared(pm);
      await c.write(MessageType.Text, text);
      await c.writePrepared(pm);
      const w = c.writer(MessageType.Text);
      w.end(text);
      await new Promise((resolve) => w.once("finish", resolve));
    }
    const expected = [text, other, text, other, text];
    for (const [i, e] of expected.entries()) {
      t.equal((await received.shift()).data.toString(), e, `${mode}: ws message ${i}`);
      t.equal((await wsconnClient.read()).text(), e, `${mode}: wsconn message ${i}`);
    }
    ws.terminate();
    wsconnClient.closeNow();
  }
});

t.test("client connections frame prepared messages again, masked", async (t) => {
  for (const mode of [undefined, "context-takeover", "no-context-takeover"] as Array<CompressionMode | undefined>) {
    const raw = await startAnsweringServer((offer) => (mode && offer ? "permessage-deflate" : undefined));
    const client = await dial(raw.url, mode ? { compression: mode } : {});
    const peer = await raw.next();
    const data = textPayload(3000);
    const pm = new PreparedMessage(MessageType.Text, data);
    await client.writePrepared(pm);
    await client.writePrepared(pm);
    const inflater = new PeerInflater(15, true);
    const keys = new Set<string>();
    for (let i = 0; i < 2; i++) {
      const f = await peer.frames.next();
      t.ok(f.masked, `${mode ?? "plain"}: masked`);
      keys.add(f.maskKey!.toString("hex"));
      t.equal(f.rsv, mode ? 4 : 0, `${mode ?? "plain"}: RSV1 ${mode ? "set" : "clear"}`);
      const got = mode ? await inflater.decompress(f.payload) : f.payload;
      t.ok(got.equals(data), `${mode ?? "plain"}: message ${i} intact`);
    }
    t.equal(keys.size, 2, "a fresh mask key per write");
    t.equal(pm.framings, 1, "framed once");
    inflater.close();
    client.closeNow();
    await raw.close();
  }
});

t.test("one prepared message to a mix of ws and wsconn peers", async (t) => {
  const srv = await server(t, "context-takeover");
  const peers: Array<{ next(): Promise<Buffer>; close(): void }> = [];
  for (const pmd of [false, true, { serverNoContextTakeover: true, clientNoContextTakeover: true }]) {
    const ws: WebSocket = await wsClient(srv.url, { perMessageDeflate: pmd });
    const q = wsMessages(ws);
    peers.push({ next: async () => (await q.shift()).data, close: () => ws.terminate() });
  }
  for (const mode of ["disabled", "context-takeover", "no-context-takeover"] as CompressionMode[]) {
    const c = await dial(srv.url, { compression: mode });
    peers.push({ next: async () => (await c.read()).data, close: () => c.closeNow() });
  }
  const conns: Conn[] = [];
  for (let i = 0; i < peers.length; i++) conns.push((await srv.next()).conn);
  const data = Buffer.from(JSON.stringify({ broadcast: true, items: Array.from({ length: 100 }, (_, i) => i) }));
  const pm = new PreparedMessage(MessageType.Binary, data);
  await Promise.all(conns.map((c) => c.writePrepared(pm)));
  for (const [i, p] of peers.entries()) t.ok((await p.next()).equals(data), `peer ${i} received it`);
  // Variants: plain (ws without deflate, wsconn disabled), deflate with context, deflate without.
  t.equal(pm.framings, 3, "three variants for six peers");
  for (const p of peers) p.close();
});
