/**
 * Conformance: wsconn as the server. A raw TCP client does the handshake by
 * hand and scripts every case of the table against an `accept`ed echo.
 * `CONFORMANCE_CASES=5.,7.1` runs only the cases whose id starts with one of
 * the given prefixes.
 */

import t from "tap";
import { serverHarness } from "./peer.js";
import { caseFilter } from "./runner.js";
import { runTable } from "./table.js";

t.test("conformance table, wsconn as server", async (t) => {
  const harness = await serverHarness();
  t.teardown(() => harness.close());
  const results = await runTable(t, harness, caseFilter(process.env["CONFORMANCE_CASES"]));
  const failed = [...results.values()].reduce((n, r) => n + r.failed, 0);
  t.equal(failed, 0, "no case failed");
});
