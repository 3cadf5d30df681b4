//! The container service: containers from images, run by the runtime under one shim each.
//!
//! Owns `<data-root>/containers/<id>/` — `config.json` (the OCI spec) and `rootfs/` (the
//! bundle; an overlay of the image's layers with the container's own `upper/` and `work/`),
//! `container.log` (json-file) and `exit.json`, both written by the shim ([`shim`]) — and the
//! runtime state root `<data-root>/runtime`. The API, the CLI and the dashboard call it; it
//! never forks: each container's shim is a `wharf __shim` process it spawns, and whose end it
//! awaits to record the exit and release the rootfs.

pub mod archive;
pub mod commit;
pub mod health;
pub mod logs;
pub mod seccomp;
pub mod shim;
pub mod spawn;
pub mod spec;
pub mod user;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Mutex, watch};
use utoipa::ToSchema;

use crate::config::DataRoot;
use crate::db::{ContainerRow, Db, DbError};
use crate::domain::{Digest, ImageRef};
use crate::images::snapshot::LayerStore;
use crate::images::store::BlobStore;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no such container: {0}")]
    NoContainer(String),
    #[error("no such image: {0} (pull or load it first)")]
    NoImage(String),
    #[error("no such volume: {0}")]
    NoVolume(String),
    #[error("no such network: {0}")]
    NoNetwork(String),
    #[error("{0}")]
    Invalid(String),
    #[error("container {name} is {state}: {hint}")]
    WrongState {
        name: String,
        state: String,
        hint: &'static str,
    },
    #[error("container {name} did not start: {reason}")]
    Start { name: String, reason: String },
    #[error("{what}: {reason}")]
    Io { what: String, reason: String },
    #[error(transparent)]
    Database(#[from] DbError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let what = what.into();
    move |e| EngineError::Io {
        what,
        reason: e.to_string(),
    }
}

/// What a container is made with (the parts of `docker run` supported so far).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContainerConfig {
    /// Image reference: a local name (`busybox:latest`), `name@sha256:…` or a digest.
    pub image: String,
    /// Replaces the image's CMD.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Replaces the image's ENTRYPOINT (an empty list keeps it).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// `KEY=VALUE`, added to (and overriding) the image's.
    #[serde(default)]
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `uid[:gid]`.
    pub user: Option<String>,
    pub hostname: Option<String>,
    /// Remove the container when it ends.
    #[serde(default)]
    pub auto_remove: bool,
    /// `no` (default), `always`, `on-failure[:N]` or `unless-stopped`.
    pub restart: Option<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Memory plus swap in bytes (-1: unlimited swap).
    pub memory_swap: Option<i64>,
    /// CPU quota in billionths of a CPU (`--cpus 1.5` is 1500000000).
    pub nano_cpus: Option<i64>,
    /// Relative CPU weight (docker's shares, default 1024).
    pub cpu_shares: Option<u64>,
    /// Process limit (default 2048; 0 or less: unlimited).
    pub pids_limit: Option<i64>,
    /// Mount the root filesystem read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Run the built-in init as PID 1 (reaps zombies, forwards signals).
    #[serde(default)]
    pub init: bool,
    /// `SOURCE:TARGET[:OPTIONS]`: SOURCE an absolute host path (a bind mount) or a volume name
    /// (made under the data root on first use, kept until removed; a new volume gets the
    /// image's files at TARGET unless `nocopy`); or `TARGET` alone, an anonymous volume.
    /// OPTIONS: `ro`, `rw`, `nocopy`, comma-separated.
    #[serde(default)]
    pub binds: Vec<String>,
    /// Volumes made for this container alone (`-v /path`, and the image's VOLUMEs): removed
    /// with it by `rm -v` and `--rm`. Filled in by create.
    #[serde(default)]
    pub anonymous_volumes: Vec<String>,
    /// `PATH[:OPTIONS]`: a tmpfs at PATH (options such as `size=64m,mode=1777`).
    #[serde(default)]
    pub tmpfs: Vec<String>,
    /// Capabilities added to, or dropped from, the default 11 (`ALL` for every one).
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `bridge` (the default network), `none`, `host`, `container:NAME`, or a user network;
    /// unset at create: the daemon's default, which create records here.
    pub network: Option<String>,
    /// A fixed address on a user network.
    pub ip: Option<String>,
    /// Name servers for `/etc/resolv.conf` (default: the host's, loopback ones left out).
    #[serde(default)]
    pub dns: Vec<String>,
    /// `NAME:IP` lines for `/etc/hosts`.
    #[serde(default)]
    pub add_hosts: Vec<String>,
    /// More names the container answers to on its user network.
    #[serde(default)]
    pub network_aliases: Vec<String>,
    /// User networks joined besides `network` (`network connect`), joined again at each start.
    #[serde(default)]
    pub extra_networks: Vec<String>,
    /// Published ports: `[ip:][hostport:]port[/tcp|udp]`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Publish every port the image exposes, on free host ports (`-P`).
    #[serde(default)]
    pub publish_all: bool,
    /// The ports the image exposes (`80/tcp`); filled in by create.
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    /// Give the container a terminal (`-t`).
    #[serde(default)]
    pub tty: bool,
    /// Keep its stdin open for attached clients (`-i`).
    #[serde(default)]
    pub open_stdin: bool,
    /// Every capability, no masked or read-only paths, new privileges allowed, no seccomp filter.
    #[serde(default)]
    pub privileged: bool,
    /// docker's `--security-opt`: `seccomp=unconfined`, `seccomp=PROFILE-JSON` (docker's
    /// profile format; the client reads a file given by path), `no-new-privileges[=true|false]`.
    #[serde(default)]
    pub security_opt: Vec<String>,
    /// The signal `stop` sends first (default: the image's STOPSIGNAL, else SIGTERM).
    pub stop_signal: Option<String>,
    /// Run while the container runs: the request's fields over the image's HEALTHCHECK;
    /// create stores the result (`None`: no check).
    pub healthcheck: Option<health::Healthcheck>,
    /// Seconds `stop` waits before SIGKILL (default 10).
    pub stop_timeout: Option<u64>,
    /// Rotate the log at this many bytes (default 10 MiB; 0: never).
    pub log_max_size: Option<u64>,
    /// Log files kept, the current one included (default 3).
    pub log_max_files: Option<u32>,
}

/// A network and the containers on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkView {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    /// The bridge device on the host.
    pub bridge: String,
    pub containers: Vec<NetworkMember>,
}

/// A container on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkMember {
    pub id: String,
    pub name: String,
    pub ip: String,
}

/// What containers and volumes take on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskUsage {
    pub containers: u64,
    pub containers_running: u64,
    /// Bytes of their writable layers.
    pub containers_bytes: u64,
    /// Of which stopped containers hold.
    pub containers_reclaimable_bytes: u64,
    pub volumes: u64,
    pub volumes_unused: u64,
    pub volumes_bytes: u64,
    /// Of which volumes no container names hold.
    pub volumes_reclaimable_bytes: u64,
}

/// A running interactive exec (see [`Engine::exec_interactive`]); its files go with it.
pub struct ExecSession {
    /// The `wharf runtime exec` helper: its exit status is the program's.
    pub child: Option<tokio::process::Child>,
    /// The master end of the program's terminal, with `tty`.
    pub pty: Option<std::os::fd::OwnedFd>,
    files: Vec<PathBuf>,
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A container's files, open for a copy (see [`Engine::files`]).
pub struct ContainerFiles {
    pub root: archive::Root,
    /// The root filesystem mounted for the copy, unmounted on drop.
    mounted: Option<PathBuf>,
    /// Keeps the container from starting while its root filesystem is borrowed.
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for ContainerFiles {
    fn drop(&mut self) {
        if let Some(rootfs) = self.mounted.take() {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Prefix of a removed container's directory until its files are gone (ids are hex).
const REMOVED_PREFIX: &str = ".removed-";

/// Beside a volume's `_data` while the volume has not yet been filled from an image.
const FRESH_VOLUME: &str = "fresh";

/// Log rotation unless a container asks otherwise: 3 files of 10 MiB.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 << 20;
pub const DEFAULT_LOG_MAX_FILES: u32 = 3;

/// One reading of a container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContainerStats {
    pub id: String,
    pub name: String,
    /// When it was read (unix nanoseconds): two readings give the CPU share between them.
    pub read_at_ns: u64,
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub pids_current: u64,
    pub pids_limit: Option<u64>,
    pub oom_kills: u64,
    /// Bytes the container's processes read from and wrote to block devices.
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// Bytes received and sent on its network interfaces (loopback not counted).
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
}

/// Bytes received and sent, from a `/proc/PID/net/dev`, loopback left out.
fn net_bytes(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0, 0);
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let c: Vec<u64> = counters
            .split_whitespace()
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        if c.len() >= 9 {
            rx += c[0];
            tx += c[8];
        }
    }
    (rx, tx)
}

/// A process of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProcessView {
    pub pid: i32,
    pub uid: Option<u32>,
    pub command: String,
}

/// A named volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeView {
    pub name: String,
    /// Its directory on the host.
    pub mountpoint: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Containers (stopped ones too) that mount it.
    pub used_by: Vec<String>,
}

/// What `exec` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `uid[:gid]`.
    pub user: Option<String>,
}

/// A container as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_digest: String,
    pub state: String,
    pub pid: Option<i64>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub restart_count: i64,
    pub config: ContainerConfig,
    /// Its health, when it has a healthcheck.
    pub health: Option<health::Health>,
    /// Its addresses and published ports while it runs (inspect and list fill them in).
    #[serde(default)]
    pub network_settings: Option<NetworkSettings>,
}

/// A running container's place on its networks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkSettings {
    /// Network name to the container's address there.
    pub networks: std::collections::BTreeMap<String, String>,
    pub ports: Vec<crate::db::networks::PortRow>,
}

impl ContainerView {
    /// Its state as `docker ps` tells it: `Up 5m (healthy)`, `Exited (3) 2h ago`, … at `now`
    /// (seconds since the epoch).
    pub fn status_text(&self, now: i64) -> String {
        let ago = |t: i64| {
            let secs = (now - t).max(0) as u64;
            humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
        };
        match (self.state.as_str(), self.started_at, self.finished_at) {
            ("running", Some(t), _) => match &self.health {
                Some(h) if h.status == "starting" => format!("Up {} (health: starting)", ago(t)),
                Some(h) => format!("Up {} ({})", ago(t), h.status),
                None => format!("Up {}", ago(t)),
            },
            ("paused", Some(t), _) => format!("Up {} (Paused)", ago(t)),
            ("exited", _, Some(t)) => {
                format!("Exited ({}) {} ago", self.exit_code.unwrap_or(0), ago(t))
            }
            (state, _, _) => state.to_owned(),
        }
    }

    /// Its published ports as docker shows them: `0.0.0.0:8080->80/tcp`.
    pub fn port_texts(&self) -> Vec<String> {
        self.network_settings
            .iter()
            .flat_map(|n| n.ports.iter())
            .map(|p| {
                format!(
                    "{}:{}->{}/{}",
                    p.host_ip, p.host_port, p.container_port, p.protocol
                )
            })
            .collect()
    }
}

