// Unit tests of @synchub/client against an in-memory fake hub (test/unit/fake-hub.mjs):
// queue, coalescing, idempotent retries, conflict policies, reconnects, token refresh.
// They run on the built bundle (dist/index.js), i.e. what a page imports.
import "fake-indexeddb/auto";
import { test } from "node:test";
import assert from "node:assert/strict";
import { FakeHub } from "./fake-hub.mjs";
import { FAST_TIMING, openOnline, openProject, sleep, until } from "./fixture.mjs";

const PID = "00000000-0000-4000-8000-000000000001";
const puts = (hub) => hub.requests.filter((r) => r.method === "PUT" && r.path.includes("/files/"));

test("keystrokes are local at once and coalesced into one PUT with expected_version and op_id", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  const changes = [];
  project.on("change", (e) => changes.push(e));
  for (const text of ["h", "he", "hel", "hell", "hello"]) project.write("a.txt", text);
  assert.equal(project.read("a.txt"), "hello");
  assert.equal(changes.length, 5);
  assert.ok(changes.every((c) => c.origin === "local"));
  assert.equal(project.pending, 1);
  await project.flush();
  assert.equal(project.pending, 0);
  assert.equal(puts(hub).length, 1);
  const body = puts(hub)[0].body;
  assert.equal(body.content, "hello");
  assert.equal(body.expected_version, 0);
  assert.match(body.op_id, /^[0-9a-f-]{36}$/);
  project.write("a.txt", "hello!");
  await project.flush();
  assert.equal(puts(hub)[1].body.expected_version, 1);
  assert.equal(hub.project(PID).files.get("a.txt").content, "hello!");
  client.close();
});

test("a write whose answer was lost is resent with the same op_id and applied once", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  hub.inject.push({ match: (r) => r.method === "PUT", applyFirst: true, throw: true });
  project.write("a.txt", "once");
  await project.flush();
  const sent = puts(hub);
  assert.equal(sent.length, 2);
  assert.equal(sent[0].body.op_id, sent[1].body.op_id);
  assert.equal(hub.writes(PID), 1, "the hub applied the write once");
  client.close();
});

test("offline: writes queue up, status says offline, and are sent when the network returns", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  hub.setOffline(true);
  project.write("a.txt", "typed offline");
  project.write("b.txt", "also offline");
  await until("offline", () => project.status === "offline");
  await sleep(100);
  assert.equal(project.pending, 2);
  assert.equal(hub.writes(PID), 0);
  hub.setOffline(false);
  await project.flush();
  await until("online again", () => project.status === "online");
  assert.equal(hub.project(PID).files.get("a.txt").content, "typed offline");
  assert.equal(hub.writes(PID), 2);
  client.close();
});

test("remote events update the local copy and emit remote changes; reconnect resumes with since", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  const remote = [];
  project.on("change", (e) => e.origin === "remote" && remote.push(e));
  hub.remoteWrite(PID, "r.txt", "from elsewhere");
  await until("event", () => project.read("r.txt") === "from elsewhere");
  assert.deepEqual(remote.map((e) => [e.path, e.content, e.seq]), [["r.txt", "from elsewhere", 1]]);
  // The socket dies; meanwhile two more changes happen; the rejoin asks for exactly those.
  for (const s of hub.sockets) s.drop(1006);
  hub.remoteWrite(PID, "r.txt", "v2");
  hub.remoteWrite(PID, "s.txt", "new");
  await until("catch up", () => project.read("s.txt") === "new" && project.read("r.txt") === "v2");
  const joins = [...hub.sockets].flatMap((s) => s.sent).filter((f) => f.type === "join");
  assert.equal(joins.at(-1).since, 1);
  client.close();
});

test("a silent (dead) socket is noticed and replaced", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  const first = [...hub.sockets][0];
  first.silent = true; // no pongs, no frames: a half-open connection
  first.deliver = () => undefined;
  await until("a second socket", () => [...hub.sockets].some((s) => s !== first && s.joined.size > 0));
  client.close();
});

