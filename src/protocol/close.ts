/**
 * How a connection ends: the close error, what `closed` reports, and the
 * close frame payload. The status codes themselves are in errors.ts.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-7.4
 * https://www.iana.org/assignments/websocket/websocket.xhtml#close-code-number
 */

import { isUtf8 } from "node:buffer";
import { ErrorCode, type FailureCode, isSendableCloseCode, StatusCode } from "./errors.js";

/** The longest close reason in bytes: a control frame carries 125 bytes, 2 go to the code. */
export const MAX_CLOSE_REASON_BYTES = 123;

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

/** CloseInfo is how a connection ended, as `Conn.closed` reports it. */
export interface CloseInfo {
  /**
   * The code of the close frame received (1005 if it had none), or 1006 when
   * none came, as in the WebSocket API. Why this side closed or failed the
   * connection is in the CloseError that reads and writes reject with.
   */
  code: number;
  /** The reason of the close frame received, or "". */
  reason: string;
  /** True when close frames went both ways and the socket closed without error. */
  wasClean: boolean;
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
 * truncateCloseReason shortens a reason to fit a close frame (123 bytes,
 * https://www.rfc-editor.org/rfc/rfc6455#section-5.5), cutting at a
 * character boundary and ending with "..." when it cuts.
 */
export function truncateCloseReason(reason: string): string {
  if (Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES) return reason;
  const bytes = Buffer.from(reason);
  let end = MAX_CLOSE_REASON_BYTES - 3;
  // Back up over continuation bytes (10xxxxxx) to the start of a character.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.toString("utf8", 0, end) + "...";
}

/**
 * decodeClosePayload parses a received close frame body, or returns what is
 * wrong with it: a 1-byte body or a code that may not be sent
 * (InvalidClosePayload, 1002), a reason that is not UTF-8 (InvalidUtf8, 1007)
 * (https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1).
 */
export function decodeClosePayload(payload: Buffer): ClosePayload | { error: string; errorCode: FailureCode } {
  if (payload.length === 0) return { code: StatusCode.NoStatusRcvd, reason: "" };
  if (payload.length === 1) return { error: "close frame payload of 1 byte", errorCode: ErrorCode.InvalidClosePayload };
  const code = payload.readUInt16BE(0);
  if (!isSendableCloseCode(code)) return { error: `invalid close code ${code}`, errorCode: ErrorCode.InvalidClosePayload };
  const reasonBytes = payload.subarray(2);
  if (!isUtf8(reasonBytes)) return { error: "close reason is not valid UTF-8", errorCode: ErrorCode.InvalidUtf8 };
  return { code, reason: reasonBytes.toString("utf8") };
}
