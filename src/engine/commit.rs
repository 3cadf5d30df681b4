//! `commit`: a container's writable layer becomes the top layer of a new image, whose config
//! is the container's (command, environment, working directory, user, labels, ports) over
//! its image's. The build uses the same two halves: [`Engine::capture_layer`] and
//! [`Engine::record_draft`].

use serde::Deserialize;
use utoipa::ToSchema;

use super::{Engine, EngineError, archive, io};
use crate::db::{ImageSummary, NewImage};
use crate::domain::{Digest, ImageRef};
use crate::images::compose::{Draft, NewLayer, store_layer};
use crate::images::snapshot::LayerStore;
use crate::images::store::BlobStore;

/// What `commit` is asked for besides the container.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CommitRequest {
    /// The new image's name, `name[:tag]` (tag `latest` when none is given); none: untagged.
    pub repository: Option<String>,
    /// A message kept in the image's history.
    pub comment: Option<String>,
    /// Who made it (`author` in the image config).
    pub author: Option<String>,
    /// Leave a running container running while its files are read (default: pause it).
    #[serde(default)]
    pub no_pause: bool,
}

/// `docker run` arguments as the image config holds them.
fn command_text(cmd: &[String]) -> String {
    cmd.join(" ")
}

impl Engine {
    /// The config JSON of a recorded image.
    pub async fn image_config_bytes(&self, image: &ImageSummary) -> Result<Vec<u8>, EngineError> {
        let digest =
            Digest::parse(&image.config_digest).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let path = BlobStore::new(self.layout.blobs()).path(&digest);
        tokio::fs::read(&path)
            .await
            .map_err(io(format!("read image config {}", path.display())))
    }

    /// A draft of a new image on top of `image`.
    pub async fn draft_of(&self, image: &ImageSummary) -> Result<Draft, EngineError> {
        let config = self.image_config_bytes(image).await?;
        let layers = self.db.image_layers(&image.digest).await?;
        Draft::from_image(&config, &layers).map_err(|e| EngineError::Invalid(e.to_string()))
    }

    /// Stores container `id`'s writable layer as a layer blob.
    pub async fn capture_layer(&self, id: &str) -> Result<NewLayer, EngineError> {
        let upper = self.dir(id).join("upper");
        let blobs = BlobStore::new(self.layout.blobs());
        tokio::task::spawn_blocking(move || {
            store_layer(&blobs, |w| archive::write_layer(&upper, w))
        })
        .await
        .map_err(|e| EngineError::Invalid(format!("the layer task failed: {e}")))?
        .map_err(|e| EngineError::Io {
            what: "store the container's layer".into(),
            reason: e.to_string(),
        })
    }

    /// Writes `draft` out, unpacks the layers it adds, and records it under `tags`.
    pub async fn record_draft(
        &self,
        mut draft: Draft,
        tags: &[(String, String)],
    ) -> Result<NewImage, EngineError> {
        let blobs = BlobStore::new(self.layout.blobs());
        let layers = LayerStore::new(self.layout.layers());
        let image = tokio::task::spawn_blocking(move || {
            let image = draft.write(&blobs).map_err(|e| e.to_string())?;
            crate::images::load::unpack_layers(
                &image,
                &blobs,
                &layers,
                crate::images::unpack::Limits::default(),
                &mut |_| {},
            )
            .map_err(|e| e.to_string())?;
            Ok::<_, String>(image)
        })
        .await
        .map_err(|e| EngineError::Invalid(format!("the image task failed: {e}")))?
        .map_err(|reason| EngineError::Io {
            what: "write the new image".into(),
            reason,
        })?;
        self.db.record_image(&image, tags).await?;
        Ok(image)
    }

