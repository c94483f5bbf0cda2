/**
 * InboundBudget: the process-wide bound on bytes held for unfinished
 * messages. First its bookkeeping without sockets (who is shed, and when),
 * then many raw peers against a server, each holding an unfinished message.
 */

import { randomBytes } from "node:crypto";
import { constants, deflateRawSync } from "node:zlib";
import t from "tap";
import type { BudgetAccount } from "../../src/conn/options.js";
import { DEFAULT_INBOUND_BUDGET, dial, ErrorCode, InboundBudget, MessageType, StatusCode } from "../../src/index.js";
import { echo, startServer } from "../helpers/peers.js";
import { encodeFrame, Op, rawConnect, type RawPeer } from "../helpers/raw-peer.js";

const KiB = 1024;

/** A BudgetAccount that records being shed and releases at once, as a connection does. */
class Account implements BudgetAccount {
  budgeted = 0;
  budgetPrev: BudgetAccount | undefined;
  budgetNext: BudgetAccount | undefined;
  shedCount = 0;
  constructor(
    private readonly budget: InboundBudget,
    readonly name: string,
  ) {}
  shedForBudget(): void {
    this.shedCount++;
    this.budget.adjust(this, -this.budgeted);
  }
}

t.test("bookkeeping: totals, holders, and release", async (t) => {
  const budget = new InboundBudget(1000);
  const a = new Account(budget, "a");
  const b = new Account(budget, "b");
  budget.adjust(a, 300);
  budget.adjust(b, 200);
  t.equal(budget.used, 500);
  t.equal(budget.holders, 2);
  budget.adjust(a, -300);
  t.equal(budget.holders, 1, "an account that holds nothing leaves the list");
  budget.adjust(a, -50);
  t.equal(budget.used, 200, "releasing more than was charged releases only what was");
  budget.adjust(b, -200);
  t.equal(budget.used, 0);
  t.equal(budget.holders, 0);
  t.equal(budget.shed, 0, "nothing was shed under the limit");
});

t.test("over the limit, the oldest holder holding at least the average is shed, until the total fits", async (t) => {
  const budget = new InboundBudget(1000);
  const trickler = new Account(budget, "trickler"); // oldest, but holds little
  const big = new Account(budget, "big");
  const honest = new Account(budget, "honest");
  budget.adjust(trickler, 10);
  budget.adjust(big, 600);
  budget.adjust(honest, 300);
  t.equal(budget.used, 910);
  budget.adjust(honest, 200); // 1110 > 1000: average 370
  t.equal(big.shedCount, 1, "the oldest holder at or above the average goes");
  t.equal(trickler.shedCount, 0, "an old holder of a few bytes is not shed for the others");
  t.equal(honest.shedCount, 0);
  t.equal(budget.used, 510);
  t.ok(budget.used <= budget.limit, "the total fits again");
  t.equal(budget.shed, 1);
});

t.test("a single message larger than the budget sheds its own connection", async (t) => {
  const budget = new InboundBudget(100);
  const a = new Account(budget, "a");
  budget.adjust(a, 101);
  t.equal(a.shedCount, 1);
  t.equal(budget.used, 0);
});

t.test("Infinity never sheds; a bad limit is a RangeError", async (t) => {
  const budget = new InboundBudget(Infinity);
  const a = new Account(budget, "a");
  budget.adjust(a, Number.MAX_SAFE_INTEGER);
  t.equal(a.shedCount, 0);
  for (const bad of [-1, Number.NaN, "1" as unknown as number]) t.throws(() => new InboundBudget(bad), RangeError);
  t.equal(new InboundBudget().limit, DEFAULT_INBOUND_BUDGET);
  t.equal(InboundBudget.shared.limit, 64 * 1024 * 1024, "the shared default is 64 MiB");
});

/** holdUnfinished sends the first 31 KiB of a binary message as 125-byte fragments, then syncs. */
async function holdUnfinished(peer: RawPeer): Promise<"held" | number> {
  const frames = [encodeFrame({ opcode: Op.Binary, payload: Buffer.alloc(125, 1), fin: false }, true)];
  for (let i = 1; i < 254; i++) frames.push(encodeFrame({ opcode: Op.Continuation, payload: Buffer.alloc(125, 1), fin: false }, true));
  await peer.send(Buffer.concat(frames));
  return sync(peer);
}

