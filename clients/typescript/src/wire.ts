/**
 * Wire types: every frame and HTTP body the client exchanges with the hub (CONTRACT
 * sections 3 and 4), in one module.
 *
 * Nothing here is hand-copied: every type is the hub's own definition, generated from the
 * Rust protocol crate (`protocol/src/*.rs`) into `./generated/protocol.ts`
 * (`UPDATE_GENERATED=1 cargo test -p synchub-protocol`; a test fails when that file is
 * stale). A protocol change that breaks the client therefore fails `npm run build`. This
 * module only gives the client's names to the generated types.
 */

import type * as P from "./generated/protocol.js";

// ---- HTTP bodies -----------------------------------------------------------------------

/** `{"error": {...}}`: every non-2xx answer. */
export type ErrorBody = P.ErrorResponse;

/**
 * `{code, message, ...details}`. The details depend on the code: the generated type keeps
 * them as JSON values; these are the ones the client reads (`version_conflict`,
 * `history_trimmed`, `revision_conflict`), narrowed to what the hub sends for them.
 */
export type ErrorDetail = P.ErrorBody & {
  path?: string;
  expected_version?: number | null;
  current_version?: number;
  current_hash?: string | null;
  oldest_seq?: number;
  server?: EditorStateResponse;
};

/** `GET /v1/projects` */
export type ProjectSummary = P.ProjectSummary;
/** `GET /v1/projects/{id}` */
export type Project = P.Project;
export type CreateProjectRequest = P.CreateProjectRequest;

/** `GET /v1/projects/{id}/files?include_content=true` */
export type FileListResponse = P.FileListResponse;
export type FileEntry = P.FileEntry;
/** `GET /v1/projects/{id}/files/{path}` */
export type FileResponse = P.FileResponse;
/** `PUT /v1/projects/{id}/files/{path}` */
export type PutFileRequest = P.PutFileRequest;
/** `PATCH /v1/projects/{id}/files/{path}`: the text as a Fossil delta (CONTRACT section 12). */
export type PatchFileRequest = P.PatchFileRequest;
export type PutFileResponse = P.PutFileResponse;
/** A binary file's bytes by address: `{sha256, size}` (CONTRACT section 13). */
export type BlobRef = P.BlobRef;
/** `PUT /v1/projects/{id}/files/{path}` `{blob}`: a binary file whose bytes the hub holds. */
export type PutBlobFileRequest = P.PutBlobFileRequest;
/** `POST /v1/projects/{id}/blobs` */
export type BlobUploadRequest = P.BlobUploadRequest;
export type BlobUploadResponse = P.BlobUploadResponse;
/** `DELETE /v1/projects/{id}/files/{path}?expected_version=N&op_id=U` */
export type DeleteFileResponse = P.DeleteFileResponse;
/** `POST /v1/projects/{id}/files:bulk` */
export type BulkRequest = P.BulkRequest;
export type BulkWriteResponse = P.BulkWriteResponse;
/** `POST /v1/projects/{id}/files:move` */
export type MoveFileRequest = P.MoveFileRequest;
export type MoveFileResponse = P.MoveFileResponse;

/** File history (CONTRACT 14): `GET …/files/{path}/versions` and `POST …/files:restore`. */
export type FileVersion = P.FileVersion;
export type FileVersionsResponse = P.FileVersionsResponse;
export type RestoreFileRequest = P.RestoreFileRequest;
/** `GET /v1/projects/{id}/events?since=SEQ` */
export type EventsPage = P.EventsPage;

/** `GET /v1/projects/{id}/editor-state` */
export type EditorStateResponse = P.EditorStateResponse;
/** `PUT /v1/projects/{id}/editor-state` */
export type PutEditorStateRequest = P.PutEditorStateRequest;
export type PutEditorStateResponse = P.PutEditorStateResponse;

// ---- WebSocket frames -------------------------------------------------------------------

export type ClientFrame = P.ClientFrame;
export type ServerFrame = P.ServerFrame;
/** An event of a channel's log, at `seq` (the `event` variant of {@link ServerFrame}). */
export type EventFrame = P.EventFrame;
export type FileUpdatePayload = P.FileUpdatePayload;
/** `file:update` as a Fossil delta against `base_version` (CONTRACT section 12). */
export type FileDeltaPayload = P.FileDeltaPayload;
export type FileDeletePayload = P.FileDeletePayload;
export type BulkApplyPayload = P.BulkApplyPayload;
/** Presence (CONTRACT section 12): one socket on a channel, the full list, a change. */
export type PresenceMember = P.PresenceMember;
export type PresenceState = P.PresenceState;
export type PresenceDiff = P.PresenceDiff;

/** Close codes the hub uses (CONTRACT section 4): 4001 unauthenticated, 4003 forbidden,
 * 4008 slow consumer, 4009 token expired, 4010 session revoked. */
export type CloseCode = P.CloseCode;
