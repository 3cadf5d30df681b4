//! The registry's HTTP handlers. Repository names contain slashes, so one handler takes every
//! `/v2/…` request and splits the path from the right (`…/manifests/<ref>`, `…/blobs/<digest>`,
//! `…/blobs/uploads/<id>`, `…/tags/list`, `…/referrers/<digest>`).
//!
//! Authentication: `Authorization: Basic` (a user or robot and its password, throttled like
//! every login), `Authorization: Bearer` (a token from `/v2/token`, or a wharf API token), or
//! none (anonymous, which may only pull repositories that allow it). A request without the
//! right gets 401 with a `Bearer` challenge naming the scope it needs, which is what sends
//! docker and skopeo to the token endpoint.

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine as _;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::RegistryState;
use super::errors::{Code, Entry, RegistryError};
use super::manifest::{self, MAX_MANIFEST};
use super::names::{valid_repository, valid_tag};
use super::token::{Access, Claims, parse_scope};
use crate::auth::extract::Peer;
use crate::auth::{Action, Principal, Target, Via, authorize};
use crate::db::{AuditRecord, NewRepoManifest, Outcome, RefKind};
use crate::domain::Digest;
use crate::images::store::BlobStore;

type Result<T> = std::result::Result<T, RegistryError>;

/// The registry's router (every path under `/v2/`).
pub fn router(state: RegistryState) -> Router {
    Router::new()
        .route("/v2", axum::routing::any(dispatch))
        .route("/v2/", axum::routing::any(dispatch))
        .route("/v2/{*path}", axum::routing::any(dispatch))
        .with_state(state)
}

/// Who is calling.
enum Credential {
    Anonymous,
    Principal(Box<Principal>),
    Token(Claims),
}

/// What a request is about, from its path.
enum Route {
    Base,
    Token,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    Uploads(String, Option<String>),
    Referrers(String, String),
}

fn route_of(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    match rest {
        "" => return Some(Route::Base),
        "token" => return Some(Route::Token),
        "_catalog" => return Some(Route::Catalog),
        _ => {}
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name.to_owned()));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::Uploads(name.to_owned(), None));
    }
    let split = |marker: &str| {
        rest.rfind(marker)
            .map(|i| (&rest[..i], &rest[i + marker.len()..]))
            .filter(|(name, tail)| !name.is_empty() && !tail.is_empty() && !tail.contains('/'))
            .map(|(n, t)| (n.to_owned(), t.to_owned()))
    };
    if let Some((name, id)) = split("/blobs/uploads/") {
        return Some(Route::Uploads(name, Some(id)));
    }
    if let Some((name, digest)) = split("/blobs/") {
        return Some(Route::Blob(name, digest));
    }
    if let Some((name, reference)) = split("/manifests/") {
        return Some(Route::Manifest(name, reference));
    }
    if let Some((name, digest)) = split("/referrers/") {
        return Some(Route::Referrers(name, digest));
    }
    None
}

