import { getEventListeners } from "node:events";
import t from "tap";
import { AbortableLock } from "../../src/internal/waiting.js";

t.test("tryAcquire, isHeld and release", async (t) => {
  const lock = new AbortableLock();
  t.equal(lock.isHeld, false);
  t.ok(lock.tryAcquire());
  t.equal(lock.isHeld, true);
  t.notOk(lock.tryAcquire(), "held");
  lock.release();
  t.equal(lock.isHeld, false);
  await lock.acquire();
  t.equal(lock.isHeld, true, "acquire on a free lock");
  lock.release();
});

t.test("tryAcquire does not jump the queue", async (t) => {
  const lock = new AbortableLock();
  t.ok(lock.tryAcquire());
  const waiting = lock.acquire();
  lock.release(); // hands the lock to the waiter
  t.notOk(lock.tryAcquire(), "the lock went to the waiter");
  await waiting;
  t.equal(lock.isHeld, true);
  lock.release();
  t.ok(lock.tryAcquire());
});

t.test("waiters get the lock in FIFO order", async (t) => {
  const lock = new AbortableLock();
  await lock.acquire();
  const order: number[] = [];
  const all = [0, 1, 2, 3, 4].map((i) =>
    lock.acquire().then(() => {
      order.push(i);
      lock.release();
    }),
  );
  t.same(order, [], "nobody runs while held");
  lock.release();
  await Promise.all(all);
  t.same(order, [0, 1, 2, 3, 4]);
  t.equal(lock.isHeld, false);
});

t.test("FIFO order holds for hundreds of waiters (queue compaction)", async (t) => {
  const lock = new AbortableLock();
  await lock.acquire();
  const order: number[] = [];
  const controllers: AbortController[] = [];
  const all: Array<Promise<void>> = [];
  for (let i = 0; i < 300; i++) {
    const ac = new AbortController();
    controllers.push(ac);
    all.push(
      lock.acquire(ac.signal).then(
        () => {
          order.push(i);
          // add more waiters while the queue is being drained
          if (i === 100) all.push(lock.acquire().then(() => void order.push(1000)).then(() => lock.release()));
          lock.release();
        },
        () => undefined,
      ),
    );
  }
  for (let i = 0; i < 300; i += 7) controllers[i]!.abort();
  lock.release();
  await Promise.all(all);
  await Promise.all(all); // the waiter added at i === 100
  const expected = Array.from({ length: 300 }, (_, i) => i).filter((i) => i % 7 !== 0);
  t.same(order, [...expected, 1000]);
  t.equal(lock.isHeld, false);
});

t.test("abort removes a waiter and rejects with the signal's reason", async (t) => {
  const lock = new AbortableLock();
  await lock.acquire();
  const ac = new AbortController();
  const order: string[] = [];
  const first = lock.acquire(ac.signal);
  const second = lock.acquire().then(() => void order.push("second"));
  const reason = new Error("gave up");
  ac.abort(reason);
  await t.rejects(first, reason);
  t.equal(getEventListeners(ac.signal, "abort").length, 0, "listener removed");
  lock.release();
  await second;
  t.same(order, ["second"], "the aborted waiter was skipped");
  t.equal(lock.isHeld, true);
  lock.release();
  t.equal(lock.isHeld, false);
});

t.test("an already aborted signal rejects at once, even on a free lock", async (t) => {
  const lock = new AbortableLock();
  const reason = new Error("already");
  await t.rejects(lock.acquire(AbortSignal.abort(reason)), reason);
  t.equal(lock.isHeld, false);
});

t.test("a granted waiter drops its abort listener; a late abort does nothing", async (t) => {
  const lock = new AbortableLock();
  await lock.acquire();
  const ac = new AbortController();
  const p = lock.acquire(ac.signal);
  t.equal(getEventListeners(ac.signal, "abort").length, 1);
  lock.release();
  await p;
  t.equal(getEventListeners(ac.signal, "abort").length, 0);
  ac.abort();
  t.equal(lock.isHeld, true, "still held by the granted waiter");
  lock.release();
});

t.test("shut rejects every waiter and every later acquire", async (t) => {
  const lock = new AbortableLock();
  await lock.acquire();
  const ac = new AbortController();
  const waiters = [lock.acquire(), lock.acquire(ac.signal), lock.acquire()];
  const err = new Error("connection closed");
  lock.shut(err);
  for (const w of waiters) await t.rejects(w, err);
  t.equal(getEventListeners(ac.signal, "abort").length, 0, "listener removed on fail");
  await t.rejects(lock.acquire(), err, "later acquire");
  t.notOk(lock.tryAcquire(), "tryAcquire refuses after fail");
  lock.shut(new Error("second failure"));
  await t.rejects(lock.acquire(), err, "the first failure sticks");
  lock.release(); // the holder may still release
  t.notOk(lock.tryAcquire());
});

t.test("fail takes precedence over an aborted signal", async (t) => {
  const lock = new AbortableLock();
  const err = new Error("closed");
  lock.shut(err);
  await t.rejects(lock.acquire(AbortSignal.abort(new Error("aborted"))), err);
});

t.test("fail after an abort leaves the aborted waiter's rejection alone", async (t) => {
  const lock = new AbortableLock();
  await lock.acquire();
  const ac = new AbortController();
  const abortReason = new Error("aborted first");
  const aborted = lock.acquire(ac.signal);
  const waiting = lock.acquire();
  ac.abort(abortReason);
  const err = new Error("closed");
  lock.shut(err);
  await t.rejects(aborted, abortReason, "rejected once, with the abort reason");
  await t.rejects(waiting, err);
});
