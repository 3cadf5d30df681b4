//! The Registry pages: the repositories a user may pull, a repository's tags (digest, size,
//! when pushed) with deletion for those who may delete, how to `docker login` and push to this
//! appliance under the name the browser used, and garbage collection with a dry run for
//! admins. Changes are JSON API calls from `static/registry.js`, under the API's rights.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::error::WebError;
use super::session::WebUser;
use crate::auth::{Action, Target, authorize};
use crate::db::TagDetail;
use crate::startup::AppState;

/// One repository on the Registry page.
pub struct RepositoryRow {
    pub name: String,
    pub tags: i64,
    pub anonymous_pull: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "registry.html")]
pub struct RegistryPage {
    pub user: WebUser,
    pub repositories: Vec<RepositoryRow>,
    /// `host:port` of the registry as this browser reaches the appliance; empty when the
    /// registry is off.
    pub registry_host: String,
    pub can_collect: bool,
}

/// The registry's address under the host name the browser used for the dashboard.
fn registry_host(state: &AppState, headers: &HeaderMap) -> String {
    let Some(addr) = state.registry_addr else {
        return String::new();
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| match h.rsplit_once(':') {
            // Not the colon of a bracketed IPv6 address.
            Some((name, port)) if !port.contains(']') => name.to_owned(),
            _ => h.to_owned(),
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| addr.ip().to_string());
    format!("{host}:{}", addr.port())
}

pub async fn registry(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
) -> Result<RegistryPage, WebError> {
    authorize(&user.principal, Action::SystemRead, &Target::System)
        .map_err(|d| WebError::Forbidden(d.to_string()))?;
    let repositories = state
        .db
        .repositories()
        .await?
        .into_iter()
        .filter(|r| {
            authorize(
                &user.principal,
                Action::RepositoryPull,
                &Target::Repository(r.name.clone()),
            )
            .is_ok()
        })
        .map(|r| RepositoryRow {
            name: r.name,
            tags: r.tags,
            anonymous_pull: r.anonymous_pull,
        })
        .collect();
    Ok(RegistryPage {
        can_collect: authorize(&user.principal, Action::SettingsWrite, &Target::System).is_ok(),
        registry_host: registry_host(&state, &headers),
        repositories,
        user,
    })
}

/// One tag on a repository's page.
pub struct TagRow {
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    pub size: String,
    pub pushed: String,
    /// How many pulls, and when the last was (`12 (last 3 minutes ago)`).
    pub pulls: String,
}

fn pulls_text(pulls: i64, last: Option<i64>) -> String {
    match last {
        Some(at) if pulls > 0 => format!("{pulls} (last {})", super::pages::time_text(Some(at))),
        _ => pulls.to_string(),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "repository.html")]
pub struct RepositoryPage {
    pub user: WebUser,
    pub name: String,
    pub tags: Vec<TagRow>,
    pub can_delete: bool,
    /// Admins set whether it can be pulled anonymously.
    pub can_configure: bool,
    pub anonymous_pull: bool,
    pub registry_host: String,
}

#[derive(Debug, Deserialize)]
pub struct RepositoryQuery {
    name: String,
}

pub async fn repository(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    Query(q): Query<RepositoryQuery>,
) -> Result<RepositoryPage, WebError> {
    let target = Target::Repository(q.name.clone());
    authorize(&user.principal, Action::RepositoryPull, &target)
        .map_err(|d| WebError::Forbidden(d.to_string()))?;
    if !state.db.repository_exists(&q.name).await? {
        return Err(WebError::NotFound(format!(
            "repository {} not found",
            q.name
        )));
    }
    let tags = state
        .db
        .tag_details(&q.name)
        .await?
        .into_iter()
        .map(|t| TagRow {
            size: crate::host::human_bytes(t.size.max(0) as u64),
            pushed: super::pages::time_text(Some(t.updated_at)),
            pulls: pulls_text(t.pulls, t.last_pulled_at),
            tag: t.tag,
            digest: t.digest,
            media_type: t.media_type,
        })
        .collect();
    Ok(RepositoryPage {
        can_delete: authorize(&user.principal, Action::RepositoryDelete, &target).is_ok(),
        can_configure: authorize(&user.principal, Action::SettingsWrite, &Target::System).is_ok(),
        anonymous_pull: state.db.anonymous_pull(&q.name).await?,
        registry_host: registry_host(&state, &headers),
        name: q.name,
        tags,
        user,
    })
}

/// A layer (or the config) a manifest lists.
pub struct LayerRow {
    pub digest: String,
    pub media_type: String,
    pub size: String,
}

/// A platform's manifest an index lists.
pub struct ChildRow {
    pub platform: String,
    pub digest: String,
    pub size: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "manifest.html")]
