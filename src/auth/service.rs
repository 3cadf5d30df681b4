//! Sign-in, sessions, API tokens and the first-run setup token.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::password::{self, PasswordError};
use super::policy::{Principal, Via};
use super::secret;
use super::throttle::{LoginThrottle, ThrottlePolicy, Throttled};
use crate::db::{
    AccountKind, ApiToken, AuditRecord, Db, DbError, NewToken, Outcome, Session, User, now_secs,
};
use crate::domain::Role;

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    /// A session unused for this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub absolute: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 60 * 60),
        }
    }
}

/// Why a caller was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The same answer for an unknown user and a wrong password.
    #[error("wrong user name or password")]
    InvalidCredentials,
    #[error("{0}")]
    Throttled(#[from] Throttled),
    #[error("robot accounts can only use the registry")]
    RobotSignIn,
    #[error("authentication required")]
    Required,
    #[error("invalid API token: {0}")]
    InvalidToken(&'static str),
    #[error("unsupported Authorization scheme {0:?}: use Bearer with an API token")]
    UnsupportedScheme(String),
    #[error("missing or wrong CSRF token (send the session's token in the X-CSRF-Token header)")]
    Csrf,
    #[error("{0}")]
    Denied(#[from] super::policy::Denied),
    #[error("the setup token is invalid or expired, or setup is already done")]
    SetupToken,
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Password(#[from] PasswordError),
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::InvalidCredentials
            | AuthError::Required
            | AuthError::InvalidToken(_)
            | AuthError::UnsupportedScheme(_) => StatusCode::UNAUTHORIZED,
            AuthError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            AuthError::RobotSignIn
            | AuthError::Csrf
            | AuthError::Denied(_)
            | AuthError::SetupToken => StatusCode::FORBIDDEN,
            AuthError::Database(_) | AuthError::Password(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "authentication failed internally");
            "internal error: see the daemon log".to_owned()
        } else {
            self.to_string()
        };
        let mut response = (
            status,
            axum::Json(serde_json::json!({ "message": message })),
        )
            .into_response();
        match &self {
            AuthError::Throttled(t) => {
                let secs = t.retry_after.as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            _ if status == StatusCode::UNAUTHORIZED => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"wharf\""),
                );
            }
            _ => {}
        }
        response
    }
}

/// A new dashboard session: the cookie value (secret) and its CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub cookie: String,
    pub csrf_token: String,
}

struct SetupToken {
    token: String,
    expires: Instant,
}

/// The authentication service: one per daemon, shared by every surface.
pub struct Authenticator {
    throttle: LoginThrottle,
    sessions: SessionPolicy,
    setup: Mutex<Option<SetupToken>>,
    /// Whether the TCP listener speaks TLS: cookies are then `Secure` and `__Host-` prefixed.
    tls: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// An audit record for `principal` doing `action` on `target`.
pub fn audit(
    principal: &Principal,
    action: &str,
    target: &str,
    outcome: Outcome,
    detail: &str,
) -> AuditRecord {
    AuditRecord {
        actor: principal.name.clone(),
        via: principal.via.name().to_owned(),
        source: principal.source.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        outcome,
        detail: detail.to_owned(),
    }
}

impl Authenticator {
    pub fn new(throttle: ThrottlePolicy, sessions: SessionPolicy, tls: bool) -> Authenticator {
        Authenticator {
            throttle: LoginThrottle::new(throttle),
            sessions,
            setup: Mutex::new(None),
            tls,
        }
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The session cookie's name: `__Host-` prefixed under TLS (which requires `Secure`).
    pub fn session_cookie_name(&self) -> &'static str {
        if self.tls {
            "__Host-wharf_session"
        } else {
            "wharf_session"
        }
    }

    /// Checks a user name and password, with throttling and the same answer for every failure.
    /// Failures are audited here; the caller audits the success with what it creates.
    pub async fn check_password(
        &self,
        db: &Db,
        name: &str,
        password: &str,
        source: &str,
        via: &str,
    ) -> Result<User, AuthError> {
        let key = name.to_ascii_lowercase();
        let failed = |detail: &str| AuditRecord {
            actor: name.chars().take(64).collect(),
            via: via.to_owned(),
            source: source.to_owned(),
            action: "auth.login".to_owned(),
            target: format!("user:{}", name.chars().take(64).collect::<String>()),
            outcome: Outcome::Failed,
            detail: detail.to_owned(),
        };
        if let Err(throttled) = self.throttle.check(&key, source) {
            db.record_audit(&failed("throttled")).await?;
            return Err(throttled.into());
        }
        let credentials = db.credentials(name).await?;
        let Some(credentials) = credentials else {
            password::verify_unknown_user(password.to_owned()).await?;
            self.throttle.failure(&key, source);
            db.record_audit(&failed("wrong user name or password"))
                .await?;
            return Err(AuthError::InvalidCredentials);
        };
        let verification = password::verify(password.to_owned(), credentials.password_hash).await?;
        if !verification.matches {
            self.throttle.failure(&key, source);
            db.record_audit(&failed("wrong user name or password"))
                .await?;
            return Err(AuthError::InvalidCredentials);
        }
        self.throttle.success(&key);
        if verification.needs_rehash {
            let fresh = password::hash(password.to_owned()).await?;
            db.rehash_password(credentials.user.id, &fresh).await?;
        }
        Ok(credentials.user)
    }

