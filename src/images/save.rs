//! Writing an image as a `docker save` archive (`manifest.json`, the config, one uncompressed
//! `layer.tar` per layer), which `docker load` and `wharf load` read, or as an OCI image layout
//! tar (`oci-layout`, `index.json`, `blobs/<alg>/<hex>` as stored), which skopeo's
//! `oci-archive:` and `wharf load` read.

use std::io::{self, Read, Seek, Write};
use std::path::Path;

use super::store::{BlobStore, StoreError};
use super::unpack::decompressed;
use crate::db::LayerRecord;
use crate::domain::Digest;

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("writing the archive: {0}")]
    Io(#[from] io::Error),
}

fn add(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    tar.append_data(&mut h, name, data)
}

/// Writes the image (its config and layers, bottom first) named `repo_tags` to `out`, using
/// `scratch` for layers that must be decompressed first (a tar entry needs its size up front).
pub fn save(
    out: impl Write,
    blobs: &BlobStore,
    config: &Digest,
    layers: &[LayerRecord],
    repo_tags: &[String],
    scratch: &Path,
) -> Result<(), SaveError> {
    let mut tar = tar::Builder::new(out);
    let config_name = format!("{}.json", config.hex());
    add(
        &mut tar,
        &config_name,
        blobs.size(config)?,
        blobs.open(config)?,
    )?;
    let mut names = Vec::new();
    for layer in layers {
        let blob = Digest::parse(&layer.blob_digest).expect("recorded digests are valid");
        let diff = Digest::parse(&layer.diff_id).expect("recorded digests are valid");
        let name = format!("{}/layer.tar", diff.hex());
        if blob == diff {
            add(&mut tar, &name, blobs.size(&blob)?, blobs.open(&blob)?)?;
        } else {
            std::fs::create_dir_all(scratch)?;
            let path = scratch.join(format!("layer-{}", uuid::Uuid::new_v4().simple()));
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            std::fs::remove_file(&path)?; // gone when closed
            let size = io::copy(&mut decompressed(blobs.open(&blob)?)?, &mut file)?;
            file.rewind()?;
            add(&mut tar, &name, size, file)?;
        }
        names.push(name);
    }
    let manifest = serde_json::to_vec(
        &serde_json::json!([{"Config": config_name, "RepoTags": repo_tags, "Layers": names}]),
    )
    .expect("manifest.json serializes");
    add(
        &mut tar,
        "manifest.json",
        manifest.len() as u64,
        &manifest[..],
    )?;
    tar.into_inner()?.flush()?;
    Ok(())
}

/// The image as it sits in the store.
pub struct StoredImage<'a> {
    pub manifest: &'a Digest,
    pub manifest_media_type: &'a str,
    pub config: &'a Digest,
    pub layers: &'a [LayerRecord],
}

/// Writes the image as an OCI image layout tar, its blobs byte for byte as stored (so every
/// digest still holds), one `index.json` entry per name in `repo_tags` (or one unnamed entry).
pub fn save_oci(
    out: impl Write,
    blobs: &BlobStore,
    image: &StoredImage<'_>,
    repo_tags: &[String],
) -> Result<(), SaveError> {
    let mut tar = tar::Builder::new(out);
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add(&mut tar, "oci-layout", layout.len() as u64, &layout[..])?;
    let mut written = std::collections::HashSet::new();
    let mut digests = vec![image.config.clone()];
    for layer in image.layers {
        digests.push(Digest::parse(&layer.blob_digest).expect("recorded digests are valid"));
    }
    digests.push(image.manifest.clone());
    for digest in digests {
        if written.insert(digest.clone()) {
            let name = format!("blobs/{}/{}", digest.algorithm_name(), digest.hex());
            add(&mut tar, &name, blobs.size(&digest)?, blobs.open(&digest)?)?;
        }
    }
    let size = blobs.size(image.manifest)?;
    let entry = |annotations: Option<serde_json::Value>| {
        let mut e = serde_json::json!({
            "mediaType": image.manifest_media_type,
            "digest": image.manifest.as_str(),
            "size": size,
        });
        if let Some(a) = annotations {
            e["annotations"] = a;
        }
        e
    };
    let manifests: Vec<serde_json::Value> = if repo_tags.is_empty() {
        vec![entry(None)]
    } else {
        repo_tags
            .iter()
            .map(|name| {
                let tag = match name.rsplit_once(':') {
                    Some((_, t)) if !t.contains('/') => t,
                    _ => "latest",
                };
                entry(Some(serde_json::json!({
                    "org.opencontainers.image.ref.name": tag,
                    "io.containerd.image.name": name,
                })))
            })
            .collect()
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .expect("index.json serializes");
    add(&mut tar, "index.json", index.len() as u64, &index[..])?;
    tar.into_inner()?.flush()?;
    Ok(())
}
