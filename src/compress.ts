/**
 * permessage-deflate negotiation (https://www.rfc-editor.org/rfc/rfc7692#section-7):
 * the client's offer, the server's choice among offers, and the client's check
 * of the server's answer.
 */

import { formatExtension, parseExtensions, type ExtensionOffer } from "./handshake.js";

/**
 * CompressionMode selects permessage-deflate: `"disabled"` (the default)
 * neither offers nor accepts it; `"context-takeover"` keeps a compression
 * window across messages (best ratio, about 300 KiB of zlib state per active
 * connection); `"no-context-takeover"` compresses each message on its own
 * (worse ratio, no zlib state kept between messages).
 */
export type CompressionMode = "disabled" | "context-takeover" | "no-context-takeover";

/** CompressionOptions are shared by accept, serve and dial. */
export interface CompressionOptions {
  /** permessage-deflate mode. Default "disabled". */
  compression?: CompressionMode;
  /**
   * Messages shorter than this many bytes are sent uncompressed, where
   * deflate's framing costs more than it saves. Default 128 with context
   * takeover, 512 without (see docs/compression.md for the measurements).
   */
  compressionThreshold?: number;
  /** zlib compression level, 0–9. Default 6. */
  compressionLevel?: number;
}

const MODES: ReadonlySet<string> = new Set(["disabled", "context-takeover", "no-context-takeover"]);

/**
 * checkCompressionOptions validates the compression options before a
 * handshake starts, so that a misconfiguration is reported by accept and
 * dial instead of surfacing once the connection is open. Throws a TypeError
 * for an unknown mode and a RangeError for a level other than an integer
 * 0–9 or a threshold that is negative or not a number.
 */
export function checkCompressionOptions(options: CompressionOptions): void {
  const { compression, compressionLevel, compressionThreshold } = options;
  if (compression !== undefined && !MODES.has(compression)) {
    throw new TypeError(`compression must be "disabled", "context-takeover" or "no-context-takeover", not ${JSON.stringify(compression)}`);
  }
  if (compressionLevel !== undefined && !(Number.isInteger(compressionLevel) && compressionLevel >= 0 && compressionLevel <= 9)) {
    throw new RangeError(`compressionLevel must be an integer from 0 to 9, not ${String(compressionLevel)}`);
  }
  if (compressionThreshold !== undefined && !(typeof compressionThreshold === "number" && compressionThreshold >= 0)) {
    throw new RangeError(`compressionThreshold must be a non-negative number, not ${String(compressionThreshold)}`);
  }
}

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
  /** The window this end's compressor may use. */
  sendWindowBits: number;
  /** The response header value, e.g. "permessage-deflate; client_no_context_takeover". */
  header: string;
}

/** settingsFor turns agreed parameters into one role's settings. */
export function settingsFor(params: DeflateParams, role: "client" | "server", header: string): DeflateSettings {
  const server = role === "server";
  return {
    sendNoContextTakeover: server ? params.serverNoContextTakeover : params.clientNoContextTakeover,
    receiveNoContextTakeover: server ? params.clientNoContextTakeover : params.serverNoContextTakeover,
    sendWindowBits: server ? params.serverMaxWindowBits : params.clientMaxWindowBits,
    header,
  };
}

/** clientOffer returns the Sec-WebSocket-Extensions value a client sends for `mode`. */
export function clientOffer(mode: CompressionMode | undefined): string | undefined {
  if (mode === undefined || mode === "disabled") return undefined;
  if (mode === "no-context-takeover") {
    return `${PERMESSAGE_DEFLATE}; server_no_context_takeover; client_no_context_takeover; client_max_window_bits`;
  }
  return `${PERMESSAGE_DEFLATE}; client_max_window_bits`;
}

/**
 * selectOffer is the server's choice: the first permessage-deflate offer it
 * can accept, with the parameters to answer. Offers with unknown, duplicated
 * or invalid parameters are declined as §5 requires, not failed.
 */
export function selectOffer(
  header: string | string[] | undefined,
  mode: CompressionMode | undefined,
): { params: DeflateParams; response: string } | undefined {
  if (mode === undefined || mode === "disabled") return undefined;
  const offers = parseExtensions(header);
  if (offers === undefined) return undefined;
  for (const offer of offers) {
    if (offer.name !== PERMESSAGE_DEFLATE) continue;
    const params = parseOfferParams(offer);
    if (params === undefined) continue;
    if (mode === "no-context-takeover") {
      params.serverNoContextTakeover = true;
      params.clientNoContextTakeover = true;
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
  if (clientBits !== undefined && clientBits[1] !== true) {
    response.params.push(["client_max_window_bits", String(params.clientMaxWindowBits)]);
  }
  return formatExtension(response);
}

/**
 * acceptResponse checks the server's Sec-WebSocket-Extensions answer against
 * what a client in `mode` offered. It returns the agreed parameters
 * (undefined when the server declined), or a string saying why the answer is
 * invalid, which fails the handshake (§7.1: the client MUST fail the
 * connection). In "no-context-takeover" mode the client resets its own
 * compressor after every message even when the server's answer leaves
 * client_no_context_takeover out, as its offer announced (§7.1.1.2).
 */
export function acceptResponse(
  header: string | string[] | undefined,
  mode: CompressionMode | undefined,
): { params: DeflateParams | undefined; header: string } | string {
  if (header === undefined) return { params: undefined, header: "" };
  const elements = parseExtensions(header);
  if (elements === undefined) return `malformed Sec-WebSocket-Extensions ${JSON.stringify(header)}`;
  if (elements.length === 0) return { params: undefined, header: "" };
  const [element] = elements;
  if (clientOffer(mode) === undefined || elements.length > 1 || element!.name !== PERMESSAGE_DEFLATE) {
    return `server selected extensions ${JSON.stringify(header)} which were not offered`;
  }
  const params = parseResponseParams(element!);
  if (params === undefined) return `invalid permessage-deflate parameters in ${JSON.stringify(header)}`;
  if (mode === "no-context-takeover") params.clientNoContextTakeover = true;
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
