// End-to-end: @synchub/client in Chromium against a real `synchub dev`, the page on another
// origin. Run with `npm run test:e2e` (builds the hub once; needs /usr/bin/chromium).
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { FAST_TIMING, Hub, attach, flush, hubEvents, hubFile, openProject, read, setupSuite, sleep, startBlackholeProxy, status, until, write } from "./harness.mjs";

const e2e = setupSuite();

/** The hub's writes of one path, in order: [content, op_id] per applied event. */
async function appliedWrites(projectId, path) {
  return (await hubEvents(e2e.hub, projectId)).filter((e) => e.payload.file_path === path).map((e) => [e.payload.content, e.payload.op_id]);
}

test("two pages see each other's edits", async () => {
  const id = await e2e.newProject("two pages");
  const ctxA = await e2e.browser.newContext();
  const ctxB = await e2e.browser.newContext();
  try {
    const a = await e2e.open(ctxA, id);
    const b = await e2e.open(ctxB, id);
    await until("both online", async () => (await status(a)) === "online" && (await status(b)) === "online");
    await write(a, "src/a.ts", "export const a = 1;");
    await until("B sees A's edit", async () => (await read(b, "src/a.ts")) === "export const a = 1;");
    await write(b, "src/a.ts", "export const a = 2;");
    await write(b, "notes.md", "# from B");
    await until("A sees B's edits", async () => (await read(a, "src/a.ts")) === "export const a = 2;" && (await read(a, "notes.md")) === "# from B");
    const remote = await a.evaluate(() => window.changes.filter((c) => c.origin === "remote").map((c) => c.path));
    assert.ok(remote.includes("notes.md"));
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});

test("offline: keeps typing, reloaded offline still shows the text, then the hub converges with nothing lost or sent twice", async () => {
  const id = await e2e.newProject("offline reload");
  const ctx = await e2e.browser.newContext();
  try {
    const page = await e2e.open(ctx, id, { path: "/?sw=1" });
    await until("online", async () => (await status(page)) === "online");
    await write(page, "a.txt", "online text");
    await flush(page);
    await ctx.setOffline(true);
    let text = "online text";
    for (let i = 0; i < 20; i++) {
      text += ` word${i}`;
      await write(page, "a.txt", text);
    }
    await write(page, "b.txt", "new file offline");
    await until("offline status", async () => (await status(page)) === "offline");
    await sleep(300); // let the debounce fire and fail against the offline network
    await page.reload();
    await attach(page, e2e.hub, id);
    assert.equal(await read(page, "a.txt"), text, "the reloaded page shows the offline text before the network answers");
    assert.equal(await read(page, "b.txt"), "new file offline");
    assert.equal((await hubFile(e2e.hub, id, "a.txt")).content, "online text", "nothing reached the hub while offline");
    await ctx.setOffline(false);
    await page.evaluate(() => window.dispatchEvent(new Event("online")));
    await flush(page);
    assert.equal((await hubFile(e2e.hub, id, "a.txt")).content, text);
    assert.equal((await hubFile(e2e.hub, id, "b.txt")).content, "new file offline");
    const writes = await appliedWrites(id, "a.txt");
    assert.equal(writes[0][0], "online text");
    assert.equal(writes.at(-1)[0], text);
    assert.ok(writes.length <= 3, `offline typing was coalesced: ${writes.length} writes`);
    assert.equal(new Set(writes.map(([c]) => c)).size, writes.length, "no text applied twice");
    assert.equal(new Set(writes.map(([, op]) => op)).size, writes.length, "no op_id applied twice");
  } finally {
    await ctx.close();
  }
});

test("two tabs of one project, offline then online, send each queued write once", async () => {
  const id = await e2e.newProject("two tabs");
  const ctx = await e2e.browser.newContext();
  try {
    const t1 = await e2e.open(ctx, id);
    const t2 = await e2e.open(ctx, id);
    await until("both online", async () => (await status(t1)) === "online" && (await status(t2)) === "online");
    const puts = [];
    for (const p of [t1, t2]) p.on("requestfinished", (r) => r.method() === "PUT" && r.url().includes("/files/") && puts.push(r.url()));
    await ctx.setOffline(true);
    await write(t1, "one.txt", "from tab 1");
    await write(t2, "two.txt", "from tab 2");
    await until("tab 2 sees tab 1's draft", async () => (await read(t2, "one.txt")) === "from tab 1");
    await until("tab 1 sees tab 2's draft", async () => (await read(t1, "two.txt")) === "from tab 2");
    await sleep(500);
    await ctx.setOffline(false);
    for (const p of [t1, t2]) await p.evaluate(() => window.dispatchEvent(new Event("online")));
    await flush(t1);
    await flush(t2);
    await sleep(500); // a second sender, if there were one, would show up now
    assert.deepEqual((await appliedWrites(id, "one.txt")).map(([c]) => c), ["from tab 1"]);
    assert.deepEqual((await appliedWrites(id, "two.txt")).map(([c]) => c), ["from tab 2"]);
    assert.equal(puts.length, 2, `each write was sent once: ${puts.join(", ")}`);
  } finally {
    await ctx.close();
  }
});

test("the sending tab closes with writes queued: another tab of the project takes over and sends each once", async () => {
  const id = await e2e.newProject("leader handover");
  const ctx = await e2e.browser.newContext();
  try {
    const leader = await e2e.open(ctx, id);
    const other = await e2e.open(ctx, id);
    await until("both online", async () => (await status(leader)) === "online" && (await status(other)) === "online");
    const puts = [];
    other.on("requestfinished", (r) => r.method() === "PUT" && r.url().includes("/files/") && puts.push(r.url()));
    await ctx.setOffline(true);
    await write(leader, "queued.txt", "written in the tab that goes away");
    await write(other, "mine.txt", "written in the tab that stays");
    await until("the other tab sees the draft", async () => (await read(other, "queued.txt")) === "written in the tab that goes away");
    await sleep(300); // the leader has tried (and failed) to send: its write is stored in flight
    await leader.close();
    await ctx.setOffline(false);
    await other.evaluate(() => window.dispatchEvent(new Event("online")));
    await flush(other);
    assert.deepEqual((await appliedWrites(id, "queued.txt")).map(([c]) => c), ["written in the tab that goes away"]);
    assert.deepEqual((await appliedWrites(id, "mine.txt")).map(([c]) => c), ["written in the tab that stays"]);
    assert.equal(puts.length, 2, "the remaining tab sent each write once");
  } finally {
    await ctx.close();
  }
});

for (const policy of ["server", "client"]) {
  test(`a 409 under policy ${policy} keeps both texts reachable`, async () => {
    const id = await e2e.newProject(`conflict ${policy}`);
    await e2e.hub.api("PUT", `/v1/projects/${id}/files/doc.txt`, { content: "base" });
    const ctx = await e2e.browser.newContext();
    try {
      const page = await e2e.open(ctx, id, { conflict: policy });
      await until("base loaded", async () => (await read(page, "doc.txt")) === "base");
      await ctx.setOffline(true);
      await write(page, "doc.txt", "mine");
      await e2e.hub.api("PUT", `/v1/projects/${id}/files/doc.txt`, { content: "theirs" });
      await ctx.setOffline(false);
      await page.evaluate(() => window.dispatchEvent(new Event("online")));
      await flush(page);
      const conflicts = await page.evaluate(() => window.project.conflicts());
      assert.equal(conflicts.length, 1);
      assert.equal(conflicts[0].local, "mine");
      assert.equal(conflicts[0].server.content, "theirs");
      const onHub = (await hubFile(e2e.hub, id, "doc.txt")).content;
      if (policy === "server") {
        assert.equal(onHub, "theirs");
        await until("page shows the server copy", async () => (await read(page, "doc.txt")) === "theirs");
      } else {
        assert.equal(onHub, "mine");
        assert.equal(await read(page, "doc.txt"), "mine");
      }
    } finally {
      await ctx.close();
    }
  });
}

/** Types for ~6 s (tokens live 3 s) and returns the text typed. */
async function typeSlowly(page, path) {
  let text = "";
  for (let i = 0; i < 40; i++) {
    text += `${i} `;
    await write(page, path, text);
    await sleep(150);
  }
  return text;
}

test("a token expiring (4009) mid-typing is refreshed without losing a write", async () => {
  const id = await e2e.newProject("token expiry");
  const ctx = await e2e.browser.newContext();
  try {
    // The token source hands out a new token only once the old one has expired, so an early
    // refresh cannot help: the hub closes the socket with 4009 while the user types.
    let current = { token: e2e.hub.token("alice", 3), exp: Date.now() + 3000 };
    let minted = 1;
    const token = () => {
      if (Date.now() >= current.exp) {
        current = { token: e2e.hub.token("alice", 3), exp: Date.now() + 3000 };
        minted++;
      }
      return current.token;
    };
    const page = await e2e.open(ctx, id, { token });
    let sockets = 0;
    page.on("websocket", () => sockets++);
    await until("online", async () => (await status(page)) === "online");
    const text = await typeSlowly(page, "t.txt");
    await flush(page);
    assert.equal((await hubFile(e2e.hub, id, "t.txt")).content, text);
    assert.ok(minted >= 2, `a fresh token was fetched (${minted})`);
    assert.ok(sockets >= 1, `the socket was reopened after 4009 (${sockets} new sockets)`);
    await until("online again", async () => (await status(page)) === "online");
  } finally {
    await ctx.close();
  }
});

test("a token is refreshed before expiry on the open socket (authed.expires_at): no reconnect", async () => {
  const id = await e2e.newProject("token refresh");
  const ctx = await e2e.browser.newContext();
  let minted = 0;
  try {
    const page = await e2e.open(ctx, id, { token: () => (minted++, e2e.hub.token("alice", 3)) });
    await until("online", async () => (await status(page)) === "online");
    let sockets = 0;
    page.on("websocket", () => sockets++);
    const text = await typeSlowly(page, "t.txt");
    await flush(page);
    assert.equal((await hubFile(e2e.hub, id, "t.txt")).content, text);
    assert.ok(minted >= 3, `the token function was called again before each expiry (${minted} calls)`);
    assert.equal(sockets, 0, "the socket stayed open across refreshes");
    assert.equal(await status(page), "online");
  } finally {
    await ctx.close();
  }
});

test("the hub killed and restarted mid-typing: nothing lost", async () => {
  const id = await e2e.newProject("hub restart");
  const ctx = await e2e.browser.newContext();
  try {
    const page = await e2e.open(ctx, id);
    await until("online", async () => (await status(page)) === "online");
    let text = "";
    for (let i = 0; i < 10; i++) {
      text += `a${i} `;
      await write(page, "k.txt", text);
      await sleep(50);
    }
    await e2e.hub.kill();
    for (let i = 0; i < 10; i++) {
      text += `b${i} `;
      await write(page, "k.txt", text);
      await sleep(50);
    }
    await until("offline noticed", async () => (await status(page)) === "offline");
    await e2e.hub.start();
    for (let i = 0; i < 5; i++) {
      text += `c${i} `;
      await write(page, "k.txt", text);
    }
    await flush(page);
    assert.equal((await hubFile(e2e.hub, id, "k.txt")).content, text);
    await until("online again", async () => (await status(page)) === "online", 30_000);
    const ops = (await appliedWrites(id, "k.txt")).map(([, op]) => op);
    assert.equal(new Set(ops).size, ops.length, "no write applied twice");
  } finally {
    await ctx.close();
  }
});

test("resync_required after retention: the file list is reloaded, local drafts survive, nothing missed", async () => {
  // A hub of its own whose log keeps events for 1 s (pruned at start, then every minute).
  const short = new Hub(e2e.pages.origin, { SYNCHUB_EVENT_RETENTION_SECS: "1" });
  const ctx = await e2e.browser.newContext();
  try {
    await short.start();
    const id = randomUUID();
    await short.api("POST", "/v1/projects", { id, name: "resync" });
    const page = await openProject(ctx, e2e.pages.origin, short, id);
    await write(page, "a.txt", "v1");
    await flush(page);
    await until("online", async () => (await status(page)) === "online");
    await ctx.setOffline(true);
    await write(page, "draft.txt", "typed while away");
    await short.api("PUT", `/v1/projects/${id}/files/a.txt`, { content: "v2" });
    await short.api("PUT", `/v1/projects/${id}/files/b.txt`, { content: "new elsewhere" });
    await short.api("PUT", `/v1/projects/${id}/files/gone.txt`, { content: "x" });
    await short.api("DELETE", `/v1/projects/${id}/files/gone.txt`);
    await sleep(1500);
    await short.restart();
    const token = short.token();
    await until("history trimmed", async () => (await fetch(`${short.url}/v1/projects/${id}/events?since=1`, { headers: { authorization: `Bearer ${token}` } })).status === 410);
    const lists = [];
    page.on("request", (r) => r.url().includes("/files?include_content=true") && lists.push(r.url()));
    await ctx.setOffline(false);
    await page.evaluate(() => window.dispatchEvent(new Event("online")));
    // Chromium's offline mode may let the open socket deliver some of the events above before
    // it drops, so a.txt and b.txt can be current before the reload: wait for the reload too.
    await until("resynced", async () => lists.length >= 1 && (await read(page, "gone.txt")) === undefined
      && (await read(page, "b.txt")) === "new elsewhere" && (await read(page, "a.txt")) === "v2");
    await flush(page);
    assert.equal((await hubFile(short, id, "draft.txt")).content, "typed while away");
    await short.api("PUT", `/v1/projects/${id}/files/after.txt`, { content: "live" });
    await until("live events after the resync", async () => (await read(page, "after.txt")) === "live");
  } finally {
    await ctx.close();
    await short.stop();
  }
});

test("move: A renames a file with unsent edits; B sees it moved in one change, the edits land after it", async () => {
  const id = await e2e.newProject("move");
  const ctxA = await e2e.browser.newContext();
  const ctxB = await e2e.browser.newContext();
  try {
    const a = await e2e.open(ctxA, id);
    const b = await e2e.open(ctxB, id);
    await until("both online", async () => (await status(a)) === "online" && (await status(b)) === "online");
    await write(a, "src/old.ts", "export const x = 1;");
    await flush(a);
    await until("B has the file", async () => (await read(b, "src/old.ts")) === "export const x = 1;");
    await b.evaluate(() => (window.changes = []));
    await a.evaluate(() => {
      window.project.write("src/old.ts", "export const x = 2;"); // not sent yet: carried over
      window.project.move("src/old.ts", "src/new.ts");
    });
    assert.deepEqual(await a.evaluate(() => window.project.paths()), ["src/new.ts"], await a.evaluate(() => JSON.stringify([...window.project.drafts, ...window.project.known])));
    await flush(a);
    await until("B sees the move and the edit", async () => (await read(b, "src/new.ts")) === "export const x = 2;" && (await read(b, "src/old.ts")) === undefined);
    const events = (await hubEvents(e2e.hub, id)).slice(1);
    assert.deepEqual(events.map((e) => e.event), ["bulk:apply", "file:update"], "one atomic move, then the edit");
    assert.deepEqual(events[0].payload.files.map((f) => [f.file_path, f.content]), [["src/new.ts", "export const x = 1;"]]);
    assert.deepEqual(events[0].payload.deletes.map((d) => d.file_path), ["src/old.ts"]);
    assert.match(events[0].payload.op_id, /^[0-9a-f-]{36}$/);
    const seen = await b.evaluate(() => window.changes.filter((c) => c.origin === "remote").map((c) => [c.path, c.deleted ?? false, c.seq]));
    const moveSeq = events[0].seq;
    assert.deepEqual(seen.filter(([, , seq]) => seq === moveSeq).map(([p, d]) => [p, d]).sort(), [["src/new.ts", false], ["src/old.ts", true]], "B got both halves from one event");
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});

test("429: typing fast into a rate-limited hub, every write lands once, after each Retry-After", async () => {
  const limited = new Hub(e2e.pages.origin, { SYNCHUB_WRITE_RATE: "1", SYNCHUB_WRITE_BURST: "2" });
  await limited.start();
  const ctx = await e2e.browser.newContext();
  try {
    const id = randomUUID();
    await limited.api("POST", "/v1/projects", { id, name: "rate limited" });
    const page = await openProject(ctx, e2e.pages.origin, limited, id);
    await until("online", async () => (await status(page)) === "online");
    const log = []; // [time, method, url, status, retry-after]
    page.on("response", (r) => {
      if (r.url().includes("/files/")) log.push([Date.now(), r.request().method(), r.url(), r.status(), r.headers()["retry-after"]]);
    });
    const files = 6;
    for (let i = 0; i < files; i++) await write(page, `f${i}.txt`, `text ${i}`);
    await until("all sent", async () => (await page.evaluate(() => window.project.pending)) === 0, 60_000);
    await flush(page);
    for (let i = 0; i < files; i++) assert.equal((await hubFile(limited, id, `f${i}.txt`)).content, `text ${i}`);
    const events = (await limited.api("GET", `/v1/projects/${id}/events?since=0&limit=100`)).events;
    assert.equal(events.length, files, "each write applied once");
    const limitedAnswers = log.filter(([, , , s]) => s === 429);
    assert.ok(limitedAnswers.length >= 1, "the hub did rate-limit the client");
    for (const [at, , , , retryAfter] of limitedAnswers) {
      assert.ok(Number(retryAfter) >= 1, "Retry-After sent");
      const next = log.find(([t]) => t > at);
      // The next request goes out no earlier than Retry-After (response events are seen a bit
      // after the request left, so allow 200 ms of slack).
      assert.ok(!next || next[0] - at >= Number(retryAfter) * 1000 - 200, `waited ${next && next[0] - at} ms after a 429 with Retry-After ${retryAfter}`);
    }
  } finally {
    await ctx.close();
    await limited.stop();
  }
});

test("a dead socket (a network path gone silent) is noticed within deadMs + 1 s; resumes with since, nothing lost", async () => {
  const id = await e2e.newProject("dead socket");
  const proxy = await startBlackholeProxy(e2e.hub.port);
  const ctx = await e2e.browser.newContext();
  const ctxB = await e2e.browser.newContext();
  try {
    const page = await e2e.open(ctx, id, { url: proxy.url });
    const other = await e2e.open(ctxB, id);
    const joins = [];
    page.on("websocket", (ws) => ws.on("framesent", (f) => String(f.payload).includes('"join"') && joins.push(JSON.parse(String(f.payload)))));
    await until("online", async () => (await status(page)) === "online" && (await status(other)) === "online");
    await write(page, "a.txt", "before");
    await flush(page);
    proxy.cut();
    const cutAt = Date.now();
    await write(other, "b.txt", "written while A was cut off");
    await flush(other);
    await write(page, "a.txt", "typed while cut off");
    await sleep(500);
    proxy.heal(); // new connections work again; the open ones stay dead
    await until("the dead socket noticed", async () => (await status(page)) !== "online", 30_000);
    const noticedAfter = Date.now() - cutAt;
    // deadMs is 6 s here (25 s by default, so within the contract's 30 s); checked each second.
    assert.ok(noticedAfter <= FAST_TIMING.deadMs + 2_000, `noticed after ${noticedAfter} ms`);
    await until("resumed", async () => (await status(page)) === "online" && (await read(page, "b.txt")) === "written while A was cut off", 30_000);
    await until("A's write sent", async () => (await page.evaluate(() => window.project.pending)) === 0, 60_000);
    assert.equal((await hubFile(e2e.hub, id, "a.txt")).content, "typed while cut off");
    assert.deepEqual((await appliedWrites(id, "a.txt")).map(([c]) => c), ["before", "typed while cut off"], "each write applied once");
    assert.ok(joins.length >= 1, "rejoined");
    assert.equal(typeof joins.at(-1).since, "number", "rejoined with since");
    console.error(`dead socket noticed after ${noticedAfter} ms`);
  } finally {
    await ctx.close();
    await ctxB.close();
    await proxy.close();
  }
});

test("the demo editor at / (served by synchub dev): edit, Saving then Synced, live in a second window", async () => {
  const token = e2e.hub.token("demo-user");
  const ctxA = await e2e.browser.newContext();
  const ctxB = await e2e.browser.newContext();
  try {
    const a = await e2e.openDemo(ctxA, token);
    assert.ok(!a.url().includes(token), "the token leaves the address bar");
    await until("the first project is opened", async () => (await a.locator("#project option").count()) === 1);
    await until("synced", async () => (await a.textContent("#status")) === "Synced");
    a.once("dialog", (d) => d.accept("src/hello.ts"));
    await a.click("#new-file");
    await a.locator("#editor").fill("export const hello = 1;");
    await until("synced after typing", async () => (await a.textContent("#status")) === "Synced" && (await a.locator("#tree li").count()) === 1);
    const projectId = await a.locator("#project").inputValue();
    assert.equal((await hubFile(e2e.hub, projectId, "src/hello.ts", token)).content, "export const hello = 1;");

    const b = await e2e.openDemo(ctxB, token, projectId);
    await until("B lists the file", async () => (await b.locator("#tree li").count()) === 1);
    await b.click("#tree li");
    await a.locator("#editor").fill("export const hello = 2;");
    await until("B shows A's edit live", async () => (await b.locator("#editor").inputValue()) === "export const hello = 2;");
    await until("B logs the live change", async () => (await b.textContent("#log")).includes("updated src/hello.ts"));
    await until("A synced", async () => (await a.textContent("#status")) === "Synced");
    a.once("dialog", (d) => d.accept("src/renamed.ts"));
    await a.click("#rename-file");
    await until("B logs the rename as one move", async () => (await b.textContent("#log")).includes("moved src/hello.ts → src/renamed.ts"));
    await until("B's tree shows the new name", async () => (await b.locator("#tree li").allTextContents()).join() === "renamed.ts");
    const events = (await hubEvents(e2e.hub, projectId, token)).map((e) => e.event);
    assert.equal(events.at(-1), "bulk:apply");
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});

test("typing into a large file moves deltas both ways (PATCH up, delta events down)", async () => {
  const id = await e2e.newProject("deltas");
  const big = Array.from({ length: 12_000 }, (_, i) => `export const value${i} = ${i}; // generated line\n`).join("");
  await e2e.hub.api("PUT", `/v1/projects/${id}/files/src/big.ts`, { content: big });
  const ctxA = await e2e.browser.newContext();
  const ctxB = await e2e.browser.newContext();
  // What each page sends (writes) and receives (event frames), recorded from the start.
  const traffic = (page) => {
    const seen = { writes: [], events: [] };
    page.on("request", (r) => r.url().includes("/files/src/big.ts") && r.method() !== "GET" && seen.writes.push({ method: r.method(), bytes: (r.postData() ?? "").length }));
    page.on("websocket", (ws) => ws.on("framereceived", (f) => {
      const text = typeof f.payload === "string" ? f.payload : f.payload.toString();
      if (text.includes('"file:update"')) seen.events.push({ delta: text.includes('"delta"'), bytes: text.length });
    }));
    return seen;
  };
  const open = async (ctx) => {
    const page = await ctx.newPage();
    const seen = traffic(page);
    await page.exposeFunction("nextToken", async () => e2e.hub.token());
    await page.goto(e2e.pages.origin + "/");
    await attach(page, e2e.hub, id, { storage: "memory" });
    return { page, seen };
  };
  try {
    const a = await open(ctxA);
    const b = await open(ctxB);
    await until("both online with the file", async () => (await read(a.page, "src/big.ts")) === big && (await read(b.page, "src/big.ts")) === big);
    // Version 2 reaches B in full (its socket joined after version 1); from then on both
    // sockets have seen the base of every edit.
    let text = big.replace("value100 ", "value100x");
    await write(a.page, "src/big.ts", text);
    await flush(a.page);
    await until("B has version 2", async () => (await read(b.page, "src/big.ts")) === text);
    // A types: each save is a small PATCH; B gets delta events.
    for (let i = 0; i < 5; i++) {
      text = text.replace(`value${2000 + i} `, `value${2000 + i}y`);
      await write(a.page, "src/big.ts", text);
      await flush(a.page);
    }
    await until("B sees A's typing", async () => (await read(b.page, "src/big.ts")) === text);
    // B types back.
    for (let i = 0; i < 5; i++) {
      text = text.replace(`value${5000 + i} `, `value${5000 + i}z`);
      await write(b.page, "src/big.ts", text);
      await flush(b.page);
    }
    await until("A sees B's typing", async () => (await read(a.page, "src/big.ts")) === text);
    assert.equal((await hubFile(e2e.hub, id, "src/big.ts")).content, text);

    for (const [name, side] of [["A", a], ["B", b]]) {
      const patches = side.seen.writes.filter((w) => w.method === "PATCH");
      assert.ok(patches.length >= 5, `${name} sent its saves as PATCH: ${JSON.stringify(side.seen.writes)}`);
      assert.ok(patches.every((w) => w.bytes < 1024), `${name}'s PATCH bodies are small: ${JSON.stringify(patches)}`);
      const deltas = side.seen.events.filter((e) => e.delta);
      assert.ok(deltas.length >= 5, `${name} received delta events: ${JSON.stringify(side.seen.events)}`);
      assert.ok(deltas.every((e) => e.bytes < 1024), `${name}'s delta frames are small`);
      assert.equal(await side.page.evaluate(() => window.project.deltaFallbacks), 0, `${name} applied every delta`);
    }
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});

test("file history in the demo editor: the timeline lists a file's versions and Restore brings one back", async () => {
  const token = e2e.hub.token("history-user");
  const ctx = await e2e.browser.newContext();
  try {
    const page = await e2e.openDemo(ctx, token);
    await until("the first project is opened", async () => (await page.locator("#project option").count()) === 1);
    await until("synced", async () => (await page.textContent("#status")) === "Synced");
    page.once("dialog", (d) => d.accept("notes.md"));
    await page.click("#new-file");
    for (const text of ["first draft", "second draft"]) {
      await page.locator("#editor").fill(text);
      await until(`"${text}" synced`, async () => (await page.textContent("#status")) === "Synced");
    }
    const projectId = await page.locator("#project").inputValue();
    await until("the hub has version 2", async () => (await hubFile(e2e.hub, projectId, "notes.md", token))?.version === 2);
    await page.click("#history-file");
    await until("the timeline lists both versions", async () => (await page.locator("#history li").count()) === 2);
    assert.deepEqual(await page.locator("#history li").evaluateAll((items) => items.map((li) => li.dataset.version)), ["2", "1"]);
    await page.click('#history li[data-version="1"] button');
    await until("the editor shows the restored text", async () => (await page.locator("#editor").inputValue()) === "first draft");
    const file = await hubFile(e2e.hub, projectId, "notes.md", token);
    assert.equal(file.content, "first draft");
    assert.equal(file.version, 3);
    await until("the timeline shows the restore", async () => (await page.locator("#history li").count()) === 3);
    const events = (await hubEvents(e2e.hub, projectId, token)).filter((e) => e.payload.file_path === "notes.md");
    assert.equal(events.at(-1).event, "file:update");
  } finally {
    await ctx.close();
  }
});
