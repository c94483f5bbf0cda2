/**
 * readJSON / writeJSON: round trips, invalid JSON (1007), binary messages
 * (1003), messages past the read limit (1009), values JSON cannot encode,
 * aborts and closed connections.
 */

import { once } from "node:events";
import t, { type Test } from "tap";
import { WebSocket } from "ws";
import { closeStatus, type Conn, dial, MessageType, readJSON, writeJSON } from "../../src/index.js";
import { startServer } from "../helpers/peers.js";

async function pair(t: Test): Promise<{ client: Conn; server: Conn; url: string }> {
  const srv = await startServer();
  t.teardown(() => srv.close());
  const accepted = srv.nextConn();
  const client = await dial(srv.url);
  const server = await accepted;
  t.teardown(() => {
    client.closeNow();
    server.closeNow();
  });
  return { client, server, url: srv.url };
}

/** rejection resolves with what `p` rejects with, and throws if it resolves. */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

t.test("values round-trip through writeJSON and readJSON", async (t) => {
  const { client, server } = await pair(t);
  const values: unknown[] = [
    { a: 1, b: [true, false, null] },
    [1, "two", { three: 3 }],
    "a string with \u2028 and ü",
    0,
    -1.5e300,
    true,
    null,
    { nested: { deeper: { deepest: "ö" } } },
    {},
    [],
  ];
  for (const [i, value] of values.entries()) {
    await writeJSON(client, value);
    // Not the JSON itself as the name: U+2028 would break a TAP line.
    t.same(await readJSON(server), value, `value ${i}`);
  }
  const msg = await (async () => {
    await writeJSON(server, { kind: "text?" });
    return client.read();
  })();
  t.equal(msg.type, MessageType.Text, "writeJSON sends a text message");
  t.equal(msg.text(), '{"kind":"text?"}');
});

t.test("readJSON parses what a ws client sends", async (t) => {
  const srv = await startServer();
  t.teardown(() => srv.close());
  const accepted = srv.nextConn();
  const ws = new WebSocket(srv.url);
  const server = await accepted;
  await once(ws, "open");
  ws.send(JSON.stringify({ from: "ws", n: [1, 2] }));
  t.same(await readJSON(server), { from: "ws", n: [1, 2] });
  ws.close(1000);
  t.equal((await server.closed).code, 1000);
});

t.test("invalid JSON fails the connection with 1007", async (t) => {
  const { client, server } = await pair(t);
  await client.write(MessageType.Text, "{not: json");
  const err = await rejection(readJSON(server));
  t.type(err, Error);
  t.match(err.message, /^failed to read JSON: /, "a clear message");
  t.equal(closeStatus(err), 1007, "closeStatus gives 1007");
  t.type((err.cause as Error).cause, SyntaxError, "the SyntaxError is in the cause chain");
  t.same(await client.closed, { code: 1007, reason: "message is not valid JSON", wasClean: true }, "the peer got 1007");
});

t.test("a binary message fails the connection with 1003", async (t) => {
  const { client, server } = await pair(t);
  await client.write(MessageType.Binary, "[1, 2]");
  const err = await rejection(readJSON(server));
  t.match(err.message, /failed to read JSON: received a binary message/);
  t.equal(closeStatus(err), 1003);
  t.equal((await client.closed).code, 1003);
});

t.test("a message past the read limit fails the connection with 1009", async (t) => {
  const { client, server } = await pair(t);
  const huge = { padding: "x".repeat(40_000) };
  await writeJSON(client, huge);
  const err = await rejection(readJSON(server));
  t.match(err.message, /^failed to read JSON: .*read limit/);
  t.equal(closeStatus(err), 1009);
  t.equal((await client.closed).code, 1009);
});

t.test("values JSON cannot encode reject with a TypeError and send nothing", async (t) => {
  const { client, server } = await pair(t);
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  const cases: Array<[string, unknown]> = [
    ["a BigInt", 10n],
    ["a BigInt inside an object", { n: 1n }],
    ["undefined", undefined],
    ["a function", () => 1],
    ["a symbol", Symbol("s")],
    ["a cycle", circular],
    [
      "a throwing toJSON",
      {
        toJSON() {
          throw new RangeError("nope");
        },
      },
    ],
  ];
  for (const [name, value] of cases) {
    const err = await rejection(writeJSON(client, value));
    t.type(err, TypeError, name);
    t.match(err.message, /^failed to write JSON: /);
  }
  await writeJSON(client, "still usable");
  t.equal(await readJSON(server), "still usable", "nothing was sent and the connection works");
});

t.test("an abort before the message rejects with the reason and keeps the connection", async (t) => {
  const { client, server } = await pair(t);
  const controller = new AbortController();
  const reading = readJSON(server, controller.signal);
  const reason = new Error("gave up");
  controller.abort(reason);
  t.equal(await rejection(reading), reason);
  const aborted = AbortSignal.abort(new Error("before write"));
  t.equal((await rejection(writeJSON(client, 1, aborted))).message, "before write");
  await writeJSON(client, { ok: true });
  t.same(await readJSON(server), { ok: true });
});

t.test("on a closed connection both reject with the close code", async (t) => {
  const { client, server } = await pair(t);
  await server.close(4000, "done");
  const readErr = await rejection(readJSON(client));
  t.match(readErr.message, /^failed to read JSON: /);
  t.equal(closeStatus(readErr), 4000);
  const writeErr = await rejection(writeJSON(client, 1));
  t.match(writeErr.message, /^failed to write JSON: /);
  t.equal(closeStatus(writeErr), 4000);
});
