// An in-memory stand-in for the hub's HTTP API and socket (one user, any number of projects),
// with the contract's semantics for the parts the client uses: versions and expected_version,
// op_id idempotency, events with gapless seqs, join with since, resync_required, 409/429/401.
// Knobs let a test cut the network, lose answers and inject errors. With `deltas` on, a
// `file:update` goes as a Fossil delta to a socket that saw its base (CONTRACT 12);
// `corruptDeltas` makes those deltas wrong. `PATCH …/files/{path}` applies a delta. Binary
// files (CONTRACT section 13): straight octet-stream PUTs, the blob flow through a fake
// signed-URL storage at http://storage.test, reads through signed URLs (`corrupt` makes
// storage serve wrong bytes).
import { createHash } from "node:crypto";
import { applyDelta, createDelta } from "fossil-delta";

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

export class FakeHub {
  constructor() {
    this.projects = new Map();
    this.sockets = new Set();
    this.offline = false;
    this.requests = []; // every HTTP request that reached the hub: {method, path, body}
    this.inject = []; // [{match(req) => bool, status, body, headers, once, applyFirst}]
    this.validTokens = new Set(["t1"]);
    this.retention = 0; // events with seq <= retention are trimmed
    this.deltas = false;
    this.corruptDeltas = false;
    this.blobs = new Map(); // sha256 → bytes held by the storage
    this.corrupt = false; // storage serves altered bytes
    this.fetch = this.fetch.bind(this);
    const hub = this;
    this.WebSocket = class extends FakeSocket {
      constructor(url) {
        super(hub, url);
      }
    };
  }

  project(id) {
    let p = this.projects.get(id);
    if (!p) {
      p = { files: new Map(), history: new Map(), events: [], ops: new Map(), editorState: { state: null, revision: 0, updated_at: null } };
      this.projects.set(id, p);
    }
    return p;
  }

  /** A binary write by someone else. */
  remoteBinary(id, path, bytes) {
    const blob = { sha256: sha256(bytes), size: bytes.length };
    this.blobs.set(blob.sha256, bytes);
    return this.apply(id, { kind: "put", path, blob }, "other-user");
  }

  /** A write by someone else, published like any other. */
  remoteWrite(id, path, content) {
    return this.apply(id, { kind: "put", path, content }, "other-user");
  }

  apply(id, op, actor = "me") {
    const p = this.project(id);
    if (op.op_id && p.ops.has(op.op_id)) return p.ops.get(op.op_id);
    const cur = p.files.get(op.path);
    const curVersion = cur && !cur.deleted ? cur.version : 0;
    if (op.expected_version !== undefined && op.expected_version !== curVersion) {
      return {
        status: 409,
        body: { error: { code: "version_conflict", message: "conflict", path: op.path, expected_version: op.expected_version, current_version: curVersion, current_hash: "h" } },
      };
    }
    if (op.kind === "delete" && curVersion === 0) return { status: 404, body: { error: { code: "not_found", message: "no such file" } } };
    const version = (cur?.version ?? 0) + 1;
    const seq = p.events.length + 1;
    const timestamp = new Date().toISOString();
    let event;
    let delta;
    if (op.kind === "put" && op.blob) {
      p.files.set(op.path, { blob: op.blob, version, seq });
      event = { event: "file:update", payload: { file_path: op.path, file_type: "binary", content_hash: op.blob.sha256, version, blob: op.blob, timestamp, actor, op_id: op.op_id ?? null } };
    } else if (op.kind === "put") {
      p.files.set(op.path, { content: op.content, version, seq });
      event = { event: "file:update", payload: { file_path: op.path, file_type: "text", content: op.content, content_hash: sha256(op.content), version, timestamp, actor, op_id: op.op_id ?? null } };
      if (this.deltas && cur && !cur.deleted && cur.content !== undefined && cur.version === version - 1) {
        let bytes = Buffer.from(createDelta(Buffer.from(cur.content), Buffer.from(op.content)));
        if (this.corruptDeltas) bytes = Buffer.from(createDelta(Buffer.from(cur.content), Buffer.from(op.content + "corrupted")));
        const payload = { ...event.payload, content: undefined, base_version: cur.version, base_hash: sha256(cur.content), delta: bytes.toString("base64") };
        delete payload.content;
        if (payload.delta.length * 2 < Buffer.byteLength(op.content)) {
          delta = { frame: { type: "event", channel: `realtime:project:${id}`, seq, event: "file:update", payload }, baseSeq: cur.seq };
        }
      }
    } else {
      p.files.set(op.path, { deleted: true, version });
      event = { event: "file:delete", payload: { file_path: op.path, version, timestamp, actor, op_id: op.op_id ?? null } };
    }
    const frame = { type: "event", channel: `realtime:project:${id}`, seq, ...event };
    p.events.push(frame);
    // File history (CONTRACT 14): every version, oldest first.
    if (!p.history.has(op.path)) p.history.set(op.path, []);
    p.history.get(op.path).push({ version, content: op.content, blob: op.blob, deleted: op.kind !== "put", actor, created_at: timestamp });
    const result = { status: 200, body: { path: op.path, version, content_hash: op.blob ? op.blob.sha256 : op.kind === "put" ? sha256(op.content) : "h", seq } };
    if (op.op_id) p.ops.set(op.op_id, result);
    for (const s of this.sockets) s.publish(id, frame, delta);
    return result;
  }

