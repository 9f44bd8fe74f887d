// The demo editor `synchub dev` serves at `/`: a file tree, a textarea, the sync status,
// conflicts and live changes, all through @synchub/client. The token comes from the URL
// fragment (`#token=...`, never sent to the server) or the field, and stays in this tab's
// sessionStorage only.
import { createClient, type ChangeEvent, type Client, type PresenceMember, type Project } from "../../src/index.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const tokenInput = $<HTMLInputElement>("token");
const projectSelect = $<HTMLSelectElement>("project");
const tree = $<HTMLUListElement>("tree");
const editor = $<HTMLTextAreaElement>("editor");
const statusEl = $<HTMLSpanElement>("status");
const pendingEl = $<HTMLSpanElement>("pending");
const conflictsEl = $<HTMLDivElement>("conflicts");
const logEl = $<HTMLDivElement>("log");
const tabsEl = $<HTMLDivElement>("tabs");
const previewEl = $<HTMLDivElement>("preview");
const uploadInput = $<HTMLInputElement>("upload");
const historyEl = $<HTMLDivElement>("history");
const presenceEl = $<HTMLUListElement>("presence");

const hub = location.origin;
let client: Client | undefined;
let project: Project | undefined;
let open: string[] = [];
let active: string | undefined;

const fragment = new URLSearchParams(location.hash.slice(1));
const token = () => tokenInput.value.trim();
tokenInput.value = fragment.get("token") ?? sessionStorage.getItem("synchub-token") ?? "";
if (fragment.has("token")) history.replaceState(null, "", location.pathname + (fragment.get("project") ? `#project=${fragment.get("project")}` : ""));
tokenInput.addEventListener("change", () => void start());

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await fetch(hub + path, {
    method,
    headers: { authorization: `Bearer ${token()}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await r.json();
  if (!r.ok) throw new Error(json?.error?.message ?? r.statusText);
  return json as T;
}

async function start(): Promise<void> {
  if (!token()) return;
  sessionStorage.setItem("synchub-token", token());
  let projects: { id: string; name: string }[] = [];
  try {
    projects = await api("GET", "/v1/projects");
  } catch (err) {
    // Offline: reopen the last project from the local copy.
    const last = localStorage.getItem("synchub-last-project");
    if (last) projects = [{ id: last, name: "(offline) " + last.slice(0, 8) }];
    else return showStatus("error", String(err));
  }
  if (projects.length === 0) projects = [await api("POST", "/v1/projects", { name: "My first project" })];
  projectSelect.replaceChildren(...projects.map((p) => new Option(p.name, p.id)));
  const wanted = fragment.get("project") ?? localStorage.getItem("synchub-last-project");
  if (wanted && projects.some((p) => p.id === wanted)) projectSelect.value = wanted;
  await openProject(projectSelect.value);
}

projectSelect.addEventListener("change", () => void openProject(projectSelect.value));
$("new-project").addEventListener("click", async () => {
  const name = prompt("Project name?");
  if (!name) return;
  const p = await api<{ id: string; name: string }>("POST", "/v1/projects", { name });
  projectSelect.add(new Option(p.name, p.id));
  projectSelect.value = p.id;
  await openProject(p.id);
});
$("new-file").addEventListener("click", () => {
  const path = prompt("File path (e.g. src/index.ts)?")?.trim();
  if (!path || !project) return;
  if (project.read(path) === undefined) project.write(path, "");
  select(path);
});
// Any file from the disk, stored as a binary file (CONTRACT section 13) under its name.
$("upload-file").addEventListener("click", () => uploadInput.click());
uploadInput.addEventListener("change", async () => {
  const file = uploadInput.files?.[0];
  uploadInput.value = "";
  const path = file && prompt("Store as:", file.name)?.trim();
  if (!project || !file || !path) return;
  try {
    showStatus("saving", `Uploading ${file.size} bytes`);
    await project.writeBinary(path, file);
    renderStatus();
    select(path);
  } catch (err) {
    showStatus("error", "Upload failed");
    alert(err instanceof Error ? err.message : String(err));
  }
});
$("rename-file").addEventListener("click", () => {
  const from = active;
  const to = from && prompt(`Rename ${from} to:`, from)?.trim();
  if (!project || !from || !to || to === from) return;
  try {
    project.move(from, to);
  } catch (err) {
    alert(err instanceof Error ? err.message : String(err));
    return;
  }
  open = open.map((p) => (p === from ? to : p));
  select(to);
});
$("delete-file").addEventListener("click", () => {
  const path = active;
  if (!project || !path || !confirm(`Delete ${path}?`)) return;
  project.delete(path);
  closeTab(path);
});

$("history-file").addEventListener("click", () => void renderHistory(active));

/** The timeline of a file (`project.history`): its versions, newest first, each restorable. */
let historyPath: string | undefined;
async function renderHistory(path: string | undefined): Promise<void> {
  historyPath = path;
  const p = project;
  if (!p || !path) {
    historyEl.innerHTML = '<p class="placeholder">Open a file and press History.</p>';
    return;
  }
  let page;
  try {
    page = await p.history(path, { limit: 50 });
  } catch (err) {
    historyEl.textContent = `History of ${path}: ${err instanceof Error ? err.message : String(err)}`;
    return;
  }
  if (historyPath !== path) return;
  const title = document.createElement("p");
  title.className = "placeholder";
  title.textContent = `${path}${page.next !== null ? " (latest 50)" : ""}`;
  const list = document.createElement("ol");
  page.versions.forEach((v, i) => {
    const item = document.createElement("li");
    item.className = v.deleted ? "deleted" : "";
    item.dataset.version = String(v.version);
    const label = document.createElement("span");
    label.textContent = `v${v.version} · ${v.actor} · ${new Date(v.created_at).toLocaleString()}${v.deleted ? " · deleted" : ""}`;
    item.append(label);
    if (!v.deleted && i > 0) {
      const restore = document.createElement("button");
      restore.textContent = "Restore";
      restore.onclick = async () => {
        try {
          await p.restore(path, v.version);
        } catch (err) {
          alert(err instanceof Error ? err.message : String(err));
        }
        if (!open.includes(path)) select(path);
        void renderHistory(path);
      };
      item.append(restore);
    }
    list.append(item);
  });
  historyEl.replaceChildren(title, list);
}

async function openProject(id: string): Promise<void> {
  client?.close();
  client = createClient({ url: hub, token });
  localStorage.setItem("synchub-last-project", id);
  project = await client.project(id, { storage: "indexeddb", conflict: "server" });
  const p = project;
  p.on("status", renderStatus);
  p.on("pending", renderStatus);
  let seenOnline = p.status === "online";
  p.on("status", (s) => (seenOnline ||= s === "online"));
  p.on("change", (e) => {
    // The first file list is not news; after that, every remote change is.
    if (e.origin === "remote" && seenOnline) logChange(e);
    renderTree(e.origin === "remote" ? e.path : undefined);
    if (e.path === historyPath && e.origin === "remote") void renderHistory(historyPath);
    if (e.path === active && e.origin === "remote") {
      if (e.deleted) closeTab(e.path);
      else renderEditor();
    }
  });
  p.on("conflict", renderConflicts);
  p.on("editorState", restoreEditorState);
  p.on("presence", renderPresence);
  renderPresence(p.presence.members());
  restoreEditorState(p.editorState.get());
  renderTree();
  renderConflicts();
  renderStatus();
}

function restoreEditorState(state: unknown): void {
  const s = state as { open?: string[]; active?: string } | null;
  const present = new Set(project?.paths() ?? []);
  open = s?.open?.filter((p) => present.has(p)) ?? [];
  active = s?.active && open.includes(s.active) ? s.active : open[0];
  announce();
  renderTabs();
  renderEditor();
}

function closeTab(path: string): void {
  open = open.filter((p) => p !== path);
  if (active === path) active = open[0];
  project?.editorState.set({ open, active });
  announce();
  renderTabs();
  renderTree();
  renderEditor();
}

function select(path: string): void {
  if (!open.includes(path)) open.push(path);
  active = path;
  project?.editorState.set({ open, active });
  announce();
  renderTabs();
  renderTree();
  renderEditor();
}

/** Tells the others which file this tab has open (presence meta). */
function announce(): void {
  project?.setPresence({ file: active ?? null });
}

/** Who else has the project open: editors by user id, preview containers by session. */
function renderPresence(members: PresenceMember[]): void {
  presenceEl.replaceChildren();
  for (const m of members) {
    const li = document.createElement("li");
    const file = (m.meta as { file?: string | null } | null)?.file;
    li.textContent = `${m.kind === "container" ? "preview container" : m.user}${m.client_id === project?.presence.self ? " (this tab)" : ""}`;
    li.dataset.kind = m.kind;
    if (file) {
      const span = document.createElement("span");
      span.className = "file";
      span.textContent = ` · ${file}`;
      li.append(span);
    }
    presenceEl.append(li);
  }
  if (!members.length) presenceEl.innerHTML = '<li class="placeholder">Nobody yet.</li>';
}

editor.addEventListener("input", () => {
  if (project && active) project.write(active, editor.value);
});

/** The binary file shown (its sha256), so a re-render does not fetch it again. */
let previewed: string | undefined;

/** A data: URL (the page's CSP allows `img-src 'self' data:`, not blob: URLs). */
function dataUrl(blob: Blob): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

/** A binary file: its size, and the image itself when it is one (fetched and checked). */
function renderPreview(path: string | undefined): void {
  const info = path ? project?.binary(path) : undefined;
  previewEl.hidden = info === undefined;
  editor.hidden = info !== undefined;
  if (!info || !path) {
    previewed = undefined;
    return;
  }
  const key = `${path}\u0000${info.sha256}`;
  if (previewed === key) return;
  previewed = key;
  const caption = document.createElement("p");
  caption.textContent = `${path}: binary, ${info.size.toLocaleString()} bytes (sha256 ${info.sha256.slice(0, 12)}…)`;
  previewEl.replaceChildren(caption);
  if (!/\.(png|jpe?g|gif|webp|avif|svg|ico)$/i.test(path)) return;
  const p = project!;
  void p.readBinary(path).then(dataUrl).then(
    (url) => {
      if (previewed !== key) return;
      const img = document.createElement("img");
      img.src = url;
      img.alt = path;
      previewEl.append(img);
    },
    (err) => caption.append(` — preview failed: ${err instanceof Error ? err.message : String(err)}`),
  );
}

function renderEditor(): void {
  renderPreview(active);
  const content = active ? project?.read(active) : undefined;
  const binary = active ? project?.binary(active) !== undefined : false;
  editor.disabled = content === undefined;
  $<HTMLButtonElement>("rename-file").disabled = content === undefined;
  $<HTMLButtonElement>("delete-file").disabled = content === undefined && !binary;
  $<HTMLButtonElement>("history-file").disabled = content === undefined;
  if (content === undefined) editor.value = "";
  else if (editor.value !== content) {
    const { selectionStart, selectionEnd } = editor;
    editor.value = content;
    editor.setSelectionRange(selectionStart, selectionEnd);
  }
}

function renderTabs(): void {
  tabsEl.replaceChildren(
    ...open.map((path) => {
      const tab = document.createElement("span");
      tab.textContent = path;
      tab.className = path === active ? "active" : "";
      tab.onclick = () => select(path);
      return tab;
    }),
  );
}

/** Folders first, then files, each level sorted; a file row shows its name, indented by depth. */
function renderTree(flash?: string): void {
  const paths = project?.paths() ?? [];
  const rows: HTMLElement[] = [];
  const dirsShown = new Set<string>();
  const sorted = [...paths].sort((a, b) => sortKey(a).localeCompare(sortKey(b)));
  for (const path of sorted) {
    const parts = path.split("/");
    for (let depth = 0; depth < parts.length - 1; depth++) {
      const dir = parts.slice(0, depth + 1).join("/");
      if (dirsShown.has(dir)) continue;
      dirsShown.add(dir);
      const row = document.createElement("div");
      row.className = "dir";
      row.style.paddingLeft = `${depth + 0.4}rem`;
      row.textContent = parts[depth] + "/";
      rows.push(row);
    }
    const li = document.createElement("li");
    li.textContent = parts.at(-1)! + (project?.binary(path) ? " ◆" : "");
    li.title = path;
    li.dataset.path = path;
    li.style.paddingLeft = `${parts.length - 1 + 0.4}rem`;
    li.className = (path === active ? "active " : "") + (path === flash ? "changed" : "");
    li.onclick = () => select(path);
    rows.push(li);
  }
  tree.replaceChildren(...rows);
  if (paths.length === 0) tree.innerHTML = '<p class="placeholder">No files yet.</p>';
}

/** Sorts a folder's subfolders before its files: "a/b/c" → "a\u0000/b\u0000/\u0001c". */
function sortKey(path: string): string {
  const parts = path.split("/");
  return parts.map((p, i) => (i === parts.length - 1 ? "\u0001" + p : p + "\u0000")).join("/");
}

function renderConflicts(): void {
  const list = project?.conflicts() ?? [];
  if (list.length === 0) {
    conflictsEl.innerHTML = '<p class="placeholder">None.</p>';
    return;
  }
  conflictsEl.replaceChildren(
    ...list.map((c) => {
      const box = document.createElement("div");
      box.className = "conflict";
      const title = document.createElement("b");
      title.textContent = `${c.path}: ${c.winner === "server" ? "the server copy won" : "your copy won"}${c.error ? ` (${c.error.code})` : ""}`;
      const local = document.createElement("pre");
      local.textContent = c.local ?? "(deleted locally)";
      const restore = document.createElement("button");
      restore.textContent = "Use my text";
      restore.onclick = () => {
        if (c.local !== null) project?.write(c.path, c.local);
        void project?.dismissConflict(c.id).then(renderConflicts);
      };
      const dismiss = document.createElement("button");
      dismiss.textContent = "Dismiss";
      dismiss.onclick = () => void project?.dismissConflict(c.id).then(renderConflicts);
      box.append(title, local, restore, dismiss);
      return box;
    }),
  );
}

function renderStatus(): void {
  if (!project) return;
  const s = project.status;
  const pending = project.pending;
  const state = s === "error" ? "error" : s !== "online" ? "offline" : pending > 0 ? "saving" : "synced";
  showStatus(state, { error: "Error", offline: s === "connecting" ? "Connecting" : "Offline", saving: "Saving", synced: "Synced" }[state]);
  pendingEl.textContent = pending > 0 ? `${pending} unsent` : "";
}

function showStatus(state: string, text: string): void {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

/** Remote changes of one event (same seq) are logged as one line: a move reads as a move. */
const bySeq = new Map<number, ChangeEvent[]>();
function logChange(e: ChangeEvent): void {
  if (e.seq === undefined) return log(describe(e));
  const seq = e.seq;
  const group = bySeq.get(seq);
  if (group) return void group.push(e);
  bySeq.set(seq, [e]);
  setTimeout(() => {
    const all = bySeq.get(seq) ?? [];
    bySeq.delete(seq);
    const gone = all.filter((c) => c.deleted);
    const here = all.filter((c) => !c.deleted);
    if (gone.length === 1 && here.length === 1) return log(`moved ${gone[0]!.path} → ${here[0]!.path}`);
    for (const c of all) log(describe(c));
  }, 100);
}

function describe(e: ChangeEvent): string {
  return `${e.deleted ? "deleted" : "updated"} ${e.path}${e.binary ? ` (binary, ${e.binary.size} bytes)` : ""}`;
}

function log(text: string): void {
  const line = document.createElement("div");
  line.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  logEl.prepend(line);
  while (logEl.childElementCount > 50) logEl.lastElementChild?.remove();
}

void start();
