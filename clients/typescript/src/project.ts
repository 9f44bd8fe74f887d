/**
 * One open project: local-first files, the offline write queue, the event socket, conflict
 * policies, multi-tab leadership and the editor state. See docs/CLIENT.md for the design.
 *
 * State per path (kept in the store under these keys so every tab of an origin shares it):
 * - `f/<path>` Known: the last server copy seen (content, version; tombstone when deleted).
 * - `d/<path>` Draft: local text not yet acknowledged. `pending` is the newest local text
 *   (coalesced, not sent yet); `inflight` is the write being sent, persisted with its
 *   `op_id` BEFORE it is sent, so a retry after a lost answer, a crash or a reload resends
 *   the same op_id and the hub applies it once.
 *   A move is one change on the OLD path (`moveTo`, sent as `POST files:move`); the new path
 *   holds the moved text as a change marked `afterMove`, which waits for the move and is then
 *   dropped (same text as moved) or sent as a write over the version the move created.
 * - `m/cursor` the last event seq applied; `c/<id>` conflicts; `e/state` the editor state.
 */
import { applyVerified, deltaWorthSending } from "./delta.js";
import { backoffMs, encodePath, type HttpResult, NetworkError, request, uuid } from "./http.js";
import { type BinaryInfo, type BinaryIo, type BinaryWriteOptions, type BinaryWriteResult, readBinary, writeBinary } from "./binary.js";
import { Presence } from "./presence.js";
import type { Store } from "./storage.js";
import type {
  BlobRef,
  DeleteFileResponse,
  EditorStateResponse,
  ErrorDetail,
  EventFrame,
  FileListResponse,
  FileDeltaPayload,
  FileResponse,
  FileVersionsResponse,
  MoveFileResponse,
  PutEditorStateResponse,
  PresenceMember,
  PutFileResponse,
  ServerFrame,
} from "./wire.js";

export type Status = "connecting" | "online" | "offline" | "error";
export type ConflictPolicy = "server" | "client";

export interface ChangeEvent {
  path: string;
  content?: string;
  /** A binary file's new bytes, by address: fetch them with `readBinary(path)`. */
  binary?: BinaryInfo;
  deleted?: boolean;
  origin: "local" | "remote";
  seq?: number;
}

export interface Conflict {
  id: string;
  path: string;
  /** The local text that lost (policy "server") or won (policy "client"); null = a local delete. */
  local: string | null;
  /** The server copy at the time; `content` null when the server had no such file. */
  server: { content: string | null; version: number };
  /** Which copy is now current on the hub. */
  winner: ConflictPolicy;
  /** Set when the hub refused the write for good (e.g. `invalid_path`): the text is kept here. */
  error?: ErrorDetail;
  at: string;
}

interface Known {
  content?: string;
  /** A binary file (no `content`): its bytes' address. */
  blob?: BlobRef;
  version: number;
  deleted?: boolean;
}
interface Change {
  /** Monotonic across the origin's tabs: the newest local edit of this path. */
  rev: number;
  /** The oldest edit this change covers (coalesced edits keep it), for flush(). */
  firstRev: number;
  content?: string;
  deleted?: boolean;
  /** The server version this text was based on: sent as `expected_version`. */
  base: number;
  /** This path is moved to `moveTo` (locally it reads as deleted). */
  moveTo?: string;
  /** This text arrives by the move of `afterMove` here: it waits until that move is answered. */
  afterMove?: string;
}
interface Inflight extends Change {
  op_id: string;
  /** The text as a Fossil delta against the known copy at `base` (CONTRACT 12), fixed when
   * the write is first sent so a retry with the same op_id sends the same PATCH. */
  delta?: string;
  /** For a move: the server text the hub moves (the known copy at `base`). */
  moved?: string;
}
interface Draft {
  pending?: Change;
  inflight?: Inflight;
}

export interface ProjectOptions {
  storage?: "indexeddb" | "memory";
  conflict?: ConflictPolicy;
}

/** What the client passes to a project (shared plumbing, timings overridable for tests). */
export interface ProjectContext {
  baseUrl: string;
  token: (force: boolean) => Promise<string>;
  fetch: typeof fetch;
  WebSocket: typeof WebSocket;
  store: Store;
  /** Cross-tab messages (BroadcastChannel) and leadership (Web Locks); absent = single tab. */
  channel?: BroadcastChannel;
  locks?: LockManager;
  lockName: string;
  policy: ConflictPolicy;
  timing: Timing;
  random: () => number;
  onClose: () => void;
}

export interface Timing {
  /** Quiet time after the last keystroke on a path before it is sent. */
  debounceMs: number;
  /** A path typed into continuously is still sent at least this often. */
  maxDelayMs: number;
  pingMs: number;
  /** No frame for this long = the socket is dead (the hub answers pings). */
  deadMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  editorStateDebounceMs: number;
}

type Listener<T> = (value: T) => void;
interface Events {
  change: ChangeEvent;
  status: Status;
  conflict: Conflict;
  pending: number;
  editorState: unknown;
  /** Who is present changed (the full list, this tab included; see `project.presence`). */
  presence: PresenceMember[];
}

type TabMessage =
  | { t: "draft"; path: string }
  | { t: "known"; path: string }
  | { t: "conflict" }
  | { t: "flush" };

export class Project {
  readonly id: string;
  readonly editorState: { get(): unknown; set(state: unknown): void };
  /** Who has this project open (CONTRACT section 12); `project.on("presence", …)` on changes. */
  readonly presence: Presence;

  private known = new Map<string, Known>();
  /** Paths whose delta writes the hub refused (400): they are sent in full. */
  private noDelta = new Set<string>();
  /** Delta events that could not be applied to the known copy and were read over HTTP. */
  deltaFallbacks = 0;
  private drafts = new Map<string, Draft>();
  private conflictList: Conflict[] = [];
  private cursor: number | null = null;
  private statusValue: Status = "connecting";
  private listeners: { [K in keyof Events]?: Set<Listener<Events[K]>> } = {};
  private closed = false;
  private leader = false;
  private releaseLock?: () => void;

  // Sending (leader only).
  private dueAt = new Map<string, number>();
  private firstTypedAt = new Map<string, number>();
  private pumping = false;
  private pumpTimer?: ReturnType<typeof setTimeout>;
  private sendFailures = 0;
  /** A 429's Retry-After: nothing is sent before this time, whatever else wakes the queue. */
  private rateLimitedUntil = 0;
  private flushing = false;
  private flushWaiters: { rev: number; resolve: () => void }[] = [];
  /** Store writes of this tab, in order (a later write of a path must not land first). */
  private persistChain: Promise<unknown> = Promise.resolve();

