//! Loading images from a tar: a `docker save` archive (`manifest.json`) or an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/`). Every file of the tar goes into the content store as it
//! streams by (OCI blobs checked against their names); then the manifests are read, layers are
//! unpacked once per chain id, and the images are returned for the database to record.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path};

use serde_json::Value;

use super::snapshot::{LayerStore, SnapshotError, chain_ids};
use super::store::{BlobStore, Expect, StoreError};
use super::unpack::Limits;
use crate::db::{LayerRecord, NewImage};
use crate::domain::{Digest, ImageRef};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// JSON documents larger than this are not read into memory.
const MAX_JSON: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the archive is not a readable tar: {0}")]
    Tar(String),
    #[error("archive entry {name:?}: {reason}")]
    Entry { name: String, reason: String },
    #[error("the archive has neither manifest.json (docker save) nor index.json (OCI layout)")]
    UnknownFormat,
    #[error("{file}: {reason}")]
    Document { file: String, reason: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Layer(#[from] SnapshotError),
}

fn doc(file: &str, reason: impl std::fmt::Display) -> LoadError {
    LoadError::Document {
        file: file.to_owned(),
        reason: reason.to_string(),
    }
}

/// How many bytes of a download pass between two progress reports.
pub const DOWNLOAD_REPORT_BYTES: u64 = 1 << 20;

/// What happened, for progress output.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Progress {
    /// Bytes of a blob so far (pull reports these every [`DOWNLOAD_REPORT_BYTES`] or so).
    Downloading {
        digest: String,
        current: u64,
        total: u64,
    },
    Stored {
        path: String,
        digest: String,
        size: u64,
    },
    Unpacked {
        layer: String,
        chain_id: String,
    },
    Loaded {
        image: String,
        digest: String,
    },
    /// Bytes of a blob sent so far (push), every [`DOWNLOAD_REPORT_BYTES`] or so.
    Uploading {
        digest: String,
        current: u64,
        total: u64,
    },
    /// A blob the registry has now (`existed`: it had it before the push).
    Pushed {
        digest: String,
        size: u64,
        existed: bool,
    },
}

/// An image ready for the database.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub image: NewImage,
    pub tags: Vec<(String, String)>,
}

/// The files of the archive: where each went in the store, and the small JSON ones' bytes.
#[derive(Default)]
struct Files {
    blobs: HashMap<String, (Digest, u64)>,
    links: HashMap<String, String>,
    json: HashMap<String, Vec<u8>>,
}

impl Files {
    fn blob(&self, path: &str) -> Option<&(Digest, u64)> {
        let mut path = normalize(path)?;
        for _ in 0..8 {
            if let Some(b) = self.blobs.get(&path) {
                return Some(b);
            }
            let target = self.links.get(&path)?;
            let base = Path::new(&path).parent().unwrap_or(Path::new(""));
            path = normalize(&base.join(target).to_string_lossy())?;
        }
        None
    }
}

/// A relative archive path without `.` or `..` (a `..` that would leave the archive is `None`).
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir => {}
            Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Loads every image of `archive`. `repository` names the images of an OCI layout whose
