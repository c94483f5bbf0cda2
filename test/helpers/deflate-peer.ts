/**
 * Test helpers for permessage-deflate (RFC 7692) seen from the wire: raw
 * `net` peers that send or answer crafted Sec-WebSocket-Extensions headers,
 * frames with any reserved bit, and an independent compressor and
 * decompressor built directly on node:zlib (not on src/deflate.ts) so that
 * wsconn's output is checked by code that does not share its mistakes.
 */

import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import * as v8 from "node:v8";
import * as vm from "node:vm";
import * as zlib from "node:zlib";
import { AsyncQueue, FrameReader } from "./interop.js";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

// ---- frames ----

/** FrameOptions shape one raw frame; defaults: final, no reserved bits, masked. */
export interface FrameOptions {
  fin?: boolean;
  rsv1?: boolean;
  /** Extra reserved bits (0x20 RSV2, 0x10 RSV3) or'ed into the first byte. */
  rsvBits?: number;
  mask?: boolean;
}

/** frame encodes one frame; the payload is copied, never changed. */
export function frame(opcode: number, payload: Buffer | string = Buffer.alloc(0), options: FrameOptions = {}): Buffer {
  const data = Buffer.from(payload);
  const n = data.length;
  const mask = options.mask ?? true;
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const header = Buffer.alloc(2 + ext + (mask ? 4 : 0));
  header[0] = ((options.fin ?? true) ? 0x80 : 0) | (options.rsv1 ? 0x40 : 0) | (options.rsvBits ?? 0) | opcode;
  header[1] = (mask ? 0x80 : 0) | (n < 126 ? n : n < 65536 ? 126 : 127);
  if (ext === 2) header.writeUInt16BE(n, 2);
  if (ext === 8) header.writeBigUInt64BE(BigInt(n), 2);
  if (mask) {
    const key = randomBytes(4);
    key.copy(header, 2 + ext);
    for (let i = 0; i < n; i++) data[i] ^= key[i & 3]!;
  }
  return Buffer.concat([header, data]);
}

// ---- raw client: crafted offers to accept() ----

/** What a server answered to a raw upgrade request. */
export interface RawUpgrade {
  /** The status line, e.g. "HTTP/1.1 101 Switching Protocols". */
  status: string;
  /** Response headers, names in lower case, repeated ones joined with ", ". */
  headers: Record<string, string>;
  /** The Sec-WebSocket-Extensions answer, if any. */
  extensions: string | undefined;
  socket: net.Socket;
  /** Frames the server sends (unmasked); `frames.socket` writes ours. */
  frames: FrameReader;
}

/**
 * rawUpgrade sends an upgrade request to 127.0.0.1:`port` whose
 * Sec-WebSocket-Extensions lines are exactly `extensions` (one header line per
 * element of an array, none for undefined) and reads the answer's head.
 */