  /** `files:move` as the hub does it: one change, published as one `bulk:apply`. */
  move(id, { from, to, expected_version, op_id }, actor = "me") {
    const p = this.project(id);
    if (op_id && p.ops.has(op_id)) return p.ops.get(op_id);
    const src = p.files.get(from);
    const srcVersion = src && !src.deleted ? src.version : 0;
    if (srcVersion === 0) return { status: 404, body: { error: { code: "not_found", message: "file not found", path: from } } };
    const dst = p.files.get(to);
    if (dst && !dst.deleted) return { status: 409, body: { error: { code: "already_exists", message: "exists", path: to } } };
    if (expected_version !== undefined && expected_version !== srcVersion) {
      return {
        status: 409,
        body: { error: { code: "version_conflict", message: "conflict", path: from, expected_version, current_version: srcVersion, current_hash: "h" } },
      };
    }
    const version = (dst?.version ?? 0) + 1;
    const deletedVersion = src.version + 1;
    p.files.set(to, { content: src.content, version });
    p.files.set(from, { deleted: true, version: deletedVersion });
    const seq = p.events.length + 1;
    const payload = {
      files: [{ file_path: to, file_type: "text", content: src.content, content_hash: "h", version }],
      deletes: [{ file_path: from, version: deletedVersion }],
      timestamp: new Date().toISOString(),
      actor,
      op_id: op_id ?? null,
    };
    const frame = { type: "event", channel: `realtime:project:${id}`, seq, event: "bulk:apply", payload };
    p.events.push(frame);
    const result = { status: 200, body: { from, to, seq, version } };
    if (op_id) p.ops.set(op_id, result);
    for (const s of this.sockets) s.publish(id, frame);
    return result;
  }

  /** Every write that changed something (each op applied once = one entry). */
  writes(id) {
    return this.project(id).events.length;
  }

  setOffline(offline) {
    this.offline = offline;
    if (offline) for (const s of [...this.sockets]) s.drop(1006);
  }