/// `org.opencontainers.image.ref.name` is only a tag (and no `io.containerd.image.name` gives
/// the full name).
pub fn load(
    archive: impl Read,
    blobs: &BlobStore,
    layers: &LayerStore,
    repository: Option<&str>,
    limits: Limits,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Loaded>, LoadError> {
    let mut files = Files::default();
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().map_err(|e| LoadError::Tar(e.to_string()))? {
        let mut entry = entry.map_err(|e| LoadError::Tar(e.to_string()))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if Path::new(&raw)
            .components()
            .all(|c| matches!(c, Component::CurDir | Component::RootDir))
        {
            continue; // the archive's own root, "./"
        }
        let Some(path) = normalize(&raw) else {
            return Err(LoadError::Entry {
                name: raw,
                reason: "the path leaves the archive".into(),
            });
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Some(target) = entry.link_name_bytes() {
                    files
                        .links
                        .insert(path, String::from_utf8_lossy(&target).into_owned());
                }
                continue;
            }
            _ => continue,
        }
        let expected = path
            .strip_prefix("blobs/")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(algorithm, hex)| Digest::parse(&format!("{algorithm}:{hex}")).ok());
        let is_json = path.ends_with(".json") || path == "repositories" || path == "oci-layout";
        let size = entry.size();
        if is_json && size <= MAX_JSON {
            let mut bytes = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| LoadError::Entry {
                    name: path.clone(),
                    reason: e.to_string(),
                })?;
            let (digest, size) = blobs.put(
                &mut &bytes[..],
                &Expect {
                    digest: expected,
                    ..Expect::default()
                },
            )?;
            files.json.insert(path.clone(), bytes);
            files.blobs.insert(path, (digest, size));
            continue;
        }
        let expect = Expect {
            digest: expected,
            size: Some(size),
            limit: Some(limits.max_bytes),
        };
        let (digest, size) = blobs
            .put(&mut entry, &expect)
            .map_err(|e| LoadError::Entry {
                name: path.clone(),
                reason: e.to_string(),
            })?;
        progress(Progress::Stored {
            path: path.clone(),
            digest: digest.to_string(),
            size,
        });
        files.blobs.insert(path, (digest, size));
    }
    let images = if files.json.contains_key("manifest.json") {
        docker_images(&files, blobs)?
    } else if files.json.contains_key("index.json") {
        oci_images(&files, blobs, repository)?
    } else {
        return Err(LoadError::UnknownFormat);
    };
    for loaded in &images {
        unpack_layers(&loaded.image, blobs, layers, limits, progress)?;
        for (repo, tag) in &loaded.tags {
            progress(Progress::Loaded {
                image: format!("{repo}:{tag}"),
                digest: loaded.image.digest.clone(),
            });
        }
    }
    Ok(images)
}

/// `docker import`: the tar of a file system becomes a one-layer image named `reference`, for
/// this host's `architecture`, with the import in its history. The layer goes through the same
/// store and the same hardened unpacking as a loaded image's.
pub fn import(
    filesystem: impl Read,
    reference: &str,
    architecture: &str,
    blobs: &BlobStore,
    layers: &LayerStore,
    limits: Limits,
    progress: &mut dyn FnMut(Progress),
) -> Result<Loaded, LoadError> {
    let mut filesystem = filesystem;
    let (layer, size) = blobs
        .put(
            &mut filesystem,
            &Expect {
                limit: Some(limits.max_bytes),
                ..Expect::default()
            },
        )
        .map_err(|e| LoadError::Entry {
            name: "the imported file system".into(),
            reason: e.to_string(),
        })?;
    progress(Progress::Stored {
        path: "layer.tar".into(),
        digest: layer.to_string(),
        size,
    });
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.to_string()]},
        "history": [{"created": created, "created_by": "wharf import", "comment": "imported from a tar of a file system"}],
    }))
    .expect("JSON");
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": "config.json", "RepoTags": [reference], "Layers": ["layer.tar"]}
    ]))
    .expect("JSON");
    let mut files = Files::default();
    files.blobs.insert(
        "config.json".into(),
        blobs.put(&mut &config[..], &Expect::default())?,
    );
    files.json.insert("config.json".into(), config);
    files.json.insert("manifest.json".into(), manifest);
    files.blobs.insert("layer.tar".into(), (layer, size));
    let loaded = docker_images(&files, blobs)?
        .pop()
        .ok_or_else(|| doc("manifest.json", "no image"))?;
    unpack_layers(&loaded.image, blobs, layers, limits, progress)?;
    for (repo, tag) in &loaded.tags {
        progress(Progress::Loaded {
            image: format!("{repo}:{tag}"),
            digest: loaded.image.digest.clone(),
        });
    }
    Ok(loaded)
}

pub(crate) fn unpack_layers(
    image: &NewImage,
    blobs: &BlobStore,
    layers: &LayerStore,
    limits: Limits,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), LoadError> {
    for layer in &image.layers {
        let chain = Digest::parse(&layer.chain_id).expect("chain ids are digests");
        let diff = Digest::parse(&layer.diff_id).expect("diff ids are digests");
        if !layers.exists(&chain) {
            let blob = blobs
                .open(&Digest::parse(&layer.blob_digest).expect("blob digests are digests"))?;
            layers.ensure(&chain, &diff, blob, limits)?;
        }
        progress(Progress::Unpacked {
            layer: layer.blob_digest.clone(),
            chain_id: layer.chain_id.clone(),
        });
    }
    Ok(())
}

fn parse_json(file: &str, bytes: &[u8]) -> Result<Value, LoadError> {
    serde_json::from_slice(bytes).map_err(|e| doc(file, format!("not valid JSON: {e}")))
}