test("a write hanging on a dead connection is aborted when the socket is found dead, and resent once", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  const first = [...hub.sockets][0];
  hub.inject.push({ match: (r) => r.method === "PUT", hang: true });
  first.silent = true;
  first.deliver = () => undefined;
  project.write("a.txt", "through the dead path");
  await project.flush();
  assert.equal(puts(hub).length, 2);
  assert.equal(puts(hub)[0].body.op_id, puts(hub)[1].body.op_id);
  assert.equal(hub.project(PID).files.get("a.txt").content, "through the dead path");
  client.close();
});

test("a write that failed on the network (socket still up) says offline, and online again once answered", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  const seen = [];
  project.on("status", (s) => seen.push(s));
  hub.inject.push({ match: (r) => r.method === "PUT", throw: true });
  project.write("a.txt", "x");
  await project.flush();
  assert.deepEqual(seen, ["offline", "online"]);
  assert.equal(project.status, "online");
  client.close();
});

test("409 with policy server: the server copy wins and the local text is kept in conflicts()", async () => {
  const hub = new FakeHub();
  hub.remoteWrite(PID, "a.txt", "base");
  const { client, project } = await openProject(hub, PID, { conflict: "server" });
  await until("online", () => project.status === "online" && project.read("a.txt") === "base");
  hub.setOffline(true);
  project.write("a.txt", "mine");
  hub.remoteWrite(PID, "a.txt", "theirs");
  const conflicts = [];
  project.on("conflict", (c) => conflicts.push(c));
  hub.setOffline(false);
  await project.flush();
  await until("server text", () => project.read("a.txt") === "theirs");
  assert.equal(hub.project(PID).files.get("a.txt").content, "theirs");
  assert.equal(conflicts.length, 1);
  assert.equal(conflicts[0].local, "mine");
  assert.deepEqual(conflicts[0].server, { content: "theirs", version: 2 });
  assert.equal(project.conflicts()[0].local, "mine");
  client.close();
});

test("409 with policy client: the local text is written over the current version; the server text stays in conflicts()", async () => {
  const hub = new FakeHub();
  hub.remoteWrite(PID, "a.txt", "base");
  const { client, project } = await openProject(hub, PID, { conflict: "client" });
  await until("online", () => project.status === "online" && project.read("a.txt") === "base");
  hub.setOffline(true);
  project.write("a.txt", "mine");
  hub.remoteWrite(PID, "a.txt", "theirs");
  hub.setOffline(false);
  await project.flush();
  assert.equal(hub.project(PID).files.get("a.txt").content, "mine");
  assert.equal(puts(hub).at(-1).body.expected_version, 2);
  assert.equal(project.conflicts()[0].server.content, "theirs");
  assert.equal(project.conflicts()[0].winner, "client");
  await until("local copy", () => project.read("a.txt") === "mine");
  client.close();
});

test("429 waits for Retry-After, then sends the same write", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  hub.inject.push({ match: (r) => r.method === "PUT", status: 429, body: { error: { code: "rate_limited", message: "slow down" } }, headers: { "retry-after": "1" } });
  const started = Date.now();
  project.write("a.txt", "x");
  await project.flush();
  assert.ok(Date.now() - started >= 950, "waited about a second");
  assert.equal(puts(hub).length, 2);
  assert.equal(puts(hub)[0].body.op_id, puts(hub)[1].body.op_id);
  client.close();
});

test("an expired token is refreshed (HTTP 401 and socket 4009) without losing a queued write", async () => {
  const hub = new FakeHub();
  let calls = 0;
  const token = () => (++calls === 1 ? "t1" : "t2");
  const { client, project } = await openOnline(hub, PID, {}, { token });
  hub.validTokens = new Set(["t2"]); // t1 expires
  for (const s of hub.sockets) s.drop(4009);
  project.write("a.txt", "kept");
  await project.flush();
  assert.equal(hub.project(PID).files.get("a.txt").content, "kept");
  await until("online with the new token", () => project.status === "online");
  assert.ok(calls >= 2);
  client.close();
});

