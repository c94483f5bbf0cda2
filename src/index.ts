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

export { accept, type AcceptOptions, type HandshakeRefusedMessage } from "./server/accept.js";
export { serve, type ServeOptions, type Handler, type HandlerErrorMessage } from "./server/serve.js";
export { DEFAULT_RETRY_AFTER, type ServerLifecycle, type ShutdownOptions, type WebSocketServer } from "./server/lifecycle.js";
export { dial, type DialOptions } from "./client/dial.js";
export { Conn, type ConnCloseMessage, type ConnOpenMessage, type KeepaliveTimeoutMessage } from "./conn/conn.js";
export type { KeepaliveOptions } from "./conn/liveness.js";
export { DiagnosticsChannel } from "./internal/diagnostics.js";
export { type ConnOptions, type HandshakeTimeouts } from "./conn/options.js";
export { type CloseInfo } from "./protocol/close.js";
export { InboundBudget, DEFAULT_INBOUND_BUDGET } from "./conn/options.js";
export type { Message, StreamedMessage } from "./conn/read.js";
export type { MessageData } from "./conn/write.js";
export { MessageType } from "./protocol/frame.js";
export { CloseError, closeStatus, isCloseError, isUnexpectedCloseError, type CloseErrorOptions } from "./protocol/close.js";
export { StatusCode } from "./protocol/errors.js";
export { HandshakeError, ErrorCode, type CodedError } from "./protocol/errors.js";
export { isWebSocketUpgrade } from "./protocol/handshake.js";
export { PreparedMessage, type WriteOptions } from "./conn/write.js";
export { CompressionQueue, DEFAULT_COMPRESSION_CONCURRENCY } from "./conn/compression-queue.js";
export { netConn, type NetConn } from "./adapters/netconn.js";
export { messageStream, type MessageStream, type OutgoingMessage } from "./adapters/messages.js";
export { readJSON, writeJSON } from "./adapters/messages.js";
export type { CompressionMode, CompressionOptions, CompressionSettings } from "./protocol/handshake.js";
export { Hub } from "./hub/hub.js";
export {
  DEFAULT_MAX_QUEUED_BYTES,
  DEFAULT_SLOW_TIMEOUT,
  HARD_QUEUE_LIMIT_FACTOR,
  type HubOptions,
  type HubSlowMessage,
  type HubEvents,
  type HubStats,
  type AddOptions,
  type SendOptions,
  type SlowPolicy,
} from "./hub/options.js";
export { HubClient } from "./hub/client.js";
export type { HeartbeatOptions } from "./hub/client.js";
export { MemoryBus, RedisBus, type HubBus, type BusListener, type RedisPublisher, type RedisSubscriber, type RedisConnection } from "./hub/bus.js";
