/**
 * ping and pong (https://www.rfc-editor.org/rfc/rfc6455#section-5.5.2):
 * ping resolves with the round trip when its pong arrives, a pong answers
 * every earlier ping, onPing/onPong see the payloads, autoPong can be turned
 * off, and a ping settles on abort and on close.
 */

import { readFileSync } from "node:fs";
import t from "tap";
import { CloseError, dial, MessageType } from "../../src/index.js";
import { AsyncQueue, hasSettled, pair, rejection, startWsconnServer, startWsServer, wsMessages } from "../helpers/interop.js";
import { echo } from "../helpers/peers.js";
import { frame, Op, rawConnect } from "../helpers/raw-peer.js";

t.test("ping resolves with the round trip against a wsconn peer", async (t) => {
  const srv = await startWsconnServer({}, ({ conn }) => void echo(conn));
  t.teardown(() => srv.close());
  const client = await dial(srv.url);
  // Pongs are seen by the read path: keep a read waiting.
  const reading = client.read();
  const rtts = await Promise.all([client.ping(), client.ping(), client.ping()]);
  for (const rtt of rtts) t.ok(typeof rtt === "number" && rtt >= 0 && rtt < 5000, `round trip ${rtt.toFixed(3)} ms`);
  await client.write(MessageType.Text, "after pings");
  t.equal((await reading).text(), "after pings", "the read that saw the pongs still gets its message");
  await client.close();
});

t.test("the server pings a wsconn client that reads", async (t) => {
  const p = await pair();
  t.teardown(p.close);
  const closedSignal = p.client.closeRead();
  const rtt = await p.peer.conn.ping();
  t.ok(rtt >= 0, "server ping answered by a client under closeRead");
  t.equal(closedSignal.aborted, false);
  await p.peer.conn.close();
  t.equal(closedSignal.aborted, true);
});

t.test("ping against ws, and onPing/onPong", async (t) => {
  const srv = await startWsServer();
  t.teardown(() => srv.close());
  const pings: string[] = [];
  const pongs: string[] = [];
  const conn = await dial(srv.url, {
    onPing: (p) => pings.push(p.toString()),
    onPong: (p) => pongs.push(p.toString("hex")),
  });
  const { ws } = await srv.next();
  conn.closeRead();
  const rtt = await conn.ping();
  t.ok(rtt >= 0, "ws answered the ping");
  t.equal(pongs.length, 1, "onPong saw the pong");
  t.equal(pongs[0]!.length, 16, "ping payloads are 8 bytes");

  const wsPong = new Promise<Buffer>((resolve) => ws.once("pong", resolve));
  ws.ping("from ws");
  t.equal((await wsPong).toString(), "from ws", "wsconn answered with the same payload");
  t.same(pings, ["from ws"], "onPing saw the ping");
  await conn.close();
});

t.test("autoPong: false leaves pings unanswered", async (t) => {
  const srv = await startWsServer();
  t.teardown(() => srv.close());
  const pinged = new AsyncQueue<Buffer>();
  const conn = await dial(srv.url, { autoPong: false, onPing: (p) => pinged.push(p) });
  const { ws } = await srv.next();
  const events: string[] = [];
  ws.on("pong", () => events.push("pong"));
  const messages = wsMessages(ws);
  ws.ping("are you there");
  t.equal((await pinged.shift()).toString(), "are you there", "onPing still runs");
  // A pong would have been written before this message: it would arrive first.
  await conn.write(MessageType.Text, "message after the ping");
  t.equal((await messages.shift()).data.toString(), "message after the ping");
  t.same(events, [], "no pong was sent");
  await conn.close();
});

t.test("a pong answers its own ping and every earlier one", async (t) => {
  const srv = await startWsServer({ autoPong: false });
  t.teardown(() => srv.close());
  const conn = await dial(srv.url);
  const { ws } = await srv.next();
  const payloads = new AsyncQueue<Buffer>();
  ws.on("ping", (p: Buffer) => payloads.push(p));
  conn.closeRead();
  const settled = [false, false, false];
  const pings = [conn.ping(), conn.ping(), conn.ping()];
  pings.forEach((p, i) => void p.then(() => (settled[i] = true)));
  const sent = [await payloads.shift(), await payloads.shift(), await payloads.shift()];
  t.equal(new Set(sent.map((b) => b.toString("hex"))).size, 3, "every ping has its own payload");

  ws.pong(Buffer.from("unknown payload"));
  ws.pong(sent[1]);
  await Promise.all([pings[0], pings[1]]);
  t.same(settled, [true, true, false], "the second pong answered the first two pings only");
  t.equal(await hasSettled(pings[2]!), false, "the third is still waiting");
  ws.pong(sent[2]);
  t.ok((await pings[2]!) >= 0, "its own pong answers the third");
  await conn.close();
});

