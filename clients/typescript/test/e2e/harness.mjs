// Browser end-to-end harness: a real `synchub dev` (embedded PostgreSQL, own data dir, free
// port), a test page served from ANOTHER origin by a tiny HTTP server, and the Debian
// Chromium driven by playwright-core. Everything on 127.0.0.1.
import { spawn, execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import { after, before } from "node:test";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const clientRoot = join(here, "../..");
const repoRoot = join(clientRoot, "../..");
const targetDir = process.env.CARGO_TARGET_DIR ?? join(repoRoot, "target");
const binary = process.env.SYNCHUB_BIN ?? join(targetDir, "debug/synchub");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(what, cond, ms = 20_000) {
  const end = Date.now() + ms;
  for (;;) {
    const value = await cond();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

let built = false;
/** `cargo build --bin synchub` once per run (a no-op when it is up to date). */
export function buildHub() {
  if (built || process.env.SYNCHUB_BIN) return;
  execFileSync("cargo", ["build", "--quiet", "--bin", "synchub"], { cwd: repoRoot, stdio: "inherit", env: { ...process.env, CARGO_TARGET_DIR: targetDir } });
  built = true;
}

/** A dev hub in its own data dir; `restart()` keeps the dir and the port. */
export class Hub {
  constructor(pageOrigin, env = {}) {
    this.dataDir = mkdtempSync(join(tmpdir(), "synchub-e2e-"));
    // mkdtemp makes it 0700; the embedded PostgreSQL runs as `postgres` when we are root.
    chmodSync(this.dataDir, 0o755);
    this.pageOrigin = pageOrigin;
    this.env = env;
  }
  async start() {
    this.port ??= await freePort();
    this.url = `http://127.0.0.1:${this.port}`;
    this.proc = spawn(binary, ["dev", "--data-dir", this.dataDir, "--listen", `127.0.0.1:${this.port}`], {
      // The test page's origin, and the hub's own for the demo editor it serves at `/`.
      env: { ...process.env, SYNCHUB_ALLOWED_ORIGINS: `${this.pageOrigin},${this.url}`, RUST_LOG: "warn", ...this.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    this.proc.stdout.on("data", (d) => (out += d));
    this.proc.stderr.on("data", (d) => (out += d));
    const exited = new Promise((resolve) => this.proc.once("exit", resolve));
    await until("the hub to be ready", async () => {
      if (this.proc.exitCode !== null) throw new Error(`synchub dev exited: ${out}`);
      try {
        return (await fetch(`${this.url}/readyz`)).ok;
      } catch {
        return false;
      }
    }, 120_000);
    this.exited = exited;
  }
  /** SIGKILL: a crash, no goodbye to the sockets. */
  async kill() {
    this.proc.kill("SIGKILL");
    await this.exited;
  }
  async restart() {
    await this.kill();
    await this.start();
  }
  token(sub = "alice", ttl = 3600) {
    return execFileSync(binary, ["token", "user", "--sub", sub, "--ttl", String(ttl), "--data-dir", this.dataDir]).toString().trim();
  }
  async api(method, path, body, token = this.token()) {
    const r = await fetch(this.url + path, { method, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
    const json = await r.json();
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
    return json;
  }
  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill("SIGTERM");
      await Promise.race([this.exited, sleep(10_000)]);
      if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
    }
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

const TEST_PAGE = `<!doctype html><meta charset="utf-8"><title>synchub e2e</title>
<script type="module">
  // ?sw=1: the page and the client are cached by a service worker, so the page itself loads
  // while the browser is offline, as an installed offline-capable editor would.
  if (new URLSearchParams(location.search).has("sw")) {
    await navigator.serviceWorker.register("/sw.js");
    await navigator.serviceWorker.ready;
    if (!navigator.serviceWorker.controller) await new Promise((r) => navigator.serviceWorker.addEventListener("controllerchange", r, { once: true }));
  }
  const synchub = await import("/index.js");
  window.synchub = synchub;
  window.ready = true;
</script>`;

const SERVICE_WORKER = `
const CACHE = "e2e-page";
self.addEventListener("install", (e) => e.waitUntil(caches.open(CACHE).then((c) => c.addAll(["/?sw=1", "/index.js"])).then(() => self.skipWaiting())));
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  if (url.origin !== location.origin) return; // the hub: straight to the network
  e.respondWith(caches.match(e.request).then((hit) => hit ?? fetch(e.request)));
});`;

/** The page origin: serves the built client and an empty test page. */
export async function startPageServer() {
  const port = await freePort();
  const bundle = readFileSync(join(clientRoot, "dist/index.js"));
  const server = createServer((req, res) => {
    if (req.url === "/index.js") res.writeHead(200, { "content-type": "text/javascript" }).end(bundle);
    else if (req.url === "/sw.js") res.writeHead(200, { "content-type": "text/javascript" }).end(SERVICE_WORKER);
    else res.writeHead(200, { "content-type": "text/html" }).end(TEST_PAGE);
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { origin: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/**
 * The before/after every e2e test file shares: builds the hub binary, starts the page
 * server, one hub for the file and Chromium (the system executable); all stopped after the
 * file. The returned object's `pages`, `hub` and `browser` are set once `before` has run;
 * `newProject(name)` creates a project on that hub, `open(context, projectId, options)` is
 * [`openProject`] on it and `openDemo(context, token, projectId)` opens its demo editor.
 */
export function setupSuite() {
  const suite = {
    async newProject(name) {
      const id = randomUUID();
      await suite.hub.api("POST", "/v1/projects", { id, name });
      return id;
    },
    open: (context, projectId, options) => openProject(context, suite.pages.origin, suite.hub, projectId, options),
    /** A page of the demo editor the hub serves at `/`, signed in with `token` (and on `projectId`). */
    async openDemo(context, token, projectId) {
      const page = await context.newPage();
      page.on("pageerror", (err) => console.error("demo page error:", err));
      if (process.env.E2E_DEBUG) page.on("console", (m) => console.error("console:", m.text()));
      await page.goto(`${suite.hub.url}/#token=${token}${projectId ? `&project=${projectId}` : ""}`);
      return page;
    },
  };
  before(async () => {
    buildHub();
    suite.pages = await startPageServer();
    suite.hub = new Hub(suite.pages.origin);
    await suite.hub.start();
    suite.browser = await launchBrowser();
  });
  after(async () => {
    await suite.browser?.close();
    await suite.hub?.stop();
    await suite.pages?.close();
  });
  return suite;
}

/**
 * Opens the test page in `context` and the project in it (as `window.project`). The token
 * comes from node (`window.nextToken()`), so a test can hand out short-lived tokens.
 */
export async function openProject(context, pageOrigin, hub, projectId, { storage = "indexeddb", conflict = "server", token, path = "/", url, timing } = {}) {
  const page = await context.newPage();
  page.on("pageerror", (err) => console.error("page error:", err));
  if (process.env.E2E_DEBUG) {
    page.on("console", (m) => console.error("console:", m.text()));
    page.on("requestfailed", (r) => console.error("failed:", r.method(), r.url(), r.failure()?.errorText));
    page.on("websocket", (ws) => ws.on("close", () => console.error("ws closed")).on("socketerror", (e) => console.error("ws error", e)));
  }
  await page.exposeFunction("nextToken", async () => (token ? token() : hub.token()));
  await page.goto(pageOrigin + path);
  await attach(page, hub, projectId, { storage, conflict, url, timing });
  return page;
}

/** (Re)creates the client in a loaded page, e.g. after a reload. */
export const FAST_TIMING = { debounceMs: 100, maxDelayMs: 1000, pingMs: 2000, deadMs: 6000, backoffBaseMs: 200, backoffMaxMs: 2000 };

/** `url` defaults to the hub's; `timing` null = the client's defaults. */
export async function attach(page, hub, projectId, { storage = "indexeddb", conflict = "server", url = hub.url, timing = FAST_TIMING } = {}) {
  await page.waitForFunction(() => window.ready === true);
  await page.evaluate(
    async ({ url, projectId, storage, conflict, timing }) => {
      window.client = window.synchub.createClient({ url, token: () => window.nextToken(), ...(timing ? { timing } : {}) });
      window.project = await window.client.project(projectId, { storage, conflict });
      window.changes = [];
      window.project.on("change", (e) => window.changes.push(e));
    },
    { url, projectId, storage, conflict, timing },
  );
}

export const read = (page, path) => page.evaluate((p) => window.project.read(p), path);
export const write = (page, path, content) => page.evaluate(([p, c]) => window.project.write(p, c), [path, content]);
export const flush = (page) => page.evaluate(() => window.project.flush());
export const status = (page) => page.evaluate(() => window.project.status);

/**
 * A TCP relay to the hub that can go silent: `cut()` makes every connection (open or new) a
 * black hole (bytes accepted, never delivered, no FIN or RST: a dead NAT mapping or a
 * suspended laptop's Wi-Fi); `heal()` lets NEW connections through again, the cut ones stay dead.
 */
export async function startBlackholeProxy(targetPort) {
  const port = await freePort();
  let cut = false;
  const pairs = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = { client, upstream, dead: cut };
    pairs.add(pair);
    client.on("data", (d) => pair.dead || upstream.write(d));
    upstream.on("data", (d) => pair.dead || client.write(d));
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) s.on("error", end).on("close", () => pair.dead || end());
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${port}`,
    cut() {
      cut = true;
      for (const p of pairs) p.dead = true;
    },
    heal() {
      cut = false;
    },
    close() {
      for (const p of pairs) {
        p.client.destroy();
        p.upstream.destroy();
      }
      return new Promise((r) => server.close(r));
    },
  };
}

/** The hub's copy of a file (null when absent). */
export async function hubFile(hub, projectId, path, token = undefined) {
  const list = await hub.api("GET", `/v1/projects/${projectId}/files?include_content=true`, undefined, token);
  return list.files.find((f) => f.path === path) ?? null;
}

/** Every event in the project's log (to count how often each write was applied). */
export async function hubEvents(hub, projectId, token = undefined) {
  return (await hub.api("GET", `/v1/projects/${projectId}/events?since=0&limit=1000`, undefined, token)).events;
}
