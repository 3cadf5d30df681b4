//! Writing an image as a `docker save` archive (`manifest.json`, the config, one uncompressed
//! `layer.tar` per layer), which `docker load` and `wharf load` read.

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