  // Socket.
  private ws?: WebSocket;
  private socketAttempt = 0;
  private lastFrameAt = 0;
  private lastPingAt = 0;
  private pingTimer?: ReturnType<typeof setInterval>;
  /** HTTP requests under way: a dead socket means a dead path, so they are aborted too. */
  private requests = new Set<AbortController>();
  private reconnectTimer?: ReturnType<typeof setTimeout>;
  private refreshTimer?: ReturnType<typeof setTimeout>;
  private refSeq = 0;
  /** The socket whose join was answered (events flow on it). */
  private joinedWs?: WebSocket;
  private joining?: Promise<void>;

  // Editor state.
  private edState: { state: unknown; revision: number; dirty: boolean } = { state: null, revision: 0, dirty: false };
  private edTimer?: ReturnType<typeof setTimeout>;
  private edSaving?: Promise<void>;
  private edSaveAgain = false;

  private readonly onOnline = () => this.reconnectNow();
  private readonly onOffline = () => this.setStatus("offline");
  private readonly onMessage = (e: MessageEvent<TabMessage>) => this.background(this.tabMessage(e.data));

  constructor(
    id: string,
    private readonly ctx: ProjectContext,
  ) {
    this.id = id;
    this.editorState = {
      get: () => this.edState.state,
      set: (state: unknown) => this.setEditorState(state),
    };
    this.presence = new Presence(
      (meta) => this.sendPresence(meta),
      (members) => this.emit("presence", members),
    );
  }

  /** This tab's presence meta (e.g. the open file), throttled; see {@link Presence.set}. */
  setPresence(meta: unknown): void {
    this.presence.set(meta);
  }

  // ---- public surface ------------------------------------------------------------------

