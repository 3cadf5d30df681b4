//! `/api/v1/tokens`: API tokens, shown once at creation, stored only as digests.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::caller_audit;
use super::error::{ApiError, Body, ErrorBody};
use crate::auth::{Action, Caller, Target};
use crate::db::{ApiToken, now_secs};
use crate::domain::Role;
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// A token as created: the secret appears here and nowhere else, ever.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    pub info: ApiToken,
}

/// Unix time of `now + expires_in` (`30d`, `12h`, `90m`, …); `None` never expires.
pub fn parse_expiry(expires_in: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(text) = expires_in
        .map(str::trim)
        .filter(|t| !t.is_empty() && *t != "never")
    else {
        return Ok(None);
    };
    let duration = humantime::parse_duration(text).map_err(|e| {
        ApiError::BadRequest(format!(
            "invalid expiry {text:?}: {e} (use e.g. 30d, 12h or never)"
        ))
    })?;
    if duration.as_secs() == 0 {
        return Err(ApiError::BadRequest(format!(
            "invalid expiry {text:?}: must be at least one second"
        )));
    }
    Ok(Some(now_secs().saturating_add(
        duration.as_secs().min(i64::MAX as u64) as i64,
    )))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Everyone's tokens (admins).
    #[serde(default)]
    pub all: bool,
}

/// The caller's tokens, or everyone's with `all=true`.
#[utoipa::path(get, path = "/tokens", tag = "tokens", params(ListQuery),
    responses((status = 200, body = Vec<ApiToken>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ApiToken>>, ApiError> {
    let own = caller.principal.user_id;
    if q.all || own.is_none() {
        caller
            .require(Action::TokenManageAny, &Target::Token(0))
            .await?;
        return Ok(Json(state.db.list_tokens(None).await?));
    }
    caller
        .require(
            Action::TokenManageOwn,
            &Target::User(caller.principal.name.clone()),
        )
        .await?;
    Ok(Json(state.db.list_tokens(own).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateToken {
    pub name: String,
    /// At most the owner's role; defaults to it.
    pub role: Option<Role>,
    /// Lifetime such as `30d`; none for no expiry.
    pub expires_in: Option<String>,
    /// Whose token (admins and the local socket); defaults to the caller.
    pub user: Option<String>,
}

/// Creates an API token. The response holds the token; it cannot be shown again.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::BadRequest(
            "a token needs a name of 1 to 100 characters".into(),
        ));
    }
    let expires_at = parse_expiry(req.expires_in.as_deref())?;
    let owner_name = match (&req.user, caller.principal.user_id) {
        (Some(user), _) => user.clone(),
        (None, Some(_)) => caller.principal.name.clone(),
        (None, None) => {
            return Err(ApiError::BadRequest(
                "name the user the token is for (\"user\")".into(),
            ));
        }
    };
    if owner_name == caller.principal.name && caller.principal.user_id.is_some() {
        caller
            .require(Action::TokenManageOwn, &Target::User(owner_name.clone()))
            .await?;
    } else {
        caller
            .require(Action::TokenManageAny, &Target::User(owner_name.clone()))
            .await?;
    }
    let owner = state
        .db
        .user_by_name(&owner_name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {owner_name:?}")))?;
    let Some(owner_role) = owner.role else {
        return Err(ApiError::BadRequest(format!(
            "{owner_name:?} is a robot: robots sign in to the registry with their password"
        )));
    };
    // A token carries at most its owner's role, and a caller cannot mint more than it holds.
    let ceiling = caller
        .principal
        .role
        .map_or(owner_role, |r| r.min(owner_role));
    let role = req.role.unwrap_or(ceiling);
    if role > ceiling {
        return Err(ApiError::BadRequest(format!(
            "a token for {owner_name:?} can have at most the role {ceiling}"
        )));
    }
    let record = caller_audit(
        &caller,
        "token.create",
        &format!("user:{owner_name}"),
        &format!("name={name:?} role={role}"),
    );
    let (token, info) = state
        .auth
        .issue_token(&state.db, &owner, name, role, expires_at, &record)
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

/// Revokes a token: its owner, or an admin.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens",
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let token = state.db.token_by_id(id).await?;
    let own = token
        .as_ref()
        .is_some_and(|t| Some(t.user_id) == caller.principal.user_id);
    if own {
        caller
            .require(
                Action::TokenManageOwn,
                &Target::User(caller.principal.name.clone()),
            )
            .await?;
    } else {
        caller
            .require(Action::TokenManageAny, &Target::Token(id))
            .await?;
    }
    let Some(token) = token else {
        return Err(ApiError::NotFound(format!("API token {id}")));
    };
    let record = caller_audit(
        &caller,
        "token.revoke",
        &format!("token:{id}"),
        &format!("user={} name={:?}", token.user, token.name),
    );
    state.db.revoke_token(id, &record).await?;
    Ok(StatusCode::NO_CONTENT)
}
