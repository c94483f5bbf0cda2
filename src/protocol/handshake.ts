/**
 * The headers of the opening handshake, shared by both ends: telling an
 * upgrade request from others, token lists, the accept hash,
 * Sec-WebSocket-Extensions, the guard against header injection, and
 * permessage-deflate negotiation: the client's offer, the server's choice
 * among offers, and the client's check of the answer.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-4
 * https://www.rfc-editor.org/rfc/rfc7692#section-7
 */

import { createHash } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from "node:http";
import { codedError, ErrorCode } from "./errors.js";

/** The GUID appended to the key (https://www.rfc-editor.org/rfc/rfc6455#section-1.3). */
const KEY_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** acceptKey computes Sec-WebSocket-Accept for a Sec-WebSocket-Key. */
export function acceptKey(key: string): string {
  return createHash("sha1").update(key + KEY_GUID).digest("base64");
}

/** isValidKey: the key must be base64 of exactly 16 bytes (§4.2.1 item 5). */
export function isValidKey(key: string | undefined): key is string {
  return key !== undefined && key.length === 24 && /^[A-Za-z0-9+/]{22}==$/.test(key);
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** isToken tells whether `value` is an HTTP token (RFC 9110 §5.6.2). */
export function isToken(value: string): boolean {
  return TOKEN.test(value);
}

/**
 * headerList splits a comma-separated header (or a repeated one) into its
 * trimmed, non-empty elements. It scans once, without regular expressions,
 * so no input can make it backtrack.
 */
export function headerList(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const joined = Array.isArray(value) ? value.join(",") : value;
  const items: string[] = [];
  for (const part of joined.split(",")) {
    const item = part.trim();
    if (item !== "") items.push(item);
  }
  return items;
}

/** hasToken tells whether a comma list header contains `token`, ignoring case. */
export function hasToken(value: string | string[] | undefined, token: string): boolean {
  const wanted = token.toLowerCase();
  return headerList(value).some((item) => item.toLowerCase() === wanted);
}

/** singleHeader returns a header that must appear once, or undefined (Node joins a repeated one with commas, which the caller then refuses). */
export function singleHeader(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? (value.length === 1 ? value[0] : undefined) : value;
}

/** ExtensionOffer is one element of Sec-WebSocket-Extensions. */
export interface ExtensionOffer {
  name: string;
  /**
   * Parameters in order, names in lower case, `true` for a parameter without
   * value; duplicates are kept so that callers can refuse them.
   */
  params: Array<[string, string | true]>;
}

/**
 * parseExtensions parses Sec-WebSocket-Extensions (RFC 6455 §9.1). It returns
 * undefined for a malformed header. Quoted parameter values are unquoted.
 */
export function parseExtensions(value: string | string[] | undefined): ExtensionOffer[] | undefined {
  const offers: ExtensionOffer[] = [];
  for (const element of headerList(value)) {
    const [name, ...rawParams] = element.split(";").map((s) => s.trim());
    if (name === undefined || !isToken(name)) return undefined;
    const params: Array<[string, string | true]> = [];
    for (const raw of rawParams) {
      const param = parseParam(raw);
      if (param === undefined) return undefined;
      params.push(param);
    }
    offers.push({ name: name.toLowerCase(), params });
  }
  return offers;
}

function parseParam(raw: string): [string, string | true] | undefined {
  const eq = raw.indexOf("=");
  const name = (eq < 0 ? raw : raw.slice(0, eq)).trim().toLowerCase();
  if (!isToken(name)) return undefined;
  if (eq < 0) return [name, true];
  let value = raw.slice(eq + 1).trim();
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
  return isToken(value) ? [name, value] : undefined;
}

/** formatExtension renders one extension element for a header. */
export function formatExtension(offer: ExtensionOffer): string {
  let out = offer.name;
  for (const [name, value] of offer.params) out += value === true ? `; ${name}` : `; ${name}=${value}`;
  return out;
}

/**
 * checkHeaders refuses header names that are not tokens and values holding
 * CR, LF or NUL, which would let a caller split the HTTP message.
 */
export function checkHeaders(headers: OutgoingHttpHeaders | Record<string, string | string[] | number> | undefined): void {
  if (headers === undefined) return;
  for (const [name, value] of Object.entries(headers)) {
    if (!isToken(name)) throw codedError(ErrorCode.InvalidHeader, `invalid header name ${JSON.stringify(name)}`);
    const values = Array.isArray(value) ? value : [value];
    for (const v of values) {
      if (v !== undefined && /[\r\n\0]/.test(String(v))) {
        throw codedError(ErrorCode.InvalidHeader, `header ${name} contains CR, LF or NUL`);
      }
    }
  }
}

/**
 * isWebSocketUpgrade tells whether `req` asks for a WebSocket upgrade: a GET
 * with `Connection: Upgrade` and `Upgrade: websocket` (gorilla's
 * IsWebSocketUpgrade). It does not validate the rest of the handshake; accept
 * does.
 */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  return req.method === "GET" && hasToken(req.headers.connection, "upgrade") && hasToken(req.headers.upgrade, "websocket");
}

