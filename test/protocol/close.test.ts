import t from "tap";
import { CloseError, closeStatus, decodeClosePayload, encodeClosePayload, isCloseError, isUnexpectedCloseError, MAX_CLOSE_REASON_BYTES } from "../../src/protocol/close.js";
import { ErrorCode, FAILURE_STATUS, isSendableCloseCode, StatusCode } from "../../src/protocol/errors.js";

/** sendable is RFC 6455 §7.4 and the IANA registry, written out independently. */
function sendable(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

t.test("isSendableCloseCode for every code from 0 to 5000", async (t) => {
  const wrong: number[] = [];
  for (let code = 0; code <= 5000; code++) if (isSendableCloseCode(code) !== sendable(code)) wrong.push(code);
  t.same(wrong, []);
  const boundaries: Array<[number, boolean]> = [
    [999, false], [1000, true], [1003, true], [1004, false], [1005, false], [1006, false], [1007, true],
    [1011, true], [1012, true], [1014, true], [1015, false], [1016, false], [2999, false], [3000, true],
    [4999, true], [5000, false], [65535, false], [-1, false], [1000.5, false], [NaN, false], [Infinity, false],
  ];
  for (const [code, ok] of boundaries) t.equal(isSendableCloseCode(code), ok, `code ${code}`);
});

t.test("StatusCode values", async (t) => {
  t.equal(StatusCode.NormalClosure, 1000);
  t.equal(StatusCode.NoStatusRcvd, 1005);
  t.equal(StatusCode.AbnormalClosure, 1006);
  t.equal(StatusCode.InternalError, 1011);
  t.equal(StatusCode.TLSHandshake, 1015);
  t.equal(MAX_CLOSE_REASON_BYTES, 123);
});

t.test("encodeClosePayload", async (t) => {
  t.same(encodeClosePayload(undefined), Buffer.alloc(0), "no code: empty body");
  t.same(encodeClosePayload(StatusCode.NoStatusRcvd), Buffer.alloc(0), "1005: empty body");
  t.throws(() => encodeClosePayload(undefined, "why"), RangeError, "reason without code");
  t.throws(() => encodeClosePayload(1005, "why"), RangeError, "reason with 1005");
  t.same(encodeClosePayload(1000), Buffer.from([0x03, 0xe8]));
  t.same(encodeClosePayload(4999, "bye"), Buffer.concat([Buffer.from([0x13, 0x87]), Buffer.from("bye")]));
  for (const code of [0, 999, 1004, 1006, 1015, 1016, 2999, 5000, 1000.5]) {
    t.throws(() => encodeClosePayload(code), { name: "RangeError", message: new RegExp(`close code ${code}`) }, `code ${code}`);
  }
  const max = "r".repeat(123);
  t.equal(encodeClosePayload(1000, max).length, 125, "123-byte reason fits");
  t.throws(() => encodeClosePayload(1000, max + "r"), { name: "RangeError", message: /124 bytes/ }, "124-byte reason");
  // the limit counts bytes, not characters: € is 3 bytes
  t.equal(encodeClosePayload(1001, "€".repeat(41)).length, 125);
  t.throws(() => encodeClosePayload(1001, "€".repeat(41) + "x"), RangeError);
});

t.test("decodeClosePayload", async (t) => {
  t.same(decodeClosePayload(Buffer.alloc(0)), { code: 1005, reason: "" });
  t.same(decodeClosePayload(Buffer.from([0x03])), { error: "close frame payload of 1 byte", errorCode: ErrorCode.InvalidClosePayload });
  t.same(decodeClosePayload(Buffer.from([0x03, 0xe8])), { code: 1000, reason: "" });
  t.same(decodeClosePayload(encodeClosePayload(3000, "héllo")), { code: 3000, reason: "héllo" });
  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]) {
    const body = Buffer.alloc(2);
    body.writeUInt16BE(code);
    t.same(decodeClosePayload(body), { error: `invalid close code ${code}`, errorCode: ErrorCode.InvalidClosePayload }, `code ${code}`);
  }
  const badReason = Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from([0xed, 0xa0, 0x80])]);
  t.same(decodeClosePayload(badReason), { error: "close reason is not valid UTF-8", errorCode: ErrorCode.InvalidUtf8 });
  const truncated = Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from("€").subarray(0, 2)]);
  t.match(decodeClosePayload(truncated), { errorCode: ErrorCode.InvalidUtf8 });
  // the failure table maps each error code to the close code sent
  t.equal(FAILURE_STATUS[ErrorCode.InvalidClosePayload], StatusCode.ProtocolError);
  t.equal(FAILURE_STATUS[ErrorCode.InvalidUtf8], StatusCode.InvalidFramePayloadData);
  for (const length of [123, 124]) {
    const reason = "q".repeat(length);
    const body = Buffer.concat([Buffer.from([0x03, 0xe9]), Buffer.from(reason)]);
    t.same(decodeClosePayload(body), { code: 1001, reason }, `${length}-byte reason decodes`);
  }
});

