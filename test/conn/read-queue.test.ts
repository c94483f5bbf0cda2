// The read queue without a socket: frames are fed to it as the inbound path
// would, and a recording host stands in for the connection.
import t from "tap";
import { InboundBudget, READ_HIGH_WATER_MARK } from "../../src/conn/options.js";
import { ReadQueue, type ReadQueueHost } from "../../src/conn/read-queue.js";
import { CloseError } from "../../src/protocol/close.js";
import { ErrorCode, FAILURE_STATUS, type FailureCode, StatusCode } from "../../src/protocol/errors.js";
import { MessageType } from "../../src/protocol/frame.js";
import { maskWithWord } from "../../src/protocol/payload.js";

/** RecordingHost writes down what the queue asks of the connection. */
class RecordingHost implements ReadQueueHost {
  readonly calls: string[] = [];
  readonly failures: Array<{ errorCode: FailureCode; message: string }> = [];
  pauseSocket(): void {
    this.calls.push("pause");
  }
  resumeSocket(): void {
    this.calls.push("resume");
  }
  fail(errorCode: FailureCode, message: string): void {
    this.calls.push(`fail ${errorCode}`);
    this.failures.push({ errorCode, message });
  }
}

function fixture(readLimit = Infinity, budget?: InboundBudget) {
  const host = new RecordingHost();
  return { host, queue: new ReadQueue(host, readLimit, budget) };
}

/** feed delivers one message as the inbound path does: a frame header, payload in `chunks`, the end. */
function feed(queue: ReadQueue, type: MessageType, chunks: Buffer[]): boolean {
  if (!queue.startMessage(type)) return false;
  const length = chunks.reduce((n, c) => n + c.length, 0);
  if (!queue.admitsFrame(length, true)) return false;
  for (const chunk of chunks) queue.appendPayload(chunk);
  queue.endMessage();
  return true;
}

/** readWhole takes the oldest message as read() does. */
function readWhole(queue: ReadQueue): { type: MessageType; data: Buffer; over?: string } {
  const message = queue.head!;
  const over = queue.claim(message);
  queue.shift();
  queue.buffersWhole(message);
  const data = queue.takeWhole(message);
  return over === undefined ? { type: message.type, data } : { type: message.type, data, over };
}

/** chunked splits `data` into socket-sized pieces, each its own allocation as a socket read would be. */
function chunked(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) out.push(Buffer.from(data.subarray(i, i + size)));
  return out;
}

t.test("messages come out whole, in wire order, and leave nothing counted", async (t) => {
  const { host, queue } = fixture();
  const big = Buffer.alloc(100_000);
  for (let i = 0; i < big.length; i++) big[i] = i % 251;
  t.ok(feed(queue, MessageType.Text, [Buffer.from("hé"), Buffer.from("llo")]));
  t.ok(feed(queue, MessageType.Binary, chunked(big, 7_000)));
  t.ok(feed(queue, MessageType.Binary, []));
  t.ok(queue.unreadBytes > big.length, "queued bytes are counted as unread");
  const first = readWhole(queue);
  t.equal(first.type, MessageType.Text);
  t.equal(first.data.toString(), "héllo");
  const second = readWhole(queue);
  t.equal(second.type, MessageType.Binary);
  t.ok(second.data.equals(big), "the 100 kB message is reassembled from its 15 chunks");
  t.equal(readWhole(queue).data.length, 0, "an empty message is a message");
  t.equal(queue.head, undefined);
  t.equal(queue.unreadBytes, 0, "nothing counted once everything was read");
  t.same(host.calls, [], "no pause, resume or failure for 100 kB");
});

t.test("the socket pauses past the high-water mark and resumes at half of it", async (t) => {
  const { host, queue } = fixture();
  const piece = Buffer.alloc(16 * 1024, 1);
  let pausedAt = -1;
  for (let i = 0; pausedAt < 0 && i < 64; i++) {
    feed(queue, MessageType.Binary, [Buffer.from(piece)]);
    if (host.calls.includes("pause")) pausedAt = queue.unreadBytes;
  }
  t.ok(pausedAt > READ_HIGH_WATER_MARK, `paused once over ${READ_HIGH_WATER_MARK} unread bytes (at ${pausedAt})`);
  t.ok(pausedAt < READ_HIGH_WATER_MARK + 2 * piece.length, "and not much later");
  t.same(host.calls, ["pause"]);
  // Reading brings the count down; the socket resumes only at half the mark.
  while (queue.unreadBytes > READ_HIGH_WATER_MARK / 2 + piece.length * 2) readWhole(queue);
  t.same(host.calls, ["pause"], "still paused above half the mark");
  while (!host.calls.includes("resume")) readWhole(queue);
  t.ok(queue.unreadBytes <= READ_HIGH_WATER_MARK / 2, `resumed at ${queue.unreadBytes} unread bytes`);
  t.same(host.calls, ["pause", "resume"]);
});