impl From<ContainerRow> for ContainerView {
    fn from(row: ContainerRow) -> Self {
        ContainerView {
            config: serde_json::from_str(&row.config).unwrap_or_default(),
            health: row
                .health
                .as_deref()
                .and_then(|h| serde_json::from_str(h).ok()),
            network_settings: None,
            id: row.id,
            name: row.name,
            image: row.image,
            image_digest: row.image_digest,
            state: row.state,
            pid: row.pid,
            exit_code: row.exit_code,
            error: row.error,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            restart_count: row.restart_count,
        }
    }
}

/// When a container that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    Always,
    /// Only after a non-zero exit; at most N times (0: no limit).
    OnFailure(u32),
    UnlessStopped,
}

impl RestartPolicy {
    pub fn parse(text: Option<&str>) -> Result<RestartPolicy, EngineError> {
        let bad = |t: &str| {
            EngineError::Invalid(format!(
                "restart policy {t:?} is not valid: no, always, on-failure[:N] or unless-stopped"
            ))
        };
        match text.unwrap_or("no") {
            "" | "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure(0)),
            t => match t.strip_prefix("on-failure:") {
                Some(n) => n.parse().map(RestartPolicy::OnFailure).map_err(|_| bad(t)),
                None => Err(bad(t)),
            },
        }
    }

    /// Whether a container that ended with `code` after `restarts` restarts goes again.
    fn restarts(self, code: i64, restarts: i64, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure(max) => code != 0 && (max == 0 || restarts < i64::from(max)),
        }
    }
}

/// The first restart delay; it doubles up to [`RESTART_MAX_DELAY`], and starts over once a
/// container has run for [`RESTART_RESET_AFTER`].
pub const RESTART_FIRST_DELAY: Duration = Duration::from_millis(100);
pub const RESTART_MAX_DELAY: Duration = Duration::from_secs(60);
pub const RESTART_RESET_AFTER: Duration = Duration::from_secs(10);

/// The container service of one daemon.
#[derive(Debug, Clone)]
pub struct Engine {
    db: Db,
    networks: Arc<crate::network::Networks>,
    /// The network of containers that name none.
    default_network: String,
    layout: DataRoot,
    /// The wharf binary that runs shims.
    exe: PathBuf,
    /// Starts shims (with a spare one waiting).
    shims: Arc<spawn::Shims>,
    /// Exit codes of running containers, for `wait` and `stop`.
    exits: Arc<Mutex<HashMap<String, watch::Receiver<Option<i64>>>>>,
    /// The next restart delay of each container its policy restarts.
    delays: Arc<Mutex<HashMap<String, Duration>>>,
    /// One start at a time per container (a user's and a restart's must not both mount it).
    starting: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
}