  get status(): Status {
    return this.statusValue;
  }
  get pending(): number {
    let n = 0;
    for (const d of this.drafts.values()) if (d.pending || d.inflight) n++;
    return n;
  }
  /** Paths currently present locally (server files plus local drafts, minus local deletes), binary files included. */
  paths(): string[] {
    const all = new Set([...this.known.keys(), ...this.drafts.keys()]);
    return [...all].filter((p) => !this.view(p).deleted).sort();
  }
  /** A text file's content; undefined when absent or binary (see {@link binary}). */
  read(path: string): string | undefined {
    const view = this.view(path);
    return view.deleted || view.blob ? undefined : view.content;
  }
  /** A binary file's address and version, as last known; undefined for text or absent files. */
  binary(path: string): (BinaryInfo & { version: number }) | undefined {
    const view = this.view(path);
    return !view.deleted && view.blob ? { sha256: view.blob.sha256, size: view.blob.size, version: view.version } : undefined;
  }
  /**
   * Writes a binary file (CONTRACT section 13; `data` up to 50 MiB). Online-only: not queued
   * as a draft; resolves once the hub has it, rejects with a {@link SynchubError} when the hub
   * refuses (e.g. `version_conflict`: the file changed since this client last saw it) or with
   * a NetworkError after a few retries (the same `op_id`, so applied at most once). Unsent
   * text of the same path is refused: flush() first.
   */
  async writeBinary(path: string, data: Blob | ArrayBuffer | Uint8Array, options: BinaryWriteOptions = {}): Promise<BinaryWriteResult> {
    if (this.closed) throw new Error("project is closed");
    const d = this.drafts.get(path);
    if (d?.pending || d?.inflight) throw new Error(`synchub: ${path} has unsent text; flush() before writing it as binary`);
    const blob = data instanceof Blob ? data : new Blob([data as BlobPart]);
    const expected = options.expectedVersion === undefined ? this.knownVersion(path) : options.expectedVersion;
    const written = await writeBinary(this.binaryIo(), path, blob, expected, options);
    await this.setKnown(path, { version: written.version, blob: { sha256: written.sha256, size: written.size } }, false, undefined, "local");
    return written;
  }
  /** A file's bytes (a binary file's checked against its sha256; a text file's as UTF-8). Online-only. */
  readBinary(path: string): Promise<Blob> {
    return readBinary(this.binaryIo(), path);
  }
  conflicts(): Conflict[] {
    return [...this.conflictList];
  }
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const all = this.listeners as Record<string, Set<Listener<never>> | undefined>;
    const set = (all[event] ??= new Set()) as Set<Listener<Events[K]>>;
    set.add(listener);
    return () => set.delete(listener);
  }

  write(path: string, content: string): void {
    this.localChange(path, { content });
  }
  delete(path: string): void {
    if (this.view(path).deleted) return;
    this.localChange(path, { deleted: true });
  }
  /**
   * Renames a file: local at once, then sent as one atomic `files:move` (one `bulk:apply` for
   * everyone else). Unsent text of `from` is carried over to `to` and written after the move.
   * Throws when `to` exists, or when `from` is binary. A file the hub has never had is just
   * written at `to` instead.
   */
  move(from: string, to: string): void {
    if (this.binary(from)) throw new Error(`synchub: ${from} is binary: move it with readBinary, writeBinary and delete`);
    const content = this.read(from);
    if (content === undefined || from === to) return;
    if (!this.view(to).deleted) throw new Error(`synchub: cannot move ${from}: ${to} exists`);
    const d = this.drafts.get(from);
    // Whether `from` exists on the hub by the time the move is sent (after what is in flight).
    const fromOnHub = d?.inflight ? !d.inflight.deleted : this.knownVersion(from) > 0 || d?.pending?.afterMove !== undefined;
    const toOnHub = this.drafts.get(to)?.inflight !== undefined || this.knownVersion(to) > 0;
    if (!fromOnHub || toOnHub) {
      this.write(to, content);
      this.delete(from);
      return;
    }
    // `to` first, so a leader never sees the move without the text that waits for it.
    this.localChange(to, { content, afterMove: from });
    this.localChange(from, { deleted: true, moveTo: to });
  }
  /** Resolves when everything written so far (in any tab) is acknowledged by the hub. */
  async flush(): Promise<void> {
    await this.persistChain;
    const rev = this.maxRev();
    if (this.flushDone(rev)) return;
    const done = new Promise<void>((resolve) => this.flushWaiters.push({ rev, resolve }));
    if (this.leader) {
      this.flushing = true;
      this.kick(0);
    } else this.post({ t: "flush" });
    return done;
  }
  /**
   * The file's versions on the hub, newest first (CONTRACT 14): `{versions, next}`; pass
   * `next` as `before` for the following page. Throws the hub's error (`code`, `message`)
   * when it refuses, or a NetworkError when it cannot be reached.
   */
  async history(path: string, page: { before?: number; limit?: number } = {}): Promise<FileVersionsResponse> {
    const query = new URLSearchParams();
    if (page.before !== undefined) query.set("before", String(page.before));
    if (page.limit !== undefined) query.set("limit", String(page.limit));
    const search = query.toString();
    const suffix = `/files/${encodePath(path)}/versions${search === "" ? "" : `?${search}`}`;
    return this.answer(await this.http<FileVersionsResponse>("GET", suffix));
  }
  /** One earlier version of a file, with its content (410 `history_trimmed` once retention removed it). */
  async readVersion(path: string, version: number): Promise<FileResponse> {
    return this.answer(await this.http<FileResponse>("GET", `/files/${encodePath(path)}?version=${version}`));
  }
  /**
   * Makes an earlier version the file's current one on the hub (a deleted file comes back
   * the same way): one normal `file:update`, which reaches this and every other tab as a
   * remote change. Resolves with the new version; throws as {@link history} does.
   */
  async restore(path: string, version: number): Promise<number> {
    const body = { path, version, op_id: uuid() };
    return this.answer(await this.http<PutFileResponse>("POST", "/files:restore", body)).version;
  }
  /** Forget a conflict the user has dealt with. */
  async dismissConflict(id: string): Promise<void> {
    this.conflictList = this.conflictList.filter((c) => c.id !== id);
    await this.ctx.store.delete(`c/${id}`);
    this.post({ t: "conflict" });
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of [this.pumpTimer, this.reconnectTimer, this.refreshTimer, this.edTimer]) clearTimeout(t);
    clearInterval(this.pingTimer);
    this.presence.close();
    for (const request of this.requests) request.abort();
    this.ws?.close(1000);
    this.releaseLock?.();
    if (typeof window !== "undefined") {
      window.removeEventListener("online", this.onOnline);
      window.removeEventListener("offline", this.onOffline);
    }
    this.ctx.channel?.removeEventListener("message", this.onMessage);
    void this.persistChain.finally(() => {
      this.ctx.channel?.close();
      this.ctx.store.close();
    });
    this.ctx.onClose();
  }

  // ---- start ---------------------------------------------------------------------------

  /** Loads the local copy (so the page shows it before the network answers), then goes online. */
  async open(): Promise<void> {
    const store = this.ctx.store;
    for (const [k, v] of await store.entries<Known>("f/")) this.known.set(k.slice(2), v);
    for (const [k, v] of await store.entries<Draft>("d/")) this.drafts.set(k.slice(2), v);
    this.conflictList = (await store.entries<Conflict>("c/")).map(([, c]) => c).sort((a, b) => a.at.localeCompare(b.at));
    this.cursor = (await store.get<number>("m/cursor")) ?? null;
    this.edState = (await store.get<typeof this.edState>("e/state")) ?? this.edState;
    this.ctx.channel?.addEventListener("message", this.onMessage);
    if (typeof window !== "undefined") {
      window.addEventListener("online", this.onOnline);
      window.addEventListener("offline", this.onOffline);
    }
    this.electLeader();
    this.connect();
    this.background(this.loadEditorState());
  }

  private electLeader(): void {
    const locks = this.ctx.locks;
    if (!locks) {
      this.background(this.becomeLeader());
      return;
    }
    void locks
      .request(this.ctx.lockName, () => {
        if (this.closed) return undefined;
        this.background(this.becomeLeader());
        // Held for the tab's life; the browser releases it when the tab goes away.
        return new Promise<void>((resolve) => (this.releaseLock = resolve));
      })
      .catch(() => undefined);
  }

  private async becomeLeader(): Promise<void> {
    this.leader = true;
    // Another tab may have queued (or left in flight) writes: take them all over.
    const stored = await this.ctx.store.entries<Draft>("d/");
    this.drafts = new Map(stored.map(([k, v]) => [k.slice(2), v]));
    for (const path of this.drafts.keys()) this.dueAt.set(path, 0);
    this.emit("pending", this.pending);
    this.kick(0);
  }

  // ---- local edits ---------------------------------------------------------------------

  private view(path: string): Known {
    const d = this.drafts.get(path);
    const change = d?.pending ?? d?.inflight;
    if (change) return { content: change.content, deleted: change.deleted, version: change.base };
    return this.known.get(path) ?? { version: 0, deleted: true };
  }

  private knownVersion(path: string): number {
    const k = this.known.get(path);
    return !k || k.deleted ? 0 : k.version;
  }

  private maxRev(): number {
    let rev = 0;
    for (const d of this.drafts.values()) rev = Math.max(rev, d.pending?.rev ?? 0, d.inflight?.rev ?? 0);
    return rev;
  }

  private localChange(path: string, change: { content?: string; deleted?: boolean; moveTo?: string; afterMove?: string }): void {
    if (this.closed) throw new Error("project is closed");
    // A new change of a path whose move is not sent yet replaces the move: the text waiting
    // at the target becomes a plain write (the result is the same; only not atomic).
    const brokenMove = change.moveTo === undefined ? this.drafts.get(path)?.pending?.moveTo : undefined;
    // Date-based so that revs of different tabs interleave in time order.
    const rev = Math.max(this.maxRev() + 1, Date.now() * 1000);
    const base = this.knownVersion(path);
    const apply = (d: Draft | undefined): Draft => {
      const next: Draft = { ...d };
      const prior = next.pending ?? next.inflight;
      const afterMove = change.afterMove ?? next.pending?.afterMove;
      next.pending = {
        rev,
        firstRev: next.pending?.firstRev ?? rev,
        base: prior ? prior.base : base,
        ...(change.deleted ? { deleted: true } : { content: change.content }),
        ...(change.moveTo !== undefined ? { moveTo: change.moveTo } : {}),
        ...(afterMove !== undefined ? { afterMove } : {}),
      };
      return next;
    };
    this.drafts.set(path, apply(this.drafts.get(path)));
    if (brokenMove !== undefined) this.unblock(brokenMove, path);
    this.emit("change", change.deleted ? { path, deleted: true, origin: "local" } : { path, content: change.content, origin: "local" });
    this.emit("pending", this.pending);
    const now = Date.now();
    if (!this.firstTypedAt.has(path)) this.firstTypedAt.set(path, now);
    const due = Math.min(now + this.ctx.timing.debounceMs, this.firstTypedAt.get(path)! + this.ctx.timing.maxDelayMs);
    this.dueAt.set(path, due);
    this.persist(async () => {
      const stored = await this.ctx.store.update<Draft>(`d/${path}`, (d) => apply(d));
      // A later local change of this path already in memory is stored by its own step: until
      // then the copy in memory is the newer one (else a rename could briefly show both paths).
      const newer = (this.drafts.get(path)?.pending?.rev ?? 0) > (stored?.pending?.rev ?? 0);
      if (stored && !newer) this.drafts.set(path, stored);
      this.post({ t: "draft", path });
      if (brokenMove !== undefined) await this.storeUnblock(brokenMove, path);
      if (this.leader) this.kick(due - Date.now());
    });
  }

  /** The text at `to` no longer waits for a move from `from` (in memory; see storeUnblock). */
  private unblock(to: string, from: string, base?: number): void {
    const d = this.drafts.get(to);
    if (d?.pending?.afterMove !== from) return;
    const { afterMove: _, ...pending } = d.pending;
    this.drafts.set(to, { ...d, pending: { ...pending, base: base ?? pending.base } });
  }

  private async storeUnblock(to: string, from: string, base?: number): Promise<void> {
    const next = await this.ctx.store.update<Draft>(`d/${to}`, (d) => {
      if (d?.pending?.afterMove !== from) return d;
      const { afterMove: _, ...pending } = d.pending;
      return { ...d, pending: { ...pending, base: base ?? pending.base } };
    });
    if (next) this.drafts.set(to, next);
    this.post({ t: "draft", path: to });
  }

  /** Text that arrives by a move still waiting to be answered is not sent yet. */
  private waitsForMove(path: string, d: Draft): boolean {
    const from = d.pending?.afterMove;
    if (from === undefined || d.inflight) return false;
    const source = this.drafts.get(from);
    return (source?.inflight ?? source?.pending)?.moveTo === path;
  }

  /** Resolves once every store write queued so far, including ones queued meanwhile, is done. */
  private async persisted(): Promise<void> {
    for (let chain = this.persistChain; ; chain = this.persistChain) {
      await chain;
      if (chain === this.persistChain) return;
    }
  }

  private persist(step: () => Promise<void>): void {
    this.persistChain = this.persistChain.then(step).catch((err) => console.error("synchub: storage", err));
  }

  // ---- sending (leader) ----------------------------------------------------------------

  private kick(delayMs: number): void {
    if (this.closed || !this.leader) return;
    clearTimeout(this.pumpTimer);
    const wait = Math.max(0, delayMs, this.rateLimitedUntil - Date.now());
    this.pumpTimer = setTimeout(() => this.background(this.pump()), wait);
  }

  private nextDue(now: number): { path?: string; wait?: number } {
    let wait: number | undefined;
    for (const [path, d] of this.drafts) {
      if ((!d.pending && !d.inflight) || this.waitsForMove(path, d)) continue;
      // An unanswered write is resent at once; new text waits for its debounce (not on flush).
      const due = d.inflight || this.flushing ? 0 : (this.dueAt.get(path) ?? 0);
      if (due <= now) return { path };
      wait = Math.min(wait ?? Infinity, due - now);
    }
    return { wait };
  }

  private async pump(): Promise<void> {
    if (this.pumping || this.closed || !this.leader) return;
    if (Date.now() < this.rateLimitedUntil) return this.kick(0);
    this.pumping = true;
    try {
      for (let guard = 0; guard < 10_000 && !this.closed; guard++) {
        // Local changes made while the last write was out must be in the store before the
        // next one is taken from it (else the store's older copy would replace it in memory).
        await this.persisted();
        const { path, wait } = this.nextDue(Date.now());
        if (path === undefined) {
          if (wait === undefined) this.flushing = false;
          else this.kick(wait);
          return;
        }
        const retryIn = await this.sendOne(path);
        if (retryIn !== undefined) {
          this.kick(retryIn);
          return;
        }
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Sends the path's write; returns a delay when it must be retried later (same op_id). */
  private async sendOne(path: string): Promise<number | undefined> {
    const key = `d/${path}`;
    const draft = await this.ctx.store.update<Draft>(key, (d) => {
      if (!d?.pending || d.inflight) return d;
      const moved = d.pending.moveTo !== undefined ? this.known.get(path) : undefined;
      const delta = this.deltaFor(path, d.pending);
      return {
        inflight: {
          ...d.pending,
          op_id: uuid(),
          ...(moved && !moved.deleted && moved.version === d.pending.base ? { moved: moved.content } : {}),
          ...(delta !== undefined ? { delta } : {}),
        },
      };
    });
    this.firstTypedAt.delete(path);
    if (!draft?.inflight) {
      this.drafts.delete(path);
      return undefined;
    }
    this.drafts.set(path, draft);
    const w = draft.inflight;
    if (w.moveTo !== undefined) return this.sendMove(path, w);
    let result: HttpResult<PutFileResponse | DeleteFileResponse>;
    try {
      result = await this.http<PutFileResponse | DeleteFileResponse>(
        w.deleted ? "DELETE" : w.delta !== undefined ? "PATCH" : "PUT",
        `/files/${encodePath(path)}` + (w.deleted ? `?expected_version=${w.base}&op_id=${w.op_id}` : ""),
        w.deleted
          ? undefined
          : w.delta !== undefined
            ? { base_version: w.base, delta: w.delta, op_id: w.op_id }
            : { content: w.content, expected_version: w.base, op_id: w.op_id },
      );
    } catch (err) {
      if (!(err instanceof NetworkError)) throw err;
      this.setStatus("offline");
      return this.nextBackoff();
    }
    if (result.ok || (w.deleted && result.status === 404)) {
      this.sendFailures = 0;
      const version = result.ok ? result.body.version : this.knownVersion(path);
      await this.setKnown(path, w.deleted ? { version, deleted: true } : { version, content: w.content });
      // After a delete the path does not exist: newer text is created with expected_version 0.
      await this.settle(path, w.op_id, w.deleted ? 0 : version);
      return undefined;
    }
    const { error } = result;
    if (result.status === 409 && error.code === "version_conflict") {
      await this.conflict(path, w, error);
      return undefined;
    }
    if (w.delta !== undefined && result.status === 400) {
      // The delta did not apply (nothing was written, so the op_id is unspent): send the
      // text in full, now and for this path's next writes.
      this.noDelta.add(path);
      await this.ctx.store.update<Draft>(key, (d) => (d?.inflight?.op_id === w.op_id ? { ...d, inflight: { ...d.inflight, delta: undefined } } : d));
      this.drafts.set(path, (await this.ctx.store.get<Draft>(key)) ?? {});
      return 0;
    }
    const retryIn = this.retryDelay(result);
    if (retryIn !== undefined) return retryIn;
    await this.refused(path, w.deleted ? null : (w.content ?? null), error);
    await this.settle(path, w.op_id, undefined, true);
    return undefined;
  }

  /** A text write as a delta against the known server copy it is based on, when that is
   * smaller than half the text (CONTRACT 12); undefined: send the content. */
  private deltaFor(path: string, change: Change): string | undefined {
    if (change.deleted || change.content === undefined || change.base === 0 || this.noDelta.has(path)) return undefined;
    const known = this.known.get(path);
    if (!known || known.deleted || known.version !== change.base || known.content === undefined) return undefined;
    return deltaWorthSending(known.content, change.content);
  }

  /** How long to wait before resending after a failure worth retrying (same op_id); undefined = final. */
  private retryDelay(result: { status: number; retryAfterMs?: number }): number | undefined {
    const { status } = result;
    if (status === 429) {
      const wait = result.retryAfterMs ?? this.nextBackoff();
      this.rateLimitedUntil = Date.now() + wait;
      return wait;
    }
    if (status === 401 || status === 408 || status >= 500) {
      if (status >= 500) this.setStatus("offline");
      return this.nextBackoff();
    }
    return undefined;
  }

  /** Refused for good (invalid path, too large, forbidden, ...): the text is kept as a conflict. */
  private async refused(path: string, local: string | null, error: ErrorDetail): Promise<void> {
    this.setStatus("error");
    const server = this.known.get(path);
    await this.addConflict({
      path,
      local,
      server: { content: server?.deleted ? null : (server?.content ?? null), version: server?.version ?? 0 },
      winner: "server",
      error,
    });
  }

  /** Sends a move (the change of its old path `from`) as one `files:move`. */
  private async sendMove(from: string, w: Inflight): Promise<number | undefined> {
    const to = w.moveTo!;
    let result: HttpResult<MoveFileResponse>;
    try {
      result = await this.http<MoveFileResponse>("POST", "/files:move", { from, to, expected_version: w.base, op_id: w.op_id });
    } catch (err) {
      if (!(err instanceof NetworkError)) throw err;
      this.setStatus("offline");
      return this.nextBackoff();
    }
    if (result.ok) {
      this.sendFailures = 0;
      await this.moveDone(from, w, result.body.version ?? 0);
      return undefined;
    }
    const { status, error } = result;
    if (status === 409 || status === 404) {
      await this.splitMove(from, w);
      return undefined;
    }
    const retryIn = this.retryDelay(result);
    if (retryIn !== undefined) return retryIn;
    // Refused for good (e.g. an invalid target path): `from` stays, the moved text is kept.
    const waiting = this.drafts.get(to)?.pending;
    await this.refused(to, waiting?.afterMove === from && !waiting.deleted ? (waiting.content ?? null) : (w.moved ?? null), error);
    await this.dropWaiting(to, from);
    await this.settle(from, w.op_id, undefined);
    this.emitView(from);
    this.emitView(to);
    return undefined;
  }

  /** The move is done: `to` is at `version` with the moved text; text typed since is sent over it. */
  private async moveDone(from: string, w: Inflight, version: number): Promise<void> {
    const to = w.moveTo!;
    if (w.moved !== undefined) await this.setKnown(to, { version, content: w.moved });
    await this.setKnown(from, { version: w.base, deleted: true });
    const next = await this.ctx.store.update<Draft>(`d/${to}`, (d) => {
      const p = d?.pending;
      if (!d || p?.afterMove !== from) return d;
      if (w.moved !== undefined && p.moveTo === undefined && !p.deleted && p.content === w.moved) return d.inflight ? { inflight: d.inflight } : undefined;
      const { afterMove: _, ...pending } = p;
      return { ...d, pending: { ...pending, base: version } };
    });
    if (next) this.drafts.set(to, next);
    else this.drafts.delete(to);
    this.dueAt.set(to, 0);
    this.post({ t: "draft", path: to });
    // `from` no longer exists: text written there since is created with expected_version 0.
    await this.settle(from, w.op_id, 0);
  }

  /**
   * The hub refused the move as a whole (409: `from` changed or `to` exists; 404: `from` is
   * gone): it becomes its two parts, a write of the text at `to` (expected_version 0) and a
   * delete of `from` at the version the move expected, each then handled by the conflict
   * policy like any other write, so no text is lost.
   */
  private async splitMove(from: string, w: Inflight): Promise<void> {
    const to = w.moveTo!;
    await this.storeUnblock(to, from);
    this.dueAt.set(to, 0);
    const next = await this.ctx.store.update<Draft>(`d/${from}`, (d) => {
      if (d?.inflight?.op_id !== w.op_id) return d;
      const { moveTo: _, moved: __, ...rest } = d.inflight;
      return { ...d, inflight: { ...rest, deleted: true, op_id: uuid() } };
    });
    if (next) this.drafts.set(from, next);
  }

  /** Drops the text waiting at `to` for a move that will not happen (it is kept elsewhere). */
  private async dropWaiting(to: string, from: string): Promise<void> {
    const next = await this.ctx.store.update<Draft>(`d/${to}`, (d) => {
      if (d?.pending?.afterMove !== from) return d;
      return d.inflight ? { inflight: d.inflight } : undefined;
    });
    if (next) this.drafts.set(to, next);
    else this.drafts.delete(to);
    this.post({ t: "draft", path: to });
    this.emit("pending", this.pending);
    this.checkFlush();
  }

  private emitView(path: string, origin: "local" | "remote" = "remote", seq?: number): void {
    const view = this.view(path);
    const at = seq === undefined ? {} : { seq };
    if (view.deleted) this.emit("change", { path, deleted: true, origin, ...at });
    else if (view.blob) this.emit("change", { path, binary: { sha256: view.blob.sha256, size: view.blob.size }, origin, ...at });
    else this.emit("change", { path, content: view.content, origin, ...at });
  }

  private nextBackoff(): number {
    const t = this.ctx.timing;
    return backoffMs(this.sendFailures++, t.backoffBaseMs, t.backoffMaxMs, this.ctx.random);
  }

  /** The in-flight write got its final answer: drop it; newer text builds on `version`. */
  private async settle(path: string, opId: string, version: number | undefined, dropPending = false): Promise<void> {
    const next = await this.ctx.store.update<Draft>(`d/${path}`, (d) => {
      if (!d || d.inflight?.op_id !== opId) return d;
      if (!d.pending || dropPending) return undefined;
      return { pending: { ...d.pending, base: version ?? d.pending.base } };
    });
    if (next) this.drafts.set(path, next);
    else this.drafts.delete(path);
    this.post({ t: "draft", path });
    this.emit("pending", this.pending);
    this.checkFlush();
  }

  private async conflict(path: string, w: Inflight, error: ErrorDetail): Promise<void> {
    const current = error.current_version ?? 0;
    let server: { content: string | null; version: number } = { content: null, version: current };
    // A binary server copy has no text (`content` stays null): it is kept as known by address.
    let serverBlob: BlobRef | undefined;
    try {
      const got = await this.http<FileResponse>("GET", `/files/${encodePath(path)}`);
      if (got.ok) {
        server = { content: got.body.content ?? null, version: got.body.version };
        serverBlob = got.body.blob;
      }
    } catch {
      // Offline again: the event stream brings the server copy later.
    }
    const latest = this.drafts.get(path)?.pending ?? w;
    const local = latest.deleted ? null : (latest.content ?? null);
    if (server.version >= current) {
      const next: Known = serverBlob
        ? { version: server.version, blob: serverBlob }
        : server.content === null
          ? { version: server.version, deleted: true }
          : { version: server.version, content: server.content };
      await this.setKnown(path, next);
    }
    await this.addConflict({ path, local, server, winner: this.ctx.policy });
    if (this.ctx.policy === "server") {
      await this.settle(path, w.op_id, undefined, true);
      const view = this.view(path);
      this.emit("change", { path, content: view.content, deleted: view.deleted, origin: "remote" });
      return;
    }
    // Client wins: the same text again over the version the hub has now, as a new operation.
    const next = await this.ctx.store.update<Draft>(`d/${path}`, (d) =>
      d?.inflight?.op_id === w.op_id ? { ...d, inflight: { ...d.inflight, base: server.version, op_id: uuid() } } : d,
    );
    if (next) this.drafts.set(path, next);
  }

  private async addConflict(c: Omit<Conflict, "id" | "at">): Promise<void> {
    const conflict: Conflict = { ...c, id: uuid(), at: new Date().toISOString() };
    this.conflictList.push(conflict);
    await this.ctx.store.put(`c/${conflict.id}`, conflict);
    this.post({ t: "conflict" });
    this.emit("conflict", conflict);
  }

  private flushDone(rev: number): boolean {
    for (const d of this.drafts.values()) {
      if ((d.pending && d.pending.firstRev <= rev) || (d.inflight && d.inflight.firstRev <= rev)) return false;
    }
    return true;
  }

  private checkFlush(): void {
    this.flushWaiters = this.flushWaiters.filter((w) => {
      if (!this.flushDone(w.rev)) return true;
      w.resolve();
      return false;
    });
  }

  // ---- known server state --------------------------------------------------------------

  /** Records a server copy unless a newer one is known already (versions only grow). */
  private async setKnown(path: string, next: Known, force = false, seq?: number, origin: "local" | "remote" = "remote"): Promise<boolean> {
    const before = this.fingerprint(path);
    let changed = false;
    const stored = await this.ctx.store.update<Known>(`f/${path}`, (k) => {
      if (!force && k && k.version > next.version) return k;
      if (!force && k && k.version === next.version && !!k.deleted === !!next.deleted) return k;
      changed = true;
      return next;
    });
    if (stored) this.known.set(path, stored);
    if (!changed) return false;
    this.post({ t: "known", path });
    if (this.fingerprint(path) !== before) this.emitView(path, origin, seq);
    return true;
  }

  /** What a reader sees at `path`, as one comparable value (text, binary address, or absent). */
  private fingerprint(path: string): string | undefined {
    const view = this.view(path);
    if (view.deleted) return undefined;
    return view.blob ? `\u0000blob:${view.blob.sha256}` : `\u0001${view.content ?? ""}`;
  }

  private async setCursor(seq: number): Promise<void> {
    this.cursor = seq;
    await this.ctx.store.update<number>("m/cursor", (c) => Math.max(c ?? 0, seq));
  }

  /** The full file list, replacing what is known (start without a cursor; resync_required). */
  private async reloadFiles(): Promise<boolean> {
    let list: HttpResult<FileListResponse>;
    try {
      list = await this.http<FileListResponse>("GET", "/files?include_content=true");
    } catch {
      return false;
    }
    if (!list.ok) {
      this.setStatus("error");
      return false;
    }
    const present = new Set<string>();
    for (const f of list.body.files) {
      present.add(f.path);
      await this.setKnown(f.path, f.blob ? { version: f.version, blob: f.blob } : { version: f.version, content: f.content ?? "" }, true);
    }
    for (const [path, k] of this.known) {
      if (!present.has(path) && !k.deleted) await this.setKnown(path, { version: k.version, deleted: true }, true);
    }
    await this.ctx.store.put("m/cursor", list.body.cursor);
    this.cursor = list.body.cursor;
    return true;
  }

  // ---- socket --------------------------------------------------------------------------

  private get channelName(): string {
    return `realtime:project:${this.id}`;
  }

  private connect(): void {
    if (this.closed) return;
    clearTimeout(this.reconnectTimer);
    if (this.statusValue !== "error") this.setStatus(this.socketAttempt === 0 ? "connecting" : "offline");
    this.background(this.openSocket());
  }

  private async openSocket(): Promise<void> {
    let token: string;
    try {
      token = await this.ctx.token(false);
    } catch {
      this.scheduleReconnect();
      return;
    }
    if (this.closed) return;
    const ws = new this.ctx.WebSocket(this.ctx.baseUrl.replace(/^http/, "ws") + "/v1/realtime");
    this.ws = ws;
    ws.onopen = () => {
      this.lastFrameAt = Date.now();
      ws.send(JSON.stringify({ type: "auth", token }));
      this.joining = this.join(ws);
      clearInterval(this.pingTimer);
      // Checked every second (pings still go every pingMs), so a dead socket is noticed
      // within deadMs + 1 s rather than deadMs + pingMs.
      this.lastPingAt = Date.now();
      this.pingTimer = setInterval(() => this.heartbeat(ws), Math.min(this.ctx.timing.pingMs, 1000));
    };
    ws.onmessage = (e) => {
      this.lastFrameAt = Date.now();
      let frame: ServerFrame;
      try {
        frame = JSON.parse(String(e.data)) as ServerFrame;
      } catch {
        return;
      }
      this.background(this.frame(ws, frame));
    };
    ws.onclose = (e) => this.socketClosed(ws, e.code);
    ws.onerror = () => undefined;
  }

  /** The socket ended (closed by the hub, the network, or dropped by us as dead). */
  private socketClosed(ws: WebSocket, code: number): void {
    if (this.ws !== ws) return;
    this.ws = undefined;
    ws.onclose = ws.onmessage = ws.onopen = null;
    clearInterval(this.pingTimer);
    clearTimeout(this.refreshTimer);
    this.presence.disconnected();
    if (this.closed) return;
    this.setStatus(code === 4001 || code === 4003 || code === 4010 ? "error" : "offline");
    // Token expired (4009) or refused (4001): fetch a fresh one before reconnecting; queued
    // writes stay queued meanwhile.
    if (code === 4009 || code === 4001) void this.ctx.token(true).catch(() => undefined);
    // 4009: reconnect with the fresh token now. 1012: the hub is restarting (CONTRACT 8);
    // the load balancer sends the new socket to another hub, so there is nothing to wait for.
    this.scheduleReconnect(code === 4009 || code === 1012 ? 0 : undefined);
  }

  /** Closes a socket we no longer trust and reconnects at once (resuming with `since`). */
  private drop(ws: WebSocket): void {
    try {
      ws.close(4000);
    } catch {
      // already closing
    }
    this.socketClosed(ws, 4000);
  }

  private async join(ws: WebSocket): Promise<void> {
    if (this.cursor === null && !(await this.reloadFiles())) {
      this.drop(ws);
      return;
    }
    if (this.ws !== ws || ws.readyState !== 1) return;
    ws.send(JSON.stringify({ type: "join", ref: String(++this.refSeq), channel: this.channelName, since: this.cursor }));
  }

  /** Sends presence meta on the joined socket; false when there is none yet. */
  private sendPresence(meta: unknown): boolean {
    const ws = this.joinedWs;
    if (!ws || this.ws !== ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify({ type: "presence", ref: `presence${++this.refSeq}`, channel: this.channelName, meta }));
    return true;
  }

  private heartbeat(ws: WebSocket): void {
    const now = Date.now();
    if (now - this.lastFrameAt > this.ctx.timing.deadMs) {
      // Dead socket (no pong): drop it; onclose reconnects with `since`. An HTTP write under
      // way on the same dead path would hang as long: abort it, it is resent (same op_id).
      this.drop(ws);
      for (const request of this.requests) request.abort();
      return;
    }
    if (now - this.lastPingAt < this.ctx.timing.pingMs) return;
    this.lastPingAt = now;
    if (ws.readyState === 1) ws.send(JSON.stringify({ type: "ping", ref: String(++this.refSeq) }));
  }

  private scheduleReconnect(delay?: number): void {
    if (this.closed) return;
    const t = this.ctx.timing;
    const wait = delay ?? backoffMs(this.socketAttempt++, t.backoffBaseMs, t.backoffMaxMs, this.ctx.random);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.connect(), wait);
  }

  /** The browser says the network is back: reconnect and send now rather than after backoff. */
  private reconnectNow(): void {
    this.socketAttempt = 0;
    this.sendFailures = 0;
    if (!this.ws) this.connect();
    this.kick(0);
  }

  private async frame(ws: WebSocket, frame: ServerFrame): Promise<void> {
    switch (frame.type) {
      case "authed": {
        this.scheduleRefresh(ws, Date.parse(frame.expires_at));
        return;
      }
      case "joined":
        await this.joining;
        this.joinedWs = ws;
        this.socketAttempt = 0;
        this.setStatus("online");
        this.sendFailures = 0;
        this.kick(0);
        this.presence.joined();
        return;
      case "resync_required": {
        await this.joining;
        this.cursor = null;
        this.joining = this.join(ws);
        return;
      }
      case "event":
        await this.joining;
        await this.applyEvent(ws, frame);
        return;
      case "presence_state":
        if (frame.channel === this.channelName && this.ws === ws) this.presence.state(frame);
        return;
      case "presence_diff":
        if (frame.channel === this.channelName && this.ws === ws) this.presence.diff(frame);
        return;
      case "error":
        // A refused presence update (rate, size) is not a broken channel.
        if (typeof frame.ref === "string" && frame.ref.startsWith("presence")) return;
        if (frame.channel === this.channelName) this.setStatus("error");
        return;
      default:
        return;
    }
  }

  private applyChain: Promise<void> = Promise.resolve();

  private applyEvent(ws: WebSocket, frame: EventFrame): Promise<void> {
    // Events are applied strictly one after another, in seq order.
    this.applyChain = this.applyChain.then(async () => {
      if (frame.channel !== this.channelName || this.ws !== ws) return;
      if (this.cursor !== null && frame.seq <= this.cursor) return;
      if (this.cursor !== null && frame.seq !== this.cursor + 1) {
        // A gap should never happen; if it does, rejoin from what was applied.
        this.drop(ws);
        return;
      }
      switch (frame.event) {
        case "file:update": {
          const p = frame.payload;
          if (!("delta" in p)) {
            await this.setKnown(p.file_path, known(p), false, frame.seq);
            break;
          }
          const content = await this.fromDelta(p);
          if (content === null) {
            // Not even a read worked: rejoin from the last applied seq (the replay carries contents).
            this.drop(ws);
            return;
          }
          if (content !== undefined) await this.setKnown(p.file_path, { version: p.version, content }, false, frame.seq);
          break;
        }
        case "file:delete": {
          const p = frame.payload;
          await this.setKnown(p.file_path, { version: p.version, deleted: true }, false, frame.seq);
          break;
        }
        case "bulk:apply": {
          const p = frame.payload;
          for (const f of p.files) await this.setKnown(f.file_path, known(f), false, frame.seq);
          for (const d of p.deletes) await this.setKnown(d.file_path, { version: d.version, deleted: true }, false, frame.seq);
          break;
        }
        case "project:deleted":
          this.setStatus("error");
          break;
      }
      await this.setCursor(frame.seq);
    });
    return this.applyChain;
  }

  /** The content a delta event stands for (CONTRACT 12): applied to the known copy when it
   * is the event's base and the result has the event's hash, else read over HTTP.
   * undefined: nothing to record (known already, or the file is gone); null: unreachable. */
  private async fromDelta(p: FileDeltaPayload): Promise<string | null | undefined> {
    const known = this.known.get(p.file_path);
    if (known && known.version >= p.version) return undefined; // e.g. the echo of our own write
    if (known && !known.deleted && known.version === p.base_version && known.content !== undefined) {
      const content = await applyVerified(known.content, p.delta, p.content_hash);
      if (content !== undefined) return content;
    }
    this.deltaFallbacks++;
    try {
      const got = await this.http<FileResponse>("GET", `/files/${encodePath(p.file_path)}`);
      if (got.ok) return got.body.content;
      return got.status === 404 ? undefined : null;
    } catch {
      return null;
    }
  }

  private scheduleRefresh(ws: WebSocket, expiresAt: number): void {
    if (!Number.isFinite(expiresAt)) return;
    clearTimeout(this.refreshTimer);
    const left = expiresAt - Date.now();
    // A minute early, or at 80% of a short lifetime.
    const wait = Math.max(0, Math.min(left - 60_000, left * 0.8));
    this.refreshTimer = setTimeout(async () => {
      try {
        const token = await this.ctx.token(true);
        if (this.ws === ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "auth", token }));
      } catch {
        // The socket closes with 4009 at expiry and reconnects with a fresh token then.
      }
    }, wait);
  }

  // ---- editor state --------------------------------------------------------------------

  private setEditorState(state: unknown): void {
    this.edState = { ...this.edState, state, dirty: true };
    this.emit("editorState", state);
    this.background(this.ctx.store.put("e/state", this.edState));
    clearTimeout(this.edTimer);
    this.edTimer = setTimeout(() => this.background(this.saveEditorState()), this.ctx.timing.editorStateDebounceMs);
  }

  private async loadEditorState(): Promise<void> {
    try {
      const got = await this.http<EditorStateResponse>("GET", "/editor-state");
      if (!got.ok) return;
      if (this.edState.dirty) return void this.saveEditorState();
      if (got.body.revision !== this.edState.revision) {
        this.edState = { state: got.body.state, revision: got.body.revision, dirty: false };
        await this.ctx.store.put("e/state", this.edState);
        this.emit("editorState", got.body.state);
      }
    } catch {
      // Offline: the local copy stands; it is saved when a later set() finds the network.
    }
  }

  /** One save in flight at a time: two PUTs with the same base_revision would make the
   * second a 409 against our own first one. A save asked for meanwhile runs after it. */
  private saveEditorState(attempt = 0): Promise<void> {
    if (this.edSaving) {
      this.edSaveAgain = true;
      return this.edSaving;
    }
    this.edSaving = this.saveEditorStateOnce(attempt).finally(() => {
      this.edSaving = undefined;
      if (this.edSaveAgain) {
        this.edSaveAgain = false;
        if (this.edState.dirty && !this.closed) this.background(this.saveEditorState());
      }
    });
    return this.edSaving;
  }

  private async saveEditorStateOnce(attempt: number): Promise<void> {
    if (this.closed || !this.edState.dirty) return;
    const sent = this.edState;
    try {
      const r = await this.http<PutEditorStateResponse>("PUT", "/editor-state", { state: sent.state, base_revision: sent.revision });
      if (r.ok) {
        this.edState = { ...this.edState, revision: r.body.revision, dirty: this.edState !== sent };
      } else if (r.status === 409 && r.error.server) {
        // The contract's policy for editor state: the server copy wins.
        this.edState = { state: r.error.server.state, revision: r.error.server.revision, dirty: false };
        this.emit("editorState", this.edState.state);
      } else if (r.status !== 429 && r.status < 500) {
        return;
      }
      await this.ctx.store.put("e/state", this.edState);
      if (this.edState.dirty) throw new NetworkError("retry");
    } catch {
      const t = this.ctx.timing;
      if (!this.closed) this.edTimer = setTimeout(() => this.background(this.saveEditorState(attempt + 1)), backoffMs(attempt, t.backoffBaseMs, t.backoffMaxMs, this.ctx.random));
    }
  }

  // ---- plumbing ------------------------------------------------------------------------

  private binaryIo(): BinaryIo {
    const t = this.ctx.timing;
    return {
      http: (method, suffix, body) => this.http(method, suffix, body),
      fetch: this.ctx.fetch,
      baseUrl: this.ctx.baseUrl,
      random: this.ctx.random,
      backoffBaseMs: t.backoffBaseMs,
      backoffMaxMs: t.backoffMaxMs,
    };
  }

  /** The body of a successful answer; a refusal becomes an Error carrying the hub's `code`. */
  private answer<T>(result: HttpResult<T>): T {
    if (result.ok) return result.body;
    throw Object.assign(new Error(`synchub: ${result.error.code}: ${result.error.message}`), result.error);
  }

  /** One HTTP call under /v1/projects/{id}; a 401 gets one retry with a freshly fetched token. */
  private async http<T>(method: string, suffix: string, body?: unknown): Promise<HttpResult<T>> {
    const url = `${this.ctx.baseUrl}/v1/projects/${this.id}${suffix}`;
    const abort = new AbortController();
    this.requests.add(abort);
    // No answer for as long as a silent socket is given: the connection is dead (a pooled
    // keep-alive one, say); give up and let the caller retry (writes keep their op_id).
    const t = this.ctx.timing;
    const timer = setTimeout(() => abort.abort(), t.deadMs + t.pingMs);
    const fetchFn = ((input, init) => this.ctx.fetch(input, { ...init, signal: abort.signal })) as typeof fetch;
    try {
      let result = await request<T>(fetchFn, url, await this.ctx.token(false), method, body);
      if (!result.ok && result.status === 401) {
        result = await request<T>(fetchFn, url, await this.ctx.token(true), method, body);
      }
      // A failed request said "offline" while the socket stayed up: an answer says otherwise.
      if (this.statusValue === "offline" && this.ws !== undefined && this.joinedWs === this.ws && result.status < 500) this.setStatus("online");
      return result;
    } finally {
      clearTimeout(timer);
      this.requests.delete(abort);
    }
  }

  /**
   * Runs work nobody awaits (timers, socket frames, tab messages). Once the project is
   * closed its store is closed too, so work still under way may fail: that is expected.
   */
  private background(work: Promise<unknown>): void {
    work.catch((err) => {
      if (!this.closed) console.error("synchub:", err);
    });
  }

  private setStatus(status: Status): void {
    if (status === this.statusValue) return;
    this.statusValue = status;
    this.emit("status", status);
  }

  private emit<K extends keyof Events>(event: K, value: Events[K]): void {
    for (const listener of this.listeners[event] ?? []) {
      try {
        (listener as Listener<Events[K]>)(value);
      } catch (err) {
        console.error("synchub: listener", err);
      }
    }
  }

  private post(message: TabMessage): void {
    this.ctx.channel?.postMessage(message);
  }

  private async tabMessage(m: TabMessage): Promise<void> {
    if (this.closed) return;
    const store = this.ctx.store;
    if (m.t === "draft") {
      const before = this.read(m.path);
      const d = await store.get<Draft>(`d/${m.path}`);
      if (d) this.drafts.set(m.path, d);
      else this.drafts.delete(m.path);
      const after = this.read(m.path);
      if (after !== before) this.emit("change", { path: m.path, content: after, deleted: after === undefined || undefined, origin: "remote" });
      this.emit("pending", this.pending);
      this.checkFlush();
      if (this.leader) {
        if (!this.firstTypedAt.has(m.path)) this.firstTypedAt.set(m.path, Date.now());
        this.dueAt.set(m.path, Math.min(Date.now() + this.ctx.timing.debounceMs, this.firstTypedAt.get(m.path)! + this.ctx.timing.maxDelayMs));
        this.kick(this.ctx.timing.debounceMs);
      }
    } else if (m.t === "known") {
      const before = this.fingerprint(m.path);
      const k = await store.get<Known>(`f/${m.path}`);
      if (k) this.known.set(m.path, k);
      if (this.fingerprint(m.path) !== before) this.emitView(m.path);
    } else if (m.t === "conflict") {
      this.conflictList = (await store.entries<Conflict>("c/")).map(([, c]) => c).sort((a, b) => a.at.localeCompare(b.at));
    } else if (m.t === "flush" && this.leader) {
      this.flushing = true;
      this.kick(0);
    }
  }
}

/** The known state an updated file of an event carries: its text, or its blob address. */
function known(file: { version: number; content?: string; blob?: BlobRef }): Known {
  return file.blob ? { version: file.version, blob: file.blob } : { version: file.version, content: file.content };
}