test("a hub restart (1012) reconnects at once and resumes with since, not after a backoff", async () => {
  const hub = new FakeHub();
  // A backoff far longer than the wait below: only an immediate reconnect passes.
  const { client, project } = await openOnline(hub, PID, {}, { timing: { ...FAST_TIMING, backoffBaseMs: 60_000, backoffMaxMs: 60_000 } });
  hub.remoteWrite(PID, "a.txt", "one");
  await until("event", () => project.read("a.txt") === "one");
  const first = [...hub.sockets][0];
  first.drop(1012);
  hub.remoteWrite(PID, "a.txt", "two");
  await until("rejoined on a new socket", () => project.read("a.txt") === "two", 5000);
  const joins = [...hub.sockets].flatMap((s) => s.sent).filter((f) => f.type === "join");
  assert.equal(joins.at(-1).since, 1);
  client.close();
});

test("resync_required reloads the file list and resumes from its cursor", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  hub.setOffline(true);
  hub.remoteWrite(PID, "gone.txt", "x");
  hub.remoteWrite(PID, "b.txt", "y");
  hub.project(PID).files.delete("gone.txt");
  hub.retention = 2; // history up to seq 2 trimmed
  hub.setOffline(false);
  await until("resynced", () => project.read("b.txt") === "y");
  assert.equal(project.read("gone.txt"), undefined);
  hub.remoteWrite(PID, "c.txt", "after");
  await until("live after resync", () => project.read("c.txt") === "after");
  client.close();
});

test("storage indexeddb: unsent writes survive a reload and are sent once after it", async () => {
  const hub = new FakeHub();
  const id = "00000000-0000-4000-8000-0000000000ab";
  hub.setOffline(true);
  const first = await openProject(hub, id, { storage: "indexeddb" });
  first.project.write("draft.txt", "typed before the crash");
  await sleep(50);
  first.client.close();
  const second = await openProject(hub, id, { storage: "indexeddb" });
  assert.equal(second.project.read("draft.txt"), "typed before the crash", "shown before the network answers");
  hub.setOffline(false);
  await second.project.flush();
  assert.equal(hub.project(id).files.get("draft.txt").content, "typed before the crash");
  assert.equal(hub.writes(id), 1);
  second.client.close();
});

test("delete is queued like a write; a write after it creates the file anew", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  project.write("a.txt", "A");
  await project.flush();
  project.delete("a.txt");
  assert.deepEqual(project.paths(), []);
  await project.flush();
  assert.equal(hub.project(PID).files.get("a.txt").deleted, true);
  project.write("a.txt", "again");
  await project.flush();
  assert.equal(hub.project(PID).files.get("a.txt").content, "again");
  assert.deepEqual(project.conflicts(), []);
  client.close();
});

test("a write made while a delete of the path is in flight creates the file anew (expected_version 0)", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  project.write("a.txt", "A");
  await project.flush();
  hub.inject.push({ match: (r) => r.method === "DELETE", applyFirst: true, throw: true });
  project.delete("a.txt");
  await until("delete sent", () => hub.requests.some((r) => r.method === "DELETE"));
  project.write("a.txt", "again");
  await project.flush();
  assert.equal(hub.project(PID).files.get("a.txt").content, "again");
  assert.equal(puts(hub).at(-1).body.expected_version, 0);
  assert.deepEqual(project.conflicts(), []);
  client.close();
});

const moves = (hub) => hub.requests.filter((r) => r.method === "POST" && r.path.endsWith("/files:move"));
const fileOps = (hub) => hub.requests.filter((r) => r.path.includes("/files/") && r.method !== "GET");