export async function rawUpgrade(port: number, extensions: string | string[] | undefined): Promise<RawUpgrade> {
  const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
  socket.on("error", () => undefined);
  await once(socket, "connect");
  const key = randomBytes(16).toString("base64");
  const lines = extensions === undefined ? [] : Array.isArray(extensions) ? extensions : [extensions];
  socket.write(
    `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
      lines.map((l) => `Sec-WebSocket-Extensions: ${l}\r\n`).join("") +
      "\r\n",
  );
  const { head, rest } = await readHead(socket);
  const [status, ...headerLines] = head.split("\r\n");
  const headers = parseHeaderLines(headerLines);
  if (status!.startsWith("HTTP/1.1 101") && headers["sec-websocket-accept"] !== acceptKeyOf(key)) {
    socket.destroy();
    throw new Error("wrong Sec-WebSocket-Accept");
  }
  return { status: status!, headers, extensions: headers["sec-websocket-extensions"], socket, frames: new FrameReader(socket, rest, false) };
}

/** offerAnswer returns the server's Sec-WebSocket-Extensions answer to `extensions` and hangs up. */
export async function offerAnswer(port: number, extensions: string | string[] | undefined): Promise<string | undefined> {
  const up = await rawUpgrade(port, extensions);
  if (!up.status.startsWith("HTTP/1.1 101")) throw new Error(`handshake refused: ${up.status}`);
  up.socket.destroy();
  return up.extensions;
}

// ---- raw server: crafted answers to dial() ----

/** A raw server that answers every upgrade with 101 and a chosen extensions header. */
export interface AnsweringServer {
  url: string;
  port: number;
  /** Request heads received so far. */
  requests: string[];
  /** The next upgraded connection, with its request and a reader of (masked) client frames. */
  next(): Promise<{ request: string; socket: net.Socket; frames: FrameReader }>;
  close(): Promise<void>;
}

/**
 * startAnsweringServer answers each upgrade with 101 and, unless `answer`
 * returns undefined, a Sec-WebSocket-Extensions header (a string array is
 * sent as several header lines). `answer` sees the request's own offer.
 */
export async function startAnsweringServer(answer: (offer: string | undefined) => string | string[] | undefined): Promise<AnsweringServer> {
  const sockets = new Set<net.Socket>();
  const requests: string[] = [];
  const queue = new AsyncQueue<{ request: string; socket: net.Socket; frames: FrameReader }>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    readHead(socket).then(
      ({ head, rest }) => {
        requests.push(head);
        const headers = parseHeaderLines(head.split("\r\n").slice(1));
        const value = answer(headers["sec-websocket-extensions"]);
        const lines = value === undefined ? [] : Array.isArray(value) ? value : [value];
        socket.write(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            `Sec-WebSocket-Accept: ${acceptKeyOf(headers["sec-websocket-key"] ?? "")}\r\n` +
            lines.map((l) => `Sec-WebSocket-Extensions: ${l}\r\n`).join("") +
            "\r\n",
        );
        queue.push({ request: head, socket, frames: new FrameReader(socket, rest, true) });
      },
      () => socket.destroy(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    port,
    requests,
    next: () => queue.shift(),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function acceptKeyOf(key: string): string {
  return createHash("sha1").update(key + GUID).digest("base64");
}

function parseHeaderLines(lines: string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return headers;
}

function readHead(socket: net.Socket): Promise<{ head: string; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.pause();
      resolve({ head: buf.subarray(0, end).toString("latin1"), rest: buf.subarray(end + 4) });
    };
    const onEnd = (): void => reject(new Error("connection ended during the handshake"));
    socket.on("data", onData);
    socket.on("end", onEnd);
  });
}

// ---- an independent permessage-deflate peer ----

/**
 * PeerDeflater compresses messages the way RFC 7692 §7.2.1 describes, with
 * its own zlib stream: a sync flush ends each message and its 00 00 ff ff is
 * removed; without context takeover every message starts a new stream.
 */
export class PeerDeflater {
  private stream: zlib.DeflateRaw | undefined;
  private chunks: Buffer[] = [];

  constructor(
    private readonly windowBits = 15,
    private readonly keepContext = true,
  ) {}

  async compress(data: Buffer): Promise<Buffer> {
    const stream = this.open();
    stream.write(data);
    await new Promise<void>((resolve) => stream.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve()));
    await new Promise((resolve) => setImmediate(resolve));
    const out = Buffer.concat(this.chunks);
    this.chunks = [];
    if (!out.subarray(-4).equals(TAIL)) throw new Error("sync flush did not end with 00 00 ff ff");
    if (!this.keepContext) this.close();
    return out.subarray(0, out.length - 4);
  }

  close(): void {
    this.stream?.close();
    this.stream = undefined;
  }

  private open(): zlib.DeflateRaw {
    if (this.stream) return this.stream;
    this.stream = zlib.createDeflateRaw({ windowBits: this.windowBits });
    this.stream.on("data", (c: Buffer) => this.chunks.push(c));
    return this.stream;
  }
}

/**
 * PeerInflater decompresses messages with a window of `windowBits`: a
 * message that refers further back than the window the sender promised
 * (server_max_window_bits / client_max_window_bits) fails with zlib's
 * "invalid distance too far back". Without context takeover every message
 * gets a new stream, so a sender that kept its context fails too.
 */
export class PeerInflater {
  private stream: zlib.InflateRaw | undefined;
  private chunks: Buffer[] = [];
  private error: Error | undefined;

  constructor(
    private readonly windowBits = 15,
    private readonly keepContext = true,
  ) {}

  async decompress(payload: Buffer): Promise<Buffer> {
    const stream = this.open();
    stream.write(payload);
    stream.write(TAIL);
    await new Promise<void>((resolve) => stream.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve()));
    await new Promise((resolve) => setImmediate(resolve));
    if (this.error) throw this.error;
    const out = Buffer.concat(this.chunks);
    this.chunks = [];
    if (!this.keepContext) this.close();
    return out;
  }

  close(): void {
    this.stream?.close();
    this.stream = undefined;
  }

  private open(): zlib.InflateRaw {
    if (this.stream) return this.stream;
    const stream = zlib.createInflateRaw({ windowBits: this.windowBits });
    stream.on("data", (c: Buffer) => this.chunks.push(c));
    stream.on("error", (err) => {
      this.error = err;
      this.stream = undefined;
    });
    this.stream = stream;
    return stream;
  }
}

/** deflateMessage compresses one whole message as a fresh stream, trailer removed (§7.2.1). */
export function deflateMessage(data: Buffer, windowBits = 15): Buffer {
  const out = zlib.deflateRawSync(data, { windowBits, finishFlush: zlib.constants.Z_SYNC_FLUSH });
  return out.subarray(0, out.length - 4);
}

/** inflateMessage decompresses one whole message that starts a fresh stream. */
export function inflateMessage(payload: Buffer, windowBits = 15): Buffer {
  return zlib.inflateRawSync(Buffer.concat([payload, TAIL]), { windowBits, finishFlush: zlib.constants.Z_SYNC_FLUSH });
}

// ---- memory ----

let gcFunction: (() => void) | undefined;

/** collectGarbage runs a full V8 collection (enabling --expose-gc on first use). */
export function collectGarbage(): void {
  if (gcFunction === undefined) {
    v8.setFlagsFromString("--expose-gc");
    gcFunction = vm.runInNewContext("gc") as () => void;
  }
  gcFunction();
  gcFunction();
}

/** A memory sample in bytes. */
export interface MemorySample {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

/** memorySample collects garbage, then reads process.memoryUsage(). */
export function memorySample(): MemorySample {
  collectGarbage();
  const { rss, heapUsed, external, arrayBuffers } = process.memoryUsage();
  return { rss, heapUsed, external, arrayBuffers };
}

/** MiB formats bytes as MiB with one decimal. */
export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
