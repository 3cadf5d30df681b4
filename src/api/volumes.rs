//! `/api/v1/volumes`: named volumes (directories under the data root that containers mount).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::audited;
use super::error::{ApiError, Body, ErrorBody};
use crate::auth::{Action, Caller, Target};
use crate::engine::VolumeView;
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(inspect, remove))
        .routes(routes!(prune))
}

/// Every named volume, with the containers that mount it.
#[utoipa::path(get, path = "/volumes", tag = "volumes",
    responses((status = 200, body = [VolumeView]), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<VolumeView>>, ApiError> {
    caller
        .require(Action::ContainerRead, &Target::Container("*".into()))
        .await?;
    Ok(Json(state.engine.volumes().await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateVolume {
    pub name: String,
}

/// Makes a named volume (one that exists already is returned as it is).
#[utoipa::path(post, path = "/volumes", tag = "volumes",
    responses((status = 201, body = VolumeView), (status = 400, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateVolume>,
) -> Result<(StatusCode, Json<VolumeView>), ApiError> {
    caller
        .require(Action::ContainerCreate, &Target::Container("*".into()))
        .await?;
    let volume = state.engine.volume_create(&req.name).await?;
    audited(&state, &caller, "volume.create", &volume.name).await?;
    Ok((StatusCode::CREATED, Json(volume)))
}

/// One volume.
#[utoipa::path(get, path = "/volumes/{name}", tag = "volumes",
    responses((status = 200, body = VolumeView), (status = 404, body = ErrorBody)))]
async fn inspect(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<VolumeView>, ApiError> {
    caller
        .require(Action::ContainerRead, &Target::Container("*".into()))
        .await?;
    Ok(Json(state.engine.volume(&name).await?))
}

/// Removes a volume and its data; refused while a container mounts it.
#[utoipa::path(delete, path = "/volumes/{name}", tag = "volumes",
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller
        .require(Action::ContainerRemove, &Target::Container("*".into()))
        .await?;
    state.engine.volume_remove(&name).await?;
    audited(&state, &caller, "volume.remove", &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PrunedVolumes {
    pub removed: Vec<String>,
}

/// Removes every volume no container mounts.
#[utoipa::path(post, path = "/volumes/prune", tag = "volumes",
    responses((status = 200, body = PrunedVolumes)))]
async fn prune(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PrunedVolumes>, ApiError> {
    caller
        .require(Action::ContainerRemove, &Target::Container("*".into()))
        .await?;
    let removed = state.engine.volume_prune().await?;
    audited(
        &state,
        &caller,
        "volume.prune",
        &format!("{} volumes", removed.len()),
    )
    .await?;
    Ok(Json(PrunedVolumes { removed }))
}
