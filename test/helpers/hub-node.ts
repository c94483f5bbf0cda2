/**
 * Test helpers for hubs: a "node" is a Hub with its own wsconn server that
 * adds every connection to it, so tests can dial clients into one node of a
 * bus-connected cluster. Everything is closed when the test ends.
 */

import type { Test } from "tap";
import { type Conn, dial, Hub, type HubClient, type HubOptions } from "../../src/index.js";
import { startServer } from "./peers.js";

/** HubNode is one hub and the way to dial clients into it. */
export interface HubNode {
  hub: Hub;
  /** Dials a client into this node's hub, subscribed to `topics`. */
  join(topics?: string[]): Promise<{ conn: Conn; client: HubClient }>;
}

/**
 * hubNode starts a Hub with `options` and a server adding every connection
 * to it (the read side closed: hub clients only receive). `onHub` sees the hub
 * right after it is made, before any connection or bus traffic, e.g. to listen
 * for 'busError'. The hub and server are closed at the end of `t`.
 */
export async function hubNode(t: Test, options: HubOptions, onHub?: (hub: Hub) => void): Promise<HubNode> {
  const hub = new Hub(options);
  onHub?.(hub);
  const waiting: Array<{ topics: string[]; resolve(c: HubClient): void }> = [];
  const srv = await startServer({}, (conn) => {
    conn.closeRead();
    const next = waiting.shift()!;
    next.resolve(hub.add(conn, {}, { topics: next.topics }));
  });
  t.teardown(async () => {
    await hub.close();
    await srv.close();
  });
  return {
    hub,
    async join(topics = []) {
      const added = new Promise<HubClient>((resolve) => waiting.push({ topics, resolve }));
      const conn = await dial(srv.url);
      return { conn, client: await added };
    },
  };
}

/** texts reads `n` messages from `conn` as text. */
export async function texts(conn: Conn, n: number): Promise<string[]> {
  const out: string[] = [];
  while (out.length < n) out.push((await conn.read()).text());
  return out;
}