/**
 * CompressionMode selects permessage-deflate: `"disabled"` (the default)
 * neither offers nor accepts it; `"context-takeover"` lets each message refer
 * to the ones before it (best ratio; wsconn keeps the last 2^maxWindowBits
 * bytes each way, 64 KiB per connection at the default 15 bits);
 * `"no-context-takeover"` compresses each message on its own (worse ratio,
 * nothing kept between messages).
 */
export type CompressionMode = "disabled" | "context-takeover" | "no-context-takeover";

/**
 * CompressionSettings tune permessage-deflate beyond its mode (RFC 7692 §7.1).
 * Giving them turns compression on.
 */
export interface CompressionSettings {
  /** Default "context-takeover". */
  mode?: "context-takeover" | "no-context-takeover" | undefined;
  /**
   * maxWindowBits, 8–15, bounds the LZ77 window both ways: this end
   * compresses with at most 2^maxWindowBits bytes of history and requires
   * the peer to do the same (a server answers `client_max_window_bits`, a
   * client offers `server_max_window_bits`); with context takeover that is
   * the memory each direction keeps per connection. A server answers a
   * client that cannot be asked (its offer has no `client_max_window_bits`)
   * with `client_no_context_takeover`, keeping no window for it; a client
   * fails the handshake if the server ignores the bound. With 8 this end
   * sends uncompressed messages (zlib has no 256-byte window). Default 15.
   */
  maxWindowBits?: number | undefined;
  /**
   * memLevel, 1–9: zlib's memory for compressing one message, 2^(memLevel+9)
   * bytes of hash chains, held only while the message is compressed.
   * Lower is smaller and slightly worse. Default 8.
   */
  memLevel?: number | undefined;
  /** zlib level, 0–9 (0 stores, 1 is fastest, 9 smallest). Default `compressionLevel`, else 6. */
  level?: number | undefined;
}

/** CompressionOptions are shared by accept, serve and dial. */
export interface CompressionOptions {
  /** permessage-deflate: a mode, or settings (which imply "context-takeover" unless they say otherwise). Default "disabled". */
  compression?: CompressionMode | CompressionSettings | undefined;
  /**
   * Messages shorter than this many bytes are sent uncompressed, where
   * deflate's framing costs more than it saves. Default 128 with context
   * takeover, 512 without (see docs/compression.md for the measurements).
   */
  compressionThreshold?: number | undefined;
  /** zlib compression level, 0–9. Default 6. `compression.level` wins when both are given. */
  compressionLevel?: number | undefined;
}

/** DeflateConfig is this end's compression configuration, resolved from the options. */
export interface DeflateConfig {
  mode: "context-takeover" | "no-context-takeover";
  maxWindowBits: number;
  memLevel: number;
  level: number;
}

/** The default zlib level: a good ratio for text at a fraction of level 9's cost. */
export const DEFAULT_COMPRESSION_LEVEL = 6;
/** zlib's own default memLevel. */
export const DEFAULT_MEM_LEVEL = 8;

const MODES: ReadonlySet<string> = new Set(["disabled", "context-takeover", "no-context-takeover"]);

