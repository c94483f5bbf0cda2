/**
 * permessage-deflate negotiation as pure functions (RFC 7692 §5, §7.1): the
 * client's offer, the server's choice among offers (declining, never
 * failing, offers it cannot accept), the client's check of the answer, and
 * how agreed parameters become each role's settings.
 */

import t from "tap";
import { acceptResponse, checkCompressionOptions, clientOffer, type CompressionMode, type CompressionOptions, defaultThreshold, type DeflateParams, selectOffer, settingsFor } from "../../src/protocol/handshake.js";

const DEFAULTS: DeflateParams = { serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 15, clientMaxWindowBits: 15 };

t.test("clientOffer", async (t) => {
  t.equal(clientOffer(undefined), undefined, "default is disabled: no offer");
  t.equal(clientOffer("disabled"), undefined);
  t.equal(clientOffer("context-takeover"), "permessage-deflate; client_max_window_bits");
  t.equal(
    clientOffer("no-context-takeover"),
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits",
  );
});

interface SelectCase {
  name: string;
  offer: string | string[] | undefined;
  /** Expected answer in context-takeover mode; undefined = declined. */
  response: string | undefined;
  params?: Partial<DeflateParams>;
}

const SELECT_CASES: SelectCase[] = [
  { name: "no header", offer: undefined, response: undefined },
  { name: "empty header", offer: "", response: undefined },
  { name: "other extension only", offer: "x-webkit-deflate-frame", response: undefined },
  { name: "plain offer", offer: "permessage-deflate", response: "permessage-deflate", params: {} },
  { name: "name is case-insensitive", offer: "PerMessage-Deflate", response: "permessage-deflate", params: {} },
  {
    name: "server_no_context_takeover is honoured",
    offer: "permessage-deflate; server_no_context_takeover",
    response: "permessage-deflate; server_no_context_takeover",
    params: { serverNoContextTakeover: true },
  },
  {
    name: "client_no_context_takeover is acknowledged",
    offer: "permessage-deflate; client_no_context_takeover",
    response: "permessage-deflate; client_no_context_takeover",
    params: { clientNoContextTakeover: true },
  },
  {
    name: "both no_context_takeover",
    offer: "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
    response: "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    params: { serverNoContextTakeover: true, clientNoContextTakeover: true },
  },
  {
    name: "server_max_window_bits=10 is answered",
    offer: "permessage-deflate; server_max_window_bits=10",
    response: "permessage-deflate; server_max_window_bits=10",
    params: { serverMaxWindowBits: 10 },
  },
  {
    name: "server_max_window_bits=8 (lower bound)",
    offer: "permessage-deflate; server_max_window_bits=8",
    response: "permessage-deflate; server_max_window_bits=8",
    params: { serverMaxWindowBits: 8 },
  },
  {
    name: "server_max_window_bits=15 (upper bound)",
    offer: "permessage-deflate; server_max_window_bits=15",
    response: "permessage-deflate; server_max_window_bits=15",
    params: { serverMaxWindowBits: 15 },
  },
  {
    name: "quoted window bits are unquoted (§7.1.2.1)",
    offer: 'permessage-deflate; server_max_window_bits="12"',
    response: "permessage-deflate; server_max_window_bits=12",
    params: { serverMaxWindowBits: 12 },
  },
  {
    name: "client_max_window_bits without value: the server may leave it out",
    offer: "permessage-deflate; client_max_window_bits",
    response: "permessage-deflate",
    params: { clientMaxWindowBits: 15 },
  },
  {
    name: "client_max_window_bits=9 is answered",
    offer: "permessage-deflate; client_max_window_bits=9",
    response: "permessage-deflate; client_max_window_bits=9",
    params: { clientMaxWindowBits: 9 },
  },
  {
    name: "every parameter at once",
    offer: "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11; client_max_window_bits=13",
    response: "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11; client_max_window_bits=13",
    params: { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 11, clientMaxWindowBits: 13 },
  },
  { name: "unknown parameter declines", offer: "permessage-deflate; foo", response: undefined },
  { name: "unknown parameter with value declines", offer: "permessage-deflate; foo=1", response: undefined },
  { name: "duplicate flag declines", offer: "permessage-deflate; server_no_context_takeover; server_no_context_takeover", response: undefined },
  { name: "duplicate window bits declines", offer: "permessage-deflate; client_max_window_bits=10; client_max_window_bits=11", response: undefined },
  { name: "duplicate, once without value, declines", offer: "permessage-deflate; client_max_window_bits; client_max_window_bits=10", response: undefined },
  { name: "server_max_window_bits=7 declines", offer: "permessage-deflate; server_max_window_bits=7", response: undefined },
  { name: "server_max_window_bits=16 declines", offer: "permessage-deflate; server_max_window_bits=16", response: undefined },
  { name: 'server_max_window_bits="010" declines (leading zero)', offer: "permessage-deflate; server_max_window_bits=010", response: undefined },
  { name: "server_max_window_bits without value declines", offer: "permessage-deflate; server_max_window_bits", response: undefined },
  { name: "server_max_window_bits=abc declines", offer: "permessage-deflate; server_max_window_bits=abc", response: undefined },
  { name: "client_max_window_bits=7 declines", offer: "permessage-deflate; client_max_window_bits=7", response: undefined },
  { name: "client_max_window_bits=16 declines", offer: "permessage-deflate; client_max_window_bits=16", response: undefined },
  { name: "no_context_takeover with a value declines", offer: "permessage-deflate; server_no_context_takeover=1", response: undefined },
  { name: "client_no_context_takeover with a value declines", offer: "permessage-deflate; client_no_context_takeover=true", response: undefined },
  {
    name: "first acceptable offer is chosen",
    offer: "permessage-deflate; client_max_window_bits=10, permessage-deflate; server_no_context_takeover",
    response: "permessage-deflate; client_max_window_bits=10",
    params: { clientMaxWindowBits: 10 },
  },
  {
    name: "a declined offer falls back to the next",
    offer: "permessage-deflate; server_max_window_bits=16, permessage-deflate; server_max_window_bits=12, permessage-deflate",
    response: "permessage-deflate; server_max_window_bits=12",
    params: { serverMaxWindowBits: 12 },
  },
  {
    name: "offers in separate header lines",
    offer: ["x-foo", "permessage-deflate; unknown", "permessage-deflate; client_no_context_takeover"],
    response: "permessage-deflate; client_no_context_takeover",
    params: { clientNoContextTakeover: true },
  },
  {
    name: "other extensions before and after are skipped",
    offer: "x-foo; bar=1, permessage-deflate, x-baz",
    response: "permessage-deflate",
    params: {},
  },
  { name: "all offers declined", offer: "permessage-deflate; a, permessage-deflate; server_max_window_bits=0", response: undefined },
  { name: "malformed header declines all", offer: "permessage-deflate; =1", response: undefined },
  { name: "malformed name declines all", offer: "permessage deflate", response: undefined },
];

