/**
 * wsconn: WebSocket (RFC 6455) for Node.js with the connection model of Go's
 * coder/websocket (nhooyr): a small `Conn` whose reads and writes take an
 * AbortSignal, `ping` that awaits its pong, `closeRead`, `setReadLimit`, and
 * async iteration; plus the handshake helpers gorilla/websocket users expect.
 * Zero runtime dependencies.
 *
 * Server: `accept(req, socket, head, options)` from an http server's
 * `'upgrade'` event, or `serve(options, handler)`. Client: `dial(url, options)`.
 *
 * @packageDocumentation
 */

export { accept, type AcceptOptions } from "./accept.js";
export { serve, type ServeOptions, type Handler } from "./serve.js";
export { dial, type DialOptions } from "./dial.js";
export { Conn, type CloseInfo, type ConnOptions, type HandshakeTimeouts } from "./conn.js";
export { InboundBudget, DEFAULT_INBOUND_BUDGET } from "./budget.js";
export type { Message, StreamedMessage } from "./read.js";
export type { MessageData } from "./write.js";
export { MessageType } from "./frame.js";
export {
  StatusCode,
  CloseError,
  closeStatus,
  isCloseError,
  isUnexpectedCloseError,
  type CloseErrorOptions,
} from "./close.js";
export { HandshakeError, ErrorCode, type CodedError } from "./errors.js";
export { isWebSocketUpgrade } from "./upgrade.js";
export { PreparedMessage } from "./prepared.js";
export { netConn, type NetConn } from "./netconn.js";
export { messageStream, type MessageStream, type OutgoingMessage } from "./message-stream.js";
export { readJSON, writeJSON } from "./json.js";
export type { CompressionMode, CompressionOptions } from "./compress.js";
export {
  Hub,
  DEFAULT_MAX_QUEUED_BYTES,
  type HubOptions,
  type HubEvents,
  type HubStats,
  type AddOptions,
  type SendOptions,
  type SlowPolicy,
} from "./hub.js";
export { HubClient } from "./hub-client.js";
export type { HeartbeatOptions } from "./hub-heartbeat.js";
export { MemoryBus, RedisBus, type HubBus, type BusListener, type RedisPublisher, type RedisSubscriber } from "./hub-bus.js";
