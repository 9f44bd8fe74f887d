/**
 * Binary files (CONTRACT section 13): images, fonts, archives. Their bytes never travel in
 * JSON and are addressed by sha256 (computed here with WebCrypto).
 *
 * - Writing: up to 2 MiB straight (`PUT …/files/{path}` with an `application/octet-stream`
 *   body, `expected_version` and `op_id` in the query); larger ones (≤ 50 MiB) announced
 *   with `POST …/blobs {sha256, size}`, uploaded to the signed URL it answers (skipped when
 *   the hub holds the bytes already), then referenced with `PUT …/files/{path} {blob}`.
 *   Binary writes are online-only: they are not queued or kept as drafts; the promise settles
 *   with the hub's answer. A lost answer or a 5xx/429 is retried with the same `op_id`
 *   (applied once).
 * - Reading: `GET …/files/{path}` gives the file's signed `url`; the bytes come from there
 *   (no token sent to storage) and are checked against the sha256 before they are returned.
 */
import { backoffMs, encodePath, type HttpResult, NetworkError, uuid } from "./http.js";
import type { BlobRef, BlobUploadResponse, ErrorDetail, FileResponse, PutFileResponse } from "./wire.js";

/** The largest body sent straight; above it the blob flow is used. */
export const STRAIGHT_MAX_BYTES = 2 * 1024 * 1024;
/** The largest binary file the hub accepts. */
export const MAX_BINARY_BYTES = 50 * 1024 * 1024;
/** Tries of one binary write or read before it gives up (transient failures only). */
const ATTEMPTS = 5;

/** A refusal by the hub (or a failed check), with the contract's error code. */
export class SynchubError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status?: number,
    readonly detail?: ErrorDetail,
  ) {
    super(message);
    this.name = "SynchubError";
  }
  static of(result: { status: number; error: ErrorDetail }): SynchubError {
    return new SynchubError(result.error.code, result.error.message, result.status, result.error);
  }
}

/** A binary file's address as the client knows it. */
export interface BinaryInfo {
  sha256: string;
  size: number;
}

export interface BinaryWriteOptions {
  /** Sent as `file_type` (default: inferred by the hub from the extension). */
  fileType?: string;
  /** `expected_version`: default the version this client knows (0 = must not exist); `null` = unconditional. */
  expectedVersion?: number | null;
}

export interface BinaryWriteResult extends BinaryInfo {
  path: string;
  version: number;
  seq: number | null;
}