t.test("a flood of empty messages pauses the socket too", async (t) => {
  const { host, queue } = fixture();
  let count = 0;
  while (!host.calls.includes("pause") && count < 100_000) {
    feed(queue, MessageType.Binary, []);
    count++;
  }
  t.same(host.calls, ["pause"], `paused after ${count} empty messages`);
  t.ok(count < 10_000, "each message costs unread bytes");
});

t.test("the read limit: claim reports a message over it, a claimed message fails with 1009 before its payload", async (t) => {
  const { host, queue } = fixture(10);
  feed(queue, MessageType.Binary, [Buffer.alloc(11)]);
  t.match(readWhole(queue).over, /at least 11 bytes exceeds the read limit of 10/);
  t.same(host.calls, [], "claim reports; the caller fails the connection");
  // A read waiting on a message in progress claims it; the next header declares too much.
  queue.startMessage(MessageType.Binary);
  t.ok(queue.admitsFrame(6, false));
  queue.appendPayload(Buffer.alloc(6));
  t.equal(queue.claim(queue.head!), undefined, "6 bytes are within the limit");
  t.notOk(queue.admitsFrame(5, true), "a frame that takes the message to 11 bytes is refused");
  t.same(host.failures, [{ errorCode: ErrorCode.MessageTooBig, message: "message of at least 11 bytes exceeds the read limit of 10" }]);
  t.equal(FAILURE_STATUS[ErrorCode.MessageTooBig], StatusCode.MessageTooBig, "which closes with 1009");
});

t.test("text is validated as it arrives and when it ends", async (t) => {
  {
    const { host, queue } = fixture();
    queue.startMessage(MessageType.Text);
    queue.admitsFrame(4, true);
    queue.appendPayload(Buffer.from([0x61, 0xed, 0xa0, 0x80]));
    t.same(host.failures, [{ errorCode: ErrorCode.InvalidUtf8, message: "text message is not valid UTF-8" }]);
    t.equal(FAILURE_STATUS[ErrorCode.InvalidUtf8], StatusCode.InvalidFramePayloadData);
  }
  {
    const { host, queue } = fixture();
    feed(queue, MessageType.Text, [Buffer.from("€").subarray(0, 2)]);
    t.same(host.failures, [{ errorCode: ErrorCode.InvalidUtf8, message: "text message ends inside a UTF-8 sequence" }]);
    t.equal(queue.head?.complete, false, "the truncated message never completes");
  }
  {
    const { host, queue } = fixture();
    const euro = Buffer.from("€");
    feed(queue, MessageType.Text, [euro.subarray(0, 1), euro.subarray(1, 2), euro.subarray(2)]);
    t.same(host.failures, [], "a character split over three chunks is valid");
    t.equal(readWhole(queue).data.toString(), "€");
  }
});

t.test("setWake calls its function once, at the next change", async (t) => {
  const { queue } = fixture();
  let wakes = 0;
  queue.setWake(() => wakes++);
  queue.startMessage(MessageType.Binary);
  t.equal(wakes, 1, "a new message wakes");
  queue.admitsFrame(2, true);
  queue.appendPayload(Buffer.from("a"));
  t.equal(wakes, 1, "once only");
  queue.setWake(() => wakes++);
  queue.appendPayload(Buffer.from("b"));
  t.equal(wakes, 2, "payload wakes");
  queue.setWake(() => wakes++);
  queue.endMessage();
  t.equal(wakes, 3, "the end wakes");
  t.equal(queue.head?.complete, true);
});

t.test("a binary message kept masked is unmasked as it is taken", async (t) => {
  const { queue } = fixture();
  const plain = Buffer.alloc(40_000);
  for (let i = 0; i < plain.length; i++) plain[i] = (i * 7) % 256;
  const key = 0x11223344;
  const masked = Buffer.from(plain);
  maskWithWord(masked, key, 0);
  queue.startMessage(MessageType.Binary);
  queue.admitsFrame(masked.length, true);
  t.ok(queue.keepsMasked(true, masked.length), "a single-frame binary message of 40 kB stays masked");
  for (const chunk of chunked(masked, 9_999)) queue.appendMaskedPayload(chunk, key);
  queue.endMessage();
  t.ok(readWhole(queue).data.equals(plain), "unmasked in the pass that copies it together");
  queue.startMessage(MessageType.Text);
  t.notOk(queue.keepsMasked(true, 40_000), "text is never kept masked: it is validated as it arrives");
});

