/**
 * Presence (CONTRACT section 12): who else has the project open, and what they said about
 * themselves (`meta`, e.g. the open file). A socket is listed once it sends `presence` after
 * its join; this client does so on every join (with the last meta set, `null` before any),
 * so every open tab is present. `user` and `kind` ("user" | "container") come from the
 * token; this tab's own entry is `self`. Ephemeral: nothing here is stored or sent over HTTP.
 *
 * `set(meta)` is throttled (the hub takes at most 10 updates per second per socket, one per
 * 100 ms): the latest meta is sent at most every `minIntervalMs`, and again after every
 * reconnect (a new socket is a new member).
 */
import type { PresenceDiff, PresenceMember, PresenceState } from "./wire.js";

/** Serialized `meta` the hub accepts (CONTRACT section 12). */
export const MAX_META_BYTES = 1024;
/** The client sends at most one update per this many milliseconds (the hub allows 100). */
export const PRESENCE_INTERVAL_MS = 150;

export class Presence {
  private byId = new Map<string, PresenceMember>();
  private selfId: string | undefined;
  private meta: unknown = null;
  private lastSentAt = 0;
  private timer?: ReturnType<typeof setTimeout>;

  constructor(
    /** Sends `meta` on the joined socket; false when there is none (it is sent after the next join). */
    private readonly send: (meta: unknown) => boolean,
    private readonly changed: (members: PresenceMember[]) => void,
    private readonly minIntervalMs = PRESENCE_INTERVAL_MS,
  ) {}

  /** Everyone present, this tab included (sorted by `client_id`); empty while offline. */
  members(): PresenceMember[] {
    return [...this.byId.values()].sort((a, b) => (a.client_id < b.client_id ? -1 : a.client_id > b.client_id ? 1 : 0));
  }

  /** Everyone but this tab. */
  others(): PresenceMember[] {
    return this.members().filter((m) => m.client_id !== this.selfId);
  }

  /** This tab's `client_id` on the current socket (undefined until joined). */
  get self(): string | undefined {
    return this.selfId;
  }

  /** Replaces this tab's meta (throttled; the latest wins). Throws when over 1 KiB serialized. */
  set(meta: unknown): void {
    const bytes = new TextEncoder().encode(JSON.stringify(meta ?? null)).length;
    if (bytes > MAX_META_BYTES) throw new RangeError(`presence meta is ${bytes} bytes; at most ${MAX_META_BYTES}`);
    this.meta = meta ?? null;
    this.schedule();
  }

  /** `presence_state`: the whole list (after each join). */
  state(frame: PresenceState): void {
    this.byId = new Map(frame.members.map((m) => [m.client_id, m]));
    this.selfId = frame.client_id ?? undefined;
    this.changed(this.members());
  }

  /** `presence_diff`: leaves first, then joins (a known `client_id` in joins is a meta update). */
  diff(frame: PresenceDiff): void {
    for (const m of frame.leaves) this.byId.delete(m.client_id);
    for (const m of frame.joins) this.byId.set(m.client_id, m);
    this.changed(this.members());
  }

  /** The socket joined: this tab becomes a member by sending its meta (again). */
  joined(): void {
    this.lastSentAt = 0;
    this.schedule();
  }

  /** The socket is gone: nobody is known to be present until the next `presence_state`. */
  disconnected(): void {
    this.selfId = undefined;
    if (this.byId.size === 0) return;
    this.byId.clear();
    this.changed([]);
  }

  close(): void {
    clearTimeout(this.timer);
  }

  private schedule(): void {
    if (this.timer !== undefined) return; // a trailing send is due and takes the latest meta
    const wait = Math.max(0, this.lastSentAt + this.minIntervalMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.send(this.meta)) this.lastSentAt = Date.now();
    }, wait);
  }
}
