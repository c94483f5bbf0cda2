/**
 * A raw WebSocket peer for tests: frames are built byte by byte (any opcode,
 * reserved bits, masking, declared length, even a cut-off payload), written to
 * a plain `net` socket whole, frame by frame or in chunks of any size, and the
 * frames the other side sends back are parsed without trusting them. The
 * opening handshake is done by hand too, for both roles: `rawConnect` plays the
 * client against a server under test, `startRawServer` plays the server for a
 * client under test (`dial`).
 *
 * Nothing here uses wsconn's own code (only its opcode numbers), so a bug in
 * wsconn cannot hide itself.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-5.2
 */

import { createHash, randomBytes } from "node:crypto";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { Opcode } from "../../src/protocol/frame.js";

/** Op is wsconn's opcode table (https://www.rfc-editor.org/rfc/rfc6455#section-11.8): plain numbers, no logic. */
export const Op = Opcode;

/** Reserved-bit values for RawFrame.rsv. */
export const RSV1 = 4;
export const RSV2 = 2;
export const RSV3 = 1;

/** RawFrame describes one frame to put on the wire, legal or not. */
export interface RawFrame {
  opcode: number;
  /** The payload (a string is UTF-8 encoded). Default empty. */
  payload?: Buffer | Uint8Array | string;
  /** The FIN bit. Default true. */
  fin?: boolean;
  /** The three reserved bits as a number: RSV1 = 4, RSV2 = 2, RSV3 = 1. Default 0. */
  rsv?: number;
  /**
   * Whether to mask: true (fresh random key), false, or the 4-byte key to use.
   * Default: what the sending role must do (the peer decides).
   */
  mask?: boolean | Buffer;
  /** Payload length written in the header instead of the real one (may exceed 2^53). */
  declaredLength?: number | bigint;
  /** Length encoding to use: 7-bit, 16-bit or 64-bit. Default the shortest. */
  lengthBits?: 7 | 16 | 64;
  /** Send only this many payload bytes (the header still declares the full length). */
  cut?: number;
}

