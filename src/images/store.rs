//! The content store: blobs (layers, configs, manifests) by digest, shared by the image store and
//! the registry.
//!
//! ```text
//! <data-root>/blobs/sha256/<ab>/<hex>   verified content, read-only (0444)
//! <data-root>/blobs/.incoming/<uuid>    being written and hashed; never read
//! ```
//! A blob becomes visible only after its bytes hashed to the expected digest, were fsynced and
//! renamed into place. Two writers of one digest both end with the same, correct blob.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256, Sha512};

use crate::domain::{Digest, DigestAlgorithm};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {0} is not in the store")]
    NotFound(Digest),
    #[error("digest mismatch: expected {expected}, the content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("the blob exceeds the size limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the blob has {actual} bytes, not the {expected} expected")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An incremental hash of one of the digest algorithms.
pub(crate) enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub(crate) fn new(algorithm: DigestAlgorithm) -> Hasher {
        match algorithm {
            DigestAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            DigestAlgorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }
    pub(crate) fn finish(self) -> Digest {
        let text = match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        };
        Digest::parse(&text).expect("a hash is a valid digest")
    }
}

/// The SHA-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    let mut h = Hasher::new(DigestAlgorithm::Sha256);
    h.update(bytes);
    h.finish()
}

/// What a write must match.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub digest: Option<Digest>,
    pub size: Option<u64>,
    /// Refuse more bytes than this.
    pub limit: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// The store under `root` (normally `<data-root>/blobs`); directories are made as needed.
    pub fn new(root: impl Into<PathBuf>) -> BlobStore {
        BlobStore { root: root.into() }
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join(digest.algorithm_name())
            .join(&hex[..2])
            .join(hex)
    }

    pub fn exists(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn open(&self, digest: &Digest) -> Result<File, StoreError> {
        File::open(self.path(digest)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(digest.clone()),
            _ => StoreError::Io {
                path: self.path(digest),
                source: e,
            },
        })
    }

    pub fn size(&self, digest: &Digest) -> Result<u64, StoreError> {
        Ok(self
            .open(digest)?
            .metadata()
            .map_err(io_at(&self.path(digest)))?
            .len())
    }

    /// Streams `content` into the store, hashing as it goes (with the expected digest's
    /// algorithm, SHA-256 otherwise); returns the digest and size once it is in place.
    pub fn put(
        &self,
        content: &mut dyn Read,
        expect: &Expect,
    ) -> Result<(Digest, u64), StoreError> {
        let incoming = self.root.join(".incoming");
        std::fs::create_dir_all(&incoming).map_err(io_at(&incoming))?;
        let tmp = incoming.join(uuid::Uuid::new_v4().simple().to_string());
        let result = self.write_then_place(content, expect, &tmp);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn write_then_place(
        &self,
        content: &mut dyn Read,
        expect: &Expect,
        tmp: &Path,
    ) -> Result<(Digest, u64), StoreError> {
        let algorithm = expect
            .digest
            .as_ref()
            .map_or(DigestAlgorithm::Sha256, Digest::algorithm);
        let mut hasher = Hasher::new(algorithm);
        let mut file = File::create(tmp).map_err(io_at(tmp))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_at(tmp)(e)),
            };
            size += n as u64;
            if let Some(limit) = expect.limit.filter(|l| size > *l) {
                return Err(StoreError::TooLarge { limit });
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(io_at(tmp))?;
        }
        if let Some(expected) = expect.size.filter(|e| *e != size) {
            return Err(StoreError::SizeMismatch {
                expected,
                actual: size,
            });
        }
        let actual = hasher.finish();
        if let Some(expected) = &expect.digest
            && *expected != actual
        {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        file.set_permissions(std::fs::Permissions::from_mode(0o444))
            .map_err(io_at(tmp))?;
        file.sync_all().map_err(io_at(tmp))?;
        drop(file);
        let dest = self.path(&actual);
        let dir = dest.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        // Atomic: readers see the old blob (the same bytes) or the new one, never a partial one.
        std::fs::rename(tmp, &dest).map_err(io_at(&dest))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(dir))?;
        Ok((actual, size))
    }

    /// A fresh path in `.incoming/` for a writer that hashes as it goes (see [`place_verified`]).
    ///
    /// [`place_verified`]: BlobStore::place_verified
    pub fn incoming_path(&self) -> Result<PathBuf, StoreError> {
        let incoming = self.root.join(".incoming");
        std::fs::create_dir_all(&incoming).map_err(io_at(&incoming))?;
        Ok(incoming.join(uuid::Uuid::new_v4().simple().to_string()))
    }

    /// Moves a fully written file from `.incoming/` into place as `digest`, which the writer
    /// computed while writing (`actual`); a mismatch removes the file and is an error.
    pub fn place_verified(
        &self,
        tmp: &Path,
        expected: &Digest,
        actual: &Digest,
    ) -> Result<(), StoreError> {
        if expected != actual {
            let _ = std::fs::remove_file(tmp);
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            });
        }
        let dest = self.path(actual);
        // The blob is there already (same digest, same bytes, verified when it came): keep
        // that file, whose readers may have it open, and drop ours.
        if dest.is_file() {
            let _ = std::fs::remove_file(tmp);
            return Ok(());
        }
        let file = File::open(tmp).map_err(io_at(tmp))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o444))
            .map_err(io_at(tmp))?;
        file.sync_all().map_err(io_at(tmp))?;
        let dir = dest.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        std::fs::rename(tmp, &dest).map_err(io_at(&dest))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(dir))
    }

    /// Removes a blob (the registry's and images' garbage collection decide when).
    pub fn delete(&self, digest: &Digest) -> Result<(), StoreError> {
        match std::fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(digest.clone()))
            }
            Err(e) => Err(io_at(&self.path(digest))(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_before_they_appear() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path().join("blobs"));
        let (digest, size) = store.put(&mut &b"hello"[..], &Expect::default()).unwrap();
        assert_eq!(
            digest.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(size, 5);
        assert_eq!(std::fs::read(store.path(&digest)).unwrap(), b"hello");
        assert_eq!(
            store.path(&digest).metadata().unwrap().permissions().mode() & 0o777,
            0o444
        );

        let wrong = sha256(b"other");
        let err = store
            .put(
                &mut &b"hello!"[..],
                &Expect {
                    digest: Some(wrong.clone()),
                    ..Expect::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(
            !store.exists(&wrong) && !store.exists(&sha256(b"hello!")),
            "nothing visible"
        );
        let leftovers = std::fs::read_dir(dir.path().join("blobs/.incoming"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0, "the partial file is removed");

        let err = store
            .put(
                &mut &[0u8; 100][..],
                &Expect {
                    limit: Some(10),
                    ..Expect::default()
                },
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the blob exceeds the size limit of 10 bytes"
        );
        let err = store
            .put(
                &mut &b"abc"[..],
                &Expect {
                    size: Some(4),
                    ..Expect::default()
                },
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "the blob has 3 bytes, not the 4 expected");

        let sha512 = Digest::parse(&format!(
            "sha512:{}",
            "9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca72323c3d99ba5c11d7c7acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043"
        ))
        .unwrap();
        let (d, _) = store
            .put(
                &mut &b"hello"[..],
                &Expect {
                    digest: Some(sha512.clone()),
                    ..Expect::default()
                },
            )
            .unwrap();
        assert_eq!(d, sha512);
    }

    #[test]
    fn concurrent_writers_of_one_digest_end_with_one_good_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path().join("blobs"));
        let content = vec![7u8; 3 << 20];
        let digest = sha256(&content);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let store = store.clone();
                let content = content.clone();
                let digest = digest.clone();
                s.spawn(move || {
                    store
                        .put(
                            &mut &content[..],
                            &Expect {
                                digest: Some(digest),
                                ..Expect::default()
                            },
                        )
                        .unwrap();
                });
            }
        });
        assert_eq!(std::fs::read(store.path(&digest)).unwrap(), content);
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/.incoming"))
                .unwrap()
                .count(),
            0
        );
    }
}
