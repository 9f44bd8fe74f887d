// Binary files in Chromium against a real `synchub dev` (CONTRACT section 13): a page draws
// a PNG on a canvas and uploads it with writeBinary (straight PUT), plus a 3 MiB file (the
// blob flow: announce, signed upload, reference); another page (another browser context,
// so another tab's storage) sees both arrive as binary changes and reads the same bytes;
// the hub serves the same bytes too.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { setupSuite, until } from "./harness.mjs";

/** The PNG the first test made in the browser (the demo test uploads it again). */
let madePng;

const e2e = setupSuite();

const hex = (bytes) => createHash("sha256").update(bytes).digest("hex");

test("a PNG uploaded from one page is seen, byte-identical, by another page and the hub", async () => {
  const project = await e2e.hub.api("POST", "/v1/projects", { name: "binary e2e" });
  const writer = await e2e.browser.newContext();
  const reader = await e2e.browser.newContext();
  const a = await e2e.open(writer, project.id);
  const b = await e2e.open(reader, project.id);
  await until("both online", async () => (await a.evaluate(() => window.project.status)) === "online" && (await b.evaluate(() => window.project.status)) === "online");

  // A real PNG, made by the browser, uploaded as a Blob.
  const uploaded = await a.evaluate(async () => {
    const canvas = new OffscreenCanvas(64, 64);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#1d2430";
    ctx.fillRect(0, 0, 64, 64);
    ctx.fillStyle = "#ffb000";
    ctx.fillRect(16, 16, 32, 32);
    const png = await canvas.convertToBlob({ type: "image/png" });
    const written = await window.project.writeBinary("public/logo.png", png);
    // Over the straight-PUT limit: the blob flow from the page.
    const big = new Uint8Array(3 * 1024 * 1024 + 3);
    for (let i = 0; i < big.length; i += 65536) crypto.getRandomValues(big.subarray(i, Math.min(i + 65536, big.length)));
    const large = await window.project.writeBinary("media/big.bin", new Blob([big]));
    return { png: [...new Uint8Array(await png.arrayBuffer())], written, large, bigSha: large.sha256 };
  });
  const png = Uint8Array.from(uploaded.png);
  madePng = png;
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "a PNG signature");
  assert.equal(uploaded.written.sha256, hex(png));
  assert.equal(uploaded.written.version, 1);
  assert.equal(uploaded.large.size, 3 * 1024 * 1024 + 3);

  // The other page: both arrive as binary changes, read back byte for byte.
  await until("the other page sees both", () =>
    b.evaluate(() => window.project.binary("public/logo.png") !== undefined && window.project.binary("media/big.bin") !== undefined),
  );
  const seen = await b.evaluate(async () => {
    const blob = await window.project.readBinary("public/logo.png");
    const big = await window.project.readBinary("media/big.bin");
    const digest = async (b) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", await b.arrayBuffer()))].map((x) => x.toString(16).padStart(2, "0")).join("");
    return {
      bytes: [...new Uint8Array(await blob.arrayBuffer())],
      type: blob.type,
      bigSha: await digest(big),
      paths: window.project.paths(),
      text: window.project.read("public/logo.png"),
      changes: window.changes.filter((c) => c.binary).map((c) => [c.path, c.binary.size, c.origin]),
    };
  });
  assert.deepEqual(Uint8Array.from(seen.bytes), png);
  assert.equal(seen.type, "image/png");
  assert.equal(seen.bigSha, uploaded.bigSha);
  assert.deepEqual(seen.paths, ["media/big.bin", "public/logo.png"]);
  assert.equal(seen.text, undefined, "a binary file has no text");
  assert.deepEqual(
    seen.changes.sort(),
    [
      ["media/big.bin", 3 * 1024 * 1024 + 3, "remote"],
      ["public/logo.png", png.length, "remote"],
    ],
  );

  // The hub's own answer: metadata, and the bytes with Accept: application/octet-stream.
  const meta = await e2e.hub.api("GET", `/v1/projects/${project.id}/files/public/logo.png`);
  assert.equal(meta.binary, true);
  assert.deepEqual(meta.blob, { sha256: hex(png), size: png.length });
  const raw = await fetch(`${e2e.hub.url}/v1/projects/${project.id}/files/public/logo.png`, { headers: { authorization: `Bearer ${e2e.hub.token()}`, accept: "application/octet-stream" } });
  assert.equal(raw.status, 200);
  assert.deepEqual(new Uint8Array(await raw.arrayBuffer()), png);

  // A reload of the reader lists the binary files from the hub's file list.
  await b.reload();
  await b.waitForFunction(() => window.ready === true);
  await b.evaluate(async ({ url, id }) => {
    window.client = window.synchub.createClient({ url, token: () => window.nextToken() });
    window.project = await window.client.project(id, { storage: "memory" });
  }, { url: e2e.hub.url, id: project.id });
  await until("listed after reload", () => b.evaluate(() => window.project.binary("public/logo.png")?.sha256));
  await writer.close();
  await reader.close();
});

test("the demo editor uploads a PNG and another window shows it as an image", async () => {
  assert.ok(madePng, "the first test made a PNG");
  const token = e2e.hub.token("demo-binary");
  const ctxA = await e2e.browser.newContext();
  const ctxB = await e2e.browser.newContext();
  try {
    const a = await e2e.openDemo(ctxA, token);
    await until("the first project is opened", async () => (await a.locator("#project option").count()) === 1);
    await until("synced", async () => (await a.textContent("#status")) === "Synced");
    const projectId = await a.locator("#project").inputValue();
    const b = await e2e.openDemo(ctxB, token, projectId);
    await until("B synced", async () => (await b.textContent("#status")) === "Synced");

    a.once("dialog", (d) => d.accept("img/logo.png"));
    await a.setInputFiles("#upload", { name: "logo.png", mimeType: "image/png", buffer: Buffer.from(madePng) });
    await until("A shows its upload", async () => (await a.locator("#preview img").count()) === 1);
    await until("B lists it as binary", async () => (await b.locator("#tree li").allTextContents()).join() === "logo.png ◆");
    await until("B logs the live change", async () => (await b.textContent("#log")).includes(`updated img/logo.png (binary, ${madePng.length} bytes)`));
    await b.click("#tree li");
    await until("B previews the image", async () => (await b.locator("#preview img").evaluate((img) => img.complete && img.naturalWidth)) === 64);
    assert.match(await b.textContent("#preview p"), new RegExp(`img/logo.png: binary, ${madePng.length} bytes`));
    assert.equal(await b.locator("#editor").isHidden(), true, "no textarea for bytes");
    const meta = await e2e.hub.api("GET", `/v1/projects/${projectId}/files/img/logo.png`, undefined, token);
    assert.deepEqual(meta.blob, { sha256: hex(madePng), size: madePng.length });
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});