t.test("ping rejects with the signal's reason on abort", async (t) => {
  const srv = await startWsServer({ autoPong: false });
  t.teardown(() => srv.close());
  const conn = await dial(srv.url);
  const { ws } = await srv.next();
  const pinged = new Promise((resolve) => ws.once("ping", resolve));
  conn.closeRead();
  const ac = new AbortController();
  const pending = conn.ping(ac.signal);
  await pinged;
  const reason = new Error("gave up");
  ac.abort(reason);
  t.equal(await rejection(pending), reason, "rejects with the reason");
  t.equal(await rejection(conn.ping(AbortSignal.abort(reason))), reason, "an aborted signal rejects at once");
  // A late pong for the aborted ping resolves nothing and harms nothing.
  const answered = conn.ping();
  ws.once("ping", (p: Buffer) => ws.pong(p));
  t.ok((await answered) >= 0, "the connection still pings");
  await conn.close();
});

t.test("ping rejects with CloseError when the connection closes", async (t) => {
  const srv = await startWsServer({ autoPong: false });
  t.teardown(() => srv.close());
  const conn = await dial(srv.url);
  const { ws } = await srv.next();
  conn.closeRead();
  const pinged = new Promise((resolve) => ws.once("ping", resolve));
  const pending = rejection(conn.ping());
  await pinged;
  ws.close(1001, "bye");
  const err = await pending;
  t.type(err, CloseError);
  t.match(err, { code: 1001, reason: "bye" });
  t.match(await rejection(conn.ping()), { code: 1001 }, "a ping after the close rejects too");
  await conn.closed;

  const p = await pair();
  t.teardown(p.close);
  const dropped = rejection(p.peer.conn.ping());
  p.client.closeNow();
  t.match(await dropped, { code: 1006 }, "a dropped connection rejects pending pings with 1006");
});

t.test("a peer that stops reading gets one pong, for its latest ping, once the socket drains (§5.5.3)", async (t) => {
  const pings = new AsyncQueue<string>();
  const srv = await startWsconnServer({ onPing: (payload) => pings.push(payload.toString()) });
  t.teardown(() => srv.close());
  const peer = await rawConnect(srv.port);
  t.teardown(() => peer.destroy());
  const { conn, socket } = await srv.next();
  peer.socket.pause();
  // One message larger than the kernel can absorb (the sender's and the
  // receiver's socket buffers at their largest): the server's socket stays
  // full until the peer reads again.
  const big = Buffer.alloc(kernelBufferLimit() + 1024 * 1024);
  const pending = conn.write(MessageType.Binary, big);
  t.ok(socket.writableNeedDrain, "the server's socket is full");
  await peer.send([frame.ping("p1"), frame.ping("p2"), frame.ping("p3")]);
  for (const want of ["p1", "p2", "p3"]) t.equal(await pings.shift(), want, `the server parsed ${want}`);
  peer.socket.resume();
  await pending;
  await conn.write(MessageType.Text, "end");
  const pongs: string[] = [];
  let binaries = 0;
  for (;;) {
    const f = await peer.nextFrame();
    if (f === null || f === "timeout") {
      t.fail(`stream ended early: ${String(f)}`);
      return;
    }
    if (f.opcode === Op.Pong) pongs.push(f.payload.toString());
    if (f.opcode === Op.Binary) binaries++;
    if (f.opcode === Op.Text) break;
  }
  t.equal(binaries, 1, "the big message arrived");
  t.same(pongs, ["p3"], "one pong, for the latest ping");
});

/** kernelBufferLimit is the most a TCP socket pair can hold in the kernel: tcp_wmem max + tcp_rmem max (Linux; 64 MiB elsewhere). */
function kernelBufferLimit(): number {
  try {
    const max = (file: string): number => Number(readFileSync(file, "utf8").trim().split(/\s+/)[2]);
    const total = max("/proc/sys/net/ipv4/tcp_wmem") + max("/proc/sys/net/ipv4/tcp_rmem");
    if (Number.isFinite(total) && total > 0) return total;
  } catch {
    // not Linux
  }
  return 64 * 1024 * 1024;
}
