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

/// How many bytes written through the page cache a writer lets pile up before it starts their
/// writeback (`sync_file_range`), so the fsync at commit has little left to wait for.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// One write to a session's file: big, so the writer thread wakes once per MiB rather than
/// once per network frame (tens of KiB), and page-aligned, so it can go straight to the disk.
const BLOCK: usize = 1 << 20;
/// What `O_DIRECT` asks of a write's buffer, length and file offset (a page covers every
/// logical block size in use).
const ALIGN: usize = 4096;
/// Blocks per writer: one filling while the others wait for or are in the writer thread.
const BLOCKS: usize = 4;

/// Up to [`BLOCK`] bytes in an anonymous mapping of their own: page-aligned, and given back to
/// the kernel when dropped (from the heap, a few MiB per upload stayed with the daemon).
struct Block {
    raw: memmap2::MmapMut,
    len: usize,
    cap: usize,
}

impl Block {
    fn new(cap: usize) -> std::io::Result<Block> {
        Ok(Block {
            raw: memmap2::MmapMut::map_anon(BLOCK)?,
            len: 0,
            cap,
        })
    }

    /// Copies in what fits of `bytes`; returns how much that was.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.cap - self.len);
        self.raw[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[..self.len]
    }
}

/// Writes one request's body into a session on a blocking thread: the network, the hash and
/// the disk work at the same time. [`SessionWriter::finish`] hands the session its state back.
pub struct SessionWriter {
    tx: Option<tokio::sync::mpsc::Sender<Block>>,
    /// Blocks the writer is done with, to fill again.
    free: tokio::sync::mpsc::UnboundedReceiver<Block>,
    filling: Option<Block>,
    made: usize,
    /// A block that could not be made (out of memory): the body stops there.
    failed: Option<std::io::Error>,
    /// The first block's size: whole when the request starts on a page boundary, else just
    /// what reaches the next one (written through the page cache), so the rest goes direct.
    first: Option<usize>,
    task: tokio::task::JoinHandle<(Option<Hasher>, u64, std::io::Result<()>)>,
}

impl SessionWriter {
    /// Queues bytes; false if the writer stopped (its error comes from `finish`).
    pub async fn send(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            let block = match self.filling.take() {
                Some(block) => block,
                None => match self.empty_block().await {
                    Some(block) => block,
                    None => return false,
                },
            };
            let block = self.filling.insert(block);
            bytes = &bytes[block.fill(bytes)..];
            if block.len == block.cap && !self.hand_over().await {
                return false;
            }
        }
        true
    }

    async fn empty_block(&mut self) -> Option<Block> {
        let cap = self.first.take().unwrap_or(BLOCK);
        let mut block = match self.free.try_recv() {
            Ok(block) => block,
            Err(_) if self.made < BLOCKS => match Block::new(cap) {
                Ok(block) => {
                    self.made += 1;
                    block
                }
                // With a block already out, wait for it to come back instead.
                Err(_) if self.made > 0 => self.free.recv().await?,
                Err(e) => {
                    self.failed = Some(e);
                    return None;
                }
            },
            Err(_) => self.free.recv().await?,
        };
        (block.len, block.cap) = (0, cap);
        Some(block)
    }

    /// Sends the block being filled to the writer.
    async fn hand_over(&mut self) -> bool {
        match (self.filling.take(), &self.tx) {
            (Some(block), Some(tx)) if block.len > 0 => tx.send(block).await.is_ok(),
            _ => true,
        }
    }

    /// Waits for the queued bytes to be written and gives the session its new size and hash.
    pub async fn finish(mut self, session: &mut Session) -> Result<u64, UploadError> {
        self.hand_over().await;
        self.tx = None;
        let (hasher, written, result) = self.task.await.map_err(|e| UploadError::Io {
            id: session.id.clone(),
            what: "write",
            source: std::io::Error::other(e),
        })?;
        session.hasher = hasher;
        session.size += written;
        if let Some(source) = self.failed.take() {
            return Err(UploadError::Io {
                id: session.id.clone(),
                what: "make a write buffer",
                source,
            });
        }
        result.map_err(|source| UploadError::Io {
            id: session.id.clone(),
            what: "write",
            source,
        })?;
        Ok(written)
    }
}

/// Writes `bytes` at `at`: directly to the disk where the file system takes `O_DIRECT` and
/// everything is aligned (no copy into freshly allocated page cache, no writeback later),
/// else through the page cache. Returns whether it went through the page cache.
fn write_block(
    file: &std::fs::File,
    direct: &mut Option<std::fs::File>,
    bytes: &[u8],
    at: u64,
) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let aligned = at.is_multiple_of(ALIGN as u64)
        && bytes.len().is_multiple_of(ALIGN)
        && (bytes.as_ptr() as usize).is_multiple_of(ALIGN);
    if let Some(d) = direct.as_ref()
        && aligned
    {
        match d.write_all_at(bytes, at) {
            Ok(()) => return Ok(false),
            // Refused by this file system after all (some FUSE ones open with O_DIRECT, then
            // fail the write): buffered from now on. A short direct write's rest is unaligned
            // and refused too; the buffered write below redoes the whole block.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                *direct = None
            }
            Err(e) => return Err(e),
        }
    }
    file.write_all_at(bytes, at)?;
    Ok(true)
}

