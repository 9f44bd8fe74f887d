//! Projects (workspaces) and their members. Each handler authenticates, calls one SQL
//! function, and answers its JSON read into the protocol crate's type of that answer.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use synchub_protocol::{
    CreateProjectRequest, Member, Project, ProjectListQuery, ProjectSource, ProjectSummary, RenameProjectRequest,
    SetMemberRequest,
};

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathArgs, QueryArgs, check_json_no_nul, check_no_nul, project_id};

type ApiResult<T> = Result<Json<T>, ApiError>;

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    QueryArgs(query): QueryArgs<ProjectListQuery>,
) -> ApiResult<Vec<ProjectSummary>> {
    let sub = principal.user()?;
    let projects =
        state.db.typed(&principal, "SELECT synchub.list_projects($1, $2)", &[&sub, &query.include_deleted]).await?;
    Ok(Json(projects))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateProjectRequest>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    let sub = principal.user()?;
    check_no_nul("name", &body.name)?;
    let source = serde_json::to_value(body.source.unwrap_or(ProjectSource::Cloud)).map_err(ApiError::internal)?;
    check_json_no_nul("source", &source)?;
    state.limiter.check(&principal.rate_key(), 1.0)?;
    let project = state
        .db
        .typed(&principal, "SELECT synchub.create_project($1, $2, $3, $4)", &[&body.id, &body.name, &sub, &source])
        .await?;
    Ok((StatusCode::CREATED, Json(project)))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathArgs(id): PathArgs<String>,
) -> ApiResult<Project> {
    let id = project_id(&id)?;
    let sub = principal.user().map_err(|_| ApiError::not_found())?;
    Ok(Json(state.db.typed(&principal, "SELECT synchub.get_project($1, $2)", &[&id, &sub]).await?))
}

pub async fn rename(
    State(state): State<AppState>,
    principal: Principal,
    PathArgs(id): PathArgs<String>,
    JsonBody(body): JsonBody<RenameProjectRequest>,
) -> ApiResult<Project> {
    let id = project_id(&id)?;
    let sub = principal.user().map_err(|_| ApiError::not_found())?;
    check_no_nul("name", &body.name)?;
    state.limiter.check(&principal.rate_key(), 1.0)?;
    let project = state
        .db
        .typed(
            &principal,
            "SELECT synchub.rename_project($1, $2, $3, $4)",
            &[&id, &sub, &body.name, &body.base_revision.as_i64()],
        )
        .await?;
    Ok(Json(project))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathArgs(id): PathArgs<String>,
) -> ApiResult<Project> {
    let id = project_id(&id)?;
    let sub = principal.user().map_err(|_| ApiError::not_found())?;
    state.limiter.check(&principal.rate_key(), 1.0)?;
    let project = state.db.typed(&principal, "SELECT synchub.delete_project($1, $2)", &[&id, &sub]).await?;
    state.committed(id);
    Ok(Json(project))
}

pub async fn restore(
    State(state): State<AppState>,
    principal: Principal,
    PathArgs(id): PathArgs<String>,
) -> ApiResult<Project> {
    let id = project_id(&id)?;
    let sub = principal.user().map_err(|_| ApiError::not_found())?;
    state.limiter.check(&principal.rate_key(), 1.0)?;
    Ok(Json(state.db.typed(&principal, "SELECT synchub.restore_project($1, $2)", &[&id, &sub]).await?))
}

pub async fn list_members(
    State(state): State<AppState>,
    principal: Principal,
    PathArgs(id): PathArgs<String>,
) -> ApiResult<Vec<Member>> {
    let id = project_id(&id)?;
    let sub = principal.user().map_err(|_| ApiError::not_found())?;
    Ok(Json(state.db.typed(&principal, "SELECT synchub.list_members($1, $2)", &[&id, &sub]).await?))
}

pub async fn set_member(
    State(state): State<AppState>,
    principal: Principal,
    PathArgs((id, user_id)): PathArgs<(String, String)>,
    JsonBody(body): JsonBody<SetMemberRequest>,
) -> ApiResult<Member> {
    let id = project_id(&id)?;
    let sub = principal.user().map_err(|_| ApiError::not_found())?;
    check_no_nul("user_id", &user_id)?;
    state.limiter.check(&principal.rate_key(), 1.0)?;
    let member = state
        .db
        .typed(&principal, "SELECT synchub.set_member($1, $2, $3, $4)", &[&id, &sub, &user_id, &body.role])
        .await?;
    state.members_changed(id);
    Ok(Json(member))
}

pub async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    PathArgs((id, user_id)): PathArgs<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = project_id(&id)?;
    let sub = principal.user().map_err(|_| ApiError::not_found())?;
    check_no_nul("user_id", &user_id)?;
    state.limiter.check(&principal.rate_key(), 1.0)?;
    state.db.query(&principal, "SELECT synchub.remove_member($1, $2, $3)", &[&id, &sub, &user_id]).await?;
    state.members_changed(id);
    Ok(StatusCode::NO_CONTENT)
}
