//! Every route in one place. Registration goes through [`ApiRouter`] so `/openapi.json`
//! lists exactly these.

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method as HttpMethod, header};
use axum::middleware::map_response;
use axum::response::Response;
use serde_json::Value;
use synchub_protocol::*;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::access::X_REQUEST_ID;
use crate::api_doc::{Access, Answer, ApiRouter, Method::*};
use crate::app::AppState;
use crate::auth::policy::Need;
use crate::{
    archive, blobs, editor_state, events, files, history, metrics, ops, projects, realtime, sessions, snapshots,
};

/// The API routes (no state yet) and their OpenAPI document.
pub fn api() -> (Router<AppState>, Value) {
    use Access::{Public, Socket};
    use Answer::*;
    use Need::*;
    ApiRouter::new()
        .route(Get, "/healthz", Public, "Process is up", ops::healthz)
        .route(Get, "/readyz", Public, "Database reachable and migrated; storage reported", ops::readyz)
        .route(Get, "/metrics", Public, "Prometheus metrics", ops::metrics)
        .answers(Media(metrics::MEDIA_TYPES))
        .route(Get, "/openapi.json", Public, "This document", ops::openapi)
        .route(
            Get,
            "/v1/realtime",
            Socket,
            "WebSocket: join channels, receive events, write (docs/API.md)",
            realtime::socket::upgrade,
        )
        .answers(Upgrade)
        .route(
            Get,
            "/v1/objects/{*key}",
            Public,
            "A stored snapshot, behind a signed expiring URL",
            snapshots::storage::serve_object,
        )
        .answers(Media(&["application/zip", "application/octet-stream"]))
        .route(
            Put,
            "/v1/objects/{*key}",
            Public,
            "Upload a blob to local storage, behind a signed expiring URL (POST …/blobs)",
            snapshots::storage::upload_object,
        )
        .answers(Object)
        .route(Get, "/v1/projects", Account, "List the caller's projects", projects::list)
        .query::<ProjectListQuery>()
        .answers_json::<Vec<ProjectSummary>>()
        .route(Post, "/v1/projects", Account, "Create a project", projects::create)
        .body::<CreateProjectRequest>()
        .answers_json::<Project>()
        .route(Get, "/v1/projects/{id}", Membership, "Get a project", projects::get)
        .answers_json::<Project>()
        .route(Patch, "/v1/projects/{id}", Membership, "Rename a project (revision-checked)", projects::rename)
        .body::<RenameProjectRequest>()
        .answers_json::<Project>()
        .route(Delete, "/v1/projects/{id}", Membership, "Tombstone a project (owner)", projects::delete)
        .answers_json::<Project>()
        .route(Post, "/v1/projects/{id}/restore", Membership, "Restore a tombstoned project (owner)", projects::restore)
        .answers_json::<Project>()
        .route(Get, "/v1/projects/{id}/members", Membership, "List members", projects::list_members)
        .answers_json::<Vec<Member>>()
        .route(
            Put,
            "/v1/projects/{id}/members/{user_id}",
            Membership,
            "Add or change a member (owner)",
            projects::set_member,
        )
        .body::<SetMemberRequest>()
        .answers_json::<Member>()
        .route(
            Delete,
            "/v1/projects/{id}/members/{user_id}",
            Membership,
            "Remove a member (owner)",
            projects::remove_member,
        )
        .answers(NoContent)
        .route(Get, "/v1/projects/{id}/files", Read, "List current files with the cursor", files::list)
        .query::<FileListQuery>()
        .answers_json::<FileListResponse>()
        .route(Post, "/v1/projects/{id}/files:bulk", Write, "Upserts and deletes, all or nothing", files::bulk)
        .body::<BulkRequest>()
        .answers_json::<BulkWriteResponse>()
        .route(Post, "/v1/projects/{id}/files:move", Write, "Move a file in one change", files::move_file)
        .body::<MoveFileRequest>()
        .answers_json::<MoveFileResponse>()
        .route(Post, "/v1/projects/{id}/files:restore", Write, "Restore an earlier version of a file", history::restore)
        .body::<RestoreFileRequest>()
        .answers_json::<PutFileResponse>()
        .route(
            Get,
            "/v1/projects/{id}/files/{*path}",
            Read,
            "Read a file (binary: its blob and a signed URL; ?version=N: a version of it)",
            files::get,
        )
        .no_store()
        .query::<FileReadQuery>()
        .answers(JsonOrBytes(crate::api_doc::schema_of::<FileResponse>))
        .documents(
            Get,
            "/v1/projects/{id}/files/{*path}/versions",
            Read,
            "A file's versions, newest first (served by the route above)",
        )
        .query::<FileReadQuery>()
        .answers_json::<FileVersionsResponse>()
        .route(
            Put,
            "/v1/projects/{id}/files/{*path}",
            Write,
            "Create or replace a file: text, a held blob, or the bytes (application/octet-stream)",
            files::put,
        )
        .query::<PutBinaryQuery>()
        .body::<PutFileBody>()
        .or_bytes_body()
        .answers_json::<PutFileResponse>()
        .route(Patch, "/v1/projects/{id}/files/{*path}", Write, "Replace a file by a delta", files::patch)
        .body::<PatchFileRequest>()
        .answers_json::<PutFileResponse>()
        .route(
            Post,
            "/v1/projects/{id}/blobs",
            Write,
            "Announce a binary file's bytes: held, or a signed upload URL",
            blobs::announce,
        )
        .no_store()
        .body::<BlobUploadRequest>()
        .answers_json::<BlobUploadResponse>()
        .route(Get, "/v1/projects/{id}/blobs/{sha256}", Read, "A blob's bytes (a 307 to a signed URL)", blobs::get)
        .no_store()
        .answers(Redirect)
        .route(Delete, "/v1/projects/{id}/files/{*path}", Write, "Delete a file", files::delete)
        .query::<DeleteFileQuery>()
        .answers_json::<DeleteFileResponse>()
        .route(
            Put,
            "/v1/projects/{id}/base",
            SetBase,
            "Record (and apply) the repository tree at a commit",
            files::set_base,
        )
        .body::<SetBaseRequest>()
        .answers_json::<SetBaseResponse>()
        .route(Get, "/v1/projects/{id}/changes", Read, "Uncommitted changes relative to the base", files::changes)
        .answers_json::<ChangesResponse>()
        .route(
            Get,
            "/v1/projects/{id}/archive",
            Membership,
            "The project's current files as a zip in the snapshot format",
            archive::export,
        )
        .answers(Media(&["application/zip"]))
        .route(
            Post,
            "/v1/projects/{id}/archive",
            Write,
            "Replace or merge the project's files from a zip, as one change",
            archive::import,
        )
        .query::<ArchiveImportQuery>()
        .media_body(&["application/zip", "application/octet-stream"])
        .answers_json::<BulkWriteResponse>()
        .route(Get, "/v1/projects/{id}/events", Read, "Events after a seq (the socket's frames)", events::list)
        .query::<EventsQuery>()
        .answers_json::<EventsPage>()
        .route(
            Post,
            "/v1/projects/{id}/sessions",
            Orchestrate,
            "Session: snapshot + container token + env",
            sessions::create,
        )
        .no_store()
        .optional_body::<CreateSessionRequest>()
        .answers_json::<SessionResponse>()
        .route(
            Post,
            "/v1/projects/{id}/snapshots",
            Orchestrate,
            "Build (or reuse) a snapshot",
            snapshots::handlers::create,
        )
        .no_store()
        .answers_json::<SnapshotResponse>()
        .route(
            Get,
            "/v1/projects/{id}/snapshots/latest",
            Snapshot,
            "The latest snapshot, fresh URL",
            snapshots::handlers::latest,
        )
        .no_store()
        .answers_json::<SnapshotResponse>()
        .route(Post, "/v1/projects/{id}/tokens", Orchestrate, "A container token for a session", sessions::mint)
        .no_store()
        .body::<MintTokenRequest>()
        .answers_json::<MintTokenResponse>()
        .route(Post, "/v1/tokens/refresh", Refresh, "Refresh a container token", sessions::refresh)
        .no_store()
        .answers_json::<RefreshTokenResponse>()
        .route(Get, "/v1/sessions/{id}", SessionProgress, "Has the preview caught up?", sessions::get)
        .answers_json::<SessionStatus>()
        .route(Delete, "/v1/sessions/{id}", Revoke, "Revoke a session (sockets close with 4010)", sessions::revoke)
        .route(Get, "/v1/projects/{id}/editor-state", Membership, "The caller's editor state", editor_state::get)
        .answers_json::<EditorStateResponse>()
        .route(Put, "/v1/projects/{id}/editor-state", Membership, "Save the caller's editor state", editor_state::put)
        .body::<PutEditorStateRequest>()
        .answers_json::<PutEditorStateResponse>()
        .finish()
}

/// How long a browser may cache a preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// The complete service: routes, CORS for the configured browser origins, the request
/// limits (URI length, body deadline), JSON 404/405 for unknown routes and methods, and
/// outermost the access line, request id and HTTP metrics (so they see every answer,
/// preflights and limit refusals included).
pub fn build(routes: Router<AppState>, state: AppState) -> Router {
    let origins = state.clone();
    // No credentials: tokens are bearer headers, never cookies, so even `*` leaks nothing.
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| origins.origins.allows(origin.as_bytes())))
        .allow_methods([HttpMethod::GET, HttpMethod::POST, HttpMethod::PUT, HttpMethod::PATCH, HttpMethod::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, X_REQUEST_ID])
        .expose_headers([header::RETRY_AFTER, X_REQUEST_ID])
        .max_age(CORS_MAX_AGE);
    routes
        .fallback(files::unmatched)
        .method_not_allowed_fallback(|| async { crate::error::ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::server::request_limits))
        .layer(cors)
        .layer(map_response(nosniff))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::access::log_access))
        .with_state(state)
}

/// Every answer (errors, the 404 fallback, CORS preflights, upgrade refusals included):
/// browsers must not sniff a body into something executable.
async fn nosniff(mut response: Response) -> Response {
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
