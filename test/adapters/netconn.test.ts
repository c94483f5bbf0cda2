/**
 * netConn: a connection as a byte stream. Pipelines and iteration, how every
 * kind of close maps to 'end' or an error, destroy and abort, end() flushing,
 * the wrong message type, the net.Socket pass-through, and backpressure both
 * ways with a slow reader.
 */

import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo, Socket } from "node:net";
import { Duplex, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import t, { type Test } from "tap";
import { WebSocket, WebSocketServer } from "ws";
import { accept, CloseError, closeStatus, type Conn, dial, type DialOptions, MessageType, netConn } from "../../src/index.js";

interface Pair {
  client: Conn;
  server: Conn;
  /** The server's TCP socket, for resets. */
  serverSocket: Socket;
  url: string;
}

/** pair opens a connection to a wsconn server on 127.0.0.1:0; the test's teardown closes it all. */
async function pair(t: Test, clientOptions: DialOptions = {}): Promise<Pair> {
  const { url, next, close } = await startServer();
  t.teardown(close);
  const client = await dial(url, clientOptions);
  const { conn: server, socket: serverSocket } = await next();
  t.teardown(() => {
    client.closeNow();
    server.closeNow();
  });
  return { client, server, serverSocket, url };
}

async function startServer(): Promise<{ url: string; next(): Promise<{ conn: Conn; socket: Socket }>; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  const sockets = new Set<Socket>();
  const accepted: Array<Promise<{ conn: Conn; socket: Socket }>> = [];
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("upgrade", (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    accepted.push(accept(req, socket, head).then((conn) => ({ conn, socket })));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as AddressInfo).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    next: async () => {
      while (accepted.length === 0) await once(server, "upgrade");
      return accepted.shift()!;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** outcome reads `stream` to its end and says how it ended. */
function outcome(stream: Duplex): Promise<{ data: Buffer; ended: boolean; error?: Error }> {
  const chunks: Buffer[] = [];
  return new Promise((resolve) => {
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => resolve({ data: Buffer.concat(chunks), ended: true }));
    stream.on("error", (error) => resolve({ data: Buffer.concat(chunks), ended: false, error }));
  });
}

/** readBytes reads messages from `conn` until `n` payload bytes have arrived. */
async function readBytes(conn: Conn, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  while (got < n) {
    const { data } = await conn.read();
    chunks.push(data);
    got += data.length;
  }
  return Buffer.concat(chunks);
}

const upper = (): Transform =>
  new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      callback(null, Buffer.from(chunk.toString("latin1").toUpperCase(), "latin1"));
    },
  });

t.test("pipeline(netConn, uppercase, netConn) echoes a byte stream", async (t) => {
  const { client, server } = await pair(t);
  const ws = netConn(server, MessageType.Binary);
  const served = pipeline(ws, upper(), ws);
  const text = "hello, byte stream over websocket; ".repeat(2000);
  for (let i = 0; i < text.length; i += 1000) await client.write(MessageType.Binary, text.slice(i, i + 1000));
  const echoed = await readBytes(client, text.length);
  t.equal(echoed.toString("latin1"), text.toUpperCase(), "every byte came back upper-cased, in order");
  await client.close();
  await served;
  t.pass("the pipeline ends without error when the peer closes with 1000");
  t.same(await server.closed, { code: 1000, reason: "", wasClean: true });
  t.ok(ws.destroyed, "the Duplex is closed");
});

t.test("pipeline(netConn, uppercase, netConn) with a ws client", async (t) => {
  const { url, next, close } = await startServer();
  t.teardown(close);
  const client = new WebSocket(url);
  const { conn } = await next();
  const ws = netConn(conn, MessageType.Binary);
  const served = pipeline(ws, upper(), ws);
  await once(client, "open");
  const received: Buffer[] = [];
  let length = 0;
  const all = new Promise<void>((resolve) =>
    client.on("message", (data: Buffer, isBinary: boolean) => {
      t.ok(isBinary, "netConn writes binary messages");
      received.push(data);
      length += data.length;
      if (length === 6) resolve();
    }),
  );
  client.send(Buffer.from("abc"));
  client.send(Buffer.from("def"));
  await all;
  t.equal(Buffer.concat(received).toString(), "ABCDEF");
  client.close(1000);
  await served;
  t.same(await conn.closed, { code: 1000, reason: "", wasClean: true });
});

