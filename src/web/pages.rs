//! Page handlers: sign-in, first-run setup, sign-out, overview, account (tokens, password), audit.

use std::time::{Duration, UNIX_EPOCH};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use serde::Deserialize;

use super::error::WebError;
use super::session::{CsrfForm, NoFields, WebUser};
use crate::api::auth::{create_first_admin, session_cookie};
use crate::api::{ApiError, parse_expiry};
use crate::auth::service::audit as audit_record;
use crate::auth::{Action, AuthError, ClientSource, Target, authorize, password, secret};
use crate::db::{AuditFilter, Outcome, now_secs};
use crate::domain::{Role, percent_encode};
use crate::host::HostInfo;
use crate::startup::AppState;

/// The double-submit cookie that protects the sign-in form itself (there is no session yet).
const LOGIN_CSRF_COOKIE: &str = "wharf_login_csrf";

pub(super) fn time_text(secs: Option<i64>) -> String {
    match secs {
        Some(s) if s >= 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s as u64))
                .to_string()
        }
        _ => "-".to_owned(),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    user: WebUser,
    host: HostInfo,
    memory: String,
    /// (state, how many containers are in it)
    containers: Vec<(&'static str, usize)>,
    container_total: usize,
    images: usize,
    repositories: usize,
    /// The file system of the data root: used and size, or why it could not be read.
    disk: String,
    /// (time, type, action, actor)
    events: Vec<(String, String, String, String)>,
}

