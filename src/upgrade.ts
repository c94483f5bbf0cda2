/** Telling a WebSocket upgrade request from other requests. */

import type { IncomingMessage } from "node:http";
import { hasToken } from "./handshake.js";

/**
 * isWebSocketUpgrade tells whether `req` asks for a WebSocket upgrade: a GET
 * with `Connection: Upgrade` and `Upgrade: websocket` (gorilla's
 * IsWebSocketUpgrade). It does not validate the rest of the handshake; accept
 * does.
 */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  return req.method === "GET" && hasToken(req.headers.connection, "upgrade") && hasToken(req.headers.upgrade, "websocket");
}
