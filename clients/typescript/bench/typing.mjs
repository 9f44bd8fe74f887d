// The browser side of the `browser_typing` bench scenario (bench/src/scenarios/browser_typing.rs
// starts it and talks to it). Debian Chromium driven by playwright-core, two pages in two
// separate browser contexts (no shared IndexedDB or BroadcastChannel, so the second page
// hears the first one's edits only through the hub), both running @synchub/client bundled
// from src/ with the same esbuild options as scripts/build.mjs.
//
// Protocol: the config is argv[2] (JSON: hub, token, project, pagePort). One JSON line on
// stdout when ready ({ready, chromium, bundle}), then one JSON command per stdin line and
// one JSON answer line per command:
//   {"cmd":"typing","path","keys","rate","debounce":"default"|"none"}
//        → {keystroke_ms:[…], write_ms:[…], writes}  (page A types, page B's `change` events)
//   {"cmd":"bytes","path","seconds","rate","mode":"client"|"naive"}
//        → {http_up, http_down, ws_up, ws_down, writes, keys, seconds}
//   {"cmd":"quit"}
// Times are taken in the pages (performance.timeOrigin + performance.now(): both pages read
// the same machine clock), so the driver's own latency is not in them.
import { createServer } from "node:http";
import net from "node:net";
import { createInterface } from "node:readline";
import { gzipSync } from "node:zlib";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const config = JSON.parse(process.argv[2]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const send = (value) => process.stdout.write(JSON.stringify(value) + "\n");

// Same options as scripts/build.mjs (dist/index.js and dist/index.min.js).
const bundleOptions = { entryPoints: [join(root, "src/index.ts")], bundle: true, format: "esm", target: "es2022", platform: "browser", legalComments: "none", logLevel: "warning", write: false };
const bundle = (await build(bundleOptions)).outputFiles[0].contents;
const minified = (await build({ ...bundleOptions, minify: true })).outputFiles[0].contents;

const PAGE = `<!doctype html><meta charset="utf-8"><title>synchub bench</title>
<script type="module">window.synchub = await import("/index.js"); window.ready = true;</script>`;
const pageServer = createServer((req, res) => {
  if (req.url === "/index.js") res.writeHead(200, { "content-type": "text/javascript" }).end(bundle);
  else res.writeHead(200, { "content-type": "text/html" }).end(PAGE);
});
await new Promise((r) => pageServer.listen(config.pagePort, "127.0.0.1", r));
const origin = `http://127.0.0.1:${config.pagePort}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows"],
});

/** A TCP proxy in front of the hub that counts the bytes each way, per kind of connection. */
function countingProxy(hubUrl) {
  const target = new URL(hubUrl);
  const counts = { http_up: 0, http_down: 0, ws_up: 0, ws_down: 0, requests: {} };
  const server = net.createServer((client) => {
    client.setNoDelay(true);
    const upstream = net.connect(Number(target.port), target.hostname);
    upstream.setNoDelay(true);
    let kind;
    client.on("data", (d) => {
      // A connection's first request line tells a socket upgrade from plain HTTP.
      kind ??= d.subarray(0, 64).toString("latin1").startsWith("GET /v1/realtime") ? "ws" : "http";
      counts[`${kind}_up`] += d.length;
      // Requests by method (a request's head arrives as one chunk on loopback): shows preflights.
      const method = kind === "http" && /^(GET|PUT|POST|DELETE|OPTIONS) /.exec(d.subarray(0, 8).toString("latin1"))?.[1];
      if (method) counts.requests[method] = (counts.requests[method] ?? 0) + 1;
      upstream.write(d);
    });
    upstream.on("data", (d) => {
      counts[`${kind ?? "http"}_down`] += d.length;
      client.write(d);
    });
    const end = () => { client.destroy(); upstream.destroy(); };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({
    url: `http://127.0.0.1:${server.address().port}`,
    counts,
    reset() { for (const k of Object.keys(counts)) counts[k] = k === "requests" ? {} : 0; },
    close: () => new Promise((r) => { server.close(r); server.unref(); }),
  })));
}

const DEFAULT_TIMING = null; // the client's own defaults (docs/CLIENT.md: 400 ms debounce, 3 s max)
const NO_DEBOUNCE = { debounceMs: 0, maxDelayMs: 0 };

/** A page in its own context with a client on the project; `window.events` logs the `change`s. */
async function openClient(hubUrl, timing) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (err) => console.error("page error:", err));
  await page.goto(origin + "/");
  await page.waitForFunction(() => window.ready === true);
  await page.evaluate(async ({ url, token, project, timing }) => {
    const now = () => performance.timeOrigin + performance.now();
    window.now = now;
    window.puts = []; // [time, content length] of each PUT the client starts
    const fetchAndLog = (input, init) => {
      if (init?.method === "PUT" && typeof init.body === "string") window.puts.push([now(), JSON.parse(init.body).content.length]);
      return fetch(input, init);
    };
    window.client = window.synchub.createClient({ url, token, fetch: fetchAndLog, ...(timing ? { timing } : {}) });
    window.project = await window.client.project(project, { storage: "indexeddb" });
    window.changes = []; // [time, path, content length] of remote changes
    window.project.on("change", (e) => { if (e.origin === "remote") window.changes.push([now(), e.path, e.content?.length ?? -1]); });
    await new Promise((resolve, reject) => {
      if (window.project.status === "online") return resolve();
      const t = setTimeout(() => reject(new Error("not online within 20 s")), 20_000);
      window.project.on("status", (s) => { if (s === "online") { clearTimeout(t); resolve(); } });
    });
  }, { url: hubUrl, token: config.token, project: config.project, timing });
  return { page, context };
}

