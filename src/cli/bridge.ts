/**
 * bridge: one TCP connection carried over one WebSocket connection through
 * netConn, for both ends of a tunnel (`wsconn tunnel` and `wsconn serve
 * --forward`), and the access log line that reports it.
 *
 * WebSocket has no half close (https://www.rfc-editor.org/rfc/rfc6455#section-7):
 * once either side ends, the tunnel closes both directions. An orderly end
 * travels as a 1000 close and arrives as EOF on the other side's TCP
 * connection; a failure (a reset, an error, an abnormal close) travels as
 * 1011 or 1006 and arrives as a TCP reset, so neither end mistakes a broken
 * stream for a complete one.
 */

import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { closeStatus, StatusCode } from "../close.js";
import type { CloseInfo, Conn } from "../conn.js";
import { MessageType } from "../frame.js";
import { netConn } from "../netconn.js";
import { describe, isNormalClose } from "./runtime.js";
import { noop } from "../internal/noop.js";

/** BridgeResult is how a bridged connection went, for the access log. */
export interface BridgeResult {
  close: CloseInfo;
  /** The first error seen on either side, if any. */
  error: string | undefined;
  /** Bytes read from the TCP socket (sent over the WebSocket). */
  tcpRead: number;
  /** Bytes written to the TCP socket (received over the WebSocket). */
  tcpWritten: number;
  /** How long the connection lived, in ms. */
  ms: number;
}

/**
 * bridge pipes `tcp` and `conn` both ways until both are closed, and
 * resolves with what happened. `tcp` should allow half-open (so the bytes in
 * flight when its peer ends still reach it) and may be paused.
 */
export async function bridge(tcp: Socket, conn: Conn, started = performance.now()): Promise<BridgeResult> {
  let error: string | undefined;
  const note = (err: unknown): void => void (error ??= describe(err));
  if (tcp.destroyed) {
    await conn.close(StatusCode.NormalClosure).catch(noop);
  } else {
    const tcpClosed = new Promise((resolve) => tcp.once("close", resolve));
    wire(tcp, conn, note);
    await tcpClosed;
  }
  const close = await conn.closed;
  return { close, error, tcpRead: tcp.bytesRead, tcpWritten: tcp.bytesWritten, ms: performance.now() - started };
}

function wire(tcp: Socket, conn: Conn, note: (err: unknown) => void): void {
  const ws = netConn(conn, MessageType.Binary);
  tcp.on("error", (err) => {
    note(err);
    tcp.destroy();
    // Not 1000: the other side must see a failure, not an orderly end.
    void conn.close(StatusCode.InternalError, "tcp connection failed").catch(noop);
  });
  ws.on("error", (err) => {
    const code = closeStatus(err);
    if (isNormalClose(code)) return void tcp.end(); // e.g. a write racing the peer's close
    // A close code and reason reach the log anyway; a dropped connection's cause would not.
    if (code === -1 || code === StatusCode.AbnormalClosure) note(err);
    tcp.resetAndDestroy();
  });
  // Once our FIN is out nothing more can flow: the WebSocket is closing too.
  tcp.on("finish", () => tcp.destroy());
  tcp.pipe(ws);
  ws.pipe(tcp);
}

/** accessLine renders a bridged connection as one log line. */
export function accessLine(from: string, to: string, result: BridgeResult, up: number, down: number): string {
  return `${from} -> ${to} ${outcome(result.close, result.error)} up=${up} down=${down} time=${(result.ms / 1000).toFixed(3)}s`;
}

/** outcome renders how a connection ended as `close=CODE [reason="…"] [error="…"]`. */
export function outcome(close: CloseInfo, error: string | undefined): string {
  const reason = close.reason === "" ? "" : ` reason=${JSON.stringify(close.reason)}`;
  return `close=${close.code}${reason}${error === undefined ? "" : ` error=${JSON.stringify(error)}`}`;
}
