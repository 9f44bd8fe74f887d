/**
 * Wire types: every frame and HTTP body the client exchanges with the hub (CONTRACT
 * sections 3 and 4), in one module.
 *
 * These are hand-written for now. They are to be REPLACED by a file generated from the
 * hub's Rust definitions (a protocol crate with ts-rs / schemars output), so that a protocol
 * change that breaks the client fails `npm run build`. Keep this module shaped like such a
 * generated file: only exported types (no runtime code), one name per Rust type, field
 * names exactly as on the wire (snake_case).
 */

// ---- HTTP bodies -----------------------------------------------------------------------

/** `{"error": {...}}`: every non-2xx answer. Details (e.g. `current_version`) sit beside code. */
export interface ErrorBody {
  error: ErrorDetail;
}
export interface ErrorDetail {
  code: string;
  message: string;
  path?: string;
  expected_version?: number | null;
  current_version?: number;
  current_hash?: string;
  oldest_seq?: number;
  server?: EditorStateResponse;
  [detail: string]: unknown;
}

/** `GET /v1/projects/{id}/files?include_content=true` */
export interface FileListResponse {
  cursor: number;
  files: FileEntry[];
}
export interface FileEntry {
  path: string;
  file_type: string;
  content_hash: string;
  version: number;
  size: number;
  updated_at: string;
  content?: string;
}

/** `GET /v1/projects/{id}/files/{path}` */
export interface FileResponse {
  path: string;
  file_type: string;
  content: string;
  content_hash: string;
  version: number;
  size: number;
  updated_at: string;
}

/** `PUT /v1/projects/{id}/files/{path}` */
export interface PutFileRequest {
  content: string;
  file_type?: string;
  expected_version?: number;
  op_id?: string;
}
export interface PutFileResponse {
  path: string;
  version: number;
  content_hash: string;
  seq: number;
}

/** `DELETE /v1/projects/{id}/files/{path}?expected_version=N&op_id=U` */
export interface DeleteFileResponse {
  path: string;
  version: number;
  seq: number;
}

/** `GET /v1/projects/{id}/editor-state` */
export interface EditorStateResponse {
  state: unknown;
  revision: number;
  updated_at: string | null;
}
/** `PUT /v1/projects/{id}/editor-state` */
export interface PutEditorStateRequest {
  state: unknown;
  base_revision: number;
}
export interface PutEditorStateResponse {
  revision: number;
  updated_at: string;
}

// ---- WebSocket frames: client → hub -------------------------------------------------------

export type ClientFrame =
  | { type: "auth"; token: string }
  | { type: "join"; ref: string; channel: string; since: number | null }
  | { type: "leave"; ref: string; channel: string }
  | { type: "ping"; ref: string };

// ---- WebSocket frames: hub → client -------------------------------------------------------

export type ServerFrame =
  | { type: "authed"; expires_at: string }
  | { type: "joined"; ref: string; channel: string; cursor: number }
  | { type: "left"; ref: string; channel: string }
  | { type: "resync_required"; channel: string; oldest_seq: number }
  | { type: "pong"; ref: string }
  | { type: "error"; ref?: string | null; channel?: string | null; error: ErrorDetail }
  | { type: "ack"; ref: string; ok: boolean; seq?: number; version?: number; error?: ErrorDetail }
  | EventFrame;

export type EventFrame =
  | { type: "event"; channel: string; seq: number; event: "file:update"; payload: FileUpdatePayload }
  | { type: "event"; channel: string; seq: number; event: "file:delete"; payload: FileDeletePayload }
  | { type: "event"; channel: string; seq: number; event: "bulk:apply"; payload: BulkApplyPayload }
  | { type: "event"; channel: string; seq: number; event: "project:deleted"; payload: { timestamp: string } };

export interface FileUpdatePayload {
  file_path: string;
  file_type: string;
  content: string;
  content_hash: string;
  version: number;
  timestamp: string;
  actor: string;
  op_id?: string | null;
}
export interface FileDeletePayload {
  file_path: string;
  version: number;
  timestamp: string;
  actor: string;
  op_id?: string | null;
}
export interface BulkApplyPayload {
  files: { file_path: string; file_type: string; content: string; content_hash: string; version: number }[];
  deletes: { file_path: string; version: number }[];
  timestamp: string;
  actor: string;
  op_id?: string | null;
}

/** Close codes the hub uses (CONTRACT section 4): 4001 unauthenticated, 4003 forbidden,
 * 4008 slow consumer, 4009 token expired, 4010 session revoked. */
export type CloseCode = 4001 | 4003 | 4008 | 4009 | 4010;
