/**
 * The fragment flood, measured: peers that start a binary message just under
 * the read limit, send it as tiny fragments and never finish it. The server
 * (a default wsconn echo server in a child process, so that only its memory
 * is counted) must hold about the payload per connection, not a hundred
 * times it, and its live memory (heap + external, after GC) must stay bounded
 * with a thousand such peers.
 */

import * as net from "node:net";
import t from "tap";
import type { MemorySample } from "./helpers/deflate-peer.js";
import { type MemoryServer, startMemoryServer } from "./helpers/memory-child.js";
import { acceptFor, encodeFrame, FrameReader, Op, readHead, upgradeRequest } from "./helpers/raw-peer.js";

const KiB = 1024;
const MiB = 1024 * KiB;
/** Just under the default read limit (32 KiB), so no 1009 ends it. */
const PAYLOAD = 31 * KiB;

/** floodBytes is the start of a PAYLOAD-byte binary message in `size`-byte fragments, never finished, then a ping. */
function floodBytes(size: number): Buffer {
  const frames: Buffer[] = [];
  for (let sent = 0; sent < PAYLOAD; sent += size) {
    const payload = Buffer.alloc(Math.min(size, PAYLOAD - sent), 0x61);
    frames.push(encodeFrame({ opcode: sent === 0 ? Op.Binary : Op.Continuation, payload, fin: false }, true));
  }
  frames.push(encodeFrame({ opcode: Op.Ping, payload: Buffer.from("sync") }, true));
  return Buffer.concat(frames);
}

/** An attacker's connection: upgraded by hand, reading the server's frames. */
interface Attacker {
  socket: net.Socket;
  frames: FrameReader;
  /** Resolves at the first pong or close frame: the server has parsed everything before the ping. */
  synced: Promise<number>;
}

async function attack(port: number, bytes: Buffer): Promise<Attacker> {
  const socket = net.connect({ port, host: "127.0.0.1" });
  socket.on("error", () => undefined);
  const key = "dGhlIHNhbXBsZSBub25jZQ==";
  const head = readHead(socket);
  socket.write(upgradeRequest(port, { key }));
  const res = await head;
  if (res.headers.get("sec-websocket-accept")?.[0] !== acceptFor(key)) throw new Error(`refused: ${res.startLine}`);
  const frames = new FrameReader();
  frames.push(res.rest);
  const synced = new Promise<number>((resolve) => {
    const check = (): void => {
      for (let f = frames.next(); f; f = frames.next()) {
        if (f.opcode === Op.Pong) return resolve(0);
        if (f.opcode === Op.Close) return resolve(f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005);
      }
    };
    socket.on("data", (chunk: Buffer) => {
      frames.push(chunk);
      check();
    });
    socket.on("close", () => resolve(-1));
    check();
  });
  socket.write(bytes);
  return { socket, frames, synced };
}

/** attackAll opens `n` attackers, at most 100 handshakes at a time, and waits until the server parsed every flood. */
async function attackAll(server: MemoryServer, n: number, bytes: Buffer): Promise<{ attackers: Attacker[]; codes: number[] }> {
  const attackers: Attacker[] = [];
  for (let i = 0; i < n; i += 100) {
    attackers.push(...(await Promise.all(Array.from({ length: Math.min(100, n - i) }, () => attack(server.port, bytes)))));
  }
  const codes = await Promise.all(attackers.map((a) => a.synced));
  return { attackers, codes };
}

async function release(server: MemoryServer, attackers: Attacker[]): Promise<void> {
  for (const a of attackers) a.socket.destroy();
  server.send({ type: "wait", connections: 0 });
  await server.reply();
}

const live = (s: MemorySample): number => s.heapUsed + s.external;

t.test("an unfinished message in tiny fragments costs about its payload per connection", async (t) => {
  const server = await startMemoryServer({ impl: "wsconn", compression: "disabled" });
  t.teardown(() => server.stop());
  // Warm up: the code paths, pools and the first allocations land in the baseline.
  await release(server, (await attackAll(server, 20, floodBytes(7))).attackers);
  const N = 100;
  for (const size of [1, 2, 125]) {
    const bytes = floodBytes(size);
    const before = await server.measure();
    const { attackers, codes } = await attackAll(server, N, bytes);
    t.same(new Set(codes), new Set([0]), `${size}-byte fragments: every flood was parsed, none refused`);
    const after = await server.measure();
    const perConnection = (live(after) - live(before)) / N;
    // Bound: the payload twice (owned buffers grow by doubling) plus 16 KiB, plus the connection itself.
    const bound = 2 * PAYLOAD + 16 * KiB + 8 * KiB;
    t.ok(perConnection < bound, `${size}-byte fragments (${Math.round(bytes.length / KiB)} KiB on the wire each): ${(perConnection / KiB).toFixed(1)} KiB per connection for a ${PAYLOAD / KiB} KiB message (bound ${bound / KiB} KiB; was ~3 400 KiB for 1-byte fragments)`);
    await release(server, attackers);
  }
});

t.test("a thousand peers each holding 31 KiB as one-byte fragments keep the server under 200 MiB", async (t) => {
  const server = await startMemoryServer({ impl: "wsconn", compression: "disabled" });
  t.teardown(() => server.stop());
  const before = await server.measure();
  const { attackers, codes } = await attackAll(server, 1000, floodBytes(1));
  const after = await server.measure();
  const held = codes.filter((c) => c === 0).length;
  t.equal(held, 1000, "31 MiB of unfinished messages fit the default 64 MiB budget: nobody is shed");
  t.ok(live(after) < 200 * MiB, `heap + external ${(live(after) / MiB).toFixed(1)} MiB (from ${(live(before) / MiB).toFixed(1)} MiB) with 1000 floods of ${Math.round(floodBytes(1).length / KiB)} KiB`);
  await release(server, attackers);
});

t.test("past the process budget, the server sheds floods with 1013 and its memory stays bounded", async (t) => {
  const server = await startMemoryServer({ impl: "wsconn", compression: "disabled", budget: 4 * MiB });
  t.teardown(() => server.stop());
  const before = await server.measure();
  const { attackers, codes } = await attackAll(server, 400, floodBytes(2));
  const after = await server.measure();
  t.ok(codes.every((c) => c === 0 || c === 1013), "each flood was parsed, or closed with 1013 (Try Again Later)");
  const budget = after.budget!;
  t.ok(budget.shed >= 400 - (4 * MiB) / PAYLOAD, `the budget shed ${budget.shed} of 400 connections; ${budget.holders} hold ${(budget.used / MiB).toFixed(2)} MiB`);
  t.ok(budget.used <= 4 * MiB, "the budget is never exceeded");
  t.ok(live(after) - live(before) < 40 * MiB, `live memory grew by ${((live(after) - live(before)) / MiB).toFixed(1)} MiB for 400 floods against a 4 MiB budget`);
  await release(server, attackers);
});