test("move is local at once and sent as one files:move with expected_version and op_id (one bulk:apply)", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  project.write("a.txt", "A");
  await project.flush();
  const changes = [];
  project.on("change", (e) => changes.push(e));
  project.move("a.txt", "b.txt");
  assert.deepEqual(project.paths(), ["b.txt"]);
  assert.equal(project.read("b.txt"), "A");
  assert.deepEqual(changes.map((c) => [c.path, c.origin, c.deleted ?? false]), [["b.txt", "local", false], ["a.txt", "local", true]]);
  await project.flush();
  assert.equal(moves(hub).length, 1);
  assert.deepEqual({ ...moves(hub)[0].body, op_id: undefined }, { from: "a.txt", to: "b.txt", expected_version: 1, op_id: undefined });
  assert.match(moves(hub)[0].body.op_id, /^[0-9a-f-]{36}$/);
  assert.equal(fileOps(hub).length, 1, "only the first PUT: no write or delete for the move");
  assert.deepEqual(hub.project(PID).events.map((e) => e.event), ["file:update", "bulk:apply"]);
  assert.equal(hub.project(PID).files.get("b.txt").content, "A");
  assert.equal(project.pending, 0);
  await until("the bulk:apply applied", () => project.read("a.txt") === undefined && project.read("b.txt") === "A");
  assert.deepEqual(project.paths(), ["b.txt"]);
  assert.deepEqual(project.conflicts(), []);
  client.close();
});

test("move: unsent text of the old path is carried over and written after the move; text typed at the new path too", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  project.write("a.txt", "A");
  await project.flush();
  hub.setOffline(true);
  project.write("a.txt", "A2");
  project.move("a.txt", "b.txt");
  assert.equal(project.read("b.txt"), "A2");
  project.write("b.txt", "A3");
  hub.setOffline(false);
  await project.flush();
  assert.equal(moves(hub).length, 1);
  const after = fileOps(hub).slice(1);
  assert.equal(after.length, 1, "one write of the newest text, after the move");
  assert.equal(after[0].path.endsWith("/files/b.txt"), true);
  assert.equal(after[0].body.content, "A3");
  assert.equal(after[0].body.expected_version, 1, "over the version the move created");
  assert.equal(hub.project(PID).files.get("a.txt").deleted, true);
  assert.equal(hub.project(PID).files.get("b.txt").content, "A3");
  assert.equal(hub.writes(PID), 3);
  assert.deepEqual(project.conflicts(), []);
  client.close();
});

test("move: a write in flight to the old path is answered before the move is sent", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  project.write("a.txt", "A");
  await project.flush();
  // The write's answer is lost: it is resent (same op_id) before the move goes out.
  hub.inject.push({ match: (r) => r.method === "PUT", applyFirst: true, throw: true });
  project.write("a.txt", "A2");
  await until("write in flight", () => hub.requests.some((r) => r.method === "PUT" && r.body.content === "A2"));
  project.move("a.txt", "b.txt");
  await project.flush();
  assert.equal(moves(hub).length, 1);
  assert.equal(moves(hub)[0].body.expected_version, 2);
  assert.equal(hub.project(PID).files.get("b.txt").content, "A2");
  assert.equal(hub.writes(PID), 3, "A, A2 once, the move");
  client.close();
});

test("move whose answer was lost is resent with the same op_id and applied once", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  project.write("a.txt", "A");
  await project.flush();
  hub.inject.push({ match: (r) => r.path.endsWith("/files:move"), applyFirst: true, throw: true });
  project.move("a.txt", "b.txt");
  await project.flush();
  assert.equal(moves(hub).length, 2);
  assert.equal(moves(hub)[0].body.op_id, moves(hub)[1].body.op_id);
  assert.equal(hub.writes(PID), 2);
  client.close();
});

