/**
 * Test helpers for the Conn behaviour and interop suites: wsconn, `ws` and
 * raw `net` peers on 127.0.0.1 port 0, a small frame codec for scripting raw
 * peers byte by byte, deterministic payloads and a seeded PRNG. Every helper
 * that opens something returns a way to close it.
 */

import { randomBytes } from "node:crypto";
import { once } from "node:events";
import * as http from "node:http";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { WebSocket as UndiciWebSocket } from "undici";
import { type ServerOptions, WebSocket, WebSocketServer } from "ws";
import { accept, type AcceptOptions, type Conn, dial, type DialOptions, MessageType } from "../../src/index.js";
import { acceptFor, closePayload, encodeFrame as encodeRawFrame, FrameReader as ByteFrameReader, listenLocal, readHead, type ReceivedFrame, switchingProtocols, upgradeRequest } from "./raw-peer.js";

// ---- wsconn server with access to the raw socket and the request ----

/** One accepted connection with the socket under it and the upgrade request. */
export interface Accepted {
  conn: Conn;
  socket: net.Socket;
  req: http.IncomingMessage;
}

/** A wsconn server on an ephemeral port. */
export interface WsconnServer {
  url: string;
  port: number;
  /** Resolves with the next connection accepted (or one already waiting). */
  next(): Promise<Accepted>;
  close(): Promise<void>;
}

/**
 * startWsconnServer accepts every upgrade with `options`; `onConn` sees each
 * connection first (echo loops start there, before any message can arrive).
 */
export async function startWsconnServer(options: AcceptOptions = {}, onConn?: (a: Accepted) => void): Promise<WsconnServer> {
  const server = http.createServer((_req, res) => res.writeHead(426).end());
  const queue = new AsyncQueue<Accepted>();
  server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    accept(req, socket, head, options).then(
      (conn) => {
        const a = { conn, socket, req };
        onConn?.(a);
        queue.push(a);
      },
      () => undefined,
    );
  });
  const listener = await listenLocal(server);
  return { ...listener, next: () => queue.shift() };
}

/** pair dials a wsconn server and returns both ends. */
export async function pair(
  serverOptions: AcceptOptions = {},
  clientOptions: DialOptions = {},
): Promise<{ server: WsconnServer; client: Conn; peer: Accepted; close(): Promise<void> }> {
  const server = await startWsconnServer(serverOptions);
  const client = await dial(server.url, clientOptions);
  const peer = await server.next();
  return {
    server,
    client,
    peer,
    close: async () => {
      client.closeNow();
      peer.conn.closeNow();
      await server.close();
    },
  };
}

// ---- ws peers ----

/** A `ws` WebSocketServer on an ephemeral port. */
export interface WsServer {
  url: string;
  port: number;
  wss: WebSocketServer;
  /** Resolves with the next client connection and its request. */
  next(): Promise<{ ws: WebSocket; req: http.IncomingMessage }>;
  close(): Promise<void>;
}

/** startWsServer starts a `ws` server; `onConn` sees each connection first. */
export async function startWsServer(
  options: ServerOptions = {},
  onConn?: (ws: WebSocket, req: http.IncomingMessage) => void,
): Promise<WsServer> {
  const wss = new WebSocketServer({ ...options, host: "127.0.0.1", port: 0 });
  const queue = new AsyncQueue<{ ws: WebSocket; req: http.IncomingMessage }>();
  wss.on("connection", (ws, req) => {
    onConn?.(ws, req);
    queue.push({ ws, req });
  });
  await once(wss, "listening");
  const port = (wss.address() as AddressInfo).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    port,
    wss,
    next: () => queue.shift(),
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

/** wsClient opens a `ws` client and waits for it to be open. */
export async function wsClient(url: string, options: ConstructorParameters<typeof WebSocket>[2] = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, options);
  await once(ws, "open");
  return ws;
}

/** wsMessages queues every message a `ws` socket receives, as bytes with a binary flag. */
export function wsMessages(ws: WebSocket): AsyncQueue<{ data: Buffer; isBinary: boolean }> {
  const queue = new AsyncQueue<{ data: Buffer; isBinary: boolean }>();
  ws.on("message", (data, isBinary) => queue.push({ data: toBuffer(data), isBinary }));
  return queue;
}

/** wsNext resolves with the next queued message, or rejects if the socket closes first. */
export function wsNext(ws: WebSocket, queue: AsyncQueue<{ data: Buffer; isBinary: boolean }>): Promise<{ data: Buffer; isBinary: boolean }> {
  if (queue.size > 0) return queue.shift();
  return new Promise((resolve, reject) => {
    const onClose = (code: number): void => reject(new Error(`ws closed with ${code} before the message`));
    ws.once("close", onClose);
    void queue.shift().then((m) => {
      ws.off("close", onClose);
      resolve(m);
    });
  });
}

/** wsClosed resolves with the code and reason of a `ws` socket's close event. */
export function wsClosed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.reject(new Error("already closed"));
  return new Promise((resolve) => ws.once("close", (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })));
}

