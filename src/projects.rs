//! Projects (workspaces) and their members. Each handler receives its caller as decided by
//! the policy, calls one SQL function, and answers its JSON read into the protocol crate's
//! type of that answer.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use synchub_protocol::{
    CreateProjectRequest, Member, Project, ProjectListQuery, ProjectSource, ProjectSummary, RenameProjectRequest,
    SetMemberRequest,
};

use crate::app::AppState;
use crate::auth::policy::Actor;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathArgs, QueryArgs, check_json_no_nul, check_no_nul};

type ApiResult<T> = Result<Json<T>, ApiError>;

pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    QueryArgs(query): QueryArgs<ProjectListQuery>,
) -> ApiResult<Vec<ProjectSummary>> {
    let projects = state
        .db
        .typed(actor.db(), "SELECT synchub.list_projects($1, $2)", &[&actor.name(), &query.include_deleted])
        .await?;
    Ok(Json(projects))
}

pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    JsonBody(body): JsonBody<CreateProjectRequest>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    check_no_nul("name", &body.name)?;
    let source = serde_json::to_value(body.source.unwrap_or(ProjectSource::Cloud)).map_err(ApiError::internal)?;
    check_json_no_nul("source", &source)?;
    let sql = "SELECT synchub.create_project($1, $2, $3, $4)";
    let project = state.write_as(&actor, sql, &[&body.id, &body.name, &actor.name(), &source]).await?;
    Ok((StatusCode::CREATED, Json(project)))
}

pub async fn get(State(state): State<AppState>, actor: Actor) -> ApiResult<Project> {
    let id = actor.project()?;
    Ok(Json(state.db.typed(actor.db(), "SELECT synchub.get_project($1, $2)", &[&id, &actor.name()]).await?))
}

pub async fn rename(
    State(state): State<AppState>,
    actor: Actor,
    JsonBody(body): JsonBody<RenameProjectRequest>,
) -> ApiResult<Project> {
    let id = actor.project()?;
    check_no_nul("name", &body.name)?;
    let sql = "SELECT synchub.rename_project($1, $2, $3, $4)";
    Ok(Json(state.write_as(&actor, sql, &[&id, &actor.name(), &body.name, &body.base_revision.as_i64()]).await?))
}

pub async fn delete(State(state): State<AppState>, actor: Actor) -> ApiResult<Project> {
    let id = actor.project()?;
    let project = state.write_as(&actor, "SELECT synchub.delete_project($1, $2)", &[&id, &actor.name()]).await?;
    state.committed(id);
    Ok(Json(project))
}

pub async fn restore(State(state): State<AppState>, actor: Actor) -> ApiResult<Project> {
    let id = actor.project()?;
    Ok(Json(state.write_as(&actor, "SELECT synchub.restore_project($1, $2)", &[&id, &actor.name()]).await?))
}

pub async fn list_members(State(state): State<AppState>, actor: Actor) -> ApiResult<Vec<Member>> {
    let id = actor.project()?;
    Ok(Json(state.db.typed(actor.db(), "SELECT synchub.list_members($1, $2)", &[&id, &actor.name()]).await?))
}

pub async fn set_member(
    State(state): State<AppState>,
    actor: Actor,
    PathArgs((_, user_id)): PathArgs<(String, String)>,
    JsonBody(body): JsonBody<SetMemberRequest>,
) -> ApiResult<Member> {
    let id = actor.project()?;
    check_no_nul("user_id", &user_id)?;
    let sql = "SELECT synchub.set_member($1, $2, $3, $4)";
    let member = state.write_as(&actor, sql, &[&id, &actor.name(), &user_id, &body.role]).await?;
    state.members_changed(id);
    Ok(Json(member))
}

pub async fn remove_member(
    State(state): State<AppState>,
    actor: Actor,
    PathArgs((_, user_id)): PathArgs<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = actor.project()?;
    check_no_nul("user_id", &user_id)?;
    state.limiter.check(&actor.rate_key(), 1.0)?;
    state.db.query(actor.db(), "SELECT synchub.remove_member($1, $2, $3)", &[&id, &actor.name(), &user_id]).await?;
    state.members_changed(id);
    Ok(StatusCode::NO_CONTENT)
}