/// How long `stop` waits after the stop signal before SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Engine {
    pub fn new(
        db: Db,
        layout: DataRoot,
        exe: PathBuf,
        networks: Arc<crate::network::Networks>,
        default_network: String,
    ) -> Engine {
        Engine {
            db,
            networks,
            default_network,
            layout,
            shims: spawn::Shims::new(exe.clone()),
            exe,
            exits: Arc::new(Mutex::new(HashMap::new())),
            delays: Arc::new(Mutex::new(HashMap::new())),
            starting: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.layout.root().join("containers").join(id)
    }

    /// Where a removed container's directory waits to be deleted.
    fn removed_dir(&self, id: &str) -> PathBuf {
        self.layout
            .root()
            .join("containers")
            .join(format!("{REMOVED_PREFIX}{id}"))
    }

    /// Deletes the files of containers removed while an earlier daemon was stopping.
    async fn sweep_removed(&self) {
        let Ok(mut entries) = tokio::fs::read_dir(self.layout.root().join("containers")).await
        else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(REMOVED_PREFIX)
                && let Err(e) = tokio::fs::remove_dir_all(entry.path()).await
            {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a removed container's files");
            }
        }
    }

    fn runtime_root(&self) -> PathBuf {
        self.layout.root().join("runtime")
    }

    pub async fn get(&self, key: &str) -> Result<ContainerRow, EngineError> {
        self.db
            .find_container(key)
            .await?
            .ok_or_else(|| EngineError::NoContainer(key.to_owned()))
    }

    /// Creates a container (not started) and returns its row.
    pub async fn create(
        &self,
        name: Option<&str>,
        config: ContainerConfig,
    ) -> Result<ContainerRow, EngineError> {
        // A bare digest names an image by its manifest, as `name@digest` does.
        let reference = match Digest::parse(&config.image) {
            Ok(digest) => ImageRef {
                repository: String::new(),
                tag: None,
                digest: Some(digest),
            },
            Err(_) => {
                ImageRef::parse(&config.image).map_err(|e| EngineError::Invalid(e.to_string()))?
            }
        };
        let policy = RestartPolicy::parse(config.restart.as_deref())?;
        if config.auto_remove && policy != RestartPolicy::No {
            return Err(EngineError::Invalid(
                "--rm and a restart policy do not go together".into(),
            ));
        }
        let image = self
            .db
            .find_image(
                &reference.repository,
                reference.tag.as_deref(),
                reference.digest.as_ref().map(|d| d.as_str()),
            )
            .await?
            .ok_or_else(|| EngineError::NoImage(config.image.clone()))?;
        let blobs = BlobStore::new(self.layout.blobs());
        let config_digest =
            Digest::parse(&image.config_digest).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let image_config: serde_json::Value = {
            let path = blobs.path(&config_digest);
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(io(format!("read image config {}", path.display())))?;
            serde_json::from_slice(&bytes).map_err(|e| {
                EngineError::Invalid(format!(
                    "the config of image {} is not JSON: {e}",
                    config.image
                ))
            })?
        };
        let id = new_id();
        let name = match name {
            Some(n) => {
                check_name(n)?;
                n.to_owned()
            }
            None => format!("wharf-{}", &id[..12]),
        };
        let mut config = config;
        if config.stop_signal.is_none() {
            config.stop_signal = image_config["config"]["StopSignal"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
        }
        if config.user.is_none() {
            // As docker shows it: the image's USER is the container's unless overridden.
            config.user = image_config["config"]["User"]
                .as_str()
                .filter(|u| !u.is_empty())
                .map(str::to_owned);
        }
        config.exposed_ports = image_config["config"]["ExposedPorts"]
            .as_object()
            .map(|ports| ports.keys().cloned().collect())
            .unwrap_or_default();
        self.check_network(&mut config).await?;
        config.healthcheck = health::effective(
            config.healthcheck.as_ref(),
            &image_config["config"]["Healthcheck"],
        )?;
        if let Some(signal) = &config.stop_signal {
            crate::runtime::container::parse_signal(signal)
                .map_err(|e| EngineError::Invalid(format!("stop signal: {e}")))?;
        }
        if config.privileged {
            tracing::warn!(name = %name, "creating a privileged container: it has every capability and no masked paths");
        }
        self.add_anonymous_volumes(&mut config, &image_config)?;
        let mounts = match self.resolve_binds(&config.binds).await {
            Ok(m) => m,
            Err(e) => {
                self.remove_anonymous_volumes(&config).await;
                return Err(e);
            }
        };
        let made = self
            .create_files(&id, &name, &config, &image, &image_config, &mounts)
            .await;
        if let Err(e) = made {
            self.remove_anonymous_volumes(&config).await;
            return Err(e);
        }
        let row = self.get(&id).await?;
        emit(&self.db, "create", &row, &[]).await;
        Ok(row)
    }

    /// The directory, spec and record of a new container (what fails here leaves nothing).
    async fn create_files(
        &self,
        id: &str,
        name: &str,
        config: &ContainerConfig,
        image: &crate::db::ImageSummary,
        image_config: &serde_json::Value,
        mounts: &[spec::Bind],
    ) -> Result<(), EngineError> {
        let oci = spec::build(id, config, image_config, mounts)?;
        let dir = self.dir(id);
        let made = self.write_bundle(&dir, &oci).await;
        if let Err(e) = made {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
        let stored = serde_json::to_string(&config).expect("a config serializes");
        if let Err(e) = self
            .db
            .insert_container(id, name, &config.image, &image.digest, &stored)
            .await
        {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// The container's directory with its spec (root only: the spec holds its environment).
    async fn write_bundle(
        &self,
        dir: &Path,
        oci: &oci_spec::runtime::Spec,
    ) -> Result<(), EngineError> {
        for sub in ["rootfs", "upper", "work"] {
            tokio::fs::create_dir_all(dir.join(sub))
                .await
                .map_err(io(format!("make {}", dir.join(sub).display())))?;
        }
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(io(format!("restrict {}", dir.display())))?;
        let spec_json = serde_json::to_vec_pretty(&oci).expect("a spec serializes");
        tokio::fs::write(dir.join("config.json"), spec_json)
            .await
            .map_err(io(format!("write {}/config.json", dir.display())))?;
        tokio::fs::set_permissions(
            dir.join("config.json"),
            std::fs::Permissions::from_mode(0o600),
        )
        .await
        .map_err(io(format!("restrict {}/config.json", dir.display())))
    }

    /// Starts a container (a user's start: the restart count starts over).
    pub async fn start(&self, key: &str) -> Result<ContainerRow, EngineError> {
        self.start_as(key, false).await
    }

    /// [`Engine::start`]; with `attach`, the container's output is held until a client
    /// attaches (it means to, right after), so it sees everything from the first byte.
    pub async fn start_as(&self, key: &str, attach: bool) -> Result<ContainerRow, EngineError> {
        let row = self.get(key).await?;
        if !is_up(&row.state) {
            self.db.container_restarts(&row.id, false, false).await?;
            self.delays.lock().await.remove(&row.id);
        }
        self.start_inner(&row.id, attach).await
    }

    /// [`Engine::start_inner`] as a boxed future: a restart starts a container from the task
    /// that watched its end, and the box is what ends that cycle of future types.
    fn start_boxed(
        &self,
        id: String,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<ContainerRow, EngineError>> + Send + '_>,
    > {
        Box::pin(async move { self.start_inner(&id, false).await })
    }

    /// Mounts the rootfs and starts the container under a new shim.
    async fn start_inner(&self, key: &str, hold: bool) -> Result<ContainerRow, EngineError> {
        let row = self.get(key).await?;
        let gate = Arc::clone(
            self.starting
                .lock()
                .await
                .entry(row.id.clone())
                .or_default(),
        );
        let _one_start = gate.lock().await;
        // Read again under the gate: a start that held it may have just made it run.
        let row = self.get(&row.id).await?;
        if is_up(&row.state) {
            return Err(EngineError::WrongState {
                name: row.name,
                state: row.state,
                hint: "it is already running",
            });
        }
        let dir = self.dir(&row.id);
        let config: ContainerConfig = serde_json::from_str(&row.config).unwrap_or_default();
        // A previous run's leftovers go first.
        let _ = tokio::fs::remove_file(dir.join(shim::EXIT_FILE)).await;
        self.mount_rootfs(&row).await?;
        let prepared = match self
            .apply_user(&row, config.user.as_deref().unwrap_or(""))
            .await
        {
            Ok(()) => self.fill_new_volumes(&row, &config).await,
            Err(e) => Err(e),
        };
        let prepared = match prepared {
            Ok(()) => self.connect_network(&row, &config).await,
            Err(e) => Err(e),
        };
        if let Err(e) = prepared {
            self.disconnect_network(&row.id).await;
            self.unmount_rootfs(&row.id).await;
            return Err(e);
        }
        let mut args: Vec<String> = [
            "--id".to_owned(),
            row.id.clone(),
            "--dir".to_owned(),
            dir.display().to_string(),
            "--runtime-root".to_owned(),
            self.runtime_root().display().to_string(),
            "--log-max-size".to_owned(),
            config
                .log_max_size
                .unwrap_or(DEFAULT_LOG_MAX_SIZE)
                .to_string(),
            "--log-max-files".to_owned(),
            config
                .log_max_files
                .unwrap_or(DEFAULT_LOG_MAX_FILES)
                .to_string(),
        ]
        .into();
        for (on, flag) in [
            (config.tty, "--tty"),
            (config.open_stdin, "--stdin"),
            (hold, "--hold"),
        ] {
            if on {
                args.push(flag.to_owned());
            }
        }
        let child = self.shims.spawn(args).await;
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                self.disconnect_network(&row.id).await;
                self.unmount_rootfs(&row.id).await;
                return Err(EngineError::Start {
                    name: row.name.clone(),
                    reason: format!("cannot spawn its shim ({}): {e}", self.exe.display()),
                });
            }
        };
        let stdout = child.stdout.take().expect("piped");
        let mut shim_lines = tokio::io::BufReader::new(stdout);
        let mut first = String::new();
        let _ = shim_lines.read_line(&mut first).await;
        self.shims.refill();
        let report: serde_json::Value = serde_json::from_str(first.trim()).unwrap_or_default();
        let Some(pid) = report["pid"].as_i64() else {
            let _ = child.wait().await;
            self.disconnect_network(&row.id).await;
            self.unmount_rootfs(&row.id).await;
            let reason = report["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| "its shim ended without a word".to_owned());
            self.db
                .container_exited(&row.id, 127, Some(&reason))
                .await?;
            return Err(EngineError::Start {
                name: row.name,
                reason,
            });
        };
        // The end of the container is watched before anything else can fail: whatever
        // happens next, its exit is recorded and its addresses and mounts released.
        let (tx, rx) = watch::channel(None);
        self.exits.lock().await.insert(row.id.clone(), rx);
        {
            let engine = self.clone();
            let id = row.id.clone();
            tokio::spawn(async move {
                // The shim's last line comes once the runtime's state is gone; the shim's own
                // exit is not waited for. Without the line (a shim that died), its exit.json.
                let mut last = String::new();
                let _ = shim_lines.read_line(&mut last).await;
                let reported = serde_json::from_str::<serde_json::Value>(last.trim())
                    .ok()
                    .and_then(|v| v["exit_code"].as_i64());
                let code = match reported {
                    Some(code) => code,
                    None => {
                        let _ = child.wait().await;
                        engine.exit_code_of(&id).await
                    }
                };
                engine.finished(&id, code).await;
                let _ = tx.send(Some(code));
                let _ = child.wait().await;
            });
        }
        self.db.container_started(&row.id, pid).await?;
        emit(&self.db, "start", &row, &[]).await;
        if let Some(check) = config.healthcheck.clone() {
            let fresh = serde_json::to_string(&health::Health::starting()).expect("JSON");
            self.db.set_container_health(&row.id, Some(&fresh)).await?;
            self.watch_health(row.id.clone(), check);
        }
        self.get(&row.id).await
    }

    async fn exit_code_of(&self, id: &str) -> i64 {
        self.recorded_exit(id).await.unwrap_or(255)
    }

    /// The exit code the shim wrote, once the container has ended.
    async fn recorded_exit(&self, id: &str) -> Option<i64> {
        let path = self.dir(id).join(shim::EXIT_FILE);
        tokio::fs::read(&path)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["exit_code"].as_i64())
    }

    /// Live restore: picks up the containers that were running when the daemon last stopped.
    /// Their shims kept them running (and kept writing their logs); one that ended meanwhile
    /// gets the exit code its shim recorded (255 when there is none).
    pub async fn reconcile(&self) -> Result<(), EngineError> {
        self.shims.refill();
        let engine = self.clone();
        tokio::spawn(async move { engine.sweep_removed().await });
        // Published ports of the containers that kept running are taken again.
        if let Err(e) = self.networks.restore().await {
            tracing::error!(error = %e, "could not restore published ports");
        }
        for row in self.db.list_containers(false).await? {
            let (tx, rx) = watch::channel(None);
            self.exits.lock().await.insert(row.id.clone(), rx);
            if let Some(check) = serde_json::from_str::<ContainerConfig>(&row.config)
                .ok()
                .and_then(|c| c.healthcheck)
            {
                self.watch_health(row.id.clone(), check);
            }
            let engine = self.clone();
            tokio::spawn(async move {
                let code = engine.watch_restored(&row.id).await;
                tracing::info!(container = %row.name, exit_code = code, "a restored container ended");
                engine.finished(&row.id, code).await;
                let _ = tx.send(Some(code));
            });
        }
        // Containers whose policy wants them up come back at boot.
        for row in self.db.list_containers(true).await? {
            if is_up(&row.state) {
                continue;
            }
            let policy = serde_json::from_str::<ContainerConfig>(&row.config)
                .ok()
                .and_then(|c| RestartPolicy::parse(c.restart.as_deref()).ok())
                .unwrap_or(RestartPolicy::No);
            let up = policy == RestartPolicy::Always
                || (policy == RestartPolicy::UnlessStopped && !row.stopped_by_user);
            if up && let Err(e) = self.start(&row.id).await {
                tracing::warn!(container = %row.name, error = %e, "could not start at boot");
            }
        }
        Ok(())
    }

    /// Runs the healthcheck of running container `id` every interval until it ends, keeping
    /// its health in the row and telling each change as a `health_status` event.
    fn watch_health(&self, id: String, check: health::Healthcheck) {
        let engine = self.clone();
        tokio::spawn(async move {
            let Some(mut exit) = engine.exit_watch(&id).await else {
                return;
            };
            let begun = std::time::Instant::now();
            let mut state = engine
                .get(&id)
                .await
                .ok()
                .and_then(|r| r.health)
                .and_then(|h| serde_json::from_str::<health::Health>(&h).ok())
                .unwrap_or_else(health::Health::starting);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(check.interval()) => {}
                    _ = exit.changed() => return,
                }
                if exit.borrow().is_some() {
                    return;
                }
                let result = engine.probe(&id, &check).await;
                if exit.borrow().is_some() {
                    return;
                }
                let in_start = begun.elapsed() < check.start_period();
                let changed = state.record(result, check.retries(), in_start);
                let json = serde_json::to_string(&state).expect("JSON");
                if let Err(e) = engine.db.set_container_health(&id, Some(&json)).await {
                    tracing::warn!(container = %id, error = %e, "could not record its health");
                }
                if changed && let Ok(row) = engine.get(&id).await {
                    let action = format!("health_status: {}", state.status);
                    emit(&engine.db, &action, &row, &[]).await;
                }
            }
        });
    }

    /// One run of the healthcheck's command in the container, bounded by its timeout.
    async fn probe(&self, id: &str, check: &health::Healthcheck) -> health::ProbeResult {
        use tokio::io::AsyncReadExt;
        let start = crate::db::now_secs();
        let request = ExecRequest {
            cmd: check.command(),
            env: Vec::new(),
            working_dir: None,
            user: None,
        };
        let done = |exit_code: i64, output: String| health::ProbeResult {
            start,
            end: crate::db::now_secs(),
            exit_code,
            output,
        };
        let mut child = match self.exec(id, &request).await {
            Ok(child) => child,
            Err(e) => return done(-1, e.to_string()),
        };
        let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
        // What is kept of the output is bounded; the rest is read and dropped, so a probe
        // that prints without end costs no memory.
        async fn bounded(stream: Option<&mut (impl tokio::io::AsyncRead + Unpin)>) -> Vec<u8> {
            let mut kept = Vec::new();
            if let Some(s) = stream {
                let _ = s
                    .take(health::OUTPUT_BYTES as u64)
                    .read_to_end(&mut kept)
                    .await;
                let _ = tokio::io::copy(s, &mut tokio::io::sink()).await;
            }
            kept
        }
        let run = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let read_out = async {
                out = bounded(stdout.as_mut()).await;
            };
            let read_err = async {
                err = bounded(stderr.as_mut()).await;
            };
            tokio::join!(read_out, read_err);
            out.extend_from_slice(&err);
            (child.wait().await, out)
        };
        match tokio::time::timeout(check.timeout(), run).await {
            Ok((Ok(status), output)) => done(
                status.code().map_or(-1, i64::from),
                health::kept_output(&output),
            ),
            Ok((Err(e), _)) => done(-1, format!("the probe could not be waited for: {e}")),
            Err(_) => done(
                -1,
                format!(
                    "Health check exceeded timeout ({}s)",
                    check.timeout().as_secs_f64()
                ),
            ),
        }
    }

    /// Waits for a container this daemon did not start to end; its exit code.
    async fn watch_restored(&self, id: &str) -> i64 {
        let runtime = crate::runtime::container::Runtime::new(self.runtime_root());
        let mut gone_since: Option<std::time::Instant> = None;
        loop {
            if let Some(code) = self.recorded_exit(id).await {
                return code;
            }
            let (runtime, key) = (runtime.clone(), id.to_owned());
            let alive = tokio::task::spawn_blocking(move || {
                runtime
                    .state(&key)
                    .map(|s| s["status"] != "stopped")
                    .unwrap_or(false)
            })
            .await
            .unwrap_or(false);
            if alive {
                gone_since = None;
            } else {
                // The shim writes exit.json just after its container ends: give it a moment.
                let since = *gone_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(2) {
                    return 255;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Records an exit, releases the rootfs and the addresses, and removes an auto-remove
    /// container.
    async fn finished(&self, id: &str, code: i64) {
        self.disconnect_network(id).await;
        self.unmount_rootfs(id).await;
        if let Err(e) = self.db.container_exited(id, code, None).await {
            tracing::error!(container = id, error = %e, "could not record an exit");
        }
        if let Ok(Some(row)) = self.db.find_container(id).await {
            emit(&self.db, "die", &row, &[("exitCode", code.to_string())]).await;
        }
        self.exits.lock().await.remove(id);
        let config = self
            .db
            .find_container(id)
            .await
            .ok()
            .flatten()
            .and_then(|r| serde_json::from_str::<ContainerConfig>(&r.config).ok());
        if let Some(config) = config.filter(|c| c.auto_remove) {
            // As docker's --rm: the container's anonymous volumes go with it.
            match self.remove_files(id).await {
                Ok(()) => self.remove_anonymous_volumes(&config).await,
                Err(e) => {
                    tracing::warn!(container = id, error = %e, "could not remove an ended --rm container")
                }
            }
            return;
        }
        self.maybe_restart(id, code).await;
    }

    /// Applies the restart policy to a container that just ended.
    async fn maybe_restart(&self, id: &str, code: i64) {
        let Ok(Some(row)) = self.db.find_container(id).await else {
            return;
        };
        let policy = serde_json::from_str::<ContainerConfig>(&row.config)
            .ok()
            .and_then(|c| RestartPolicy::parse(c.restart.as_deref()).ok())
            .unwrap_or(RestartPolicy::No);
        if !policy.restarts(code, row.restart_count, row.stopped_by_user) {
            self.delays.lock().await.remove(id);
            return;
        }
        let ran = Duration::from_secs(
            (row.finished_at.unwrap_or(0) - row.started_at.unwrap_or(0)).max(0) as u64,
        );
        let delay = {
            let mut delays = self.delays.lock().await;
            let delay = match delays.get(id) {
                Some(d) if ran < RESTART_RESET_AFTER => *d,
                _ => RESTART_FIRST_DELAY,
            };
            delays.insert(id.to_owned(), (delay * 2).min(RESTART_MAX_DELAY));
            delay
        };
        let engine = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // Still there, still down, and no user stopped it meanwhile?
            let Ok(Some(row)) = engine.db.find_container(&id).await else {
                return;
            };
            if is_up(&row.state) || row.stopped_by_user {
                return;
            }
            if let Err(e) = engine.db.container_restarts(&id, true, false).await {
                tracing::warn!(container = %row.name, error = %e, "could not count a restart");
            }
            if let Err(e) = engine.start_boxed(id.clone()).await {
                tracing::warn!(container = %row.name, error = %e, "restart failed");
            }
        });
    }

    async fn mount_rootfs(&self, row: &ContainerRow) -> Result<(), EngineError> {
        let layers = self.db.image_layers(&row.image_digest).await?;
        let store = LayerStore::new(self.layout.layers());
        let blobs = BlobStore::new(self.layout.blobs());
        let dir = self.dir(&row.id);
        let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let stack = layers
                .iter()
                .map(|l| {
                    let parse = |d: &str| Digest::parse(d).map_err(|e| e.to_string());
                    Ok(crate::images::snapshot::StackLayer {
                        chain: parse(&l.chain_id)?,
                        diff: parse(&l.diff_id)?,
                        blob: parse(&l.blob_digest)?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            store
                .mount_stack(&blobs, &stack, &dir)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| EngineError::Io {
            what: "mount the root filesystem".into(),
            reason: e.to_string(),
        })?;
        result.map_err(|reason| EngineError::Start {
            name: row.name.clone(),
            reason: format!("cannot mount its root filesystem: {reason}"),
        })
    }

    /// A container as the API shows it, with its network settings.
    pub async fn view(&self, row: ContainerRow) -> Result<ContainerView, EngineError> {
        let id = row.id.clone();
        let mut view = ContainerView::from(row);
        let mut settings = NetworkSettings::default();
        for e in self.db.endpoints_of_container(&id).await? {
            let name = self
                .db
                .find_network(&e.network_id)
                .await?
                .map_or(e.network_id, |n| n.name);
            settings.networks.insert(name, e.ip);
        }
        settings.ports = self.db.ports_of_container(&id).await?;
        view.network_settings = Some(settings);
        Ok(view)
    }

    /// Containers as the API shows them, with their network settings: as [`Engine::view`]
    /// does one by one, in three queries for the whole list.
    pub async fn views(&self, rows: Vec<ContainerRow>) -> Result<Vec<ContainerView>, EngineError> {
        use std::collections::HashMap;
        let names: HashMap<String, String> = self
            .db
            .list_networks()
            .await?
            .into_iter()
            .map(|n| (n.id, n.name))
            .collect();
        let mut endpoints: HashMap<String, Vec<crate::db::networks::EndpointRow>> = HashMap::new();
        for e in self.db.all_endpoints().await? {
            endpoints.entry(e.container_id.clone()).or_default().push(e);
        }
        let mut ports: HashMap<String, Vec<crate::db::networks::PortRow>> = HashMap::new();
        for p in self.db.all_ports().await? {
            ports.entry(p.container_id.clone()).or_default().push(p);
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let mut settings = NetworkSettings::default();
                for e in endpoints.remove(&row.id).unwrap_or_default() {
                    let name = names.get(&e.network_id).cloned().unwrap_or(e.network_id);
                    settings.networks.insert(name, e.ip);
                }
                settings.ports = ports.remove(&row.id).unwrap_or_default();
                let mut view = ContainerView::from(row);
                view.network_settings = Some(settings);
                view
            })
            .collect())
    }

    /// Every network with the containers on it.
    pub async fn network_views(&self) -> Result<Vec<NetworkView>, EngineError> {
        let mut out = Vec::new();
        for (n, endpoints) in self.networks.list().await.map_err(net_error)? {
            out.push(self.network_view(n, endpoints).await?);
        }
        Ok(out)
    }

    async fn network_view(
        &self,
        n: crate::db::networks::NetworkRow,
        endpoints: Vec<crate::db::networks::EndpointRow>,
    ) -> Result<NetworkView, EngineError> {
        let mut containers = Vec::new();
        for e in endpoints {
            let name = self
                .db
                .find_container(&e.container_id)
                .await?
                .map_or_else(|| e.container_id.clone(), |r| r.name);
            containers.push(NetworkMember {
                id: e.container_id,
                name,
                ip: e.ip,
            });
        }
        Ok(NetworkView {
            id: n.id,
            name: n.name,
            driver: n.driver,
            subnet: n.subnet,
            gateway: n.gateway,
            bridge: n.bridge,
            containers,
        })
    }

    pub async fn network(&self, key: &str) -> Result<NetworkView, EngineError> {
        let n = self.networks.find(key).await.map_err(net_error)?;
        let endpoints = self.db.endpoints_of_network(&n.id).await?;
        self.network_view(n, endpoints).await
    }

    /// Makes a user-defined bridge network.
    pub async fn network_create(
        &self,
        name: &str,
        subnet: Option<&str>,
    ) -> Result<NetworkView, EngineError> {
        let n = self
            .networks
            .create(name, subnet)
            .await
            .map_err(net_error)?;
        self.network_view(n, Vec::new()).await
    }

    /// Plugs running container `key` into another user network (`network connect`); it stays
    /// on it across restarts.
    pub async fn network_connect(
        &self,
        network: &str,
        key: &str,
        ip: Option<&str>,
        aliases: &[String],
    ) -> Result<(), EngineError> {
        let row = self.get(key).await?;
        if !is_up(&row.state) {
            return Err(EngineError::WrongState {
                name: row.name,
                state: row.state,
                hint: "connect needs a running container",
            });
        }
        let mut config: ContainerConfig = serde_json::from_str(&row.config).unwrap_or_default();
        if !config
            .network
            .as_deref()
            .is_some_and(|m| !matches!(m, "none" | "host") && !m.starts_with("container:"))
        {
            return Err(EngineError::Invalid(format!(
                "{} has no network of its own to add to (--network {})",
                row.name,
                config.network.as_deref().unwrap_or("none")
            )));
        }
        let net = self.networks.find(network).await.map_err(net_error)?;
        let ip = ip
            .map(|ip| {
                ip.parse().map_err(|_| {
                    EngineError::Invalid(format!("--ip {ip:?} is not an IPv4 address"))
                })
            })
            .transpose()?;
        let mut names = vec![row.name.clone(), row.id[..12].to_owned()];
        names.extend(config.network_aliases.iter().cloned());
        names.extend(aliases.iter().cloned());
        self.networks
            .attach(&row.id, &net.name, ip, &names)
            .await
            .map_err(net_error)?;
        if !config.extra_networks.contains(&net.name) {
            config.extra_networks.push(net.name.clone());
            let json = serde_json::to_string(&config).expect("a config serializes");
            self.db.set_container_config(&row.id, &json).await?;
        }
        self.refresh_hosts_around(&row.id).await;
        Ok(())
    }

    /// Unplugs running container `key` from a network (`network disconnect`).
    pub async fn network_disconnect(&self, network: &str, key: &str) -> Result<(), EngineError> {
        let row = self.get(key).await?;
        let net = self.networks.find(network).await.map_err(net_error)?;
        let mut config: ContainerConfig = serde_json::from_str(&row.config).unwrap_or_default();
        let was_extra = config.extra_networks.contains(&net.name);
        if is_up(&row.state) {
            let endpoint = self
                .networks
                .detach_one(&row.id, &net.name)
                .await
                .map_err(net_error)?;
            let _ = self.write_hosts(&row.id).await;
            if let Ok(neighbours) = self.networks.neighbours(&[endpoint]).await {
                for n in neighbours {
                    let _ = self.write_hosts(&n).await;
                }
            }
        } else if !was_extra {
            return Err(EngineError::Invalid(format!(
                "{} is not connected to network {}",
                row.name, net.name
            )));
        }
        if was_extra {
            config.extra_networks.retain(|n| *n != net.name);
            let json = serde_json::to_string(&config).expect("a config serializes");
            self.db.set_container_config(&row.id, &json).await?;
        }
        Ok(())
    }

    /// Rewrites the hosts files of a container and of those sharing a user network with it.
    async fn refresh_hosts_around(&self, id: &str) {
        let _ = self.write_hosts(id).await;
        if let Ok(endpoints) = self.db.endpoints_of_container(id).await
            && let Ok(neighbours) = self.networks.neighbours(&endpoints).await
        {
            for n in neighbours {
                let _ = self.write_hosts(&n).await;
            }
        }
    }

    /// Removes a network no running container is on.
    pub async fn network_remove(&self, key: &str) -> Result<(), EngineError> {
        let view = self.network(key).await?;
        let users: Vec<String> = view.containers.iter().map(|c| c.name.clone()).collect();
        self.networks
            .remove(&view.id, &users)
            .await
            .map_err(net_error)
    }

    /// Checks the network settings of a new container and records its network mode.
    async fn check_network(&self, config: &mut ContainerConfig) -> Result<(), EngineError> {
        let mode = config
            .network
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.default_network.clone());
        match mode.as_str() {
            "none" | "host" | "bridge" => {}
            other => match other.strip_prefix("container:") {
                Some(target) => {
                    self.get(target).await?;
                }
                None => {
                    self.networks.find(other).await.map_err(net_error)?;
                }
            },
        }
        if let Some(ip) = &config.ip {
            ip.parse::<std::net::Ipv4Addr>()
                .map_err(|_| EngineError::Invalid(format!("--ip {ip:?} is not an IPv4 address")))?;
            if matches!(mode.as_str(), "none" | "host" | "bridge") || mode.starts_with("container:")
            {
                return Err(EngineError::Invalid(
                    "a static --ip is for user-defined networks only".into(),
                ));
            }
        }
        for server in &config.dns {
            server.parse::<std::net::IpAddr>().map_err(|_| {
                EngineError::Invalid(format!("--dns {server:?} is not an IP address"))
            })?;
        }
        for entry in &config.add_hosts {
            let ok = entry.split_once(':').is_some_and(|(name, ip)| {
                !name.is_empty() && ip.parse::<std::net::IpAddr>().is_ok()
            });
            if !ok {
                return Err(EngineError::Invalid(format!(
                    "--add-host {entry:?}: give NAME:IP"
                )));
            }
        }
        for spec in &config.ports {
            crate::network::ports::parse(spec).map_err(EngineError::Invalid)?;
        }
        let publishes = !config.ports.is_empty() || config.publish_all;
        if publishes && (matches!(mode.as_str(), "none" | "host") || mode.starts_with("container:"))
        {
            return Err(EngineError::Invalid(format!(
                "ports are published from bridge networks only, not with --network {mode}"
            )));
        }
        config.network = Some(mode);
        Ok(())
    }

    /// Gives a starting container its network: a namespace plugged into its network (or the
    /// one it shares), and its `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, all
    /// written into its spec.
    async fn connect_network(
        &self,
        row: &ContainerRow,
        config: &ContainerConfig,
    ) -> Result<(), EngineError> {
        let mode = config.network.as_deref().unwrap_or("none");
        let dir = self.dir(&row.id);
        let hostname = config
            .hostname
            .clone()
            .unwrap_or_else(|| row.id[..12].to_owned());
        let host_resolv = tokio::fs::read_to_string("/etc/resolv.conf")
            .await
            .unwrap_or_default();
        let mut netns: Option<PathBuf> = None;
        let mut files_from: Option<PathBuf> = None;
        match mode {
            "none" => {}
            "host" => {}
            other if other.starts_with("container:") => {
                let target = self.get(&other["container:".len()..]).await?;
                let pid = target.pid.filter(|_| is_up(&target.state)).ok_or_else(|| {
                    EngineError::Start {
                        name: row.name.clone(),
                        reason: format!(
                            "it shares the network of {}, which is not running",
                            target.name
                        ),
                    }
                })?;
                netns = Some(PathBuf::from(format!("/proc/{pid}/ns/net")));
                files_from = Some(self.dir(&target.id));
            }
            network => {
                let mut names = vec![row.name.clone(), row.id[..12].to_owned()];
                names.extend(config.network_aliases.iter().cloned());
                let ip = config.ip.as_deref().and_then(|ip| ip.parse().ok());
                let attached = self
                    .networks
                    .attach(&row.id, network, ip, &names)
                    .await
                    .map_err(|e| EngineError::Start {
                        name: row.name.clone(),
                        reason: e.to_string(),
                    })?;
                netns = Some(attached.netns);
                let mut specs = Vec::new();
                for text in &config.ports {
                    specs.push(crate::network::ports::parse(text).map_err(EngineError::Invalid)?);
                }
                if config.publish_all {
                    for exposed in &config.exposed_ports {
                        let mut spec =
                            crate::network::ports::parse(exposed).map_err(EngineError::Invalid)?;
                        spec.host_port = None;
                        specs.push(spec);
                    }
                }
                if !specs.is_empty() {
                    self.networks
                        .publish(&row.id, attached.ip, &specs)
                        .await
                        .map_err(|e| EngineError::Start {
                            name: row.name.clone(),
                            reason: e.to_string(),
                        })?;
                }
                for extra in &config.extra_networks {
                    self.networks
                        .attach(&row.id, extra, None, &names)
                        .await
                        .map_err(|e| EngineError::Start {
                            name: row.name.clone(),
                            reason: e.to_string(),
                        })?;
                }
            }
        }
        // The files: shared ones for container:X, the host's for host, made ones otherwise.
        let (hosts, resolv) = match (&files_from, mode) {
            (Some(from), _) => (from.join("hosts"), from.join("resolv.conf")),
            (None, "host") => {
                let hosts = tokio::fs::read_to_string("/etc/hosts")
                    .await
                    .unwrap_or_default();
                tokio::fs::write(dir.join("hosts"), hosts)
                    .await
                    .map_err(io(format!("write {}/hosts", dir.display())))?;
                tokio::fs::write(dir.join("resolv.conf"), &host_resolv)
                    .await
                    .map_err(io(format!("write {}/resolv.conf", dir.display())))?;
                (dir.join("hosts"), dir.join("resolv.conf"))
            }
            (None, _) => {
                tokio::fs::write(
                    dir.join("resolv.conf"),
                    crate::network::files::resolv_conf(&host_resolv, &config.dns),
                )
                .await
                .map_err(io(format!("write {}/resolv.conf", dir.display())))?;
                self.write_hosts(&row.id).await?;
                (dir.join("hosts"), dir.join("resolv.conf"))
            }
        };
        tokio::fs::write(dir.join("hostname"), format!("{hostname}\n"))
            .await
            .map_err(io(format!("write {}/hostname", dir.display())))?;
        let hostname_file = dir.join("hostname");
        self.patch_spec(&row.id, move |spec| {
            if let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() {
                for ns in namespaces.iter_mut() {
                    if ns["type"] == "network" {
                        match &netns {
                            Some(path) => ns["path"] = path.to_string_lossy().into_owned().into(),
                            None => {
                                if let Some(o) = ns.as_object_mut() {
                                    o.remove("path");
                                }
                            }
                        }
                    }
                }
            }
            if let Some(mounts) = spec["mounts"].as_array_mut() {
                mounts.retain(|m| {
                    !matches!(
                        m["destination"].as_str(),
                        Some("/etc/hosts" | "/etc/hostname" | "/etc/resolv.conf")
                    )
                });
                for (source, target) in [
                    (&hosts, "/etc/hosts"),
                    (&hostname_file, "/etc/hostname"),
                    (&resolv, "/etc/resolv.conf"),
                ] {
                    mounts.push(serde_json::json!({
                        "destination": target, "type": "bind",
                        "source": source.to_string_lossy(), "options": ["rbind", "rprivate"],
                    }));
                }
            }
        })
        .await?;
        // Those who share a user network with it learn its name.
        let endpoints = self.db.endpoints_of_container(&row.id).await?;
        for neighbour in self
            .networks
            .neighbours(&endpoints)
            .await
            .map_err(net_error)?
        {
            let _ = self.write_hosts(&neighbour).await;
        }
        Ok(())
    }

    /// Gives a container's addresses back (after it stopped, or a failed start), and tells
    /// its neighbours it is gone.
    async fn disconnect_network(&self, id: &str) {
        match self.networks.detach(id).await {
            Ok(endpoints) => {
                if let Ok(neighbours) = self.networks.neighbours(&endpoints).await {
                    for n in neighbours {
                        let _ = self.write_hosts(&n).await;
                    }
                }
            }
            Err(e) => tracing::warn!(container = id, error = %e, "could not release its network"),
        }
    }

    /// (Re)writes container `id`'s `/etc/hosts` in place (it is bind-mounted into it).
    async fn write_hosts(&self, id: &str) -> Result<(), EngineError> {
        let Some(row) = self.db.find_container(id).await? else {
            return Ok(());
        };
        let config: ContainerConfig = serde_json::from_str(&row.config).unwrap_or_default();
        let hostname = config
            .hostname
            .clone()
            .unwrap_or_else(|| row.id[..12].to_owned());
        let own = self
            .db
            .endpoints_of_container(id)
            .await?
            .first()
            .and_then(|e| e.ip.parse().ok());
        let extra: Vec<(String, String)> = config
            .add_hosts
            .iter()
            .filter_map(|h| h.split_once(':'))
            .map(|(n, ip)| (n.to_owned(), ip.to_owned()))
            .collect();
        let peers: Vec<(std::net::Ipv4Addr, Vec<String>)> = self
            .networks
            .peers(id)
            .await
            .map_err(net_error)?
            .into_iter()
            .filter_map(|e| {
                Some((
                    e.ip.parse().ok()?,
                    serde_json::from_str(&e.aliases).unwrap_or_default(),
                ))
            })
            .collect();
        let text = crate::network::files::hosts(&hostname, own, &extra, &peers);
        let path = self.dir(id).join("hosts");
        // In place, not renamed over: the container's bind mount holds this inode.
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(io(format!("write {}", path.display())))?;
        use tokio::io::AsyncWriteExt;
        file.write_all(text.as_bytes())
            .await
            .map_err(io(format!("write {}", path.display())))
    }

    /// Reads container `id`'s spec, lets `change` edit it, and writes it back (root only).
    async fn patch_spec(
        &self,
        id: &str,
        change: impl FnOnce(&mut serde_json::Value) + Send + 'static,
    ) -> Result<(), EngineError> {
        let dir = self.dir(id);
        tokio::task::spawn_blocking(move || -> Result<(), EngineError> {
            let path = dir.join("config.json");
            let bytes = std::fs::read(&path).map_err(io(format!("read {}", path.display())))?;
            let mut spec: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| EngineError::Io {
                    what: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            change(&mut spec);
            let tmp = dir.join("config.json.tmp");
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?
                    .write_all(&serde_json::to_vec_pretty(&spec).expect("JSON serializes"))?;
                std::fs::rename(&tmp, &path)
            };
            write().map_err(io(format!("write {}", path.display())))
        })
        .await
        .map_err(|e| EngineError::Io {
            what: "update the container's spec".into(),
            reason: e.to_string(),
        })?
    }

    /// Resolves the container's user in its mounted root filesystem and writes the identity
    /// (and HOME, unless set) into its spec, as docker does at each start.
    async fn apply_user(&self, row: &ContainerRow, user: &str) -> Result<(), EngineError> {
        let rootfs = self.dir(&row.id).join("rootfs");
        let user = user.to_owned();
        let identity = tokio::task::spawn_blocking(move || user::resolve_in(&rootfs, &user))
            .await
            .map_err(|e| EngineError::Io {
                what: "resolve the container's user".into(),
                reason: e.to_string(),
            })?
            .map_err(|e| EngineError::Start {
                name: row.name.clone(),
                reason: e.to_string(),
            })?;
        self.patch_spec(&row.id, move |spec| {
            spec["process"]["user"] = serde_json::json!({
                "uid": identity.uid, "gid": identity.gid,
                "additionalGids": identity.additional_gids,
            });
            if let Some(env) = spec["process"]["env"].as_array_mut()
                && !env
                    .iter()
                    .any(|e| e.as_str().is_some_and(|e| e.starts_with("HOME=")))
            {
                env.push(format!("HOME={}", identity.home).into());
            }
        })
        .await
    }

    async fn unmount_rootfs(&self, id: &str) {
        let rootfs = self.dir(id).join("rootfs");
        let _ = tokio::task::spawn_blocking(move || {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        })
        .await;
    }

    /// Sends `signal` to the container's init.
    pub async fn kill(&self, key: &str, signal: &str) -> Result<(), EngineError> {
        let row = self.get(key).await?;
        if !is_up(&row.state) {
            return Err(EngineError::WrongState {
                name: row.name,
                state: row.state,
                hint: "only a running container can be signalled",
            });
        }
        let signal = crate::runtime::container::parse_signal(signal)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        if matches!(
            signal,
            nix::sys::signal::Signal::SIGKILL | nix::sys::signal::Signal::SIGTERM
        ) {
            self.db.container_stopped_by_user(&row.id).await?;
        }
        // A frozen process cannot act on a signal: thaw a paused container first.
        if row.state == "paused" {
            self.set_paused(&row.id, false).await?;
        }
        let runtime = crate::runtime::container::Runtime::new(self.runtime_root());
        let id = row.id.clone();
        let name = row.name.clone();
        tokio::task::spawn_blocking(move || runtime.kill(&id, signal, false))
            .await
            .map_err(|e| EngineError::Io {
                what: format!("signal {name}"),
                reason: e.to_string(),
            })?
            .map_err(|e| EngineError::Io {
                what: format!("signal {}", row.name),
                reason: e.to_string(),
            })
    }

    /// Freezes (`pause`) or thaws a running container's processes through its cgroup.
    pub async fn set_paused(&self, key: &str, paused: bool) -> Result<ContainerRow, EngineError> {
        let row = self.get(key).await?;
        let wanted_from = if paused { "running" } else { "paused" };
        if row.state != wanted_from {
            return Err(EngineError::WrongState {
                name: row.name,
                state: row.state,
                hint: if paused {
                    "only a running container can be paused"
                } else {
                    "only a paused container can be unpaused"
                },
            });
        }
        let runtime = crate::runtime::container::Runtime::new(self.runtime_root());
        let id = row.id.clone();
        tokio::task::spawn_blocking(move || {
            if paused {
                runtime.pause(&id)
            } else {
                runtime.resume(&id)
            }
        })
        .await
        .map_err(|e| EngineError::Invalid(e.to_string()))?
        .map_err(|e| EngineError::Io {
            what: format!("{} {}", if paused { "pause" } else { "unpause" }, row.name),
            reason: e.to_string(),
        })?;
        self.db.container_paused(&row.id, paused).await?;
        emit(
            &self.db,
            if paused { "pause" } else { "unpause" },
            &row,
            &[],
        )
        .await;
        self.get(&row.id).await
    }

    /// Gives a container another name.
    pub async fn rename(&self, key: &str, name: &str) -> Result<ContainerRow, EngineError> {
        let row = self.get(key).await?;
        check_name(name)?;
        self.db.rename_container(&row.id, name).await?;
        let renamed = self.get(&row.id).await?;
        emit(
            &self.db,
            "rename",
            &renamed,
            &[("oldName", row.name.clone())],
        )
        .await;
        Ok(renamed)
    }

    /// Removes every container that is not running; their names.
    pub async fn prune(&self) -> Result<Vec<String>, EngineError> {
        let mut removed = Vec::new();
        for row in self.db.list_containers(true).await? {
            if row.state == "exited" || row.state == "created" {
                self.remove(&row.id, false, false).await?;
                removed.push(row.name);
            }
        }
        Ok(removed)
    }

    /// Disk use of containers (their writable layers) and volumes.
    pub async fn disk_usage(&self) -> Result<DiskUsage, EngineError> {
        let rows = self.db.list_containers(true).await?;
        let volumes = self.volumes().await?;
        let dirs: Vec<(PathBuf, bool)> = rows
            .iter()
            .map(|r| (self.dir(&r.id).join("upper"), is_up(&r.state)))
            .collect();
        let volume_dirs: Vec<(PathBuf, bool)> = volumes
            .iter()
            .map(|v| (PathBuf::from(&v.mountpoint), !v.used_by.is_empty()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut usage = DiskUsage::default();
            for (upper, running) in dirs {
                let bytes = crate::host::tree_size(&upper).0;
                usage.containers += 1;
                usage.containers_bytes += bytes;
                if running {
                    usage.containers_running += 1;
                } else {
                    usage.containers_reclaimable_bytes += bytes;
                }
            }
            for (data, used) in volume_dirs {
                let bytes = crate::host::tree_size(&data).0;
                usage.volumes += 1;
                usage.volumes_bytes += bytes;
                if !used {
                    usage.volumes_unused += 1;
                    usage.volumes_reclaimable_bytes += bytes;
                }
            }
            usage
        })
        .await
        .map_err(|e| EngineError::Io {
            what: "measure disk use".into(),
            reason: e.to_string(),
        })
    }

    fn volumes_root(&self) -> PathBuf {
        self.layout.root().join("volumes")
    }

    /// Makes a named volume (an existing one is fine, as with docker).
    pub async fn volume_create(&self, name: &str) -> Result<VolumeView, EngineError> {
        check_name(name).map_err(|_| {
            EngineError::Invalid(format!(
                "volume name {name:?} is not valid: [a-zA-Z0-9][a-zA-Z0-9_.-]+"
            ))
        })?;
        let data = self.volumes_root().join(name).join("_data");
        tokio::fs::create_dir_all(&data)
            .await
            .map_err(io(format!("make volume {name}")))?;
        self.volume(name).await
    }

    /// The containers (stopped ones too) whose binds name volume `name`.
    async fn volume_users(&self, name: &str) -> Result<Vec<String>, EngineError> {
        let mut users = Vec::new();
        for row in self.db.list_containers(true).await? {
            let config: ContainerConfig = serde_json::from_str(&row.config).unwrap_or_default();
            if config
                .binds
                .iter()
                .any(|b| b.split(':').next() == Some(name))
            {
                users.push(row.name);
            }
        }
        Ok(users)
    }

    /// One volume: where it is and who uses it.
    pub async fn volume(&self, name: &str) -> Result<VolumeView, EngineError> {
        let dir = self.volumes_root().join(name);
        let meta = match tokio::fs::metadata(dir.join("_data")).await {
            Ok(m) if check_name(name).is_ok() => m,
            _ => return Err(EngineError::NoVolume(name.to_owned())),
        };
        use std::os::unix::fs::MetadataExt;
        Ok(VolumeView {
            name: name.to_owned(),
            mountpoint: dir.join("_data").to_string_lossy().into_owned(),
            created_at: meta.ctime(),
            used_by: self.volume_users(name).await?,
        })
    }

    /// Every named volume, by name.
    pub async fn volumes(&self) -> Result<Vec<VolumeView>, EngineError> {
        let mut names = Vec::new();
        if let Ok(mut entries) = tokio::fs::read_dir(self.volumes_root()).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Ok(v) = self.volume(&name).await {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Removes a volume and its data; refused while a container (even a stopped one) names it.
    pub async fn volume_remove(&self, name: &str) -> Result<(), EngineError> {
        let volume = self.volume(name).await?;
        if !volume.used_by.is_empty() {
            return Err(EngineError::Invalid(format!(
                "volume {name} is in use by container(s) {}: remove them first",
                volume.used_by.join(", ")
            )));
        }
        let dir = self.volumes_root().join(name);
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(io(format!("remove volume {name} ({})", dir.display())))
    }

    /// Removes every volume no container names; their names.
    pub async fn volume_prune(&self) -> Result<Vec<String>, EngineError> {
        let mut removed = Vec::new();
        for v in self.volumes().await? {
            if v.used_by.is_empty() {
                self.volume_remove(&v.name).await?;
                removed.push(v.name);
            }
        }
        Ok(removed)
    }

    /// A receiver that changes when the running container ends (`None` if it is not running).
    pub async fn exit_watch(&self, id: &str) -> Option<watch::Receiver<Option<i64>>> {
        self.exits.lock().await.get(id).cloned()
    }

    /// Waits for the container to end; its exit code.
    pub async fn wait(&self, key: &str) -> Result<i64, EngineError> {
        let row = self.get(key).await?;
        let rx = self.exits.lock().await.get(&row.id).cloned();
        let Some(mut rx) = rx else {
            return Ok(row.exit_code.unwrap_or(0));
        };
        loop {
            if let Some(code) = *rx.borrow_and_update() {
                return Ok(code);
            }
            if rx.changed().await.is_err() {
                return Ok(self.get(&row.id).await?.exit_code.unwrap_or(255));
            }
        }
    }

    /// SIGTERM (or the image's stop signal), then SIGKILL after `timeout`.
    pub async fn stop(&self, key: &str, timeout: Duration) -> Result<ContainerRow, EngineError> {
        let row = self.get(key).await?;
        // A stop by a user keeps the restart policy from starting it again.
        self.db.container_stopped_by_user(&row.id).await?;
        if !is_up(&row.state) {
            return self.get(&row.id).await;
        }
        let config: ContainerConfig = serde_json::from_str(&row.config).unwrap_or_default();
        let signal = config.stop_signal.as_deref().unwrap_or("SIGTERM");
        if let Err(e) = self.kill(&row.id, signal).await {
            tracing::warn!(container = %row.name, error = %e, "could not send the stop signal");
        }
        if tokio::time::timeout(timeout, self.wait(&row.id))
            .await
            .is_err()
        {
            let _ = self.kill(&row.id, "SIGKILL").await;
            let _ = self.wait(&row.id).await;
        }
        emit(&self.db, "stop", &row, &[]).await;
        self.get(&row.id).await
    }

    /// Removes a container (`force` kills a running one first).
    pub async fn remove(&self, key: &str, force: bool, volumes: bool) -> Result<(), EngineError> {
        let row = self.get(key).await?;
        if is_up(&row.state) && !force {
            return Err(EngineError::WrongState {
                name: row.name,
                state: row.state,
                hint: "stop it first, or remove it with force",
            });
        }
        // No restart may start it again while it goes.
        self.db.container_stopped_by_user(&row.id).await?;
        let row = self.get(&row.id).await?;
        if is_up(&row.state) {
            if !force {
                return Err(EngineError::WrongState {
                    name: row.name,
                    state: row.state,
                    hint: "stop it first, or remove it with force",
                });
            }
            let _ = self.kill(&row.id, "SIGKILL").await;
            let _ = self.wait(&row.id).await;
        }
        self.remove_files(&row.id).await?;
        if volumes {
            let config: ContainerConfig = serde_json::from_str(&row.config).unwrap_or_default();
            self.remove_anonymous_volumes(&config).await;
        }
        Ok(())
    }

    async fn remove_files(&self, id: &str) -> Result<(), EngineError> {
        let row = self.db.find_container(id).await?;
        self.disconnect_network(id).await;
        self.unmount_rootfs(id).await;
        // The directory leaves its name at once and its files go in the background: each
        // unlink on a discarding file system is slow. A daemon stopped meanwhile finishes the
        // job at its next start (`sweep_removed`).
        let dir = self.dir(id);
        let removed = self.removed_dir(id);
        match tokio::fs::rename(&dir, &removed).await {
            Ok(()) => {
                tokio::spawn(async move {
                    if let Err(e) = tokio::fs::remove_dir_all(&removed).await {
                        tracing::warn!(path = %removed.display(), error = %e, "could not remove a removed container's files");
                    }
                });
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(format!("remove {}", dir.display()))(e));
            }
            Err(_) => {}
        }
        self.db.delete_container(id).await?;
        if let Some(row) = row {
            emit(&self.db, "destroy", &row, &[]).await;
        }
        Ok(())
    }

    /// Gives `-v /target` binds, and the image's VOLUMEs that nothing else mounts, a volume of
    /// their own under a fresh name, recorded in `anonymous_volumes`.
    fn add_anonymous_volumes(
        &self,
        config: &mut ContainerConfig,
        image_config: &serde_json::Value,
    ) -> Result<(), EngineError> {
        let mut binds = Vec::new();
        for bind in std::mem::take(&mut config.binds) {
            if bind.starts_with('/') && !bind.contains(':') {
                let name = new_id();
                binds.push(format!("{name}:{bind}"));
                config.anonymous_volumes.push(name);
            } else {
                binds.push(bind);
            }
        }
        let mounted = |target: &str, binds: &[String], tmpfs: &[String]| {
            let same = |t: &str| t.trim_end_matches('/') == target.trim_end_matches('/');
            binds.iter().any(|b| b.split(':').nth(1).is_some_and(same))
                || tmpfs
                    .iter()
                    .any(|t| same(t.split(':').next().unwrap_or("")))
        };
        if let Some(volumes) = image_config["config"]["Volumes"].as_object() {
            let mut targets: Vec<&String> = volumes.keys().collect();
            targets.sort();
            for target in targets {
                if !target.starts_with('/') {
                    return Err(EngineError::Invalid(format!(
                        "the image declares VOLUME {target:?}, which is not an absolute path"
                    )));
                }
                if !mounted(target, &binds, &config.tmpfs) {
                    let name = new_id();
                    binds.push(format!("{name}:{target}"));
                    config.anonymous_volumes.push(name);
                }
            }
        }
        config.binds = binds;
        Ok(())
    }

    /// Removes the container's anonymous volumes (those no other container names).
    async fn remove_anonymous_volumes(&self, config: &ContainerConfig) {
        for name in &config.anonymous_volumes {
            match self.volume_remove(name).await {
                Ok(()) | Err(EngineError::NoVolume(_)) => {}
                Err(e) => tracing::warn!(volume = %name, error = %e, "kept an anonymous volume"),
            }
        }
    }

    /// Copies the image's files at each new volume's target into it, once, as docker does
    /// when a container first mounts an empty new volume (not with `nocopy`).
    async fn fill_new_volumes(
        &self,
        row: &ContainerRow,
        config: &ContainerConfig,
    ) -> Result<(), EngineError> {
        let mut pending = Vec::new();
        for bind in &config.binds {
            let mut parts = bind.split(':');
            let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
                continue;
            };
            if source.starts_with('/') {
                continue;
            }
            let dir = self.volumes_root().join(source);
            if tokio::fs::try_exists(dir.join(FRESH_VOLUME))
                .await
                .unwrap_or(false)
            {
                pending.push((dir, target.to_owned()));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let rootfs = self.dir(&row.id).join("rootfs");
        let name = row.name.clone();
        tokio::task::spawn_blocking(move || -> Result<(), EngineError> {
            let fail = |e: archive::ArchiveError| EngineError::Start {
                name: name.clone(),
                reason: format!("cannot fill a new volume from the image: {e}"),
            };
            let image = archive::Root::open(&rootfs).map_err(|e| fail(e.into()))?;
            for (dir, target) in pending {
                let volume = archive::Root::open(&dir.join("_data")).map_err(|e| fail(e.into()))?;
                match archive::copy_dir_contents(&image, Path::new(&target), &volume) {
                    Ok(()) | Err(archive::ArchiveError::NotFound { .. }) => {}
                    Err(e) => return Err(fail(e)),
                }
                let _ = std::fs::remove_file(dir.join(FRESH_VOLUME));
            }
            Ok(())
        })
        .await
        .map_err(|e| EngineError::Io {
            what: "fill new volumes".into(),
            reason: e.to_string(),
        })?
    }

    /// Host paths of `binds`: bind sources checked to exist, volumes made on first use.
    async fn resolve_binds(&self, binds: &[String]) -> Result<Vec<spec::Bind>, EngineError> {
        let mut out = Vec::new();
        for bind in binds {
            let parts: Vec<&str> = bind.split(':').collect();
            let (source, target, options) = match parts.as_slice() {
                [s, t] => (*s, *t, ""),
                [s, t, o] => (*s, *t, *o),
                _ => {
                    return Err(EngineError::Invalid(format!(
                        "volume {bind:?}: give SOURCE:TARGET[:OPTIONS] or TARGET"
                    )));
                }
            };
            let (mut read_only, mut nocopy) = (false, false);
            for option in options.split(',').filter(|o| !o.is_empty()) {
                match option {
                    "ro" => read_only = true,
                    "rw" => read_only = false,
                    "nocopy" => nocopy = true,
                    other => {
                        return Err(EngineError::Invalid(format!(
                            "volume {bind:?}: option {other:?} is not known (ro, rw, nocopy)"
                        )));
                    }
                }
            }
            if !target.starts_with('/') {
                return Err(EngineError::Invalid(format!(
                    "volume {bind:?}: the target {target:?} must be an absolute path"
                )));
            }
            let host = if source.starts_with('/') {
                let path = PathBuf::from(source);
                if tokio::fs::symlink_metadata(&path).await.is_err() {
                    return Err(EngineError::Invalid(format!(
                        "bind source {source} does not exist on this host"
                    )));
                }
                path
            } else {
                check_name(source).map_err(|_| {
                    EngineError::Invalid(format!(
                        "volume name {source:?} is not valid: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (or give an absolute host path)"
                    ))
                })?;
                let dir = self.volumes_root().join(source);
                let data = dir.join("_data");
                if !tokio::fs::try_exists(&data).await.unwrap_or(false) {
                    tokio::fs::create_dir_all(&data)
                        .await
                        .map_err(io(format!("make volume {source}")))?;
                    if !nocopy {
                        tokio::fs::write(dir.join(FRESH_VOLUME), b"")
                            .await
                            .map_err(io(format!("mark volume {source} as new")))?;
                    }
                }
                data
            };
            out.push(spec::Bind {
                source: host,
                target: target.to_owned(),
                read_only,
            });
        }
        Ok(out)
    }

    /// The process of an exec in running container `key`: the container's process settings
    /// with the request's overrides.
    async fn exec_process(
        &self,
        key: &str,
        request: &ExecRequest,
    ) -> Result<(ContainerRow, serde_json::Value), EngineError> {
        let row = self.get(key).await?;
        if row.state != "running" {
            return Err(EngineError::WrongState {
                name: row.name,
                state: row.state,
                hint: "exec needs a running container",
            });
        }
        if request.cmd.is_empty() {
            return Err(EngineError::Invalid("exec needs a command".into()));
        }
        let dir = self.dir(&row.id);
        let spec: serde_json::Value = {
            let bytes = tokio::fs::read(dir.join("config.json"))
                .await
                .map_err(io(format!("read {}/config.json", dir.display())))?;
            serde_json::from_slice(&bytes).map_err(|e| EngineError::Io {
                what: format!("{}/config.json", dir.display()),
                reason: e.to_string(),
            })?
        };
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(request.cmd);
        process["terminal"] = false.into();
        if let Some(cwd) = &request.working_dir {
            if !cwd.starts_with('/') {
                return Err(EngineError::Invalid(format!(
                    "working directory {cwd:?} must be an absolute path"
                )));
            }
            process["cwd"] = cwd.clone().into();
        }
        if let Some(user) = &request.user {
            let rootfs = dir.join("rootfs");
            let user = user.clone();
            let identity = tokio::task::spawn_blocking(move || user::resolve_in(&rootfs, &user))
                .await
                .map_err(|e| EngineError::Io {
                    what: "resolve the exec user".into(),
                    reason: e.to_string(),
                })??;
            process["user"] = serde_json::json!({"uid": identity.uid, "gid": identity.gid,
                                                 "additionalGids": identity.additional_gids});
        }
        if !request.env.is_empty() {
            let mut env: Vec<String> = process["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect();
            for kv in &request.env {
                let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
                env.push(kv.clone());
            }
            process["env"] = serde_json::json!(env);
        }
        Ok((row, process))
    }

    /// Starts `cmd` in a running container through `wharf runtime exec` (a fresh helper
    /// process: the daemon does not fork), with the container's process settings and the
    /// request's overrides. The caller reads the child's stdout and stderr and waits for it.
    pub async fn exec(
        &self,
        key: &str,
        request: &ExecRequest,
    ) -> Result<tokio::process::Child, EngineError> {
        let (row, process) = self.exec_process(key, request).await?;
        // The process goes to the helper on its stdin, which it reads whole before it enters
        // the container; the program then finds its stdin at end of file.
        let mut child = tokio::process::Command::new(&self.exe)
            .arg("runtime")
            .arg("--root")
            .arg(self.runtime_root())
            .arg("exec")
            .arg("--process")
            .arg("/dev/stdin")
            .arg(&row.id)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| EngineError::Start {
                name: row.name.clone(),
                reason: format!("cannot run the exec helper ({}): {e}", self.exe.display()),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            stdin
                .write_all(process.to_string().as_bytes())
                .await
                .map_err(io("hand the exec helper its process"))?;
        }
        Ok(child)
    }

    /// An interactive exec: with `tty`, the program gets a terminal whose master end comes
    /// back in the session; without, its stdin, stdout and stderr are the child's pipes. The
    /// process description goes through a root-only file, so stdin stays the program's.
    pub async fn exec_interactive(
        &self,
        key: &str,
        request: &ExecRequest,
        tty: bool,
        size: Option<(u16, u16)>,
    ) -> Result<ExecSession, EngineError> {
        let (row, mut process) = self.exec_process(key, request).await?;
        process["terminal"] = tty.into();
        if tty {
            let env = process["env"].as_array_mut();
            if let Some(env) = env
                && !env
                    .iter()
                    .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
            {
                env.push("TERM=xterm".into());
            }
            if let Some((rows, cols)) = size {
                process["consoleSize"] = serde_json::json!({"height": rows, "width": cols});
            }
        }
        let dir = self.dir(&row.id);
        let token = &new_id()[..16];
        let mut session = ExecSession {
            child: None,
            pty: None,
            // The socket's path must stay short (107 bytes) and is used by another process:
            // it goes in the runtime's root, under a name no container id can take.
            files: vec![
                dir.join(format!("exec-{token}.json")),
                self.runtime_root().join(format!("@exec-{token}.sock")),
            ],
        };
        let process_file = session.files[0].clone();
        let console_path = session.files[1].clone();
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&process_file)
                .and_then(|mut f| f.write_all(process.to_string().as_bytes()))
                .map_err(io(format!("write {}", process_file.display())))?;
        }
        let console = if tty {
            let listener = tokio::net::UnixListener::bind(&console_path)
                .map_err(io(format!("listen on {}", console_path.display())))?;
            Some(listener)
        } else {
            None
        };
        let piped = || {
            if tty {
                std::process::Stdio::null()
            } else {
                std::process::Stdio::piped()
            }
        };
        let mut command = tokio::process::Command::new(&self.exe);
        command
            .arg("runtime")
            .arg("--root")
            .arg(self.runtime_root())
            .arg("exec")
            .arg("--process")
            .arg(&process_file);
        if tty {
            command.arg("--console-socket").arg(&console_path);
        }
        let mut child = command
            .arg(&row.id)
            .stdin(piped())
            .stdout(piped())
            .stderr(if tty {
                std::process::Stdio::piped()
            } else {
                piped()
            })
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| EngineError::Start {
                name: row.name.clone(),
                reason: format!("cannot run the exec helper ({}): {e}", self.exe.display()),
            })?;
        if let Some(listener) = console {
            // The helper connects once the program's terminal exists; if it fails first, its
            // error is the answer.
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted.map(|(s, _)| s).map_err(|e| e.to_string()),
                _ = child.wait() => Err(String::new()),
                _ = tokio::time::sleep(Duration::from_secs(10)) => Err("the exec helper sent no terminal in 10 s".into()),
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(reason) => {
                    let mut helper_said = String::new();
                    if let Some(mut err) = child.stderr.take() {
                        use tokio::io::AsyncReadExt;
                        let _ = err.read_to_string(&mut helper_said).await;
                    }
                    let reason = if reason.is_empty() {
                        helper_said.trim().to_owned()
                    } else {
                        reason
                    };
                    return Err(EngineError::Start {
                        name: row.name,
                        reason,
                    });
                }
            };
            let stream = stream
                .into_std()
                .map_err(io("take the console connection"))?;
            let _ = stream.set_nonblocking(false);
            let master = tokio::task::spawn_blocking(move || {
                crate::runtime::console::receive_fd(&stream, Duration::from_secs(10))
            })
            .await
            .map_err(|e| EngineError::Io {
                what: "receive the exec terminal".into(),
                reason: e.to_string(),
            })?
            .map_err(|reason| EngineError::Start {
                name: row.name.clone(),
                reason,
            })?;
            session.pty = Some(master);
        }
        session.child = Some(child);
        Ok(session)
    }

    /// CPU, memory and process counts of a running container, from its cgroup.
    pub async fn stats(&self, key: &str) -> Result<ContainerStats, EngineError> {
        let row = self.get(key).await?;
        if !is_up(&row.state) {
            return Err(EngineError::WrongState {
                name: row.name,
                state: row.state,
                hint: "stats are of running containers",
            });
        }
        let runtime = crate::runtime::container::Runtime::new(self.runtime_root());
        let id = row.id.clone();
        // The init's view of the network is the container's namespace.
        let (net_rx_bytes, net_tx_bytes) = match row.pid {
            Some(pid) => tokio::fs::read_to_string(format!("/proc/{pid}/net/dev"))
                .await
                .map_or((0, 0), |t| net_bytes(&t)),
            None => (0, 0),
        };
        let stats = tokio::task::spawn_blocking(move || runtime.stats(&id))
            .await
            .map_err(|e| EngineError::Invalid(e.to_string()))?
            .map_err(|e| EngineError::Io {
                what: format!("stats of {}", row.name),
                reason: e.to_string(),
            })?;
        Ok(ContainerStats {
            id: row.id,
            name: row.name,
            read_at_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            cpu_usage_ns: stats.cpu_usage_ns,
            memory_usage_bytes: stats.memory_usage_bytes,
            memory_limit_bytes: stats.memory_limit_bytes,
            pids_current: stats.pids_current,
            pids_limit: stats.pids_limit,
            oom_kills: stats.oom_kills,
            block_read_bytes: stats.block_read_bytes,
            block_write_bytes: stats.block_write_bytes,
            net_rx_bytes,
            net_tx_bytes,
        })
    }

    /// CPU time (ns) and memory in use (bytes) of the running containers among `ids`, read in
    /// one blocking task (for lists; containers that are not running are left out).
    pub async fn usage(&self, ids: Vec<String>) -> HashMap<String, (u64, u64)> {
        let runtime = crate::runtime::container::Runtime::new(self.runtime_root());
        tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .filter_map(|id| {
                    let stats = runtime.stats(&id).ok()?;
                    Some((id, (stats.cpu_usage_ns, stats.memory_usage_bytes)))
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// A container's files for `cp` and `export`. With `live`, a running container is seen
    /// through its init's root (its volumes and tmpfs mounts included); otherwise through its
    /// root filesystem, mounted for as long as the returned value lives if it is not running
    /// (no start can happen meanwhile).
    pub async fn files(&self, key: &str, live: bool) -> Result<ContainerFiles, EngineError> {
        let row = self.get(key).await?;
        let gate = Arc::clone(
            self.starting
                .lock()
                .await
                .entry(row.id.clone())
                .or_default(),
        );
        let held = gate.lock_owned().await;
        let row = self.get(&row.id).await?;
        let open = |path: &Path| {
            archive::Root::open(path).map_err(|e| EngineError::Io {
                what: format!("open {}", path.display()),
                reason: e.to_string(),
            })
        };
        if is_up(&row.state) {
            let root = match (live, row.pid) {
                (true, Some(pid)) => {
                    let root = open(Path::new(&format!("/proc/{pid}/root")))?;
                    // Opened first, checked after: if the pid is still in the container's
                    // cgroup now, what was opened was a process of the container (a reused pid
                    // would be some host process's, whose root is the host's).
                    let cgroup =
                        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                    if !cgroup
                        .lines()
                        .any(|l| l.ends_with(&format!("/wharf/{}", row.id)))
                    {
                        return Err(EngineError::WrongState {
                            name: row.name,
                            state: "exited".into(),
                            hint: "it ended just now",
                        });
                    }
                    root
                }
                _ => open(&self.dir(&row.id).join("rootfs"))?,
            };
            return Ok(ContainerFiles {
                root,
                mounted: None,
                _gate: None,
            });
        }
        self.mount_rootfs(&row).await?;
        let rootfs = self.dir(&row.id).join("rootfs");
        match open(&rootfs) {
            Ok(root) => Ok(ContainerFiles {
                root,
                mounted: Some(rootfs),
                _gate: Some(held),
            }),
            Err(e) => {
                self.unmount_rootfs(&row.id).await;
                Err(e)
            }
        }
    }

    /// `docker diff`: the container's writable layer against its image.
    pub async fn changes(&self, key: &str) -> Result<Vec<archive::Change>, EngineError> {
        let row = self.get(key).await?;
        let layers = self.db.image_layers(&row.image_digest).await?;
        let store = LayerStore::new(self.layout.layers());
        let mut lowers = Vec::new();
        for layer in layers.iter().rev() {
            let chain = Digest::parse(&layer.chain_id).map_err(|e| EngineError::Io {
                what: format!("layer {}", layer.chain_id),
                reason: e.to_string(),
            })?;
            if store.exists(&chain) {
                lowers.push(store.path(&chain));
            }
        }
        let upper = self.dir(&row.id).join("upper");
        tokio::task::spawn_blocking(move || archive::changes(&upper, &lowers))
            .await
            .map_err(|e| EngineError::Io {
                what: "list the container's changes".into(),
                reason: e.to_string(),
            })?
            .map_err(|e| EngineError::Io {
                what: "list the container's changes".into(),
                reason: e.to_string(),
            })
    }

    /// The directory of running container `key`'s attach socket (its shim's; see
    /// `shim::attach`; connect through `shim::short_path`).
    pub async fn attach_socket(&self, key: &str) -> Result<(ContainerRow, PathBuf), EngineError> {
        let row = self.get(key).await?;
        if !is_up(&row.state) {
            return Err(EngineError::WrongState {
                name: row.name,
                state: row.state,
                hint: "attach needs a running container",
            });
        }
        let dir = self.dir(&row.id);
        Ok((row, dir))
    }

    /// The processes of a running container: pid (on the host), user id and command line.
    pub async fn top(&self, key: &str) -> Result<Vec<ProcessView>, EngineError> {
        let row = self.get(key).await?;
        if !is_up(&row.state) {
            return Err(EngineError::WrongState {
                name: row.name,
                state: row.state,
                hint: "top shows running containers",
            });
        }
        let runtime = crate::runtime::container::Runtime::new(self.runtime_root());
        let id = row.id.clone();
        let pids = tokio::task::spawn_blocking(move || runtime.processes(&id))
            .await
            .map_err(|e| EngineError::Invalid(e.to_string()))?
            .map_err(|e| EngineError::Io {
                what: format!("processes of {}", row.name),
                reason: e.to_string(),
            })?;
        let mut out = Vec::new();
        for pid in pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let command = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
                })
                .and_then(|u| u.parse().ok());
            out.push(ProcessView { pid, uid, command });
        }
        Ok(out)
    }

    /// The container's log file.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join(shim::LOG_FILE)
    }
}

