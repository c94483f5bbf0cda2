/**
 * Iteration over a connection's messages (`for await (const msg of conn)`).
 */

import { CloseError, StatusCode } from "./close.js";
import type { Iteration, Message, ReadSide } from "./read.js";

/** Close codes after which iteration ends quietly instead of throwing. */
const QUIET_CLOSE_CODES = new Set<number>([StatusCode.NormalClosure, StatusCode.GoingAway, StatusCode.NoStatusRcvd]);

/**
 * MessageIterator reads messages for `for await`: a class rather than an
 * async generator, and served by ReadSide.next, so a loop waiting for a
 * message costs one promise, not several promises and closures.
 */
export class MessageIterator implements AsyncIterableIterator<Message>, Iteration {
  private done = false;

  constructor(private readonly reads: ReadSide) {}

  next(): Promise<IteratorResult<Message>> {
    if (this.done) return Promise.resolve(DONE);
    return this.reads.next(this);
  }

  return(): Promise<IteratorResult<Message>> {
    this.done = true;
    return Promise.resolve(DONE);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    return this;
  }

  /** end finishes the iteration after a read rejected: quietly for a normal close, else by throwing. */
  end(err: unknown): IteratorResult<Message> {
    this.done = true;
    if (err instanceof CloseError && QUIET_CLOSE_CODES.has(err.code)) return DONE;
    throw err;
  }
}

const DONE: IteratorResult<Message> = Object.freeze({ done: true, value: undefined });