  async fetch(url, init = {}) {
    await new Promise((r) => setTimeout(r, 1));
    if (this.offline) throw new TypeError("Failed to fetch");
    const u = new URL(url);
    const bytes = init.body instanceof Blob ? new Uint8Array(await init.body.arrayBuffer()) : undefined;
    const body = init.body && !bytes ? JSON.parse(init.body) : undefined;
    const req = { method: init.method ?? "GET", host: u.host, path: u.pathname, query: u.searchParams, body, bytes, contentType: init.headers?.["content-type"], token: init.headers?.authorization?.slice(7) };
    this.requests.push(req);
    const hang = this.inject.findIndex((i) => i.hang && i.match(req));
    if (hang >= 0) {
      // A request into a dead connection: no answer until the caller gives up.
      this.inject.splice(hang, 1);
      return new Promise((_, reject) => init.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
    }
    const res = req.host === "storage.test" ? this.storage(req) : this.route(req);
    if (res.raw) return new Response(res.raw, { status: res.status });
    return new Response(JSON.stringify(res.body), { status: res.status, headers: res.headers ?? {} });
  }

  /** The signed-URL storage: PUT /up/<sha256>, GET /get/<sha256>; never sees a token. */
  storage(req) {
    const injected = this.inject.findIndex((i) => i.match(req));
    if (injected >= 0) return this.inject.splice(injected, 1)[0];
    const [, kind, sha] = req.path.split("/");
    if (req.method === "PUT" && kind === "up") {
      if (sha256(req.bytes) !== sha) return { status: 400, raw: "bad digest" };
      this.blobs.set(sha, req.bytes);
      return { status: 200, raw: "" };
    }
    const held = this.blobs.get(sha);
    if (req.method === "GET" && kind === "get" && held) {
      const served = Uint8Array.from(held);
      if (this.corrupt && served.length > 0) served[0] ^= 0xff;
      return { status: 200, raw: served };
    }
    return { status: 404, raw: "no such object" };
  }

  route(req) {
    const injected = this.inject.findIndex((i) => i.match(req));
    if (injected >= 0) {
      const i = this.inject[injected];
      if (i.once !== false) this.inject.splice(injected, 1);
      if (i.applyFirst) this.route(req); // the hub did it, then the answer was lost
      if (i.throw) throw new TypeError("connection reset");
      return i;
    }
    if (!this.validTokens.has(req.token)) return { status: 401, body: { error: { code: "token_expired", message: "expired" } } };
    const m = req.path.match(/^\/v1\/projects\/([^/]+)(\/.*)?$/);
    if (!m) return { status: 404, body: { error: { code: "not_found", message: "no route" } } };
    const [, id, rest = ""] = m;
    const p = this.project(id);
    if (rest === "/files" && req.method === "GET") {
      const files = [...p.files]
        .filter(([, f]) => !f.deleted)
        .map(([path, f]) =>
          f.blob
            ? { path, file_type: "binary", content_hash: f.blob.sha256, version: f.version, size: f.blob.size, updated_at: "", blob: f.blob }
            : { path, file_type: "text", content_hash: "h", version: f.version, size: f.content.length, updated_at: "", content: f.content },
        );
      return { status: 200, body: { cursor: p.events.length, files } };
    }
    if (rest === "/editor-state") {
      if (req.method === "GET") return { status: 200, body: p.editorState };
      if (req.body.base_revision !== p.editorState.revision) return { status: 409, body: { error: { code: "revision_conflict", message: "c", server: p.editorState } } };
      p.editorState = { state: req.body.state, revision: p.editorState.revision + 1, updated_at: new Date().toISOString() };
      return { status: 200, body: { revision: p.editorState.revision, updated_at: p.editorState.updated_at } };
    }
    if (rest === "/files:move" && req.method === "POST") return this.move(id, req.body);
    if (rest === "/blobs" && req.method === "POST") {
      if (this.blobs.has(req.body.sha256)) return { status: 200, body: { exists: true } };
      return { status: 200, body: { exists: false, upload_url: `http://storage.test/up/${req.body.sha256}`, expires_at: new Date(Date.now() + 600_000).toISOString() } };
    }
    if (rest === "/files:restore" && req.method === "POST") {
      if (req.body.op_id && p.ops.has(req.body.op_id)) return p.ops.get(req.body.op_id);
      const old = (p.history.get(req.body.path) ?? []).find((v) => v.version === req.body.version);
      if (!old || old.deleted) return { status: 404, body: { error: { code: "not_found", message: "no such version" } } };
      const { path, expected_version, op_id } = req.body;
      return this.apply(id, { kind: "put", path, content: old.content, expected_version, op_id });
    }
    const v = rest.match(/^\/files\/(.+)\/versions$/);
    if (v && req.method === "GET") {
      const path = v[1].split("/").map(decodeURIComponent).join("/");
      const before = Number(req.query.get("before") ?? Infinity);
      const limit = Number(req.query.get("limit") ?? 100);
      const all = [...(p.history.get(path) ?? [])].reverse().filter((x) => x.version < before);
      const page = all.slice(0, limit).map((x) => ({ version: x.version, content_hash: x.deleted ? null : "h", size: x.content?.length ?? 0, binary: false, deleted: x.deleted, actor: x.actor, created_at: x.created_at }));
      return { status: 200, body: { versions: page, next: all.length > limit ? page[page.length - 1].version : null } };
    }
    const f = rest.match(/^\/files\/(.+)$/);
    if (f) {
      const path = f[1].split("/").map(decodeURIComponent).join("/");
      if (req.method === "GET") {
        const file = p.files.get(path);
        const wanted = req.query.get("version");
        if (wanted !== null) {
          const old = (p.history.get(path) ?? []).find((x) => x.version === Number(wanted));
          if (!old || old.deleted) return { status: 404, body: { error: { code: "not_found", message: "no such version" } } };
          return { status: 200, body: { path, file_type: "text", content: old.content, content_hash: "h", version: old.version, size: 0, updated_at: "" } };
        }
        if (!file || file.deleted) return { status: 404, body: { error: { code: "not_found", message: "no" } } };
        if (file.blob) {
          const url = `http://storage.test/get/${file.blob.sha256}`;
          return { status: 200, body: { path, file_type: "binary", binary: true, blob: file.blob, url, content_hash: file.blob.sha256, version: file.version, size: file.blob.size, updated_at: "" } };
        }
        return { status: 200, body: { path, file_type: "text", content: file.content, content_hash: sha256(file.content), version: file.version, size: 0, updated_at: "" } };
      }
      if (req.method === "PATCH") {
        const p = this.project(id);
        if (req.body.op_id && p.ops.has(req.body.op_id)) return p.ops.get(req.body.op_id);
        const file = p.files.get(path);
        if (!file || file.deleted) return { status: 404, body: { error: { code: "not_found", message: "no" } } };
        if (file.version !== req.body.base_version) return this.apply(id, { kind: "put", path, content: file.content, expected_version: req.body.base_version });
        let content;
        try {
          content = new TextDecoder("utf-8", { fatal: true }).decode(applyDelta(Buffer.from(file.content), Buffer.from(req.body.delta, "base64")));
        } catch {
          return { status: 400, body: { error: { code: "invalid_request", message: "delta does not apply" } } };
        }
        return this.apply(id, { kind: "put", path, content, expected_version: req.body.base_version, op_id: req.body.op_id });
      }
      if (req.method === "PUT" && req.bytes) {
        if (req.contentType !== "application/octet-stream") return { status: 415, body: { error: { code: "unsupported_content", message: "octet-stream only" } } };
        if (req.bytes.length > 2 * 1024 * 1024) return { status: 413, body: { error: { code: "payload_too_large", message: "too large" } } };
        const blob = { sha256: sha256(req.bytes), size: req.bytes.length };
        this.blobs.set(blob.sha256, req.bytes);
        const ev = req.query.get("expected_version");
        return this.apply(id, { kind: "put", path, blob, expected_version: ev === null ? undefined : Number(ev), op_id: req.query.get("op_id") ?? undefined });
      }
      if (req.method === "PUT" && req.body.blob) {
        const held = this.blobs.get(req.body.blob.sha256);
        if (!held || held.length !== req.body.blob.size) return { status: 400, body: { error: { code: "invalid_request", message: "blob not held" } } };
        return this.apply(id, { kind: "put", path, blob: req.body.blob, expected_version: req.body.expected_version, op_id: req.body.op_id });
      }
      if (req.method === "PUT") return this.apply(id, { kind: "put", path, content: req.body.content, expected_version: req.body.expected_version, op_id: req.body.op_id });
      if (req.method === "DELETE") {
        const ev = req.query.get("expected_version");
        return this.apply(id, { kind: "delete", path, expected_version: ev === null ? undefined : Number(ev), op_id: req.query.get("op_id") ?? undefined });
      }
    }
    return { status: 404, body: { error: { code: "not_found", message: "no route" } } };
  }
}

class FakeSocket {
  constructor(hub, url) {
    this.hub = hub;
    this.url = url;
    this.readyState = 0;
    this.joined = new Set();
    this.from = new Map(); // project → the first seq sent since the join
    this.authed = false;
    this.sent = [];
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    setTimeout(() => {
      if (hub.offline) return this.drop(1006);
      hub.sockets.add(this);
      this.readyState = 1;
      this.onopen?.({});
    }, 1);
  }
  deliver(frame) {
    setTimeout(() => this.readyState === 1 && this.onmessage?.({ data: JSON.stringify(frame) }), 0);
  }
  /** A live event; its delta form when this socket was sent the base since its join. */
  publish(id, frame, delta) {
    if (!this.joined.has(id)) return;
    this.deliver(delta && delta.baseSeq >= this.from.get(id) ? delta.frame : frame);
  }
  send(text) {
    if (this.readyState !== 1) throw new Error("not open");
    const f = JSON.parse(text);
    this.sent.push(f);
    if (f.type === "auth") {
      if (!this.hub.validTokens.has(f.token)) return this.drop(4001);
      this.authed = true;
      this.deliver({ type: "authed", expires_at: new Date(Date.now() + 3600_000).toISOString() });
    } else if (f.type === "join") {
      const id = f.channel.replace("realtime:project:", "");
      const p = this.hub.project(id);
      if (f.since !== null && f.since < this.hub.retention) {
        this.deliver({ type: "resync_required", channel: f.channel, oldest_seq: this.hub.retention + 1 });
        return;
      }
      this.joined.add(id);
      this.from.set(id, f.since === null ? p.events.length + 1 : f.since + 1);
      this.deliver({ type: "joined", ref: f.ref, channel: f.channel, cursor: p.events.length });
      for (const e of p.events) if (f.since !== null && e.seq > f.since) this.deliver(e);
    } else if (f.type === "ping") {
      if (!this.silent) this.deliver({ type: "pong", ref: f.ref });
    }
  }
  close(code = 1000) {
    this.drop(code);
  }
  /** The connection ends (hub side or network): the client sees onclose with `code`. */
  drop(code) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.hub.sockets.delete(this);
    setTimeout(() => this.onclose?.({ code }), 0);
  }
}
