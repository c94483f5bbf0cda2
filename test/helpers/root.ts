/**
 * Test helper: the package's root folder, found from this file whether the
 * tests run as TypeScript from test/ or compiled to .build/test/ (npm test).
 */

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

function findRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as { name?: string }).name === "wsconn") return dir;
    if (dirname(dir) === dir) throw new Error(`no wsconn package.json above ${from}`);
  }
}

/** The folder that holds wsconn's package.json. */
export const ROOT = findRoot(dirname(fileURLToPath(import.meta.url)));

/** The extension of the running test files: ".ts" from source, ".js" once compiled. */
export const TEST_EXTENSION = import.meta.url.endsWith(".ts") ? ".ts" : ".js";

