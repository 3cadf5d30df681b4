//! Making new images on this host (`commit`, `build`): a layer stored from a tar as it is
//! written (gzip blob and diff id computed in one pass), and a draft of an image — its config
//! and layers — that grows step by step and is written out as a config and an OCI manifest.

use std::io::{self, Write};

use serde_json::{Value, json};

use super::snapshot::chain_ids;
use super::store::{BlobStore, Expect, Hasher, StoreError};
use crate::db::{LayerRecord, NewImage};
use crate::domain::{Digest, DigestAlgorithm};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("write the layer: {0}")]
    Write(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the base image's config: {0}")]
    Config(String),
}

/// A layer just stored: its blob (gzip) and the digest of the tar inside (its diff id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLayer {
    pub blob: Digest,
    pub diff_id: Digest,
    pub size: u64,
}

/// Counts and hashes what passes through to `inner`.
struct Hashing<W> {
    inner: W,
    hasher: Option<Hasher>,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hasher: Some(Hasher::new(DigestAlgorithm::Sha256)),
            size: 0,
        }
    }

    fn digest(&mut self) -> Digest {
        self.hasher.take().expect("a digest is taken once").finish()
    }
}

/// Stores the layer tar that `write` writes: compressed with gzip into the blob store, its
/// uncompressed digest taken on the way. Nothing is left behind when `write` fails.
pub fn store_layer<E: std::fmt::Display>(
    blobs: &BlobStore,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<NewLayer, ComposeError> {
    let tmp = blobs.incoming_path()?;
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| ComposeError::Write(e.to_string()))?;
        let compressed = Hashing::new(io::BufWriter::with_capacity(1 << 20, file));
        let gzip = flate2::write::GzEncoder::new(compressed, flate2::Compression::fast());
        let mut tar = Hashing::new(gzip);
        write(&mut tar).map_err(|e| ComposeError::Write(e.to_string()))?;
        let diff_id = tar.digest();
        let mut compressed = tar
            .inner
            .finish()
            .map_err(|e| ComposeError::Write(e.to_string()))?;
        compressed
            .flush()
            .map_err(|e| ComposeError::Write(e.to_string()))?;
        let blob = compressed.digest();
        let size = compressed.size;
        drop(compressed);
        blobs.place_verified(&tmp, &blob, &blob)?;
        Ok(NewLayer {
            blob,
            diff_id,
            size,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One layer of a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftLayer {
    pub blob: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

/// An image being made: the config (as JSON, so that fields this version does not know are
/// kept) and the layers, bottom first.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub config: Value,
    pub layers: Vec<DraftLayer>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Draft {
    /// An empty image (`FROM scratch`) for this host's platform.
    pub fn scratch(architecture: &str) -> Draft {
        Draft {
            config: json!({
                "architecture": architecture,
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }),
            layers: Vec::new(),
        }
    }

    /// A draft on top of an existing image, given its config's bytes and its layers.
    pub fn from_image(config: &[u8], layers: &[LayerRecord]) -> Result<Draft, ComposeError> {
        let config: Value =
            serde_json::from_slice(config).map_err(|e| ComposeError::Config(e.to_string()))?;
        if !config.is_object() {
            return Err(ComposeError::Config("not a JSON object".into()));
        }
        let layers = layers
            .iter()
            .map(|l| {
                Ok(DraftLayer {
                    blob: Digest::parse(&l.blob_digest)
                        .map_err(|e| ComposeError::Config(e.to_string()))?,
                    diff_id: Digest::parse(&l.diff_id)
                        .map_err(|e| ComposeError::Config(e.to_string()))?,
                    size: l.size.max(0) as u64,
                    media_type: l.media_type.clone(),
                })
            })
            .collect::<Result<Vec<_>, ComposeError>>()?;
        let mut draft = Draft { config, layers };
        // The diff ids are the layers', whatever the config said.
        draft.sync_rootfs();
        Ok(draft)
    }

    fn sync_rootfs(&mut self) {
        let ids: Vec<Value> = self
            .layers
            .iter()
            .map(|l| Value::String(l.diff_id.to_string()))
            .collect();
        self.config["rootfs"] = json!({"type": "layers", "diff_ids": ids});
    }

    /// The runtime part of the config (`Env`, `Cmd`, …), made an object if it was not one.
    pub fn runtime_config(&mut self) -> &mut serde_json::Map<String, Value> {
        if !self.config["config"].is_object() {
            self.config["config"] = json!({});
        }
        self.config["config"]
            .as_object_mut()
            .expect("made an object just now")
    }

    /// Adds a history entry for a step that changed only the config.
    pub fn note(&mut self, created_by: &str) {
        self.push_history(
            json!({"created": now_rfc3339(), "created_by": created_by, "empty_layer": true}),
        );
    }

    /// Adds a layer on top, with its history entry.
    pub fn add_layer(&mut self, layer: &NewLayer, created_by: &str, comment: Option<&str>) {
        self.layers.push(DraftLayer {
            blob: layer.blob.clone(),
            diff_id: layer.diff_id.clone(),
            size: layer.size,
            media_type: OCI_LAYER_GZIP.into(),
        });
        self.sync_rootfs();
        let mut entry = json!({"created": now_rfc3339(), "created_by": created_by});
        if let Some(c) = comment {
            entry["comment"] = c.into();
        }
        self.push_history(entry);
    }

    fn push_history(&mut self, entry: Value) {
        if !self.config["history"].is_array() {
            self.config["history"] = json!([]);
        }
        self.config["history"]
            .as_array_mut()
            .expect("made an array just now")
            .push(entry);
    }

    /// Writes the config and an OCI manifest to the store; the image, ready to record.
    pub fn write(&mut self, blobs: &BlobStore) -> Result<NewImage, ComposeError> {
        self.config["created"] = now_rfc3339().into();
        self.sync_rootfs();
        let config = serde_json::to_vec(&self.config).expect("JSON values serialize");
        let (config_digest, config_size) = blobs.put(&mut &config[..], &Expect::default())?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size},
            "layers": self.layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.blob.to_string(), "size": l.size,
            })).collect::<Vec<_>>(),
        }))
        .expect("a manifest serializes");
        let (digest, size) = blobs.put(&mut &manifest[..], &Expect::default())?;
        let diff_ids: Vec<Digest> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        let layers = self
            .layers
            .iter()
            .zip(chain_ids(&diff_ids))
            .map(|(l, chain)| LayerRecord {
                blob_digest: l.blob.to_string(),
                diff_id: l.diff_id.to_string(),
                chain_id: chain.to_string(),
                size: l.size as i64,
                media_type: l.media_type.clone(),
            })
            .collect();
        Ok(NewImage {
            digest: digest.to_string(),
            media_type: OCI_MANIFEST.into(),
            config_digest: config_digest.to_string(),
            size: size as i64,
            os: self.config["os"].as_str().unwrap_or("linux").to_owned(),
            architecture: self.config["architecture"]
                .as_str()
                .unwrap_or("amd64")
                .to_owned(),
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_stored_layer_is_gzip_of_the_tar_whose_digest_is_its_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(dir.path());
        let tar_bytes = {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(5);
            h.set_mode(0o644);
            b.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
            b.into_inner().unwrap()
        };
        let layer = store_layer(&blobs, |w| w.write_all(&tar_bytes)).unwrap();
        assert_eq!(layer.diff_id, super::super::store::sha256(&tar_bytes));
        let mut gz = Vec::new();
        blobs
            .open(&layer.blob)
            .unwrap()
            .read_to_end(&mut gz)
            .unwrap();
        assert_eq!(super::super::store::sha256(&gz), layer.blob);
        assert_eq!(gz.len() as u64, layer.size);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, tar_bytes);
    }

    #[test]
    fn a_failed_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(dir.path());
        let err = store_layer(&blobs, |w| {
            w.write_all(b"partial")?;
            Err::<(), _>(io::Error::other("the container went away"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("the container went away"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path().join(".incoming"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_draft_keeps_unknown_fields_and_records_layers_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(dir.path());
        let base = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"]},"x-extra":7,
            "rootfs":{"type":"layers","diff_ids":[]},"history":[{"created_by":"base"}]}"#;
        let mut draft = Draft::from_image(base, &[]).unwrap();
        draft
            .runtime_config()
            .insert("Cmd".into(), json!(["/bin/sh"]));
        draft.note("CMD [\"/bin/sh\"]");
        let layer = store_layer(&blobs, |w| w.write_all(&[0u8; 1024])).unwrap();
        draft.add_layer(&layer, "RUN true", None);
        let image = draft.write(&blobs).unwrap();
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.layers[0].diff_id, layer.diff_id.to_string());
        assert_eq!(image.layers[0].chain_id, layer.diff_id.to_string());
        let config: Value = serde_json::from_reader(
            blobs
                .open(&Digest::parse(&image.config_digest).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(config["x-extra"], 7);
        assert_eq!(config["config"]["Env"], json!(["A=1"]));
        assert_eq!(
            config["rootfs"]["diff_ids"],
            json!([layer.diff_id.to_string()])
        );
        let history = config["history"].as_array().unwrap();
        assert_eq!(history.len(), 3);
        assert_eq!(history[1]["empty_layer"], true);
        assert_eq!(history[2]["created_by"], "RUN true");
        assert!(history[2].get("empty_layer").is_none());
    }
}
