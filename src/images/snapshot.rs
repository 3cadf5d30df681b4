//! Unpacked layers and the overlay mounts built from them.
//!
//! ```text
//! <data-root>/layers/<chain-id hex>/     one unpacked layer, made visible by an atomic rename
//! <data-root>/layers/.incoming-<uuid>/   a layer being unpacked; never mounted
//! ```
//! A layer is stored once per chain id (its diff id and everything below it), so images that
//! share a base share its directories. A container's root filesystem is an overlay of its image's
//! layers (read-only lowers) with its own upper and work directories. Lowers are added one at a
//! time through the new mount API (`fsconfig` `lowerdir+`), so images of hundreds of layers do
//! not hit the one-page limit of classic mount options.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::unpack::{Limits, UnpackError, Unpacked, decompressed, unpack};
use crate::domain::Digest;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("layer {expected}: the unpacked content hashes to {actual}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
    #[error("overlay mount on {}: {step}: {source}", target.display())]
    Mount {
        target: PathBuf,
        step: String,
        #[source]
        source: io::Error,
    },
}

/// The chain ids of a stack of layers (bottom first), as the OCI image spec defines them.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(below) => super::store::sha256(format!("{below} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Hashes what passes through (the uncompressed tar, for its diff id).
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[derive(Debug, Clone)]
pub struct LayerStore {
    root: PathBuf,
}

impl LayerStore {
    pub fn new(root: impl Into<PathBuf>) -> LayerStore {
        LayerStore { root: root.into() }
    }

    pub fn path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(chain_id.hex())
    }

    pub fn exists(&self, chain_id: &Digest) -> bool {
        self.path(chain_id).is_dir()
    }

    /// Unpacks `blob` as the layer `chain_id` unless it is there already, checking that the
    /// uncompressed content has `diff_id`. Returns the layer's directory.
    pub fn ensure(
        &self,
        chain_id: &Digest,
        diff_id: &Digest,
        blob: impl Read,
        limits: Limits,
    ) -> Result<PathBuf, SnapshotError> {
        let dest = self.path(chain_id);
        if dest.is_dir() {
            return Ok(dest);
        }
        std::fs::create_dir_all(&self.root).map_err(|source| SnapshotError::Io {
            what: "make",
            path: self.root.clone(),
            source,
        })?;
        let incoming = self
            .root
            .join(format!(".incoming-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&incoming).map_err(|source| SnapshotError::Io {
            what: "make",
            path: incoming.clone(),
            source,
        })?;
        let result = (|| {
            let tar = decompressed(blob).map_err(|e| UnpackError::Tar(e.to_string()))?;
            let mut hashing = Hashing {
                inner: tar,
                hasher: Sha256::new(),
            };
            let _: Unpacked = unpack(&mut hashing, &incoming, limits)?;
            // Read what follows the tar's end (padding) so the diff id covers the whole stream.
            io::copy(&mut hashing, &mut io::sink()).map_err(|e| UnpackError::Tar(e.to_string()))?;
            let actual = Digest::parse(&format!(
                "sha256:{}",
                hex::encode(hashing.hasher.finalize())
            ))
            .expect("a hash is a digest");
            if actual != *diff_id {
                return Err(SnapshotError::DiffIdMismatch {
                    expected: diff_id.clone(),
                    actual,
                });
            }
            match std::fs::rename(&incoming, &dest) {
                Ok(()) => Ok(dest.clone()),
                // Another writer finished the same layer first: theirs is as good as ours.
                Err(_) if dest.is_dir() => {
                    let _ = std::fs::remove_dir_all(&incoming);
                    Ok(dest.clone())
                }
                Err(source) => Err(SnapshotError::Io {
                    what: "move into place",
                    path: dest.clone(),
                    source,
                }),
            }
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&incoming);
        }
        result
    }
}

const FSOPEN_CLOEXEC: u32 = 1;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;
const FSMOUNT_CLOEXEC: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 4;

fn cstring(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("paths hold no NUL")
}

/// One layer of an image to mount: its chain id, diff id and blob.
pub struct StackLayer {
    pub chain: Digest,
    pub diff: Digest,
    pub blob: Digest,
}

impl LayerStore {
    /// Mounts an image's layers (`stack`, bottom first; each unpacked from its blob first if
    /// it is not here yet) at `dir/rootfs`, with `dir/upper` and `dir/work` writable. An image
    /// without layers gets the empty lower `dir/empty`. Returns the mount point.
    pub fn mount_stack(
        &self,
        blobs: &super::store::BlobStore,
        stack: &[StackLayer],
        dir: &Path,
    ) -> Result<PathBuf, SnapshotError> {
        let mut lowers = Vec::new();
        for layer in stack.iter().rev() {
            if !self.exists(&layer.chain) {
                let blob = blobs.open(&layer.blob)?;
                self.ensure(&layer.chain, &layer.diff, blob, Limits::default())?;
            }
            lowers.push(self.path(&layer.chain));
        }
        let make = |path: PathBuf| {
            std::fs::create_dir_all(&path)
                .map(|()| path.clone())
                .map_err(|source| SnapshotError::Io {
                    what: "make",
                    path,
                    source,
                })
        };
        if lowers.is_empty() {
            lowers.push(make(dir.join("empty"))?);
        }
        let (upper, work, rootfs) = (
            make(dir.join("upper"))?,
            make(dir.join("work"))?,
            make(dir.join("rootfs"))?,
        );
        mount_overlay(&lowers, &upper, &work, &rootfs)?;
        Ok(rootfs)
    }
}

/// Mounts an overlay at `target`: `lowers` top first (read-only), `upper` and `work` writable.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), SnapshotError> {
    let fail = |step: String| {
        let source = io::Error::last_os_error();
        SnapshotError::Mount {
            target: target.to_owned(),
            step,
            source,
        }
    };
    let fstype = cstring(b"overlay");
    // SAFETY: fsopen with a valid C string; the returned descriptor is owned below.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(fail("fsopen overlay".into()));
    }
    // SAFETY: fs is a fresh descriptor.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let set = |key: &str, value: &Path| -> Result<(), SnapshotError> {
        let k = cstring(key.as_bytes());
        let v = cstring(value.as_os_str().as_bytes());
        // SAFETY: fsconfig on our descriptor with valid C strings.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if rc < 0 {
            Err(fail(format!("{key}={}", value.display())))
        } else {
            Ok(())
        }
    };
    for lower in lowers {
        set("lowerdir+", lower)?;
    }
    set("upperdir", upper)?;
    set("workdir", work)?;
    // The upper directory is read as a layer (commit, build): every change must be in it as
    // plain files, not as a rename redirect or a metadata-only copy whose data stays below,
    // whatever the kernel's defaults say.
    set("redirect_dir", Path::new("off"))?;
    set("metacopy", Path::new("off"))?;
    // SAFETY: fsconfig command without arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    if rc < 0 {
        return Err(fail("create the overlay".into()));
    }
    // SAFETY: fsmount on a created file system context.
    let mnt = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if mnt < 0 {
        return Err(fail("fsmount".into()));
    }
    // SAFETY: mnt is a fresh descriptor.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as i32) };
    let empty = cstring(b"");
    let to = cstring(target.as_os_str().as_bytes());
    // SAFETY: move_mount of our detached mount onto an existing directory path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(fail("attach it".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = super::super::store::sha256(b"a");
        let b = super::super::store::sha256(b"b");
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(
            chain[1],
            super::super::store::sha256(format!("{a} {b}").as_bytes())
        );
    }
}