t.test("a streamed message hands out its chunks as they arrive", async (t) => {
  const { queue } = fixture();
  queue.startMessage(MessageType.Binary);
  queue.admitsFrame(30_000, false);
  const message = queue.head!;
  t.equal(queue.claim(message), undefined);
  queue.shift();
  queue.streams(message);
  t.equal(queue.pull(message), undefined, "nothing yet");
  const a = Buffer.alloc(10_000, 1);
  queue.appendPayload(a);
  t.same(queue.pull(message), a);
  queue.appendPayload(Buffer.alloc(20_000, 2));
  queue.endMessage();
  t.equal(queue.pull(message)?.length, 20_000);
  t.equal(queue.pull(message), undefined);
  t.ok(message.complete);
  t.equal(queue.unreadBytes, 0);
});

t.test("closeRead: a later data message fails with 1008; a waiting one is refused at once", async (t) => {
  {
    const { host, queue } = fixture();
    t.ok(queue.closeRead(), "nothing waits");
    t.notOk(queue.startMessage(MessageType.Text));
    t.same(host.failures, [{ errorCode: ErrorCode.UnexpectedData, message: "unexpected data message after closeRead" }]);
    t.equal(FAILURE_STATUS[ErrorCode.UnexpectedData], StatusCode.PolicyViolation);
  }
  {
    const { host, queue } = fixture();
    feed(queue, MessageType.Text, [Buffer.from("x")]);
    t.notOk(queue.closeRead(), "a message waits: the caller fails the connection");
    t.same(host.failures, []);
  }
});

t.test("terminate keeps complete messages, drops the one in progress and resumes a paused socket", async (t) => {
  const { host, queue } = fixture();
  feed(queue, MessageType.Text, [Buffer.from("kept")]);
  // Enough unread data to pause the socket, in an unfinished message.
  queue.startMessage(MessageType.Binary);
  queue.admitsFrame(1_000_000, true);
  for (let i = 0; i < 20; i++) queue.appendPayload(Buffer.alloc(16_384));
  t.same(host.calls, ["pause"]);
  const err = new CloseError(StatusCode.AbnormalClosure, "gone");
  queue.terminate(err);
  t.same(host.calls, ["pause", "resume"], "the peer's close frame may be behind: reading goes on");
  t.equal(queue.failure, err);
  t.equal(readWhole(queue).data.toString(), "kept", "a complete message stays readable");
  t.equal(queue.head, undefined, "the unfinished one is gone");
  // From now on data is parsed and dropped.
  t.ok(feed(queue, MessageType.Binary, [Buffer.alloc(100)]));
  t.equal(queue.head, undefined, "nothing is queued after terminate");
  queue.terminate(new CloseError(StatusCode.InternalError, "again"));
  t.equal(queue.failure, err, "the first error stays");
  t.equal(queue.unreadBytes, 0);
});

t.test("the process budget sheds the largest, oldest unfinished message with 1013", async (t) => {
  const budget = new InboundBudget(50_000);
  const slow = fixture(Infinity, budget);
  const honest = fixture(Infinity, budget);
  slow.queue.startMessage(MessageType.Binary);
  slow.queue.admitsFrame(1_000_000, true);
  slow.queue.appendPayload(Buffer.alloc(30_000));
  honest.queue.startMessage(MessageType.Binary);
  honest.queue.admitsFrame(10_000, false);
  honest.queue.appendPayload(Buffer.alloc(5_000));
  t.equal(budget.holders, 2);
  t.same(slow.host.calls, []);
  slow.queue.appendPayload(Buffer.alloc(30_000));
  t.same(slow.host.failures.map((f) => f.errorCode), [ErrorCode.BudgetExceeded]);
  t.equal(FAILURE_STATUS[ErrorCode.BudgetExceeded], StatusCode.TryAgainLater);
  t.same(honest.host.calls, [], "the small holder is kept");
  t.equal(budget.shed, 1);
  t.ok(budget.used <= 5_000 + 1_000, `the shed message released its bytes (${budget.used} left)`);
  honest.queue.endMessage();
  t.equal(budget.used, 0, "a complete message leaves the budget");
});
