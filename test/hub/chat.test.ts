/**
 * The chat example of docs/examples/chat, run as it is and spoken to with
 * wsconn clients: the page, rooms, join and leave notices, refusals, two
 * servers sharing rooms through a bus, and graceful shutdown.
 */

import t, { type Test } from "tap";
import { type Chat, startChat } from "../../docs/examples/chat/server.js";
import { CloseError, type Conn, dial, HandshakeError, MemoryBus, MessageType } from "../../src/index.js";

interface ChatEvent {
  type: "join" | "leave" | "message";
  name: string;
  text?: string;
  online: number;
  at: number;
}

async function chatServer(t: Test, bus?: MemoryBus): Promise<Chat> {
  const chat = await startChat({ bus });
  t.teardown(() => chat.close());
  return chat;
}

function join(chat: Chat, name: string, room: string): Promise<Conn> {
  return dial(`${chat.url.replace("http", "ws")}/ws?${new URLSearchParams({ name, room })}`);
}

async function next(conn: Conn): Promise<ChatEvent> {
  const msg = await conn.read();
  return JSON.parse(msg.text()) as ChatEvent;
}

async function closeError(conn: Conn): Promise<CloseError> {
  for (;;) {
    try {
      await conn.read();
    } catch (err) {
      return err as CloseError;
    }
  }
}

t.test("the page is served by the same http server", async (t) => {
  const chat = await chatServer(t);
  const page = await fetch(chat.url + "/");
  t.equal(page.status, 200);
  t.match(page.headers.get("content-type"), /text\/html/);
  t.match(await page.text(), /<title>wsconn chat<\/title>/);
  t.equal((await fetch(chat.url + "/nope")).status, 404);
  const refused = await dial(chat.url.replace("http", "ws") + "/elsewhere").catch((e: unknown) => e);
  t.type(refused, HandshakeError);
  t.equal((refused as HandshakeError).status, 404);
});

t.test("rooms, join and leave notices, messages", async (t) => {
  const chat = await chatServer(t);
  const ann = await join(chat, "ann", "r1");
  t.match(await next(ann), { type: "join", name: "ann", online: 1 });
  const bob = await join(chat, "bob", "r1");
  t.match(await next(ann), { type: "join", name: "bob", online: 2 });
  t.match(await next(bob), { type: "join", name: "bob", online: 2 });
  const carol = await join(chat, "carol\u0007", "r2");
  t.match(await next(carol), { type: "join", name: "carol", online: 1 }, "control characters are cleaned");
  t.equal(chat.hub.size, 3);

  await ann.write(MessageType.Text, "  hello r1  ");
  t.match(await next(ann), { type: "message", name: "ann", text: "hello r1" });
  t.match(await next(bob), { type: "message", name: "ann", text: "hello r1" });
  await carol.write(MessageType.Text, "anyone?");
  t.match(await next(carol), { type: "message", name: "carol", text: "anyone?" }, "carol's room only had her message");

  await bob.close();
  t.match(await next(ann), { type: "leave", name: "bob", online: 1 });

  // Refusals: binary data (1003) and a line over the read limit (1009).
  await carol.write(MessageType.Binary, Buffer.from([1]));
  t.equal((await closeError(carol)).code, 1003);
  await ann.write(MessageType.Text, "x".repeat(5000));
  t.equal((await closeError(ann)).code, 1009);
});

t.test("two chat servers share rooms through a bus", async (t) => {
  const bus = new MemoryBus();
  const one = await chatServer(t, bus);
  const two = await chatServer(t, bus);
  const ann = await join(one, "ann", "r");
  t.match(await next(ann), { type: "join", name: "ann" });
  await one.hub.settled();
  const dave = await join(two, "dave", "r");
  t.match(await next(dave), { type: "join", name: "dave" });
  t.match(await next(ann), { type: "join", name: "dave" }, "ann sees dave join on the other server");
  await ann.write(MessageType.Text, "hi from one");
  t.match(await next(dave), { type: "message", name: "ann", text: "hi from one" });
  t.match(await next(ann), { type: "message", name: "ann", text: "hi from one" });
});

t.test("shutdown says goodbye with 1001", async (t) => {
  const chat = await startChat();
  const ann = await join(chat, "ann", "r1");
  t.match(await next(ann), { type: "join" });
  await chat.close();
  const err = await closeError(ann);
  t.equal(err.code, 1001);
  t.equal(err.reason, "chat server shutting down");
  t.same(await ann.closed, { code: 1001, reason: "chat server shutting down", wasClean: true });
  t.equal(chat.hub.size, 0);
});
