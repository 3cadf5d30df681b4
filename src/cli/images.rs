//! `wharf load`, `wharf import`, `wharf images` and `wharf image inspect`.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use http_body_util::StreamBody;
use hyper::body::{Bytes, Frame};

use super::Format;
use super::client::{ApiClient, ClientError};
use crate::db::ImageSummary;
use crate::domain::percent_encode;
use crate::host::human_bytes;

/// `wharf load`: streams an archive (a file, or stdin) to the daemon and shows its progress.
pub(super) async fn load(
    client: ApiClient,
    input: Option<PathBuf>,
    repository: Option<String>,
    quiet: bool,
) -> Result<(), ClientError> {
    let path = match &repository {
        Some(repo) => format!("/api/v1/images/load?repository={}", percent_encode(repo)),
        None => "/api/v1/images/load".to_owned(),
    };
    send_tar(client, input, &path, quiet, "Loaded image", "load").await
}

/// `wharf import`: streams the tar of a file system (a file, or `-` for stdin) to the daemon,
/// which makes it a one-layer image named `repository`.
pub(super) async fn import(
    client: ApiClient,
    source: PathBuf,
    repository: String,
    quiet: bool,
) -> Result<(), ClientError> {
    let input = (source.as_os_str() != "-").then_some(source);
    let path = format!(
        "/api/v1/images/import?repository={}",
        percent_encode(&repository)
    );
    send_tar(client, input, &path, quiet, "Imported image", "import").await
}

/// `wharf commit`: prints the new image's digest.
pub(super) async fn commit(
    client: ApiClient,
    container: String,
    repository: Option<String>,
    message: Option<String>,
    author: Option<String>,
    pause: bool,
) -> Result<(), ClientError> {
    let made: serde_json::Value = client
        .send_json(
            hyper::Method::POST,
            &format!("/api/v1/containers/{}/commit", percent_encode(&container)),
            &serde_json::json!({
                "repository": repository,
                "comment": message,
                "author": author,
                "no_pause": !pause,
            }),
        )
        .await?;
    println!("{}", made["digest"].as_str().unwrap_or_default());
    Ok(())
}

/// Streams a tar (a file, or stdin) to `path` and shows the progress the daemon reports;
/// `done` labels each image made, `what` names the operation in errors.
async fn send_tar(
    client: ApiClient,
    input: Option<PathBuf>,
    path: &str,
    quiet: bool,
    done: &str,
    what: &str,
) -> Result<(), ClientError> {
    let mut total = 0;
    let mut source: Box<dyn Read + Send> = match &input {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|e| ClientError::Input {
                reason: format!("cannot read {}: {e}", path.display()),
            })?;
            total = file.metadata().map(|m| m.len()).unwrap_or(0);
            Box::new(file)
        }
        None => {
            if std::io::stdin().is_terminal() {
                return Err(ClientError::Input {
                    reason: format!(
                        "give the tar as a file, or pipe it in (docker save IMAGE | wharf load, wharf export C | wharf import - NAME); wharf {what} does not read a terminal"
                    ),
                });
            }
            Box::new(std::io::stdin())
        }
    };
    // The bar shows the bytes sent; the daemon's events (printed by on_line) clear it first.
    let bar = std::sync::Arc::new(std::sync::Mutex::new(DownloadBar::labelled(
        !quiet && std::io::stderr().is_terminal(),
        "sending",
    )));
    let sender_bar = std::sync::Arc::clone(&bar);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        loop {
            match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    sent += n as u64;
                    if let Ok(mut bar) = sender_bar.lock() {
                        bar.update("archive", sent, total);
                    }
                    if tx
                        .blocking_send(Ok(Frame::data(Bytes::copy_from_slice(&buf[..n]))))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut failure = None;
    let mut on_line = |line: &str| {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        if let Ok(mut bar) = bar.lock() {
            bar.clear();
        }
        if let Some(error) = event["error"].as_str() {
            failure = Some(error.to_owned());
            return;
        }
        match event["status"].as_str() {
            Some("stored") if !quiet => eprintln!(
                "stored   {} ({}) {}",
                event["path"].as_str().unwrap_or_default(),
                human_bytes(event["size"].as_u64().unwrap_or(0)),
                short(event["digest"].as_str().unwrap_or_default())
            ),
            Some("unpacked") if !quiet => eprintln!(
                "unpacked {}",
                short(event["layer"].as_str().unwrap_or_default())
            ),
            Some("loaded") => println!("{done}: {}", event["image"].as_str().unwrap_or_default()),
            _ => {}
        }
    };
    let sent = client
        .upload_streaming(path, "application/x-tar", body, &mut on_line)
        .await;
    if let Ok(mut bar) = bar.lock() {
        bar.clear();
    }
    sent?;
    match failure {
        Some(reason) => Err(ClientError::Input {
            reason: format!("{what} failed: {reason}"),
        }),
        None => Ok(()),
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

pub(super) async fn list(
    client: ApiClient,
    format: Format,
    quiet: bool,
) -> Result<(), ClientError> {
    let images: Vec<ImageSummary> = client.get_json("/api/v1/images").await?;
    if quiet {
        for image in &images {
            println!("{}", image.short_id());
        }
        return Ok(());
    }
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&images).expect("images serialize")
        );
        return Ok(());
    }
    let mut rows = Vec::new();
    for image in &images {
        for (repository, tag) in image.names() {
            rows.push(vec![
                repository,
                tag,
                image.short_id().to_owned(),
                format!("{}/{}", image.os, image.architecture),
                human_bytes(image.size.max(0) as u64),
            ]);
        }
    }
    super::print_table(
        &["REPOSITORY", "TAG", "IMAGE ID", "PLATFORM", "SIZE"],
        &rows,
    );
    Ok(())
}