async fn dispatch(State(state): State<RegistryState>, request: Request) -> Response {
    let source = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map_or(Peer::Unknown, |c| c.0)
        .source();
    let mut response = match handle(&state, &source, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

async fn handle(state: &RegistryState, source: &str, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let Some(route) = route_of(parts.uri.path()) else {
        return Err(RegistryError::new(
            Code::NameUnknown,
            format!("no registry endpoint at {}", parts.uri.path()),
        ));
    };
    let ctx = Ctx {
        state,
        source,
        headers: &parts.headers,
        host: host_of(&parts.headers),
    };
    if let Route::Token = route {
        return token_endpoint(&ctx, &query).await;
    }
    let cred = ctx.authenticate().await?;
    let method = parts.method.clone();
    match route {
        Route::Token => unreachable!("answered above"),
        Route::Base => {
            if matches!(cred, Credential::Anonymous) {
                return Err(ctx.challenge(None));
            }
            Ok(Json(json!({})).into_response())
        }
        Route::Catalog => catalog(&ctx, &cred, &query).await,
        Route::Tags(name) => {
            ctx.check_name(&name)?;
            ctx.require(&cred, &name, "pull").await?;
            tags(&ctx, &name, &query).await
        }
        Route::Manifest(name, reference) => {
            ctx.check_name(&name)?;
            match method {
                Method::GET | Method::HEAD => {
                    ctx.require(&cred, &name, "pull").await?;
                    get_manifest(&ctx, &cred, &name, &reference, method == Method::HEAD).await
                }
                Method::PUT => {
                    ctx.require(&cred, &name, "push").await?;
                    put_manifest(&ctx, &cred, &name, &reference, body).await
                }
                Method::DELETE => {
                    ctx.require(&cred, &name, "delete").await?;
                    delete_manifest(&ctx, &cred, &name, &reference).await
                }
                _ => Err(unsupported(&method)),
            }
        }
        Route::Blob(name, digest) => {
            ctx.check_name(&name)?;
            let digest = parse_digest(&digest)?;
            match method {
                Method::GET | Method::HEAD => {
                    ctx.require(&cred, &name, "pull").await?;
                    get_blob(&ctx, &name, &digest, method == Method::HEAD).await
                }
                Method::DELETE => {
                    ctx.require(&cred, &name, "delete").await?;
                    if !state.app.db.unlink_blob(&name, digest.as_str()).await? {
                        return Err(blob_unknown(&name, &digest));
                    }
                    ctx.audit(&cred, "registry.delete", &name, &format!("blob={digest}"))
                        .await;
                    Ok(StatusCode::ACCEPTED.into_response())
                }
                _ => Err(unsupported(&method)),
            }
        }
        Route::Uploads(name, id) => {
            ctx.check_name(&name)?;
            ctx.require(&cred, &name, "push").await?;
            match (method, id) {
                (Method::POST, None) => start_upload(&ctx, &cred, &name, &query, body).await,
                (Method::PATCH, Some(id)) => patch_upload(&ctx, &name, &id, body).await,
                (Method::PUT, Some(id)) => put_upload(&ctx, &name, &id, &query, body).await,
                (Method::GET, Some(id)) => upload_status(&ctx, &name, &id).await,
                (Method::DELETE, Some(id)) => {
                    let session = ctx.session(&name, &id).await?;
                    let mut session = session.lock().await;
                    still_open(&session)?;
                    state.uploads.cancel(&mut session).await;
                    Ok(StatusCode::NO_CONTENT.into_response())
                }
                (method, _) => Err(unsupported(&method)),
            }
        }
        Route::Referrers(name, digest) => {
            ctx.check_name(&name)?;
            let digest = parse_digest(&digest)?;
            ctx.require(&cred, &name, "pull").await?;
            referrers(&ctx, &name, &digest, &query).await
        }
    }
}

fn unsupported(method: &Method) -> RegistryError {
    RegistryError::new(Code::Unsupported, format!("{method} is not supported here"))
}

fn parse_digest(text: &str) -> Result<Digest> {
    Digest::parse(text).map_err(|e| RegistryError::new(Code::DigestInvalid, e.to_string()))
}

fn blob_unknown(name: &str, digest: &Digest) -> RegistryError {
    RegistryError::new(
        Code::BlobUnknown,
        format!("blob {digest} is not in repository {name}"),
    )
    .with_detail(json!({"digest": digest.as_str()}))
}

/// The Host header, if it is a plain `host[:port]` (used for the token realm and Locations).
fn host_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .map(str::to_owned)
}

/// Query parameters as (name, decoded value) pairs.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

struct Ctx<'a> {
    state: &'a RegistryState,
    source: &'a str,
    headers: &'a HeaderMap,
    host: Option<String>,
}

