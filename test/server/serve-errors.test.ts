/**
 * serve's handling of failing handlers: what a handler throws or rejects
 * with reaches `onError` with the connection and its request, and the client
 * gets 1011 "handler failed" either way; an onError that throws, and a
 * server without onError, write the error to stderr (once per error object)
 * instead of crashing the process. stderr is intercepted in-process for the
 * duration of each test and restored in its teardown.
 */

import type * as http from "node:http";
import t, { type Test } from "tap";
import { CloseError, type CloseInfo, type Conn, dial, type Handler, MessageType } from "../../src/index.js";
import { startServe } from "../helpers/peers.js";

/** What serve writes to stderr for a failed handler starts with this. */
const PREFIX = "wsconn serve: a connection handler failed (the client got 1011): ";


/**
 * captureStderr replaces process.stderr.write until the test ends: what
 * serve writes about failed handlers is kept (and not printed), anything
 * else goes through.
 */
function captureStderr(t: Test): string[] {
  const stderr = process.stderr;
  const original = stderr.write;
  const captured: string[] = [];
  const write = (chunk: unknown, ...rest: unknown[]): boolean => {
    const text = typeof chunk === "string" ? chunk : Buffer.from(chunk as Uint8Array).toString("utf8");
    if (!text.startsWith("wsconn serve:")) return (original as (...args: unknown[]) => boolean).call(stderr, chunk, ...rest);
    captured.push(text);
    const callback = rest.find((a): a is () => void => typeof a === "function");
    if (callback) process.nextTick(callback);
    return true;
  };
  stderr.write = write as typeof stderr.write;
  t.teardown(() => {
    stderr.write = original;
  });
  return captured;
}

/** noCrash records uncaught exceptions and unhandled rejections until the test ends. */
function noCrash(t: Test): unknown[] {
  const escaped: unknown[] = [];
  const record = (err: unknown): void => void escaped.push(err);
  process.on("uncaughtException", record);
  process.on("unhandledRejection", record);
  t.teardown(() => {
    process.off("uncaughtException", record);
    process.off("unhandledRejection", record);
  });
  return escaped;
}

/**
 * failedClose dials `path` (sending one message first when `trigger`, for a
 * handler that fails after a read) and returns how the read and the
 * connection ended.
 */
async function failedClose(t: Test, port: number, path: string, trigger: boolean): Promise<{ err: unknown; closed: CloseInfo }> {
  const conn = await dial(`ws://127.0.0.1:${port}${path}`);
  t.teardown(() => conn.closeNow());
  // The close may already have come with the 101 (a handler that throws at once), failing this write.
  if (trigger) await conn.write(MessageType.Text, "trigger").catch(() => undefined);
  const err = await conn.read().then(
    () => new Error("a message came instead of a close"),
    (e: unknown) => e,
  );
  return { err, closed: await conn.closed };
}

/** checkClosed1011 asserts that the client got 1011 "handler failed" from the server. */
function checkClosed1011(t: Test, name: string, { err, closed }: { err: unknown; closed: CloseInfo }): void {
  t.type(err, CloseError, `${name}: the client's read rejects with a CloseError`);
  t.match(err, { code: 1011, reason: "handler failed", remote: true }, `${name}: 1011 "handler failed" from the server`);
  t.match(closed, { code: 1011, reason: "handler failed" }, `${name}: closed reports 1011`);
}

/** A way for a handler to fail: throw at once, or reject after reading one message. */
interface FailureCase {
  name: string;
  path: string;
  thrown: unknown;
  async: boolean;
}

/** failingHandler fails as the case for the request's path says, recording the Conn it was given. */
function failingHandler(cases: FailureCase[], conns: Map<string, Conn>): Handler {
  return (conn, req) => {
    const c = cases.find((x) => x.path === req.url);
    if (c === undefined) throw new Error(`no case for ${req.url}`);
    conns.set(c.path, conn);
    if (!c.async) throw c.thrown;
    return (async () => {
      await conn.read();
      throw c.thrown;
    })();
  };
}

t.test("onError gets what a handler threw or rejected with, its Conn and its request; the client gets 1011", async (t) => {
  const stderr = captureStderr(t);
  const escaped = noCrash(t);
  const cases: FailureCase[] = [
    { name: "a handler that throws", path: "/sync?case=1", thrown: new Error("thrown at once"), async: false },
    { name: "a handler that rejects", path: "/async?case=2", thrown: new Error("rejected after a read"), async: true },
    { name: "a handler that throws a string", path: "/sync-string", thrown: "a string, thrown at once", async: false },
    { name: "a handler that rejects with a string", path: "/async-string", thrown: "a string, rejected after a read", async: true },
  ];
  const conns = new Map<string, Conn>();
  const reports: Array<{ err: unknown; conn: Conn; req: http.IncomingMessage }> = [];
  const waiting = new Map<string, () => void>();
  const { port } = await startServe(
    t,
    {
      onError: (err, conn, req) => {
        reports.push({ err, conn, req });
        waiting.get(req.url ?? "")?.();
      },
    },
    failingHandler(cases, conns),
  );
  for (const c of cases) {
    const reported = new Promise<void>((resolve) => waiting.set(c.path, resolve));
    checkClosed1011(t, c.name, await failedClose(t, port, c.path, c.async));
    await reported;
    const mine = reports.filter((r) => r.req.url === c.path);
    t.equal(mine.length, 1, `${c.name}: onError is called once`);
    const report = mine[0]!;
    t.equal(report.err, c.thrown, `${c.name}: onError gets the very value thrown`);
    t.equal(report.conn, conns.get(c.path), `${c.name}: onError gets the handler's Conn`);
    t.equal(report.req.url, c.path, `${c.name}: onError gets the request (its url)`);
    t.equal(report.req.headers["upgrade"], "websocket", `${c.name}: the upgrade request itself`);
  }
  t.equal(reports.length, cases.length, "one onError call per failed handler");
  t.same(stderr, [], "nothing is written to stderr when onError takes the errors");
  t.same(escaped, [], "nothing escaped");
});