t.test("for await over netConn reads messages as one byte stream, streamed", async (t) => {
  const { client, server } = await pair(t);
  const big = randomBytes(1024 * 1024);
  const parts = [Buffer.from("abc"), big, Buffer.alloc(0), Buffer.from("xyz")];
  const sent = (async () => {
    for (const part of parts) await server.write(MessageType.Binary, part);
    await server.close();
  })();
  const chunks: Buffer[] = [];
  for await (const chunk of netConn(client, MessageType.Binary)) chunks.push(chunk as Buffer);
  await sent;
  t.ok(Buffer.concat(chunks).equals(Buffer.concat(parts)), "all bytes, in order, across message boundaries");
  t.ok(Math.max(...chunks.map((c) => c.length)) <= 64 * 1024, "the 1 MiB message (past the default read limit) arrived in pieces");
  t.same(await client.closed, { code: 1000, reason: "", wasClean: true });
});

t.test("how a close from the peer ends the stream", async (t) => {
  const cases: Array<{ name: string; close: (c: Conn) => Promise<void>; code: number; eof: boolean }> = [
    { name: "1000 is EOF", close: (c) => c.close(1000), code: 1000, eof: true },
    { name: "1001 is EOF", close: (c) => c.close(1001, "going away"), code: 1001, eof: true },
    { name: "1011 is an error", close: (c) => c.close(1011, "boom"), code: 1011, eof: false },
    { name: "4000 is an error", close: (c) => c.close(4000, "app"), code: 4000, eof: false },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const { client, server } = await pair(t);
      const ws = netConn(client, MessageType.Binary);
      const result = outcome(ws);
      await server.write(MessageType.Binary, "before the close");
      await c.close(server);
      const { data, ended, error } = await result;
      t.equal(data.toString(), "before the close", "data sent before the close is read first");
      t.equal(ended, c.eof, c.eof ? "'end'" : "no 'end'");
      if (!c.eof) {
        t.type(error, CloseError);
        t.equal(closeStatus(error), c.code, "closeStatus(err) gives the peer's code");
        t.equal((error as CloseError).remote, true);
      }
      if (!ws.closed) await once(ws, "close");
      t.pass("the stream closes");
      t.equal((await client.closed).code, c.code);
    });
  }
});

