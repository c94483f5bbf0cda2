/**
 * Test helpers for permessage-deflate (RFC 7692) seen from the wire: raw
 * `net` peers that send or answer crafted Sec-WebSocket-Extensions headers,
 * frames with any reserved bit, and an independent compressor and
 * decompressor built directly on node:zlib (not on src/deflate.ts) so that
 * wsconn's output is checked by code that does not share its mistakes.
 */

import { randomBytes } from "node:crypto";
import { once } from "node:events";
import * as net from "node:net";
import * as v8 from "node:v8";
import * as vm from "node:vm";
import * as zlib from "node:zlib";
import { AsyncQueue, FrameReader } from "./interop.js";
import { acceptFor, encodeFrame, listenLocal, type RawHead, readHead, switchingProtocols, upgradeRequest } from "./raw-peer.js";
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
  const rsv = (options.rsv1 ? 4 : 0) | (((options.rsvBits ?? 0) >> 4) & 7);
  return encodeFrame({ opcode: opcode & 0x0f, rsv, payload, fin: options.fin ?? true, mask: options.mask ?? true }, true);
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
  socket.write(upgradeRequest(port, { key, headers: extensionLines(extensions) }));
  const response = await readHead(socket, 64 * 1024, true);
  const status = response.startLine;
  const headers = joinedHeaders(response);
  if (status.startsWith("HTTP/1.1 101") && headers["sec-websocket-accept"] !== acceptFor(key)) {
    socket.destroy();
    throw new Error("wrong Sec-WebSocket-Accept");
  }
  return { status, headers, extensions: headers["sec-websocket-extensions"], socket, frames: new FrameReader(socket, response.rest, false) };
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
  const requests: string[] = [];
  const queue = new AsyncQueue<{ request: string; socket: net.Socket; frames: FrameReader }>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => undefined);
    readHead(socket, 64 * 1024, true).then(
      (request) => {
        requests.push(request.text);
        const headers = joinedHeaders(request);
        socket.write(switchingProtocols(headers["sec-websocket-key"] ?? "", extensionLines(answer(headers["sec-websocket-extensions"]))));
        queue.push({ request: request.text, socket, frames: new FrameReader(socket, request.rest, true) });
      },
      () => socket.destroy(),
    );
  });
  const listener = await listenLocal(server);
  return { ...listener, requests, next: () => queue.shift() };
}

/** extensionLines turns an offer or answer into Sec-WebSocket-Extensions header lines (none for undefined). */
function extensionLines(value: string | string[] | undefined): string[] {
  const values = value === undefined ? [] : Array.isArray(value) ? value : [value];
  return values.map((v) => `Sec-WebSocket-Extensions: ${v}`);
}

/** joinedHeaders flattens a head's headers: names in lower case, repeated ones joined with ", ". */
function joinedHeaders(head: RawHead): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, values] of head.headers) headers[name] = values.join(", ");
  return headers;
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
 * "invalid distance too far back" (to within an eighth of the window: the output chunk).
 * Without context takeover every message gets a new stream, so a sender
 * that kept its context fails too. A zlib error rejects `decompress`.
 */
export class PeerInflater {
  /** The last 2^windowBits bytes inflated, the next message's dictionary (with context takeover). */
  private window = Buffer.alloc(0);

  constructor(
    private readonly windowBits = 15,
    private readonly keepContext = true,
  ) {}

  /**
   * decompress inflates one message. It works synchronously, with output
   * chunks of an eighth of the window: zlib checks a distance against the
   * window only past what the current output chunk holds, so with its
   * default 16 KiB a reference 2 KiB too far back would still inflate; with
   * these, one more than an eighth of the window too far fails. (A stream
   * with chunks that small is several times slower.)
   */
  async decompress(payload: Buffer): Promise<Buffer> {
    const out = zlib.inflateRawSync(Buffer.concat([payload, TAIL]), {
      windowBits: this.windowBits,
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
      chunkSize: Math.max(64, 2 ** (this.windowBits - 3)),
      ...(this.window.length > 0 ? { dictionary: this.window } : {}),
    });
    if (this.keepContext) {
      const joined = this.window.length === 0 ? out : Buffer.concat([this.window, out]);
      this.window = Buffer.from(joined.subarray(Math.max(0, joined.length - 2 ** this.windowBits)));
    }
    return out;
  }

  close(): void {
    this.window = Buffer.alloc(0);
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

/**
 * MemoryWatch records the peak of RSS and array buffers above a baseline
 * taken after a full collection, sampled every millisecond and on demand
 * (`sample`); `stop` reports the peak growth as a comment and returns it.
 */
export class MemoryWatch {
  readonly base: MemorySample;
  private peakRss: number;
  private peakArrayBuffers: number;
  private readonly timer: NodeJS.Timeout;

  constructor() {
    this.base = memorySample();
    this.peakRss = this.base.rss;
    this.peakArrayBuffers = this.base.arrayBuffers;
    this.timer = setInterval(() => this.sample(), 1);
  }

  sample(): void {
    const m = process.memoryUsage();
    this.peakRss = Math.max(this.peakRss, m.rss);
    this.peakArrayBuffers = Math.max(this.peakArrayBuffers, m.arrayBuffers);
  }

  stop(t: { comment(message: string): void }, label: string): { rss: number; arrayBuffers: number } {
    this.sample();
    clearInterval(this.timer);
    const growth = { rss: this.peakRss - this.base.rss, arrayBuffers: this.peakArrayBuffers - this.base.arrayBuffers };
    t.comment(`${label}: peak growth RSS ${mib(growth.rss)}, arrayBuffers ${mib(growth.arrayBuffers)}`);
    return growth;
  }
}

/** MiB formats bytes as MiB with one decimal. */
export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