/// Platform and diff ids of an image config.
fn read_config(name: &str, bytes: &[u8]) -> Result<(String, String, Vec<Digest>), LoadError> {
    let config = parse_json(name, bytes)?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| doc(name, "no rootfs.diff_ids"))?
        .iter()
        .map(|d| {
            d.as_str()
                .and_then(|s| Digest::parse(s).ok())
                .ok_or_else(|| doc(name, format!("invalid diff id {d}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let os = config["os"].as_str().unwrap_or("linux").to_owned();
    let arch = config["architecture"]
        .as_str()
        .unwrap_or("amd64")
        .to_owned();
    Ok((os, arch, diff_ids))
}

fn read_blob(blobs: &BlobStore, digest: &Digest) -> Result<Vec<u8>, LoadError> {
    let mut bytes = Vec::new();
    blobs
        .open(digest)?
        .take(MAX_JSON)
        .read_to_end(&mut bytes)
        .map_err(|e| doc(digest.as_str(), e))?;
    Ok(bytes)
}

fn layer_records(
    diff_ids: &[Digest],
    blobs_of_layers: &[(Digest, u64, String)],
) -> Vec<LayerRecord> {
    let chains = chain_ids(diff_ids);
    blobs_of_layers
        .iter()
        .zip(diff_ids)
        .zip(chains)
        .map(|(((blob, size, media), diff), chain)| LayerRecord {
            blob_digest: blob.to_string(),
            diff_id: diff.to_string(),
            chain_id: chain.to_string(),
            size: *size as i64,
            media_type: media.clone(),
        })
        .collect()
}

fn tag_of(name: &str) -> Result<(String, String), LoadError> {
    let r = ImageRef::parse(name).map_err(|e| doc("manifest.json", e))?;
    Ok((r.repository, r.tag.unwrap_or_else(|| "latest".into())))
}

/// `docker save`: manifest.json lists each image's config, layer tars and names. The layers are
/// the uncompressed tars, so their digests are the diff ids; an OCI manifest is written for them.
fn docker_images(files: &Files, blobs: &BlobStore) -> Result<Vec<Loaded>, LoadError> {
    let manifest = parse_json("manifest.json", &files.json["manifest.json"])?;
    let entries = manifest
        .as_array()
        .ok_or_else(|| doc("manifest.json", "expected a list of images"))?;
    let mut out = Vec::new();
    for entry in entries {
        let config_path = entry["Config"]
            .as_str()
            .ok_or_else(|| doc("manifest.json", "an image without Config"))?;
        let (config_digest, config_size) = files
            .blob(config_path)
            .ok_or_else(|| {
                doc(
                    "manifest.json",
                    format!("the config {config_path} is not in the archive"),
                )
            })?
            .clone();
        let config_bytes = read_blob(blobs, &config_digest)?;
        let (os, architecture, diff_ids) = read_config(config_path, &config_bytes)?;
        let layer_paths = entry["Layers"]
            .as_array()
            .ok_or_else(|| doc("manifest.json", "an image without Layers"))?;
        if layer_paths.len() != diff_ids.len() {
            return Err(doc(
                config_path,
                format!(
                    "{} layers in manifest.json but {} diff ids in the config",
                    layer_paths.len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for path in layer_paths {
            let path = path.as_str().unwrap_or_default();
            let (digest, size) = files
                .blob(path)
                .ok_or_else(|| {
                    doc(
                        "manifest.json",
                        format!("the layer {path} is not in the archive"),
                    )
                })?
                .clone();
            let head = {
                let mut magic = [0u8; 2];
                let _ = blobs.open(&digest)?.read(&mut magic);
                magic
            };
            let media = if head == [0x1f, 0x8b] {
                OCI_LAYER_GZIP
            } else {
                OCI_LAYER
            };
            layers.push((digest, size, media.to_owned()));
        }
        let manifest_json = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size},
            "layers": layers.iter().map(|(d, s, m)| serde_json::json!({"mediaType": m, "digest": d.to_string(), "size": s})).collect::<Vec<_>>(),
        }))
        .expect("a manifest serializes");
        let (manifest_digest, manifest_size) =
            blobs.put(&mut &manifest_json[..], &Expect::default())?;
        let tags = entry["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .map(tag_of)
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Loaded {
            image: NewImage {
                digest: manifest_digest.to_string(),
                media_type: OCI_MANIFEST.into(),
                config_digest: config_digest.to_string(),
                size: manifest_size as i64,
                os,
                architecture,
                layers: layer_records(&diff_ids, &layers),
            },
            tags,
        });
    }
    Ok(out)
}

/// The host's platform in OCI terms.
fn host_platform() -> (&'static str, &'static str) {
    (
        "linux",
        crate::host::oci_architecture(std::env::consts::ARCH),
    )
}

/// OCI image layout: index.json points at manifests (or at indexes, whose entry for this host's
/// platform is taken), every blob already checked against its name.
fn oci_images(
    files: &Files,
    blobs: &BlobStore,
    repository: Option<&str>,
) -> Result<Vec<Loaded>, LoadError> {
    let index = parse_json("index.json", &files.json["index.json"])?;
    let mut out = Vec::new();
    for descriptor in index["manifests"]
        .as_array()
        .ok_or_else(|| doc("index.json", "no manifests"))?
    {
        // containerd and `wharf save` put the full name beside the tag-only ref.name.
        let name = descriptor["annotations"]["io.containerd.image.name"]
            .as_str()
            .or(descriptor["annotations"]["org.opencontainers.image.ref.name"].as_str());
        let mut digest = Digest::parse(descriptor["digest"].as_str().unwrap_or_default())
            .map_err(|e| doc("index.json", e))?;
        let mut media = descriptor["mediaType"]
            .as_str()
            .unwrap_or(OCI_MANIFEST)
            .to_owned();
        let mut bytes = read_blob(blobs, &digest)?;
        if media == OCI_INDEX || media == DOCKER_LIST {
            let nested = parse_json(digest.as_str(), &bytes)?;
            let (os, arch) = host_platform();
            let chosen = nested["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["platform"]["os"] == os && m["platform"]["architecture"] == arch)
                .ok_or_else(|| doc(digest.as_str(), format!("no manifest for {os}/{arch}")))?;
            digest = Digest::parse(chosen["digest"].as_str().unwrap_or_default())
                .map_err(|e| doc(digest.as_str(), e))?;
            media = chosen["mediaType"]
                .as_str()
                .unwrap_or(OCI_MANIFEST)
                .to_owned();
            bytes = read_blob(blobs, &digest)?;
        }
        let manifest = parse_json(digest.as_str(), &bytes)?;
        let config_digest =
            Digest::parse(manifest["config"]["digest"].as_str().unwrap_or_default())
                .map_err(|e| doc(digest.as_str(), e))?;
        let (os, architecture, diff_ids) =
            read_config(config_digest.as_str(), &read_blob(blobs, &config_digest)?)?;
        let mut layers = Vec::new();
        for layer in manifest["layers"]
            .as_array()
            .ok_or_else(|| doc(digest.as_str(), "no layers"))?
        {
            let d = Digest::parse(layer["digest"].as_str().unwrap_or_default())
                .map_err(|e| doc(digest.as_str(), e))?;
            if !blobs.exists(&d) {
                return Err(doc(
                    digest.as_str(),
                    format!("the layer {d} is not in the layout"),
                ));
            }
            layers.push((
                d,
                layer["size"].as_u64().unwrap_or(0),
                layer["mediaType"]
                    .as_str()
                    .unwrap_or(OCI_LAYER_GZIP)
                    .to_owned(),
            ));
        }
        if layers.len() != diff_ids.len() {
            return Err(doc(
                digest.as_str(),
                format!(
                    "{} layers but {} diff ids in the config",
                    layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let tags = match name {
            Some(n) if n.contains(':') || n.contains('/') => vec![tag_of(n)?],
            Some(tag) => match repository {
                Some(repo) => vec![tag_of(&format!("{repo}:{tag}"))?],
                None => {
                    return Err(doc(
                        "index.json",
                        format!(
                            "the image is named only by the tag {tag:?}: give a repository to load it under"
                        ),
                    ));
                }
            },
            None => Vec::new(),
        };
        out.push(Loaded {
            image: NewImage {
                digest: digest.to_string(),
                media_type: media,
                config_digest: config_digest.to_string(),
                size: bytes.len() as i64,
                os,
                architecture,
                layers: layer_records(&diff_ids, &layers),
            },
            tags,
        });
    }
    Ok(out)
}
