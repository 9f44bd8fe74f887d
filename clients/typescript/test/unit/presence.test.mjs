// Presence in @synchub/client (CONTRACT section 12) against the in-memory fake hub: the
// members list from presence_state and diffs, throttled setPresence, a resend after each
// reconnect, and refused updates that do not break the channel.
import "fake-indexeddb/auto";
import { test } from "node:test";
import assert from "node:assert/strict";
import { PRESENCE_INTERVAL_MS } from "../../dist/index.js";
import { FakeHub } from "./fake-hub.mjs";
import { openOnline, sleep, until } from "./fixture.mjs";

const PID = "00000000-0000-4000-8000-000000000002";
const CHANNEL = `realtime:project:${PID}`;
const member = (client_id, user, meta = null, kind = "user") => ({ client_id, user, kind, meta });
const joinedSocket = (hub) => [...hub.sockets].find((s) => s.joined.size > 0);
const presenceSent = (socket) => socket.sent.filter((f) => f.type === "presence");

test("members come from presence_state and diffs; setPresence is throttled and resent after a reconnect", async () => {
  const hub = new FakeHub();
  const { client, project } = await openOnline(hub, PID);
  const seen = [];
  project.on("presence", (members) => seen.push(members.map((m) => m.client_id)));

  let socket = joinedSocket(hub);
  // Every join is followed by a presence frame: the tab is listed even before setPresence.
  await until("the first presence", () => presenceSent(socket).length === 1);
  assert.equal(presenceSent(socket)[0].meta, null);
  socket.deliver({ type: "presence_state", channel: CHANNEL, client_id: "me", members: [member("me", "alice"), member("c1", "sess", null, "container")] });
  await until("the state", () => project.presence.members().length === 2);
  assert.equal(project.presence.self, "me");
  assert.deepEqual(project.presence.others().map((m) => m.kind), ["container"]);
  socket.deliver({ type: "presence_diff", channel: CHANNEL, joins: [member("b", "bob", { file: "x.ts" })], leaves: [member("c1", "sess", null, "container")] });
  await until("the diff", () => project.presence.members().some((m) => m.user === "bob"));
  assert.deepEqual(project.presence.members().map((m) => m.client_id), ["b", "me"]);
  assert.deepEqual(project.presence.members()[0].meta, { file: "x.ts" });
  // Frames of another channel are not this project's presence.
  socket.deliver({ type: "presence_diff", channel: "realtime:project:other", joins: [member("z", "zed")], leaves: [] });
  await sleep(20);
  assert.equal(project.presence.members().length, 2);
  assert.deepEqual(seen, [["c1", "me"], ["b", "me"]]);

  // Ten updates at once are one send of the latest; the next waits out the interval.
  for (let i = 0; i < 10; i++) project.setPresence({ file: `f${i}.ts` });
  await until("the first send", () => presenceSent(socket).length === 2, 2000);
  const firstAt = Date.now();
  project.setPresence({ file: "g.ts" });
  project.setPresence({ file: "h.ts" });
  await until("the second send", () => presenceSent(socket).length === 3, 2000);
  assert.ok(Date.now() - firstAt >= PRESENCE_INTERVAL_MS - 20, `sent after ${Date.now() - firstAt} ms`);
  await sleep(PRESENCE_INTERVAL_MS * 2);
  assert.deepEqual(presenceSent(socket).map((f) => f.meta?.file ?? null), [null, "f9.ts", "h.ts"]);
  assert.ok(presenceSent(socket).every((f) => f.channel === CHANNEL));
  assert.throws(() => project.setPresence({ pad: "x".repeat(2000) }), RangeError);

  // A refused update (rate or size) leaves the channel working.
  socket.deliver({ type: "error", ref: presenceSent(socket)[2].ref, channel: CHANNEL, error: { code: "rate_limited", message: "m" } });
  await sleep(20);
  assert.equal(project.status, "online");

  // The socket dies: nobody is known present; after the rejoin the latest meta is sent again.
  socket.drop(1006);
  await until("the list emptied", () => project.presence.members().length === 0);
  assert.equal(project.presence.self, undefined);
  await until("a new joined socket", () => joinedSocket(hub) && joinedSocket(hub) !== socket);
  socket = joinedSocket(hub);
  await until("the resend", () => presenceSent(socket).length === 1);
  assert.deepEqual(presenceSent(socket)[0].meta, { file: "h.ts" });
  client.close();
});