t.test("a close frame without a status (1005) from a ws server is EOF", async (t) => {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  t.teardown(() => new Promise<void>((resolve) => wss.close(() => resolve())));
  wss.on("connection", (peer) => {
    peer.send(Buffer.from("last words"));
    peer.close();
  });
  await once(wss, "listening");
  const client = await dial(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  const { data, ended } = await outcome(netConn(client, MessageType.Binary));
  t.equal(data.toString(), "last words");
  t.ok(ended, "'end'");
  t.equal((await client.closed).code, 1005);
});

t.test("a socket reset destroys the stream with 1006", async (t) => {
  const { client, serverSocket } = await pair(t);
  const ws = netConn(client, MessageType.Binary);
  const result = outcome(ws);
  serverSocket.resetAndDestroy();
  const { ended, error } = await result;
  t.notOk(ended);
  t.equal(closeStatus(error), 1006);
  t.match(String((error as Error).message), /ECONNRESET|without a close frame/);
});

t.test("destroy() drops the connection: the peer sees 1006", async (t) => {
  const { client, server } = await pair(t);
  const ws = netConn(client, MessageType.Binary);
  ws.destroy();
  if (!ws.closed) await once(ws, "close");
  t.equal((await server.closed).code, 1006, "no close frame came");
  t.equal((await client.closed).code, 1006);
});

t.test("aborting the signal destroys the stream with its reason", async (t) => {
  const { client, server } = await pair(t);
  const controller = new AbortController();
  const ws = netConn(client, MessageType.Binary, controller.signal);
  const result = outcome(ws);
  const reason = new Error("caller gave up");
  controller.abort(reason);
  t.equal((await result).error, reason);
  t.equal((await server.closed).code, 1006);
});

t.test("an already aborted signal destroys the stream at once", async (t) => {
  const { client, server } = await pair(t);
  const ws = netConn(client, MessageType.Binary, AbortSignal.abort(new Error("too late")));
  const { error } = await outcome(ws);
  t.equal(error?.message, "too late");
  t.equal((await server.closed).code, 1006);
});

t.test("end() sends every pending write, then closes with 1000", async (t) => {
  const { client, server } = await pair(t);
  const ws = netConn(client, MessageType.Binary);
  const data = randomBytes(4 * 1024 * 1024);
  for (let i = 0; i < data.length; i += 65536) ws.write(data.subarray(i, i + 65536));
  ws.end();
  const { data: got, ended } = await outcome(netConn(server, MessageType.Binary));
  t.ok(ended, "the peer sees EOF");
  t.ok(got.equals(data), "after every byte");
  await once(ws, "finish");
  t.same(await client.closed, { code: 1000, reason: "", wasClean: true }, "'finish' follows the close handshake");
  t.equal(ws.bytesWritten, data.length);
});

t.test("end() completes the close handshake while unread data is queued", async (t) => {
  let socket: Socket | undefined;
  const { client, server } = await pair(t, {
    closeTimeout: 2000,
    createConnection: (options) => (socket = net.connect(options as net.NetConnectOpts)),
  });
  const paused = new Promise<void>((resolve) => {
    const pause = socket!.pause;
    socket!.pause = function (this: Socket) {
      resolve();
      return pause.call(this);
    };
  });
  const ws = netConn(client, MessageType.Binary);
  ws.pause();
  ws.on("readable", () => undefined);
  // Far more than the read queue holds: the client stops reading its socket.
  const flood = (async () => {
    for (let i = 0; i < 256; i++) await server.write(MessageType.Binary, Buffer.alloc(65536));
  })().catch((err: unknown) => err);
  await paused;
  ws.end();
  await once(ws, "finish");
  t.same(await client.closed, { code: 1000, reason: "", wasClean: true }, "the peer's close frame was read behind the data");
  t.type(await flood, CloseError, "the peer's remaining writes fail");
});

t.test("a message of the other type fails the connection with 1003", async (t) => {
  const { client, server } = await pair(t);
  const ws = netConn(client, MessageType.Binary);
  const result = outcome(ws);
  await server.write(MessageType.Text, "not bytes");
  const { error } = await result;
  t.equal(closeStatus(error), 1003);
  t.match(String(error?.message), /expected binary messages, received text/);
  t.equal((await server.closed).code, 1003, "the peer got the close code");
});

t.test("text netConn sends and reads text messages", async (t) => {
  const { client, server } = await pair(t);
  const ws = netConn(client, MessageType.Text);
  ws.write("héllo");
  const msg = await server.read();
  t.equal(msg.type, MessageType.Text);
  t.equal(msg.text(), "héllo");
  await server.write(MessageType.Text, "wörld");
  const [chunk] = (await once(ws, "data")) as [Buffer];
  t.equal(chunk.toString(), "wörld");
  ws.destroy();
});

t.test("writing after the peer closed fails with its CloseError", async (t) => {
  const { client, server } = await pair(t);
  const ws = netConn(client, MessageType.Binary);
  await server.close(1000);
  await client.closed;
  ws.write("too late");
  const [error] = (await once(ws, "error")) as [Error];
  t.equal(closeStatus(error), 1000);
});

t.test("a bad message type throws", async (t) => {
  const { client } = await pair(t);
  t.throws(() => netConn(client, 3 as MessageType), TypeError);
});

t.test("net.Socket pass-through", async (t) => {
  const { client, server } = await pair(t);
  const ws = netConn(client, MessageType.Binary);
  t.equal(ws.remoteAddress, "127.0.0.1");
  t.equal(ws.remotePort, client.remotePort);
  t.equal(ws.remoteFamily, "IPv4");
  t.equal(ws.localAddress, "127.0.0.1");
  t.equal(ws.localPort, client.localPort);
  t.equal(ws.localFamily, "IPv4");
  t.same(ws.address(), { address: "127.0.0.1", family: "IPv4", port: client.localPort });
  t.equal(ws.setNoDelay(false), ws);
  t.equal(ws.setNoDelay(), ws);
  t.equal(ws.setKeepAlive(true, 1000), ws);
  t.equal(ws.bufferedAmount, 0);
  // Activity pushes the idle timeout back; it is not armed by the end of this exchange.
  const early = (): void => void t.fail("'timeout' while busy");
  ws.setTimeout(60_000, early);
  ws.write("12345");
  await server.read();
  t.equal(ws.bytesWritten, 5);
  await server.write(MessageType.Binary, "abc");
  await once(ws, "data");
  t.equal(ws.bytesRead, 3);
  ws.setTimeout(0, early);
  t.equal(ws.listenerCount("timeout"), 0, "setTimeout(0, callback) removes the callback");
  // An idle stream emits 'timeout' and stays open, as a net.Socket does.
  let fired = 0;
  ws.setTimeout(20, () => fired++);
  await once(ws, "timeout");
  t.equal(fired, 1);
  t.notOk(ws.destroyed, "'timeout' does not close the stream");
  ws.setTimeout(0);
  ws.destroy();
  await client.closed;
  t.same(netConn(client, MessageType.Binary).address(), {}, "no address once the socket is gone");
});

t.test("breaking out of for await in the middle of a message drops the connection", async (t) => {
  const { client, server } = await pair(t);
  const ws = netConn(client, MessageType.Binary);
  const writing = server.write(MessageType.Binary, Buffer.alloc(8 * 1024 * 1024)).catch((err: unknown) => err);
  let bytes = 0;
  for await (const chunk of ws) {
    bytes += (chunk as Buffer).length;
    break;
  }
  t.ok(bytes > 0 && bytes < 8 * 1024 * 1024, "left after the first chunk");
  t.equal((await server.closed).code, 1006, "the peer sees the connection dropped");
  t.equal(closeStatus(await writing), 1006, "and its write fails");
});

/**
 * slowReader runs a writer netConn against a reader netConn that takes 64 KiB
 * per millisecond, and records the most bytes ever buffered on each side.
 */
async function slowReader(t: Test, writer: Conn, reader: Conn, total: number) {
  const w = netConn(writer, MessageType.Binary);
  const r = netConn(reader, MessageType.Binary);
  const baseline = process.memoryUsage.rss();
  const peak = { writerBuffered: 0, readerBuffered: 0, inFlight: 0, rss: baseline, needDrain: 0 };
  let written = 0;
  let consumed = 0;
  const sample = (): void => {
    peak.writerBuffered = Math.max(peak.writerBuffered, w.writableLength + w.bufferedAmount);
    peak.readerBuffered = Math.max(peak.readerBuffered, r.readableLength);
    peak.inFlight = Math.max(peak.inFlight, written - consumed);
    peak.rss = Math.max(peak.rss, process.memoryUsage.rss());
  };
  const sentHash = createHash("sha256");
  const writing = (async () => {
    while (written < total) {
      const chunk = randomBytes(65536);
      sentHash.update(chunk);
      written += chunk.length;
      const ok = w.write(chunk);
      sample();
      if (!ok) {
        if (w.writableNeedDrain) peak.needDrain++;
        await once(w, "drain");
      }
    }
    w.end();
  })();
  const gotHash = createHash("sha256");
  for await (const chunk of r) {
    gotHash.update(chunk as Buffer);
    consumed += (chunk as Buffer).length;
    sample();
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await writing;
  t.equal(consumed, total);
  t.equal(gotHash.digest("hex"), sentHash.digest("hex"), "byte-exact");
  return { ...peak, rssGrowth: peak.rss - baseline };
}

for (const direction of ["client to server", "server to client"] as const) {
  t.test(`a slow reader pauses the writer (${direction})`, async (t) => {
    const { client, server } = await pair(t);
    const [writer, reader] = direction === "client to server" ? [client, server] : [server, client];
    const total = 24 * 1024 * 1024;
    const peak = await slowReader(t, writer, reader, total);
    const mib = (n: number): string => (n / 1048576).toFixed(2);
    t.comment(
      `${direction}: writer buffered at most ${mib(peak.writerBuffered)} MiB, reader ${mib(peak.readerBuffered)} MiB, ` +
        `in flight ${mib(peak.inFlight)} MiB (with kernel buffers), RSS growth ${mib(peak.rssGrowth)} MiB`,
    );
    t.ok(peak.needDrain > 0, "the writer had to wait for 'drain'");
    t.ok(peak.writerBuffered <= 512 * 1024, "the writer's user-space buffers stay under 512 KiB");
    t.ok(peak.readerBuffered <= 256 * 1024, "the reader's buffer stays under 256 KiB");
    t.ok(peak.inFlight < total / 2, "the writer never ran ahead by half the data");
    t.ok(peak.rssGrowth < 64 * 1048576, "RSS grows by less than 64 MiB");
  });
}
