/** The micro-benchmark suite: bench/micro.mjs in its own process. */

import { startChild } from "../lib/ipc.mjs";

export async function runMicro(plan) {
  const child = await startChild("micro.mjs");
  try {
    const rows = await child.call("run", { quick: plan.microQuick }, 180_000);
    console.log(`   ${rows.length} cases`);
    return { rows };
  } finally {
    await child.stop();
  }
}
