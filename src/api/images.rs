//! `/api/v1/images`: list, inspect, and load (`docker save` archives and OCI layouts), with load
//! progress streamed as NDJSON.

use std::io::Read;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::caller_audit;
use super::error::{ApiError, ErrorBody};
use super::stream::{ChannelReader, tar_response};
use crate::auth::{Action, Caller, Target};
use crate::db::{ImageSummary, LayerRecord, Outcome};
use crate::domain::ImageRef;
use crate::images::load::{self, Progress};
use crate::images::snapshot::LayerStore;
use crate::images::store::BlobStore;
use crate::images::unpack::Limits;
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(load_archive))
        .routes(routes!(import))
        .routes(routes!(inspect))
        .routes(routes!(history))
        .routes(routes!(tag))
        .routes(routes!(remove))
        .routes(routes!(save_archive))
        .routes(routes!(prune))
        .routes(routes!(pull_image))
        .routes(routes!(push_image))
        .routes(routes!(disk_usage))
}

/// Deletes the blobs and unpacked layers of `digests`' images that no remaining image uses.
async fn free_unused(
    state: &AppState,
    candidates: Vec<String>,
    chains: Vec<String>,
) -> Result<(usize, usize), ApiError> {
    // Like a registry collection: no manifest push may be between its blob checks and its
    // record while blobs go.
    let _exclusive = state.registry_gc.write().await;
    let layout = state.config.layout();
    let blobs = BlobStore::new(layout.blobs());
    let layer_store = LayerStore::new(layout.layers());
    let (mut freed_blobs, mut freed_layers) = (0, 0);
    for digest in candidates {
        if !state.db.blob_in_use(&digest).await?
            && let Ok(d) = crate::domain::Digest::parse(&digest)
            && blobs.delete(&d).is_ok()
        {
            freed_blobs += 1;
        }
    }
    for chain in chains {
        if !state.db.chain_in_use(&chain).await?
            && let Ok(c) = crate::domain::Digest::parse(&chain)
            && std::fs::remove_dir_all(layer_store.path(&c)).is_ok()
        {
            freed_layers += 1;
        }
    }
    Ok((freed_blobs, freed_layers))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Pruned {
    pub deleted: Vec<String>,
    pub freed_blobs: usize,
    pub freed_layers: usize,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PruneQuery {
    /// Every image no container uses, not only the dangling ones.
    #[serde(default)]
    pub all: bool,
}

/// Removes dangling images (no name points at them), or with `all` every image no container
/// uses (the registry's repositories included: they are the same images), and the files only
/// they used.
#[utoipa::path(post, path = "/images/prune", tag = "images", params(PruneQuery), responses((status = 200, body = Pruned), (status = 403, body = ErrorBody)))]
async fn prune(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PruneQuery>,
) -> Result<Json<Pruned>, ApiError> {
    caller
        .require(Action::ImageRemove, &Target::Image("*".into()))
        .await?;
    let mut pruned = Pruned {
        deleted: Vec::new(),
        freed_blobs: 0,
        freed_layers: 0,
    };
    let mut doomed = state.db.dangling_images().await?;
    if q.all {
        for image in state.db.list_images().await? {
            // Local images are what the built-in registry serves: those go too, as asked.
            if state
                .db
                .containers_of_image(&image.digest)
                .await?
                .is_empty()
                && !doomed.contains(&image.digest)
            {
                doomed.push(image.digest);
            }
        }
    }
    for digest in doomed {
        let Some(summary) = state.db.find_image("", None, Some(&digest)).await? else {
            continue;
        };
        let layers = state.db.image_layers(&digest).await?;
        if state
            .db
            .untag_image("", None, Some(&digest))
            .await?
            .is_some()
        {
            let mut candidates = vec![summary.digest.clone(), summary.config_digest.clone()];
            candidates.extend(layers.iter().map(|l| l.blob_digest.clone()));
            let (b, l) = free_unused(
                &state,
                candidates,
                layers.iter().map(|l| l.chain_id.clone()).collect(),
            )
            .await?;
            pruned.freed_blobs += b;
            pruned.freed_layers += l;
            pruned.deleted.push(digest);
        }
    }
    let record = caller_audit(
        &caller,
        "image.prune",
        "image:*",
        &format!("deleted={}", pruned.deleted.len()),
    );
    state.db.record_audit(&record).await?;
    Ok(Json(pruned))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DiskUsage {
    /// Bytes of the content store (layers as downloaded, configs, manifests).
    pub blobs_bytes: u64,
    pub blobs: u64,
    /// Bytes of unpacked layers.
    pub layers_bytes: u64,
    pub layers: u64,
    pub images: u64,
}

/// Disk use of images: the content store and the unpacked layers.
#[utoipa::path(get, path = "/images/df", tag = "images", responses((status = 200, body = DiskUsage)))]
async fn disk_usage(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<DiskUsage>, ApiError> {
    caller
        .require(Action::ImageRead, &Target::Image("*".into()))
        .await?;
    Ok(Json(image_usage(&state).await?))
}

/// [`DiskUsage`] of this daemon's images.
pub(super) async fn image_usage(state: &AppState) -> Result<DiskUsage, ApiError> {
    let layout = state.config.layout();
    let images = state.db.list_images().await?.len() as u64;
    let (blobs, layers) = tokio::task::spawn_blocking(move || {
        let blobs = crate::host::tree_size(&layout.blobs());
        let layers_dir = layout.layers();
        let count = std::fs::read_dir(&layers_dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count() as u64
            })
            .unwrap_or(0);
        (blobs, (crate::host::tree_size(&layers_dir).0, count))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(DiskUsage {
        blobs_bytes: blobs.0,
        blobs: blobs.1,
        layers_bytes: layers.0,
        layers: layers.1,
        images,
    })
}

async fn find(state: &AppState, name: &str) -> Result<(ImageRef, ImageSummary), ApiError> {
    let reference = ImageRef::parse(name)?;
    let summary = state
        .db
        .find_image(
            &reference.repository,
            reference.tag.as_deref(),
            reference.digest.as_ref().map(|d| d.as_str()),
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("image {reference}")))?;
    Ok((reference, summary))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TagRequest {
    /// The image to name: `name[:tag]` or `name@digest`.
    pub source: String,
    /// The new name: `name[:tag]`.
    pub target: String,
}

/// Gives an image another name (moving the name if it named another image).
#[utoipa::path(post, path = "/images/tag", tag = "images", request_body = TagRequest,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn tag(
    State(state): State<AppState>,
    caller: Caller,
    super::error::Body(req): super::error::Body<TagRequest>,
) -> Result<axum::http::StatusCode, ApiError> {
    let target = ImageRef::parse(&req.target)?;
    caller
        .require(Action::ImagePush, &Target::Image(target.to_string()))
        .await?;
    let (_, summary) = find(&state, &req.source).await?;
    let Some(tag) = target.tag.clone().filter(|_| target.digest.is_none()) else {
        return Err(ApiError::BadRequest(format!(
            "the target {target} must be name[:tag]"
        )));
    };
    state
        .db
        .tag_image(&summary.digest, &target.repository, &tag)
        .await?;
    let record = caller_audit(
        &caller,
        "image.tag",
        &format!("image:{target}"),
        &format!("digest={}", summary.digest),
    );
    state.db.record_audit(&record).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RemoveQuery {
    /// `name[:tag]` or `name@digest`.
    pub name: String,
    /// Untag an image containers still use (the image itself stays while they exist).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Removed {
    pub untagged: Option<String>,
    /// The manifest removed with its last name, if any.
    pub deleted: Option<String>,
    /// Blobs and unpacked layers no image uses any more, removed from disk.
    pub freed_blobs: usize,
    pub freed_layers: usize,
}

/// Removes a name; with the image's last name (or by digest) the image goes, and the blobs and
/// layers nothing else uses are deleted.
#[utoipa::path(delete, path = "/images", tag = "images", params(RemoveQuery),
    responses((status = 200, body = Removed), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RemoveQuery>,
) -> Result<Json<Removed>, ApiError> {
    caller
        .require(Action::ImageRemove, &Target::Image(q.name.clone()))
        .await?;
    let (reference, summary) = find(&state, &q.name).await?;
    // An image containers run from stays while they exist: only its name may go (with force).
    let users = state.db.containers_of_image(&summary.digest).await?;
    let last_name = reference.digest.is_some() || summary.tags.len() <= 1;
    if !users.is_empty() && last_name {
        let used_by = format!(
            "image {} is used by container{} {}",
            q.name,
            if users.len() == 1 { "" } else { "s" },
            users.join(", ")
        );
        let Some(tag) = reference.tag.as_deref().filter(|_| q.force) else {
            return Err(ApiError::Conflict(format!(
                "{used_by}: remove {} first, or untag it with --force (the image stays while they use it)",
                if users.len() == 1 { "it" } else { "them" }
            )));
        };
        state.db.delete_tag(&reference.repository, tag).await?;
        let record = caller_audit(
            &caller,
            "image.remove",
            &format!("image:{reference}"),
            "untagged; kept for its containers",
        );
        state.db.record_audit(&record).await?;
        return Ok(Json(Removed {
            untagged: Some(reference.to_string()),
            deleted: None,
            freed_blobs: 0,
            freed_layers: 0,
        }));
    }
    let layers = state.db.image_layers(&summary.digest).await?;
    let deleted = state
        .db
        .untag_image(
            &reference.repository,
            reference.tag.as_deref(),
            reference.digest.as_ref().map(|d| d.as_str()),
        )
        .await?;
    let mut removed = Removed {
        untagged: reference.tag.as_ref().map(|_| reference.to_string()),
        deleted: deleted.clone(),
        freed_blobs: 0,
        freed_layers: 0,
    };
    if deleted.is_some() {
        let mut candidates = vec![summary.digest.clone(), summary.config_digest.clone()];
        candidates.extend(layers.iter().map(|l| l.blob_digest.clone()));
        let chains = layers.iter().map(|l| l.chain_id.clone()).collect();
        (removed.freed_blobs, removed.freed_layers) =
            free_unused(&state, candidates, chains).await?;
    }
    let record = caller_audit(
        &caller,
        "image.remove",
        &format!("image:{reference}"),
        &format!("deleted={}", deleted.is_some()),
    );
    state.db.record_audit(&record).await?;
    Ok(Json(removed))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SaveQuery {
    /// `name[:tag]` or `name@digest`.
    pub name: String,
    /// `docker-archive` (the default; `docker load` reads it) or `oci-archive` (an OCI layout tar).
    pub format: Option<String>,
}

/// An image as a `docker save` archive (`docker load` reads it) or an OCI image layout tar.
#[utoipa::path(get, path = "/images/save", tag = "images", params(SaveQuery),
    responses((status = 200, description = "a tar", content_type = "application/x-tar"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn save_archive(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<SaveQuery>,
) -> Result<Response, ApiError> {
    let oci = match q.format.as_deref() {
        None | Some("docker-archive") => false,
        Some("oci-archive") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "save format {other:?} is unknown: expected docker-archive or oci-archive"
            )));
        }
    };
    caller
        .require(Action::ImageRead, &Target::Image(q.name.clone()))
        .await?;
    let (reference, summary) = find(&state, &q.name).await?;
    let layers = state.db.image_layers(&summary.digest).await?;
    let layout = state.config.layout();
    let config = crate::domain::Digest::parse(&summary.config_digest)?;
    let names: Vec<String> = match &reference.tag {
        Some(_) => vec![reference.to_string()],
        None => summary.tags.clone(),
    };
    Ok(tar_response(move |writer| {
        let blobs = BlobStore::new(layout.blobs());
        let saved = match crate::domain::Digest::parse(&summary.digest) {
            Ok(manifest) if oci => crate::images::save::save_oci(
                writer,
                &blobs,
                &crate::images::save::StoredImage {
                    manifest: &manifest,
                    manifest_media_type: &summary.media_type,
                    config: &config,
                    layers: &layers,
                },
                &names,
            ),
            Err(e) => Err(crate::images::save::SaveError::Io(std::io::Error::other(
                e.to_string(),
            ))),
            Ok(_) => crate::images::save::save(
                writer,
                &blobs,
                &config,
                &layers,
                &names,
                &layout.root().join("tmp"),
            ),
        };
        saved.map_err(|e| e.to_string())
    }))
}

/// Every local image with its names.
#[utoipa::path(get, path = "/images", tag = "images", responses((status = 200, body = Vec<ImageSummary>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ImageSummary>>, ApiError> {
    caller
        .require(Action::ImageRead, &Target::Image("*".into()))
        .await?;
    Ok(Json(state.db.list_images().await?))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImageDetail {
    #[serde(flatten)]
    pub summary: ImageSummary,
    pub layers: Vec<LayerRecord>,
    /// The image configuration (Env, Cmd, Entrypoint, history, …).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct InspectQuery {
    /// `name[:tag]` or `name@digest` (names hold slashes, so they travel as a query).
    pub name: String,
}

/// One image by `name[:tag]` or `name@digest`.
#[utoipa::path(get, path = "/images/inspect", tag = "images", params(InspectQuery),
    responses((status = 200, body = ImageDetail), (status = 404, body = ErrorBody)))]
async fn inspect(
    State(state): State<AppState>,
    caller: Caller,
    Query(InspectQuery { name }): Query<InspectQuery>,
) -> Result<Json<ImageDetail>, ApiError> {
    caller
        .require(Action::ImageRead, &Target::Image(name.clone()))
        .await?;
    Ok(Json(image_detail(&state, &name).await?))
}

/// One step of an image's history, with the layer it added (none for metadata-only steps).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    pub created: Option<String>,
    pub created_by: String,
    pub comment: Option<String>,
    pub empty_layer: bool,
    /// The layer's diff id, when the step added one.
    pub layer: Option<String>,
    /// The layer's compressed size in bytes, when the step added one.
    pub size: Option<i64>,
}

/// The config's `history`, newest first, each layer-adding step paired with its layer.
pub(crate) fn history_of(config: &serde_json::Value, layers: &[LayerRecord]) -> Vec<HistoryEntry> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let mut layers = layers.iter();
    let mut entries: Vec<HistoryEntry> = config["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|step| {
            let empty_layer = step["empty_layer"].as_bool().unwrap_or(false);
            let layer = if empty_layer { None } else { layers.next() };
            HistoryEntry {
                created: text(&step["created"]),
                created_by: text(&step["created_by"]).unwrap_or_default(),
                comment: text(&step["comment"]),
                empty_layer,
                layer: layer.map(|l| l.diff_id.clone()),
                size: layer.map(|l| l.size),
            }
        })
        .collect();
    // Layers the history does not account for (or an image without history) still show.
    entries.extend(layers.map(|l| HistoryEntry {
        created: None,
        created_by: String::new(),
        comment: None,
        empty_layer: false,
        layer: Some(l.diff_id.clone()),
        size: Some(l.size),
    }));
    entries.reverse();
    entries
}

