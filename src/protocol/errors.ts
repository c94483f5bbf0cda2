/**
 * The codes wsconn reports: close status codes (StatusCode), the stable error
 * codes listed in docs/api.md (ErrorCode), the table that says which close
 * code each failure sends, and the few error types wsconn throws besides
 * CloseError.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-7.4
 * https://www.iana.org/assignments/websocket/websocket.xhtml#close-code-number
 */

import type { IncomingHttpHeaders } from "node:http";

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

/**
 * isSendableCloseCode tells whether `code` may appear in a close frame:
 * 1000–1003, 1007–1014 and 3000–4999. 1004 is reserved, and 1005, 1006 and
 * 1015 only ever describe a close locally
 * (https://www.rfc-editor.org/rfc/rfc6455#section-7.4.2).
 */
export function isSendableCloseCode(code: number): boolean {
  if (!Number.isInteger(code)) return false;
  if (code >= 3000 && code <= 4999) return true;
  if (code < StatusCode.NormalClosure || code > StatusCode.BadGateway) return false;
  return code !== StatusCode.Reserved && code !== StatusCode.NoStatusRcvd && code !== StatusCode.AbnormalClosure;
}

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
  /** The keepalive ping got no answer (its pong or any other frame) within its timeout (1011). */
  KeepaliveTimeout: "WS_ERR_KEEPALIVE_TIMEOUT",
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

/**
 * FAILURE_STATUS is the close code a connection fails with for each error
 * code that can fail one (https://www.rfc-editor.org/rfc/rfc6455#section-7.4.1):
 * the only place the two are paired. The handshake codes and WriteQueueFull
 * never fail a connection and are not in it.
 */
export const FAILURE_STATUS = {
  [ErrorCode.InvalidOpcode]: StatusCode.ProtocolError,
  [ErrorCode.UnexpectedRsv]: StatusCode.ProtocolError,
  [ErrorCode.ExpectedMask]: StatusCode.ProtocolError,
  [ErrorCode.UnexpectedMask]: StatusCode.ProtocolError,
  [ErrorCode.InvalidControlFrame]: StatusCode.ProtocolError,
  [ErrorCode.UnexpectedContinuation]: StatusCode.ProtocolError,
  [ErrorCode.ExpectedContinuation]: StatusCode.ProtocolError,
  [ErrorCode.InvalidLength]: StatusCode.ProtocolError,
  [ErrorCode.InvalidClosePayload]: StatusCode.ProtocolError,
  [ErrorCode.InvalidUtf8]: StatusCode.InvalidFramePayloadData,
  [ErrorCode.InvalidCompressedData]: StatusCode.InvalidFramePayloadData,
  [ErrorCode.UnexpectedData]: StatusCode.PolicyViolation,
  [ErrorCode.MessageTooBig]: StatusCode.MessageTooBig,
  [ErrorCode.AbortedMidMessage]: StatusCode.InternalError,
  [ErrorCode.KeepaliveTimeout]: StatusCode.InternalError,
  [ErrorCode.BudgetExceeded]: StatusCode.TryAgainLater,
} as const satisfies Partial<Record<ErrorCode, StatusCode>>;

/** One of the error codes that fail a connection: the keys of FAILURE_STATUS. */
export type FailureCode = keyof typeof FAILURE_STATUS;

/**
 * FailureHost is the one thing every piece of a connection (the frame
 * parser, the read queue, the read and write sides) asks of the piece that
 * owns it: fail the connection with `errorCode`, which sends the close code
 * FAILURE_STATUS pairs with it
 * (https://www.rfc-editor.org/rfc/rfc6455#section-7.1.7).
 */
export interface FailureHost {
  fail(errorCode: FailureCode, message: string): void;
}

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
