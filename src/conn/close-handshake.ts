/**
 * The close handshake of one connection as an object that decides: which
 * close frame to send and when, who ends TCP first, when to give up on the
 * peer, and what `closed` reports. It touches no socket; its host (Conn)
 * does the socket calls it asks for, and the tests drive it directly.
 *
 * https://www.rfc-editor.org/rfc/rfc6455#section-7
 */

import { startTimer } from "../internal/waiting.js";
import { CloseError, type CloseInfo, type ClosePayload, decodeClosePayload, encodeClosePayload, truncateCloseReason } from "../protocol/close.js";
import { ErrorCode, FAILURE_STATUS, type FailureCode, StatusCode } from "../protocol/errors.js";
import { EMPTY_PAYLOAD } from "../protocol/payload.js";
import { DEFAULT_CLOSE_TIMEOUT } from "./options.js";

/** What the close handshake asks of its connection. */
export interface CloseHost {
  /** Stop parsing what the peer sends: nothing after a close frame, or a failure, is read. */
  stopReading(): void;
  /**
   * Record nothing, wake everything: reject pending reads, writes and pings
   * with `err`, once. Complete messages already received stay readable.
   */
  terminate(err: CloseError): void;
  /** Send a close frame with `payload`; false when the socket is already gone. */
  sendCloseFrame(payload: Buffer): boolean;
  /** End the TCP connection (a FIN after what is queued), unless already ended. */
  endSocket(): void;
  /** Drop the TCP connection at once. */
  destroySocket(): void;
  /** Run `fn` once no message is being compressed for sending (WriteSide.whenSent). */
  whenSent(fn: () => void): void;
}


/**
 * CloseHandshake holds the close state of one connection. Two fields are all
 * an open connection pays for; the rest is made when it begins to close.
 */
export class CloseHandshake {
  /** Why the connection ends, from the first close, failure or loss. */
  error: CloseError | undefined;
  /** A close frame has gone out. */
  sent = false;
  private state: ClosingState | undefined;

  constructor(
    private readonly host: CloseHost,
    private readonly isServer: boolean,
    private readonly closeTimeout = DEFAULT_CLOSE_TIMEOUT,
  ) {}

  /** Settles once, with how the connection ended, however it ended. Never rejects. */
  get closed(): Promise<CloseInfo> {
    const state = this.closingState;
    if (state.closedPromise === undefined) {
      const info = state.info;
      state.closedPromise = info ? Promise.resolve(info) : new Promise((resolve) => (state.resolveClosed = resolve));
    }
    return state.closedPromise;
  }

  /** How the connection ended, once the socket is closed. */
  get info(): CloseInfo | undefined {
    return this.state?.info;
  }

  /** The peer's close frame, once it came. */
  get received(): ClosePayload | undefined {
    return this.state?.received;
  }

  /** close begins the handshake from this side (Conn.close, after its checks). */
  close(code: number, reason: string, payload: Buffer): void {
    this.send(new CloseError(code, reason), payload);
  }

  /**
   * fail fails the connection (https://www.rfc-editor.org/rfc/rfc6455#section-7.1.7):
   * it stops reading, sends the close code FAILURE_STATUS gives `errorCode`
   * unless a close frame went out already, and ends TCP.
   */
  fail(errorCode: FailureCode, message: string): void {
    this.host.stopReading();
    const code = FAILURE_STATUS[errorCode];
    const reason = truncateCloseReason(message);
    this.send(new CloseError(code, reason, { errorCode }), encodeClosePayload(code, reason));
    this.host.endSocket();
  }

  /**
   * onCloseFrame handles the peer's close frame
   * (https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1). It returns the
   * failure to report for a malformed one (wire order: the caller's), else
   * undefined, and answers on the next turn of the event loop: a message and
   * the close often arrive in one TCP read, and the application woken by
   * that message may still reply to it (an echo) before the close goes out.
   * §5.5.1 lets an endpoint finish its current message before answering.
   */
  onCloseFrame(payload: Buffer): { errorCode: FailureCode; message: string } | undefined {
    const parsed = decodeClosePayload(payload);
    if ("error" in parsed) return { errorCode: parsed.errorCode, message: parsed.error };
    const state = this.closingState;
    state.received = parsed;
    this.host.stopReading();
    state.answer = setImmediate(() => this.host.whenSent(() => this.answer()));
    return undefined;
  }

