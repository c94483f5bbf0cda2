/**
 * Hub heartbeat: a raw peer that goes silent after the handshake is closed
 * with 1011 after maxMissed pings; a wsconn client that answers stays, with
 * its round trip recorded; closing the hub stops the pings in flight.
 */

import { once } from "node:events";
import t from "tap";
import { type CloseInfo, dial, Hub, type HubClient } from "../../src/index.js";
import { OP, parseCloseBody, rawClient } from "../helpers/interop.js";
import { startServer } from "../helpers/peers.js";

t.test("drops a peer that stops answering pings, keeps one that answers", async (t) => {
  const hub = new Hub({ heartbeat: { interval: 50, timeout: 150, maxMissed: 2 } });
  // The server reads every connection (closeRead), so pongs are seen.
  const srv = await startServer({ closeTimeout: 200 }, (conn) => {
    conn.closeRead();
    hub.add(conn);
  });
  t.teardown(() => srv.close());

  const good = await dial(srv.url);
  const reading = (async () => {
    for await (const _ of good); // the client reads too: a real application does
  })();
  while (hub.size < 1) await once(hub, "open");
  const [goodClient] = hub;

  const silent = await rawClient(srv.port);
  t.teardown(() => silent.socket.destroy());
  while (hub.size < 2) await once(hub, "open");
  const silentClient = [...hub][1]!;

  const [who] = (await once(hub, "unresponsive")) as [HubClient];
  t.equal(who, silentClient, "'unresponsive' names the silent peer");
  t.equal(silentClient.missedPings, 2);
  t.notOk(silentClient.online, "it left the hub");
  t.equal(hub.stats.heartbeatClosed, 1);

  // The silent peer saw pings, then a close frame with 1011.
  let pings = 0;
  for (;;) {
    const frame = await silent.frames.next();
    if (frame.opcode === OP.ping) {
      pings++;
      continue;
    }
    t.equal(frame.opcode, OP.close);
    t.same(parseCloseBody(frame.payload), { code: 1011, reason: "ping timeout" });
    break;
  }
  t.equal(pings, 2, "two unanswered pings");
  const [closedClient, info] = (await once(hub, "close")) as [HubClient, CloseInfo];
  t.equal(closedClient, silentClient);
  t.equal(info.code, 1006, "it never answered the close frame: the close timeout dropped it");
  await silent.frames.ended;

  t.ok(goodClient!.online, "the peer that answers stays");
  t.equal(goodClient!.missedPings, 0);
  t.type(goodClient!.rtt, "number");
  t.ok(goodClient!.rtt! >= 0 && goodClient!.rtt! < 150, `its round trip was recorded (${goodClient!.rtt!.toFixed(2)} ms)`);

  await hub.close();
  await reading;
  t.equal((await good.closed).code, 1001);
});

t.test("closing the hub abandons pings in flight without counting them", async (t) => {
  const hub = new Hub({ heartbeat: { interval: 20, timeout: 60_000 } });
  let unresponsive = 0;
  hub.on("unresponsive", () => unresponsive++);
  const srv = await startServer({ closeTimeout: 100 }, (conn) => {
    conn.closeRead();
    hub.add(conn);
  });
  t.teardown(() => srv.close());
  const silent = await rawClient(srv.port);
  t.teardown(() => silent.socket.destroy());
  while (hub.size < 1) await once(hub, "open");
  const [client] = hub;
  t.equal((await silent.frames.next()).opcode, OP.ping, "a ping is in flight");
  await hub.close();
  t.equal(client!.missedPings, 0, "the abandoned ping did not count");
  t.equal(unresponsive, 0);
  t.equal(hub.stats.heartbeatClosed, 0);
});

t.test("a ping that fails because the connection closed is not a miss", async (t) => {
  const hub = new Hub({ heartbeat: { interval: 20, timeout: 60_000, maxMissed: 1 } });
  const srv = await startServer({}, (conn) => {
    conn.closeRead();
    hub.add(conn);
  });
  t.teardown(() => srv.close());
  const silent = await rawClient(srv.port);
  while (hub.size < 1) await once(hub, "open");
  const [client] = hub;
  t.equal((await silent.frames.next()).opcode, OP.ping, "a ping is in flight");
  const closed = once(hub, "close");
  silent.socket.destroy();
  await closed;
  t.equal(client!.missedPings, 0);
  t.equal(hub.stats.heartbeatClosed, 0);
  await hub.close();
});

t.test("heartbeat: true uses the defaults and leaves no timer behind", async (t) => {
  const hub = new Hub({ heartbeat: true });
  t.equal(hub.size, 0);
  await hub.close();
  t.pass("the process can exit: the interval is unref'd and cleared");
});
