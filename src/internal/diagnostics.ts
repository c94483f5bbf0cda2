/**
 * The node:diagnostics_channel channels wsconn publishes on, and the shape of
 * each message. A channel costs nothing while nobody subscribes: every
 * publisher checks `hasSubscribers` before it builds a message.
 *
 * Subscribe with `diagnostics_channel.subscribe(name, fn)` from node:diagnostics_channel;
 * the names are listed in docs/api.md and exported as `DiagnosticsChannel`.
 */

import { channel } from "node:diagnostics_channel";

/** The names of the channels wsconn publishes on. */
export const DiagnosticsChannel = {
  /** A connection opened (after the 101, or the client's handshake): ConnOpenMessage. */
  ConnOpen: "wsconn:conn:open",
  /** A connection ended, however it ended: ConnCloseMessage. */
  ConnClose: "wsconn:conn:close",
  /** The server refused an opening handshake with an HTTP status: HandshakeRefusedMessage. */
  HandshakeRefused: "wsconn:handshake:refused",
  /** A `serve` handler threw or rejected (the connection got 1011): HandlerErrorMessage. */
  HandlerError: "wsconn:handler:error",
  /** The keepalive ping got no answer in time (the connection is failed with 1011): KeepaliveTimeoutMessage. */
  KeepaliveTimeout: "wsconn:keepalive:timeout",
  /** A Hub applied its slow policy to a client: HubSlowMessage. */
  HubSlow: "wsconn:hub:slow",
} as const;

export const connOpenChannel = channel(DiagnosticsChannel.ConnOpen);
export const connCloseChannel = channel(DiagnosticsChannel.ConnClose);
export const handshakeRefusedChannel = channel(DiagnosticsChannel.HandshakeRefused);
export const handlerErrorChannel = channel(DiagnosticsChannel.HandlerError);
export const keepaliveTimeoutChannel = channel(DiagnosticsChannel.KeepaliveTimeout);
export const hubSlowChannel = channel(DiagnosticsChannel.HubSlow);