impl Ctx<'_> {
    fn check_name(&self, name: &str) -> Result<()> {
        if valid_repository(name) {
            Ok(())
        } else {
            Err(RegistryError::new(
                Code::NameInvalid,
                format!("repository name {name:?} is not valid: lower-case components of a-z, 0-9 and single separators (. _ __ -), joined by /"),
            )
            .with_detail(json!({"name": name})))
        }
    }

    fn realm(&self) -> String {
        let scheme = if self.state.tls { "https" } else { "http" };
        let host = self.host.clone().unwrap_or_else(|| {
            self.state
                .app
                .tcp_addr
                .map_or("localhost".into(), |a| a.to_string())
        });
        format!("{scheme}://{host}/v2/token")
    }

    /// A 401 with the challenge that sends clients to the token endpoint.
    fn challenge(&self, scope: Option<String>) -> RegistryError {
        let mut challenge = format!("Bearer realm=\"{}\",service=\"wharf\"", self.realm());
        if let Some(scope) = &scope {
            challenge.push_str(&format!(",scope=\"{scope}\""));
        }
        RegistryError::new(Code::Unauthorized, "authentication required")
            .with_detail(json!({"scope": scope}))
            .with_challenge(challenge)
    }

    async fn authenticate(&self) -> Result<Credential> {
        let Some(value) = self.headers.get(header::AUTHORIZATION) else {
            return Ok(Credential::Anonymous);
        };
        let value = value.to_str().unwrap_or("");
        let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
        let credential = credential.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            return self
                .basic(credential)
                .await
                .map(|p| Credential::Principal(Box::new(p)));
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            if let Some(claims) = self.state.tokens.verify(credential) {
                return Ok(Credential::Token(claims));
            }
            let app = &self.state.app;
            return match app
                .auth
                .token_principal(&app.db, credential, self.source)
                .await
            {
                Ok(p) => Ok(Credential::Principal(Box::new(p))),
                Err(_) => Err(RegistryError::new(
                    Code::Unauthorized,
                    "the bearer token is invalid or has expired: log in again",
                )
                .with_challenge(format!(
                    "Bearer realm=\"{}\",service=\"wharf\",error=\"invalid_token\"",
                    self.realm()
                ))),
            };
        }
        Err(self.challenge(None))
    }

    /// Checks Basic credentials (throttled; failures audited by the authenticator).
    async fn basic(&self, credential: &str) -> Result<Principal> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credential)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                RegistryError::new(
                    Code::Unauthorized,
                    "Basic credentials are not base64 of user:password",
                )
            })?;
        let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        let app = &self.state.app;
        match app
            .auth
            .check_password(&app.db, user, password, self.source, "basic")
            .await
        {
            Ok(user) => app
                .auth
                .principal_for(&app.db, &user, Via::Basic, self.source, user.role)
                .await
                .map_err(|e| RegistryError::internal("loading the account's rights", e)),
            Err(crate::auth::AuthError::Throttled(t)) => {
                Err(RegistryError::new(Code::TooManyRequests, t.to_string()))
            }
            Err(crate::auth::AuthError::InvalidCredentials) => Err(RegistryError::new(
                Code::Unauthorized,
                "wrong user name or password",
            )
            .with_challenge(format!(
                "Basic realm=\"wharf registry\", Bearer realm=\"{}\",service=\"wharf\"",
                self.realm()
            ))),
            Err(e) => Err(RegistryError::internal("checking the password", e)),
        }
    }

    /// Allows `action` (pull, push, delete) on repository `name`, or refuses it.
    async fn require(&self, cred: &Credential, name: &str, action: &str) -> Result<()> {
        let needed = match action {
            "push" => "pull,push",
            other => other,
        };
        let scope = format!("repository:{name}:{needed}");
        match cred {
            Credential::Anonymous => {
                if action == "pull" && self.state.app.db.anonymous_pull(name).await? {
                    return Ok(());
                }
                Err(self.challenge(Some(scope)))
            }
            Credential::Token(claims) => {
                if claims.allows(name, action)
                    || (action == "pull" && self.state.app.db.anonymous_pull(name).await?)
                {
                    return Ok(());
                }
                Err(RegistryError::new(
                    Code::Denied,
                    format!("{} may not {action} repository {name}", claims.sub),
                )
                .with_challenge(format!(
                    "Bearer realm=\"{}\",service=\"wharf\",scope=\"{scope}\",error=\"insufficient_scope\"",
                    self.realm()
                ))
                .unauthorized_if_token())
            }
            Credential::Principal(p) => {
                // What anyone may pull, a logged-in caller may too.
                if principal_may(p, name, action)
                    || (action == "pull" && self.state.app.db.anonymous_pull(name).await?)
                {
                    return Ok(());
                }
                let record = crate::auth::service::audit(
                    p,
                    &format!("registry.{action}"),
                    &format!("repository:{name}"),
                    Outcome::Denied,
                    "",
                );
                self.state.app.db.record_audit(&record).await?;
                Err(RegistryError::new(
                    Code::Denied,
                    format!("{} may not {action} repository {name}", p.name),
                ))
            }
        }
    }

    async fn session(
        &self,
        name: &str,
        id: &str,
    ) -> Result<std::sync::Arc<tokio::sync::Mutex<super::uploads::Session>>> {
        self.state.uploads.get(name, id).await.map_err(|e| match e {
            super::uploads::UploadError::Unknown(_) => {
                RegistryError::new(Code::BlobUploadUnknown, e.to_string())
            }
            e => RegistryError::internal(&format!("upload {id} of {name}"), e),
        })
    }

    fn blobs(&self) -> BlobStore {
        BlobStore::new(self.state.app.config.layout().blobs())
    }

    /// Records a push, pull or delete in the audit log (a failure to is logged, not fatal).
    async fn audit(&self, cred: &Credential, action: &str, name: &str, detail: &str) {
        let (via, actor) = match cred {
            Credential::Anonymous => ("anonymous", "-".to_owned()),
            Credential::Principal(p) => (p.via.name(), p.name.clone()),
            Credential::Token(c) => ("registry-token", c.sub.clone()),
        };
        let record = AuditRecord {
            actor,
            via: via.to_owned(),
            source: self.source.to_owned(),
            action: action.to_owned(),
            target: format!("repository:{name}"),
            outcome: Outcome::Ok,
            detail: detail.to_owned(),
        };
        if let Err(e) = self.state.app.db.record_audit(&record).await {
            tracing::warn!(error = %e, "could not audit a registry {action}");
        }
    }
}

impl RegistryError {
    /// A token without the scope gets 401 (so clients fetch a new one), not 403.
    fn unauthorized_if_token(mut self) -> RegistryError {
        for e in &mut self.entries {
            if e.code == Code::Denied {
                e.code = Code::Unauthorized;
            }
        }
        self
    }
}

fn principal_may(p: &Principal, name: &str, action: &str) -> bool {
    let action = match action {
        "pull" => Action::RepositoryPull,
        "push" => Action::RepositoryPush,
        "delete" => Action::RepositoryDelete,
        _ => return false,
    };
    let target = Target::Repository(name.to_owned());
    // Pushing means reading back what one pushed: docker asks for both.
    authorize(p, action, &target).is_ok()
        && (action != Action::RepositoryPush
            || authorize(p, Action::RepositoryPull, &target).is_ok())
}

