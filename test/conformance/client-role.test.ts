/**
 * Conformance: wsconn as the client. A raw `net` server answers the handshake by
 * hand and scripts every case of the table against an echo on a Conn
 * made by `dial`.
 * `CONFORMANCE_CASES=5.,7.1` runs only the cases whose id starts with one of
 * the given prefixes.
 */

import t from "tap";
import { clientHarness } from "./peer.js";
import { caseFilter } from "./runner.js";
import { runTable } from "./table.js";

t.test("conformance table, wsconn as client", async (t) => {
  const harness = await clientHarness();
  t.teardown(() => harness.close());
  const results = await runTable(t, harness, caseFilter(process.env["CONFORMANCE_CASES"]));
  const failed = [...results.values()].reduce((n, r) => n + r.failed, 0);
  t.equal(failed, 0, "no case failed");
});
