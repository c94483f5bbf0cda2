/**
 * The bound on bytes waiting to be written (writeQueueLimit), and option
 * validation before the handshake commits to anything.
 */

import t from "tap";
import { dial, ErrorCode, MessageType } from "../../src/index.js";
import { startServer } from "../helpers/peers.js";

t.test("writes that must wait are bounded by writeQueueLimit", async (t) => {
  const srv = await startServer({ readLimit: Infinity });
  const accepted = srv.nextConn();
  const conn = await dial(srv.url, { writeQueueLimit: 1024 * 1024 });
  const server = await accepted;
  // The server never reads, and its socket stops reading: the client's writes back up.
  const big = Buffer.alloc(512 * 1024, 1);
  const pending: Array<Promise<void>> = [];
  let refused: unknown;
  for (let i = 0; i < 64 && refused === undefined; i++) {
    const write = conn.write(MessageType.Binary, big);
    pending.push(write);
    write.catch((err: unknown) => (refused ??= err));
    await new Promise((resolve) => setImmediate(resolve));
  }
  t.ok(refused, "a write was refused before 64 × 512 KiB were queued");
  t.equal((refused as { code?: string }).code, ErrorCode.WriteQueueFull);
  t.ok(conn.bufferedAmount >= 1024 * 1024, `bufferedAmount counts what waits (${conn.bufferedAmount} bytes)`);
  // The connection is still usable: once the server reads, everything accepted arrives.
  const accepted64 = pending.length - 1;
  let received = 0;
  for (; received < accepted64; received++) await server.read();
  t.equal(received, accepted64, "every accepted write arrived");
  await Promise.allSettled(pending);
  await conn.write(MessageType.Text, "still open");
  t.equal((await server.read()).text(), "still open");
  await conn.close();
  await srv.close();
});

t.test("one waiting message is accepted whatever its size", async (t) => {
  const srv = await startServer({ readLimit: Infinity });
  const accepted = srv.nextConn();
  const conn = await dial(srv.url, { writeQueueLimit: 10 });
  const server = await accepted;
  const first = conn.write(MessageType.Binary, Buffer.alloc(100));
  const second = conn.write(MessageType.Binary, Buffer.alloc(100));
  await Promise.all([first, second]);
  t.equal((await server.read()).data.length, 100);
  t.equal((await server.read()).data.length, 100);
  await conn.close();
  await srv.close();
});

t.test("bad limits are refused before the handshake", async (t) => {
  const srv = await startServer({ readLimit: -1 });
  const err = await dial(srv.url).catch((e: unknown) => e);
  t.match(err, { status: 500 }, "accept answers 500 for its own bad options");
  await t.rejects(dial(srv.url, { writeQueueLimit: Number.NaN }), RangeError);
  await t.rejects(dial(srv.url, { closeTimeout: -5 }), RangeError);
  await srv.close();
});

t.test("ping payloads carry no process id", async (t) => {
  const seen: Buffer[] = [];
  const srv = await startServer({ onPing: (payload) => void seen.push(payload) });
  const accepted = srv.nextConn();
  const conn = await dial(srv.url);
  void (await accepted).closeRead();
  void conn.closeRead();
  await conn.ping();
  await conn.ping();
  t.equal(seen.length, 2, "the server saw both pings");
  t.not(seen[0]!.readUInt32BE(0), process.pid, "the prefix is not the pid");
  t.equal(seen[0]!.readUInt32BE(0), seen[1]!.readUInt32BE(0), "one prefix per connection");
  t.equal(seen[1]!.readUInt32BE(4), seen[0]!.readUInt32BE(4) + 1, "then a counter");
  await conn.close();
  await srv.close();
});
