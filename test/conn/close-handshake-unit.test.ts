// The close handshake without a socket: a recording host stands in for the
// connection, and the test plays the peer by calling the handshake's events.
import t from "tap";
import { CloseHandshake, type CloseHost } from "../../src/conn/close-handshake.js";
import { CloseError, decodeClosePayload, encodeClosePayload, MAX_CLOSE_REASON_BYTES, truncateCloseReason } from "../../src/protocol/close.js";
import { ErrorCode, FAILURE_STATUS, StatusCode } from "../../src/protocol/errors.js";

/** RecordingHost writes down every socket call the handshake asks for. */
class RecordingHost implements CloseHost {
  readonly calls: string[] = [];
  readonly frames: Buffer[] = [];
  readonly errors: CloseError[] = [];
  socketGone = false;
  /** whenSent runs its function at once unless `compressing` holds it back. */
  compressing = false;
  private held: Array<() => void> = [];
  private signals = new Map<string, () => void>();

  stopReading(): void {
    this.calls.push("stopReading");
  }
  terminate(err: CloseError): void {
    this.calls.push("terminate");
    this.errors.push(err);
  }
  sendCloseFrame(payload: Buffer): boolean {
    if (this.socketGone) return false;
    this.calls.push("sendCloseFrame");
    this.frames.push(payload);
    this.signals.get("sendCloseFrame")?.();
    return true;
  }
  endSocket(): void {
    this.calls.push("endSocket");
  }
  destroySocket(): void {
    this.calls.push("destroySocket");
    this.signals.get("destroySocket")?.();
  }
  whenSent(fn: () => void): void {
    if (this.compressing) this.held.push(fn);
    else fn();
  }
  /** compressed lets the messages being compressed go out. */
  compressed(): void {
    this.compressing = false;
    for (const fn of this.held.splice(0)) fn();
  }
  /** next resolves at the next call of `name`. */
  next(name: "sendCloseFrame" | "destroySocket"): Promise<void> {
    return new Promise((resolve) => this.signals.set(name, resolve));
  }
}

function fixture(isServer: boolean, closeTimeout = 60_000) {
  const host = new RecordingHost();
  return { host, handshake: new CloseHandshake(host, isServer, closeTimeout) };
}

t.test("a local close sends the frame once and gives up on a silent peer after closeTimeout", async (t) => {
  const { host, handshake } = fixture(false, 5);
  const destroyed = host.next("destroySocket");
  handshake.close(StatusCode.NormalClosure, "bye", encodeClosePayload(StatusCode.NormalClosure, "bye"));
  t.same(host.calls, ["terminate", "sendCloseFrame"]);
  t.same(decodeClosePayload(host.frames[0]!), { code: 1000, reason: "bye" });
  t.match(handshake.error, { code: StatusCode.NormalClosure, reason: "bye" });
  t.ok(handshake.sent);
  handshake.close(StatusCode.GoingAway, "again", encodeClosePayload(StatusCode.GoingAway, "again"));
  t.equal(host.frames.length, 1, "a second close sends nothing");
  t.match(handshake.error, { code: StatusCode.NormalClosure }, "and the first reason stays");
  await destroyed;
  t.same(host.calls, ["terminate", "sendCloseFrame", "destroySocket"]);
  handshake.onSocketClose();
  t.same(await handshake.closed, { code: StatusCode.AbnormalClosure, reason: "", wasClean: false }, "no close frame came back: 1006, not clean");
});

