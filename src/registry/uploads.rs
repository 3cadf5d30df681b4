//! Blob upload sessions: `<data-root>/uploads/<uuid>/` holds `data` (the bytes so far) and
//! `repository` (whose upload it is). The bytes are hashed as they arrive; the hash lives in
//! memory, and a session found on disk after a restart is hashed again from its file, so an
//! upload survives the daemon. A blob leaves its session only by `commit`: fsynced, its digest
//! verified, and renamed into the content store, so no reader ever sees a partial blob.
//! Sessions untouched for longer than the configured age are reaped.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;

use crate::domain::{Digest, DigestAlgorithm};
use crate::images::store::{BlobStore, Hasher};

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("upload {0} is not known (finished, cancelled or reaped)")]
    Unknown(String),
    #[error("upload {id}: {what}: {source}")]
    Io {
        id: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the uploaded blob's digest is {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
}

/// An upload in progress.
pub struct Session {
    pub id: String,
    pub repository: String,
    dir: PathBuf,
    hasher: Option<Hasher>,
    pub size: u64,
    /// Committed or cancelled: a request that waited for the lock meanwhile must not touch
    /// the file, which may now be a blob in the store.
    closed: bool,
}

/// How many bytes a writer lets pile up in the page cache before it starts their writeback
/// (`sync_file_range`), so the fsync at commit has little left to wait for.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Writes one request's body into a session on a blocking thread: the network, the hash and
/// the disk work at the same time. [`SessionWriter::finish`] hands the session its state back.
pub struct SessionWriter {
    tx: Option<tokio::sync::mpsc::Sender<hyper::body::Bytes>>,
    task: tokio::task::JoinHandle<(Option<Hasher>, u64, std::io::Result<()>)>,
}

impl SessionWriter {
    /// Queues bytes; false if the writer stopped (its error comes from `finish`).
    pub async fn send(&mut self, bytes: hyper::body::Bytes) -> bool {
        match &self.tx {
            Some(tx) => tx.send(bytes).await.is_ok(),
            None => false,
        }
    }

    /// Waits for the queued bytes to be written and gives the session its new size and hash.
    pub async fn finish(mut self, session: &mut Session) -> Result<u64, UploadError> {
        self.tx = None;
        let (hasher, written, result) = self.task.await.map_err(|e| UploadError::Io {
            id: session.id.clone(),
            what: "write",
            source: std::io::Error::other(e),
        })?;
        session.hasher = hasher;
        session.size += written;
        result.map_err(|source| UploadError::Io {
            id: session.id.clone(),
            what: "write",
            source,
        })?;
        Ok(written)
    }
}

impl Session {
    /// Whether the session was committed or cancelled while a request waited for it.
    pub fn closed(&self) -> bool {
        self.closed
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts appending (the caller checked the `Content-Range` against [`Session::size`]).
    pub fn writer(&mut self) -> Result<SessionWriter, UploadError> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        if self.closed {
            return Err(UploadError::Unknown(self.id.clone()));
        }
        let mut hasher = self.hasher.take();
        let start = self.size;
        let data = self.data();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<hyper::body::Bytes>(32);
        let task = tokio::task::spawn_blocking(move || {
            // Opened per request: an idle (or abandoned) session holds no descriptor.
            let mut file = match std::fs::OpenOptions::new().append(true).open(&data) {
                Ok(f) => f,
                Err(e) => return (hasher, 0, Err(e)),
            };
            let (mut written, mut started) = (0u64, 0u64);
            while let Some(chunk) = rx.blocking_recv() {
                if let Err(e) = file.write_all(&chunk) {
                    // A chunk written in part is cut off again: the file, the size and the
                    // hash must agree for the upload to go on.
                    let _ = file.set_len(start + written);
                    return (hasher, written, Err(e));
                }
                if let Some(h) = &mut hasher {
                    h.update(&chunk);
                }
                written += chunk.len() as u64;
                if written - started >= WRITEBACK_EVERY {
                    // SAFETY: a plain syscall on a descriptor we own; it only starts writeback.
                    unsafe {
                        libc::sync_file_range(
                            file.as_raw_fd(),
                            (start + started) as i64,
                            (written - started) as i64,
                            libc::SYNC_FILE_RANGE_WRITE,
                        );
                    }
                    started = written;
                }
            }
            (hasher, written, Ok(()))
        });
        Ok(SessionWriter { tx: Some(tx), task })
    }
}

/// A session in memory: its repository (readable without the session's lock) and the session.
type OpenSession = (String, Arc<Mutex<Session>>);

/// The sessions of one daemon.
pub struct Uploads {
    root: PathBuf,
    /// id → (repository, session); the repository outside the session's lock, so looking a
    /// session up never waits for a long write to it.
    open: Mutex<HashMap<String, OpenSession>>,
}

fn io<'a>(id: &'a str, what: &'static str) -> impl FnOnce(std::io::Error) -> UploadError + 'a {
    move |source| UploadError::Io {
        id: id.to_owned(),
        what,
        source,
    }
}