t.test("selectOffer in context-takeover mode", async (t) => {
  for (const c of SELECT_CASES) {
    const got = selectOffer(c.offer, "context-takeover");
    if (c.response === undefined) {
      t.equal(got, undefined, `${c.name}: declined`);
      continue;
    }
    t.equal(got?.response, c.response, `${c.name}: answer`);
    t.same(got?.params, { ...DEFAULTS, ...c.params }, `${c.name}: params`);
  }
});

t.test("selectOffer in no-context-takeover mode forces both no_context_takeover", async (t) => {
  for (const c of SELECT_CASES) {
    const got = selectOffer(c.offer, "no-context-takeover");
    if (c.response === undefined) {
      t.equal(got, undefined, `${c.name}: declined`);
      continue;
    }
    t.same(got?.params, { ...DEFAULTS, ...c.params, serverNoContextTakeover: true, clientNoContextTakeover: true }, `${c.name}: params`);
    t.match(got?.response, /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/, `${c.name}: answer`);
    // The answer must itself be a valid answer to the same offer.
    const back = acceptResponse(got!.response, "context-takeover");
    t.type(back, "object", `${c.name}: a client accepts the answer`);
  }
});

t.test("selectOffer declines everything when disabled", async (t) => {
  for (const mode of [undefined, "disabled"] as Array<CompressionMode | undefined>) {
    t.equal(selectOffer("permessage-deflate", mode), undefined, String(mode));
    t.equal(selectOffer("permessage-deflate; client_max_window_bits", mode), undefined, String(mode));
  }
});

