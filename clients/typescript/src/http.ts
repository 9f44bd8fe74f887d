/** The hub's HTTP API as the client uses it: JSON in and out, errors as values. */
import type { ErrorBody, ErrorDetail } from "./wire.js";

export type HttpResult<T> =
  | { ok: true; status: number; body: T }
  | { ok: false; status: number; error: ErrorDetail; retryAfterMs?: number };

/** The request never got an answer (offline, hub down, CORS refusal): its outcome is unknown. */
export class NetworkError extends Error {}

export async function request<T>(
  fetchFn: typeof fetch,
  url: string,
  token: string,
  method: string,
  body?: unknown,
): Promise<HttpResult<T>> {
  let response: Response;
  // A Blob is a binary file's bytes (CONTRACT section 13), sent as they are.
  const bytes = typeof Blob !== "undefined" && body instanceof Blob;
  try {
    response = await fetchFn(url, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": bytes ? "application/octet-stream" : "application/json" }),
      },
      body: body === undefined ? undefined : bytes ? body : JSON.stringify(body),
      // No `cache: "no-store"`: Chromium then skips its CORS-preflight cache, so every write
      // cost a second round trip (measured by the bench's browser_typing). The hub's answers
      // carry no validators or freshness, so nothing is served from the HTTP cache anyway.
    });
  } catch (err) {
    throw new NetworkError(String(err));
  }
  let parsed: unknown;
  try {
    parsed = await response.json();
  } catch {
    // A proxy's HTML page or a cut body: no answer we can trust, so treat like no answer.
    if (response.ok || response.status >= 500) throw new NetworkError(`unreadable ${response.status} body`);
    parsed = undefined;
  }
  if (response.ok) return { ok: true, status: response.status, body: parsed as T };
  const error = (parsed as ErrorBody | undefined)?.error ?? { code: `http_${response.status}`, message: response.statusText };
  const retryAfter = Number(response.headers.get("retry-after"));
  return {
    ok: false,
    status: response.status,
    error,
    retryAfterMs: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : undefined,
  };
}

/** `src/my file.ts` → `src/my%20file.ts`: each segment percent-encoded, slashes kept. */
export function encodePath(path: string): string {
  return path.split("/").map(encodeURIComponent).join("/");
}

/** Exponential backoff with jitter: half fixed, half random, so reconnecting tabs spread out. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random: () => number): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return cap / 2 + random() * (cap / 2);
}

export function uuid(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // randomUUID exists only in secure contexts; getRandomValues everywhere.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
