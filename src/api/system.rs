//! `/api/v1/system/*`: what the daemon and its host are.

use std::path::PathBuf;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use crate::auth::{Action, Caller, Target};
use crate::db::Counts;
use crate::host::HostInfo;
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(info))
        .routes(routes!(version))
        .routes(routes!(disk_usage))
}

/// Disk use of everything the daemon keeps: images, containers, volumes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SystemDiskUsage {
    pub images: super::images::DiskUsage,
    #[serde(flatten)]
    pub containers_and_volumes: crate::engine::DiskUsage,
}

/// `docker system df`: what images, containers and volumes take, and what a prune would free.
#[utoipa::path(get, path = "/system/df", tag = "system",
    responses((status = 200, body = SystemDiskUsage), (status = 401, body = ErrorBody)))]
async fn disk_usage(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SystemDiskUsage>, ApiError> {
    caller
        .require(Action::ImageRead, &Target::Image("*".into()))
        .await?;
    caller
        .require(Action::ContainerRead, &Target::Container("*".into()))
        .await?;
    Ok(Json(SystemDiskUsage {
        images: super::images::image_usage(&state).await?,
        containers_and_volumes: state.engine.disk_usage().await?,
    }))
}

/// The daemon, its settings, its host and its records.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SystemInfo {
    /// Stable id of this daemon, made when its database was created.
    pub id: String,
    pub version: String,
    pub api_version: String,
    #[schema(value_type = String)]
    pub data_root: PathBuf,
    #[schema(value_type = Option<String>)]
    pub config_file: Option<PathBuf>,
    /// The TCP address the daemon serves on, if any.
    pub tcp_address: Option<String>,
    /// The address of the built-in registry (`/v2/`), if it is on.
    pub registry_address: Option<String>,
    /// SHA-256 fingerprint of the TLS certificate on the TCP address; none for plain HTTP.
    pub tls_fingerprint: Option<String>,
    /// The unix socket of the API.
    #[schema(value_type = String)]
    pub socket: PathBuf,
    /// When this daemon process started (RFC 3339).
    pub started_at: String,
    pub host: HostInfo,
    pub counts: Counts,
}

#[utoipa::path(
    get,
    path = "/system/info",
    tag = "system",
    responses(
        (status = 200, description = "The daemon and its host", body = SystemInfo),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    )
)]
async fn info(State(state): State<AppState>, caller: Caller) -> Result<Json<SystemInfo>, ApiError> {
    caller.require(Action::SystemRead, &Target::System).await?;
    let counts = state.db.counts().await?;
    Ok(Json(SystemInfo {
        id: state.daemon_id.to_string(),
        version: crate::VERSION.to_owned(),
        api_version: crate::API_VERSION.to_owned(),
        data_root: state.config.data_root.clone(),
        config_file: state.config.config_file.clone(),
        tcp_address: state.tcp_addr.map(|a| a.to_string()),
        registry_address: state.registry_addr.map(|a| a.to_string()),
        tls_fingerprint: state.tls_fingerprint.clone(),
        socket: state.config.socket.clone(),
        started_at: humantime::format_rfc3339_seconds(state.started_at).to_string(),
        host: (*state.host).clone(),
        counts,
    }))
}

/// Versions of the daemon, for `wharf version`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    pub version: String,
    pub api_version: String,
    pub os: String,
    pub arch: String,
    pub kernel: String,
}

#[utoipa::path(
    get,
    path = "/system/version",
    tag = "system",
    responses((status = 200, description = "Versions of the daemon", body = VersionInfo))
)]
async fn version(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<VersionInfo>, ApiError> {
    caller.require(Action::SystemRead, &Target::System).await?;
    Ok(Json(VersionInfo {
        version: crate::VERSION.to_owned(),
        api_version: crate::API_VERSION.to_owned(),
        os: std::env::consts::OS.to_owned(),
        arch: state.host.architecture.clone(),
        kernel: state.host.kernel.clone(),
    }))
}
