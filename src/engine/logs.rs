//! Reading a container's json-file log (`{"log","stream","time"}` per line, written by the
//! shim): tail, stream selection, timestamps, and following as lines arrive.

use std::path::Path;

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
    /// Only the last N entries (of the selected streams).
    pub tail: Option<usize>,
}

impl LogQuery {
    fn wants(&self, entry: &Entry) -> bool {
        (self.stdout && entry.stream == "stdout") || (self.stderr && entry.stream == "stderr")
    }
}

/// The entries in the file now, and the offset where it ended (to follow from).
pub async fn read(path: &Path, query: &LogQuery) -> std::io::Result<(Vec<Entry>, u64)> {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut reader = tokio::io::BufReader::new(file);
    let mut entries = Vec::new();
    let mut offset = 0u64;
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
            entries.push(entry);
        }
    }
    if let Some(tail) = query.tail
        && entries.len() > tail
    {
        entries.drain(..entries.len() - tail);
    }
    Ok((entries, offset))
}

/// The complete entries appended after `offset`, and the new offset.
pub async fn read_from(
    path: &Path,
    offset: u64,
    query: &LogQuery,
) -> std::io::Result<(Vec<Entry>, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut reader = tokio::io::BufReader::new(file);
    let mut entries = Vec::new();
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
            entries.push(entry);
        }
    }
    Ok((entries, offset))
}