    /// The principal of a signed-in user (with its grants).
    pub async fn principal_for(
        &self,
        db: &Db,
        user: &User,
        via: Via,
        source: &str,
        role: Option<Role>,
    ) -> Result<Principal, AuthError> {
        Ok(Principal {
            name: user.name.clone(),
            via,
            source: source.to_owned(),
            user_id: Some(user.id),
            kind: Some(user.kind),
            role,
            grants: db.grants_of(user.id).await?,
        })
    }

    /// Starts a dashboard session for `user` (a fresh id at every sign-in).
    pub async fn start_session(
        &self,
        db: &Db,
        user: &User,
        source: &str,
    ) -> Result<NewSession, AuthError> {
        if user.kind == AccountKind::Robot {
            return Err(AuthError::RobotSignIn);
        }
        let cookie = secret::random_string(32);
        let csrf_token = secret::random_string(32);
        let record = AuditRecord {
            actor: user.name.clone(),
            via: "session".to_owned(),
            source: source.to_owned(),
            action: "auth.login".to_owned(),
            target: format!("user:{}", user.name),
            outcome: Outcome::Ok,
            detail: String::new(),
        };
        db.create_session(
            &secret::digest(&cookie),
            user.id,
            &csrf_token,
            source,
            &record,
        )
        .await?;
        Ok(NewSession { cookie, csrf_token })
    }

    /// The live session behind a cookie value; an expired one is removed and not returned.
    pub async fn session(&self, db: &Db, cookie: &str) -> Result<Option<Session>, AuthError> {
        let digest = secret::digest(cookie);
        let Some(session) = db.session(&digest).await? else {
            return Ok(None);
        };
        let now = now_secs();
        let idle = now - session.last_seen_at > self.sessions.idle.as_secs() as i64;
        let old = now - session.created_at > self.sessions.absolute.as_secs() as i64;
        if idle || old {
            db.delete_session(&digest, None).await?;
            return Ok(None);
        }
        if now - session.last_seen_at >= 15 {
            db.touch_session(&digest).await?;
        }
        Ok(Some(session))
    }

    /// Ends the session behind a cookie value (logout).
    pub async fn end_session(
        &self,
        db: &Db,
        cookie: &str,
        principal: &Principal,
    ) -> Result<(), AuthError> {
        let record = audit(
            principal,
            "auth.logout",
            &format!("user:{}", principal.name),
            Outcome::Ok,
            "",
        );
        db.delete_session(&secret::digest(cookie), Some(&record))
            .await?;
        Ok(())
    }

    /// The principal behind a raw API token, or why it is not valid.
    pub async fn token_principal(
        &self,
        db: &Db,
        raw: &str,
        source: &str,
    ) -> Result<Principal, AuthError> {
        if !raw.starts_with(secret::API_TOKEN_PREFIX) {
            return Err(AuthError::InvalidToken("not a wharf API token"));
        }
        let Some((token, owner)) = db.token_by_digest(&secret::digest(raw)).await? else {
            return Err(AuthError::InvalidToken("unknown token"));
        };
        if token.revoked_at.is_some() {
            return Err(AuthError::InvalidToken("the token was revoked"));
        }
        if token.expires_at.is_some_and(|at| at <= now_secs()) {
            return Err(AuthError::InvalidToken("the token has expired"));
        }
        db.touch_token(token.id).await?;
        // A token never carries more than its owner may do today.
        let role = owner.role.map(|r| r.min(token.role));
        self.principal_for(db, &owner, Via::Token { id: token.id }, source, role)
            .await
    }

    /// Makes a new API token for `owner` with at most the owner's role; returns the token, shown once.
    pub async fn issue_token(
        &self,
        db: &Db,
        owner: &User,
        name: &str,
        role: Role,
        expires_at: Option<i64>,
        record: &AuditRecord,
    ) -> Result<(String, ApiToken), AuthError> {
        let raw = secret::new_api_token();
        let prefix: String = raw.chars().take(secret::DISPLAY_PREFIX_LEN).collect();
        let token = db
            .create_token(
                &NewToken {
                    user_id: owner.id,
                    name,
                    prefix: &prefix,
                    digest: &secret::digest(&raw),
                    role,
                    expires_at,
                },
                record,
            )
            .await?;
        Ok((raw, token))
    }

    /// Makes a one-time setup token valid for `ttl`, replacing any earlier one.
    pub fn new_setup_token(&self, ttl: Duration) -> String {
        let token = secret::random_string(24);
        *self.setup.lock().unwrap_or_else(|p| p.into_inner()) = Some(SetupToken {
            token: token.clone(),
            expires: Instant::now() + ttl,
        });
        token
    }

    /// Whether `presented` is the live setup token; it is consumed when it is.
    pub fn take_setup_token(&self, presented: &str) -> bool {
        let mut slot = self.setup.lock().unwrap_or_else(|p| p.into_inner());
        let valid = slot.as_ref().is_some_and(|s| {
            s.expires > Instant::now() && secret::same_secret(&s.token, presented)
        });
        if valid {
            *slot = None;
        }
        valid
    }

    /// Whether a setup token is waiting to be used.
    pub fn setup_pending(&self) -> bool {
        self.setup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|s| s.expires > Instant::now())
    }
}
