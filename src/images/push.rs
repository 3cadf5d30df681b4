//! Pushing a local image to a registry with `oci-client`: each layer and the config are sent
//! unless the registry has them already (streamed from the content store, with progress), then
//! the manifest as stored, under the target tag. Logins come from `wharf login`, and plain
//! `http://` is used only where pull would use it.

use futures_util::StreamExt;
use oci_client::RegistryOperation;
use oci_client::errors::OciDistributionError;

use super::credentials::CredentialStore;
use super::load::Progress;
use super::pull::{ConnectError, Remote};
use super::store::BlobStore;
use crate::db::{ImageSummary, LayerRecord};
use crate::domain::Digest;

impl From<ConnectError> for PushError {
    fn from(e: ConnectError) -> PushError {
        match e {
            ConnectError::Reference { reference, reason } => {
                PushError::Reference { reference, reason }
            }
            ConnectError::Credentials(e) => PushError::Credentials(e),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error("the image's {what} is missing from the store: {reason}")]
    Missing { what: String, reason: String },
    #[error(transparent)]
    Credentials(#[from] super::credentials::CredentialError),
}

/// Whether `reference` names its registry (`host[:port]/…`, as docker tells them: a first
/// part with a dot or a colon, or `localhost`). One that does not is this daemon's own: every
/// local image is served by the built-in registry already.
pub fn names_registry(reference: &str) -> bool {
    reference
        .split_once('/')
        .is_some_and(|(first, _)| first.contains(['.', ':']) || first == "localhost")
}

/// Where a push goes and with what.
pub struct PushSource<'a> {
    pub blobs: &'a BlobStore,
    pub credentials: &'a CredentialStore,
    pub insecure_registries: &'a [String],
}

/// Pushes `image` (its manifest, config and `layers`) as `reference`; the manifest digest.
pub async fn push(
    image: &ImageSummary,
    layers: &[LayerRecord],
    reference: &str,
    source: &PushSource<'_>,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<String, PushError> {
    let connected = Remote::connect(reference, source.credentials, source.insecure_registries)?;
    let Remote {
        client,
        auth,
        reference: parsed,
        registry,
        ..
    } = &connected;
    let remote = |e: OciDistributionError| PushError::Registry {
        registry: registry.clone(),
        reason: connected.failure(
            &e,
            &format!("or it grants no push to {}", parsed.repository()),
        ),
    };
    client
        .auth(parsed, auth, RegistryOperation::Push)
        .await
        .map_err(remote)?;
    let missing = |what: &str| {
        let what = what.to_owned();
        move |e: String| PushError::Missing { what, reason: e }
    };
    let mut blobs: Vec<(String, u64)> = layers
        .iter()
        .map(|l| (l.blob_digest.clone(), l.size.max(0) as u64))
        .collect();
    let config_digest = Digest::parse(&image.config_digest).map_err(|e| PushError::Missing {
        what: "config".into(),
        reason: e.to_string(),
    })?;
    let config_size = source
        .blobs
        .size(&config_digest)
        .map_err(|e| missing("config")(e.to_string()))?;
    blobs.push((image.config_digest.clone(), config_size));
    for (digest, size) in blobs {
        if client.blob_exists(parsed, &digest).await.map_err(remote)? {
            progress(Progress::Pushed {
                digest,
                size,
                existed: true,
            });
            continue;
        }
        let d = Digest::parse(&digest).map_err(|e| missing(&digest)(e.to_string()))?;
        let path = source.blobs.path(&d);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| missing(&digest)(e.to_string()))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| missing(&digest)(e.to_string()))?
            .len();
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).map(move |chunk| {
            if let Ok(bytes) = &chunk {
                let _ = sent_tx.send(bytes.len() as u64);
            }
            chunk.map_err(OciDistributionError::from)
        });
        let result = {
            let upload = client.push_blob_stream(parsed, stream, &digest, Some(size));
            tokio::pin!(upload);
            let mut current = 0u64;
            let mut reported = 0u64;
            loop {
                tokio::select! {
                    done = &mut upload => break done,
                    Some(n) = sent_rx.recv() => {
                        current += n;
                        if current - reported >= super::load::DOWNLOAD_REPORT_BYTES || current == size {
                            reported = current;
                            progress(Progress::Uploading { digest: digest.clone(), current, total: size });
                        }
                    }
                }
            }
        };
        result.map_err(remote)?;
        progress(Progress::Pushed {
            digest,
            size,
            existed: false,
        });
    }
    let manifest_digest = Digest::parse(&image.digest).map_err(|e| PushError::Missing {
        what: "manifest".into(),
        reason: e.to_string(),
    })?;
    let manifest = tokio::fs::read(source.blobs.path(&manifest_digest))
        .await
        .map_err(|e| missing("manifest")(e.to_string()))?;
    let content_type = image
        .media_type
        .parse()
        .map_err(|_| missing("manifest")(format!("bad media type {}", image.media_type)))?;
    client
        .push_manifest_raw(parsed, manifest, content_type)
        .await
        .map_err(remote)?;
    Ok(image.digest.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_is_named_by_a_host_in_the_first_part() {
        assert!(names_registry("127.0.0.1:5000/team/app:v1"));
        assert!(names_registry("registry.example/app"));
        assert!(names_registry("localhost/app:1"));
        assert!(!names_registry("team/app:v1"));
        assert!(!names_registry("app:v1"));
        assert!(!names_registry("app"));
    }
}