/**
 * checkCompressionOptions validates the compression options before a
 * handshake starts, so that a misconfiguration is reported by accept and
 * dial instead of surfacing once the connection is open. Throws a TypeError
 * for an unknown mode or a compression value that is neither a mode nor an
 * object, and a RangeError for a level other than an integer 0–9, a
 * memLevel other than 1–9, window bits other than 8–15, or a threshold that
 * is negative or not a number.
 */
export function checkCompressionOptions(options: CompressionOptions): void {
  const { compression, compressionLevel, compressionThreshold } = options;
  if (typeof compression === "object" && compression !== null) {
    const { mode, maxWindowBits, memLevel, level } = compression;
    if (mode !== undefined && mode !== "context-takeover" && mode !== "no-context-takeover") {
      throw new TypeError(`compression.mode must be "context-takeover" or "no-context-takeover", not ${JSON.stringify(mode)}`);
    }
    checkInteger("compression.maxWindowBits", maxWindowBits, 8, 15);
    checkInteger("compression.memLevel", memLevel, 1, 9);
    checkInteger("compression.level", level, 0, 9);
  } else if (compression !== undefined && !MODES.has(compression)) {
    throw new TypeError(`compression must be "disabled", "context-takeover", "no-context-takeover" or settings, not ${JSON.stringify(compression)}`);
  }
  checkInteger("compressionLevel", compressionLevel, 0, 9);
  if (compressionThreshold !== undefined && !(typeof compressionThreshold === "number" && compressionThreshold >= 0)) {
    throw new RangeError(`compressionThreshold must be a non-negative number, not ${String(compressionThreshold)}`);
  }
}

function checkInteger(name: string, value: number | undefined, min: number, max: number): void {
  if (value !== undefined && !(Number.isInteger(value) && value >= min && value <= max)) {
    throw new RangeError(`${name} must be an integer from ${min} to ${max}, not ${String(value)}`);
  }
}

/**
 * deflateConfig resolves the compression options (already checked) into
 * this end's configuration, or undefined when compression is disabled.
 */
export function deflateConfig(compression: CompressionOptions["compression"], compressionLevel?: number): DeflateConfig | undefined {
  if (compression === undefined || compression === "disabled") return undefined;
  const settings: CompressionSettings = typeof compression === "string" ? { mode: compression } : compression;
  return {
    mode: settings.mode ?? "context-takeover",
    maxWindowBits: settings.maxWindowBits ?? 15,
    memLevel: settings.memLevel ?? DEFAULT_MEM_LEVEL,
    level: settings.level ?? compressionLevel ?? DEFAULT_COMPRESSION_LEVEL,
  };
}

/** A compression option value, or a resolved DeflateConfig (which is one too). */
type CompressionInput = CompressionOptions["compression"];

/** defaultThreshold returns the compression threshold used when none is given. */
export function defaultThreshold(settings: DeflateSettings): number {
  return settings.sendNoContextTakeover ? 512 : 128;
}

/** The extension's token. */
export const PERMESSAGE_DEFLATE = "permessage-deflate";

/** DeflateParams is what the handshake agreed on, from the protocol's point of view. */
export interface DeflateParams {
  serverNoContextTakeover: boolean;
  clientNoContextTakeover: boolean;
  /** LZ77 window of the server's compressor, 8–15. */
  serverMaxWindowBits: number;
  /** LZ77 window of the client's compressor, 8–15. */
  clientMaxWindowBits: number;
}

/** Compression as one end of the connection sees it. */
export interface DeflateSettings {
  /** This end resets its compressor after every message. */
  sendNoContextTakeover: boolean;
  /** The peer resets its compressor after every message: this end may reset its decompressor. */
  receiveNoContextTakeover: boolean;
  /** The window this end's compressor uses: what was agreed, within this end's maxWindowBits. */
  sendWindowBits: number;
  /** The window the peer's compressor may use: how far back its messages may refer. */
  receiveWindowBits: number;
  /** zlib memLevel and level of this end's compressor. */
  memLevel: number;
  level: number;
  /** The response header value, e.g. "permessage-deflate; client_no_context_takeover". */
  header: string;
}