/** wsSendFragments sends `pieces` as one message of several frames with ws's `fin` option. */
export function wsSendFragments(ws: WebSocket, pieces: Buffer[], binary: boolean): Promise<void> {
  const sent: Array<Promise<void>> = [];
  pieces.forEach((piece, i) => {
    sent.push(
      new Promise<void>((resolve, reject) =>
        ws.send(piece, { binary, fin: i === pieces.length - 1, compress: false }, (err) => (err ? reject(err) : resolve())),
      ),
    );
  });
  return Promise.all(sent).then(() => undefined);
}

function toBuffer(data: unknown): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data as Buffer[]);
  return Buffer.from(data as ArrayBuffer);
}

// ---- raw peers ----

/** A raw TCP peer past the opening handshake, reading frames. */
export interface RawPeer {
  socket: net.Socket;
  frames: FrameReader;
}

/**
 * rawClient connects to a WebSocket server at `port`, performs the opening
 * handshake by hand and returns the socket with a frame reader on it.
 */
export async function rawClient(port: number, path = "/"): Promise<RawPeer> {
  const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
  await once(socket, "connect");
  const key = randomBytes(16).toString("base64");
  socket.write(upgradeRequest(port, { path, key }));
  const { head, rest } = await readHttpHead(socket);
  if (!head.startsWith("HTTP/1.1 101") || !head.includes(acceptFor(key))) {
    socket.destroy();
    throw new Error(`handshake refused: ${head}`);
  }
  return { socket, frames: new FrameReader(socket, rest, false) };
}

/** A raw TCP server that answers every upgrade request with 101 and hands over the socket. */
export interface RawServer {
  url: string;
  port: number;
  next(): Promise<RawPeer>;
  close(): Promise<void>;
}

/** startRawServer listens on 127.0.0.1:0; peers expect masked (client) frames. */
export async function startRawServer(): Promise<RawServer> {
  const queue = new AsyncQueue<RawPeer>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => undefined);
    readHttpHead(socket).then(({ head, rest }) => {
      const key = /sec-websocket-key:\s*(\S+)/i.exec(head)?.[1] ?? "";
      socket.write(switchingProtocols(key));
      queue.push({ socket, frames: new FrameReader(socket, rest, true) });
    }, () => socket.destroy());
  });
  const listener = await listenLocal(server);
  return { ...listener, next: () => queue.shift() };
}

/**
 * readHttpHead reads up to the blank line and pauses the socket (FrameReader
 * resumes it); `rest` is what came after the head.
 */
async function readHttpHead(socket: net.Socket): Promise<{ head: string; rest: Buffer }> {
  const { text, rest } = await readHead(socket, 64 * 1024, true);
  return { head: text, rest };
}

// ---- frames ----

/** Opcodes, for scripting raw peers. */
export const OP = { cont: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

/** A frame as a raw peer sees it; `payload` is unmasked. */
export type RawFrame = ReceivedFrame;

/**
 * encodeFrame builds one frame. `mask` true draws a random key; a Buffer is
 * used as the key. The payload is copied, never changed. Bits of `opcode`
 * above the low four are sent as the reserved bits.
 */
export function encodeFrame(opcode: number, payload: Buffer | string = Buffer.alloc(0), options: { fin?: boolean; mask?: boolean | Buffer } = {}): Buffer {
  return encodeRawFrame({ opcode: opcode & 0x0f, rsv: (opcode >> 4) & 7, payload, fin: options.fin ?? true, mask: options.mask ?? false }, false);
}

/** closeBody builds a close frame payload. */
export function closeBody(code: number, reason = ""): Buffer {
  return closePayload(code, reason);
}

/** parseCloseBody reads the code (undefined for an empty body) and reason of a close payload. */
export function parseCloseBody(payload: Buffer): { code: number | undefined; reason: string } {
  if (payload.length < 2) return { code: undefined, reason: "" };
  return { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString("utf8") };
}

/**
 * FrameReader parses the frames a raw peer receives. It records whether the
 * other side ended TCP, and when, relative to what this side did.
 */
export class FrameReader {
  private readonly reader = new ByteFrameReader();
  private readonly queue = new AsyncQueue<RawFrame>();
  /** Bytes received since the handshake. */
  bytes = 0;
  /** Resolves when the other side sends FIN. */
  readonly ended: Promise<void>;
  /** Resolves when the socket is closed. */
  readonly closed: Promise<void>;

  constructor(
    readonly socket: net.Socket,
    rest: Buffer,
    private readonly expectMasked: boolean,
  ) {
    this.reader.push(rest);
    this.bytes = rest.length;
    this.ended = once(socket, "end").then(() => undefined);
    this.closed = once(socket, "close").then(() => undefined);
    socket.on("error", () => undefined);
    socket.on("data", (chunk: Buffer) => {
      this.bytes += chunk.length;
      this.reader.push(chunk);
      this.parse();
    });
    this.parse();
    socket.resume();
  }

  /** next resolves with the next frame. */
  next(): Promise<RawFrame> {
    return this.queue.shift();
  }

  /** nextData resolves with the next frame that is not a ping or pong. */
  async nextNonControl(): Promise<RawFrame> {
    for (;;) {
      const f = await this.next();
      if (f.opcode !== OP.ping && f.opcode !== OP.pong) return f;
    }
  }

  /** send writes a frame, masked when this peer is a client. */
  send(opcode: number, payload: Buffer | string = Buffer.alloc(0), fin = true): void {
    this.socket.write(encodeFrame(opcode, payload, { fin, mask: !this.expectMasked }));
  }

  private parse(): void {
    for (let f = this.reader.next(); f !== undefined; f = this.reader.next()) this.queue.push(f);
  }
}

// ---- payloads ----

/** rng returns a seeded PRNG (mulberry32) yielding floats in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** binaryPayload returns `n` deterministic bytes that differ by `salt`. */
export function binaryPayload(n: number, salt = 0): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + salt * 7 + (i >>> 8)) & 0xff;
  return b;
}

