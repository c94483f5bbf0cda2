/**
 * Iteration over a connection's messages (`for await (const msg of conn)`).
 */

import { CloseError, StatusCode } from "./close.js";
import type { Conn } from "./conn.js";
import type { Message } from "./read.js";

/** Close codes after which iteration ends quietly instead of throwing. */
const QUIET_CLOSE_CODES = new Set<number>([StatusCode.NormalClosure, StatusCode.GoingAway, StatusCode.NoStatusRcvd]);

/**
 * MessageIterator reads messages for `for await`: a class rather than an
 * async generator, so a waiting iteration costs one promise, not several
 * promises and closures.
 */
export class MessageIterator implements AsyncIterableIterator<Message> {
  private done = false;
  private onError: ((err: unknown) => IteratorResult<Message>) | undefined;

  constructor(private readonly conn: Conn) {}

  next(): Promise<IteratorResult<Message>> {
    if (this.done) return Promise.resolve(DONE);
    this.onError ??= (err) => this.fail(err);
    return this.conn.read().then(toResult, this.onError);
  }

  return(): Promise<IteratorResult<Message>> {
    this.done = true;
    return Promise.resolve(DONE);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    return this;
  }

  private fail(err: unknown): IteratorResult<Message> {
    this.done = true;
    if (err instanceof CloseError && QUIET_CLOSE_CODES.has(err.code)) return DONE;
    throw err;
  }
}

const DONE: IteratorResult<Message> = Object.freeze({ done: true, value: undefined });

function toResult(value: Message): IteratorResult<Message> {
  return { done: false, value };
}
