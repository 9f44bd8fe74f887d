// End-to-end presence (CONTRACT section 12): two Chromium pages on one project see each
// other in `project.presence` with the meta they set; one page closes and leaves.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setupSuite, status, until } from "./harness.mjs";

const e2e = setupSuite();

/** What a page's `project.presence` lists: [user, meta.file] per member, and its own id. */
const present = (page) =>
  page.evaluate(() => ({
    self: window.project.presence.self,
    members: window.project.presence.members().map((m) => [m.client_id, m.user, m.kind, m.meta?.file ?? null]),
  }));

test("two pages see each other present with their open file; a closed page leaves", async () => {
  const id = await e2e.newProject("presence");
  await e2e.hub.api("PUT", `/v1/projects/${id}/members/bob`, { role: "viewer" });
  const ctxA = await e2e.browser.newContext();
  const ctxB = await e2e.browser.newContext();
  try {
    const a = await e2e.open(ctxA, id, { storage: "memory" });
    const b = await e2e.open(ctxB, id, { storage: "memory", token: () => e2e.hub.token("bob") });
    await until("both online", async () => (await status(a)) === "online" && (await status(b)) === "online");
    await a.evaluate(() => {
      window.presenceEvents = 0;
      window.project.on("presence", () => window.presenceEvents++);
    });
    await a.evaluate(() => window.project.setPresence({ file: "src/a.ts" }));
    await b.evaluate(() => window.project.setPresence({ file: "README.md" }));
    const both = (view) => {
      const files = view.members.map(([, user, kind, file]) => `${user}/${kind}/${file}`).sort();
      return JSON.stringify(files) === JSON.stringify(["alice/user/src/a.ts", "bob/user/README.md"]);
    };
    await until("A sees both", async () => both(await present(a)));
    await until("B sees both", async () => both(await present(b)));
    const viewA = await present(a);
    const viewB = await present(b);
    assert.ok(viewA.self && viewB.self && viewA.self !== viewB.self);
    assert.ok(viewA.members.some(([clientId]) => clientId === viewB.self), "A lists B's socket");
    assert.ok((await a.evaluate(() => window.presenceEvents)) >= 1, "A got change events");

    // B's page closes: it leaves A's list.
    await ctxB.close();
    await until("B left", async () => (await present(a)).members.length === 1);
    assert.deepEqual((await present(a)).members.map(([, user]) => user), ["alice"]);
  } finally {
    await ctxA.close();
    await ctxB.close().catch(() => undefined);
  }
});