const TEXT = "the quick brown fox jumps over the lazy dog; ";
const textOf = (n) => TEXT.repeat(Math.ceil(n / TEXT.length) + 1).slice(0, n);

/** Page A types `keys` characters at `rate`/s into `path` (in-page timer on a fixed schedule). */
function type(page, path, keys, rate, naive = null) {
  return page.evaluate(async ({ path, keys, rate, text, naive }) => {
    const stamps = [];
    const start = window.now() + 50;
    for (let i = 1; i <= keys; i++) {
      const due = start + ((i - 1) * 1000) / rate;
      const wait = due - window.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      stamps.push(window.now());
      const content = text.slice(0, i);
      if (naive) {
        // One PUT per keystroke, not waited for (the naive baseline: no client library).
        window.naiveWrites = (window.naiveWrites ?? []);
        window.naiveWrites.push(fetch(`${naive.url}/v1/projects/${naive.project}/files/${path}`, {
          method: "PUT", headers: { authorization: `Bearer ${naive.token}`, "content-type": "application/json" },
          body: JSON.stringify({ content }),
        }).then((r) => r.text()));
      } else window.project.write(path, content);
    }
    // No flush: the last text goes out when the debounce says so, as it would for a user.
    if (naive) await Promise.all(window.naiveWrites.splice(0));
    return stamps;
  }, { path, keys, rate, text: textOf(keys), naive });
}

async function waitForLength(page, path, length) {
  await page.waitForFunction(([p, n]) => window.changes.some(([, path, len]) => path === p && len >= n), [path, length], { timeout: 30_000 });
}

/** First arrival on page B of a change of `path` with at least `length` characters. */
function arrivals(changes, path) {
  const list = changes.filter(([, p]) => p === path).sort((a, b) => a[0] - b[0]);
  return (length) => list.find(([, , len]) => len >= length)?.[0];
}

const pages = {};
async function typing({ path, keys, rate, debounce }) {
  const timing = debounce === "none" ? NO_DEBOUNCE : DEFAULT_TIMING;
  const key = debounce;
  pages[key] ??= { a: await openClient(config.hub, timing), b: await openClient(config.hub, timing) };
  const { a, b } = pages[key];
  await a.page.evaluate(() => { window.puts = []; });
  await b.page.evaluate(() => { window.changes = []; });
  const stamps = await type(a.page, path, keys, rate);
  await waitForLength(b.page, path, keys);
  const puts = await a.page.evaluate(() => window.puts);
  const arrivedAt = arrivals(await b.page.evaluate(() => window.changes), path);
  const keystroke_ms = stamps.map((t, i) => arrivedAt(i + 1) - t);
  const write_ms = puts.map(([t, len]) => arrivedAt(len) - t);
  return { keystroke_ms, write_ms, writes: puts.length };
}

async function bytes({ path, seconds, rate, mode }) {
  const proxy = await countingProxy(config.hub);
  const keys = Math.round(seconds * rate);
  let client;
  try {
    if (mode === "client") {
      client = await openClient(proxy.url, DEFAULT_TIMING);
      await sleep(200); // the join and the first file list are not typing
      proxy.reset();
      await client.page.evaluate(() => { window.puts = []; });
      await type(client.page, path, keys, rate);
      await client.page.waitForFunction(() => window.project.pending === 0, undefined, { timeout: 30_000 });
      await sleep(300); // the socket's echo of the last write
      const writes = await client.page.evaluate(() => window.puts.length);
      return { ...proxy.counts, writes, keys, seconds };
    }
    client = await openClient(config.hub, DEFAULT_TIMING); // only for its page; the naive writes go through the proxy
    proxy.reset();
    await type(client.page, path, keys, rate, { url: proxy.url, token: config.token, project: config.project });
    return { ...proxy.counts, writes: keys, keys, seconds };
  } finally {
    await client?.context.close();
    await proxy.close();
  }
}

send({
  ready: true,
  chromium: browser.version(),
  node: process.version,
  bundle: { raw: bundle.length, min: minified.length, min_gzip: gzipSync(minified, { level: 9 }).length },
});
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  if (command.cmd === "quit") break;
  try {
    if (command.cmd === "typing") send(await typing(command));
    else if (command.cmd === "bytes") send(await bytes(command));
    else send({ error: `unknown command ${command.cmd}` });
  } catch (err) {
    send({ error: String(err?.stack ?? err) });
  }
}
await browser.close();
pageServer.close();
process.exit(0);