/** toBytes turns a payload into a Buffer (strings as UTF-8). */
export function toBytes(data: Buffer | Uint8Array | string | undefined): Buffer {
  if (data === undefined) return Buffer.alloc(0);
  if (typeof data === "string") return Buffer.from(data, "utf8");
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * encodeFrame serializes `frame`. `defaultMask` says whether the sending role
 * masks (a client must, a server must not) when the frame does not say.
 */
export function encodeFrame(frame: RawFrame, defaultMask: boolean): Buffer {
  const payload = toBytes(frame.payload);
  const maskOption = frame.mask ?? defaultMask;
  const key = maskOption === false ? undefined : maskOption === true ? randomBytes(4) : maskOption;
  const length = BigInt(frame.declaredLength ?? payload.length);
  const bits = frame.lengthBits ?? (length < 126n ? 7 : length < 65536n ? 16 : 64);
  const extra = bits === 7 ? 0 : bits === 16 ? 2 : 8;
  const header = Buffer.alloc(2 + extra + (key ? 4 : 0));
  header[0] = (frame.fin === false ? 0 : 0x80) | ((frame.rsv ?? 0) << 4) | (frame.opcode & 0x0f);
  const maskBit = key ? 0x80 : 0;
  if (bits === 7) header[1] = maskBit | Number(length);
  else if (bits === 16) {
    header[1] = maskBit | 126;
    header.writeUInt16BE(Number(length), 2);
  } else {
    header[1] = maskBit | 127;
    header.writeBigUInt64BE(length, 2);
  }
  const body = Buffer.from(payload.subarray(0, frame.cut ?? payload.length));
  if (key) {
    key.copy(header, 2 + extra);
    for (let i = 0; i < body.length; i++) body[i]! ^= key[i & 3]!;
  }
  return Buffer.concat([header, body]);
}

/** encodeFrames serializes several frames back to back. */
export function encodeFrames(frames: RawFrame[], defaultMask: boolean): Buffer {
  return Buffer.concat(frames.map((f) => encodeFrame(f, defaultMask)));
}

/** closePayload builds a close frame body: nothing, a code, or a code and a reason. */
export function closePayload(code?: number, reason: Buffer | string = ""): Buffer {
  if (code === undefined) return Buffer.alloc(0);
  const head = Buffer.alloc(2);
  head.writeUInt16BE(code, 0);
  return Buffer.concat([head, toBytes(reason)]);
}

/** Shorthands for common frames; every option of RawFrame may be added. */
export const frame = {
  text: (payload: Buffer | string, o: Partial<RawFrame> = {}): RawFrame => ({ opcode: Op.Text, payload, ...o }),
  binary: (payload: Buffer | string, o: Partial<RawFrame> = {}): RawFrame => ({ opcode: Op.Binary, payload, ...o }),
  cont: (payload: Buffer | string, o: Partial<RawFrame> = {}): RawFrame => ({ opcode: Op.Continuation, payload, ...o }),
  ping: (payload: Buffer | string = "", o: Partial<RawFrame> = {}): RawFrame => ({ opcode: Op.Ping, payload, ...o }),
  pong: (payload: Buffer | string = "", o: Partial<RawFrame> = {}): RawFrame => ({ opcode: Op.Pong, payload, ...o }),
  close: (code?: number, reason: Buffer | string = "", o: Partial<RawFrame> = {}): RawFrame => ({
    opcode: Op.Close,
    payload: closePayload(code, reason),
    ...o,
  }),
};

/** ReceivedFrame is one frame read from the other side, unmasked. */
export interface ReceivedFrame {
  fin: boolean;
  /** The reserved bits as a number (RSV1 = 4). */
  rsv: number;
  opcode: number;
  masked: boolean;
  /** The masking key, when masked. */
  maskKey: Buffer | undefined;
  /** The payload, already unmasked. */
  payload: Buffer;
}

/**
 * FrameReader parses a byte stream into frames. It keeps the chunks it is fed
 * and copies only once a whole frame is there, so multi-megabyte frames cost
 * linear time. It reports lengths past 2^53 as a parse error instead of
 * allocating.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Set when the stream cannot be parsed; no frame is returned after it. */
  error: string | undefined;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** next returns the next whole frame, or undefined when more bytes are needed. */
  next(): ReceivedFrame | undefined {
    if (this.error !== undefined || this.buffered < 2) return undefined;
    const head = this.peek(Math.min(this.buffered, 14));
    const masked = (head[1]! & 0x80) !== 0;
    const len7 = head[1]! & 0x7f;
    const extra = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
    const headerSize = 2 + extra + (masked ? 4 : 0);
    if (head.length < headerSize) return undefined;
    let length = len7;
    if (len7 === 126) length = head.readUInt16BE(2);
    if (len7 === 127) {
      const big = head.readBigUInt64BE(2);
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) {
        this.error = `frame declares ${big} bytes`;
        return undefined;
      }
      length = Number(big);
    }
    if (this.buffered < headerSize + length) return undefined;
    const bytes = this.take(headerSize + length);
    const payload = Buffer.from(bytes.subarray(headerSize));
    const maskKey = masked ? Buffer.from(bytes.subarray(2 + extra, 2 + extra + 4)) : undefined;
    if (maskKey) {
      for (let i = 0; i < payload.length; i++) payload[i]! ^= maskKey[i & 3]!;
    }
    return { fin: (head[0]! & 0x80) !== 0, rsv: (head[0]! >> 4) & 7, opcode: head[0]! & 0x0f, masked, maskKey, payload };
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!.subarray(0, n);
  }

  private take(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    const first = this.chunks[0]!;
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}

/** How to deliver bytes: in one write, one write per frame, or in chunks of n bytes. */
export type Chop = "whole" | "frames" | number;

/**
 * RawPeer wraps a socket that has finished the opening handshake. It sends
 * raw frames and reads the other side's frames one at a time; `ended` and
 * `closed` tell when the other side sent FIN and when the socket is gone.
 * Socket errors are recorded, never thrown.
 */
export class RawPeer {
  readonly socket: net.Socket;
  /** Whether frames sent by this peer are masked by default (it plays the client). */
  readonly masks: boolean;
  /** Resolves when the other side ends its half of the connection (FIN) or the socket fails. */
  readonly ended: Promise<void>;
  /** Resolves when the socket is closed. */
  readonly closed: Promise<void>;
  /** The first socket error, if any. */
  error: Error | undefined;
  /** True once the other side's FIN arrived. */
  gotEnd = false;
  private readonly reader = new FrameReader();
  private eof = false;
  private wake: (() => void) | undefined;

