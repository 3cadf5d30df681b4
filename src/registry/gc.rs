//! Online garbage collection of the content store: removes blobs and unpacked layers nothing
//! needs any more, while the registry keeps serving.
//!
//! Live: every manifest a repository or a local image holds and everything they reference
//! (`Db::live_digests`), the layers of local images (`Db::live_chains`), and every blob or
//! layer younger than the grace window — which is what keeps a push in progress safe: its
//! layers arrive before its manifest. A blob linked to a repository but used by none of its
//! manifests is kept while its link is younger than the grace window (a link is renewed when
//! the blob is uploaded, mounted or asked for with HEAD), then unlinked. A manifest push holds the
//! collection lock (`AppState::registry_gc`) for reading from its blob checks to its record,
//! and a collection holds it for writing, so neither sees the other half-done. Upload sessions
//! are reaped by age (`registry_upload_max_age`). A dry run reports without removing.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::DbError;
use crate::startup::AppState;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("sweeping the content store failed: {0}")]
    Sweep(String),
}

/// Blobs and layers younger than this are never collected by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// What a collection removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    pub dry_run: bool,
    /// Blobs removed from the content store, and their bytes.
    pub blobs: usize,
    pub bytes: u64,
    /// Repository links of blobs no manifest used.
    pub links: usize,
    /// Unpacked layer directories removed.
    pub layers: usize,
    /// Digests of the blobs removed.
    pub removed: Vec<String>,
}

fn older_than(path: &Path, grace: Duration) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age >= grace)
}

/// Runs one collection.
pub async fn collect(
    state: &AppState,
    dry_run: bool,
    grace: Duration,
) -> Result<GcReport, GcError> {
    let _exclusive = state.registry_gc.write().await;
    let layout = state.config.layout();
    let mut report = GcReport {
        dry_run,
        ..GcReport::default()
    };

    // Links of blobs pushed but never used by a manifest of their repository, once old.
    let mut stale_links = Vec::new();
    let mut fresh_linked = HashSet::new();
    // A link's age is its own (made, mounted or asked for): an old blob newly linked by a
    // push in progress is as fresh as the push.
    let now = crate::db::now_secs();
    for (repository, digest, linked_at) in state.db.unreferenced_links().await? {
        let old = now.saturating_sub(linked_at) >= grace.as_secs() as i64;
        if old {
            stale_links.push((repository, digest));
        } else {
            fresh_linked.insert(digest);
        }
    }
    report.links = stale_links.len();
    if !dry_run {
        for (repository, digest) in &stale_links {
            state.db.unlink_blob(repository, digest).await?;
        }
    }
    let mut live = state.db.live_digests().await?;
    live.extend(fresh_linked);
    let chains = state.db.live_chains().await?;

    let root = layout.blobs();
    let layers_root = layout.layers();
    let swept = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        for algorithm in ["sha256", "sha512"] {
            let Ok(prefixes) = std::fs::read_dir(root.join(algorithm)) else {
                continue;
            };
            for prefix in prefixes.flatten() {
                let Ok(files) = std::fs::read_dir(prefix.path()) else {
                    continue;
                };
                for file in files.flatten() {
                    let digest = format!("{algorithm}:{}", file.file_name().to_string_lossy());
                    let path = file.path();
                    if live.contains(&digest) || !older_than(&path, grace) {
                        continue;
                    }
                    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                    found.push((digest, path, size));
                }
            }
        }
        let mut dead_layers = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&layers_root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !older_than(&entry.path(), grace) {
                    continue;
                }
                if !chains.contains(&format!("sha256:{name}")) {
                    dead_layers.push(entry.path());
                }
            }
        }
        if !dry_run {
            found.retain(|(_, path, _)| std::fs::remove_file(path).is_ok());
            dead_layers.retain(|path| std::fs::remove_dir_all(path).is_ok());
        }
        (found, dead_layers.len())
    })
    .await
    .map_err(|e| GcError::Sweep(e.to_string()))?;
    let (found, layers) = swept;
    report.blobs = found.len();
    report.bytes = found.iter().map(|(_, _, size)| size).sum();
    report.removed = found.into_iter().map(|(d, _, _)| d).collect();
    report.layers = layers;
    tracing::info!(
        dry_run,
        blobs = report.blobs,
        bytes = report.bytes,
        layers = report.layers,
        links = report.links,
        "registry garbage collection"
    );
    Ok(report)
}
