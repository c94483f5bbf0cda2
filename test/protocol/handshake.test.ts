import t from "tap";
import { acceptKey, checkHeaders, formatExtension, hasToken, headerList, isToken, isValidKey, parseExtensions, singleHeader } from "../../src/protocol/handshake.js";

t.test("acceptKey: the example of RFC 6455 §1.3", async (t) => {
  t.equal(acceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  t.equal(acceptKey("x3JJHMbDL1EzLkh9GBhXDw=="), "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
});

t.test("isValidKey", async (t) => {
  t.ok(isValidKey("dGhlIHNhbXBsZSBub25jZQ=="));
  t.ok(isValidKey("AAAAAAAAAAAAAAAAAAAA+/==".replace("AA+/", "AA+/")));
  t.ok(isValidKey(Buffer.alloc(16, 0xff).toString("base64")));
  const invalid = [
    undefined,
    "",
    "dGhlIHNhbXBsZSBub25jZQ=", // 23 chars
    "dGhlIHNhbXBsZSBub25jZQ===", // 25 chars
    "dGhlIHNhbXBsZSBub25jZQAA", // no padding: 18 bytes
    "dGhlIHNhbXBsZSBub25j ZQ=", // space
    "dGhlIHNhbXBsZSBub25jZ-_", // base64url
    "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==", // duplicated and joined
    Buffer.alloc(15).toString("base64") + "AAAA", // 24 chars, wrong shape
  ];
  for (const key of invalid) t.notOk(isValidKey(key), JSON.stringify(key));
});

t.test("isToken", async (t) => {
  for (const ok of ["websocket", "chat.v2", "a!#$%&'*+-.^_`|~z", "X-Custom-Header", "0"]) t.ok(isToken(ok), ok);
  for (const bad of ["", "a b", "a,b", "a;b", "a=b", '"q"', "a\r", "a\n", "a\0", "é", "(x)", "a/b", "a:b"]) {
    t.notOk(isToken(bad), JSON.stringify(bad));
  }
});

t.test("headerList and hasToken", async (t) => {
  t.same(headerList(undefined), []);
  t.same(headerList(""), []);
  t.same(headerList("a"), ["a"]);
  t.same(headerList(" a , b,,c ,"), ["a", "b", "c"]);
  t.same(headerList(["a, b", "c"]), ["a", "b", "c"], "repeated header");
  t.same(headerList(","), []);
  t.ok(hasToken("keep-alive, Upgrade", "upgrade"));
  t.ok(hasToken("UPGRADE", "upgrade"));
  t.ok(hasToken(["keep-alive", "upgrade"], "Upgrade"));
  t.notOk(hasToken("upgrade-insecure", "upgrade"));
  t.notOk(hasToken("keep-alive", "upgrade"));
  t.notOk(hasToken(undefined, "upgrade"));
  // a long hostile value is scanned once
  const hostile = " ,".repeat(100000) + "x";
  t.same(headerList(hostile), ["x"]);
});

t.test("singleHeader", async (t) => {
  t.equal(singleHeader({ a: "1" }, "a"), "1");
  t.equal(singleHeader({}, "a"), undefined);
  t.equal(singleHeader({ "set-cookie": ["x=1"] }, "set-cookie"), "x=1");
  t.equal(singleHeader({ "set-cookie": ["x=1", "y=2"] }, "set-cookie"), undefined, "repeated");
});

t.test("parseExtensions", async (t) => {
  t.same(parseExtensions(undefined), []);
  t.same(parseExtensions(""), []);
  const offers = parseExtensions(
    'permessage-deflate; client_max_window_bits; server_max_window_bits="10", Permessage-Deflate ; Server_No_Context_Takeover',
  );
  t.same(offers, [
    { name: "permessage-deflate", params: [["client_max_window_bits", true], ["server_max_window_bits", "10"]] },
    { name: "permessage-deflate", params: [["server_no_context_takeover", true]] },
  ]);
  t.same(parseExtensions(["x-a", "x-b; p=1"]), [
    { name: "x-a", params: [] },
    { name: "x-b", params: [["p", "1"]] },
  ]);
  t.same(parseExtensions("x; a=1; a=2"), [{ name: "x", params: [["a", "1"], ["a", "2"]] }], "duplicate parameters are kept");
  const malformed = [
    "bad name; x",
    "ok; p=",
    "ok; =v",
    'ok; p="a b"',
    "ok; p=a b",
    'ok; p="',
    "ok; p==1",
    ";p=1",
    "(x)",
  ];
  for (const value of malformed) t.equal(parseExtensions(value), undefined, JSON.stringify(value));
});

t.test("formatExtension round-trips", async (t) => {
  const offer = {
    name: "permessage-deflate",
    params: [["client_no_context_takeover", true], ["server_max_window_bits", "12"]] as Array<[string, string | true]>,
  };
  const text = formatExtension(offer);
  t.equal(text, "permessage-deflate; client_no_context_takeover; server_max_window_bits=12");
  t.same(parseExtensions(text), [offer]);
  t.equal(formatExtension({ name: "x", params: [] }), "x");
});

t.test("checkHeaders refuses header injection", async (t) => {
  t.doesNotThrow(() => checkHeaders(undefined));
  t.doesNotThrow(() => checkHeaders({}));
  t.doesNotThrow(() => checkHeaders({ Authorization: "Bearer x", "X-N": 5, "Set-Cookie": ["a=1", "b=2"], "X-U": undefined }));
  const bad: Array<[string, Record<string, unknown>]> = [
    ["CR in value", { "X-A": "a\rb" }],
    ["LF in value", { "X-A": "a\nSet-Cookie: evil=1" }],
    ["NUL in value", { "X-A": "a\0" }],
    ["CRLF in one of several values", { "Set-Cookie": ["ok=1", "evil=1\r\nX: y"] }],
    ["space in name", { "X A": "v" }],
    ["colon in name", { "X-A:": "v" }],
    ["empty name", { "": "v" }],
    ["CRLF in name", { "X\r\nA": "v" }],
  ];
  for (const [name, headers] of bad) {
    t.throws(() => checkHeaders(headers as Record<string, string>), { code: "WS_ERR_INVALID_HEADER" }, name);
  }
});
