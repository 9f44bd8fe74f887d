// Delta payloads (CONTRACT section 12) in @synchub/client, against the fake hub: incoming
// deltas applied to the known copy (checked by content_hash, else a full read over HTTP),
// and autosave sending a PATCH with a delta against the last acknowledged version.
import "fake-indexeddb/auto";
import { test } from "node:test";
import assert from "node:assert/strict";
import { FakeHub } from "./fake-hub.mjs";
import { openOnline, until } from "./fixture.mjs";

const PID = "00000000-0000-4000-8000-000000000002";
const big = (n) => Array.from({ length: n }, (_, i) => `export const line${i} = ${i}; // some code\n`).join("");
const edit = (text, at, ch) => text.slice(0, at) + ch + text.slice(at + 1);
const fileGets = (hub, path) => hub.requests.filter((r) => r.method === "GET" && r.path.endsWith(`/files/${path}`));

test("incoming deltas apply to the known copy; a corrupted or unknown-base delta falls back to a full read", async () => {
  const hub = new FakeHub();
  hub.deltas = true;
  const { client, project } = await openOnline(hub, PID);
  const v1 = big(500);
  hub.remoteWrite(PID, "big.ts", v1);
  await until("v1", () => project.read("big.ts") === v1);
  const v2 = edit(v1, 5000, "#");
  hub.remoteWrite(PID, "big.ts", v2);
  await until("v2", () => project.read("big.ts") === v2);
  assert.equal(fileGets(hub, "big.ts").length, 0, "applied from the delta");

  // A delta whose result does not have the event's hash: the file is read instead.
  hub.corruptDeltas = true;
  const v3 = edit(v2, 9000, "@");
  hub.remoteWrite(PID, "big.ts", v3);
  await until("v3", () => project.read("big.ts") === v3);
  assert.equal(fileGets(hub, "big.ts").length, 1);
  assert.equal(project.deltaFallbacks, 1);
  hub.corruptDeltas = false;

  // A delta against a base this client does not hold (version 1; it has 3): read instead.
  const v4 = edit(v3, 100, "!");
  const sockets = [...hub.sockets];
  hub.sockets.clear();
  const { body } = hub.remoteWrite(PID, "big.ts", v4); // committed, not yet delivered
  for (const s of sockets) hub.sockets.add(s);
  const stored = hub.project(PID).events.at(-1);
  const payload = { ...stored.payload, base_version: 1, base_hash: "unknown", delta: "MQo=" };
  delete payload.content;
  for (const s of sockets) s.deliver({ ...stored, seq: body.seq, payload });
  await until("v4", () => project.read("big.ts") === v4);
  assert.equal(fileGets(hub, "big.ts").length, 2);
  assert.equal(project.read("big.ts"), hub.project(PID).files.get("big.ts").content, "the final copy is the hub's");
  client.close();
});

test("autosave sends a delta against the last acknowledged version when it is smaller than half", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  const v1 = big(2000);
  project.write("big.ts", v1);
  await project.flush();
  const v2 = edit(v1, 40_000, "#");
  project.write("big.ts", v2);
  await project.flush();
  const writes = hub.requests.filter((r) => r.path.endsWith("/files/big.ts") && r.method !== "GET");
  assert.deepEqual(writes.map((r) => r.method), ["PUT", "PATCH"]);
  const patch = writes[1].body;
  assert.equal(patch.base_version, 1);
  assert.ok(JSON.stringify(patch).length < 1024, `PATCH body ${JSON.stringify(patch).length} bytes`);
  assert.equal(patch.content, undefined);
  assert.equal(hub.project(PID).files.get("big.ts").content, v2);
  // A rewrite: the delta is not smaller than half, so the content goes.
  project.write("big.ts", "tiny\n");
  await project.flush();
  assert.equal(hub.requests.filter((r) => r.path.endsWith("/files/big.ts")).at(-1).method, "PUT");
  assert.equal(hub.project(PID).files.get("big.ts").content, "tiny\n");
  client.close();
});

test("a delta the hub refuses (400) is resent in full with the same op_id", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  const v1 = big(500);
  project.write("a.ts", v1);
  await project.flush();
  hub.inject.push({ match: (r) => r.method === "PATCH", status: 400, body: { error: { code: "invalid_request", message: "delta: bad checksum" } } });
  const v2 = edit(v1, 300, "#");
  project.write("a.ts", v2);
  await project.flush();
  const writes = hub.requests.filter((r) => r.path.endsWith("/files/a.ts") && r.method !== "GET");
  assert.deepEqual(writes.map((r) => r.method), ["PUT", "PATCH", "PUT"]);
  assert.equal(writes[2].body.op_id, writes[1].body.op_id);
  assert.equal(writes[2].body.content, v2);
  assert.equal(hub.project(PID).files.get("a.ts").content, v2);
  assert.equal(project.conflicts().length, 0);
  client.close();
});
