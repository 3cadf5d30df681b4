//! `wharf cp`, `wharf export` and `wharf diff`: the client side of a container's files. Tars
//! from a container are untrusted: they are unpacked with the tar crate's `unpack_in`, which
//! keeps every entry (and every link it follows) inside the destination.

use std::io::Write;
use std::path::{Path, PathBuf};

use http_body_util::StreamBody;
use hyper::Method;
use hyper::body::{Bytes, Frame};

use super::client::{ApiClient, ClientError};
use crate::domain::percent_encode;

fn input(reason: impl Into<String>) -> ClientError {
    ClientError::Input {
        reason: reason.into(),
    }
}

/// `CONTAINER:PATH`, or a host path.
enum Location {
    Container { name: String, path: String },
    Host(PathBuf),
}

fn location(arg: &str) -> Location {
    // A host path with a colon can be given as ./a:b, as with docker.
    match arg.split_once(':') {
        Some((name, path)) if !name.is_empty() && !name.contains('/') => Location::Container {
            name: name.to_owned(),
            path: if path.is_empty() {
                "/".into()
            } else {
                path.to_owned()
            },
        },
        _ => Location::Host(PathBuf::from(arg)),
    }
}

fn archive_path(container: &str, action: &str, path: &str) -> String {
    format!(
        "/api/v1/containers/{}/{action}?path={}",
        percent_encode(container),
        percent_encode(path)
    )
}

/// The last name of a path (`/` for the root).
fn base_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into())
}

pub(super) async fn cp(
    client: ApiClient,
    source: String,
    dest: String,
    archive: bool,
) -> Result<(), ClientError> {
    match (location(&source), location(&dest)) {
        (Location::Container { name, path }, Location::Host(to)) => {
            copy_out(&client, &name, &path, &to).await
        }
        (Location::Host(from), Location::Container { name, path }) => {
            copy_in(&client, &from, &name, &path, archive).await
        }
        (Location::Container { .. }, Location::Container { .. }) => Err(input(
            "copying between two containers is not supported: copy through the host",
        )),
        (Location::Host(_), Location::Host(_)) => {
            Err(input("one side must be a container: CONTAINER:PATH"))
        }
    }
}

async fn copy_out(
    client: &ApiClient,
    container: &str,
    path: &str,
    to: &Path,
) -> Result<(), ClientError> {
    if to == Path::new("-") {
        let mut out = std::io::stdout();
        client
            .download(&archive_path(container, "archive", path), &mut out)
            .await?;
        return Ok(());
    }
    let source: serde_json::Value = client
        .get_json(&archive_path(container, "archive/stat", path))
        .await?;
    let source_is_dir = source["is_dir"].as_bool() == Some(true);
    // Into an existing directory, under the source's name; else as `to` itself.
    let (into, rename) = match std::fs::metadata(to) {
        Ok(m) if m.is_dir() => (to.to_owned(), None),
        Ok(_) if source_is_dir => {
            return Err(input(format!(
                "cannot copy directory {container}:{path} onto the file {}",
                to.display()
            )));
        }
        _ => {
            let parent = match to.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            if !parent.is_dir() {
                return Err(input(format!(
                    "{}: the directory to copy into does not exist",
                    parent.display()
                )));
            }
            let name = to
                .file_name()
                .ok_or_else(|| input(format!("{}: give a file name", to.display())))?;
            (parent, Some(name.to_owned()))
        }
    };
    // A renamed copy is unpacked beside its destination first, then moved into place whole.
    let staging = match &rename {
        Some(_) => Some(staging_dir(&into)?),
        None => None,
    };
    let unpack_into = staging.clone().unwrap_or_else(|| into.clone());
    let (reader, mut writer) = std::io::pipe().map_err(|e| input(format!("a pipe: {e}")))?;
    let unpacker = std::thread::spawn(move || -> Result<(), String> {
        let mut archive = tar::Archive::new(reader);
        // Modes, but no set-id or sticky bits: the files come from the container, and this
        // client often runs as root.
        archive.set_preserve_permissions(false);
        archive.set_overwrite(true);
        for entry in archive.entries().map_err(|e| e.to_string())? {
            let mut entry = entry.map_err(|e| e.to_string())?;
            let name = entry.path().map_err(|e| e.to_string())?.into_owned();
            // `false` is an entry that would have left the destination: refused.
            if !entry
                .unpack_in(&unpack_into)
                .map_err(|e| format!("{}: {e}", name.display()))?
            {
                return Err(format!(
                    "{}: the archive tried to write outside the destination",
                    name.display()
                ));
            }
        }
        Ok(())
    });
    let downloaded = client
        .download(&archive_path(container, "archive", path), &mut writer)
        .await;
    drop(writer);
    let unpacked = unpacker
        .join()
        .unwrap_or_else(|_| Err("the unpacking thread failed".into()));
    let finish = || -> Result<(), ClientError> {
        downloaded?;
        unpacked.map_err(|e| input(format!("copying from {container}:{path}: {e}")))?;
        if let (Some(staging), Some(name)) = (&staging, &rename) {
            let top = staging.join(base_name(path));
            let top = if path.trim_end_matches('/').is_empty() {
                staging.clone()
            } else {
                top
            };
            let target = into.join(name);
            if source_is_dir && target.is_dir() {
                return Err(input(format!("{} exists", target.display())));
            }
            std::fs::rename(&top, &target)
                .map_err(|e| input(format!("move the copy to {}: {e}", target.display())))?;
        }
        Ok(())
    };
    let result = finish();
    if let Some(staging) = &staging {
        let _ = std::fs::remove_dir_all(staging);
    }
    result
}