    /// `docker commit`: the new image's manifest digest.
    pub async fn commit(&self, key: &str, request: &CommitRequest) -> Result<String, EngineError> {
        let tags = match &request.repository {
            Some(name) => {
                let r = ImageRef::parse(name).map_err(|e| EngineError::Invalid(e.to_string()))?;
                if r.digest.is_some() {
                    return Err(EngineError::Invalid(format!(
                        "the new image's name {name} must be name[:tag], not a digest"
                    )));
                }
                vec![(r.repository, r.tag.unwrap_or_else(|| "latest".into()))]
            }
            None => Vec::new(),
        };
        let row = self.get(key).await?;
        let image = self
            .db
            .find_image("", None, Some(&row.image_digest))
            .await?
            .ok_or_else(|| EngineError::NoImage(row.image_digest.clone()))?;
        let config: super::ContainerConfig = serde_json::from_str(&row.config)
            .map_err(|e| EngineError::Invalid(format!("the container's stored config: {e}")))?;
        let mut draft = self.draft_of(&image).await?;
        apply_container_config(&mut draft, &config, &row.id);
        if let Some(author) = &request.author {
            draft.config["author"] = author.clone().into();
        }
        let pause = row.state == "running" && !request.no_pause;
        if pause {
            self.set_paused(&row.id, true).await?;
        }
        let layer = self.capture_layer(&row.id).await;
        if pause && let Err(e) = self.set_paused(&row.id, false).await {
            tracing::warn!(container = %row.name, error = %e, "could not unpause after commit");
        }
        let layer = layer?;
        let run = [config.entrypoint.clone(), config.cmd.clone()].concat();
        draft.add_layer(
            &layer,
            &format!("wharf commit {} ({})", row.name, command_text(&run)),
            request.comment.as_deref(),
        );
        let made = self.record_draft(draft, &tags).await?;
        super::emit(
            &self.db,
            "commit",
            &row,
            &[("imageDigest", made.digest.clone())],
        )
        .await;
        Ok(made.digest)
    }
}

/// The container's own settings become the image's (as `docker commit` keeps them).
fn apply_container_config(draft: &mut Draft, config: &super::ContainerConfig, id: &str) {
    let rc = draft.runtime_config();
    if !config.cmd.is_empty() {
        rc.insert("Cmd".into(), serde_json::json!(config.cmd));
    }
    if !config.entrypoint.is_empty() {
        rc.insert("Entrypoint".into(), serde_json::json!(config.entrypoint));
        if config.cmd.is_empty() {
            // The container ran its entrypoint alone, as docker does with --entrypoint.
            rc.insert("Cmd".into(), serde_json::Value::Null);
        }
    }
    if !config.env.is_empty() {
        let mut env: Vec<String> = rc
            .get("Env")
            .and_then(|e| serde_json::from_value(e.clone()).ok())
            .unwrap_or_default();
        for var in &config.env {
            let key = var.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(var.clone());
        }
        rc.insert("Env".into(), serde_json::json!(env));
    }
    if let Some(dir) = &config.working_dir {
        rc.insert("WorkingDir".into(), dir.clone().into());
    }
    if let Some(user) = &config.user {
        rc.insert("User".into(), user.clone().into());
    }
    if !config.labels.is_empty() {
        let mut labels = rc
            .get("Labels")
            .and_then(|l| l.as_object().cloned())
            .unwrap_or_default();
        for (k, v) in &config.labels {
            labels.insert(k.clone(), v.clone().into());
        }
        rc.insert("Labels".into(), labels.into());
    }
    if !config.ports.is_empty() {
        let mut exposed = rc
            .get("ExposedPorts")
            .and_then(|p| p.as_object().cloned())
            .unwrap_or_default();
        for port in &config.ports {
            // `[ip:][hostport:]port[/proto]`: the container's port is the last part.
            let (spec, proto) = port.split_once('/').unwrap_or((port, "tcp"));
            let container_port = spec.rsplit(':').next().unwrap_or(spec);
            exposed.insert(format!("{container_port}/{proto}"), serde_json::json!({}));
        }
        rc.insert("ExposedPorts".into(), exposed.into());
    }
    draft.config["container"] = id.into();
}