/// The writer thread: writes and hashes the blocks from `rx` from `start` on, handing each
/// back on `free`; returns the hash, the bytes written and the first error.
fn write_blocks(
    data: &Path,
    start: u64,
    mut hasher: Option<Hasher>,
    mut rx: tokio::sync::mpsc::Receiver<Block>,
    free: tokio::sync::mpsc::UnboundedSender<Block>,
) -> (Option<Hasher>, u64, std::io::Result<()>) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // Opened per request: an idle (or abandoned) session holds no descriptor.
    let file = match std::fs::OpenOptions::new().write(true).open(data) {
        Ok(f) => f,
        Err(e) => return (hasher, 0, Err(e)),
    };
    // tmpfs and older overlayfs refuse O_DIRECT: their writes all go through the page cache.
    let mut direct = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(data)
        .ok();
    let mut written = 0u64;
    // Page-cache bytes not yet handed to writeback: from, to.
    let mut dirty: Option<(u64, u64)> = None;
    while let Some(block) = rx.blocking_recv() {
        let at = start + written;
        let bytes = block.bytes();
        match write_block(&file, &mut direct, bytes, at) {
            Ok(buffered) => {
                let end = at + bytes.len() as u64;
                if buffered {
                    dirty = Some((dirty.map_or(at, |(from, _)| from), end));
                }
            }
            Err(e) => {
                // A block written in part is cut off again: the file, the size and the hash
                // must agree for the upload to go on.
                let _ = file.set_len(at);
                return (hasher, written, Err(e));
            }
        }
        if let Some(h) = &mut hasher {
            h.update(bytes);
        }
        written += bytes.len() as u64;
        if let Some((from, to)) = dirty
            && to - from >= WRITEBACK_EVERY
        {
            // SAFETY: a plain syscall on a descriptor we own; it only starts writeback.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    from as i64,
                    (to - from) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            dirty = None;
        }
        let _ = free.send(block);
    }
    (hasher, written, Ok(()))
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
        if self.closed {
            return Err(UploadError::Unknown(self.id.clone()));
        }
        let hasher = self.hasher.take();
        let start = self.size;
        let data = self.data();
        let (tx, rx) = tokio::sync::mpsc::channel(BLOCKS - 1);
        let (free_tx, free) = tokio::sync::mpsc::unbounded_channel();
        let task =
            tokio::task::spawn_blocking(move || write_blocks(&data, start, hasher, rx, free_tx));
        Ok(SessionWriter {
            tx: Some(tx),
            free,
            filling: None,
            made: 0,
            failed: None,
            first: Some(match (start % ALIGN as u64) as usize {
                0 => BLOCK,
                off => ALIGN - off,
            }),
            task,
        })
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
        // The running hash holds only if the file holds exactly the bytes it saw (a write whose
        // failed tail could not be cut off leaves more): else the file is hashed again.
        let size = session.size;
        let whole = tokio::fs::metadata(&data)
            .await
            .is_ok_and(|m| m.len() == size);
        let actual = match (expected.algorithm(), session.hasher.take()) {
            (DigestAlgorithm::Sha256, Some(h)) if whole => h.finish(),
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

#[cfg(test)]
mod tests {
    use super::*;

    // A body arrives in frames of odd sizes, over two requests, the first ending off a page
    // boundary (so blocks after it are written at page-aligned offsets again): the file holds
    // exactly the bytes, in order, and the session's running hash is theirs.
    #[tokio::test]
    async fn odd_frames_over_two_requests_land_whole_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::new(dir.path());
        let session = uploads.start("team/app").await.unwrap();
        let mut session = session.lock().await;
        let data: Vec<u8> = (0..(3 << 20) + 12_345u32)
            .map(|i| (i.wrapping_mul(7) ^ (i >> 12)) as u8)
            .collect();
        for part in [&data[..5_000], &data[5_000..]] {
            let mut writer = session.writer().unwrap();
            for frame in part.chunks(33_333) {
                assert!(writer.send(frame).await);
            }
            writer.finish(&mut session).await.unwrap();
        }
        assert_eq!(session.size, data.len() as u64);
        assert!(std::fs::read(session.data()).unwrap() == data);
        let mut expected = Hasher::new(DigestAlgorithm::Sha256);
        expected.update(&data);
        assert_eq!(session.hasher.take().unwrap().finish(), expected.finish());
    }

    // Bytes in the file that the running hash never saw (a failed write's tail that could not
    // be cut off): commit hashes the file again, and a digest of the hashed bytes alone is
    // refused instead of placing a blob with a tail.
    #[tokio::test]
    async fn a_file_longer_than_what_was_hashed_is_hashed_again_at_commit() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::new(dir.path().join("uploads"));
        let blobs = BlobStore::new(dir.path().join("blobs"));
        let session = uploads.start("team/app").await.unwrap();
        let mut session = session.lock().await;
        let mut writer = session.writer().unwrap();
        assert!(writer.send(b"hello").await);
        writer.finish(&mut session).await.unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(session.data())
            .unwrap()
            .write_all(b" and more")
            .unwrap();
        let mut hello = Hasher::new(DigestAlgorithm::Sha256);
        hello.update(b"hello");
        let hello = hello.finish();
        match uploads.commit(&mut session, &hello, &blobs).await {
            Err(UploadError::DigestMismatch { expected, .. }) => assert_eq!(expected, hello),
            other => panic!("committed a file with a tail: {:?}", other.map(|_| ())),
        }
        assert!(!blobs.exists(&hello));
    }
}