t.test("encode then decode round-trips every sendable code", async (t) => {
  let bad = 0;
  for (let code = 0; code < 5001; code++) {
    if (!isSendableCloseCode(code)) continue;
    const got = decodeClosePayload(encodeClosePayload(code, "ok"));
    if (!("reason" in got) || got.code !== code || got.reason !== "ok") bad++;
  }
  t.equal(bad, 0);
});

t.test("CloseError", async (t) => {
  const e = new CloseError(1000, "done");
  t.type(e, Error);
  t.equal(e.name, "CloseError");
  t.equal(e.code, 1000);
  t.equal(e.reason, "done");
  t.equal(e.remote, false);
  t.equal(e.errorCode, undefined);
  t.equal(e.cause, undefined);
  t.equal(e.message, "connection closed with status 1000 (NormalClosure): done");
  t.equal(new CloseError(1006, "").message, "connection closed with status 1006 (AbnormalClosure)");
  t.equal(new CloseError(4000, "app").message, "connection closed with status 4000 (application): app");
  t.equal(new CloseError(2000, "").message, "connection closed with status 2000 (unknown)");
  const cause = new Error("socket hang up");
  const f = new CloseError(1002, "bad frame", { remote: true, errorCode: ErrorCode.InvalidOpcode, cause });
  t.equal(f.remote, true);
  t.equal(f.errorCode, "WS_ERR_INVALID_OPCODE");
  t.equal(f.cause, cause);
  t.notOk("cause" in new CloseError(1000, "", {}), "no cause property without a cause");
});

t.test("closeStatus follows the cause chain", async (t) => {
  t.equal(closeStatus(new CloseError(1001, "")), 1001);
  const wrapped = new Error("failed to read", { cause: new Error("failed to x", { cause: new CloseError(4001, "") }) });
  t.equal(closeStatus(wrapped), 4001);
  t.equal(closeStatus(new Error("plain")), -1);
  t.equal(closeStatus(undefined), -1);
  t.equal(closeStatus(null), -1);
  t.equal(closeStatus("string"), -1);
  t.equal(closeStatus(42), -1);
  t.equal(closeStatus({ cause: new CloseError(1003, "") }), 1003, "plain objects with a cause");
  // the outermost CloseError wins
  t.equal(closeStatus(new CloseError(1000, "", { cause: new CloseError(1011, "") })), 1000);
  // a cycle ends
  const a = new Error("a");
  const b = new Error("b", { cause: a });
  (a as { cause?: unknown }).cause = b;
  t.equal(closeStatus(a), -1, "cyclic causes terminate");
  // a very deep chain is cut off rather than walked forever
  let deep: unknown = new CloseError(1000, "");
  for (let i = 0; i < 15; i++) deep = new Error(`level ${i}`, { cause: deep });
  t.equal(closeStatus(deep), 1000, "found at depth 15");
  deep = new Error("one more", { cause: deep });
  t.equal(closeStatus(deep), -1, "not searched past depth 16");
});

t.test("isCloseError and isUnexpectedCloseError", async (t) => {
  const normal = new Error("wrapped", { cause: new CloseError(1000, "") });
  const going = new CloseError(1001, "");
  t.ok(isCloseError(normal));
  t.ok(isCloseError(normal, 1000));
  t.ok(isCloseError(normal, 1001, 1000));
  t.notOk(isCloseError(normal, 1001));
  t.notOk(isCloseError(new Error("x")));
  t.notOk(isCloseError(new Error("x"), 1000));
  t.notOk(isUnexpectedCloseError(normal, 1000, 1001));
  t.ok(isUnexpectedCloseError(going, 1000));
  t.ok(isUnexpectedCloseError(going), "no expected codes: every close is unexpected");
  t.notOk(isUnexpectedCloseError(new Error("x"), 1000), "not a close error at all");
});
