//! `/api/v1/registries/logins`: the credentials pull uses for remote registries (`wharf login
//! REGISTRY`). Admins only; passwords go in and are never sent back.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::caller_audit;
use super::error::{ApiError, ErrorBody};
use crate::auth::{Action, Caller, Target};
use crate::images::credentials::{CredentialError, CredentialStore, RegistryLogin};
use crate::images::login::LoginError;
use crate::startup::AppState;

/// One daemon per data root (its lock), so one process-wide lock serializes the file's writers.
static WRITERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(set, remove))
}

fn store(state: &AppState) -> CredentialStore {
    CredentialStore::new(state.config.layout().registry_credentials())
}

impl From<CredentialError> for ApiError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Host { .. } => ApiError::BadRequest(e.to_string()),
            CredentialError::File { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginSummary {
    pub host: String,
    pub username: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// Lists the registries with stored logins (user names only).
#[utoipa::path(get, path = "/registries/logins", tag = "registries",
    responses((status = 200, body = [LoginSummary]), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<LoginSummary>>, ApiError> {
    caller
        .require(Action::SettingsWrite, &Target::System)
        .await?;
    Ok(Json(
        store(&state)
            .list()?
            .into_iter()
            .map(|(host, username)| LoginSummary { host, username })
            .collect(),
    ))
}

/// Stores (or replaces) the login pull uses for a registry host.
#[utoipa::path(put, path = "/registries/logins/{host}", tag = "registries",
    responses((status = 200, body = LoginSummary), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(host): Path<String>,
    super::error::Body(req): super::error::Body<LoginRequest>,
) -> Result<Json<LoginSummary>, ApiError> {
    caller
        .require(Action::SettingsWrite, &Target::System)
        .await?;
    if req.username.is_empty() || req.password.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "login for registry {host}: the user name and the password must not be empty"
        )));
    }
    // Check the login with the registry first, as `docker login` does: a typo is caught now.
    let normalized = crate::images::credentials::normalize_host(&host)?;
    let endpoint = if normalized == "docker.io" {
        "index.docker.io"
    } else {
        normalized.as_str()
    };
    let plain_http =
        crate::images::pull::plain_http_allowed(endpoint, &state.config.insecure_registries);
    let login = RegistryLogin {
        username: req.username.clone(),
        password: req.password,
    };
    crate::images::login::verify(endpoint, &login, plain_http)
        .await
        .map_err(|e| match e {
            LoginError::Refused { .. } => ApiError::BadRequest(e.to_string()),
            LoginError::Unreachable { .. } | LoginError::Protocol { .. } => {
                ApiError::BadGateway(e.to_string())
            }
        })?;
    let host = {
        let _writer = WRITERS.lock().await;
        store(&state).set(&host, login)?
    };
    let record = caller_audit(
        &caller,
        "registry.login",
        &format!("registry:{host}"),
        &format!("username={}", req.username),
    );
    state.db.record_audit(&record).await?;
    Ok(Json(LoginSummary {
        host,
        username: req.username,
    }))
}

/// Forgets a registry host's login.
#[utoipa::path(delete, path = "/registries/logins/{host}", tag = "registries",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(host): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller
        .require(Action::SettingsWrite, &Target::System)
        .await?;
    let removed = {
        let _writer = WRITERS.lock().await;
        store(&state).remove(&host)?
    };
    if !removed {
        return Err(ApiError::NotFound(format!("login for registry {host}")));
    }
    let record = caller_audit(&caller, "registry.logout", &format!("registry:{host}"), "");
    state.db.record_audit(&record).await?;
    Ok(StatusCode::NO_CONTENT)
}