t.test("a local close answered by the peer is clean; the server ends TCP, the client waits for it", async (t) => {
  for (const isServer of [true, false]) {
    const { host, handshake } = fixture(isServer);
    const closed = handshake.closed;
    handshake.close(StatusCode.NormalClosure, "", encodeClosePayload(StatusCode.NormalClosure));
    t.equal(handshake.onCloseFrame(encodeClosePayload(StatusCode.NormalClosure, "ok")), undefined);
    t.same(handshake.received, { code: StatusCode.NormalClosure, reason: "ok" });
    handshake.answer();
    t.same(host.calls, ["terminate", "sendCloseFrame", "stopReading", ...(isServer ? ["endSocket"] : [])], `${isServer ? "server" : "client"}: no second close frame`);
    handshake.onSocketClose();
    t.same(await closed, { code: StatusCode.NormalClosure, reason: "ok", wasClean: true });
  }
});

t.test("the peer's close is echoed on the next turn, after what is being compressed", async (t) => {
  const { host, handshake } = fixture(true);
  host.compressing = true;
  const sent = host.next("sendCloseFrame");
  t.equal(handshake.onCloseFrame(encodeClosePayload(StatusCode.GoingAway, "restart")), undefined);
  t.same(host.calls, ["stopReading"], "nothing sent in the same turn: the application may still reply to a message");
  await new Promise((resolve) => setImmediate(resolve));
  t.same(host.calls, ["stopReading"], "held while a message is being compressed");
  host.compressed();
  await sent;
  t.same(host.calls, ["stopReading", "terminate", "sendCloseFrame", "endSocket"]);
  t.same(decodeClosePayload(host.frames[0]!), { code: StatusCode.GoingAway, reason: "" }, "the code is echoed, not the reason");
  t.match(host.errors[0], { code: StatusCode.GoingAway, reason: "restart", remote: true });
  handshake.onSocketClose();
  t.same(await handshake.closed, { code: StatusCode.GoingAway, reason: "restart", wasClean: true });
});

t.test("a close without a status is echoed without one and reported as 1005", async (t) => {
  const { host, handshake } = fixture(false);
  handshake.onCloseFrame(Buffer.alloc(0));
  handshake.answer();
  t.equal(host.frames[0]!.length, 0);
  t.notOk(host.calls.includes("endSocket"), "a client leaves ending TCP to the server");
  handshake.onPeerEnd();
  t.equal(host.calls.at(-1), "endSocket", "and ends its side once the server did");
  handshake.onSocketClose();
  t.same(await handshake.closed, { code: StatusCode.NoStatusRcvd, reason: "", wasClean: true });
});

t.test("a malformed close frame is returned to the caller, who fails in wire order", async (t) => {
  const { host, handshake } = fixture(true);
  t.same(handshake.onCloseFrame(Buffer.from([0x03])), { errorCode: ErrorCode.InvalidClosePayload, message: "close frame payload of 1 byte" });
  t.same(handshake.onCloseFrame(Buffer.from([0x03, 0xed])), { errorCode: ErrorCode.InvalidClosePayload, message: "invalid close code 1005" });
  t.same(host.calls, [], "nothing is sent by onCloseFrame itself");
  t.equal(handshake.received, undefined);
});

t.test("fail sends the close code the table gives, ends TCP, and cuts a long reason at a character", async (t) => {
  const { host, handshake } = fixture(true);
  const message = "é".repeat(100);
  handshake.fail(ErrorCode.InvalidUtf8, message);
  t.same(host.calls, ["stopReading", "terminate", "sendCloseFrame", "endSocket"]);
  const sent = decodeClosePayload(host.frames[0]!);
  t.match(sent, { code: FAILURE_STATUS[ErrorCode.InvalidUtf8] });
  t.equal(FAILURE_STATUS[ErrorCode.InvalidUtf8], StatusCode.InvalidFramePayloadData);
  const reason = (sent as { reason: string }).reason;
  t.ok(Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES, `${Buffer.byteLength(reason)} bytes fit a close frame`);
  t.match(reason, /^é+\.\.\.$/, "whole characters, then ...");
  t.match(host.errors[0], { code: StatusCode.InvalidFramePayloadData, errorCode: ErrorCode.InvalidUtf8, reason });
  handshake.fail(ErrorCode.MessageTooBig, "later");
  t.equal(host.frames.length, 1, "a second failure sends nothing");
  t.equal(host.errors.length, 1, "and reports nothing new");
});

