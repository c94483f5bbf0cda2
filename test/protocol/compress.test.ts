/**
 * permessage-deflate negotiation as pure functions (RFC 7692 §5, §7.1): the
 * client's offer, the server's choice among offers (declining, never
 * failing, offers it cannot accept), the client's check of the answer, and
 * how agreed parameters become each role's settings.
 */

import t from "tap";
import {
  acceptResponse,
  checkCompressionOptions,
  clientOffer,
  type CompressionMode,
  type CompressionOptions,
  type CompressionSettings,
  DEFAULT_COMPRESSION_LEVEL,
  DEFAULT_MEM_LEVEL,
  defaultThreshold,
  deflateConfig,
  type DeflateParams,
  selectOffer,
  settingsFor,
} from "../../src/protocol/handshake.js";

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

// ---- CompressionSettings: maxWindowBits, memLevel, level (RFC 7692 §7.1.2) ----

t.test("clientOffer with settings objects", async (t) => {
  t.equal(clientOffer({}), "permessage-deflate; client_max_window_bits", "empty settings: context takeover, 15 bits");
  t.equal(clientOffer({ mode: "context-takeover", maxWindowBits: 15 }), "permessage-deflate; client_max_window_bits", "15 bits: the mode string's offer");
  t.equal(
    clientOffer({ mode: "no-context-takeover", maxWindowBits: 15 }),
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits",
  );
  t.equal(
    clientOffer({ mode: "context-takeover", maxWindowBits: 10 }),
    "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10",
    "10 bits: asks the server for 10 and announces 10",
  );
  t.equal(clientOffer({ maxWindowBits: 10 }), "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10", "mode defaults to context-takeover");
  t.equal(
    clientOffer({ mode: "no-context-takeover", maxWindowBits: 10 }),
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=10",
  );
  t.equal(clientOffer({ maxWindowBits: 8 }), "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8", "8 bits");
  t.equal(clientOffer({ memLevel: 1, level: 0 }), "permessage-deflate; client_max_window_bits", "memLevel and level are not negotiated");
  // Every offer is one a plain server takes.
  for (const s of [{}, { maxWindowBits: 10 }, { mode: "no-context-takeover", maxWindowBits: 9 }] as CompressionSettings[]) {
    t.not(selectOffer(clientOffer(s), "context-takeover"), undefined, `${JSON.stringify(s)}: a mode-string server accepts the offer`);
  }
});

interface WindowSelectCase {
  name: string;
  offer: string;
  settings: CompressionSettings;
  /** undefined = declined. */
  response: string | undefined;
  params?: Partial<DeflateParams>;
}

const CT10: CompressionSettings = { mode: "context-takeover", maxWindowBits: 10 };
const NCT10: CompressionSettings = { mode: "no-context-takeover", maxWindowBits: 10 };

