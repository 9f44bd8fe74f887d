// Binary files in @synchub/client (CONTRACT section 13) against the fake hub: the straight
// PUT and the blob flow, sha256 by WebCrypto, events with `blob` in the file state, reads
// checked against their sha256, retries with one op_id, refusals as SynchubError.
import "fake-indexeddb/auto";
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { SynchubError, sha256Hex } from "../../dist/index.js";
import { FakeHub } from "./fake-hub.mjs";
import { openOnline, until } from "./fixture.mjs";

const PID = "00000000-0000-4000-8000-0000000000b1";
/** Bytes no text file could hold. */
function image(len, seed = 1) {
  const out = new Uint8Array(len);
  let x = 0x9e3779b9 ^ seed;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
const hex = (bytes) => createHash("sha256").update(bytes).digest("hex");
const bytesOf = async (blob) => new Uint8Array(await blob.arrayBuffer());

test("sha256Hex (WebCrypto) matches node's sha256", async () => {
  const bytes = image(1000);
  assert.equal(await sha256Hex(new Blob([bytes])), hex(bytes));
  assert.equal(await sha256Hex(new ArrayBuffer(0)), hex(new Uint8Array(0)));
});

test("a small binary goes straight as octet-stream with expected_version and op_id, and shows in the file state", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  const changes = [];
  project.on("change", (e) => changes.push(e));
  const png = image(5000);
  const written = await project.writeBinary("public/logo.png", new Blob([png], { type: "image/png" }));
  assert.deepEqual([written.version, written.size, written.sha256], [1, 5000, hex(png)]);
  const put = hub.requests.find((r) => r.method === "PUT");
  assert.equal(put.contentType, "application/octet-stream", "the Blob's own type is not the body's type");
  assert.equal(put.query.get("expected_version"), "0");
  assert.match(put.query.get("op_id"), /^[0-9a-f-]{36}$/);
  assert.deepEqual(put.bytes, png);
  assert.ok(!hub.requests.some((r) => r.path.endsWith("/blobs")), "no blob flow under 2 MiB");
  assert.deepEqual(project.binary("public/logo.png"), { sha256: hex(png), size: 5000, version: 1 });
  assert.equal(project.read("public/logo.png"), undefined, "no text");
  assert.deepEqual(project.paths(), ["public/logo.png"]);
  assert.deepEqual(changes.at(-1), { path: "public/logo.png", binary: { sha256: hex(png), size: 5000 }, origin: "local" });
  // The next write is based on the version this client knows.
  await project.writeBinary("public/logo.png", image(10, 2));
  assert.equal(hub.requests.filter((r) => r.method === "PUT").at(-1).query.get("expected_version"), "1");
  assert.deepEqual(await bytesOf(await project.readBinary("public/logo.png")), image(10, 2));
  client.close();
});

test("a large binary is announced, uploaded to the signed URL without the token, then referenced", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  const big = image(2 * 1024 * 1024 + 5, 3);
  const written = await project.writeBinary("media/intro.mp4", big);
  const announce = hub.requests.find((r) => r.method === "POST" && r.path.endsWith("/blobs"));
  assert.deepEqual(announce.body, { sha256: hex(big), size: big.length });
  const upload = hub.requests.find((r) => r.host === "storage.test");
  assert.equal(upload.method, "PUT");
  assert.equal(upload.token, undefined, "storage never sees the user's token");
  const put = hub.requests.filter((r) => r.method === "PUT" && r.host === "hub.test").at(-1);
  assert.deepEqual(put.body.blob, { sha256: hex(big), size: big.length });
  assert.equal(put.body.expected_version, 0);
  assert.equal(written.version, 1);
  // The same bytes at another path: the hub has them, nothing is uploaded again.
  const uploads = hub.requests.filter((r) => r.host === "storage.test").length;
  await project.writeBinary("media/copy.mp4", big);
  assert.equal(hub.requests.filter((r) => r.host === "storage.test").length, uploads);
  assert.deepEqual(project.paths(), ["media/copy.mp4", "media/intro.mp4"]);
  client.close();
});

test("remote binary events land in the file state; reads are checked against the sha256", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  const remote = [];
  project.on("change", (e) => e.origin === "remote" && remote.push(e));
  const font = image(3000, 4);
  hub.remoteBinary(PID, "fonts/a.woff2", font);
  await until("the event", () => project.binary("fonts/a.woff2") !== undefined);
  assert.deepEqual(remote, [{ path: "fonts/a.woff2", binary: { sha256: hex(font), size: 3000 }, origin: "remote", seq: 1 }]);
  const blob = await project.readBinary("fonts/a.woff2");
  assert.equal(blob.type, "font/woff2");
  assert.deepEqual(await bytesOf(blob), font);
  hub.corrupt = true;
  await assert.rejects(project.readBinary("fonts/a.woff2"), (err) => err instanceof SynchubError && err.code === "hash_mismatch");
  // Text again, then deleted: the state follows.
  hub.remoteWrite(PID, "fonts/a.woff2", "now text");
  await until("text", () => project.read("fonts/a.woff2") === "now text");
  assert.equal(project.binary("fonts/a.woff2"), undefined);
  client.close();
});

test("a reopened project lists binary files from the file list", async () => {
  const hub = new FakeHub();
  hub.remoteBinary(PID, "img/a.png", image(100, 5));
  hub.remoteWrite(PID, "README.md", "# hi");
  const { client, project } = await openOnline(hub, PID);
  await until("listed", () => project.paths().length === 2);
  assert.deepEqual(project.binary("img/a.png"), { sha256: hex(image(100, 5)), size: 100, version: 1 });
  assert.equal(project.read("README.md"), "# hi");
  // A binary file can be deleted like any other.
  project.delete("img/a.png");
  await project.flush();
  assert.deepEqual(project.paths(), ["README.md"]);
  assert.ok(hub.project(PID).files.get("img/a.png").deleted);
  client.close();
});

test("a lost answer and a 503 are retried with the same op_id; a conflict rejects with its code", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  hub.inject.push({ match: (r) => r.method === "PUT", status: 503, body: { error: { code: "unavailable", message: "busy" } } });
  hub.inject.push({ match: (r) => r.method === "PUT", applyFirst: true, throw: true });
  await project.writeBinary("a.bin", image(64));
  const puts = hub.requests.filter((r) => r.method === "PUT");
  assert.equal(puts.length, 3);
  assert.equal(new Set(puts.map((r) => r.query.get("op_id"))).size, 1);
  assert.equal(hub.writes(PID), 1, "applied once");

  hub.remoteBinary(PID, "a.bin", image(64, 9)); // version 2, unseen by the write below
  await assert.rejects(project.writeBinary("a.bin", image(8), { expectedVersion: 1 }), (err) => err instanceof SynchubError && err.code === "version_conflict" && err.status === 409);
  await assert.rejects(project.writeBinary("huge.bin", new Blob([new Uint8Array(50 * 1024 * 1024 + 1)])), (err) => err.code === "payload_too_large");
  client.close();
});

test("binary writes are online-only: offline they reject after a few tries, and unsent text of the path is refused", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  project.write("notes.bin", "draft text");
  await assert.rejects(project.writeBinary("notes.bin", image(4)), /unsent text/);
  await project.flush();
  hub.setOffline(true);
  await assert.rejects(project.writeBinary("other.bin", image(4)), (err) => err.name !== "SynchubError");
  hub.setOffline(false);
  client.close();
});
