// What every unit test file of @synchub/client starts from: a client of the in-memory fake
// hub (fake-hub.mjs) with short timings, and the small waiting helpers.
import { createClient } from "../../dist/index.js";

/** Client timings short enough that reconnects, debounces and pings happen within a test. */
export const FAST_TIMING = { debounceMs: 20, maxDelayMs: 200, pingMs: 30, deadMs: 100, backoffBaseMs: 5, backoffMaxMs: 40, editorStateDebounceMs: 10 };

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until it holds; fails after `ms`. */
export async function until(what, cond, ms = 3000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/**
 * A client of `hub` (token "t1", FAST_TIMING; `clientOpts` on top) with project `id` opened
 * in it (memory storage; `projectOpts` on top). Returns at once, maybe before the socket is up.
 */
export async function openProject(hub, id, projectOpts = {}, clientOpts = {}) {
  const client = createClient({ url: "http://hub.test", token: "t1", fetch: hub.fetch, WebSocket: hub.WebSocket, timing: FAST_TIMING, ...clientOpts });
  const project = await client.project(id, { storage: "memory", ...projectOpts });
  return { client, project };
}

/** [`openProject`], once the project is online. */
export async function openOnline(hub, id, projectOpts = {}, clientOpts = {}) {
  const opened = await openProject(hub, id, projectOpts, clientOpts);
  await until("online", () => opened.project.status === "online");
  return opened;
}