const WINDOW_SELECT_CASES: WindowSelectCase[] = [
  {
    name: "Chromium's offer: the client's window is bounded",
    offer: "permessage-deflate; client_max_window_bits",
    settings: CT10,
    response: "permessage-deflate; client_max_window_bits=10",
    params: { serverMaxWindowBits: 10, clientMaxWindowBits: 10 },
  },
  {
    name: "client_max_window_bits=12 is lowered to 10",
    offer: "permessage-deflate; client_max_window_bits=12",
    settings: CT10,
    response: "permessage-deflate; client_max_window_bits=10",
    params: { serverMaxWindowBits: 10, clientMaxWindowBits: 10 },
  },
  {
    name: "client_max_window_bits=9 stays 9",
    offer: "permessage-deflate; client_max_window_bits=9",
    settings: CT10,
    response: "permessage-deflate; client_max_window_bits=9",
    params: { serverMaxWindowBits: 10, clientMaxWindowBits: 9 },
  },
  {
    name: "client_max_window_bits=15 is lowered to 10",
    offer: "permessage-deflate; client_max_window_bits=15",
    settings: CT10,
    response: "permessage-deflate; client_max_window_bits=10",
    params: { serverMaxWindowBits: 10, clientMaxWindowBits: 10 },
  },
  {
    name: "server_max_window_bits=12 is answered 10",
    offer: "permessage-deflate; server_max_window_bits=12; client_max_window_bits",
    settings: CT10,
    response: "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10",
    params: { serverMaxWindowBits: 10, clientMaxWindowBits: 10 },
  },
  {
    name: "server_max_window_bits=9 is answered 9",
    offer: "permessage-deflate; server_max_window_bits=9; client_max_window_bits",
    settings: CT10,
    response: "permessage-deflate; server_max_window_bits=9; client_max_window_bits=10",
    params: { serverMaxWindowBits: 9, clientMaxWindowBits: 10 },
  },
  {
    name: "server_max_window_bits=8 is answered 8",
    offer: "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
    settings: CT10,
    response: "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
    params: { serverMaxWindowBits: 8, clientMaxWindowBits: 8 },
  },
  {
    // Firefox's offer: the client's window cannot be bounded, so it is asked to take no context over (§7.1.1.2).
    name: "context takeover, no client_max_window_bits: answered client_no_context_takeover",
    offer: "permessage-deflate",
    settings: CT10,
    response: "permessage-deflate; client_no_context_takeover",
    params: { clientNoContextTakeover: true, serverMaxWindowBits: 10 },
  },
  {
    name: "context takeover, server_max_window_bits=12 without client_max_window_bits: client_no_context_takeover",
    offer: "permessage-deflate; server_max_window_bits=12",
    settings: CT10,
    response: "permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
    params: { clientNoContextTakeover: true, serverMaxWindowBits: 10 },
  },
  {
    name: "context takeover, the first acceptable offer is taken even without client_max_window_bits",
    offer: "permessage-deflate; server_max_window_bits=12, permessage-deflate; client_max_window_bits",
    settings: CT10,
    response: "permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
    params: { clientNoContextTakeover: true, serverMaxWindowBits: 10 },
  },
  {
    name: "context takeover, a declined offer falls back to the next one",
    offer: "permessage-deflate; foo, permessage-deflate; client_max_window_bits",
    settings: CT10,
    response: "permessage-deflate; client_max_window_bits=10",
    params: { serverMaxWindowBits: 10, clientMaxWindowBits: 10 },
  },
  {
    name: "context takeover, a client that takes no context over need not be asked",
    offer: "permessage-deflate; client_no_context_takeover",
    settings: CT10,
    response: "permessage-deflate; client_no_context_takeover",
    params: { clientNoContextTakeover: true, serverMaxWindowBits: 10, clientMaxWindowBits: 15 },
  },
  {
    name: "no-context-takeover server: an offer without client_max_window_bits is accepted",
    offer: "permessage-deflate",
    settings: NCT10,
    response: "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    params: { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 10, clientMaxWindowBits: 15 },
  },
  {
    name: "no-context-takeover server, Chromium's offer",
    offer: "permessage-deflate; client_max_window_bits",
    settings: NCT10,
    response: "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10",
    params: { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 10, clientMaxWindowBits: 10 },
  },
  {
    name: "no-context-takeover server, the first offer is taken although a later one has client_max_window_bits",
    offer: "permessage-deflate; server_max_window_bits=12, permessage-deflate; client_max_window_bits",
    settings: NCT10,
    response: "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10",
    params: { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 10, clientMaxWindowBits: 15 },
  },
  {
    name: "8 bits, Chromium's offer",
    offer: "permessage-deflate; client_max_window_bits",
    settings: { maxWindowBits: 8 },
    response: "permessage-deflate; client_max_window_bits=8",
    params: { serverMaxWindowBits: 8, clientMaxWindowBits: 8 },
  },
  {
    name: "settings at 15 bits: an offer without client_max_window_bits is taken",
    offer: "permessage-deflate",
    settings: { maxWindowBits: 15 },
    response: "permessage-deflate",
    params: {},
  },
  {
    name: "memLevel and level do not change the answer",
    offer: "permessage-deflate; client_max_window_bits",
    settings: { maxWindowBits: 10, memLevel: 1, level: 9 },
    response: "permessage-deflate; client_max_window_bits=10",
    params: { serverMaxWindowBits: 10, clientMaxWindowBits: 10 },
  },
];

t.test("selectOffer with maxWindowBits below 15", async (t) => {
  for (const c of WINDOW_SELECT_CASES) {
    const got = selectOffer(c.offer, c.settings);
    if (c.response === undefined) {
      t.equal(got, undefined, `${c.name}: declined`);
      continue;
    }
    t.equal(got?.response, c.response, `${c.name}: answer`);
    t.same(got?.params, { ...DEFAULTS, ...c.params }, `${c.name}: params`);
  }
});

