//! `/api/v1/networks`: bridge networks and the containers on them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::audited;
use super::error::{ApiError, Body, ErrorBody};
use crate::auth::{Action, Caller, Target};
use crate::engine::NetworkView;
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(inspect, remove))
        .routes(routes!(connect))
        .routes(routes!(disconnect))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Connect {
    /// The running container, by name or id.
    pub container: String,
    /// A fixed address on the network.
    pub ip: Option<String>,
    /// More names it answers to there.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// Plugs a running container into the network as well (it stays on it across restarts).
#[utoipa::path(post, path = "/networks/{name}/connect", tag = "networks", request_body = Connect,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn connect(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<Connect>,
) -> Result<StatusCode, ApiError> {
    caller
        .require(
            Action::ContainerOperate,
            &Target::Container(req.container.clone()),
        )
        .await?;
    state
        .engine
        .network_connect(&name, &req.container, req.ip.as_deref(), &req.aliases)
        .await?;
    audited(
        &state,
        &caller,
        "network.connect",
        &format!("{name} {}", req.container),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Disconnect {
    pub container: String,
}

/// Unplugs a container from the network.
#[utoipa::path(post, path = "/networks/{name}/disconnect", tag = "networks", request_body = Disconnect,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn disconnect(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<Disconnect>,
) -> Result<StatusCode, ApiError> {
    caller
        .require(
            Action::ContainerOperate,
            &Target::Container(req.container.clone()),
        )
        .await?;
    state
        .engine
        .network_disconnect(&name, &req.container)
        .await?;
    audited(
        &state,
        &caller,
        "network.disconnect",
        &format!("{name} {}", req.container),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every network, with its containers and their addresses.
#[utoipa::path(get, path = "/networks", tag = "networks",
    responses((status = 200, body = [NetworkView]), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<NetworkView>>, ApiError> {
    caller
        .require(Action::ContainerRead, &Target::Container("*".into()))
        .await?;
    Ok(Json(state.engine.network_views().await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateNetwork {
    pub name: String,
    /// `a.b.c.d/len`; default: the first free /24 of 10.90.0.0/16.
    pub subnet: Option<String>,
}

/// Makes a user-defined bridge network (its containers reach each other by name).
#[utoipa::path(post, path = "/networks", tag = "networks", request_body = CreateNetwork,
    responses((status = 201, body = NetworkView), (status = 400, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateNetwork>,
) -> Result<(StatusCode, Json<NetworkView>), ApiError> {
    caller
        .require(Action::ContainerCreate, &Target::Container("*".into()))
        .await?;
    let network = state
        .engine
        .network_create(&req.name, req.subnet.as_deref())
        .await?;
    audited(&state, &caller, "network.create", &network.name).await?;
    Ok((StatusCode::CREATED, Json(network)))
}

/// One network.
#[utoipa::path(get, path = "/networks/{name}", tag = "networks",
    responses((status = 200, body = NetworkView), (status = 404, body = ErrorBody)))]
async fn inspect(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<NetworkView>, ApiError> {
    caller
        .require(Action::ContainerRead, &Target::Container("*".into()))
        .await?;
    Ok(Json(state.engine.network(&name).await?))
}

/// Removes a network no running container is on: its bridge and its rules go.
#[utoipa::path(delete, path = "/networks/{name}", tag = "networks",
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller
        .require(Action::ContainerRemove, &Target::Container("*".into()))
        .await?;
    state.engine.network_remove(&name).await?;
    audited(&state, &caller, "network.remove", &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