/** What a project lends the binary flows. */
export interface BinaryIo {
  /** A call under `/v1/projects/{id}` with the user's token (JSON, or a Blob as octet-stream). */
  http<T>(method: string, suffix: string, body?: unknown): Promise<HttpResult<T>>;
  /** A plain request, for signed URLs (never given the token). */
  fetch: typeof fetch;
  baseUrl: string;
  random: () => number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

export async function sha256Hex(data: Blob | ArrayBuffer): Promise<string> {
  const bytes = data instanceof Blob ? await data.arrayBuffer() : data;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A MIME type from the extension, so a returned Blob can be shown (`<img src=…>`). */
export function mimeType(path: string): string {
  const ext = path.slice(path.lastIndexOf(".") + 1).toLowerCase();
  const types: Record<string, string> = {
    png: "image/png",
    jpg: "image/jpeg",
    jpeg: "image/jpeg",
    gif: "image/gif",
    webp: "image/webp",
    avif: "image/avif",
    svg: "image/svg+xml",
    ico: "image/x-icon",
    woff: "font/woff",
    woff2: "font/woff2",
    pdf: "application/pdf",
    mp4: "video/mp4",
  };
  return types[ext] ?? "application/octet-stream";
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Worth another try with the same op_id: no answer, the hub or storage busy or failing. */
function transient(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/**
 * Runs `once` until it answers for good, at most {@link ATTEMPTS} times: a NetworkError or
 * a transient status is retried after a backoff (a 429's Retry-After honoured).
 */
async function withRetries<T>(io: BinaryIo, once: () => Promise<HttpResult<T>>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    let result: HttpResult<T> | undefined;
    try {
      result = await once();
    } catch (err) {
      if (!(err instanceof NetworkError) || attempt + 1 >= ATTEMPTS) throw err;
    }
    if (result?.ok) return result.body;
    if (result && (!transient(result.status) || attempt + 1 >= ATTEMPTS)) throw SynchubError.of(result);
    const wait = result && !result.ok && result.retryAfterMs !== undefined ? result.retryAfterMs : backoffMs(attempt, io.backoffBaseMs, io.backoffMaxMs, io.random);
    await sleep(wait);
  }
}

/** A request outside the hub's API (signed storage URLs): no token, errors as HttpResult. */
async function plain(io: BinaryIo, method: string, url: string, body?: Blob): Promise<HttpResult<Response>> {
  let response: Response;
  try {
    response = await io.fetch(new URL(url, io.baseUrl).toString(), { method, body });
  } catch (err) {
    throw new NetworkError(String(err));
  }
  if (response.ok) return { ok: true, status: response.status, body: response };
  return { ok: false, status: response.status, error: { code: `http_${response.status}`, message: `storage answered ${response.status}` } };
}

/** Writes `data` at `path` as a binary file; see the module documentation. */
export async function writeBinary(io: BinaryIo, path: string, data: Blob, expected: number | null, options: BinaryWriteOptions): Promise<BinaryWriteResult> {
  const size = data.size;
  if (size > MAX_BINARY_BYTES) throw new SynchubError("payload_too_large", `${path} is larger than ${MAX_BINARY_BYTES} bytes`, 413);
  const sha256 = await sha256Hex(data);
  const opId = uuid();
  const file = `/files/${encodePath(path)}`;
  let answer: PutFileResponse;
  if (size <= STRAIGHT_MAX_BYTES) {
    const query = new URLSearchParams({ op_id: opId });
    if (expected !== null) query.set("expected_version", String(expected));
    if (options.fileType !== undefined) query.set("file_type", options.fileType);
    // A Blob's own type would become the Content-Type: send untyped bytes.
    const body = data.type ? new Blob([data]) : data;
    answer = await withRetries(io, () => io.http<PutFileResponse>("PUT", `${file}?${query}`, body));
  } else {
    const announced = await withRetries(io, () => io.http<BlobUploadResponse>("POST", "/blobs", { sha256, size }));
    if (!announced.exists) {
      const url = announced.upload_url;
      if (!url) throw new SynchubError("invalid_response", "the hub gave no upload_url");
      await withRetries(io, () => plain(io, "PUT", url, data));
    }
    const body = {
      blob: { sha256, size },
      op_id: opId,
      ...(expected !== null ? { expected_version: expected } : {}),
      ...(options.fileType !== undefined ? { file_type: options.fileType } : {}),
    };
    answer = await withRetries(io, () => io.http<PutFileResponse>("PUT", file, body));
  }
  return { path, version: answer.version, seq: answer.seq, sha256, size };
}

/** Reads `path` as bytes (a text file as its UTF-8); the bytes are checked against their sha256. */
export async function readBinary(io: BinaryIo, path: string): Promise<Blob> {
  const file = await withRetries(io, () => io.http<FileResponse>("GET", `/files/${encodePath(path)}`));
  if (!file.blob) return new Blob([file.content ?? ""], { type: "text/plain;charset=utf-8" });
  const blob: BlobRef = file.blob;
  const url = file.url;
  if (!url) throw new SynchubError("invalid_response", `the hub gave no url for ${path}`);
  const bytes = await withRetries(io, async () => {
    const got = await plain(io, "GET", url);
    if (!got.ok) return got;
    try {
      return { ok: true as const, status: got.status, body: await got.body.arrayBuffer() };
    } catch (err) {
      throw new NetworkError(String(err));
    }
  });
  if (bytes.byteLength !== blob.size || (await sha256Hex(bytes)) !== blob.sha256) {
    throw new SynchubError("hash_mismatch", `the bytes of ${path} do not match sha256 ${blob.sha256}`);
  }
  return new Blob([bytes], { type: mimeType(path) });
}