/** settingsFor turns agreed parameters into one role's settings. */
export function settingsFor(params: DeflateParams, role: "client" | "server", header: string, compression?: CompressionInput): DeflateSettings {
  const server = role === "server";
  const config = deflateConfig(compression);
  const agreed = server ? params.serverMaxWindowBits : params.clientMaxWindowBits;
  return {
    sendNoContextTakeover: server ? params.serverNoContextTakeover : params.clientNoContextTakeover,
    receiveNoContextTakeover: server ? params.clientNoContextTakeover : params.serverNoContextTakeover,
    sendWindowBits: Math.min(agreed, config?.maxWindowBits ?? 15),
    receiveWindowBits: server ? params.clientMaxWindowBits : params.serverMaxWindowBits,
    memLevel: config?.memLevel ?? DEFAULT_MEM_LEVEL,
    level: config?.level ?? DEFAULT_COMPRESSION_LEVEL,
    header,
  };
}

/** clientOffer returns the Sec-WebSocket-Extensions value a client sends for its compression options. */
export function clientOffer(compression: CompressionInput): string | undefined {
  const config = deflateConfig(compression);
  if (config === undefined) return undefined;
  const bits = config.maxWindowBits;
  // Below 15 the server is asked for a window as small as this end's, and told this end's.
  const windows = bits < 15 ? `; server_max_window_bits=${bits}; client_max_window_bits=${bits}` : "; client_max_window_bits";
  if (config.mode === "no-context-takeover") return `${PERMESSAGE_DEFLATE}; server_no_context_takeover; client_no_context_takeover${windows}`;
  return `${PERMESSAGE_DEFLATE}${windows}`;
}

/**
 * selectOffer is the server's choice: the first permessage-deflate offer it
 * can accept, with the parameters to answer. Offers with unknown, duplicated
 * or invalid parameters are declined as §5 requires, not failed. With
 * maxWindowBits below 15 both windows are bounded by it (§7.1.2); a client
 * whose offer has no client_max_window_bits (its window cannot be bounded)
 * is answered client_no_context_takeover.
 */
export function selectOffer(header: string | string[] | undefined, compression: CompressionInput): { params: DeflateParams; response: string } | undefined {
  const config = deflateConfig(compression);
  if (config === undefined) return undefined;
  const offers = parseExtensions(header);
  if (offers === undefined) return undefined;
  const bits = config.maxWindowBits;
  for (const offer of offers) {
    if (offer.name !== PERMESSAGE_DEFLATE) continue;
    const params = parseOfferParams(offer);
    if (params === undefined) continue;
    if (config.mode === "no-context-takeover") {
      params.serverNoContextTakeover = true;
      params.clientNoContextTakeover = true;
    }
    params.serverMaxWindowBits = Math.min(params.serverMaxWindowBits, bits);
    if (bits < 15) {
      // A client that cannot be asked for a window (Firefox offers none) is
      // asked to take no context over instead, which §7.1.1.2 allows: this
      // end then keeps no inbound window for it.
      if (offer.params.some(([name]) => name === "client_max_window_bits")) {
        params.clientMaxWindowBits = Math.min(params.clientMaxWindowBits, bits);
      } else params.clientNoContextTakeover = true;
    }
    return { params, response: formatResponse(params, offer) };
  }
  return undefined;
}
/** parseOfferParams validates one offer's parameters (§7.1), or returns undefined to decline it. */
function parseOfferParams(offer: ExtensionOffer): DeflateParams | undefined {
  const params = defaultParams();
  const seen = new Set<string>();
  for (const [name, value] of offer.params) {
    if (seen.has(name)) return undefined;
    seen.add(name);
    if (name === "server_no_context_takeover" || name === "client_no_context_takeover") {
      if (value !== true) return undefined;
      if (name === "server_no_context_takeover") params.serverNoContextTakeover = true;
      else params.clientNoContextTakeover = true;
    } else if (name === "server_max_window_bits") {
      const bits = windowBits(value);
      if (bits === undefined) return undefined;
      params.serverMaxWindowBits = bits;
    } else if (name === "client_max_window_bits") {
      const bits = value === true ? 15 : windowBits(value);
      if (bits === undefined) return undefined;
      params.clientMaxWindowBits = bits;
    } else {
      return undefined;
    }
  }
  return params;
}

