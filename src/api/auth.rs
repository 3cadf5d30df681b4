//! `/api/v1/auth/*` and `/api/v1/setup`: sign-in for scripts and browsers, and the first admin.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Body, ErrorBody};
use super::tokens::{CreatedToken, parse_expiry};
use crate::auth::service::audit;
use crate::auth::{AuthError, Caller, ClientSource, password};
use crate::db::{AccountKind, AuditRecord, Outcome, User};
use crate::domain::{Role, UserName};
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(whoami))
        .routes(routes!(token_by_password))
        .routes(routes!(setup))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub user: User,
    /// Send this in the `X-CSRF-Token` header with every state-changing request of this session.
    pub csrf_token: String,
}

/// The session cookie: HttpOnly, SameSite=Strict, Path=/, and Secure (with a `__Host-` name) under TLS.
pub fn session_cookie(name: &'static str, value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(secure)
        .build()
}

/// Signs in with a password and starts a dashboard session (cookie + CSRF token).
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    jar: CookieJar,
    Body(req): Body<LoginRequest>,
) -> Result<(CookieJar, Json<LoginResponse>), ApiError> {
    let user = state
        .auth
        .check_password(&state.db, &req.username, &req.password, &source, "session")
        .await?;
    let session = state.auth.start_session(&state.db, &user, &source).await?;
    let cookie = session_cookie(
        state.auth.session_cookie_name(),
        session.cookie,
        state.auth.tls(),
    );
    Ok((
        jar.add(cookie),
        Json(LoginResponse {
            user,
            csrf_token: session.csrf_token,
        }),
    ))
}

/// Ends the caller's dashboard session.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204), (status = 401, body = ErrorBody)))]
async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    let name = state.auth.session_cookie_name();
    let Some(cookie) = jar.get(name).map(|c| c.value().to_owned()) else {
        return Err(ApiError::BadRequest("no session to end".into()));
    };
    if caller.principal.is_anonymous() {
        return Err(AuthError::Required.into());
    }
    state
        .auth
        .end_session(&state.db, &cookie, &caller.principal)
        .await?;
    Ok((
        jar.remove(Cookie::build(name).path("/")),
        StatusCode::NO_CONTENT,
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub name: String,
    /// socket, session, token or basic
    pub via: String,
    pub role: Option<Role>,
    pub kind: Option<AccountKind>,
}

/// Who the caller is, as the daemon sees it.
#[utoipa::path(get, path = "/auth/whoami", tag = "auth", responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
async fn whoami(caller: Caller) -> Result<Json<WhoAmI>, ApiError> {
    let p = &caller.principal;
    if p.is_anonymous() {
        return Err(AuthError::Required.into());
    }
    Ok(Json(WhoAmI {
        name: p.name.clone(),
        via: p.via.name().to_owned(),
        role: p.role,
        kind: p.kind,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordTokenRequest {
    pub username: String,
    pub password: String,
    /// A name for the token, e.g. the client host.
    pub name: String,
    /// Lifetime such as `30d` or `12h`; none for a token that does not expire.
    pub expires_in: Option<String>,
}

/// Exchanges a user name and password for an API token with the user's role (`wharf login`).
#[utoipa::path(post, path = "/auth/token", tag = "auth", request_body = PasswordTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn token_by_password(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    Body(req): Body<PasswordTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let expires_at = parse_expiry(req.expires_in.as_deref())?;
    let user = state
        .auth
        .check_password(&state.db, &req.username, &req.password, &source, "password")
        .await?;
    let Some(role) = user.role else {
        return Err(AuthError::RobotSignIn.into());
    };
    let record = AuditRecord {
        actor: user.name.clone(),
        via: "password".to_owned(),
        source,
        action: "token.create".to_owned(),
        target: format!("user:{}", user.name),
        outcome: Outcome::Ok,
        detail: format!("name={:?} role={role}", req.name),
    };
    let (token, info) = state
        .auth
        .issue_token(&state.db, &user, &req.name, role, expires_at, &record)
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetupRequest {
    /// The one-time token the daemon printed at start.
    pub token: String,
    pub username: String,
    pub password: String,
}

/// Creates the first admin with the one-time setup token (only while there are no users).
#[utoipa::path(post, path = "/setup", tag = "auth", request_body = SetupRequest,
    responses((status = 201, body = User), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn setup(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    Body(req): Body<SetupRequest>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let user =
        create_first_admin(&state, &req.token, &req.username, &req.password, &source).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// The first-run setup shared by the API and the dashboard form.
pub async fn create_first_admin(
    state: &AppState,
    token: &str,
    username: &str,
    password: &str,
    source: &str,
) -> Result<User, ApiError> {
    let name = UserName::parse(username)?;
    password::check_acceptable(password)?;
    let record = |outcome: Outcome, detail: &str| AuditRecord {
        actor: "setup".into(),
        via: "setup".into(),
        source: source.to_owned(),
        action: "setup.complete".into(),
        target: format!("user:{name}"),
        outcome,
        detail: detail.to_owned(),
    };
    if state.db.count_users().await? > 0 || !state.auth.take_setup_token(token) {
        let denied = record(Outcome::Denied, "invalid or used setup token");
        state.db.record_audit(&denied).await?;
        return Err(AuthError::SetupToken.into());
    }
    let hash = password::hash(password.to_owned()).await?;
    let record = record(Outcome::Ok, "role=admin");
    Ok(state
        .db
        .create_user(
            name.as_str(),
            AccountKind::User,
            Some(Role::Admin),
            &hash,
            &record,
        )
        .await?)
}

/// An audit record for the caller.
pub fn caller_audit(caller: &Caller, action: &str, target: &str, detail: &str) -> AuditRecord {
    audit(&caller.principal, action, target, Outcome::Ok, detail)
}

/// Appends the caller's successful `action` (`container.start`) on the thing `name` to the
/// audit log; the target is named by the action's kind (`container:web`).
pub async fn audited(
    state: &crate::startup::AppState,
    caller: &Caller,
    action: &str,
    name: &str,
) -> Result<(), super::ApiError> {
    let kind = action.split_once('.').map_or(action, |(k, _)| k);
    let record = caller_audit(caller, action, &format!("{kind}:{name}"), "");
    state.db.record_audit(&record).await?;
    Ok(())
}
