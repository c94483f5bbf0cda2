// npm test's build, both halves at once (one per core): src/ to dist/ (what
// the package ships and the CLI tests run), and src/, test/ and
// docs/examples/ to .build/ (tsconfig.test.json), so that tap runs plain
// JavaScript instead of loading a TypeScript compiler into every test
// process. Both start from an empty folder, so a deleted file never runs from
// a stale copy; the files the examples read beside them (the chat page) are
// copied along.
import { execFile } from "node:child_process";
import { cpSync, readdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");

function compile(project, outDir) {
  rmSync(outDir, { recursive: true, force: true });
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [tsc, "-p", project], (err, stdout, stderr) => {
      process.stdout.write(stdout);
      process.stderr.write(stderr);
      if (err) reject(new Error(`tsc -p ${project} failed`));
      else resolve();
    });
  });
}

try {
  await Promise.all([compile("tsconfig.json", "dist"), compile("tsconfig.test.json", ".build")]);
} catch (err) {
  console.error(err.message);
  process.exit(1);
}
for (const entry of readdirSync("docs/examples", { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || entry.name.endsWith(".ts")) continue;
  const from = join(entry.parentPath ?? entry.path, entry.name);
  cpSync(from, join(".build", from));
}