  constructor(socket: net.Socket, masks: boolean, leftover: Buffer = Buffer.alloc(0)) {
    this.socket = socket;
    this.masks = masks;
    socket.setNoDelay(true);
    if (leftover.length > 0) this.reader.push(leftover);
    socket.on("data", (chunk: Buffer) => {
      this.reader.push(chunk);
      this.notify();
    });
    this.ended = new Promise((resolve) => {
      socket.once("end", () => {
        this.gotEnd = true;
        resolve();
      });
      socket.once("close", () => resolve());
    });
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    void this.ended.then(() => {
      this.eof = true;
      this.notify();
    });
    socket.on("error", (err) => {
      this.error ??= err;
    });
  }

  /** send writes frames (or bytes) delivered as `chop` says, waiting for each write. */
  async send(frames: RawFrame[] | Buffer, chop: Chop = "whole"): Promise<void> {
    if (Buffer.isBuffer(frames)) return this.sendBytes(frames, chop === "frames" ? "whole" : chop);
    if (chop === "frames") {
      for (const f of frames) await this.write(encodeFrame(f, this.masks), true);
      return;
    }
    return this.sendBytes(encodeFrames(frames, this.masks), chop);
  }

  /**
   * sendBytes writes `bytes` whole or in chunks of `chop` bytes. Between
   * chunks it waits for the write callback and one turn of the event loop, so
   * a receiver in the same process sees each chunk as a separate read.
   */
  async sendBytes(bytes: Buffer, chop: "whole" | number = "whole"): Promise<void> {
    if (chop === "whole" || chop >= bytes.length) return this.write(bytes, false);
    for (let i = 0; i < bytes.length; i += chop) {
      await this.write(bytes.subarray(i, i + chop), true);
    }
  }

  private write(bytes: Buffer, yieldAfter: boolean): Promise<void> {
    if (this.socket.destroyed || this.socket.writableEnded) return Promise.resolve();
    return new Promise((resolve) => {
      this.socket.write(bytes, () => (yieldAfter ? setImmediate(resolve) : resolve()));
    });
  }

  /**
   * nextFrame resolves with the next frame from the other side, null when it
   * ended (or the stream is unparseable, see `parseError`), or "timeout" after
   * `timeoutMs`: a guard, not a way of waiting.
   */
  async nextFrame(timeoutMs = 5000): Promise<ReceivedFrame | null | "timeout"> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.reader.next();
      if (f) return f;
      if (this.eof || this.reader.error !== undefined) return null;
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      const woke = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), left);
        this.wake = () => {
          clearTimeout(timer);
          resolve(true);
        };
      });
      if (!woke) return "timeout";
    }
  }

  /**
   * receiveAll reads frames until the other side ends TCP; `end` says how it
   * ended: "eof", "timeout" (nextFrame's guard turned a hang into a failure)
   * or why the bytes could not be parsed.
   */
  async receiveAll(): Promise<{ frames: ReceivedFrame[]; end: string }> {
    const frames: ReceivedFrame[] = [];
    for (;;) {
      const f = await this.nextFrame();
      if (f === "timeout") return { frames, end: "timeout" };
      if (f === null) return { frames, end: this.parseError ?? "eof" };
      frames.push(f);
    }
  }

  /** Why the other side's bytes could not be parsed, if they could not. */
  get parseError(): string | undefined {
    return this.reader.error;
  }

  /** end sends FIN (the socket stays readable until the other side ends too). */
  end(): void {
    if (!this.socket.destroyed && !this.socket.writableEnded) this.socket.end();
  }

  /** destroy drops the socket. */
  destroy(): void {
    this.socket.destroy();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

// ---- opening handshake by hand ----

/** The GUID of https://www.rfc-editor.org/rfc/rfc6455#section-1.3. */
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** acceptFor computes Sec-WebSocket-Accept for a key. */
export function acceptFor(key: string): string {
  return createHash("sha1").update(key + GUID).digest("base64");
}

/**
 * switchingProtocols builds a 101 response head for a request with
 * Sec-WebSocket-Key `key`, with `extraLines` (e.g. an extensions answer)
 * added as header lines.
 */
export function switchingProtocols(key: string, extraLines: string[] = []): string {
  return (
    `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(key)}\r\n` +
    extraLines.map((l) => `${l}\r\n`).join("") +
    "\r\n"
  );
}

/** RawHead is a parsed HTTP head: its first line, headers (names lower case) and the bytes after it. */
export interface RawHead {
  /** The head as latin1 text, without the blank line that ends it. */
  text: string;
  startLine: string;
  headers: Map<string, string[]>;
  rest: Buffer;
}

/** parseHead splits an HTTP head off `buf`, or returns undefined while it is incomplete. */
export function parseHead(buf: Buffer): RawHead | undefined {
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const text = buf.subarray(0, end).toString("latin1");
  const lines = text.split("\r\n");
  const headers = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    headers.set(name, [...(headers.get(name) ?? []), line.slice(colon + 1).trim()]);
  }
  return { text, startLine: lines[0]!, headers, rest: buf.subarray(end + 4) };
}

