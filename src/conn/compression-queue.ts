/**
 * CompressionQueue: the process-wide bound on zlib work that runs off the
 * main thread. permessage-deflate (RFC 7692) does its small messages with
 * one-shot calls on the main thread, which run one at a time by nature; what
 * goes to libuv's thread pool (large messages, streamed messages) waits here
 * for a slot, first come first served, so a burst of ten thousand compressed
 * messages costs a bounded number of zlib states and thread-pool jobs at any
 * moment instead of ten thousand at once.
 */

/** The default number of zlib operations in progress at once: libuv's default thread pool size. */
export const DEFAULT_COMPRESSION_CONCURRENCY = 4;

/**
 * A job waiting for a slot. It runs with its slot held and must give it back
 * with `release()` exactly once, however it ends.
 */
export type CompressionJob = () => void;

/**
 * CompressionQueue bounds how many zlib operations (a one-shot compression
 * or decompression handed to the thread pool, or one write into a streaming
 * zlib object) are in progress at once, across every connection that shares
 * it. Jobs beyond the bound wait in one first-in first-out queue: each
 * connection has at most one compression and one decompression job waiting
 * at a time, so a connection sending a stream of large messages takes its
 * turn with the others and cannot starve them. A streaming decompression
 * paused because its reader is slow gives its slot back while paused.
 *
 * All connections share `CompressionQueue.shared` unless given their own
 * with the `compressionQueue` option of `accept`, `serve` and `dial`.
 * Throws a RangeError unless `concurrency` is an integer of at least 1.
 */
export class CompressionQueue {
  /** The queue used by default, with DEFAULT_COMPRESSION_CONCURRENCY (4) slots. */
  static readonly shared = new CompressionQueue(DEFAULT_COMPRESSION_CONCURRENCY);

  /** How many operations may be in progress at once. */
  readonly concurrency: number;
  private running = 0;
  private readonly jobs: CompressionJob[] = [];
  /** Index of the oldest waiting job in `jobs`: shifting an array is O(n). */
  private head = 0;
  private draining = false;
  private waited = 0;

  constructor(concurrency: number = DEFAULT_COMPRESSION_CONCURRENCY) {
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError(`compression concurrency must be an integer of at least 1, not ${String(concurrency)}`);
    }
    this.concurrency = concurrency;
  }

  /** The operations in progress now. */
  get active(): number {
    return this.running;
  }

  /** The jobs waiting for a slot now. */
  get waiting(): number {
    return this.jobs.length - this.head;
  }

  /** The jobs that had to wait for a slot since the queue was made (for metrics). */
  get queued(): number {
    return this.waited;
  }

  /** @internal run starts `job` at once when a slot is free (synchronously), else when one frees up. */
  run(job: CompressionJob): void {
    if (this.running < this.concurrency) {
      this.running++;
      return job();
    }
    this.waited++;
    this.jobs.push(job);
  }

  /**
   * @internal release gives a slot back and starts the oldest waiting jobs
   * with the slots free. A job that gives its slot back at once (its
   * connection closed while it waited) does not recurse: the loop goes on.
   */
  release(): void {
    if (this.running > 0) this.running--;
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.running < this.concurrency && this.head < this.jobs.length) {
        const job = this.jobs[this.head]!;
        this.jobs[this.head++] = undefined as unknown as CompressionJob;
        this.running++;
        job();
      }
    } finally {
      this.draining = false;
      if (this.head === this.jobs.length) {
        this.jobs.length = 0;
        this.head = 0;
      } else if (this.head >= 1024 && this.head * 2 >= this.jobs.length) {
        this.jobs.splice(0, this.head);
        this.head = 0;
      }
    }
  }
}