interface ResponseCase {
  name: string;
  answer: string | undefined;
  /** Expected params (undefined = declined by the server), or a RegExp matching the failure. */
  expect: Partial<DeflateParams> | undefined | RegExp;
}

const RESPONSE_CASES: ResponseCase[] = [
  { name: "no header: server declined", answer: undefined, expect: undefined },
  { name: "empty header: server declined", answer: "", expect: undefined },
  { name: "plain acceptance", answer: "permessage-deflate", expect: {} },
  { name: "server_no_context_takeover", answer: "permessage-deflate; server_no_context_takeover", expect: { serverNoContextTakeover: true } },
  { name: "client_no_context_takeover", answer: "permessage-deflate; client_no_context_takeover", expect: { clientNoContextTakeover: true } },
  { name: "server_max_window_bits=9", answer: "permessage-deflate; server_max_window_bits=9", expect: { serverMaxWindowBits: 9 } },
  { name: "client_max_window_bits=12", answer: "permessage-deflate; client_max_window_bits=12", expect: { clientMaxWindowBits: 12 } },
  { name: "client_max_window_bits=8", answer: "permessage-deflate; client_max_window_bits=8", expect: { clientMaxWindowBits: 8 } },
  { name: "quoted value", answer: 'permessage-deflate; client_max_window_bits="10"', expect: { clientMaxWindowBits: 10 } },
  { name: "unoffered extension", answer: "x-webkit-deflate-frame", expect: /not offered/ },
  { name: "two extensions", answer: "permessage-deflate, permessage-deflate", expect: /not offered/ },
  { name: "unknown parameter", answer: "permessage-deflate; foo", expect: /invalid permessage-deflate parameters/ },
  { name: "duplicate parameter", answer: "permessage-deflate; server_no_context_takeover; server_no_context_takeover", expect: /invalid/ },
  { name: "duplicate window bits", answer: "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10", expect: /invalid/ },
  { name: "window bits 7", answer: "permessage-deflate; server_max_window_bits=7", expect: /invalid/ },
  { name: "window bits 16", answer: "permessage-deflate; client_max_window_bits=16", expect: /invalid/ },
  { name: "window bits with leading zero", answer: "permessage-deflate; server_max_window_bits=09", expect: /invalid/ },
  { name: "client_max_window_bits without value", answer: "permessage-deflate; client_max_window_bits", expect: /invalid/ },
  { name: "server_max_window_bits without value", answer: "permessage-deflate; server_max_window_bits", expect: /invalid/ },
  { name: "flag with a value", answer: "permessage-deflate; client_no_context_takeover=1", expect: /invalid/ },
  { name: "malformed header", answer: "permessage-deflate;;=", expect: /malformed/ },
];

t.test("acceptResponse checks the server's answer", async (t) => {
  for (const c of RESPONSE_CASES) {
    const got = acceptResponse(c.answer, "context-takeover");
    if (c.expect instanceof RegExp) {
      t.type(got, "string", `${c.name}: fails the handshake`);
      t.match(got, c.expect, `${c.name}: says why`);
    } else if (c.expect === undefined) {
      t.same(got, { params: undefined, header: "" }, `${c.name}: no compression`);
    } else {
      if (typeof got === "string") {
        t.fail(`${c.name}: refused with ${got}`);
        continue;
      }
      t.same(got.params, { ...DEFAULTS, ...c.expect }, `${c.name}: params`);
      t.match(got.header, /^permessage-deflate/, `${c.name}: header`);
    }
  }
});

t.test("acceptResponse refuses any extension when none was offered", async (t) => {
  for (const mode of [undefined, "disabled"] as Array<CompressionMode | undefined>) {
    t.match(acceptResponse("permessage-deflate", mode), /not offered/, String(mode));
    t.same(acceptResponse(undefined, mode), { params: undefined, header: "" }, `${String(mode)}: no header is fine`);
  }
});

