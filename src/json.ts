/**
 * readJSON and writeJSON: one JSON value per text message, like nhooyr's
 * wsjson package.
 */

import { CloseError, StatusCode } from "./close.js";
import type { Conn } from "./conn.js";
import { ErrorCode } from "./errors.js";
import { MessageType } from "./frame.js";
import type { Message } from "./read.js";

/**
 * readJSON reads the next message of `conn` and parses it as JSON. The read
 * limit applies (a bigger message fails the connection with 1009), and the
 * signal behaves as in `conn.read`.
 *
 * A message that is not valid JSON fails the connection with 1007 (invalid
 * payload data), and a binary message with 1003 (unsupported data), as
 * wsjson does; readJSON then rejects with a "failed to read JSON" error whose
 * cause is a CloseError with that code, so `closeStatus(err)` gives it. Every
 * other failure of the read rejects with a "failed to read JSON" error whose
 * cause is the original error, except an abort, which rejects with the
 * signal's reason.
 */
export async function readJSON<T = unknown>(conn: Conn, signal?: AbortSignal): Promise<T> {
  let message: Message;
  try {
    message = await conn.read(signal);
  } catch (err) {
    throw wrap("read", err, signal);
  }
  if (message.type !== MessageType.Text) {
    throw refuse(conn, StatusCode.UnsupportedData, "expected a text message with JSON", "received a binary message");
  }
  try {
    return JSON.parse(message.text()) as T;
  } catch (err) {
    throw refuse(conn, StatusCode.InvalidFramePayloadData, "message is not valid JSON", (err as Error).message, err);
  }
}

/**
 * writeJSON sends `value`, encoded with JSON.stringify, as one text message.
 * Ordering, backpressure and the signal are those of `conn.write`.
 *
 * It rejects with a TypeError, before anything is sent, for a value JSON
 * cannot encode: a BigInt, a cycle, undefined, a function or a symbol (whose
 * stringify result is not JSON), or a toJSON method that throws (the error is
 * the cause). Other failures reject with a "failed to write JSON" error whose
 * cause is the original error (`closeStatus(err)` works), except an abort,
 * which rejects with the signal's reason.
 */
export function writeJSON(conn: Conn, value: unknown, signal?: AbortSignal): Promise<void> {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    return Promise.reject(new TypeError(`failed to write JSON: ${(err as Error).message}`, { cause: err }));
  }
  if (text === undefined) {
    return Promise.reject(new TypeError(`failed to write JSON: a value of type ${typeof value} has no JSON encoding`));
  }
  return conn.write(MessageType.Text, text, signal).catch((err: unknown) => {
    throw wrap("write", err, signal);
  });
}

/**
 * refuse fails the connection with `code` and returns the error readJSON
 * rejects with. The close frame leaves at once; the handshake finishes in the
 * background.
 */
function refuse(conn: Conn, code: StatusCode, reason: string, detail: string, cause?: unknown): Error {
  void conn.close(code, reason);
  const errorCode = code === StatusCode.UnsupportedData ? ErrorCode.UnexpectedData : undefined;
  const closeError = new CloseError(code, reason, { errorCode, cause });
  return new Error(`failed to read JSON: ${detail}`, { cause: closeError });
}

/** wrap adds what failed to an error, leaving an abort's reason as the caller gave it. */
function wrap(verb: string, err: unknown, signal: AbortSignal | undefined): unknown {
  if (signal?.aborted && err === signal.reason) return err;
  // Everything else the connection rejects with is an Error (a CloseError, a TypeError).
  return new Error(`failed to ${verb} JSON: ${(err as Error).message}`, { cause: err });
}