  /** answer echoes the peer's close code, once; the server then ends TCP first (§7.1.1). */
  answer(): void {
    const state = this.state;
    if (state?.answer === undefined) return;
    clearImmediate(state.answer);
    state.answer = undefined;
    const { code, reason } = state.received!;
    const echo = code === StatusCode.NoStatusRcvd ? EMPTY_PAYLOAD : encodeClosePayload(code);
    this.send(new CloseError(code, reason, { remote: true }), echo);
    if (this.isServer) this.host.endSocket();
  }

  /** onPeerEnd: the peer ended its side of TCP. Without its close frame, that is an abnormal close. */
  onPeerEnd(): void {
    this.answer();
    if (this.state?.received === undefined) this.terminate(lostConnection("connection closed without a close frame"));
    this.host.endSocket();
  }

  /** onSocketError: the socket failed; the close cannot be clean. */
  onSocketError(err: Error): void {
    this.closingState.socketError = err;
    this.terminate(lostConnection(`connection failed: ${err.message}`, err));
  }

  /** onSocketClose settles `closed`: the socket is gone. */
  onSocketClose(): void {
    this.answer();
    const state = this.closingState;
    clearTimeout(state.timer);
    this.terminate(lostConnection("connection closed without a close frame"));
    if (state.info !== undefined) return;
    const received = state.received;
    // RFC 6455 §7.1.5 says 1006 when no close frame came; a keepalive
    // timeout reports its own 1011 instead: the peer is presumed gone, and
    // "keepalive timeout" says why better than "closed without a close frame".
    const verdict = received ?? (this.error?.errorCode === ErrorCode.KeepaliveTimeout ? this.error : undefined);
    state.info = {
      code: verdict?.code ?? StatusCode.AbnormalClosure,
      reason: verdict?.reason ?? "",
      wasClean: this.sent && received !== undefined && state.socketError === undefined && !state.timedOut,
    };
    state.resolveClosed?.(state.info);
  }

  /** terminate records why the connection ends, once, and has the host wake everything waiting. */
  terminate(err: CloseError): void {
    if (this.error) return;
    this.error = err;
    this.host.terminate(err);
  }

  /** send ends the connection with `err` and sends a close frame, once, then waits closeTimeout for the peer. */
  private send(err: CloseError, payload: Buffer): void {
    this.terminate(err);
    if (this.sent || !this.host.sendCloseFrame(payload)) return;
    this.sent = true;
    this.startCloseTimer();
  }

  /**
   * startCloseTimer starts the closeTimeout clock, once: when the close frame
   * goes out, or earlier, when close() must first wait for a message being
   * compressed (which may wait its turn in the CompressionQueue): close()
   * is bounded by closeTimeout from the call either way.
   */
  startCloseTimer(early = false): void {
    // 0 means "drop once the close frame is written": not before it is.
    if (early && this.closeTimeout === 0) return;
    const state = this.closingState;
    if (state.timer !== undefined) return;
    state.timer = startTimer(
      this.closeTimeout,
      () => {
        state.timedOut = true;
        this.host.destroySocket();
      },
      true,
    );
  }

  private get closingState(): ClosingState {
    return (this.state ??= new ClosingState());
  }
}

/** lostConnection is the 1006 a connection reports when it ended without a close handshake. */
function lostConnection(reason: string, cause?: Error): CloseError {
  return new CloseError(StatusCode.AbnormalClosure, reason, cause === undefined ? undefined : { cause });
}

/** What a connection needs only once it begins to close. */
class ClosingState {
  received: ClosePayload | undefined;
  /** Set between the peer's close frame and our answer to it. */
  answer: NodeJS.Immediate | undefined;
  socketError: Error | undefined;
  timer: NodeJS.Timeout | undefined;
  timedOut = false;
  info: CloseInfo | undefined;
  closedPromise: Promise<CloseInfo> | undefined;
  resolveClosed: ((info: CloseInfo) => void) | undefined;
}
