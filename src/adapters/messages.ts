/**
 * Adapters over whole messages: messageStream, a connection as an
 * object-mode Duplex of messages for `pipeline` code that must keep message
 * boundaries and types, and readJSON / writeJSON, one JSON value per text
 * message like nhooyr's wsjson package.
 */

import type { Conn } from "../conn/conn.js";
import type { Message } from "../conn/read.js";
import { checkMessageType, type MessageData } from "../conn/write.js";
import { CloseError } from "../protocol/close.js";
import { ErrorCode, StatusCode } from "../protocol/errors.js";
import { MessageType } from "../protocol/frame.js";
import { ConnDuplex } from "./netconn.js";

/** OutgoingMessage is what a messageStream write takes besides a Buffer or a string. */
export interface OutgoingMessage {
  readonly type: MessageType;
  readonly data: MessageData;
}

type Callback = (error?: Error | null) => void;

/**
 * Messages read ahead of the consumer. One is enough to keep the pipe busy;
 * the connection queues more (bounded) and each may be as big as the read
 * limit, so more would multiply memory.
 */
const READ_AHEAD = 1;

/**
 * MessageStream is the Duplex that messageStream returns: it reads Message
 * objects and writes Buffer, string or `{ type, data }` chunks.
 */
export class MessageStream extends ConnDuplex {
  /** Use messageStream(conn, signal). */
  constructor(conn: Conn, signal?: AbortSignal) {
    super(conn, { objectMode: true, readableHighWaterMark: READ_AHEAD }, signal);
  }

  // Node calls _read again only after a push, so one read is pending at most.
  override _read(): void {
    this.conn.read().then(
      (message) => this.onMessage(message),
      (err: unknown) => this.readFailed(err),
    );
  }

  private onMessage(message: Message): void {
    if (!this.destroyed) this.push(message);
  }

  override _write(chunk: unknown, _encoding: BufferEncoding, callback: Callback): void {
    let outgoing: OutgoingMessage;
    try {
      outgoing = toOutgoing(chunk);
    } catch (err) {
      return callback(err as Error);
    }
    this.conn.write(outgoing.type, outgoing.data).then(
      () => callback(),
      (err: unknown) => this.writeFailed(err, callback),
    );
  }
}

/**
 * messageStream returns an object-mode Duplex of the messages of `conn`.
 * Reading yields the Message objects `conn.read()` returns (whole messages,
 * so the read limit applies). Writing takes a Buffer or Uint8Array (sent as
 * binary), a string (sent as text) or an object `{ type, data }`, such as a
 * Message read from another connection, so
 * `pipeline(messageStream(a), transform, messageStream(b))` keeps boundaries
 * and types. Each chunk written is one message; the writable side waits for
 * the socket as `conn.write` does.
 *
 * Ending and errors are those of netConn: `end()` closes with 1000 once every
 * write is on the socket; a peer close with 1000, 1001 or 1005 ends the
 * readable side; any other close destroys the stream with its CloseError;
 * `destroy()` and an abort of `signal` drop a connection that is still open.
 * A write of anything else destroys the stream with a TypeError. The stream
 * owns the connection's reads and writes while in use.
 */
export function messageStream(conn: Conn, signal?: AbortSignal): MessageStream {
  return new MessageStream(conn, signal);
}

/** toOutgoing turns a written chunk into a message, throwing a TypeError for anything else. */
function toOutgoing(chunk: unknown): OutgoingMessage {
  if (typeof chunk === "string") return { type: MessageType.Text, data: chunk };
  if (chunk instanceof Uint8Array) return { type: MessageType.Binary, data: chunk };
  if (typeof chunk === "object" && chunk !== null && "type" in chunk && "data" in chunk) {
    const { type, data } = chunk as OutgoingMessage;
    checkMessageType(type);
    return { type, data };
  }
  throw new TypeError("messageStream writes take a Buffer, a string or { type, data }");
}

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