t.test("settings at 15 bits choose exactly as the mode strings do", async (t) => {
  for (const mode of ["context-takeover", "no-context-takeover"] as const) {
    for (const c of SELECT_CASES) {
      t.same(selectOffer(c.offer, { mode, maxWindowBits: 15, memLevel: 3, level: 2 }), selectOffer(c.offer, mode), `${mode}, ${c.name}`);
      t.same(selectOffer(c.offer, { mode }), selectOffer(c.offer, mode), `${mode} (default bits), ${c.name}`);
    }
  }
});

t.test("acceptResponse with maxWindowBits 10", async (t) => {
  const refused: Array<[string, string, RegExp]> = [
    ["no server_max_window_bits", "permessage-deflate", /server ignored server_max_window_bits=10/],
    ["client_max_window_bits only", "permessage-deflate; client_max_window_bits=10", /server ignored server_max_window_bits=10/],
    ["server_max_window_bits=11", "permessage-deflate; server_max_window_bits=11", /window bits above the 10 offered/],
    ["server_max_window_bits=15", "permessage-deflate; server_max_window_bits=15; client_max_window_bits=10", /window bits above the 10 offered/],
    ["client_max_window_bits=12", "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12", /window bits above the 10 offered/],
    ["client_max_window_bits=11", "permessage-deflate; server_max_window_bits=9; client_max_window_bits=11", /window bits above the 10 offered/],
  ];
  for (const [name, answer, why] of refused) {
    const got = acceptResponse(answer, CT10);
    t.type(got, "string", `${name}: fails the handshake`);
    t.match(got, why, `${name}: says why`);
    t.match(got, answer, `${name}: quotes the answer`);
  }
  const accepted: Array<[string, string, CompressionSettings, Partial<DeflateParams>]> = [
    ["server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10", CT10, { serverMaxWindowBits: 10 }],
    ["server_max_window_bits=9", "permessage-deflate; server_max_window_bits=9", CT10, { serverMaxWindowBits: 9 }],
    ["both 10", "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10", CT10, { serverMaxWindowBits: 10, clientMaxWindowBits: 10 }],
    ["both 9", "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9", CT10, { serverMaxWindowBits: 9, clientMaxWindowBits: 9 }],
    ["8 and 8", "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8", CT10, { serverMaxWindowBits: 8, clientMaxWindowBits: 8 }],
    [
      "no-context-takeover client: flags and 10",
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=10",
      NCT10,
      { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 10, clientMaxWindowBits: 10 },
    ],
    [
      "no-context-takeover client resets its compressor although the answer leaves the flag out",
      "permessage-deflate; server_max_window_bits=10",
      NCT10,
      { clientNoContextTakeover: true, serverMaxWindowBits: 10 },
    ],
  ];
  for (const [name, answer, settings, params] of accepted) {
    const got = acceptResponse(answer, settings);
    if (typeof got === "string") {
      t.fail(`${name}: refused with ${got}`);
      continue;
    }
    t.same(got.params, { ...DEFAULTS, ...params }, `${name}: params`);
    t.equal(got.header, answer, `${name}: header`);
  }
  t.same(acceptResponse(undefined, CT10), { params: undefined, header: "" }, "a declined offer is no failure: no compression");
  t.same(acceptResponse("", CT10), { params: undefined, header: "" }, "empty answer: no compression");
  // At 15 bits the same answers are fine: the check belongs to the bound.
  t.type(acceptResponse("permessage-deflate", { maxWindowBits: 15 }), "object", "15 bits: no server_max_window_bits needed");
  t.type(acceptResponse("permessage-deflate; server_max_window_bits=15", { maxWindowBits: 14 }), "string", "14 bits: 15 answered is refused");
  // The client's own window: the bound when the answer says nothing, the answer when it is lower.
  const ten = acceptResponse("permessage-deflate; server_max_window_bits=10", CT10);
  if (typeof ten === "string" || ten.params === undefined) throw new Error(String(ten));
  t.match(settingsFor(ten.params, "client", ten.header, CT10), { sendWindowBits: 10, receiveWindowBits: 10 }, "unanswered client_max_window_bits: the client compresses with its own 10");
  const nine = acceptResponse("permessage-deflate; server_max_window_bits=10; client_max_window_bits=9", CT10);
  if (typeof nine === "string" || nine.params === undefined) throw new Error(String(nine));
  t.match(settingsFor(nine.params, "client", nine.header, CT10), { sendWindowBits: 9, receiveWindowBits: 10 }, "client_max_window_bits=9: the client compresses with 9");
});

