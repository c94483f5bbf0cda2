/**
 * messageStream: a connection as an object-mode Duplex of whole messages, for
 * `pipeline` code that must keep message boundaries and types.
 */

import type { Conn } from "./conn.js";
import { MessageType } from "./frame.js";
import type { Message } from "./read.js";
import { checkMessageType, type MessageData } from "./write.js";
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