/**
 * sync pings: the pong proves the server parsed everything sent before it
 * and still holds the message; a close frame (sent at once, or earlier when
 * a later peer made the budget shed this one) gives its code.
 */
async function sync(peer: RawPeer): Promise<"held" | number> {
  await peer.send([{ opcode: Op.Ping, payload: Buffer.from("sync") }]);
  for (;;) {
    const f = await peer.nextFrame();
    if (f === null || f === "timeout") return -1;
    if (f.opcode === Op.Pong) return "held";
    if (f.opcode === Op.Close) return f.payload.readUInt16BE(0);
  }
}

t.test("many peers holding unfinished messages: the server sheds some with 1013 and keeps serving", async (t) => {
  const budget = new InboundBudget(1024 * KiB);
  const srv = await startServer({ inboundBudget: budget }, (conn) => void echo(conn));
  t.teardown(() => srv.close());
  const peers: RawPeer[] = [];
  for (let i = 0; i < 64; i++) {
    const peer = await rawConnect(srv.port);
    peers.push(peer);
    await holdUnfinished(peer);
    t.ok(budget.used <= budget.limit, `after peer ${i}: ${budget.used} bytes held, within the budget`);
  }
  const outcomes: Array<"held" | number> = [];
  for (const peer of peers) outcomes.push(await sync(peer));
  const held = outcomes.filter((o) => o === "held").length;
  const shed = outcomes.filter((o) => o === StatusCode.TryAgainLater).length;
  t.equal(held + shed, 64, "every peer either holds its message or was closed with 1013");
  t.ok(shed >= 64 - Math.floor((1024 * KiB) / (31 * KiB)), `${shed} shed, ${held} holding (${Math.round(budget.used / KiB)} KiB)`);
  t.equal(budget.shed, shed, "the budget counts what it shed");
  const shedConn = srv.conns.find((c) => c.closed !== undefined);
  t.ok(shedConn, "the server has the shed connections");

  const honest = await dial(srv.url);
  await honest.write(MessageType.Text, "still serving");
  t.equal((await honest.read()).text(), "still serving", "an honest client is served while the budget is full");
  await honest.close();

  for (const peer of peers) peer.destroy();
  await Promise.all(srv.conns.map((c) => c.closed));
  t.equal(budget.used, 0, "every byte is released once the peers are gone");
  t.equal(budget.holders, 0);
});

t.test("a shed connection's reads reject with the 1013 and its error code", async (t) => {
  const budget = new InboundBudget(8 * KiB);
  const srv = await startServer({ inboundBudget: budget });
  t.teardown(() => srv.close());
  const accepted = srv.nextConn();
  const peer = await rawConnect(srv.port);
  const conn = await accepted;
  const reading = conn.read().then(
    () => undefined,
    (err: unknown) => err,
  );
  t.equal(await holdUnfinished(peer), StatusCode.TryAgainLater, "the peer is told to try again later");
  t.match(await reading, { code: StatusCode.TryAgainLater, errorCode: ErrorCode.BudgetExceeded });
  t.equal(budget.used, 0);
  peer.destroy();
});

t.test("streamed messages and complete messages do not count", async (t) => {
  const budget = new InboundBudget(4 * KiB);
  const srv = await startServer({ inboundBudget: budget, readLimit: Infinity });
  t.teardown(() => srv.close());
  const accepted = srv.nextConn();
  const peer = await rawConnect(srv.port);
  const conn = await accepted;
  const streamed = conn.reader();
  await peer.send([{ opcode: Op.Binary, payload: Buffer.alloc(125, 1), fin: false }]);
  // Once a reader() streams the message its consumer frees its bytes: they leave the budget.
  const { stream } = await streamed;
  let received = 0;
  stream.on("data", (c: Buffer) => (received += c.length));
  const rest = Array.from({ length: 253 }, () => ({ opcode: Op.Continuation, payload: Buffer.alloc(125, 1), fin: false }));
  await peer.send(rest);
  t.equal(await sync(peer), "held", "31 KiB streamed past a 4 KiB budget: not shed");
  await peer.send([{ opcode: Op.Continuation, payload: Buffer.alloc(10, 1) }]);
  await new Promise((resolve) => stream.once("end", resolve));
  t.equal(received, 254 * 125 + 10);
  t.equal(budget.used, 0);
  await peer.send([{ opcode: Op.Binary, payload: Buffer.alloc(20 * KiB, 1) }]);
  t.equal((await conn.read()).data.length, 20 * KiB, "a complete 20 KiB message is read; it never counted");
  t.equal(budget.shed, 0);
  peer.destroy();
  await conn.closed;
});