pub(crate) async fn inspect(client: ApiClient, name: String) -> Result<(), ClientError> {
    let detail: serde_json::Value = client
        .get_json(&format!(
            "/api/v1/images/inspect?name={}",
            percent_encode(&name)
        ))
        .await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&detail).expect("JSON serializes")
    );
    Ok(())
}

pub(super) async fn history(
    client: ApiClient,
    name: String,
    format: Format,
    no_trunc: bool,
) -> Result<(), ClientError> {
    let steps: Vec<serde_json::Value> = client
        .get_json(&format!(
            "/api/v1/images/history?name={}",
            percent_encode(&name)
        ))
        .await?;
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&steps).expect("JSON serializes")
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|step| {
            let created_by = step["created_by"].as_str().unwrap_or("");
            let created_by = if no_trunc || created_by.chars().count() <= 60 {
                created_by.to_owned()
            } else {
                format!("{}…", created_by.chars().take(59).collect::<String>())
            };
            vec![
                step["layer"]
                    .as_str()
                    .map_or("<none>".to_owned(), |d| short(d).to_owned()),
                step["created"].as_str().unwrap_or("").to_owned(),
                created_by,
                human_bytes(step["size"].as_u64().unwrap_or(0)),
                step["comment"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    super::print_table(
        &["LAYER", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        &rows,
    );
    Ok(())
}

pub(super) async fn tag(
    client: ApiClient,
    source: String,
    target: String,
) -> Result<(), ClientError> {
    let body = serde_json::json!({"source": source, "target": target});
    client
        .send(hyper::Method::POST, "/api/v1/images/tag", Some(&body))
        .await
}

pub(super) async fn remove(
    client: ApiClient,
    names: Vec<String>,
    force: bool,
) -> Result<(), ClientError> {
    for name in names {
        let path = format!(
            "/api/v1/images?name={}&force={force}",
            percent_encode(&name)
        );
        let removed: serde_json::Value = client
            .send_json(hyper::Method::DELETE, &path, &serde_json::json!({}))
            .await?;
        if let Some(untagged) = removed["untagged"].as_str() {
            println!("Untagged: {untagged}");
        }
        if let Some(deleted) = removed["deleted"].as_str() {
            println!("Deleted: {deleted}");
        }
    }
    Ok(())
}

pub(super) async fn save(
    client: ApiClient,
    name: String,
    output: Option<PathBuf>,
    format: String,
) -> Result<(), ClientError> {
    let path = format!(
        "/api/v1/images/save?name={}&format={}",
        percent_encode(&name),
        percent_encode(&format)
    );
    match output {
        Some(file) => {
            let tmp = file.with_extension("partial");
            let mut out = std::fs::File::create(&tmp).map_err(|e| ClientError::Input {
                reason: format!("cannot write {}: {e}", tmp.display()),
            })?;
            client.download(&path, &mut out).await?;
            std::fs::rename(&tmp, &file).map_err(|e| ClientError::Input {
                reason: format!("cannot write {}: {e}", file.display()),
            })?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(ClientError::Input {
                    reason: "refusing to write a tar to a terminal: use --output or a pipe".into(),
                });
            }
            let mut out = std::io::stdout();
            client.download(&path, &mut out).await?;
        }
    }
    Ok(())
}

/// One line on a terminal, redrawn in place: the bytes of all parts (layers downloading, or the
/// one archive being sent) so far. A total of 0 means unknown (an archive piped in).
struct DownloadBar {
    on: bool,
    shown: bool,
    label: &'static str,
    layers: std::collections::BTreeMap<String, (u64, u64)>,
}

impl DownloadBar {
    fn labelled(on: bool, label: &'static str) -> DownloadBar {
        DownloadBar {
            on,
            shown: false,
            label,
            layers: std::collections::BTreeMap::new(),
        }
    }

    fn update(&mut self, digest: &str, current: u64, total: u64) {
        if !self.on {
            return;
        }
        self.layers.insert(digest.to_owned(), (current, total));
        let (done, all) = self
            .layers
            .values()
            .fold((0, 0), |(d, a), (c, t)| (d + c, a + t));
        const WIDTH: u64 = 30;
        if all == 0 {
            eprint!("\r\x1b[K{} {}", self.label, human_bytes(done));
        } else {
            let filled = (done.min(all) * WIDTH).checked_div(all).unwrap_or(0) as usize;
            let parts = match self.layers.len() {
                1 => String::new(),
                n => format!(" ({n} layers)"),
            };
            eprint!(
                "\r\x1b[K{} [{}{}] {} / {}{parts}",
                self.label,
                "#".repeat(filled),
                ".".repeat(WIDTH as usize - filled),
                human_bytes(done),
                human_bytes(all),
            );
        }
        self.shown = true;
    }

    /// Clears the line before other output.
    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
            self.shown = false;
        }
    }
}