t.test("truncateCloseReason keeps short reasons and cuts long ones within 123 bytes", async (t) => {
  t.equal(truncateCloseReason("short"), "short");
  t.equal(truncateCloseReason("x".repeat(123)), "x".repeat(123));
  t.equal(truncateCloseReason("x".repeat(124)), "x".repeat(120) + "...");
  for (const char of ["é", "€", "😀"]) {
    const cut = truncateCloseReason(char.repeat(80));
    t.ok(Buffer.byteLength(cut) <= MAX_CLOSE_REASON_BYTES, `${char}: ${Buffer.byteLength(cut)} bytes`);
    t.notOk(cut.includes("\ufffd"), `${char}: no broken character`);
    t.doesNotThrow(() => encodeClosePayload(StatusCode.InternalError, cut));
  }
});

t.test("the peer ending TCP without a close frame is a 1006", async (t) => {
  const { host, handshake } = fixture(false);
  handshake.onPeerEnd();
  t.same(host.calls, ["terminate", "endSocket"]);
  t.match(host.errors[0], { code: StatusCode.AbnormalClosure, reason: "connection closed without a close frame" });
  handshake.onSocketClose();
  t.same(await handshake.closed, { code: StatusCode.AbnormalClosure, reason: "", wasClean: false });
});

t.test("a socket error makes even a finished handshake unclean", async (t) => {
  const { host, handshake } = fixture(true);
  handshake.close(StatusCode.NormalClosure, "", encodeClosePayload(StatusCode.NormalClosure));
  handshake.onCloseFrame(encodeClosePayload(StatusCode.NormalClosure));
  handshake.onSocketError(new Error("read ECONNRESET"));
  handshake.onSocketClose();
  t.same(await handshake.closed, { code: StatusCode.NormalClosure, reason: "", wasClean: false });
  t.equal(host.errors.length, 1, "the close came first and stays the reason");
});

t.test("a socket error before any close is reported with its cause", async (t) => {
  const { host, handshake } = fixture(false);
  const cause = new Error("read ECONNRESET");
  handshake.onSocketError(cause);
  t.match(host.errors[0], { code: StatusCode.AbnormalClosure, reason: "connection failed: read ECONNRESET", cause });
});

t.test("closing when the socket is already gone sends nothing and arms no timer", async (t) => {
  const { host, handshake } = fixture(false, 1);
  host.socketGone = true;
  handshake.close(StatusCode.NormalClosure, "", encodeClosePayload(StatusCode.NormalClosure));
  t.notOk(handshake.sent);
  t.same(host.calls, ["terminate"]);
  handshake.onSocketClose();
  t.same(await handshake.closed, { code: StatusCode.AbnormalClosure, reason: "", wasClean: false });
  t.notOk(host.calls.includes("destroySocket"), "no timer fired after the socket closed");
});

t.test("closed is one promise, before and after the socket closes", async (t) => {
  const { handshake } = fixture(true);
  const before = handshake.closed;
  t.equal(handshake.closed, before);
  handshake.onSocketClose();
  t.equal(handshake.closed, before);
  t.same(await before, { code: StatusCode.AbnormalClosure, reason: "", wasClean: false });
  handshake.onSocketClose();
  t.same(await handshake.closed, await before, "settled once");
});

t.test("an answer that was pending when the socket closed still records the peer's close", async (t) => {
  const { host, handshake } = fixture(true);
  handshake.onCloseFrame(encodeClosePayload(StatusCode.NormalClosure, "done"));
  handshake.onSocketClose();
  t.same(host.calls.slice(0, 3), ["stopReading", "terminate", "sendCloseFrame"], "the answer is sent before settling");
  t.same(await handshake.closed, { code: StatusCode.NormalClosure, reason: "done", wasClean: true });
});
