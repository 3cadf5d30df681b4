//! `/api/v1/registry/…`: the built-in registry's repositories and tags, their settings, and
//! garbage collection. Repository names carry slashes, so they travel as `?repository=`.

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::caller_audit;
use super::error::{ApiError, Body, ErrorBody};
use crate::auth::{Action, Caller, Target, authorize};
use crate::db::{RepositorySummary, TagDetail};
use crate::registry::gc::{self, GcReport};
use crate::registry::names::{valid_repository, valid_tag};
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(repositories))
        .routes(routes!(tags, delete_tag))
        .routes(routes!(delete_manifest))
        .routes(routes!(settings))
        .routes(routes!(collect))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RepositoryQuery {
    /// A repository name, e.g. `team/app`.
    pub repository: String,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TagQuery {
    pub repository: String,
    pub tag: String,
}

fn checked(repository: &str) -> Result<(), ApiError> {
    if valid_repository(repository) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "repository name {repository:?} is not valid: lower-case components of a-z, 0-9 and single separators, joined by /"
        )))
    }
}

/// The repositories the caller may pull.
#[utoipa::path(get, path = "/registry/repositories", tag = "registry",
    responses((status = 200, body = [RepositorySummary]), (status = 401, body = ErrorBody)))]
async fn repositories(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<RepositorySummary>>, ApiError> {
    caller.require(Action::SystemRead, &Target::System).await?;
    let all = state.db.repositories().await?;
    Ok(Json(
        all.into_iter()
            .filter(|r| {
                authorize(
                    &caller.principal,
                    Action::RepositoryPull,
                    &Target::Repository(r.name.clone()),
                )
                .is_ok()
            })
            .collect(),
    ))
}

/// A repository's tags, with digest, size and when each last moved.
#[utoipa::path(get, path = "/registry/tags", tag = "registry", params(RepositoryQuery),
    responses((status = 200, body = [TagDetail]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn tags(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RepositoryQuery>,
) -> Result<Json<Vec<TagDetail>>, ApiError> {
    checked(&q.repository)?;
    caller
        .require(
            Action::RepositoryPull,
            &Target::Repository(q.repository.clone()),
        )
        .await?;
    if !state.db.repository_exists(&q.repository).await? {
        return Err(ApiError::NotFound(format!("repository {}", q.repository)));
    }
    Ok(Json(state.db.tag_details(&q.repository).await?))
}

/// Removes a tag (the manifest stays, by digest, until garbage collection).
#[utoipa::path(delete, path = "/registry/tags", tag = "registry", params(TagQuery),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_tag(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<TagQuery>,
) -> Result<StatusCode, ApiError> {
    checked(&q.repository)?;
    if !valid_tag(&q.tag) {
        return Err(ApiError::BadRequest(format!(
            "tag {:?} is not valid",
            q.tag
        )));
    }
    caller
        .require(
            Action::RepositoryDelete,
            &Target::Repository(q.repository.clone()),
        )
        .await?;
    if !state.db.delete_tag(&q.repository, &q.tag).await? {
        return Err(ApiError::NotFound(format!(
            "tag {}:{}",
            q.repository, q.tag
        )));
    }
    let record = caller_audit(
        &caller,
        "registry.delete",
        &format!("repository:{}", q.repository),
        &format!("tag={}", q.tag),
    );
    state.db.record_audit(&record).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ManifestQuery {
    pub repository: String,
    /// The manifest's digest.
    pub digest: String,
}

/// Removes a manifest from a repository, with the tags that name it there (a manifest no
/// repository holds any more goes; its blobs wait for garbage collection). Refused while a
/// container runs from it.
#[utoipa::path(delete, path = "/registry/manifests", tag = "registry", params(ManifestQuery),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_manifest(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ManifestQuery>,
) -> Result<StatusCode, ApiError> {
    checked(&q.repository)?;
    let digest = crate::domain::Digest::parse(&q.digest)?;
    caller
        .require(
            Action::RepositoryDelete,
            &Target::Repository(q.repository.clone()),
        )
        .await?;
    if !state
        .db
        .holds_manifest(&q.repository, digest.as_str())
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "manifest {digest} in {}",
            q.repository
        )));
    }
    if let Some(reason) = state
        .db
        .manifest_in_use(&q.repository, digest.as_str())
        .await?
    {
        return Err(ApiError::Conflict(reason));
    }
    if !state
        .db
        .delete_manifest(&q.repository, digest.as_str())
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "manifest {digest} in {}",
            q.repository
        )));
    }
    let record = caller_audit(
        &caller,
        "registry.delete",
        &format!("repository:{}", q.repository),
        &format!("manifest={digest}"),
    );
    state.db.record_audit(&record).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RepositorySettings {
    /// Whether anyone may pull without logging in (pushing always needs a login).
    pub anonymous_pull: bool,
}

/// Changes a repository's settings (admins).
#[utoipa::path(put, path = "/registry/settings", tag = "registry", params(RepositoryQuery),
    responses((status = 200, body = RepositorySettings), (status = 403, body = ErrorBody)))]
async fn settings(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RepositoryQuery>,
    Body(settings): Body<RepositorySettings>,
) -> Result<Json<RepositorySettings>, ApiError> {
    checked(&q.repository)?;
    caller
        .require(Action::SettingsWrite, &Target::System)
        .await?;
    state
        .db
        .set_anonymous_pull(&q.repository, settings.anonymous_pull)
        .await?;
    let record = caller_audit(
        &caller,
        "registry.settings",
        &format!("repository:{}", q.repository),
        &format!("anonymous_pull={}", settings.anonymous_pull),
    );
    state.db.record_audit(&record).await?;
    Ok(Json(settings))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GcRequest {
    /// Report what would be removed, remove nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Keep blobs and layers younger than this (default 3600): a push in progress is safe.
    pub grace_seconds: Option<u64>,
}

/// Garbage-collects the content store while the registry keeps serving (admins).
#[utoipa::path(post, path = "/registry/gc", tag = "registry",
    responses((status = 200, body = GcReport), (status = 403, body = ErrorBody)))]
async fn collect(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<GcRequest>,
) -> Result<Json<GcReport>, ApiError> {
    caller
        .require(Action::SettingsWrite, &Target::System)
        .await?;
    let grace = req
        .grace_seconds
        .map_or(gc::DEFAULT_GRACE, Duration::from_secs);
    let report = gc::collect(&state, req.dry_run, grace)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !req.dry_run {
        let record = caller_audit(
            &caller,
            "registry.gc",
            "system",
            &format!(
                "blobs={} bytes={} layers={}",
                report.blobs, report.bytes, report.layers
            ),
        );
        state.db.record_audit(&record).await?;
    }
    Ok(Json(report))
}
