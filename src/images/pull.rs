//! Pulling images from remote registries with `oci-client`: the manifest (an index picks the
//! host's platform), the config and every layer go into the content store checked against their
//! digests; layers are unpacked once per chain id. Plain `http://` is used only for loopback
//! registries.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::load::{Loaded, Progress};
use super::snapshot::{LayerStore, chain_ids};
use super::store::{BlobStore, Expect};
use super::unpack::Limits;
use crate::db::{LayerRecord, NewImage};
use crate::domain::Digest;

const ACCEPTED: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error("{what}: {reason}")]
    Content { what: String, reason: String },
    #[error(transparent)]
    Credentials(#[from] super::credentials::CredentialError),
}

fn content(what: impl Into<String>) -> impl FnOnce(String) -> PullError {
    let what = what.into();
    move |reason| PullError::Content { what, reason }
}

/// How many layers download at once.
const PARALLEL_DOWNLOADS: usize = 3;

/// Hashes what is written through it (the download, on its way into the store).
struct HashingWriter {
    file: tokio::fs::File,
    hasher: sha2::Sha256,
    written: u64,
    /// The layer being unpacked from the same bytes while they arrive (see [`StreamedUnpack`]).
    tee: Option<tokio::sync::mpsc::Sender<Result<hyper::body::Bytes, ()>>>,
}

/// A layer unpacked while its blob downloads: the download's chunks go through a bounded
/// channel to a blocking task that decompresses and unpacks them, so the network, the hash and
/// the unpacking overlap. The layer becomes visible only when its diff id matches (the unpack
/// checks it), and the pull still fails if the blob's own digest is wrong. A download that had to
/// start over (a registry without range support) abandons the stream, and any layer not made
/// this way is unpacked from the stored blob after the downloads, as before.
struct StreamedUnpack {
    task: tokio::task::JoinHandle<Result<(), String>>,
}

/// The blocking side of the channel, as a `Read`.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<hyper::body::Bytes, ()>>,
    current: hyper::body::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(())) => {
                    return Err(std::io::Error::other(
                        "the download started over; unpacking from the stored blob",
                    ));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        hyper::body::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

impl StreamedUnpack {
    /// Starts unpacking `chain` from what the returned sender is given.
    fn start(
        layers: LayerStore,
        chain: Digest,
        diff: Digest,
    ) -> (
        StreamedUnpack,
        tokio::sync::mpsc::Sender<Result<hyper::body::Bytes, ()>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                current: hyper::body::Bytes::new(),
            };
            layers
                .ensure(&chain, &diff, reader, Limits::default())
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        (StreamedUnpack { task }, tx)
    }
}

impl tokio::io::AsyncWrite for HashingWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use sha2::Digest as _;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.file).poll_write(cx, buf) {
            std::task::Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                this.written += n as u64;
                std::task::Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.file).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

/// Where download tasks send `(digest, bytes so far, total)`.
type DownloadReports = tokio::sync::mpsc::UnboundedSender<(String, u64, u64)>;

/// How often a layer download that breaks off is resumed before the pull fails.
const RESUME_ATTEMPTS: u32 = 4;
/// How many resumes one layer gets in all.
const MAX_RESUMES: u32 = 32;

