/**
 * The few error types wsconn throws besides CloseError, and the stable error
 * codes listed in docs/api.md.
 */

import type { IncomingHttpHeaders } from "node:http";

/**
 * ErrorCode names every stable `code` wsconn puts on its errors: on a
 * CloseError's `errorCode` when this side failed the connection, and on the
 * `code` of the plain errors thrown by the handshake.
 */
export const ErrorCode = {
  /** A frame used an opcode RFC 6455 does not define (1002). */
  InvalidOpcode: "WS_ERR_INVALID_OPCODE",
  /** A reserved bit was set that no negotiated extension defines (1002). */
  UnexpectedRsv: "WS_ERR_UNEXPECTED_RSV",
  /** A client frame was not masked (1002). */
  ExpectedMask: "WS_ERR_EXPECTED_MASK",
  /** A server frame was masked (1002). */
  UnexpectedMask: "WS_ERR_UNEXPECTED_MASK",
  /** A control frame was fragmented or longer than 125 bytes (1002). */
  InvalidControlFrame: "WS_ERR_INVALID_CONTROL_FRAME",
  /** A continuation frame came without a message to continue (1002). */
  UnexpectedContinuation: "WS_ERR_UNEXPECTED_CONTINUATION",
  /** A new message began before the fragmented one ended (1002). */
  ExpectedContinuation: "WS_ERR_EXPECTED_CONTINUATION",
  /** A 64-bit payload length had its most significant bit set (1002). */
  InvalidLength: "WS_ERR_INVALID_LENGTH",
  /** A close frame had a 1-byte body or a code that may not be sent (1002). */
  InvalidClosePayload: "WS_ERR_INVALID_CLOSE_PAYLOAD",
  /** A text message or close reason was not valid UTF-8 (1007). */
  InvalidUtf8: "WS_ERR_INVALID_UTF8",
  /** A compressed message could not be decompressed (1007). */
  InvalidCompressedData: "WS_ERR_INVALID_COMPRESSED_DATA",
  /** A message exceeded the read limit (1009). */
  MessageTooBig: "WS_ERR_MESSAGE_TOO_BIG",
  /**
   * The process-wide budget for unfinished inbound messages (InboundBudget)
   * was exhausted and this connection was shed (1013 Try Again Later).
   */
  BudgetExceeded: "WS_ERR_BUDGET_EXCEEDED",
  /** A data message arrived after closeRead, or of a type a stream adapter refuses (1008 / 1003). */
  UnexpectedData: "WS_ERR_UNEXPECTED_DATA",
  /** Too many bytes of messages already wait to be written (writeQueueLimit); the connection stays usable. */
  WriteQueueFull: "WS_ERR_WRITE_QUEUE_FULL",
  /** A read or write was aborted in the middle of a message (1011). */
  AbortedMidMessage: "WS_ERR_ABORTED_MID_MESSAGE",
  /** The handshake did not finish within handshakeTimeout. */
  HandshakeTimeout: "WS_ERR_HANDSHAKE_TIMEOUT",
  /** The opening handshake was refused or answered wrongly. */
  BadHandshake: "WS_ERR_BAD_HANDSHAKE",
  /** A header name or value given in options contains CR, LF or NUL. */
  InvalidHeader: "WS_ERR_INVALID_HEADER",
  /** The URL given to dial cannot be used. */
  InvalidUrl: "WS_ERR_INVALID_URL",
} as const;

/** One of the strings of ErrorCode. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** An Error with a stable `code`, like Node's own errors. */
export interface CodedError extends Error {
  code: ErrorCode;
}

/** codedError builds an Error whose `code` is one of ErrorCode. */
export function codedError(code: ErrorCode, message: string, cause?: unknown): CodedError {
  const err = new Error(message, cause === undefined ? undefined : { cause }) as CodedError;
  err.code = code;
  return err;
}

/**
 * wrapError prefixes `err`'s message ("failed to dial: …"), keeps `err` as
 * the cause and copies its `code` (ECONNREFUSED, …) so callers can test it.
 */
export function wrapError(prefix: string, err: Error): Error {
  const wrapped = new Error(`${prefix}: ${err.message}`, { cause: err });
  (wrapped as Error & { code?: unknown }).code = (err as { code?: unknown }).code;
  return wrapped;
}

/**
 * HandshakeError reports a refused opening handshake. On the server it is what
 * accept rejects with after answering the HTTP error itself; on the client it
 * carries the server's answer: status, headers and the first bytes of the body.
 */
export class HandshakeError extends Error {
  /** Stable error code. */
  readonly code = ErrorCode.BadHandshake;
  /** The HTTP status answered (server) or received (client). */
  readonly status: number;
  /** The response headers received (client) or sent (server). */
  readonly headers: IncomingHttpHeaders;
  /** The response body, cut at 64 KiB on the client. */
  readonly body: Buffer;

  constructor(message: string, status: number, headers: IncomingHttpHeaders = {}, body: Buffer = Buffer.alloc(0)) {
    super(message);
    this.name = "HandshakeError";
    this.status = status;
    this.headers = headers;
    this.body = body;
  }
}