test("move: a change of the old path before the move is sent replaces the move (a write and the new text)", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  project.write("a.txt", "A");
  await project.flush();
  project.move("a.txt", "b.txt");
  project.write("a.txt", "new a");
  assert.deepEqual(project.paths(), ["a.txt", "b.txt"]);
  await project.flush();
  assert.equal(moves(hub).length, 0);
  assert.equal(hub.project(PID).files.get("a.txt").content, "new a");
  assert.equal(hub.project(PID).files.get("b.txt").content, "A");
  client.close();
});

test("move: a file at the old path written after the move was sent is created anew (expected_version 0)", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  project.write("a.txt", "A");
  await project.flush();
  hub.inject.push({ match: (r) => r.path.endsWith("/files:move"), applyFirst: true, throw: true });
  project.move("a.txt", "b.txt");
  await until("move sent", () => moves(hub).length >= 1);
  project.write("a.txt", "fresh");
  await project.flush();
  assert.equal(hub.project(PID).files.get("a.txt").content, "fresh");
  assert.equal(fileOps(hub).at(-1).body.expected_version, 0);
  assert.equal(hub.project(PID).files.get("b.txt").content, "A");
  assert.deepEqual(project.conflicts(), []);
  client.close();
});

test("move of a file the hub never had is a write at the new path", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  hub.setOffline(true);
  project.write("a.txt", "A");
  project.move("a.txt", "b.txt");
  project.write("c.txt", "C");
  assert.throws(() => project.move("b.txt", "c.txt"), /exists/);
  hub.setOffline(false);
  await project.flush();
  assert.equal(moves(hub).length, 0);
  assert.equal(hub.project(PID).files.get("b.txt").content, "A");
  assert.equal(hub.project(PID).files.get("a.txt"), undefined);
  client.close();
});

for (const policy of ["server", "client"]) {
  test(`move refused with 409 (old path changed meanwhile), policy ${policy}: split into write + delete, no text lost`, async () => {
    const hub = new FakeHub();
    hub.remoteWrite(PID, "a.txt", "A");
    const { client, project } = await openProject(hub, PID, { conflict: policy });
    await until("online", () => project.read("a.txt") === "A");
    hub.setOffline(true);
    project.move("a.txt", "b.txt");
    hub.remoteWrite(PID, "a.txt", "theirs");
    hub.setOffline(false);
    await project.flush();
    assert.equal(moves(hub).length, 1);
    assert.equal(hub.project(PID).files.get("b.txt").content, "A");
    const a = hub.project(PID).files.get("a.txt");
    if (policy === "server") {
      assert.equal(a.content, "theirs");
      await until("server copy back", () => project.read("a.txt") === "theirs");
    } else {
      assert.equal(a.deleted, true);
      await until("local delete stands", () => project.read("a.txt") === undefined);
    }
    assert.equal(project.read("b.txt"), "A");
    assert.deepEqual(project.conflicts().map((c) => [c.path, c.local, c.server.content, c.winner]), [["a.txt", null, "theirs", policy]]);
    client.close();
  });

  test(`move refused with 409 (new path exists), policy ${policy}: the moved text wins or stays in conflicts()`, async () => {
    const hub = new FakeHub();
    hub.remoteWrite(PID, "a.txt", "A");
    const { client, project } = await openProject(hub, PID, { conflict: policy });
    await until("online", () => project.read("a.txt") === "A");
    hub.setOffline(true);
    project.move("a.txt", "b.txt");
    hub.remoteWrite(PID, "b.txt", "their b");
    hub.setOffline(false);
    await project.flush();
    assert.equal(hub.project(PID).files.get("a.txt").deleted, true);
    const b = policy === "server" ? "their b" : "A";
    assert.equal(hub.project(PID).files.get("b.txt").content, b);
    await until("b settled", () => project.read("b.txt") === b);
    assert.deepEqual(project.conflicts().map((c) => [c.path, c.local, c.server.content, c.winner]), [["b.txt", "A", "their b", policy]]);
    client.close();
  });
}

