/**
 * Header handling shared by both ends of the opening handshake: token lists,
 * the accept hash, Sec-WebSocket-Extensions, and the guard against header
 * injection.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-4
 */

import { createHash } from "node:crypto";
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
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