/// Whether a container's processes exist (running, or paused with its cgroup frozen).
fn is_up(state: &str) -> bool {
    state == "running" || state == "paused"
}

/// Appends a container event (`docker events`); a failure to is logged, not fatal.
async fn emit(db: &Db, action: &str, row: &ContainerRow, extra: &[(&str, String)]) {
    let mut attributes: std::collections::BTreeMap<String, String> = [
        ("name".to_owned(), row.name.clone()),
        ("image".to_owned(), row.image.clone()),
    ]
    .into();
    for (k, v) in extra {
        attributes.insert((*k).to_owned(), v.clone());
    }
    let event = crate::db::NewEvent {
        kind: "container",
        action,
        actor_id: &row.id,
        attributes,
    };
    if let Err(e) = db.record_event(&event).await {
        tracing::warn!(container = %row.name, error = %e, "could not record an event");
    }
}

/// A network failure as the engine tells it.
fn net_error(e: crate::network::NetworkError) -> EngineError {
    use crate::network::NetworkError as N;
    match e {
        N::NoNetwork(name) => EngineError::NoNetwork(name),
        N::Invalid(reason) => EngineError::Invalid(reason),
        e @ (N::InUse { .. } | N::Taken { .. } | N::Exhausted { .. }) => {
            EngineError::Invalid(e.to_string())
        }
        N::Database(DbError::Conflict { what }) => EngineError::Invalid(what),
        other => EngineError::Io {
            what: "networking".into(),
            reason: other.to_string(),
        },
    }
}

fn new_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the kernel gives random bytes");
    hex::encode(bytes)
}

/// docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn check_name(name: &str) -> Result<(), EngineError> {
    let bytes = name.as_bytes();
    let ok = bytes.len() >= 2
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "container name {name:?} is not valid: [a-zA-Z0-9][a-zA-Z0-9_.-]+"
        )))
    }
}

#[cfg(test)]
mod net_tests {
    #[test]
    fn net_dev_counts_all_but_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    5000      10    0    0    0     0          0         0     7000      12    0    0    0     0       0          0\n";
        assert_eq!(super::net_bytes(text), (5000, 7000));
    }
}
