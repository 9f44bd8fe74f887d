// Builds dist/ (the library: one ESM file + declarations) and demo/dist/app.js (the editor's
// bundle the hub embeds; its page, demo/src/index.html, is embedded as it is, so it has no
// built copy). `--check-demo` rebuilds the bundle into a temp dir and fails when the committed
// demo/dist differs (CI: the hub serves what a fresh build gives).
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const common = { bundle: true, format: "esm", target: "es2022", platform: "browser", legalComments: "none", logLevel: "warning" };

async function buildDemo(outDir) {
  mkdirSync(outDir, { recursive: true });
  await build({ ...common, entryPoints: [join(root, "demo/src/app.ts")], outfile: join(outDir, "app.js"), minify: true });
}

if (process.argv.includes("--check-demo")) {
  const tmp = mkdtempSync(join(tmpdir(), "synchub-demo-"));
  await buildDemo(tmp);
  let stale = [];
  for (const f of ["app.js"]) {
    const fresh = readFileSync(join(tmp, f));
    let committed;
    try { committed = readFileSync(join(root, "demo/dist", f)); } catch { committed = Buffer.alloc(0); }
    if (!fresh.equals(committed)) stale.push(f);
  }
  rmSync(tmp, { recursive: true, force: true });
  if (stale.length) {
    console.error(`demo/dist is stale (${stale.join(", ")}): run \`npm run build\` in clients/typescript and commit demo/dist`);
    process.exit(1);
  }
  console.log("demo/dist matches a fresh build");
} else {
  rmSync(join(root, "dist"), { recursive: true, force: true });
  await build({ ...common, entryPoints: [join(root, "src/index.ts")], outfile: join(root, "dist/index.js") });
  await build({ ...common, entryPoints: [join(root, "src/index.ts")], outfile: join(root, "dist/index.min.js"), minify: true });
  execFileSync(join(root, "node_modules/.bin/tsc"), ["-p", root], { stdio: "inherit" });
  await buildDemo(join(root, "demo/dist"));
  const { gzipSync } = await import("node:zlib");
  const min = readFileSync(join(root, "dist/index.min.js"));
  console.log(`dist/index.js built; minified ${min.length} B, minified+gzip ${gzipSync(min, { level: 9 }).length} B`);
}