pub async fn overview(
    State(state): State<AppState>,
    user: WebUser,
) -> Result<OverviewPage, WebError> {
    authorize(&user.principal, Action::SystemRead, &Target::System)
        .map_err(|d| WebError::Forbidden(d.to_string()))?;
    let events = state
        .db
        .recent_events(20)
        .await?
        .into_iter()
        .map(|e| {
            (
                time_text(Some(e.time_nano / 1_000_000_000)),
                e.kind,
                e.action,
                e.actor_id,
            )
        })
        .collect();
    let all = state.db.list_containers(true).await?;
    let containers = ["running", "paused", "exited", "created"]
        .into_iter()
        .map(|s| (s, all.iter().filter(|c| c.state == s).count()))
        .collect();
    let disk = match nix::sys::statvfs::statvfs(&state.config.data_root) {
        Ok(fs) => {
            let block = fs.fragment_size();
            let size = fs.blocks() * block;
            let free = fs.blocks_available() * block;
            format!(
                "{} used of {} ({} free) on the file system of {}",
                crate::host::human_bytes(size.saturating_sub(free)),
                crate::host::human_bytes(size),
                crate::host::human_bytes(free),
                state.config.data_root.display()
            )
        }
        Err(e) => format!(
            "unknown ({}: {})",
            state.config.data_root.display(),
            e.desc()
        ),
    };
    Ok(OverviewPage {
        container_total: all.len(),
        containers,
        images: state.db.list_images().await?.len(),
        repositories: state.db.repositories().await?.len(),
        disk,
        memory: crate::host::human_bytes(state.host.memory_bytes),
        host: (*state.host).clone(),
        user,
        events,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    csrf_token: String,
    message: Option<String>,
    error: Option<String>,
}

fn login_csrf_cookie(value: String) -> Cookie<'static> {
    Cookie::build((LOGIN_CSRF_COOKIE, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/login")
        .build()
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    message: Option<String>,
}

/// The sign-in page; a fresh login CSRF cookie each time.
pub async fn login_page(jar: CookieJar, Query(q): Query<LoginQuery>) -> (CookieJar, LoginPage) {
    let token = secret::random_string(24);
    let message = q.message.as_deref().and_then(|m| match m {
        "signed-out" => Some("You are signed out.".to_owned()),
        "password-changed" => Some("Password changed: sign in with the new one.".to_owned()),
        "admin-created" => Some("The admin account was created: sign in.".to_owned()),
        _ => None,
    });
    (
        jar.add(login_csrf_cookie(token.clone())),
        LoginPage {
            csrf_token: token,
            message,
            error: None,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf_token: String,
    username: String,
    password: String,
}

pub async fn login(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    jar: CookieJar,
    axum::Form(form): axum::Form<LoginForm>,
) -> Result<Response, WebError> {
    let expected = jar
        .get(LOGIN_CSRF_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    if expected.is_empty() || !secret::same_secret(&form.csrf_token, &expected) {
        return Err(WebError::Csrf);
    }
    let retry = |status: StatusCode, error: String, jar: CookieJar| {
        let token = secret::random_string(24);
        (
            status,
            jar.add(login_csrf_cookie(token.clone())),
            LoginPage {
                csrf_token: token,
                message: None,
                error: Some(error),
            },
        )
            .into_response()
    };
    let user = match state
        .auth
        .check_password(
            &state.db,
            &form.username,
            &form.password,
            &source,
            "session",
        )
        .await
    {
        Ok(user) => user,
        Err(e @ (AuthError::InvalidCredentials | AuthError::Throttled(_))) => {
            return Ok(retry(e.status(), e.to_string(), jar));
        }
        Err(e) => return Err(e.into()),
    };
    let session = match state.auth.start_session(&state.db, &user, &source).await {
        Ok(s) => s,
        Err(e @ AuthError::RobotSignIn) => return Ok(retry(e.status(), e.to_string(), jar)),
        Err(e) => return Err(e.into()),
    };
    let jar = jar
        .remove(Cookie::build(LOGIN_CSRF_COOKIE).path("/login"))
        .add(session_cookie(
            state.auth.session_cookie_name(),
            session.cookie,
            state.auth.tls(),
        ));
    Ok((jar, Redirect::to("/")).into_response())
}

pub async fn logout(
    State(state): State<AppState>,
    jar: CookieJar,
    form: CsrfForm<NoFields>,
) -> Result<Response, WebError> {
    state
        .auth
        .end_session(&state.db, &form.user.cookie, &form.user.principal)
        .await?;
    let jar = jar.remove(Cookie::build(state.auth.session_cookie_name()).path("/"));
    Ok((jar, Redirect::to("/login?message=signed-out")).into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "setup.html")]
pub struct SetupPage {
    token: String,
    min_length: usize,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SetupQuery {
    #[serde(default)]
    token: String,
}

pub async fn setup_page(
    State(state): State<AppState>,
    Query(q): Query<SetupQuery>,
) -> Result<SetupPage, WebError> {
    if state.db.count_users().await? > 0 || !state.auth.setup_pending() {
        return Err(WebError::NotFound(
            "Setup is done (or its link expired): sign in, or add an admin on the host with `wharf user add NAME --role admin --password-stdin`.".into(),
        ));
    }
    Ok(SetupPage {
        token: q.token,
        min_length: password::MIN_LENGTH,
        error: None,
    })
}

#[derive(Debug, Deserialize)]
pub struct SetupForm {
    token: String,
    username: String,
    password: String,
    password_again: String,
}

pub async fn setup(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    axum::Form(form): axum::Form<SetupForm>,
) -> Result<Response, WebError> {
    let again = |error: String| {
        (
            StatusCode::BAD_REQUEST,
            SetupPage {
                token: form.token.clone(),
                min_length: password::MIN_LENGTH,
                error: Some(error),
            },
        )
            .into_response()
    };
    if form.password != form.password_again {
        return Ok(again("The two passwords differ.".into()));
    }
    match create_first_admin(&state, &form.token, &form.username, &form.password, &source).await {
        Ok(_) => Ok(Redirect::to("/login?message=admin-created").into_response()),
        Err(ApiError::Invalid(e)) => Ok(again(e.to_string())),
        Err(ApiError::Auth(e)) => Err(e.into()),
        Err(e) => Err(WebError::BadRequest(e.to_string())),
    }
}

pub struct TokenRow {
    id: i64,
    name: String,
    role: Role,
    prefix: String,
    expires: String,
    last_used: String,
    status: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "account.html")]
pub struct AccountPage {
    user: WebUser,
    tokens: Vec<TokenRow>,
    roles: Vec<Role>,
    new_token: Option<String>,
    message: Option<String>,
    error: Option<String>,
}

async fn account_page(
    state: &AppState,
    user: WebUser,
    new_token: Option<String>,
    message: Option<String>,
    error: Option<String>,
) -> Result<AccountPage, WebError> {
    let now = now_secs();
    let tokens = state
        .db
        .list_tokens(user.principal.user_id)
        .await?
        .into_iter()
        .map(|t| TokenRow {
            status: if t.revoked_at.is_some() {
                "revoked"
            } else if t.expires_at.is_some_and(|e| e <= now) {
                "expired"
            } else {
                "active"
            },
            id: t.id,
            name: t.name,
            role: t.role,
            prefix: t.prefix,
            expires: time_text(t.expires_at),
            last_used: time_text(t.last_used_at),
        })
        .collect();
    let roles = [Role::Viewer, Role::Operator, Role::Admin]
        .into_iter()
        .filter(|r| *r <= user.role)
        .collect();
    Ok(AccountPage {
        user,
        tokens,
        roles,
        new_token,
        message,
        error,
    })
}

pub async fn account(
    State(state): State<AppState>,
    user: WebUser,
) -> Result<AccountPage, WebError> {
    account_page(&state, user, None, None, None).await
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    name: String,
    role: Role,
    #[serde(default)]
    expires_in: String,
}

pub async fn create_token(
    State(state): State<AppState>,
    form: CsrfForm<TokenForm>,
) -> Result<Response, WebError> {
    let CsrfForm { user, fields } = form;
    authorize(
        &user.principal,
        Action::TokenManageOwn,
        &Target::User(user.name.clone()),
    )
    .map_err(|d| WebError::Forbidden(d.to_string()))?;
    let name = fields.name.trim().to_owned();
    let problem = if name.is_empty() || name.len() > 100 {
        Some("A token needs a name of 1 to 100 characters.".to_owned())
    } else if fields.role > user.role {
        Some(format!(
            "A token can have at most your role, {}.",
            user.role
        ))
    } else {
        None
    };
    let expires_at = match parse_expiry(Some(&fields.expires_in)) {
        Ok(e) => e,
        Err(e) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                account_page(&state, user, None, None, Some(e.to_string())).await?,
            )
                .into_response());
        }
    };
    if let Some(problem) = problem {
        return Ok((
            StatusCode::BAD_REQUEST,
            account_page(&state, user, None, None, Some(problem)).await?,
        )
            .into_response());
    }
    let owner = state
        .db
        .user_by_name(&user.name)
        .await?
        .ok_or(WebError::SignIn)?;
    let record = audit_record(
        &user.principal,
        "token.create",
        &format!("user:{}", user.name),
        Outcome::Ok,
        &format!("name={name:?} role={}", fields.role),
    );
    let (token, _) = state
        .auth
        .issue_token(&state.db, &owner, &name, fields.role, expires_at, &record)
        .await?;
    Ok(account_page(
        &state,
        user,
        Some(token),
        Some("Token created.".into()),
        None,
    )
    .await?
    .into_response())
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm<NoFields>,
) -> Result<Response, WebError> {
    let user = form.user;
    let token = state
        .db
        .token_by_id(id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("API token {id} not found")))?;
    let action = if Some(token.user_id) == user.principal.user_id {
        Action::TokenManageOwn
    } else {
        Action::TokenManageAny
    };
    if let Err(denied) = authorize(&user.principal, action, &Target::Token(id)) {
        let record = audit_record(
            &user.principal,
            action.name(),
            &format!("token:{id}"),
            Outcome::Denied,
            "",
        );
        state.db.record_audit(&record).await?;
        return Err(WebError::Forbidden(denied.to_string()));
    }
    let record = audit_record(
        &user.principal,
        "token.revoke",
        &format!("token:{id}"),
        Outcome::Ok,
        &format!("user={} name={:?}", token.user, token.name),
    );
    state.db.revoke_token(id, &record).await?;
    Ok(Redirect::to("/account").into_response())
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    current_password: String,
    password: String,
    password_again: String,
}

pub async fn change_password(
    State(state): State<AppState>,
    form: CsrfForm<PasswordForm>,
) -> Result<Response, WebError> {
    let CsrfForm { user, fields } = form;
    let problem = if fields.password != fields.password_again {
        Some("The two new passwords differ.".to_owned())
    } else {
        password::check_acceptable(&fields.password)
            .err()
            .map(|e| e.to_string())
    };
    if let Some(problem) = problem {
        return Ok((
            StatusCode::BAD_REQUEST,
            account_page(&state, user, None, None, Some(problem)).await?,
        )
            .into_response());
    }
    let checked = state
        .auth
        .check_password(
            &state.db,
            &user.name,
            &fields.current_password,
            &user.principal.source,
            "session",
        )
        .await;
    match checked {
        Ok(_) => {}
        Err(e @ (AuthError::InvalidCredentials | AuthError::Throttled(_))) => {
            let status = e.status();
            let message = if matches!(e, AuthError::InvalidCredentials) {
                "The current password is wrong.".to_owned()
            } else {
                e.to_string()
            };
            return Ok((
                status,
                account_page(&state, user, None, None, Some(message)).await?,
            )
                .into_response());
        }
        Err(e) => return Err(e.into()),
    }
    let user_id = user.principal.user_id.ok_or(WebError::SignIn)?;
    let hash = password::hash(fields.password)
        .await
        .map_err(|e| WebError::Auth(AuthError::Password(e)))?;
    let record = audit_record(
        &user.principal,
        "user.password",
        &format!("user:{}", user.name),
        Outcome::Ok,
        "sessions revoked",
    );
    state.db.set_password(user_id, &hash, &record).await?;
    let jar = CookieJar::new().remove(Cookie::build(state.auth.session_cookie_name()).path("/"));
    Ok((jar, Redirect::to("/login?message=password-changed")).into_response())
}

pub struct AuditRow {
    time: String,
    actor: String,
    via: String,
    source: String,
    action: String,
    target: String,
    outcome: String,
    detail: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
pub struct AuditPage {
    user: WebUser,
    entries: Vec<AuditRow>,
    outcomes: Vec<&'static str>,
    filter_actor: String,
    filter_action: String,
    filter_outcome: &'static str,
    csv_query: String,
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    outcome: String,
}

pub async fn audit(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<AuditQuery>,
) -> Result<AuditPage, WebError> {
    if let Err(denied) = authorize(&user.principal, Action::AuditRead, &Target::Audit) {
        let record = audit_record(
            &user.principal,
            Action::AuditRead.name(),
            "audit",
            Outcome::Denied,
            "",
        );
        state.db.record_audit(&record).await?;
        return Err(WebError::Forbidden(denied.to_string()));
    }
    let outcome = match q.outcome.as_str() {
        "ok" => Some(Outcome::Ok),
        "denied" => Some(Outcome::Denied),
        "failed" => Some(Outcome::Failed),
        _ => None,
    };
    let filter = AuditFilter {
        actor: Some(q.actor.clone()).filter(|a| !a.is_empty()),
        action: Some(q.action.clone()).filter(|a| !a.is_empty()),
        outcome,
        limit: 500,
        ..AuditFilter::default()
    };
    let entries = state
        .db
        .list_audit(&filter)
        .await?
        .into_iter()
        .map(|e| AuditRow {
            time: time_text(Some(e.time_nano / 1_000_000_000)),
            actor: e.actor,
            via: e.via,
            source: e.source,
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            detail: e.detail,
        })
        .collect();
    let mut csv_query = String::new();
    for (key, value) in [
        ("actor", &q.actor),
        ("action", &q.action),
        ("outcome", &q.outcome),
    ] {
        if !value.is_empty() {
            csv_query.push_str(&format!("&{key}={}", percent_encode(value)));
        }
    }
    Ok(AuditPage {
        user,
        entries,
        outcomes: vec!["ok", "denied", "failed"],
        filter_actor: q.actor,
        filter_action: q.action,
        filter_outcome: outcome.map_or("", Outcome::as_str),
        csv_query,
    })
}

/// One row of the Images page: an image once per name (or once, unnamed).
pub struct ImageRow {
    pub repository: String,
    pub tag: String,
    pub id: String,
    pub platform: String,
    pub size: String,
    pub layers: i64,
    pub added: String,
    /// The name the row's Remove button removes; empty for an unnamed image (prune takes those).
    pub remove_name: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "images.html")]
pub struct ImagesPage {
    pub user: WebUser,
    pub images: Vec<ImageRow>,
    pub can_pull: bool,
    pub can_remove: bool,
    pub can_build: bool,
}

/// One setting on the Settings page.
pub struct SettingRow {
    pub key: &'static str,
    pub value: String,
    pub about: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings.html")]
pub struct SettingsPage {
    pub user: WebUser,
    pub config_file: String,
    pub settings: Vec<SettingRow>,
}

/// The settings the daemon runs with (admins), each with what it is.
pub async fn settings(
    State(state): State<AppState>,
    user: WebUser,
) -> Result<SettingsPage, WebError> {
    authorize(&user.principal, Action::SettingsWrite, &Target::System)
        .map_err(|d| WebError::Forbidden(d.to_string()))?;
    let c = &state.config;
    let off = |v: Option<String>| v.unwrap_or_else(|| "off".to_owned());
    let duration = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let settings = vec![
        SettingRow {
            key: "data_root",
            value: c.data_root.display().to_string(),
            about: "where images, containers, volumes and the database live",
        },
        SettingRow {
            key: "listen",
            value: off(state.tcp_addr.map(|a| a.to_string())),
            about: "the API and dashboard on TCP",
        },
        SettingRow {
            key: "tls",
            value: format!(
                "{:?}{}",
                c.tls,
                state
                    .tls_fingerprint
                    .as_deref()
                    .map(|f| format!(" (certificate {f})"))
                    .unwrap_or_default()
            ),
            about: "whether the TCP listener speaks TLS",
        },
        SettingRow {
            key: "socket",
            value: c.socket.display().to_string(),
            about: "the unix socket of the local CLI",
        },
        SettingRow {
            key: "socket_group",
            value: c.socket_group.clone().unwrap_or_else(|| "root".into()),
            about: "the group that may use the socket",
        },
        SettingRow {
            key: "registry_listen",
            value: off(state.registry_addr.map(|a| a.to_string())),
            about: "the built-in registry (/v2/)",
        },
        SettingRow {
            key: "registry_upload_max_age",
            value: duration(c.registry_upload_max_age),
            about: "unfinished registry uploads are removed after this",
        },
        SettingRow {
            key: "insecure_registries",
            value: if c.insecure_registries.is_empty() {
                "none (loopback only)".into()
            } else {
                c.insecure_registries.join(", ")
            },
            about: "registries pull and push may reach over plain HTTP",
        },
        SettingRow {
            key: "default_network",
            value: c.default_network.clone(),
            about: "the network of containers that name none",
        },
        SettingRow {
            key: "bridge_subnet",
            value: c.bridge_subnet.clone(),
            about: "the subnet of the default bridge network",
        },
        SettingRow {
            key: "event_retention",
            value: duration(c.event_retention),
            about: "events older than this are dropped",
        },
        SettingRow {
            key: "log_level",
            value: c.log_level.clone(),
            about: "what the daemon logs",
        },
        SettingRow {
            key: "log_format",
            value: format!("{:?}", c.log_format),
            about: "how the daemon's log lines look",
        },
    ];
    Ok(SettingsPage {
        user,
        config_file: c
            .config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        settings,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "build.html")]
pub struct BuildPage {
    pub user: WebUser,
}

/// The build page: a context tar or a pasted Dockerfile, and the build's live log.
pub async fn build_page(user: WebUser) -> Result<BuildPage, WebError> {
    authorize(
        &user.principal,
        Action::ImageBuild,
        &Target::Image("*".into()),
    )
    .map_err(|d| WebError::Forbidden(d.to_string()))?;
    Ok(BuildPage { user })
}

pub async fn images(State(state): State<AppState>, user: WebUser) -> Result<ImagesPage, WebError> {
    authorize(
        &user.principal,
        Action::ImageRead,
        &Target::Image("*".into()),
    )
    .map_err(|d| WebError::Forbidden(d.to_string()))?;
    let can_remove = authorize(
        &user.principal,
        Action::ImageRemove,
        &Target::Image("*".into()),
    )
    .is_ok();
    let can_pull = authorize(
        &user.principal,
        Action::ImagePull,
        &Target::Image("*".into()),
    )
    .is_ok();
    let can_build = authorize(
        &user.principal,
        Action::ImageBuild,
        &Target::Image("*".into()),
    )
    .is_ok();
    let mut images = Vec::new();
    for image in state.db.list_images().await? {
        for (repository, tag) in image.names() {
            let remove_name = if image.tags.is_empty() {
                String::new()
            } else {
                format!("{repository}:{tag}")
            };
            images.push(ImageRow {
                remove_name,
                repository,
                tag,
                id: image.short_id().to_owned(),
                platform: format!("{}/{}", image.os, image.architecture),
                size: crate::host::human_bytes(image.size.max(0) as u64),
                layers: image.layers,
                added: time_text(Some(image.created_at)),
            });
        }
    }
    Ok(ImagesPage {
        user,
        images,
        can_pull,
        can_remove,
        can_build,
    })
}

/// One step of an image's history, newest first.
pub struct HistoryRow {
    pub created: String,
    pub created_by: String,
    pub size: String,
    pub layer: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "image.html")]
pub struct ImagePage {
    pub user: WebUser,
    pub name: String,
    pub id: String,
    pub platform: String,
    pub size: String,
    pub history: Vec<HistoryRow>,
    /// The image configuration as indented JSON.
    pub config: String,
    pub can_tag: bool,
    pub can_run: bool,
}

#[derive(Debug, Deserialize)]
pub struct ImageQuery {
    name: String,
}

/// `/images/detail?name=…`: an image's facts, history (its layers) and configuration, with
/// "tag" and "run" for those who may.
pub async fn image(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<ImageQuery>,
) -> Result<ImagePage, WebError> {
    let target = Target::Image(q.name.clone());
    authorize(&user.principal, Action::ImageRead, &target)
        .map_err(|d| WebError::Forbidden(d.to_string()))?;
    let detail = crate::api::images::image_detail(&state, &q.name)
        .await
        .map_err(WebError::from_api)?;
    let history = crate::api::images::history_of(&detail.config, &detail.layers)
        .into_iter()
        .map(|h| HistoryRow {
            created: h.created.unwrap_or_else(|| "-".into()),
            created_by: h.created_by,
            size: h.size.map_or_else(
                || "0B".into(),
                |s| crate::host::human_bytes(s.max(0) as u64),
            ),
            layer: h.layer.unwrap_or_default(),
        })
        .collect();
    Ok(ImagePage {
        can_tag: authorize(&user.principal, Action::ImagePush, &target).is_ok(),
        can_run: authorize(
            &user.principal,
            Action::ContainerCreate,
            &Target::Container("*".into()),
        )
        .is_ok(),
        id: detail.summary.short_id().to_owned(),
        platform: format!("{}/{}", detail.summary.os, detail.summary.architecture),
        size: crate::host::human_bytes(detail.summary.size.max(0) as u64),
        config: serde_json::to_string_pretty(&detail.config).unwrap_or_default(),
        history,
        name: q.name,
        user,
    })
}