/**
 * readHead collects bytes from `socket` until a whole HTTP head arrived;
 * rejects if it closes first or the head passes `limit` bytes. With
 * `pauseAfter` the socket is paused in the same tick the head completes, so
 * a reader attached later (and resuming it) loses no byte.
 */
export function readHead(socket: net.Socket, limit = 64 * 1024, pauseAfter = false): Promise<RawHead> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const head = parseHead(buf);
      if (head === undefined && buf.length <= limit) return;
      cleanup();
      if (head && pauseAfter) socket.pause();
      if (head) resolve(head);
      else reject(new Error(`no HTTP head within ${limit} bytes`));
    };
    const onEnd = (): void => {
      cleanup();
      reject(new Error(`connection ended before the HTTP head was complete: ${JSON.stringify(buf.toString("latin1"))}`));
    };
    const cleanup = (): void => {
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("close", onEnd);
    };
    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("close", onEnd);
  });
}

/** UpgradeRequestOptions shape the request rawConnect sends. */
export interface UpgradeRequestOptions {
  path?: string;
  host?: string;
  key?: string;
  /** Extra header lines, e.g. ["Origin: http://x"]. */
  headers?: string[];
}

/** upgradeRequest builds a valid RFC 6455 upgrade request head. */
export function upgradeRequest(port: number, o: UpgradeRequestOptions = {}): string {
  const key = o.key ?? randomBytes(16).toString("base64");
  return (
    `GET ${o.path ?? "/"} HTTP/1.1\r\nHost: ${o.host ?? `127.0.0.1:${port}`}\r\n` +
    `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
    (o.headers ?? []).map((h) => `${h}\r\n`).join("") +
    "\r\n"
  );
}

/**
 * rawConnect opens a TCP connection to a WebSocket server, performs the
 * handshake by hand (checking the 101 and Sec-WebSocket-Accept) and returns a
 * masking RawPeer. `early` bytes are sent in the same write as the request,
 * so they reach the server as the upgrade's `head`.
 */
export async function rawConnect(port: number, o: UpgradeRequestOptions & { early?: Buffer } = {}): Promise<RawPeer> {
  const key = o.key ?? randomBytes(16).toString("base64");
  const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
  socket.on("error", () => undefined);
  const head = readHead(socket);
  socket.write(Buffer.concat([Buffer.from(upgradeRequest(port, { ...o, key }), "latin1"), o.early ?? Buffer.alloc(0)]));
  const res = await head;
  const accept = res.headers.get("sec-websocket-accept")?.[0];
  if (!res.startLine.startsWith("HTTP/1.1 101") || accept !== acceptFor(key)) {
    socket.destroy();
    throw new Error(`handshake refused: ${res.startLine}`);
  }
  return new RawPeer(socket, true, res.rest);
}

/** LocalListener is a server listening on 127.0.0.1 that tracks the sockets it accepted. */
export interface LocalListener {
  port: number;
  /** ws://127.0.0.1:port */
  url: string;
  /** Drops every tracked socket and stops listening. */
  close(): Promise<void>;
}

/** listenLocal makes `server` listen on 127.0.0.1:0 and tracks the sockets it accepts, for `close`. */
export async function listenLocal(server: net.Server): Promise<LocalListener> {
  const sockets = new Set<net.Socket>();
  server.on("connection", (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `ws://127.0.0.1:${port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** What a RawServer knows about one accepted connection. */
export interface RawServerPeer {
  peer: RawPeer;
  request: RawHead;
}

/** Options for the next connection a RawServer takes. */
export interface RawAcceptOptions {
  /** Bytes sent in the same write as the 101 response (they reach the client as `head`). */
  early?: Buffer;
  /** Replace the response head entirely (for broken-server tests); the peer is still returned. */
  response?: (request: RawHead) => string;
}

/** RawServer plays the server for a WebSocket client under test. */
export interface RawServer {
  port: number;
  url: string;
  /** Resolves with the next connection, once its handshake has been answered. */
  nextPeer(options?: RawAcceptOptions): Promise<RawServerPeer>;
  /** Stops listening and drops every socket. */
  close(): Promise<void>;
}

/**
 * startRawServer listens on 127.0.0.1:0 and answers each upgrade request by
 * hand with a 101. Connections are handed out in arrival order to `nextPeer`
 * callers; a connection that arrives with nobody waiting is dropped.
 */
export async function startRawServer(): Promise<RawServer> {
  const waiting: Array<{ options: RawAcceptOptions; resolve(p: RawServerPeer): void; reject(e: unknown): void }> = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => undefined);
    const waiter = waiting.shift();
    if (!waiter) return void socket.destroy();
    readHead(socket).then((request) => {
      const key = request.headers.get("sec-websocket-key")?.[0] ?? "";
      const response = waiter.options.response?.(request) ?? switchingProtocols(key);
      const peer = new RawPeer(socket, false, request.rest);
      socket.write(Buffer.concat([Buffer.from(response, "latin1"), waiter.options.early ?? Buffer.alloc(0)]));
      waiter.resolve({ peer, request });
    }, waiter.reject);
  });
  const listener = await listenLocal(server);
  return {
    ...listener,
    nextPeer: (options = {}) => new Promise((resolve, reject) => waiting.push({ options, resolve, reject })),
  };
}

