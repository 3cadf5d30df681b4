//! Turning a request into a [`Principal`]: the peer of the connection, then `Authorization:
//! Bearer`, then the session cookie (with its CSRF token on every state-changing request).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::serve::IncomingStream;
use axum_extra::extract::CookieJar;
use tokio::net::{TcpListener, UnixListener};

use super::policy::{Action, Principal, Target, Via, authorize};
use super::service::{AuthError, Authenticator, audit};
use crate::db::{Db, Outcome};

/// The other end of a connection: a TCP client's address, or a local process on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A router served without connection info: treated as an anonymous network client.
    Unknown,
    /// Credentials from `SO_PEERCRED`; `None` if the kernel would not tell.
    Unix {
        uid: Option<u32>,
    },
}

impl Peer {
    /// The address written to the audit log and used by the login throttle.
    pub fn source(&self) -> String {
        match self {
            Peer::Tcp(addr) => addr.ip().to_string(),
            Peer::Unix { .. } => "socket".to_owned(),
            Peer::Unknown => "unknown".to_owned(),
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer::Tcp(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Peer::Tcp(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Peer::Unix {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

/// The client's address as the audit log and the throttle see it (`socket` for the unix socket).
#[derive(Debug, Clone)]
pub struct ClientSource(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientSource {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientSource(peer_of(parts).source()))
    }
}

/// The connection's peer; without connection info, an unknown network client (never the socket).
fn peer_of(parts: &Parts) -> Peer {
    parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .map_or(Peer::Unknown, |c| c.0)
}

/// Methods that change state: a cookie-authenticated request using one must carry the CSRF token.
pub fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The header that carries the CSRF token of a cookie session (htmx and scripts send it).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The caller of a JSON API request. Extraction fails only for credentials that are present and
/// wrong (a bad token, a missing CSRF token); no credentials give an anonymous principal, which
/// [`Caller::require`] then refuses with 401.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    db: Db,
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Db: FromRef<S>,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let db = Db::from_ref(state);
        let auth = Arc::<Authenticator>::from_ref(state);
        let peer = peer_of(parts);
        let principal = resolve(parts, &db, &auth, peer).await?;
        Ok(Caller { principal, db })
    }
}

async fn resolve(
    parts: &Parts,
    db: &Db,
    auth: &Authenticator,
    peer: Peer,
) -> Result<Principal, AuthError> {
    let source = peer.source();
    if let Peer::Unix { uid } = peer {
        // Reaching the socket at all is the credential (mode 0660, root and the socket group).
        return Ok(Principal::local(uid.unwrap_or(u32::MAX)));
    }
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| AuthError::InvalidToken("not readable"))?;
        let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::UnsupportedScheme(
                scheme.chars().take(20).collect(),
            ));
        }
        return auth.token_principal(db, credential.trim(), &source).await;
    }
    let jar = CookieJar::from_headers(&parts.headers);
    if let Some(cookie) = jar.get(auth.session_cookie_name())
        && let Some(session) = auth.session(db, cookie.value()).await?
    {
        if is_state_changing(&parts.method) {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !super::secret::same_secret(sent, &session.csrf_token) {
                return Err(AuthError::Csrf);
            }
        }
        let role = session.user.role;
        return auth
            .principal_for(db, &session.user, Via::Session, &source, role)
            .await;
    }
    Ok(Principal::anonymous(source))
}

impl Caller {
    /// Allows the request, or refuses it: 401 when anonymous, 403 (audited as denied) otherwise.
    pub async fn require(&self, action: Action, target: &Target) -> Result<(), AuthError> {
        if self.principal.is_anonymous() {
            return Err(AuthError::Required);
        }
        if let Err(denied) = authorize(&self.principal, action, target) {
            let record = audit(
                &self.principal,
                action.name(),
                &target.to_string(),
                Outcome::Denied,
                "",
            );
            self.db.record_audit(&record).await?;
            return Err(denied.into());
        }
        Ok(())
    }
}
