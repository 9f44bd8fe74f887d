/**
 * Where a project's local state lives: the last known server files, the unsent drafts,
 * the cursor, conflicts and the editor state. A tiny key-value interface so the same client
 * runs on IndexedDB (survives reloads and crashes; shared by the tabs of one origin) or in
 * memory (tests, throwaway pages).
 */

export interface Store {
  get<T>(key: string): Promise<T | undefined>;
  /** Every `[key, value]` whose key starts with `prefix`. */
  entries<T>(prefix: string): Promise<[string, T][]>;
  put<T>(key: string, value: T): Promise<void>;
  delete(key: string): Promise<void>;
  /**
   * Read-modify-write in one transaction: `fn` gets the current value and returns the new
   * one (`undefined` deletes). IndexedDB serializes overlapping readwrite transactions
   * across tabs, so two tabs updating one key never lose each other's change.
   */
  update<T>(key: string, fn: (old: T | undefined) => T | undefined): Promise<T | undefined>;
  close(): void;
}

export class MemoryStore implements Store {
  private readonly map = new Map<string, unknown>();
  async get<T>(key: string): Promise<T | undefined> {
    return structuredClone(this.map.get(key)) as T | undefined;
  }
  async entries<T>(prefix: string): Promise<[string, T][]> {
    return [...this.map].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k, structuredClone(v) as T]);
  }
  async put<T>(key: string, value: T): Promise<void> {
    this.map.set(key, structuredClone(value));
  }
  async delete(key: string): Promise<void> {
    this.map.delete(key);
  }
  async update<T>(key: string, fn: (old: T | undefined) => T | undefined): Promise<T | undefined> {
    const next = fn(structuredClone(this.map.get(key)) as T | undefined);
    if (next === undefined) this.map.delete(key);
    else this.map.set(key, structuredClone(next));
    return next;
  }
  close(): void {}
}

const STORE = "kv";

function done<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** One database per hub and project, one object store of keys → structured-cloned values. */
export class IndexedDbStore implements Store {
  private constructor(private readonly db: IDBDatabase) {}

  static async open(name: string, factory: IDBFactory = indexedDB): Promise<IndexedDbStore> {
    const request = factory.open(name, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    return new IndexedDbStore(await done(request));
  }

  private tx(mode: IDBTransactionMode): IDBObjectStore {
    return this.db.transaction(STORE, mode).objectStore(STORE);
  }
  async get<T>(key: string): Promise<T | undefined> {
    return (await done(this.tx("readonly").get(key))) as T | undefined;
  }
  async entries<T>(prefix: string): Promise<[string, T][]> {
    const store = this.tx("readonly");
    const range = IDBKeyRange.bound(prefix, prefix + "\uffff");
    const [keys, values] = await Promise.all([done(store.getAllKeys(range)), done(store.getAll(range))]);
    return keys.map((k, i) => [String(k), values[i] as T]);
  }
  async put<T>(key: string, value: T): Promise<void> {
    await done(this.tx("readwrite").put(value, key));
  }
  async delete(key: string): Promise<void> {
    await done(this.tx("readwrite").delete(key));
  }
  update<T>(key: string, fn: (old: T | undefined) => T | undefined): Promise<T | undefined> {
    return new Promise((resolve, reject) => {
      const tx = this.db.transaction(STORE, "readwrite");
      const store = tx.objectStore(STORE);
      let next: T | undefined;
      // The put is issued from the get's callback, so the transaction stays open in between.
      const read = store.get(key);
      read.onsuccess = () => {
        next = fn(read.result as T | undefined);
        if (next === undefined) store.delete(key);
        else store.put(next, key);
      };
      tx.oncomplete = () => resolve(next);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }
  close(): void {
    this.db.close();
  }
}
