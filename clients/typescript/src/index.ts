/**
 * `@synchub/client`: a local-first browser client for a synchub hub (CONTRACT section 11).
 *
 * ```ts
 * const client = createClient({ url: "http://127.0.0.1:8080", token: () => getJwt() });
 * const project = await client.project(projectId, { storage: "indexeddb", conflict: "server" });
 * project.write("src/a.ts", "export {}");
 * await project.flush();
 * ```
 */
import { IndexedDbStore, MemoryStore, type Store } from "./storage.js";
import { Project, type ProjectContext, type ProjectOptions, type Timing } from "./project.js";

export { Project, IndexedDbStore, MemoryStore };
export type { Store, ProjectOptions, Timing };
export type { ChangeEvent, Conflict, ConflictPolicy, Status } from "./project.js";
export { SynchubError, sha256Hex, STRAIGHT_MAX_BYTES, MAX_BINARY_BYTES } from "./binary.js";
export type { BinaryInfo, BinaryWriteOptions, BinaryWriteResult } from "./binary.js";
export { NetworkError } from "./http.js";
export { Presence, MAX_META_BYTES, PRESENCE_INTERVAL_MS } from "./presence.js";
export type { PresenceMember } from "./wire.js";
export type * as Wire from "./wire.js";

export type TokenSource = string | (() => string | Promise<string>);

export interface ClientOptions {
  /** The hub's base URL, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** A user token, or a function called again whenever a fresh one is needed. */
  token: TokenSource;
  /** Overrides for tests and unusual runtimes. */
  fetch?: typeof fetch;
  WebSocket?: typeof WebSocket;
  /** Share drafts and leadership with other tabs (default: when the browser supports it). */
  multiTab?: boolean;
  timing?: Partial<Timing>;
  random?: () => number;
}

export const DEFAULT_TIMING: Timing = {
  debounceMs: 400,
  maxDelayMs: 3000,
  pingMs: 10_000,
  deadMs: 25_000,
  backoffBaseMs: 500,
  backoffMaxMs: 15_000,
  editorStateDebounceMs: 1000,
};

export interface Client {
  project(id: string, options?: ProjectOptions): Promise<Project>;
  close(): void;
}

export function createClient(options: ClientOptions): Client {
  const baseUrl = options.url.replace(/\/+$/, "");
  const open = new Set<Project>();
  let cached: Promise<string> | undefined;
  // Concurrent callers share one refresh; a failed fetch is not cached.
  const token = (force: boolean): Promise<string> => {
    const source = options.token;
    if (typeof source === "string") return Promise.resolve(source);
    if (!cached || force) {
      const next = Promise.resolve().then(source);
      cached = next;
      next.catch(() => {
        if (cached === next) cached = undefined;
      });
    }
    return cached;
  };
  const timing = { ...DEFAULT_TIMING, ...options.timing };

  return {
    async project(id, projectOptions = {}) {
      const storage = projectOptions.storage ?? "indexeddb";
      const dbName = `synchub:${baseUrl}:${id}`;
      const store: Store = storage === "indexeddb" ? await IndexedDbStore.open(dbName) : new MemoryStore();
      const shared =
        storage === "indexeddb" &&
        options.multiTab !== false &&
        typeof BroadcastChannel !== "undefined" &&
        typeof navigator !== "undefined" &&
        !!navigator.locks;
      const ctx: ProjectContext = {
        baseUrl,
        token,
        fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
        WebSocket: options.WebSocket ?? globalThis.WebSocket,
        store,
        channel: shared ? new BroadcastChannel(dbName) : undefined,
        locks: shared ? navigator.locks : undefined,
        lockName: dbName,
        policy: projectOptions.conflict ?? "server",
        timing,
        random: options.random ?? Math.random,
        onClose: () => open.delete(project),
      };
      const project = new Project(id, ctx);
      open.add(project);
      await project.open();
      return project;
    },
    close() {
      for (const p of [...open]) p.close();
    },
  };
}