/// POSTs `body` to `path` and shows the NDJSON progress that streams back: events of status
/// `moving` (bytes so far of a blob) drive a bar labelled `label`; every other event goes to
/// `show` once the bar is cleared; an `error` fails the operation `what`.
async fn post_with_progress(
    client: ApiClient,
    path: &str,
    body: serde_json::Value,
    quiet: bool,
    (label, moving, what): (&'static str, &str, &str),
    mut show: impl FnMut(&serde_json::Value),
) -> Result<(), ClientError> {
    let body = http_body_util::Full::new(Bytes::from(
        serde_json::to_vec(&body).expect("JSON serializes"),
    ));
    let mut failure = None;
    let mut bar = DownloadBar::labelled(!quiet && std::io::stderr().is_terminal(), label);
    let mut on_line = |line: &str| {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        if event["status"] == moving {
            bar.update(
                event["digest"].as_str().unwrap_or_default(),
                event["current"].as_u64().unwrap_or(0),
                event["total"].as_u64().unwrap_or(0),
            );
            return;
        }
        bar.clear();
        match event["error"].as_str() {
            Some(error) => failure = Some(error.to_owned()),
            None => show(&event),
        }
    };
    client
        .upload_streaming(path, "application/json", body, &mut on_line)
        .await?;
    match failure {
        Some(reason) => Err(ClientError::Input {
            reason: format!("{what} failed: {reason}"),
        }),
        None => Ok(()),
    }
}

/// `wharf push`: sends a local image to a registry, with progress on stderr.
pub(super) async fn push(
    client: ApiClient,
    name: String,
    reference: Option<String>,
    quiet: bool,
) -> Result<(), ClientError> {
    let body = serde_json::json!({"name": name, "reference": reference});
    post_with_progress(
        client,
        "/api/v1/images/push",
        body,
        quiet,
        ("pushing", "uploading", "push"),
        |event| match event["status"].as_str() {
            Some("pushed") if !quiet => eprintln!(
                "{} {} ({})",
                if event["existed"] == true {
                    "exists"
                } else {
                    "pushed"
                },
                short(event["digest"].as_str().unwrap_or_default()),
                human_bytes(event["size"].as_u64().unwrap_or(0))
            ),
            Some("done") if event["local"] == true => println!(
                "{} is in this daemon's registry already{}",
                event["reference"].as_str().unwrap_or_default(),
                match event["served_as"].as_str().filter(|s| !s.is_empty()) {
                    Some(name) => format!(": pull it as {name}"),
                    None => " (whose listener is off)".to_owned(),
                }
            ),
            Some("done") => println!(
                "Pushed: {} {}",
                event["reference"].as_str().unwrap_or_default(),
                event["digest"].as_str().unwrap_or_default()
            ),
            _ => {}
        },
    )
    .await
}

pub(super) async fn pull(
    client: ApiClient,
    reference: String,
    quiet: bool,
) -> Result<(), ClientError> {
    post_with_progress(
        client,
        "/api/v1/images/pull",
        serde_json::json!({"reference": reference}),
        quiet,
        ("downloading", "downloading", "pull"),
        |event| match event["status"].as_str() {
            Some("stored") if !quiet => eprintln!(
                "downloaded {} ({})",
                short(event["digest"].as_str().unwrap_or_default()),
                human_bytes(event["size"].as_u64().unwrap_or(0))
            ),
            Some("unpacked") if !quiet => eprintln!(
                "unpacked   {}",
                short(event["layer"].as_str().unwrap_or_default())
            ),
            Some("loaded") => println!("Pulled: {}", event["image"].as_str().unwrap_or_default()),
            Some("done") => println!("Digest: {}", event["digest"].as_str().unwrap_or_default()),
            _ => {}
        },
    )
    .await
}