/// Fetches the blob into `writer`. When the connection breaks off mid-blob, the download goes on
/// from the bytes already written (an HTTP range request); a registry that answers a range with
/// the whole blob starts it over. The caller checks the size and the digest of the result.
async fn fetch_resuming(
    client: &Client,
    reference: &Reference,
    desc: &oci_client::manifest::OciDescriptor,
    writer: &mut HashingWriter,
    report: &DownloadReports,
) -> Result<(), String> {
    let mut reported = 0u64;
    use sha2::Digest as _;
    use tokio::io::AsyncSeekExt;
    use tokio_stream::StreamExt;
    // Breaks in a row without a byte gained, and resumes in all (a registry that sends a byte
    // and hangs up each time must not keep the pull going forever).
    let (mut failures, mut resumes) = (0u32, 0u32);
    loop {
        let offset = writer.written;
        // Err(true, _): the connection failed, worth resuming; Err(false, _): the registry
        // answered with an error, or sent more than the manifest says.
        let outcome: Result<(), (bool, String)> = async {
            let fatal = |e: String| (false, e);
            let broken = |e: String| (true, e);
            let response = client
                .pull_blob_stream_partial(reference, desc, offset, None)
                .await
                .map_err(|e| match e {
                    OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => {
                        broken(e.to_string())
                    }
                    _ => fatal(e.to_string()),
                })?;
            let mut stream = match response {
                oci_client::client::BlobResponse::Partial(stream) => stream,
                oci_client::client::BlobResponse::Full(stream) => {
                    if offset > 0 {
                        // No range support: start over (and abandon the streamed unpack).
                        if let Some(tee) = writer.tee.take() {
                            let _ = tee.send(Err(())).await;
                        }
                        writer
                            .file
                            .set_len(0)
                            .await
                            .map_err(|e| fatal(e.to_string()))?;
                        writer
                            .file
                            .rewind()
                            .await
                            .map_err(|e| fatal(e.to_string()))?;
                        writer.hasher = sha2::Sha256::new();
                        writer.written = 0;
                    }
                    stream
                }
            };
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| broken(e.to_string()))?;
                if writer.written + chunk.len() as u64 > desc.size.max(0) as u64 {
                    return Err(fatal(format!(
                        "the registry sent more than the {} bytes the manifest says",
                        desc.size
                    )));
                }
                writer
                    .write_all(&chunk)
                    .await
                    .map_err(|e| fatal(e.to_string()))?;
                if let Some(tee) = &writer.tee
                    && tee.send(Ok(chunk)).await.is_err()
                {
                    // The unpack stopped (its error is reported after the download).
                    writer.tee = None;
                }
                if writer.written.abs_diff(reported) >= super::load::DOWNLOAD_REPORT_BYTES {
                    reported = writer.written;
                    let _ = report.send((desc.digest.clone(), reported, desc.size.max(0) as u64));
                }
            }
            writer.flush().await.map_err(|e| fatal(e.to_string()))
        }
        .await;
        match outcome {
            Ok(()) => return Ok(()),
            Err((true, e))
                if failures < RESUME_ATTEMPTS
                    && resumes < MAX_RESUMES
                    && writer.written < desc.size as u64 =>
            {
                failures = if writer.written > offset {
                    0
                } else {
                    failures + 1
                };
                resumes += 1;
                tracing::warn!(
                    blob = %desc.digest,
                    at = writer.written,
                    of = desc.size,
                    error = %e,
                    "layer download broke off; resuming"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200 << failures.min(4))).await;
            }
            Err((_, e)) => return Err(e),
        }
    }
}

/// Downloads one blob straight into the store's `.incoming/`, hashing as it arrives, and moves
/// it into place only if it has the expected digest and size.
#[allow(clippy::too_many_arguments)]
async fn download(
    client: &Client,
    reference: &Reference,
    desc: &oci_client::manifest::OciDescriptor,
    blob: &Digest,
    blobs: &BlobStore,
    report: &DownloadReports,
    unpack: Option<(LayerStore, Digest, Digest)>,
) -> Result<u64, String> {
    use sha2::Digest as _;
    let tmp = blobs.incoming_path().map_err(|e| e.to_string())?;
    let file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| e.to_string())?;
    let (streamed, tee) = match unpack {
        Some((layers, chain, diff)) if !layers.exists(&chain) => {
            let (streamed, tx) = StreamedUnpack::start(layers, chain, diff);
            (Some(streamed), Some(tx))
        }
        _ => (None, None),
    };
    let mut writer = HashingWriter {
        file,
        hasher: sha2::Sha256::new(),
        written: 0,
        tee,
    };
    let result = async {
        let fetched = fetch_resuming(client, reference, desc, &mut writer, report).await;
        // End the unpack's stream and wait for it. A failed one leaves no layer, and is done
        // again from the stored blob after the downloads, which reports why.
        writer.tee = None;
        if let Some(streamed) = streamed {
            let _ = streamed.task.await;
        }
        fetched?;
        if writer.written != desc.size as u64 {
            return Err(format!(
                "{} bytes arrived, the manifest says {}",
                writer.written, desc.size
            ));
        }
        let actual = Digest::parse(&format!(
            "sha256:{}",
            hex::encode(writer.hasher.clone().finalize())
        ))
        .map_err(|e| e.to_string())?;
        let (blobs, tmp, expected) = (blobs.clone(), tmp.clone(), blob.clone());
        tokio::task::spawn_blocking(move || {
            blobs
                .place_verified(&tmp, &expected, &actual)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result.map(|()| writer.written)
}

/// Whether `registry` may be reached over plain HTTP: a loopback one, or one the admin listed
/// (`insecure_registries`, normalized like credential hosts).
pub fn plain_http_allowed(registry: &str, insecure: &[String]) -> bool {
    is_loopback(registry)
        || super::credentials::normalize_host(registry).is_ok_and(|h| insecure.contains(&h))
}

/// Whether a registry host is a loopback address (or `localhost`).
fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            registry
        }
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why a registry cannot even be asked.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error(transparent)]
    Credentials(#[from] super::credentials::CredentialError),
}

