import t from "tap";
import { dial, MessageType } from "../src/index.js";
import { echo, startServer } from "./helpers/peers.js";

t.test("echo round trip", async (t) => {
  const srv = await startServer({}, (c) => void echo(c));
  const conn = await dial(srv.url);
  await conn.write(MessageType.Text, "hi");
  const msg = await conn.read();
  t.equal(msg.text(), "hi");
  t.equal(msg.type, MessageType.Text);
  await conn.close();
  t.same(await conn.closed, { code: 1000, reason: "", wasClean: true });
  await srv.close();
});
