/**
 * The load generator's own wire code, kept minimal so that the server, not
 * the client, is what a benchmark measures: a raw WebSocket handshake, frames
 * built once and written again and again (masked with one fixed key, which a
 * server cannot tell from fresh ones), and a counting parser for the answers.
 * The same code speaks the raw TCP ceiling's 4-byte length-prefixed framing.
 */

import { randomBytes } from "node:crypto";
import { connect } from "node:net";

/** connectRaw opens a TCP connection and, for `proto` "ws", does the opening handshake. */
export function connectRaw(port, proto) {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: "127.0.0.1" });
    socket.setNoDelay(true);
    socket.once("error", reject);
    socket.once("connect", () => {
      if (proto !== "ws") {
        socket.off("error", reject);
        return resolve({ socket, head: Buffer.alloc(0) });
      }
      handshake(socket).then(resolve, reject);
    });
  });
}

function handshake(socket) {
  const key = randomBytes(16).toString("base64");
  socket.write(
    `GET / HTTP/1.1\r\nHost: 127.0.0.1:${socket.remotePort}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0);
    const onData = (chunk) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      socket.off("error", reject);
      const status = received.subarray(0, received.indexOf("\r\n")).toString("latin1");
      if (!/^HTTP\/1\.1 101 /.test(status)) return reject(new Error(`handshake refused: ${status}`));
      resolve({ socket, head: received.subarray(end + 4) });
    };
    socket.on("data", onData);
  });
}

/** encodeMessage builds one message as `proto` puts it on the wire (client to server). */
export function encodeMessage(proto, payload) {
  if (proto === "len") {
    const frame = Buffer.allocUnsafe(4 + payload.length);
    frame.writeUInt32BE(payload.length, 0);
    payload.copy(frame, 4);
    return frame;
  }
  const n = payload.length;
  const extra = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const frame = Buffer.allocUnsafe(2 + extra + 4 + n);
  frame[0] = 0x82; // FIN, binary
  frame[1] = 0x80 | (n < 126 ? n : n < 65536 ? 126 : 127);
  if (extra === 2) frame.writeUInt16BE(n, 2);
  if (extra === 8) frame.writeBigUInt64BE(BigInt(n), 2);
  const key = randomBytes(4);
  key.copy(frame, 2 + extra);
  const body = 2 + extra + 4;
  for (let i = 0; i < n; i++) frame[body + i] = payload[i] ^ key[i & 3];
  return frame;
}

/**
 * MessageCounter parses the server's answers and calls `onMessage(size)` per
 * complete message. For "ws" it expects unmasked, unfragmented binary frames,
 * as every echo server here sends.
 */
export class MessageCounter {
  constructor(proto, onMessage) {
    this.ws = proto === "ws";
    this.onMessage = onMessage;
    this.carry = undefined;
    this.left = -1; // payload bytes left of the current message, -1 between messages
    this.size = 0;
  }

  push(chunk) {
    if (this.carry) {
      chunk = Buffer.concat([this.carry, chunk]);
      this.carry = undefined;
    }
    let pos = 0;
    while (pos < chunk.length) {
      if (this.left < 0) {
        const used = this.header(chunk, pos);
        if (used === 0) {
          this.carry = chunk.subarray(pos);
          return;
        }
        pos += used;
      }
      const take = Math.min(this.left, chunk.length - pos);
      pos += take;
      this.left -= take;
      if (this.left === 0) {
        this.left = -1;
        this.onMessage(this.size);
      }
    }
  }

  /** header decodes a header at `pos`; 0 when it is not all there yet. */
  header(buf, pos) {
    const avail = buf.length - pos;
    if (!this.ws) {
      if (avail < 4) return 0;
      this.size = this.left = buf.readUInt32BE(pos);
      return 4;
    }
    if (avail < 2) return 0;
    if ((buf[pos] & 0x0f) !== 0x2 || (buf[pos] & 0x80) === 0) throw new Error(`unexpected frame byte 0x${buf[pos].toString(16)}`);
    const len7 = buf[pos + 1] & 0x7f;
    const size = len7 < 126 ? 2 : len7 === 126 ? 4 : 10;
    if (avail < size) return 0;
    this.size = this.left = len7 < 126 ? len7 : len7 === 126 ? buf.readUInt16BE(pos + 2) : Number(buf.readBigUInt64BE(pos + 2));
    return size;
  }
}