impl From<ConnectError> for PullError {
    fn from(e: ConnectError) -> PullError {
        match e {
            ConnectError::Reference { reference, reason } => {
                PullError::Reference { reference, reason }
            }
            ConnectError::Credentials(e) => PullError::Credentials(e),
        }
    }
}

/// A registry to talk to: the client (plain HTTP only where [`plain_http_allowed`]), the
/// daemon's login for it from `wharf login`, and how its failures read.
pub struct Remote {
    pub client: Client,
    pub auth: RegistryAuth,
    pub reference: Reference,
    /// The registry's host, as requests go to it.
    pub registry: String,
    has_login: bool,
}

impl Remote {
    pub fn connect(
        reference: &str,
        credentials: &super::credentials::CredentialStore,
        insecure_registries: &[String],
    ) -> Result<Remote, ConnectError> {
        let parsed: Reference =
            reference
                .parse()
                .map_err(|e: oci_client::ParseError| ConnectError::Reference {
                    reference: reference.to_owned(),
                    reason: e.to_string(),
                })?;
        let registry = parsed.resolve_registry().to_owned();
        let insecure = if plain_http_allowed(&registry, insecure_registries) {
            vec![registry.clone()]
        } else {
            Vec::new()
        };
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            ..ClientConfig::default()
        });
        let auth = match credentials.get(parsed.registry())? {
            Some(login) => RegistryAuth::Basic(login.username, login.password),
            None => RegistryAuth::Anonymous,
        };
        Ok(Remote {
            client,
            has_login: !matches!(auth, RegistryAuth::Anonymous),
            auth,
            reference: parsed,
            registry,
        })
    }

    /// A failure of the registry's, with what to do when it refused: `refused` says what to
    /// do when a stored login was refused (`REGISTRY` is replaced by the registry's name).
    pub fn failure(&self, e: &OciDistributionError, refused: &str) -> String {
        // A refusal comes as UnauthorizedError or, from a HEAD, as a bare 401 status.
        let unauthorized = matches!(e, OciDistributionError::UnauthorizedError { .. })
            || e.to_string().contains("401 Unauthorized");
        let hint = match (unauthorized, self.has_login) {
            (true, false) => format!(
                " (401: the registry wants a login; give the daemon one with `wharf login {}`)",
                self.reference.registry()
            ),
            (true, true) => format!(
                " (401: the registry refused the stored login; {})",
                refused.replace("REGISTRY", self.reference.registry())
            ),
            _ => String::new(),
        };
        format!("{e}{hint}")
    }
}

/// Where pulled content goes.
pub struct PullTarget {
    pub blobs: BlobStore,
    pub layers: LayerStore,
    /// Logins from `wharf login REGISTRY`; a registry without one is pulled anonymously.
    pub credentials: super::credentials::CredentialStore,
    /// Registries the admin lets pull reach over plain HTTP (besides loopback ones).
    pub insecure_registries: Vec<String>,
}