/// An image's history (`docker history`), newest step first.
#[utoipa::path(get, path = "/images/history", tag = "images", params(InspectQuery),
    responses((status = 200, body = [HistoryEntry]), (status = 404, body = ErrorBody)))]
async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Query(InspectQuery { name }): Query<InspectQuery>,
) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    caller
        .require(Action::ImageRead, &Target::Image(name.clone()))
        .await?;
    let detail = image_detail(&state, &name).await?;
    Ok(Json(history_of(&detail.config, &detail.layers)))
}

pub(crate) async fn image_detail(state: &AppState, name: &str) -> Result<ImageDetail, ApiError> {
    let (reference, summary) = find(state, name).await?;
    let layers = state.db.image_layers(&summary.digest).await?;
    let blobs = BlobStore::new(state.config.layout().blobs());
    let config_digest = crate::domain::Digest::parse(&summary.config_digest)?;
    let config = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, String> {
        let mut bytes = Vec::new();
        blobs
            .open(&config_digest)
            .map_err(|e| e.to_string())?
            .take(4 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| {
        ApiError::Internal(format!(
            "the config {} of image {reference} cannot be read: {e}",
            summary.config_digest
        ))
    })?;
    Ok(ImageDetail {
        summary,
        layers,
        config,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct LoadQuery {
    /// Repository for images of an OCI layout named only by a tag.
    pub repository: Option<String>,
}

/// A streamed NDJSON answer fed by `rx`.
pub(super) fn ndjson(rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>) -> Response {
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

pub(super) fn line(value: serde_json::Value) -> Result<Bytes, std::io::Error> {
    let mut text = value.to_string();
    text.push('\n');
    Ok(Bytes::from(text))
}

/// Loads the images of a `docker save` archive or an OCI layout tar (the request body). The
/// answer streams one JSON object per line as blobs are stored and layers unpacked, then
/// `{"status":"loaded",…}` per name, and `{"error":…}` if it fails.
#[utoipa::path(post, path = "/images/load", tag = "images", params(LoadQuery), request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 200, description = "NDJSON progress", content_type = "application/x-ndjson"), (status = 403, body = ErrorBody)))]
async fn load_archive(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<LoadQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    caller
        .require(Action::ImagePull, &Target::Image("*".into()))
        .await?;
    if let Some(repo) = &q.repository {
        ImageRef::parse(repo)?;
    }
    let repository = q.repository.clone();
    Ok(store_from_body(
        state,
        caller,
        request,
        "image.load",
        move |reader, blobs, layers, report| {
            load::load(
                reader,
                blobs,
                layers,
                repository.as_deref(),
                Limits::default(),
                report,
            )
        },
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ImportQuery {
    /// The new image's name, `name[:tag]` (tag `latest` when none is given).
    pub repository: String,
}

/// Makes a one-layer image from the tar of a file system (`docker import`, e.g. of a container
/// that `export` wrote); progress streams back as NDJSON lines, like load.
#[utoipa::path(post, path = "/images/import", tag = "images", params(ImportQuery), request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 200, description = "NDJSON progress", content_type = "application/x-ndjson"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ImportQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    caller
        .require(Action::ImagePull, &Target::Image(q.repository.clone()))
        .await?;
    let reference = ImageRef::parse(&q.repository)?;
    if reference.digest.is_some() {
        return Err(ApiError::BadRequest(format!(
            "the new image's name {} must be name[:tag], not a digest",
            q.repository
        )));
    }
    let name = reference.to_string();
    let architecture = state.host.architecture.clone();
    Ok(store_from_body(
        state,
        caller,
        request,
        "image.import",
        move |reader, blobs, layers, report| {
            load::import(
                reader,
                &name,
                &architecture,
                blobs,
                layers,
                Limits::default(),
                report,
            )
            .map(|loaded| vec![loaded])
        },
    ))
}

/// Runs `store` on the request's body (a tar) off the async threads, records the images it
/// made, and streams its progress and outcome back as NDJSON.
fn store_from_body(
    state: AppState,
    caller: Caller,
    request: Request,
    audit_action: &'static str,
    store: impl FnOnce(
        ChannelReader,
        &BlobStore,
        &LayerStore,
        &mut dyn FnMut(Progress),
    ) -> Result<Vec<load::Loaded>, load::LoadError>
    + Send
    + 'static,
) -> Response {
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let reader = ChannelReader::of(request.into_body());
    let layout = state.config.layout();
    let progress_tx = out_tx.clone();
    tokio::spawn(async move {
        let loaded = tokio::task::spawn_blocking(move || {
            let blobs = BlobStore::new(layout.blobs());
            let layers = LayerStore::new(layout.layers());
            let mut report = |p: Progress| {
                let _ =
                    progress_tx.send(line(serde_json::to_value(p).expect("progress serializes")));
            };
            store(reader, &blobs, &layers, &mut report)
        })
        .await;
        let result = match loaded {
            Ok(Ok(images)) => {
                let mut names = Vec::new();
                let mut failure = None;
                for image in &images {
                    if let Err(e) = state.db.record_image(&image.image, &image.tags).await {
                        failure = Some(e.to_string());
                        break;
                    }
                    names.extend(image.tags.iter().map(|(r, t)| format!("{r}:{t}")));
                }
                match failure {
                    None => {
                        let record =
                            caller_audit(&caller, audit_action, "image:*", &names.join(","));
                        let _ = state.db.record_audit(&record).await;
                        Ok(images.len())
                    }
                    Some(e) => Err(e),
                }
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the task failed: {e}")),
        };
        let _ = out_tx.send(line(match result {
            Ok(count) => serde_json::json!({"status": "done", "images": count}),
            Err(message) => serde_json::json!({"error": message}),
        }));
    });
    ndjson(out_rx)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PullRequest {
    /// A remote image, e.g. `registry.example:5000/team/app:v1`.
    pub reference: String,
}

/// Pulls an image from its registry; progress streams back as NDJSON lines, like load.
#[utoipa::path(post, path = "/images/pull", tag = "images", request_body = PullRequest,
    responses((status = 200, description = "NDJSON progress", content_type = "application/x-ndjson"), (status = 403, body = ErrorBody)))]
async fn pull_image(
    State(state): State<AppState>,
    caller: Caller,
    super::error::Body(req): super::error::Body<PullRequest>,
) -> Result<Response, ApiError> {
    caller
        .require(Action::ImagePull, &Target::Image(req.reference.clone()))
        .await?;
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    tokio::spawn(async move {
        let layout = state.config.layout();
        let target = crate::images::pull::PullTarget {
            blobs: BlobStore::new(layout.blobs()),
            layers: LayerStore::new(layout.layers()),
            credentials: crate::images::credentials::CredentialStore::new(
                layout.registry_credentials(),
            ),
            insecure_registries: state.config.insecure_registries.clone(),
        };
        let progress_tx = out_tx.clone();
        let mut report = move |p: Progress| {
            let _ = progress_tx.send(line(serde_json::to_value(p).expect("progress serializes")));
        };
        let result = match crate::images::pull::pull(&req.reference, &target, &mut report).await {
            Ok(loaded) => match state.db.record_image(&loaded.image, &loaded.tags).await {
                Ok(()) => {
                    let record = caller_audit(
                        &caller,
                        "image.pull",
                        &format!("image:{}", req.reference),
                        &format!("digest={}", loaded.image.digest),
                    );
                    let _ = state.db.record_audit(&record).await;
                    Ok(loaded.image.digest)
                }
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        let _ = out_tx.send(line(match result {
            Ok(digest) => serde_json::json!({"status": "done", "digest": digest}),
            Err(message) => serde_json::json!({"error": message}),
        }));
    });
    Ok(ndjson(out_rx))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PushRequest {
    /// The local image: `name[:tag]` or `name@digest`.
    pub name: String,
    /// Where it goes, e.g. `registry.example:5000/team/app:v1` (default: `name` itself, which
    /// then names its registry, as with `docker push`).
    pub reference: Option<String>,
}

/// Pushes a local image to a registry (a login from `wharf login` is used when there is one);
/// progress streams back as NDJSON lines (`uploading`, `pushed`), then `done` or an error.
#[utoipa::path(post, path = "/images/push", tag = "images", request_body = PushRequest,
    responses((status = 200, description = "NDJSON progress", content_type = "application/x-ndjson"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn push_image(
    State(state): State<AppState>,
    caller: Caller,
    super::error::Body(req): super::error::Body<PushRequest>,
) -> Result<Response, ApiError> {
    caller
        .require(Action::ImageRead, &Target::Image(req.name.clone()))
        .await?;
    let reference = req.reference.clone().unwrap_or_else(|| req.name.clone());
    caller
        .require(Action::ImagePush, &Target::Image(reference.clone()))
        .await?;
    let (_, summary) = find(&state, &req.name).await?;
    let layers = state.db.image_layers(&summary.digest).await?;
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    if !crate::images::push::names_registry(&reference) && reference != req.name {
        return Err(ApiError::BadRequest(format!(
            "{reference} names no registry: give HOST[:PORT]/{reference} to push there, or `wharf tag {} {reference}` to name it here",
            req.name
        )));
    }
    if !crate::images::push::names_registry(&reference) {
        // No registry named: the built-in one, which serves every local image already.
        let served = state
            .registry_addr
            .map(|addr| format!("{addr}/{reference}"))
            .unwrap_or_default();
        let _ = out_tx.send(line(serde_json::json!({
            "status": "done", "digest": summary.digest, "reference": reference,
            "local": true, "served_as": served,
        })));
        return Ok(ndjson(out_rx));
    }
    tokio::spawn(async move {
        let layout = state.config.layout();
        let blobs = BlobStore::new(layout.blobs());
        let credentials =
            crate::images::credentials::CredentialStore::new(layout.registry_credentials());
        let source = crate::images::push::PushSource {
            blobs: &blobs,
            credentials: &credentials,
            insecure_registries: &state.config.insecure_registries,
        };
        let progress_tx = out_tx.clone();
        let mut report = move |p: Progress| {
            let _ = progress_tx.send(line(serde_json::to_value(p).expect("progress serializes")));
        };
        let result =
            crate::images::push::push(&summary, &layers, &reference, &source, &mut report).await;
        let (outcome, detail) = match &result {
            Ok(digest) => (Outcome::Ok, format!("{} digest={digest}", req.name)),
            Err(e) => (Outcome::Failed, format!("{}: {e}", req.name)),
        };
        let mut record = caller_audit(
            &caller,
            "image.push",
            &format!("image:{reference}"),
            &detail,
        );
        record.outcome = outcome;
        let _ = state.db.record_audit(&record).await;
        let _ = out_tx.send(line(match result {
            Ok(digest) => {
                serde_json::json!({"status": "done", "digest": digest, "reference": reference})
            }
            Err(e) => serde_json::json!({"error": e.to_string()}),
        }));
    });
    Ok(ndjson(out_rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> LayerRecord {
        LayerRecord {
            blob_digest: format!("sha256:b{n}"),
            diff_id: format!("sha256:d{n}"),
            chain_id: format!("sha256:c{n}"),
            size: i64::from(n) * 100,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        }
    }

    #[test]
    fn history_pairs_layer_steps_with_layers_and_skips_empty_ones() {
        let config = serde_json::json!({"history": [
            {"created_by": "ADD rootfs /", "created": "2026-01-01T00:00:00Z"},
            {"created_by": "ENV A=1", "empty_layer": true},
            {"created_by": "RUN make", "comment": "buildkit"},
        ]});
        let steps = history_of(&config, &[layer(1), layer(2), layer(3)]);
        let by: Vec<&str> = steps.iter().map(|s| s.created_by.as_str()).collect();
        assert_eq!(by, ["", "RUN make", "ENV A=1", "ADD rootfs /"]);
        assert_eq!(
            steps[0].layer.as_deref(),
            Some("sha256:d3"),
            "unaccounted layer"
        );
        assert_eq!(steps[1].layer.as_deref(), Some("sha256:d2"));
        assert_eq!(steps[1].comment.as_deref(), Some("buildkit"));
        assert!(steps[2].empty_layer && steps[2].layer.is_none() && steps[2].size.is_none());
        assert_eq!(steps[3].size, Some(100));
        assert_eq!(steps[3].created.as_deref(), Some("2026-01-01T00:00:00Z"));
    }
}
