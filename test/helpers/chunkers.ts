/**
 * Test helpers for feeding bytes to push parsers at every kind of chunk
 * boundary, and a small seeded PRNG whose seed is printed so that a failing
 * random case can be replayed with `WSCONN_SEED=<seed>`.
 */

/** Rng is a seeded source of pseudo-random numbers (mulberry32). */
export interface Rng {
  /** The seed this generator started from. */
  readonly seed: number;
  /** next returns a float in [0, 1). */
  next(): number;
  /** int returns an integer in [0, n). */
  int(n: number): number;
  /** bytes returns `n` random bytes. */
  bytes(n: number): Buffer;
}

/** createRng makes a generator from `seed` (a 32-bit integer). */
export function createRng(seed: number): Rng {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let x = state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(next() * n);
  const bytes = (n: number): Buffer => {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = int(256);
    return out;
  };
  return { seed: seed >>> 0, next, int, bytes };
}

/** Anything with a `comment` method, such as a tap test. */
export interface Commenter {
  comment(...args: unknown[]): void;
}

/**
 * seededRng makes a generator seeded from the WSCONN_SEED environment variable,
 * or a fresh random seed, and prints the seed through `t.comment`.
 */
export function seededRng(t: Commenter, label = "random"): Rng {
  const fromEnv = process.env["WSCONN_SEED"];
  const seed = fromEnv !== undefined && fromEnv !== "" ? Number(fromEnv) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  t.comment(`${label}: seed ${seed} (replay with WSCONN_SEED=${seed})`);
  return createRng(seed);
}

/** Chunker cuts a byte string into the chunks a socket might deliver. */
export interface Chunker {
  readonly name: string;
  /** split returns fresh copies, so a parser that unmasks in place cannot change the input. */
  split(data: Uint8Array): Buffer[];
}

/** splitAt cuts `data` at the given increasing offsets, copying every piece. */
export function splitAt(data: Uint8Array, points: number[]): Buffer[] {
  const chunks: Buffer[] = [];
  let from = 0;
  for (const p of [...points, data.length]) {
    chunks.push(Buffer.from(data.subarray(from, p)));
    from = p;
  }
  return chunks;
}

/** randomSplitPoints picks between 1 and 8 sorted cut offsets in (0, length). */
export function randomSplitPoints(rng: Rng, length: number): number[] {
  if (length < 2) return [];
  const count = 1 + rng.int(Math.min(8, length - 1));
  const points = new Set<number>();
  while (points.size < count) points.add(1 + rng.int(length - 1));
  return [...points].sort((a, b) => a - b);
}

const whole: Chunker = { name: "whole", split: (data) => [Buffer.from(data)] };

const byteByByte: Chunker = {
  name: "one byte at a time",
  split: (data) => splitAt(data, Array.from({ length: Math.max(0, data.length - 1) }, (_, i) => i + 1)),
};

const halves: Chunker = {
  name: "halves",
  split: (data) => splitAt(data, [Math.floor(data.length / 2)]),
};

/** randomChunker splits at points drawn from `rng`. */
export function randomChunker(rng: Rng): Chunker {
  return { name: `random splits (seed ${rng.seed})`, split: (data) => splitAt(data, randomSplitPoints(rng, data.length)) };
}

/** chunkers returns the four ways of feeding bytes: whole, byte by byte, halves, random splits. */
export function chunkers(rng: Rng): Chunker[] {
  return [whole, byteByByte, halves, randomChunker(rng)];
}