t.test("every answer of a settings-based server is accepted by a client with the same settings", async (t) => {
  for (const mode of ["context-takeover", "no-context-takeover"] as const) {
    for (let bits = 8; bits <= 15; bits++) {
      const settings: CompressionSettings = { mode, maxWindowBits: bits };
      const label = `${mode}, ${bits} bits`;
      const offer = clientOffer(settings);
      const chosen = selectOffer(offer, settings);
      if (chosen === undefined) {
        t.fail(`${label}: ${offer} declined`);
        continue;
      }
      const back = acceptResponse(chosen.response, settings);
      if (typeof back === "string") {
        t.fail(`${label}: ${back}`);
        continue;
      }
      t.same(back.params, chosen.params, `${label}: both ends agree (${chosen.response})`);
      t.ok(chosen.params.serverMaxWindowBits <= bits && chosen.params.clientMaxWindowBits <= bits, `${label}: both windows within ${bits} bits`);
      if (mode === "no-context-takeover") t.ok(chosen.params.serverNoContextTakeover && chosen.params.clientNoContextTakeover, `${label}: no context either way`);
    }
  }
});

t.test("any pair of settings: a server's answer is accepted, and each end reads what the other sends", async (t) => {
  const modes = ["context-takeover", "no-context-takeover"] as const;
  let pairs = 0;
  for (const serverMode of modes) {
    for (const clientMode of modes) {
      for (let sb = 8; sb <= 15; sb++) {
        for (let cb = 8; cb <= 15; cb++) {
          const server: CompressionSettings = { mode: serverMode, maxWindowBits: sb };
          const client: CompressionSettings = { mode: clientMode, maxWindowBits: cb };
          const label = `server ${serverMode}/${sb}, client ${clientMode}/${cb}`;
          const chosen = selectOffer(clientOffer(client), server);
          if (chosen === undefined) {
            t.fail(`${label}: declined`);
            continue;
          }
          const back = acceptResponse(chosen.response, client);
          if (typeof back === "string" || back.params === undefined) {
            t.fail(`${label}: ${String(back)}`);
            continue;
          }
          const s = settingsFor(chosen.params, "server", chosen.response, server);
          const c = settingsFor(back.params, "client", back.header, client);
          const problems: string[] = [];
          if (s.sendWindowBits > Math.min(sb, cb)) problems.push(`server compresses with ${s.sendWindowBits} bits`);
          if (c.sendWindowBits > Math.min(sb, cb)) problems.push(`client compresses with ${c.sendWindowBits} bits`);
          if (s.sendWindowBits > c.receiveWindowBits) problems.push(`server sends ${s.sendWindowBits} bits, client reads ${c.receiveWindowBits}`);
          if (c.sendWindowBits > s.receiveWindowBits) problems.push(`client sends ${c.sendWindowBits} bits, server reads ${s.receiveWindowBits}`);
          if (s.receiveNoContextTakeover && !c.sendNoContextTakeover) problems.push("server drops context the client keeps");
          if (c.receiveNoContextTakeover && !s.sendNoContextTakeover) problems.push("client drops context the server keeps");
          if (serverMode === "no-context-takeover" && !(s.sendNoContextTakeover && c.sendNoContextTakeover)) problems.push("context kept although the server takes none over");
          if (clientMode === "no-context-takeover" && !c.sendNoContextTakeover) problems.push("a no-context-takeover client keeps its context");
          t.same(problems, [], label);
          pairs++;
        }
      }
    }
  }
  t.equal(pairs, 256, "256 pairs negotiated consistently");
});