/// `GET /v2/token?service=…&scope=…`: a token for the granted part of each requested scope.
async fn token_endpoint(ctx: &Ctx<'_>, query: &str) -> Result<Response> {
    let pairs = query_pairs(query);
    let principal = match ctx.headers.get(header::AUTHORIZATION) {
        Some(_) => match ctx.authenticate().await? {
            Credential::Principal(p) => Some(*p),
            _ => {
                return Err(RegistryError::new(
                    Code::Unauthorized,
                    "the token endpoint takes a user name and password (Basic) or a wharf API token",
                ));
            }
        },
        None => None,
    };
    let mut access = Vec::new();
    for (_, scope) in pairs.iter().filter(|(k, _)| k == "scope") {
        for one in scope.split(' ') {
            let Some(requested) = parse_scope(one) else {
                continue;
            };
            if requested.kind != "repository" || !valid_repository(&requested.name) {
                continue;
            }
            let mut granted = Vec::new();
            for action in &requested.actions {
                let actions: Vec<&str> = if action == "*" {
                    vec!["pull", "push", "delete"]
                } else {
                    vec![action.as_str()]
                };
                for a in &actions {
                    let open =
                        *a == "pull" && ctx.state.app.db.anonymous_pull(&requested.name).await?;
                    let ok = open
                        || principal
                            .as_ref()
                            .is_some_and(|p| principal_may(p, &requested.name, a));
                    if ok && !granted.iter().any(|g| g == a) {
                        granted.push((*a).to_owned());
                    }
                }
            }
            access.push(Access {
                kind: "repository".into(),
                name: requested.name,
                actions: granted,
            });
        }
    }
    let subject = principal.as_ref().map_or("-", |p| p.name.as_str());
    let (token, ttl) = ctx.state.tokens.issue(subject, access);
    let issued = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    Ok(Json(json!({
        "token": token,
        "access_token": token,
        "expires_in": ttl,
        "issued_at": issued,
    }))
    .into_response())
}

/// The `n`/`last` pagination of tags and the catalog, with the `Link` to the next page.
fn paginate(
    path: &str,
    pairs: &[(String, String)],
    items: &mut Vec<String>,
) -> Result<Option<String>> {
    let n = match param(pairs, "n") {
        Some(n) => Some(n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            RegistryError::new(
                Code::PaginationNumberInvalid,
                format!("n={n} is not a number of results"),
            )
        })?),
        None => None,
    };
    let Some(n) = n else { return Ok(None) };
    if items.len() as i64 > n {
        items.truncate(n as usize);
        if let Some(last) = items.last() {
            return Ok(Some(format!("<{path}?n={n}&last={last}>; rel=\"next\"")));
        }
    }
    Ok(None)
}