t.test("an onError that throws does not crash the process: its error goes to stderr, the client gets 1011, the server goes on", async (t) => {
  const stderr = captureStderr(t);
  const escaped = noCrash(t);
  const fromHandler = new Error("the handler's error");
  const fromOnError = new Error("onError's own error");
  let calls = 0;
  const { port } = await startServe(
    t,
    {
      onError: (err) => {
        calls++;
        if (err === fromHandler) throw fromOnError;
        throw "onError threw a string";
      },
    },
    async (conn, req) => {
      if (req.url === "/echo") {
        for await (const msg of conn) await conn.write(msg.type, msg.data);
        return;
      }
      if (req.url === "/string") throw "the handler threw a string";
      throw fromHandler;
    },
  );
  checkClosed1011(t, "onError throws an Error", await failedClose(t, port, "/", false));
  checkClosed1011(t, "onError throws a string", await failedClose(t, port, "/string", false));
  t.equal(calls, 2, "onError was called for both");
  t.equal(stderr.length, 2, "one stderr write per error onError threw");
  t.ok(stderr[0]?.startsWith(PREFIX), "it says what happened");
  t.ok(stderr[0]?.includes(fromOnError.stack!), "onError's error is written with its stack");
  t.notOk(stderr.join("").includes(fromHandler.message), "the handler's error went to onError, not to stderr");
  t.equal(stderr[1], `${PREFIX}onError threw a string\n`, "a string onError throws is written as it is");
  // The process and the server are fine.
  const conn = await dial(`ws://127.0.0.1:${port}/echo`);
  t.teardown(() => conn.closeNow());
  await conn.write(MessageType.Text, "still serving");
  t.equal((await conn.read()).text(), "still serving", "the server still serves");
  await conn.close();
  t.match(await conn.closed, { code: 1000, wasClean: true });
  t.same(escaped, [], "no uncaught exception or unhandled rejection");
});

t.test("without onError a handler's error is written to stderr with its stack, once per error object", async (t) => {
  const stderr = captureStderr(t);
  const escaped = noCrash(t);
  const shared = new Error("one error object, thrown by two handlers");
  const first = new Error("the first of two different errors");
  const second = new Error("the second of two different errors");
  const cases: FailureCase[] = [
    { name: "a shared error, thrown", path: "/shared-sync", thrown: shared, async: false },
    { name: "the same error, rejected", path: "/shared-async", thrown: shared, async: true },
    { name: "one error", path: "/first", thrown: first, async: false },
    { name: "another error", path: "/second", thrown: second, async: true },
    { name: "a string", path: "/string", thrown: "a plain string, not an Error", async: false },
  ];
  const { port } = await startServe(t, {}, failingHandler(cases, new Map()));
  for (const c of cases) {
    // serve writes to stderr right after sending the close frame: once the client has it, it is written.
    checkClosed1011(t, c.name, await failedClose(t, port, c.path, c.async));
  }
  const count = (text: string): number => stderr.filter((line) => line.includes(text)).length;
  t.equal(count(shared.stack!), 1, "the error object two handlers threw is written once, with its stack");
  t.equal(count(first.stack!), 1, "a first error is written with its stack");
  t.equal(count(second.stack!), 1, "a different error is written too, with its stack");
  t.equal(count("a plain string, not an Error"), 1, "a thrown string is written");
  t.equal(stderr.length, 4, "nothing else is written");
  t.ok(
    stderr.every((line) => line.startsWith(PREFIX) && line.endsWith("\n")),
    "every write says what happened and ends the line",
  );
  t.equal(stderr.find((line) => line.includes("plain string")), `${PREFIX}a plain string, not an Error\n`);
  t.same(escaped, [], "no uncaught exception or unhandled rejection");
});

t.test("a for-await handler over a connection the peer drops or closes has not failed: nothing is reported", async (t) => {
  const captured = captureStderr(t);
  const reported: unknown[] = [];
  const ended: Array<Promise<unknown>> = [];
  const { port } = await startServe(t, { onError: (err) => void reported.push(err) }, (conn) => {
    const loop = (async () => {
      for await (const m of conn) await conn.write(m.type, m.data);
    })();
    // Settles before serve's own rejection handler runs: awaiting it and one more turn sees what serve did.
    ended.push(loop.then(() => "quiet", (err: unknown) => err));
    return loop;
  });
  const dropped = await dial(`ws://127.0.0.1:${port}/`);
  const closing = await dial(`ws://127.0.0.1:${port}/`);
  await closing.write(MessageType.Text, "hi");
  await closing.read();
  dropped.closeNow();
  await closing.close(4000, "going");
  const outcomes = await Promise.all(ended);
  await new Promise((resolve) => setImmediate(resolve));
  t.match(outcomes, [{ code: 1006 }, { code: 4000 }], "both loops ended with their connection's CloseError (1006 dropped, 4000 closed)");
  t.same(reported, [], "onError was not called: the connections ended, the handlers did not fail");
  t.same(captured, [], "nothing was written to stderr");
});