t.test("zlib streams of compressed messages being received count against the budget", async (t) => {
  const budget = new InboundBudget(512 * KiB);
  const srv = await startServer({ inboundBudget: budget, compression: "no-context-takeover" }, (conn) => void echo(conn));
  t.teardown(() => srv.close());
  // The first frame of a large compressed message: too big for the one-call path, so it is streamed.
  const compressed = deflateRawSync(randomBytes(64 * KiB), { finishFlush: constants.Z_SYNC_FLUSH }).subarray(0, 20 * KiB);
  const peers: RawPeer[] = [];
  for (let i = 0; i < 16; i++) {
    const peer = await rawConnect(srv.port, { headers: ["Sec-WebSocket-Extensions: permessage-deflate"] });
    peers.push(peer);
    await peer.send([{ opcode: Op.Binary, payload: compressed, fin: false, rsv: 4 }]);
    await sync(peer);
    t.ok(budget.used <= budget.limit, `after peer ${i}: ${Math.round(budget.used / KiB)} KiB held, within the budget`);
  }
  const outcomes: Array<"held" | number> = [];
  for (const peer of peers) outcomes.push(await sync(peer));
  const held = outcomes.filter((o) => o === "held").length;
  const shed = outcomes.filter((o) => o === StatusCode.TryAgainLater).length;
  t.equal(held + shed, 16, "every peer either holds its message or was closed with 1013");
  // Each holds its 20 KiB, plus 56 KiB for its zlib stream: at most 6 fit in 512 KiB.
  t.ok(held <= Math.floor((512 * KiB) / (76 * KiB)), `${held} holding, ${shed} shed: the zlib streams were counted`);
  for (const peer of peers) peer.destroy();
  await Promise.all(srv.conns.map((c) => c.closed));
  t.equal(budget.used, 0, "every byte is released once the peers are gone");
});

t.test("a small compressed message held across socket reads counts against the budget", async (t) => {
  const budget = new InboundBudget(64 * KiB);
  const srv = await startServer({ inboundBudget: budget, compression: "no-context-takeover" }, (conn) => void echo(conn));
  t.teardown(() => srv.close());
  // One frame declaring 16 000 compressed bytes (the one-call path), of which
  // 12 000 are sent: held until the rest comes. A ping could not tell when the
  // server has them (it would be read as payload), so the test watches the budget.
  const whole = encodeFrame({ opcode: Op.Binary, payload: randomBytes(16_000), rsv: 4 }, true);
  const peers: RawPeer[] = [];
  for (let i = 0; i < 8; i++) {
    const peer = await rawConnect(srv.port, { headers: ["Sec-WebSocket-Extensions: permessage-deflate"] });
    peers.push(peer);
    const [used, shed] = [budget.used, budget.shed];
    await peer.send(whole.subarray(0, whole.length - 4_000));
    await until(() => budget.shed > shed || budget.used >= used + 11_000, "the server to hold the bytes, or shed");
    t.ok(budget.used <= budget.limit, `after peer ${i}: ${Math.round(budget.used / KiB)} KiB held, within the budget`);
  }
  t.ok(budget.shed >= 8 - Math.floor((64 * KiB) / 12_000), `${budget.shed} shed with 1013: the bytes held for the one-call path were counted`);
  const closes: number[] = [];
  for (const peer of peers.slice(0, budget.shed)) {
    const f = await peer.nextFrame();
    if (f !== null && f !== "timeout" && f.opcode === Op.Close) closes.push(f.payload.readUInt16BE(0));
  }
  t.ok(closes.includes(StatusCode.TryAgainLater), "the oldest were told to try again later");
  for (const peer of peers) peer.destroy();
  await Promise.all(srv.conns.map((c) => c.closed));
  t.equal(budget.used, 0, "every byte is released once the peers are gone");
});

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}