const TEXT_UNIT = Buffer.from("aé€😀", "utf8"); // 1 + 2 + 3 + 4 bytes

/**
 * textPayload returns exactly `n` bytes of valid UTF-8 made of 1-, 2-, 3- and
 * 4-byte characters (the tail is padded with ASCII).
 */
export function textPayload(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  const whole = n - (n % TEXT_UNIT.length);
  for (let i = 0; i < whole; i += TEXT_UNIT.length) TEXT_UNIT.copy(b, i);
  b.fill(0x7a, whole);
  return b;
}

/**
 * fragmentCuts returns cut points for `n` bytes of textPayload that fall
 * inside multi-byte characters (offsets 2 and 7 of a 10-byte unit), plus one
 * byte before the end: text fragments then split characters.
 */
export function fragmentCuts(n: number): number[] {
  const unit = TEXT_UNIT.length;
  const mid = unit * Math.floor(n / (2 * unit)) + 7;
  const cuts = [2, mid, n - 1].filter((c) => c > 0 && c < n);
  return [...new Set(cuts)].sort((x, y) => x - y);
}

/** splitAt cuts `buf` at `cuts` (sorted offsets). */
export function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const pieces: Buffer[] = [];
  let start = 0;
  for (const c of cuts) {
    pieces.push(buf.subarray(start, c));
    start = c;
  }
  pieces.push(buf.subarray(start));
  return pieces;
}

// ---- small async tools ----

/** AsyncQueue hands pushed values to shift() callers in order. */
export class AsyncQueue<T> {
  private readonly items: T[] = [];
  private readonly waiters: Array<(v: T) => void> = [];

  push(v: T): void {
    const w = this.waiters.shift();
    if (w) w(v);
    else this.items.push(v);
  }

  shift(): Promise<T> {
    if (this.items.length > 0) return Promise.resolve(this.items.shift()!);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  get size(): number {
    return this.items.length;
  }
}

/** settled tells, after a macrotask turn, whether `p` has settled. */
export async function hasSettled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((resolve) => setImmediate(resolve));
  return done;
}

/** rejection resolves with what `p` rejects with, and fails if it resolves. */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected the promise to reject");
}

/** UndiciPeer is undici's WebSocket client, open, with the messages it receives queued as Buffers. */
export interface UndiciPeer {
  /** The extensions the handshake agreed on. */
  extensions: string;
  /** send sends text as a string and binary as bytes, as the WebSocket API does. */
  send(type: MessageType, data: Buffer): void;
  receive(): Promise<{ type: MessageType; data: Buffer }>;
  /** close closes with 1000 and resolves on the close event. */
  close(): Promise<void>;
}

/** openUndici connects undici's WebSocket client to `url` and resolves once it is open. */
export async function openUndici(url: string): Promise<UndiciPeer> {
  const ws = new UndiciWebSocket(url);
  ws.binaryType = "arraybuffer";
  const messages = new AsyncQueue<{ type: MessageType; data: Buffer }>();
  ws.addEventListener("message", (ev) => {
    const data: unknown = ev.data;
    if (typeof data === "string") messages.push({ type: MessageType.Text, data: Buffer.from(data, "utf8") });
    else messages.push({ type: MessageType.Binary, data: Buffer.from(data as ArrayBuffer) });
  });
  await new Promise((resolve, reject) => {
    ws.addEventListener("open", resolve, { once: true });
    ws.addEventListener("error", reject, { once: true });
  });
  return {
    extensions: ws.extensions,
    send: (type, data) => ws.send(type === MessageType.Text ? data.toString("utf8") : data),
    receive: () => messages.shift(),
    close: async () => {
      const closed = new Promise((resolve) => ws.addEventListener("close", resolve, { once: true }));
      ws.close(1000);
      await closed;
    },
  };
}
