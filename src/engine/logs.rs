//! Reading a container's json-file log (`{"log","stream","time"}` per line, written by the
//! shim, rotated to `container.log.1`, `.2`, …): tail, stream and time selection, and
//! following as lines arrive, across a rotation.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Which entries to read.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub stdout: bool,
    pub stderr: bool,
    /// Only the last N entries (of the selected ones).
    pub tail: Option<usize>,
    /// Only entries written at or after / before this time.
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
}

impl LogQuery {
    fn wants(&self, entry: &Entry) -> bool {
        let stream =
            (self.stdout && entry.stream == "stdout") || (self.stderr && entry.stream == "stderr");
        if !stream {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Ok(time) = humantime::parse_rfc3339_weak(&entry.time) else {
            return true;
        };
        self.since.is_none_or(|s| time >= s) && self.until.is_none_or(|u| time < u)
    }
}

/// Where a follower stands: the current file (by inode) and how far it has read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Position {
    inode: u64,
    offset: u64,
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The numbers N (1 to 100) of the rotated files `path.N` there are now, oldest (highest)
/// first: one look at the directory, not one per possible name.
async fn rotated_numbers(path: &Path) -> Vec<u32> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Vec::new();
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let mut found: Vec<u32> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse().ok())
            .filter(|n| (1..=100).contains(n))
            .collect();
        found.sort_unstable_by(|a, b| b.cmp(a));
        found
    })
    .await
    .unwrap_or_default()
}

/// Complete lines of `path` from `offset`, the selected ones appended to `out`; the offset
/// after the last complete line.
async fn read_file(
    path: &Path,
    offset: u64,
    query: &LogQuery,
    out: &mut Vec<Entry>,
) -> std::io::Result<u64> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(offset),
        Err(e) => return Err(e),
    };
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut reader = tokio::io::BufReader::new(file);
    let mut offset = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).await?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        offset += n as u64;
        if let Ok(entry) = serde_json::from_str::<Entry>(&line)
            && query.wants(&entry)
        {
            out.push(entry);
        }
    }
    Ok(offset)
}

async fn inode(path: &Path) -> u64 {
    tokio::fs::metadata(path).await.map_or(0, |m| m.ino())
}

/// Every entry in the log files now (oldest file first), and where a follower goes on from.
pub async fn read(path: &Path, query: &LogQuery) -> std::io::Result<(Vec<Entry>, Position)> {
    let mut entries = Vec::new();
    for n in rotated_numbers(path).await {
        read_file(&rotated(path, n), 0, query, &mut entries).await?;
    }
    let inode = inode(path).await;
    let offset = read_file(path, 0, query, &mut entries).await?;
    if let Some(tail) = query.tail
        && entries.len() > tail
    {
        entries.drain(..entries.len() - tail);
    }
    Ok((entries, Position { inode, offset }))
}

/// The entries written since `at`; after a rotation, the rest of the file that was rotated,
/// then the new one.
pub async fn read_from(
    path: &Path,
    at: Position,
    query: &LogQuery,
) -> std::io::Result<(Vec<Entry>, Position)> {
    let mut entries = Vec::new();
    let now = inode(path).await;
    if now != at.inode && at.inode != 0 {
        let previous = rotated(path, 1);
        if inode(&previous).await == at.inode {
            read_file(&previous, at.offset, query, &mut entries).await?;
        }
        let offset = read_file(path, 0, query, &mut entries).await?;
        return Ok((entries, Position { inode: now, offset }));
    }
    let offset = read_file(path, at.offset, query, &mut entries).await?;
    Ok((entries, Position { inode: now, offset }))
}