/// A fresh directory in `dir` for a copy on its way to its final name.
fn staging_dir(dir: &Path) -> Result<PathBuf, ClientError> {
    for n in 0..100u32 {
        let candidate = dir.join(format!(".wharf-cp-{}-{n}", std::process::id()));
        match std::fs::create_dir(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(input(format!("cannot write in {}: {e}", dir.display()))),
        }
    }
    Err(input(format!(
        "cannot make a staging directory in {}",
        dir.display()
    )))
}

async fn copy_in(
    client: &ApiClient,
    from: &Path,
    container: &str,
    path: &str,
    archive: bool,
) -> Result<(), ClientError> {
    let meta =
        std::fs::symlink_metadata(from).map_err(|e| input(format!("{}: {e}", from.display())))?;
    let dest = client
        .get_json::<serde_json::Value>(&archive_path(container, "archive/stat", path))
        .await;
    // Into an existing directory under the source's name; else as `path` itself.
    let (into, top) = match dest {
        Ok(st) if st["is_dir"].as_bool() == Some(true) => (
            path.to_owned(),
            from.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| input(format!("{}: give a file or directory", from.display())))?,
        ),
        Ok(_) if meta.is_dir() => {
            return Err(input(format!(
                "cannot copy directory {} onto the file {container}:{path}",
                from.display()
            )));
        }
        Ok(_) | Err(ClientError::Api { .. }) => {
            let parent = Path::new(path)
                .parent()
                .map(|p| p.display().to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into());
            (parent, base_name(path))
        }
        Err(e) => return Err(e),
    };
    let from = from.to_owned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let packer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let sink = FrameWriter { tx };
        let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, sink));
        builder.follow_symlinks(false);
        if meta.is_dir() {
            builder.append_dir_all(&top, &from)?;
        } else {
            builder.append_path_with_name(&from, &top)?;
        }
        builder.into_inner()?.flush()
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut url = archive_path(container, "archive", &into);
    if archive {
        url.push_str("&copy_uid_gid=true");
    }
    let sent = client
        .upload_streaming_as(Method::PUT, &url, "application/x-tar", body, &mut |_| {})
        .await;
    let packed = packer
        .await
        .map_err(|e| input(format!("packing the copy: {e}")))?;
    sent?;
    packed.map_err(|e| input(format!("reading the files to copy: {e}")))
}

/// Hands a tar being written to the request body.
struct FrameWriter {
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
}

impl Write for FrameWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Frame::data(Bytes::copy_from_slice(buf))))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload ended"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) async fn export(
    client: ApiClient,
    container: String,
    output: Option<PathBuf>,
) -> Result<(), ClientError> {
    let url = format!("/api/v1/containers/{}/export", percent_encode(&container));
    match output {
        Some(path) => {
            let mut file = std::fs::File::create(&path)
                .map_err(|e| input(format!("cannot write {}: {e}", path.display())))?;
            client.download(&url, &mut file).await?;
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(input(
                    "the export is a tar: give -o FILE, or redirect the output",
                ));
            }
            client.download(&url, &mut std::io::stdout()).await?;
        }
    }
    Ok(())
}

pub(super) async fn diff(client: ApiClient, container: String) -> Result<(), ClientError> {
    let changes: Vec<serde_json::Value> = client
        .get_json(&format!(
            "/api/v1/containers/{}/changes",
            percent_encode(&container)
        ))
        .await?;
    for change in changes {
        println!(
            "{} {}",
            change["kind"].as_str().unwrap_or("?"),
            change["path"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}