t.test("checkCompressionOptions accepts good settings and refuses bad ones", async (t) => {
  const good: CompressionOptions[] = [
    { compression: {} },
    { compression: { mode: "context-takeover" } },
    { compression: { mode: "no-context-takeover", maxWindowBits: 8 } },
    { compression: { maxWindowBits: 15, memLevel: 1, level: 0 } },
    { compression: { maxWindowBits: 10, memLevel: 9, level: 9 } },
    { compression: { mode: undefined, maxWindowBits: undefined, memLevel: undefined, level: undefined } },
    { compression: { level: 3 }, compressionLevel: 7, compressionThreshold: 0 },
  ];
  for (const o of good) t.doesNotThrow(() => checkCompressionOptions(o), JSON.stringify(o));
  const bad: Array<[unknown, TypeErrorConstructor | RangeErrorConstructor, RegExp]> = [
    [{ compression: { mode: "gzip" } }, TypeError, /compression\.mode.*"gzip"/],
    [{ compression: { mode: "disabled" } }, TypeError, /compression\.mode/],
    [{ compression: { maxWindowBits: 7 } }, RangeError, /compression\.maxWindowBits .*8 to 15.*7/],
    [{ compression: { maxWindowBits: 16 } }, RangeError, /compression\.maxWindowBits.*16/],
    [{ compression: { maxWindowBits: 10.5 } }, RangeError, /compression\.maxWindowBits.*10\.5/],
    [{ compression: { maxWindowBits: "10" } }, RangeError, /compression\.maxWindowBits/],
    [{ compression: { maxWindowBits: NaN } }, RangeError, /compression\.maxWindowBits/],
    [{ compression: { memLevel: 0 } }, RangeError, /compression\.memLevel .*1 to 9.*0/],
    [{ compression: { memLevel: 10 } }, RangeError, /compression\.memLevel.*10/],
    [{ compression: { level: -1 } }, RangeError, /compression\.level .*0 to 9.*-1/],
    [{ compression: { level: 10 } }, RangeError, /compression\.level.*10/],
    [{ compression: { level: 1.5 } }, RangeError, /compression\.level/],
    [{ compression: 5 }, TypeError, /compression must be/],
    [{ compression: null }, TypeError, /compression must be.*null/],
    [{ compression: {}, compressionLevel: 11 }, RangeError, /compressionLevel/],
  ];
  for (const [o, type, message] of bad) {
    t.throws(() => checkCompressionOptions(o as CompressionOptions), { name: type.name, message }, JSON.stringify(o));
    t.throws(() => checkCompressionOptions(o as CompressionOptions), type, `${JSON.stringify(o)}: a ${type.name}`);
  }
});

t.test("deflateConfig resolves settings and their defaults", async (t) => {
  t.equal(deflateConfig(undefined), undefined, "undefined: disabled");
  t.equal(deflateConfig("disabled", 9), undefined, '"disabled": disabled');
  t.equal(DEFAULT_COMPRESSION_LEVEL, 6);
  t.equal(DEFAULT_MEM_LEVEL, 8);
  t.same(deflateConfig("context-takeover"), { mode: "context-takeover", maxWindowBits: 15, memLevel: 8, level: 6 }, "a mode string: zlib defaults, level 6");
  t.same(deflateConfig("no-context-takeover", 2), { mode: "no-context-takeover", maxWindowBits: 15, memLevel: 8, level: 2 }, "a mode string takes compressionLevel");
  t.same(deflateConfig({}), { mode: "context-takeover", maxWindowBits: 15, memLevel: 8, level: 6 }, "empty settings: context takeover, 15, 8, 6");
  t.same(deflateConfig({}, 3), { mode: "context-takeover", maxWindowBits: 15, memLevel: 8, level: 3 }, "level from compressionLevel");
  t.same(deflateConfig({ level: 9 }, 3), { mode: "context-takeover", maxWindowBits: 15, memLevel: 8, level: 9 }, "compression.level wins over compressionLevel");
  t.same(deflateConfig({ level: 0 }, 5), { mode: "context-takeover", maxWindowBits: 15, memLevel: 8, level: 0 }, "level 0 is a level, not a missing one");
  t.same(deflateConfig({ level: undefined }, 0), { mode: "context-takeover", maxWindowBits: 15, memLevel: 8, level: 0 }, "compressionLevel 0 too");
  t.same(
    deflateConfig({ mode: "no-context-takeover", maxWindowBits: 9, memLevel: 1, level: 4 }, 7),
    { mode: "no-context-takeover", maxWindowBits: 9, memLevel: 1, level: 4 },
    "every setting given",
  );
  const resolved = deflateConfig({ maxWindowBits: 11, memLevel: 2 }, 1)!;
  t.same(deflateConfig(resolved), resolved, "a resolved config resolves to itself (accept and dial pass it on)");
  t.same(deflateConfig(resolved, 9), resolved, "and keeps its own level");
});