test("move refused for good (invalid target): the old path stays and the text is kept in conflicts()", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  project.write("a.txt", "A");
  await project.flush();
  hub.inject.push({ match: (r) => r.path.endsWith("/files:move"), status: 400, body: { error: { code: "invalid_path", message: "bad" } } });
  project.move("a.txt", "bad/../b.txt");
  await project.flush();
  assert.deepEqual(project.paths(), ["a.txt"]);
  assert.equal(project.conflicts()[0].path, "bad/../b.txt");
  assert.equal(project.conflicts()[0].local, "A");
  assert.equal(project.conflicts()[0].error.code, "invalid_path");
  assert.equal(hub.writes(PID), 1);
  client.close();
});

test("storage indexeddb: a queued move survives a reload and is sent once after it", async () => {
  const hub = new FakeHub();
  const id = "00000000-0000-4000-8000-0000000000a7";
  const first = await openProject(hub, id, { storage: "indexeddb" });
  first.project.write("a.txt", "A");
  await first.project.flush();
  hub.setOffline(true);
  first.project.move("a.txt", "b.txt");
  await sleep(30);
  first.client.close();
  hub.setOffline(false);
  const second = await openProject(hub, id, { storage: "indexeddb" });
  assert.deepEqual(second.project.paths(), ["b.txt"]);
  await second.project.flush();
  assert.equal(new Set(moves(hub).map((r) => r.body.op_id)).size, 1, "one move, however often it was sent");
  assert.equal(hub.writes(id), 2);
  assert.equal(hub.project(id).files.get("b.txt").content, "A");
  second.client.close();
});

test("a write the hub refuses for good is kept in conflicts() with the error", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  hub.inject.push({ match: (r) => r.method === "PUT", status: 400, body: { error: { code: "invalid_path", message: "bad" } } });
  project.write("bad.txt", "keep me");
  await project.flush();
  assert.equal(project.conflicts()[0].local, "keep me");
  assert.equal(project.conflicts()[0].error.code, "invalid_path");
  client.close();
});

test("editor state: set is local at once, saved debounced with base_revision; a 409 takes the server copy", async () => {
  const hub = new FakeHub();
  const { client, project } = await openProject(hub, PID);
  project.editorState.set({ open: ["a"] });
  project.editorState.set({ open: ["a", "b"] });
  assert.deepEqual(project.editorState.get(), { open: ["a", "b"] });
  await until("saved", () => hub.project(PID).editorState.revision === 1);
  assert.equal(hub.requests.filter((r) => r.path.endsWith("/editor-state") && r.method === "PUT").length, 1);
  hub.project(PID).editorState = { state: { open: ["server"] }, revision: 5, updated_at: "" };
  project.editorState.set({ open: ["stale"] });
  await until("server wins", () => JSON.stringify(project.editorState.get()) === '{"open":["server"]}');
  client.close();
});

test("history lists a file's versions newest first and restore brings one back as a remote change", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  for (const text of ["one", "two", "three"]) {
    project.write("a.txt", text);
    await project.flush();
  }
  const history = await project.history("a.txt");
  assert.deepEqual(history.versions.map((v) => v.version), [3, 2, 1]);
  assert.equal(history.next, null);
  const page = await project.history("a.txt", { limit: 2 });
  assert.equal(page.next, 2);
  assert.deepEqual((await project.history("a.txt", { before: 2 })).versions.map((v) => v.version), [1]);
  assert.equal((await project.readVersion("a.txt", 1)).content, "one");
  const changes = [];
  project.on("change", (e) => changes.push(e));
  assert.equal(await project.restore("a.txt", 1), 4);
  await until("the restored text", () => project.read("a.txt") === "one");
  assert.ok(changes.some((c) => c.origin === "remote" && c.content === "one"));
  const restores = hub.requests.filter((r) => r.path.endsWith("/files:restore"));
  assert.equal(restores.length, 1);
  assert.match(restores[0].body.op_id, /^[0-9a-f-]{36}$/);
  await assert.rejects(project.restore("a.txt", 99), (err) => err.code === "not_found");
  client.close();
});