pub struct ManifestPage {
    pub user: WebUser,
    pub repository: String,
    pub digest: String,
    pub media_type: String,
    pub size: String,
    pub tags: Vec<String>,
    pub pulls: String,
    pub layers: Vec<LayerRow>,
    pub children: Vec<ChildRow>,
    /// The manifest as stored, indented.
    pub json: String,
    pub can_delete: bool,
}

#[derive(Debug, Deserialize)]
pub struct ManifestQuery {
    repository: String,
    digest: String,
}

/// One manifest of a repository: what it lists (layers and config, or the platforms of an
/// index), its tags and pulls here, the document itself, and deletion for those who may.
pub async fn manifest(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<ManifestQuery>,
) -> Result<ManifestPage, WebError> {
    let target = Target::Repository(q.repository.clone());
    authorize(&user.principal, Action::RepositoryPull, &target)
        .map_err(|d| WebError::Forbidden(d.to_string()))?;
    let not_found = || {
        WebError::NotFound(format!(
            "manifest {} is not in repository {}",
            q.digest, q.repository
        ))
    };
    let digest = crate::domain::Digest::parse(&q.digest).map_err(|_| not_found())?;
    let found = state
        .db
        .resolve_manifest(&q.repository, digest.as_str())
        .await?
        .ok_or_else(not_found)?;
    let path = crate::images::store::BlobStore::new(state.config.layout().blobs()).path(&digest);
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        WebError::Internal(format!(
            "manifest {digest} is recorded but its blob {} cannot be read: {e}",
            path.display()
        ))
    })?;
    let document: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let bytes_text = |v: &serde_json::Value| crate::host::human_bytes(v.as_u64().unwrap_or(0));
    let descriptor = |d: &serde_json::Value| LayerRow {
        digest: d["digest"].as_str().unwrap_or_default().to_owned(),
        media_type: d["mediaType"].as_str().unwrap_or_default().to_owned(),
        size: bytes_text(&d["size"]),
    };
    let mut layers: Vec<LayerRow> = document["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(descriptor)
        .collect();
    if document["config"].is_object() {
        layers.insert(0, descriptor(&document["config"]));
    }
    let children = document["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| ChildRow {
            platform: format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            ),
            digest: m["digest"].as_str().unwrap_or_default().to_owned(),
            size: bytes_text(&m["size"]),
        })
        .collect();
    let tags: Vec<TagDetail> = state
        .db
        .tag_details(&q.repository)
        .await?
        .into_iter()
        .filter(|t| t.digest == found.digest)
        .collect();
    let (pulls, last) = state
        .db
        .manifest_pulls(&q.repository, digest.as_str())
        .await?;
    Ok(ManifestPage {
        can_delete: authorize(&user.principal, Action::RepositoryDelete, &target).is_ok(),
        digest: found.digest,
        media_type: found.media_type,
        size: crate::host::human_bytes(bytes.len() as u64),
        tags: tags.into_iter().map(|t| t.tag).collect(),
        pulls: pulls_text(pulls, last),
        layers,
        children,
        json: serde_json::to_string_pretty(&document)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned()),
        repository: q.repository,
        user,
    })
}