t.test("a no-context-takeover client resets its compressor whatever the server answers", async (t) => {
  const got = acceptResponse("permessage-deflate", "no-context-takeover");
  if (typeof got === "string") throw new Error(got);
  t.equal(got.params?.clientNoContextTakeover, true, "client resets its own window");
  t.equal(got.params?.serverNoContextTakeover, false, "the server kept its context: the client keeps its inflater");
});

t.test("settingsFor maps agreed parameters to each role", async (t) => {
  const params: DeflateParams = { serverNoContextTakeover: true, clientNoContextTakeover: false, serverMaxWindowBits: 10, clientMaxWindowBits: 12 };
  const zlibDefaults = { memLevel: 8, level: 6 };
  t.same(settingsFor(params, "server", "h"), { sendNoContextTakeover: true, receiveNoContextTakeover: false, sendWindowBits: 10, receiveWindowBits: 12, ...zlibDefaults, header: "h" });
  t.same(settingsFor(params, "client", "h"), { sendNoContextTakeover: false, receiveNoContextTakeover: true, sendWindowBits: 12, receiveWindowBits: 10, ...zlibDefaults, header: "h" });
  t.same(
    settingsFor(params, "client", "h", { mode: "context-takeover", maxWindowBits: 11, memLevel: 3, level: 1 }),
    { sendNoContextTakeover: false, receiveNoContextTakeover: true, sendWindowBits: 11, receiveWindowBits: 10, memLevel: 3, level: 1, header: "h" },
    "this end's maxWindowBits bounds its own window; memLevel and level are its own",
  );
});

t.test("defaultThreshold depends on context takeover", async (t) => {
  const base = { receiveNoContextTakeover: false, sendWindowBits: 15, receiveWindowBits: 15, memLevel: 8, level: 6, header: "" };
  t.equal(defaultThreshold({ ...base, sendNoContextTakeover: false }), 128);
  t.equal(defaultThreshold({ ...base, sendNoContextTakeover: true }), 512);
});

t.test("every answer selectOffer makes is accepted by acceptResponse with the same parameters", async (t) => {
  const flags = ["", "; server_no_context_takeover", "; client_no_context_takeover"];
  for (const flag of flags) {
    for (let sb = 8; sb <= 15; sb++) {
      for (const cb of ["", "; client_max_window_bits", "; client_max_window_bits=9", "; client_max_window_bits=15"]) {
        const offer = `permessage-deflate${flag}; server_max_window_bits=${sb}${cb}`;
        const chosen = selectOffer(offer, "context-takeover");
        if (chosen === undefined) {
          t.fail(`${offer} declined`);
          continue;
        }
        const back = acceptResponse(chosen.response, "context-takeover");
        if (typeof back === "string") {
          t.fail(`${offer}: ${back}`);
          continue;
        }
        t.same(back.params, chosen.params, offer);
      }
    }
  }
});

t.test("checkCompressionOptions refuses bad settings before any handshake", async (t) => {
  const good = [{}, { compression: "disabled" }, { compression: "no-context-takeover", compressionLevel: 0, compressionThreshold: 0 }, { compressionLevel: 9, compressionThreshold: Infinity }];
  for (const o of good) t.doesNotThrow(() => checkCompressionOptions(o as CompressionOptions), JSON.stringify(o));
  const bad: Array<[unknown, ErrorConstructor | RangeErrorConstructor | TypeErrorConstructor]> = [
    [{ compression: "contexttakeover" }, TypeError],
    [{ compression: "" }, TypeError],
    [{ compression: true }, TypeError],
    [{ compressionLevel: -1 }, RangeError],
    [{ compressionLevel: 10 }, RangeError],
    [{ compressionLevel: 1.5 }, RangeError],
    [{ compressionLevel: "6" }, RangeError],
    [{ compressionThreshold: -1 }, RangeError],
    [{ compressionThreshold: NaN }, RangeError],
    [{ compressionThreshold: "128" }, RangeError],
  ];
  for (const [o, type] of bad) t.throws(() => checkCompressionOptions(o as CompressionOptions), type, JSON.stringify(o) ?? String(o));
});
