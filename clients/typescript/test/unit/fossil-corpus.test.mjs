// Interop of the npm `fossil-delta` package with the hub's Rust implementation on the shared
// corpus protocol/testdata/fossil/<case>/ (base, target, rust.delta, js.delta): this side
// applies the Rust deltas and checks that js.delta is what the package creates. The Rust
// suite (protocol/src/delta.rs, `corpus`) applies js.delta. UPDATE_CORPUS=1 rewrites js.delta.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createDelta, applyDelta } from "fossil-delta";

const corpus = join(dirname(fileURLToPath(import.meta.url)), "../../../../protocol/testdata/fossil");

/** The generated `large-one-char` case (see its README): 1 MiB, one byte changed. */
function largeCase() {
  const size = 1 << 20;
  const parts = [];
  let length = 0;
  for (let i = 0; length < size; i++) {
    const line = `${String(i).padStart(7, "0")} the quick brown fox jumps over the lazy dog\n`;
    parts.push(line);
    length += line.length;
  }
  const base = Buffer.from(parts.join("")).subarray(0, size);
  const target = Buffer.from(base);
  target[size / 2] = "X".charCodeAt(0);
  return [new Uint8Array(base), new Uint8Array(target)];
}

test("the npm package and the Rust crate apply each other's deltas on the shared corpus", () => {
  const cases = readdirSync(corpus).sort();
  assert.ok(cases.length >= 10, `corpus missing at ${corpus}`);
  for (const name of cases) {
    const dir = join(corpus, name);
    const [base, target] = existsSync(join(dir, "base"))
      ? [new Uint8Array(readFileSync(join(dir, "base"))), new Uint8Array(readFileSync(join(dir, "target")))]
      : largeCase();
    const ours = new Uint8Array(createDelta(base, target));
    if (process.env.UPDATE_CORPUS) writeFileSync(join(dir, "js.delta"), ours);
    assert.deepEqual(new Uint8Array(readFileSync(join(dir, "js.delta"))), ours, `${name}: js.delta is stale`);
    assert.deepEqual(new Uint8Array(applyDelta(base, ours)), target, `${name}: own delta`);
    if (process.env.UPDATE_CORPUS && !existsSync(join(dir, "rust.delta"))) continue;
    const rust = new Uint8Array(readFileSync(join(dir, "rust.delta")));
    assert.deepEqual(new Uint8Array(applyDelta(base, rust)), target, `${name}: the Rust crate's delta`);
  }
});