/// Pulls `reference` and returns the image for the database (named by the reference).
pub async fn pull(
    reference: &str,
    target: &PullTarget,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Loaded, PullError> {
    let connected = Remote::connect(reference, &target.credentials, &target.insecure_registries)?;
    let Remote {
        client,
        auth,
        reference: parsed,
        registry,
        ..
    } = &connected;
    let remote = |e: OciDistributionError| PullError::Registry {
        registry: registry.clone(),
        reason: connected.failure(&e, "renew it with `wharf login REGISTRY`"),
    };
    let (mut bytes, mut digest) = client
        .pull_manifest_raw(parsed, auth, &ACCEPTED)
        .await
        .map_err(remote)?;
    let mut manifest: Value =
        serde_json::from_slice(&bytes).map_err(|e| content("the manifest")(e.to_string()))?;
    let mut by_digest = parsed.clone();
    if manifest["manifests"].is_array() {
        // An index: take this host's platform.
        let arch = crate::host::oci_architecture(std::env::consts::ARCH);
        let chosen = manifest["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
            .and_then(|m| m["digest"].as_str())
            .ok_or_else(|| {
                content(format!("the index {digest}"))(format!("no manifest for linux/{arch}"))
            })?
            .to_owned();
        by_digest = parsed.clone_with_digest(chosen.clone());
        (bytes, digest) = client
            .pull_manifest_raw(&by_digest, auth, &ACCEPTED)
            .await
            .map_err(remote)?;
        manifest =
            serde_json::from_slice(&bytes).map_err(|e| content("the manifest")(e.to_string()))?;
    } else {
        by_digest = by_digest.clone_with_digest(digest.clone());
    }
    let manifest_digest =
        Digest::parse(&digest).map_err(|e| content("the manifest digest")(e.to_string()))?;
    target
        .blobs
        .put(
            &mut &bytes[..],
            &Expect {
                digest: Some(manifest_digest.clone()),
                ..Expect::default()
            },
        )
        .map_err(|e| content(format!("manifest {digest}"))(e.to_string()))?;
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or(ACCEPTED[0])
        .to_owned();

    let descriptor = |v: &Value| -> Result<oci_client::manifest::OciDescriptor, PullError> {
        serde_json::from_value(v.clone()).map_err(|e| content("a descriptor")(e.to_string()))
    };
    let config_desc = descriptor(&manifest["config"])?;
    let config_digest = Digest::parse(&config_desc.digest)
        .map_err(|e| content("the config digest")(e.to_string()))?;
    let mut config_bytes = Vec::new();
    client
        .pull_blob(&by_digest, &config_desc, &mut config_bytes)
        .await
        .map_err(remote)?;
    target
        .blobs
        .put(
            &mut &config_bytes[..],
            &Expect {
                digest: Some(config_digest.clone()),
                ..Expect::default()
            },
        )
        .map_err(|e| content(format!("config {config_digest}"))(e.to_string()))?;
    let config: Value =
        serde_json::from_slice(&config_bytes).map_err(|e| content("the config")(e.to_string()))?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            Digest::parse(d.as_str().unwrap_or_default())
                .map_err(|e| content("a diff id")(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let layer_descs = manifest["layers"].as_array().cloned().unwrap_or_default();
    if layer_descs.len() != diff_ids.len() {
        return Err(content(format!("manifest {digest}"))(format!(
            "{} layers but {} diff ids",
            layer_descs.len(),
            diff_ids.len()
        )));
    }

    let descs = layer_descs
        .iter()
        .map(descriptor)
        .collect::<Result<Vec<_>, _>>()?;
    // Missing layers download in parallel (a few at a time), each straight into the store's
    // incoming directory, hashed on the way and placed only with the right digest and size.
    let mut downloads = tokio::task::JoinSet::new();
    let (report_tx, mut report_rx) = tokio::sync::mpsc::unbounded_channel();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(PARALLEL_DOWNLOADS));
    for ((desc, diff), chain) in descs.iter().zip(&diff_ids).zip(chain_ids(&diff_ids)) {
        let blob =
            Digest::parse(&desc.digest).map_err(|e| content("a layer digest")(e.to_string()))?;
        if target.blobs.exists(&blob) {
            continue;
        }
        let unpack = Some((target.layers.clone(), chain, diff.clone()));
        let (client, reference, desc, blobs) = (
            client.clone(),
            by_digest.clone(),
            desc.clone(),
            target.blobs.clone(),
        );
        let slots = std::sync::Arc::clone(&slots);
        let report = report_tx.clone();
        downloads.spawn(async move {
            let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
            let result = download(&client, &reference, &desc, &blob, &blobs, &report, unpack).await;
            result
                .map(|size| (blob, size))
                .map_err(|e| format!("layer {}: {e}", desc.digest))
        });
    }
    drop(report_tx);
    loop {
        let done = tokio::select! {
            Some((digest, current, total)) = report_rx.recv() => {
                progress(Progress::Downloading { digest, current, total });
                continue;
            }
            done = downloads.join_next() => match done {
                Some(done) => done,
                None => break,
            },
        };
        let (blob, size) = done
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|reason| PullError::Registry {
                registry: registry.clone(),
                reason,
            })?;
        progress(Progress::Stored {
            path: format!("{registry}/{}", parsed.repository()),
            digest: blob.to_string(),
            size,
        });
    }
    let mut records = Vec::new();
    for ((desc, diff), chain) in descs.iter().zip(&diff_ids).zip(chain_ids(&diff_ids)) {
        let blob =
            Digest::parse(&desc.digest).map_err(|e| content("a layer digest")(e.to_string()))?;
        let layers = target.layers.clone();
        let blobs = target.blobs.clone();
        let (c, d, b) = (chain.clone(), diff.clone(), blob.clone());
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            if layers.exists(&c) {
                return Ok(());
            }
            let file = blobs.open(&b).map_err(|e| e.to_string())?;
            layers
                .ensure(&c, &d, file, Limits::default())
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(content(format!("layer {blob}")))?;
        progress(Progress::Unpacked {
            layer: blob.to_string(),
            chain_id: chain.to_string(),
        });
        records.push(LayerRecord {
            blob_digest: blob.to_string(),
            diff_id: diff.to_string(),
            chain_id: chain.to_string(),
            size: desc.size,
            media_type: desc.media_type.clone(),
        });
    }
    let repository = format!("{}/{}", parsed.registry(), parsed.repository());
    let tags = parsed
        .tag()
        .map(|t| vec![(repository.clone(), t.to_owned())])
        .unwrap_or_default();
    if let Some((repo, tag)) = tags.first() {
        progress(Progress::Loaded {
            image: format!("{repo}:{tag}"),
            digest: manifest_digest.to_string(),
        });
    }
    Ok(Loaded {
        image: NewImage {
            digest: manifest_digest.to_string(),
            media_type,
            config_digest: config_digest.to_string(),
            size: bytes.len() as i64,
            os: config["os"].as_str().unwrap_or("linux").to_owned(),
            architecture: config["architecture"]
                .as_str()
                .unwrap_or("amd64")
                .to_owned(),
            layers: records,
        },
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::{is_loopback, plain_http_allowed};

    #[test]
    fn listed_insecure_registries_get_plain_http_and_no_others() {
        let listed = vec!["registry.lan:5000".to_owned(), "10.0.0.1".to_owned()];
        assert!(plain_http_allowed("Registry.LAN:5000", &listed));
        assert!(plain_http_allowed("10.0.0.1", &listed));
        assert!(plain_http_allowed("127.0.0.1:5000", &[]));
        assert!(
            !plain_http_allowed("registry.lan:5001", &listed),
            "the port counts"
        );
        assert!(!plain_http_allowed("10.0.0.1:5000", &listed));
        assert!(!plain_http_allowed("registry.lan:5000", &[]));
    }

    #[test]
    fn only_loopback_registries_get_plain_http() {
        for host in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.0.0.2",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry.example:5000", "10.0.0.1:5000", "docker.io"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
