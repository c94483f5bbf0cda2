/**
 * Close status codes, the close error, and the close frame payload.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-7.4
 * https://www.iana.org/assignments/websocket/websocket.xhtml#close-code-number
 */

import { isUtf8 } from "node:buffer";
import type { ErrorCode } from "./errors.js";

/**
 * StatusCode lists every close code defined by RFC 6455 §7.4.1 and the IANA
 * registry (1000–1015). Codes 3000–4999 are free for libraries and applications
 * and are accepted everywhere a StatusCode is.
 */
export enum StatusCode {
  NormalClosure = 1000,
  GoingAway = 1001,
  ProtocolError = 1002,
  UnsupportedData = 1003,
  /** Reserved; never sent nor accepted on the wire. */
  Reserved = 1004,
  /** Reported when a close frame had no status; never sent on the wire. */
  NoStatusRcvd = 1005,
  /** Reported when the connection closed without a close frame; never sent. */
  AbnormalClosure = 1006,
  InvalidFramePayloadData = 1007,
  PolicyViolation = 1008,
  MessageTooBig = 1009,
  MandatoryExtension = 1010,
  InternalError = 1011,
  ServiceRestart = 1012,
  TryAgainLater = 1013,
  BadGateway = 1014,
  /** Reported when the TLS handshake failed; never sent on the wire. */
  TLSHandshake = 1015,
}

/** The longest close reason in bytes: a control frame carries 125 bytes, 2 go to the code. */
export const MAX_CLOSE_REASON_BYTES = 123;

/**
 * isSendableCloseCode tells whether `code` may appear in a close frame:
 * 1000–1003, 1007–1014 and 3000–4999. 1004 is reserved, and 1005, 1006 and
 * 1015 only ever describe a close locally
 * (https://www.rfc-editor.org/rfc/rfc6455#section-7.4.2).
 */
export function isSendableCloseCode(code: number): boolean {
  if (!Number.isInteger(code)) return false;
  if (code >= 3000 && code <= 4999) return true;
  if (code < 1000 || code > 1014) return false;
  return code !== 1004 && code !== 1005 && code !== 1006;
}

/**
 * CloseError reports how a connection ended: the status code and reason of the
 * close frame received from the peer (`remote` true), the code this side sent
 * when it closed or failed the connection (`remote` false), or 1006 when the
 * connection ended without any close frame. Reads, writes and iteration reject
 * with it once the connection is closed.
 */
export class CloseError extends Error {
  /** The close status code. */
  readonly code: number;
  /** The close reason, at most 123 bytes of UTF-8. */
  readonly reason: string;
  /** True when the peer sent this status, false when this side did. */
  readonly remote: boolean;
  /** Set when this side failed the connection: the stable code of the cause, listed in docs/api.md. */
  readonly errorCode: ErrorCode | undefined;

  constructor(code: number, reason: string, options?: CloseErrorOptions) {
    super(describeClose(code, reason), options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "CloseError";
    this.code = code;
    this.reason = reason;
    this.remote = options?.remote ?? false;
    this.errorCode = options?.errorCode;
  }
}

/** What a CloseError may carry besides its code and reason. */
export interface CloseErrorOptions {
  /** True when the peer sent the status. Default false. */
  remote?: boolean;
  /** The stable code of a local failure. */
  errorCode?: ErrorCode;
  /** The underlying error, such as a socket error. */
  cause?: unknown;
}

function describeClose(code: number, reason: string): string {
  const name = StatusCode[code] ?? (code >= 3000 ? "application" : "unknown");
  return `connection closed with status ${code} (${name})${reason === "" ? "" : `: ${reason}`}`;
}

/**
 * closeStatus returns the close code carried by `err` or by any error in its
 * `cause` chain, or -1 when there is none (like nhooyr's CloseStatus).
 */
export function closeStatus(err: unknown): number {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 16; depth++) {
    if (e instanceof CloseError) return e.code;
    e = (e as { cause?: unknown }).cause;
  }
  return -1;
}

/**
 * isCloseError tells whether `err` carries a close code and, when `codes` are
 * given, whether it is one of them (gorilla's IsCloseError).
 */
export function isCloseError(err: unknown, ...codes: number[]): boolean {
  const code = closeStatus(err);
  return code !== -1 && (codes.length === 0 || codes.includes(code));
}

/**
 * isUnexpectedCloseError tells whether `err` carries a close code that is not
 * among `expected` (gorilla's IsUnexpectedCloseError).
 */
export function isUnexpectedCloseError(err: unknown, ...expected: number[]): boolean {
  const code = closeStatus(err);
  return code !== -1 && !expected.includes(code);
}

/** A parsed close frame payload; `code` is 1005 when the frame had none. */
export interface ClosePayload {
  code: number;
  reason: string;
}

/**
 * encodeClosePayload builds a close frame body. It throws a RangeError for a
 * code that may not be sent or a reason longer than 123 bytes.
 */
export function encodeClosePayload(code: number | undefined, reason = ""): Buffer {
  if (code === undefined || code === StatusCode.NoStatusRcvd) {
    if (reason !== "") throw new RangeError("a close reason needs a status code");
    return Buffer.alloc(0);
  }
  if (!isSendableCloseCode(code)) throw new RangeError(`close code ${code} may not be sent`);
  const length = Buffer.byteLength(reason);
  if (length > MAX_CLOSE_REASON_BYTES) {
    throw new RangeError(`close reason is ${length} bytes, more than ${MAX_CLOSE_REASON_BYTES}`);
  }
  const payload = Buffer.allocUnsafe(2 + length);
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  return payload;
}

/**
 * decodeClosePayload parses a received close frame body, or returns a string
 * naming what is wrong with it: a 1-byte body or a code that may not be sent
 * is a protocol error (1002), a reason that is not UTF-8 is 1007
 * (https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1).
 */
export function decodeClosePayload(payload: Buffer): ClosePayload | { error: string; code: number } {
  if (payload.length === 0) return { code: StatusCode.NoStatusRcvd, reason: "" };
  if (payload.length === 1) return { error: "close frame payload of 1 byte", code: StatusCode.ProtocolError };
  const code = payload.readUInt16BE(0);
  if (!isSendableCloseCode(code)) return { error: `invalid close code ${code}`, code: StatusCode.ProtocolError };
  const reasonBytes = payload.subarray(2);
  if (!isUtf8(reasonBytes)) return { error: "close reason is not valid UTF-8", code: StatusCode.InvalidFramePayloadData };
  return { code, reason: reasonBytes.toString("utf8") };
}