// ---- plain HTTP exchanges, for hostile handshakes ----

/** RawExchange is what came back for a raw request. */
export interface RawExchange {
  /** The status code of the response, or 0 when no response came. */
  status: number;
  /** The whole response as latin1 text ("" if none). */
  response: string;
  /** Milliseconds from the first byte sent until the socket closed. */
  elapsedMs: number;
}

/**
 * rawExchange sends `request` (in chunks of `chop` bytes, `intervalMs` apart
 * when given), and resolves once the server closes the connection, with
 * whatever it answered. Sending stops as soon as the server closes. With
 * `untilHead` it resolves as soon as a whole response head arrived (a 101
 * keeps the socket open) and then drops the socket. With `end` (and no
 * `chop`) it half-closes its side right after the request.
 */
export function rawExchange(
  port: number,
  request: Buffer | string,
  o: { chop?: number; intervalMs?: number; untilHead?: boolean; end?: boolean } = {},
): Promise<RawExchange> {
  const bytes = Buffer.isBuffer(request) ? request : Buffer.from(request, "latin1");
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    const started = Date.now();
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    socket.on("error", () => undefined);
    const finish = (): void => {
      clearInterval(timer);
      const response = Buffer.concat(chunks).toString("latin1");
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(response);
      resolve({ status: status ? Number(status[1]) : 0, response, elapsedMs: Date.now() - started });
    };
    socket.on("data", (c: Buffer) => {
      chunks.push(c);
      if (o.untilHead && parseHead(Buffer.concat(chunks))) {
        finish();
        socket.destroy();
      }
    });
    socket.on("close", finish);
    if (o.chop === undefined) {
      socket.write(bytes);
      if (o.end) socket.end();
      return;
    }
    let offset = 0;
    const step = (): void => {
      if (socket.destroyed || offset >= bytes.length) return void clearInterval(timer);
      socket.write(bytes.subarray(offset, offset + o.chop!));
      offset += o.chop!;
    };
    step();
    timer = setInterval(step, o.intervalMs ?? 0);
  });
}