fn with_link(mut response: Response, link: Option<String>) -> Response {
    if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

async fn tags(ctx: &Ctx<'_>, name: &str, query: &str) -> Result<Response> {
    let db = &ctx.state.app.db;
    if !db.repository_exists(name).await? {
        return Err(RegistryError::new(
            Code::NameUnknown,
            format!("repository {name} is not known"),
        )
        .with_detail(json!({"name": name})));
    }
    let pairs = query_pairs(query);
    let n = param(&pairs, "n").and_then(|n| n.parse::<i64>().ok());
    let mut tags = db
        .list_tags(name, n.map(|n| n.saturating_add(1)), param(&pairs, "last"))
        .await?;
    let link = paginate(&format!("/v2/{name}/tags/list"), &pairs, &mut tags)?;
    Ok(with_link(
        Json(json!({"name": name, "tags": tags})).into_response(),
        link,
    ))
}

async fn catalog(ctx: &Ctx<'_>, cred: &Credential, query: &str) -> Result<Response> {
    let pairs = query_pairs(query);
    let n = param(&pairs, "n").and_then(|n| n.parse::<i64>().ok());
    let db = &ctx.state.app.db;
    // Only the repositories the caller may pull, a page at a time.
    let mut visible = Vec::new();
    let mut last = param(&pairs, "last").map(str::to_owned);
    loop {
        let page = db.catalog(Some(200), last.as_deref()).await?;
        let done = page.len() < 200;
        for name in page {
            let ok = match cred {
                Credential::Anonymous => db.anonymous_pull(&name).await?,
                Credential::Token(c) => c.allows(&name, "pull") || db.anonymous_pull(&name).await?,
                Credential::Principal(p) => {
                    principal_may(p, &name, "pull") || db.anonymous_pull(&name).await?
                }
            };
            last = Some(name.clone());
            if ok {
                visible.push(name);
            }
        }
        if done || n.is_some_and(|n| visible.len() as i64 > n) {
            break;
        }
    }
    if matches!(cred, Credential::Anonymous) && visible.is_empty() {
        return Err(ctx.challenge(Some("registry:catalog:*".into())));
    }
    let link = paginate("/v2/_catalog", &pairs, &mut visible)?;
    Ok(with_link(
        Json(json!({"repositories": visible})).into_response(),
        link,
    ))
}

/// A reader's view of a blob: HEAD, the whole of it, or one `Range`.
async fn get_blob(ctx: &Ctx<'_>, name: &str, digest: &Digest, head: bool) -> Result<Response> {
    let db = &ctx.state.app.db;
    let blobs = ctx.blobs();
    if !db.blob_linked(name, digest.as_str()).await? || !blobs.exists(digest) {
        return Err(blob_unknown(name, digest));
    }
    if head {
        // A pusher asking whether the blob is here will not upload it: keep its link fresh.
        db.touch_blob_link(name, digest.as_str()).await?;
    }
    let path = blobs.path(digest);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| blob_unknown(name, digest))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| RegistryError::internal("reading a blob's size", e))?
        .len();
    let range = match ctx.headers.get(header::RANGE).and_then(|r| r.to_str().ok()) {
        Some(r) => Some(parse_range(r, size).ok_or_else(|| {
            RegistryError::new(
                Code::RangeInvalid,
                format!("range {r:?} does not fit a blob of {size} bytes"),
            )
        })?),
        None => None,
    };
    let (status, start, len) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", digest.as_str())
        .header(header::ETAG, format!("\"{digest}\""));
    if range.is_some() {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    let body = if head {
        Body::empty()
    } else {
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| RegistryError::internal("seeking in a blob", e))?;
        }
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file.take(len),
            1 << 20,
        ))
    };
    builder
        .body(body)
        .map_err(|e| RegistryError::internal("building a response", e))
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` within `size`, as an inclusive (start, end).
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// 202 with where the upload goes on and how much it holds.
fn upload_accepted(name: &str, id: &str, size: u64, status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .header(header::LOCATION, upload_location(name, id))
        .header(header::RANGE, format!("0-{}", size.saturating_sub(1)))
        .header(header::CONTENT_LENGTH, 0)
        .header("docker-upload-uuid", id)
        .body(Body::empty())
        .expect("a valid response")
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/blobs/{digest}"))
        .header(header::CONTENT_LENGTH, 0)
        .header("docker-content-digest", digest.as_str())
        .body(Body::empty())
        .expect("a valid response")
}

/// Appends a request body to a session; returns the bytes added. What arrived before a body
/// broke off stays in the session, so the client can resume from there.
async fn append_body(session: &mut super::uploads::Session, body: Body) -> Result<u64> {
    let mut body = body;
    let mut writer = session
        .writer()
        .map_err(|e| RegistryError::internal("writing an upload", e))?;
    let mut broke = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data()
                    && !writer.send(&data).await
                {
                    break;
                }
            }
            Err(e) => {
                broke = Some(e);
                break;
            }
        }
    }
    let added = writer
        .finish(session)
        .await
        .map_err(|e| RegistryError::internal("writing an upload", e))?;
    match broke {
        Some(e) => Err(RegistryError::new(
            Code::BlobUploadInvalid,
            format!("the upload's body broke off after {added} bytes: {e}"),
        )),
        None => Ok(added),
    }
}

async fn start_upload(
    ctx: &Ctx<'_>,
    cred: &Credential,
    name: &str,
    query: &str,
    body: Body,
) -> Result<Response> {
    let pairs = query_pairs(query);
    let db = &ctx.state.app.db;
    // Cross-repository mount: link the blob if the caller may pull it from there.
    if let (Some(mount), from) = (param(&pairs, "mount"), param(&pairs, "from")) {
        let digest = parse_digest(mount)?;
        let mountable = match from {
            Some(from) if valid_repository(from) => {
                let may = ctx.require(cred, from, "pull").await.is_ok();
                may && db.blob_linked(from, digest.as_str()).await?
            }
            _ => false,
        } && ctx.blobs().exists(&digest);
        if mountable {
            db.link_blob(name, digest.as_str()).await?;
            return Ok(blob_created(name, &digest));
        }
    }
    let session = ctx
        .state
        .uploads
        .start(name)
        .await
        .map_err(|e| RegistryError::internal("starting an upload", e))?;
    let mut session = session.lock().await;
    // Monolithic: POST ?digest= with the whole blob.
    if let Some(digest) = param(&pairs, "digest") {
        let digest = match parse_digest(digest) {
            Ok(d) => d,
            Err(e) => {
                ctx.state.uploads.cancel(&mut session).await;
                return Err(e);
            }
        };
        if let Err(e) = append_body(&mut session, body).await {
            ctx.state.uploads.cancel(&mut session).await;
            return Err(e);
        }
        return commit(ctx, &mut session, name, &digest).await;
    }
    Ok(upload_accepted(
        name,
        &session.id,
        session.size,
        StatusCode::ACCEPTED,
    ))
}

/// Checks a `Content-Range: start-end` against what the session holds.
fn check_content_range(headers: &HeaderMap, size: u64) -> Result<()> {
    let Some(range) = headers.get(header::CONTENT_RANGE) else {
        return Ok(());
    };
    let text = range.to_str().unwrap_or("");
    let spec = text
        .trim()
        .trim_start_matches("bytes ")
        .trim_start_matches("bytes=");
    let start = spec
        .split_once('-')
        .and_then(|(a, _)| a.trim().parse::<u64>().ok());
    match start {
        Some(start) if start == size => Ok(()),
        _ => Err(RegistryError::new(
            Code::RangeInvalid,
            format!(
                "Content-Range {text:?} does not continue the upload, which holds {size} bytes"
            ),
        )),
    }
}

/// A session committed or cancelled while this request waited for it is gone.
fn still_open(session: &super::uploads::Session) -> Result<()> {
    if session.closed() {
        return Err(RegistryError::new(
            Code::BlobUploadUnknown,
            format!("upload {} is finished or cancelled", session.id),
        ));
    }
    Ok(())
}

async fn patch_upload(ctx: &Ctx<'_>, name: &str, id: &str, body: Body) -> Result<Response> {
    let session = ctx.session(name, id).await?;
    let mut session = session.lock().await;
    still_open(&session)?;
    check_content_range(ctx.headers, session.size)?;
    append_body(&mut session, body).await?;
    Ok(upload_accepted(
        name,
        &session.id,
        session.size,
        StatusCode::ACCEPTED,
    ))
}

async fn put_upload(
    ctx: &Ctx<'_>,
    name: &str,
    id: &str,
    query: &str,
    body: Body,
) -> Result<Response> {
    let pairs = query_pairs(query);
    let session = ctx.session(name, id).await?;
    let mut session = session.lock().await;
    still_open(&session)?;
    let Some(digest) = param(&pairs, "digest") else {
        return Err(RegistryError::new(
            Code::DigestInvalid,
            "finishing an upload needs ?digest=",
        ));
    };
    let digest = parse_digest(digest)?;
    check_content_range(ctx.headers, session.size)?;
    append_body(&mut session, body).await?;
    commit(ctx, &mut session, name, &digest).await
}

async fn commit(
    ctx: &Ctx<'_>,
    session: &mut super::uploads::Session,
    name: &str,
    digest: &Digest,
) -> Result<Response> {
    match ctx.state.uploads.commit(session, digest, &ctx.blobs()).await {
        Ok(_) => {
            ctx.state.app.db.link_blob(name, digest.as_str()).await?;
            Ok(blob_created(name, digest))
        }
        Err(super::uploads::UploadError::DigestMismatch { expected, actual }) => Err(
            RegistryError::new(
                Code::DigestInvalid,
                format!("the uploaded bytes have digest {actual}, not {expected}; the upload was removed"),
            )
            .with_detail(json!({"expected": expected.as_str(), "actual": actual.as_str()})),
        ),
        Err(e) => Err(RegistryError::internal("finishing an upload", e)),
    }
}

async fn upload_status(ctx: &Ctx<'_>, name: &str, id: &str) -> Result<Response> {
    let session = ctx.session(name, id).await?;
    let session = session.lock().await;
    still_open(&session)?;
    Ok(upload_accepted(
        name,
        &session.id,
        session.size,
        StatusCode::NO_CONTENT,
    ))
}

async fn get_manifest(
    ctx: &Ctx<'_>,
    cred: &Credential,
    name: &str,
    reference: &str,
    head: bool,
) -> Result<Response> {
    let unknown = || {
        RegistryError::new(
            Code::ManifestUnknown,
            format!("manifest {name}:{reference} is not known"),
        )
        .with_detail(json!({"name": name, "reference": reference}))
    };
    if reference.contains(':') {
        parse_digest(reference)?;
    } else if !valid_tag(reference) {
        return Err(RegistryError::new(
            Code::ManifestInvalid,
            format!("{reference:?} is neither a tag nor a digest"),
        ));
    }
    let found = ctx
        .state
        .app
        .db
        .resolve_manifest(name, reference)
        .await?
        .ok_or_else(unknown)?;
    let digest =
        Digest::parse(&found.digest).map_err(|e| RegistryError::internal("a stored digest", e))?;
    let path = ctx.blobs().path(&digest);
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        RegistryError::internal(
            &format!(
                "manifest {digest} is recorded but its blob {}",
                path.display()
            ),
            e,
        )
    })?;
    if !head {
        ctx.audit(
            cred,
            "registry.pull",
            name,
            &format!("reference={reference} digest={digest}"),
        )
        .await;
        if let Err(e) = ctx.state.app.db.count_pull(name, digest.as_str()).await {
            tracing::warn!(error = %e, "could not count a pull");
        }
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &found.media_type)
        .header(header::CONTENT_LENGTH, bytes.len())
        .header("docker-content-digest", digest.as_str())
        .header(header::ETAG, format!("\"{digest}\""))
        .body(if head {
            Body::empty()
        } else {
            Body::from(bytes)
        })
        .map_err(|e| RegistryError::internal("building a response", e))
}

/// Reads a manifest body, refusing (413) as soon as it passes the limit.
async fn read_limited(body: Body) -> Result<Vec<u8>> {
    let mut body = body;
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            RegistryError::new(
                Code::ManifestInvalid,
                format!("the manifest broke off: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_MANIFEST {
                return Err(RegistryError::new(
                    Code::TooLarge,
                    format!("the manifest is larger than {} MiB", MAX_MANIFEST >> 20),
                ));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

async fn put_manifest(
    ctx: &Ctx<'_>,
    cred: &Credential,
    name: &str,
    reference: &str,
    body: Body,
) -> Result<Response> {
    let tag = if reference.contains(':') {
        parse_digest(reference)?;
        None
    } else if valid_tag(reference) {
        Some(reference.to_owned())
    } else {
        return Err(RegistryError::new(
            Code::ManifestInvalid,
            format!("tag {reference:?} is not valid: [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}"),
        ));
    };
    let bytes = read_limited(body).await?;
    let content_type = ctx
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok());
    let parsed = manifest::parse(&bytes, content_type)?;
    let blobs = ctx.blobs();
    let digest = if reference.contains(':') {
        let wanted = parse_digest(reference)?;
        let mut h = crate::images::store::Hasher::new(wanted.algorithm());
        h.update(&bytes);
        let actual = h.finish();
        if actual != wanted {
            return Err(RegistryError::new(
                Code::DigestInvalid,
                format!("the manifest's digest is {actual}, not {wanted}"),
            ));
        }
        actual
    } else {
        crate::images::store::sha256(&bytes)
    };
    // Every blob must be in this repository, every index entry a manifest it holds; garbage
    // collection waits until the manifest that needs them is recorded.
    let _no_gc = ctx.state.app.registry_gc.read().await;
    let db = &ctx.state.app.db;
    let mut missing = Vec::new();
    for (target, kind) in parsed.references() {
        let present = match kind {
            RefKind::Blob => db.blob_linked(name, target.as_str()).await? && blobs.exists(&target),
            RefKind::Manifest => db.holds_manifest(name, target.as_str()).await?,
        };
        if !present {
            missing.push(Entry {
                code: Code::ManifestBlobUnknown,
                message: format!(
                    "{} {target} is not in repository {name}",
                    if kind == RefKind::Blob {
                        "blob"
                    } else {
                        "manifest"
                    }
                ),
                detail: Some(json!({"digest": target.as_str()})),
            });
        }
    }
    if !missing.is_empty() {
        return Err(RegistryError {
            entries: missing,
            challenge: None,
        });
    }
    let image = match (&parsed.config, parsed.is_runnable_image()) {
        // An image config is small; a huge one is not read into memory (nor run).
        (Some(config), true) if config.size <= 16 << 20 => {
            let config_bytes = tokio::fs::read(blobs.path(&config.digest))
                .await
                .map_err(|e| RegistryError::internal("reading the image config", e))?;
            manifest::image_of(&parsed, &digest, bytes.len() as i64, &config_bytes)
        }
        _ => None,
    };
    {
        let (blobs, bytes) = (blobs.clone(), bytes.clone());
        let expect = crate::images::store::Expect {
            digest: Some(digest.clone()),
            ..Default::default()
        };
        tokio::task::spawn_blocking(move || blobs.put(&mut &bytes[..], &expect))
            .await
            .map_err(|e| RegistryError::internal("storing the manifest", e))?
            .map_err(|e| RegistryError::internal("storing the manifest", e))?;
    }
    let record = NewRepoManifest {
        repository: name.to_owned(),
        digest: digest.to_string(),
        media_type: parsed.media_type.clone(),
        size: bytes.len() as i64,
        artifact_type: parsed.artifact_type.clone(),
        subject: parsed.subject.as_ref().map(|s| s.to_string()),
        annotations: parsed.annotations.as_ref().map(|a| a.to_string()),
        references: parsed
            .references()
            .into_iter()
            .map(|(d, k)| (d.to_string(), k))
            .collect(),
        tag: tag.clone(),
        image: image.clone(),
    };
    db.put_manifest(&record).await?;
    ctx.audit(
        cred,
        "registry.push",
        name,
        &format!("reference={reference} digest={digest}"),
    )
    .await;
    let event = crate::db::NewEvent {
        kind: "image",
        action: "push",
        actor_id: digest.as_str(),
        attributes: [("name".to_owned(), format!("{name}:{reference}"))].into(),
    };
    if let Err(e) = db.record_event(&event).await {
        tracing::warn!(error = %e, "could not record a push event");
    }
    if let Some(image) = image {
        unpack_in_background(ctx, image);
    }
    let mut response = Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/manifests/{digest}"))
        .header(header::CONTENT_LENGTH, 0)
        .header("docker-content-digest", digest.as_str());
    if let Some(subject) = &parsed.subject {
        response = response.header("oci-subject", subject.as_str());
    }
    response
        .body(Body::empty())
        .map_err(|e| RegistryError::internal("building a response", e))
}

/// Unpacks a pushed image's layers, so it runs without waiting for them.
fn unpack_in_background(ctx: &Ctx<'_>, image: crate::db::NewImage) {
    let layout = ctx.state.app.config.layout();
    let blobs = BlobStore::new(layout.blobs());
    let layers = crate::images::snapshot::LayerStore::new(layout.layers());
    tokio::task::spawn_blocking(move || {
        for layer in &image.layers {
            let (Ok(chain), Ok(diff), Ok(blob)) = (
                Digest::parse(&layer.chain_id),
                Digest::parse(&layer.diff_id),
                Digest::parse(&layer.blob_digest),
            ) else {
                return;
            };
            if layers.exists(&chain) {
                continue;
            }
            let result = blobs
                .open(&blob)
                .map_err(|e| e.to_string())
                .and_then(|file| {
                    layers
                        .ensure(
                            &chain,
                            &diff,
                            file,
                            crate::images::unpack::Limits::default(),
                        )
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = result {
                tracing::warn!(image = %image.digest, layer = %blob, error = %e, "could not unpack a pushed layer");
                return;
            }
        }
    });
}

async fn delete_manifest(
    ctx: &Ctx<'_>,
    cred: &Credential,
    name: &str,
    reference: &str,
) -> Result<Response> {
    let db = &ctx.state.app.db;
    let deleted = if reference.contains(':') {
        let digest = parse_digest(reference)?;
        // Nothing is said of a manifest this repository does not hold.
        if db.holds_manifest(name, digest.as_str()).await?
            && let Some(reason) = db.manifest_in_use(name, digest.as_str()).await?
        {
            return Err(RegistryError::new(Code::Denied, reason));
        }
        db.delete_manifest(name, digest.as_str()).await?
    } else {
        db.delete_tag(name, reference).await?
    };
    if !deleted {
        return Err(RegistryError::new(
            Code::ManifestUnknown,
            format!("manifest {name}:{reference} is not known"),
        ));
    }
    ctx.audit(
        cred,
        "registry.delete",
        name,
        &format!("reference={reference}"),
    )
    .await;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn referrers(ctx: &Ctx<'_>, name: &str, subject: &Digest, query: &str) -> Result<Response> {
    let pairs = query_pairs(query);
    let filter = param(&pairs, "artifactType").filter(|a| !a.is_empty());
    let found = ctx
        .state
        .app
        .db
        .referrers(name, subject.as_str(), filter)
        .await?;
    let manifests: Vec<serde_json::Value> = found
        .into_iter()
        .map(|r| {
            let mut d = json!({"mediaType": r.media_type, "digest": r.digest, "size": r.size});
            if let Some(a) = r.artifact_type {
                d["artifactType"] = json!(a);
            }
            if let Some(a) = r
                .annotations
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let mut response = (
        [(header::CONTENT_TYPE, manifest::OCI_INDEX)],
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_INDEX,
            "manifests": manifests,
        }))
        .expect("JSON serializes"),
    )
        .into_response();
    if filter.is_some() {
        response.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_from_the_right() {
        assert!(matches!(route_of("/v2/"), Some(Route::Base)));
        assert!(matches!(route_of("/v2"), Some(Route::Base)));
        assert!(matches!(route_of("/v2/_catalog"), Some(Route::Catalog)));
        match route_of("/v2/team/blobs/app/manifests/v1") {
            Some(Route::Manifest(n, r)) => {
                assert_eq!((n.as_str(), r.as_str()), ("team/blobs/app", "v1"))
            }
            _ => panic!("manifest route"),
        }
        match route_of("/v2/a/b/blobs/uploads/") {
            Some(Route::Uploads(n, None)) => assert_eq!(n, "a/b"),
            _ => panic!("upload start"),
        }
        match route_of("/v2/a/blobs/uploads/123") {
            Some(Route::Uploads(n, Some(id))) => {
                assert_eq!((n.as_str(), id.as_str()), ("a", "123"))
            }
            _ => panic!("upload session"),
        }
        match route_of("/v2/a/blobs/sha256:00") {
            Some(Route::Blob(n, d)) => assert_eq!((n.as_str(), d.as_str()), ("a", "sha256:00")),
            _ => panic!("blob"),
        }
        match route_of("/v2/x/y/tags/list") {
            Some(Route::Tags(n)) => assert_eq!(n, "x/y"),
            _ => panic!("tags"),
        }
        assert!(route_of("/v2/a/unknown/thing").is_none());
    }

    #[test]
    fn ranges_fit_the_blob() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=9-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn queries_decode() {
        let pairs = query_pairs("scope=repository%3Aa%2Fb%3Apull&n=2&last=");
        assert_eq!(param(&pairs, "scope"), Some("repository:a/b:pull"));
        assert_eq!(param(&pairs, "n"), Some("2"));
        assert_eq!(param(&pairs, "last"), Some(""));
        assert_eq!(decode("a%2"), "a%2");
    }
}