function formatResponse(params: DeflateParams, offer: ExtensionOffer): string {
  const response: ExtensionOffer = { name: PERMESSAGE_DEFLATE, params: [] };
  if (params.serverNoContextTakeover) response.params.push(["server_no_context_takeover", true]);
  if (params.clientNoContextTakeover) response.params.push(["client_no_context_takeover", true]);
  if (offer.params.some(([name]) => name === "server_max_window_bits")) {
    response.params.push(["server_max_window_bits", String(params.serverMaxWindowBits)]);
  }
  const clientBits = offer.params.find(([name]) => name === "client_max_window_bits");
  if (clientBits !== undefined && (clientBits[1] !== true || params.clientMaxWindowBits < 15)) {
    response.params.push(["client_max_window_bits", String(params.clientMaxWindowBits)]);
  }
  return formatExtension(response);
}

/**
 * acceptResponse checks the server's Sec-WebSocket-Extensions answer against
 * what a client with these compression options offered. It returns the agreed parameters
 * (undefined when the server declined), or a string saying why the answer is
 * invalid, which fails the handshake (§7.1: the client MUST fail the
 * connection). In "no-context-takeover" mode the client resets its own
 * compressor after every message even when the server's answer leaves
 * client_no_context_takeover out, as its offer announced (§7.1.1.2). With
 * maxWindowBits below 15, an answer without server_max_window_bits, or with
 * window bits above it, is refused (§7.1.2.1).
 */
export function acceptResponse(
  header: string | string[] | undefined,
  compression: CompressionInput,
): { params: DeflateParams | undefined; header: string } | string {
  if (header === undefined) return { params: undefined, header: "" };
  const elements = parseExtensions(header);
  if (elements === undefined) return `malformed Sec-WebSocket-Extensions ${JSON.stringify(header)}`;
  if (elements.length === 0) return { params: undefined, header: "" };
  const [element] = elements;
  const config = deflateConfig(compression);
  if (config === undefined || elements.length > 1 || element!.name !== PERMESSAGE_DEFLATE) {
    return `server selected extensions ${JSON.stringify(header)} which were not offered`;
  }
  const params = parseResponseParams(element!);
  if (params === undefined) return `invalid permessage-deflate parameters in ${JSON.stringify(header)}`;
  const bits = config.maxWindowBits;
  if (bits < 15) {
    // Offered as server_max_window_bits=bits and client_max_window_bits=bits (§7.1.2).
    const answered = element!.params.some(([name]) => name === "server_max_window_bits");
    if (!answered) return `server ignored server_max_window_bits=${bits} in ${JSON.stringify(header)}`;
    const clientAnswered = element!.params.some(([name]) => name === "client_max_window_bits");
    if (params.serverMaxWindowBits > bits || (clientAnswered && params.clientMaxWindowBits > bits)) {
      return `server answered window bits above the ${bits} offered in ${JSON.stringify(header)}`;
    }
  }
  if (config.mode === "no-context-takeover") params.clientNoContextTakeover = true;
  return { params, header: formatExtension(element!) };
}

function parseResponseParams(element: ExtensionOffer): DeflateParams | undefined {
  const params = defaultParams();
  const seen = new Set<string>();
  for (const [name, value] of element.params) {
    if (seen.has(name)) return undefined;
    seen.add(name);
    if (name === "server_no_context_takeover" && value === true) params.serverNoContextTakeover = true;
    else if (name === "client_no_context_takeover" && value === true) params.clientNoContextTakeover = true;
    else if (name === "server_max_window_bits" || name === "client_max_window_bits") {
      const bits = windowBits(value);
      if (bits === undefined) return undefined;
      if (name === "server_max_window_bits") params.serverMaxWindowBits = bits;
      else params.clientMaxWindowBits = bits;
    } else {
      return undefined;
    }
  }
  return params;
}

function defaultParams(): DeflateParams {
  return { serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 15, clientMaxWindowBits: 15 };
}

/** windowBits parses a window size parameter: a decimal 8–15 without leading zeros. */
function windowBits(value: string | true): number | undefined {
  if (value === true || !/^(8|9|1[0-5])$/.test(value)) return undefined;
  return Number(value);
}