impl Uploads {
    pub fn new(root: impl Into<PathBuf>) -> Uploads {
        Uploads {
            root: root.into(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session for `repository`.
    pub async fn start(&self, repository: &str) -> Result<Arc<Mutex<Session>>, UploadError> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.root.join(&id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io(&id, "make its directory"))?;
        tokio::fs::write(dir.join("repository"), repository)
            .await
            .map_err(io(&id, "record its repository"))?;
        tokio::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(dir.join("data"))
            .await
            .map_err(io(&id, "make its data file"))?;
        let session = Arc::new(Mutex::new(Session {
            id: id.clone(),
            repository: repository.to_owned(),
            dir,
            hasher: Some(Hasher::new(DigestAlgorithm::Sha256)),
            size: 0,
            closed: false,
        }));
        self.open
            .lock()
            .await
            .insert(id, (repository.to_owned(), Arc::clone(&session)));
        Ok(session)
    }

    /// The session `id` of `repository`: in memory, or found on disk after a restart.
    pub async fn get(
        &self,
        repository: &str,
        id: &str,
    ) -> Result<Arc<Mutex<Session>>, UploadError> {
        let unknown = || UploadError::Unknown(id.to_owned());
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(unknown());
        }
        let known = |open: &HashMap<String, OpenSession>| match open.get(id) {
            Some((owner, _)) if owner != repository => Some(Err(unknown())),
            Some((_, session)) => Some(Ok(Arc::clone(session))),
            None => None,
        };
        if let Some(found) = known(&*self.open.lock().await) {
            return found;
        }
        // Picked up from disk after a restart: hashed without the sessions' lock, which every
        // other upload needs meanwhile.
        let dir = self.root.join(id);
        let owner = tokio::fs::read_to_string(dir.join("repository"))
            .await
            .map_err(|_| unknown())?;
        if owner != repository {
            return Err(unknown());
        }
        let data = dir.join("data");
        let (hasher, size) = {
            let data = data.clone();
            tokio::task::spawn_blocking(move || hash_file(&data))
                .await
                .map_err(|e| io(id, "hash its data")(std::io::Error::other(e)))?
                .map_err(io(id, "hash its data"))?
        };
        let session = Arc::new(Mutex::new(Session {
            id: id.to_owned(),
            repository: repository.to_owned(),
            dir,
            hasher: Some(hasher),
            size,
            closed: false,
        }));
        let mut open = self.open.lock().await;
        // Another request may have picked it up meanwhile: that one is the session.
        if let Some(found) = known(&open) {
            return found;
        }
        open.insert(id.to_owned(), (repository.to_owned(), Arc::clone(&session)));
        Ok(session)
    }

    /// Ends a session and removes its files.
    pub async fn cancel(&self, session: &mut Session) {
        session.closed = true;
        self.open.lock().await.remove(&session.id);
        let _ = tokio::fs::remove_dir_all(&session.dir).await;
    }

    /// Verifies the session's bytes against `expected` and moves them into the store. On a
    /// mismatch the upload is removed (the client starts over), as the spec asks.
    pub async fn commit(
        &self,
        session: &mut Session,
        expected: &Digest,
        blobs: &BlobStore,
    ) -> Result<u64, UploadError> {
        let id = session.id.clone();
        if session.closed {
            return Err(UploadError::Unknown(id));
        }
        let data = session.data();
        let actual = match (expected.algorithm(), session.hasher.take()) {
            (DigestAlgorithm::Sha256, Some(h)) => h.finish(),
            (algorithm, _) => {
                let data = data.clone();
                tokio::task::spawn_blocking(move || {
                    let mut h = Hasher::new(algorithm);
                    let mut f = std::fs::File::open(&data)?;
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let n = f.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                    }
                    Ok::<_, std::io::Error>(h.finish())
                })
                .await
                .map_err(|e| io(&id, "hash its data")(std::io::Error::other(e)))?
                .map_err(io(&id, "hash its data"))?
            }
        };
        let size = session.size;
        let placed = {
            let (blobs, data, expected, actual) = (
                blobs.clone(),
                data.clone(),
                expected.clone(),
                actual.clone(),
            );
            tokio::task::spawn_blocking(move || blobs.place_verified(&data, &expected, &actual))
                .await
                .map_err(|e| io(&id, "store the blob")(std::io::Error::other(e)))?
        };
        self.cancel(session).await;
        match placed {
            Ok(()) => Ok(size),
            Err(crate::images::store::StoreError::DigestMismatch { expected, actual }) => {
                Err(UploadError::DigestMismatch { expected, actual })
            }
            Err(e) => Err(io(&id, "store the blob")(std::io::Error::other(
                e.to_string(),
            ))),
        }
    }

    /// Removes sessions on disk untouched for longer than `age` (not those open right now).
    pub async fn reap(&self, age: Duration) -> usize {
        let open: Vec<String> = self.open.lock().await.keys().cloned().collect();
        let root = self.root.clone();
        let removed = tokio::task::spawn_blocking(move || reap_dir(&root, age, &open))
            .await
            .unwrap_or(0);
        if removed > 0 {
            tracing::info!(removed, "reaped abandoned registry uploads");
        }
        removed
    }

    /// Forgets in-memory sessions idle for longer than `age` and reaps them from disk.
    pub async fn reap_all(&self, age: Duration) -> usize {
        let mut stale = Vec::new();
        {
            let open = self.open.lock().await;
            for (id, (_, session)) in open.iter() {
                if let Ok(s) = session.try_lock()
                    && modified_before(&s.data(), age)
                {
                    stale.push(id.clone());
                }
            }
        }
        {
            let mut open = self.open.lock().await;
            for id in &stale {
                open.remove(id);
            }
        }
        self.reap(age).await
    }
}

fn modified_before(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|d| d > age)
}

fn reap_dir(root: &Path, age: Duration, open: &[String]) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if open.contains(&name) {
            continue;
        }
        let path = entry.path();
        let data = path.join("data");
        let stale = if data.exists() {
            modified_before(&data, age)
        } else {
            modified_before(&path, age)
        };
        if stale && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn hash_file(path: &Path) -> std::io::Result<(Hasher, u64)> {
    let mut h = Hasher::new(DigestAlgorithm::Sha256);
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((h, size))
}
