//! Bringing the daemon up and down.
//!
//! [`Application::build`] checks the preconditions (root, a usable data root, no other daemon on
//! it), opens and migrates the database, and binds the TCP listener and the unix socket — so a
//! test can start the real application on port 0 and read back the address. [`Application::run_until_stopped`]
//! serves one router on both listeners until its shutdown future resolves, then closes cleanly:
//! connections drained, a `daemon stop` event recorded, the socket removed, the lock released.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::get;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_http::trace::TraceLayer;

use crate::auth::service::SessionPolicy;
use crate::auth::throttle::ThrottlePolicy;
use crate::auth::{Authenticator, Peer};
use crate::config::{Config, DataRoot, LogFormat};
use crate::db::{Db, DbError, NewEvent};
use crate::host::HostInfo;
use crate::tls::{TlsListener, TlsSetup};

/// How long the first-run setup token printed at start stays valid.
const SETUP_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);

/// How long a clean shutdown waits for open connections before closing them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub daemon_id: Arc<str>,
    pub started_at: SystemTime,
    /// The bound TCP address, if the daemon serves on TCP (the real port when 0 was asked).
    pub tcp_addr: Option<SocketAddr>,
    /// The bound address of the registry, if it is on.
    pub registry_addr: Option<SocketAddr>,
    /// SHA-256 fingerprint of the TLS certificate served on TCP, when TLS is on.
    pub tls_fingerprint: Option<String>,
    /// Probed once at start; the kernel and cgroup mode do not change while the daemon runs.
    pub host: Arc<HostInfo>,
    pub auth: Arc<Authenticator>,
    /// Registry garbage collection holds it to write; a manifest push, to read, from checking
    /// its blobs until it is recorded, so a collection never takes a blob a push relies on.
    pub registry_gc: Arc<tokio::sync::RwLock<()>>,
    pub engine: crate::engine::Engine,
}

impl FromRef<AppState> for Db {
    fn from_ref(state: &AppState) -> Db {
        state.db.clone()
    }
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Arc<Authenticator> {
        Arc::clone(&state.auth)
    }
}

/// Why the daemon could not start. Each names the thing at fault and the reason.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "wharf serve must run as root (it runs as uid {uid}): it manages namespaces, cgroups, mounts and the data root"
    )]
    NotRoot { uid: u32 },
    #[error("data root {} is not usable: {what}: {source}", path.display())]
    DataRoot {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another wharf daemon{} is already using data root {} (it holds the lock on {}); stop it or choose another --data-root",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), root.display(), lock.display()
    )]
    AlreadyRunning {
        root: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("network settings: {0}")]
    Network(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve on socket {}: {what}", path.display())]
    Socket { path: PathBuf, what: String },
    #[error("TLS: {0}")]
    Tls(#[source] crate::tls::TlsError),
    #[error("server on {listener} failed: {source}")]
    Serve {
        listener: String,
        #[source]
        source: std::io::Error,
    },
}

/// A daemon that is bound and ready to serve.
pub struct Application {
    state: AppState,
    tcp: Option<TcpListener>,
    tls: Option<TlsSetup>,
    tcp_addr: Option<SocketAddr>,
    registry: Option<TcpListener>,
    registry_addr: Option<SocketAddr>,
    registry_tls: Option<TlsSetup>,
    unix: UnixListener,
    socket: SocketFile,
    setup_url: Option<String>,
    _lock: DaemonLock,
}

impl Application {
    /// Checks the preconditions, opens the database and binds the listeners.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(StartupError::NotRoot { uid: uid.as_raw() });
        }
        let layout = config.layout();
        // One TLS crypto provider (ring) for every rustls user: our listener, registry clients.
        let _ = rustls::crypto::ring::default_provider().install_default();
        prepare_data_root(&layout)?;
        let lock = DaemonLock::acquire(&layout)?;

        let db = Db::open(&layout.database()).await?;
        let daemon_id: Arc<str> = db.daemon_id().await?.into();

        let (tcp, tcp_addr) = match config.listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Listen { addr, source })?;
                let local = listener
                    .local_addr()
                    .map_err(|source| StartupError::Listen { addr, source })?;
                (Some(listener), Some(local))
            }
            None => (None, None),
        };
        let (registry, registry_addr) = match config.registry_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Listen { addr, source })?;
                let local = listener
                    .local_addr()
                    .map_err(|source| StartupError::Listen { addr, source })?;
                (Some(listener), Some(local))
            }
            None => (None, None),
        };
        // One certificate for both listeners, naming both addresses.
        let tls_setup = if config.tls_enabled() || config.registry_tls_enabled() {
            Some(prepare_tls(&config, &layout, &[tcp_addr, registry_addr])?)
        } else {
            None
        };
        let registry_tls = tls_setup
            .as_ref()
            .filter(|_| config.registry_tls_enabled() && registry.is_some())
            .map(|t| TlsSetup {
                acceptor: t.acceptor.clone(),
                fingerprint: t.fingerprint.clone(),
                cert_path: t.cert_path.clone(),
                ca_path: t.ca_path.clone(),
                generated: t.generated,
            });
        let tls = tls_setup.filter(|_| config.tls_enabled());
        let (unix, socket) = bind_socket(&config.socket, config.socket_group.as_deref())?;

        let host = Arc::new(
            tokio::task::spawn_blocking(HostInfo::probe)
                .await
                .map_err(|e| StartupError::Serve {
                    listener: "host probe".into(),
                    source: std::io::Error::other(e),
                })?,
        );
        let auth = Arc::new(Authenticator::new(
            ThrottlePolicy::default(),
            SessionPolicy::default(),
            tls.is_some(),
        ));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let setup_url = if db.count_users().await? == 0 {
            let token = auth.new_setup_token(SETUP_TOKEN_TTL);
            let base = match tcp_addr {
                Some(addr) if addr.ip().is_unspecified() => {
                    let host = nix::unistd::gethostname()
                        .map(|h| h.to_string_lossy().into_owned())
                        .unwrap_or_else(|_| "localhost".into());
                    format!("{scheme}://{host}:{}", addr.port())
                }
                Some(addr) => format!("{scheme}://{addr}"),
                None => "http://<this host>".to_owned(),
            };
            let url = format!("{base}/setup?token={token}");
            let minutes = SETUP_TOKEN_TTL.as_secs() / 60;
            match config.log_format {
                LogFormat::Text => eprintln!(
                    "\nwharf: no users yet. Create the first admin within {minutes} minutes at\n\n    {url}\n\n\
                     or on this host: wharf user add NAME --role admin --password-stdin\n"
                ),
                LogFormat::Json => tracing::warn!(
                    setup_url = %url,
                    valid_minutes = minutes,
                    "no users yet: create the first admin at the setup URL, or with `wharf user add NAME --role admin --password-stdin` on this host"
                ),
            }
            Some(url)
        } else {
            None
        };
        let engine_db = db.clone();
        let shim_exe = match &config.shim_exe {
            Some(path) => path.clone(),
            None => std::env::current_exe().map_err(|source| StartupError::DataRoot {
                path: PathBuf::from("/proc/self/exe"),
                what: "find the wharf binary for container shims".into(),
                source,
            })?,
        };
        db.record_event(&NewEvent {
            kind: "daemon",
            action: "start",
            actor_id: &daemon_id,
            attributes: [("version".to_owned(), crate::VERSION.to_owned())].into(),
        })
        .await?;
        tracing::info!(
            version = crate::VERSION,
            data_root = %layout.root().display(),
            tcp = ?tcp_addr,
            registry = ?registry_addr,
            socket = %config.socket.display(),
            cgroup = %host.cgroup.mode,
            "wharf daemon ready"
        );
        let bridge_subnet = crate::network::ipam::Subnet::parse(&config.bridge_subnet)
            .map_err(StartupError::Network)?;
        let default_network = config.default_network.clone();
        Ok(Application {
            state: AppState {
                db,
                config: Arc::new(config),
                daemon_id,
                started_at: SystemTime::now(),
                tcp_addr,
                registry_addr,
                tls_fingerprint: tls.as_ref().map(|t| t.fingerprint.clone()),
                host,
                auth,
                registry_gc: Arc::new(tokio::sync::RwLock::new(())),
                engine: crate::engine::Engine::new(
                    engine_db.clone(),
                    layout.clone(),
                    shim_exe,
                    Arc::new(crate::network::Networks::new(
                        engine_db,
                        layout.root().join("netns"),
                        bridge_subnet,
                    )),
                    default_network,
                ),
            },
            tcp,
            tls,
            tcp_addr,
            registry,
            registry_addr,
            registry_tls,
            unix,
            socket,
            setup_url,
            _lock: lock,
        })
    }

    /// The one-time first-run setup URL, when the daemon started with no users.
    pub fn setup_url(&self) -> Option<&str> {
        self.setup_url.as_deref()
    }

    /// The bound TCP address (the real port when the config asked for port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The bound registry address (the real port when 0 was asked).
    pub fn registry_addr(&self) -> Option<SocketAddr> {
        self.registry_addr
    }

    /// The path of the API's unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket.path
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves (or a listener fails), then shuts down cleanly.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let Application {
            state,
            tcp,
            tls,
            tcp_addr,
            registry,
            registry_addr,
            registry_tls,
            unix,
            socket,
            setup_url: _,
            _lock,
        } = self;
        if let Err(e) = state.engine.reconcile().await {
            tracing::error!(error = %e, "could not pick up the containers of the last run");
        }
        // Builds do not outlive the daemon: what one that was running left goes.
        crate::builder::steps::clean_leftovers(&state.engine, &state.db, &state.config.layout())
            .await;
        // Events past their retention go hourly (and once at start).
        let events_db = state.db.clone();
        let retention = state.config.event_retention;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600).min(retention));
            loop {
                tick.tick().await;
                let horizon = std::time::SystemTime::now()
                    .checked_sub(retention)
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos() as i64);
                match events_db.prune_events(horizon).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(dropped = n, "dropped events past their retention"),
                    Err(e) => tracing::warn!(error = %e, "could not drop old events"),
                }
            }
        });
        let router = router(state.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let mut servers = JoinSet::new();
        match (tcp, tcp_addr, tls) {
            (Some(tcp), Some(addr), Some(tls)) => {
                let listener =
                    TlsListener::new(tcp, tls.acceptor).map_err(|source| StartupError::Serve {
                        listener: addr.to_string(),
                        source,
                    })?;
                let serve = axum::serve(
                    listener,
                    router.clone().into_make_service_with_connect_info::<Peer>(),
                )
                .with_graceful_shutdown(stopped(stop_rx.clone()));
                servers.spawn(async move { (format!("https://{addr}"), serve.await) });
            }
            (Some(tcp), Some(addr), None) => {
                let serve = axum::serve(
                    tcp,
                    router.clone().into_make_service_with_connect_info::<Peer>(),
                )
                .with_graceful_shutdown(stopped(stop_rx.clone()));
                servers.spawn(async move { (format!("http://{addr}"), serve.await) });
            }
            _ => {}
        }
        let mut registry_thread = None;
        if let (Some(listener), Some(addr)) = (registry, registry_addr) {
            let registry_state =
                crate::registry::RegistryState::new(state.clone(), registry_tls.is_some());
            let uploads = std::sync::Arc::clone(&registry_state.uploads);
            // Abandoned uploads are reaped hourly (and once at start).
            let max_age = state.config.registry_upload_max_age;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(3600).min(max_age));
                loop {
                    tick.tick().await;
                    uploads.reap_all(max_age).await;
                }
            });
            let app = crate::registry::routes::router(registry_state)
                .layer(tower_http::trace::TraceLayer::new_for_http())
                .into_make_service_with_connect_info::<Peer>();
            let scheme = if registry_tls.is_some() {
                "https"
            } else {
                "http"
            };
            let label = format!("registry {scheme}://{addr}");
            let failed = |source| StartupError::Serve {
                listener: addr.to_string(),
                source,
            };
            // The registry runs on a thread and a single-threaded runtime of its own. A push's
            // body comes in frames of tens of KiB; on the shared work-stealing runtime each one
            // also woke an idle worker for nothing (30k context switches for a 256 MiB push,
            // 11k alone). Its hashing and disk writes still go to blocking threads, and a busy
            // registry cannot slow the API or the dashboard down.
            let listener = listener.into_std().map_err(failed)?;
            let stop = stopped(stop_rx.clone());
            let (done, result) = tokio::sync::oneshot::channel();
            let thread = std::thread::Builder::new()
                .name("wharf-registry".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .thread_name("wharf-registry")
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = done.send(Err(e));
                            return;
                        }
                    };
                    let served = runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        match registry_tls {
                            Some(tls) => {
                                let listener = TlsListener::new(listener, tls.acceptor)?;
                                axum::serve(listener, app)
                                    .with_graceful_shutdown(stop)
                                    .await
                            }
                            None => {
                                axum::serve(listener, app)
                                    .with_graceful_shutdown(stop)
                                    .await
                            }
                        }
                    });
                    let _ = done.send(served);
                    // Waits for its blocking tasks (an upload's writes, a pushed image's
                    // unpacking), as the main runtime does for its own when the daemon ends.
                    drop(runtime);
                })
                .map_err(failed)?;
            registry_thread = Some(thread);
            servers.spawn(async move {
                let served = result
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("the registry's thread ended")));
                (label, served)
            });
        }
        let socket_name = socket.path.display().to_string();
        let serve = axum::serve(unix, router.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(stopped(stop_rx));
        servers.spawn(async move { (socket_name, serve.await) });

        let mut failure = None;
        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            Some(done) = servers.join_next() => {
                if let Ok((listener, Err(source))) = done {
                    failure = Some(StartupError::Serve { listener, source });
                }
            }
        }
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(done) = servers.join_next().await {
                if let Ok((listener, Err(source))) = done {
                    failure.get_or_insert(StartupError::Serve { listener, source });
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
            servers.shutdown().await;
        } else if let Some(thread) = registry_thread {
            // The registry's thread ends once its blocking tasks have (an unpack, say), as the
            // main runtime's end waits for its own; not when its connections outlived the drain.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }

        state
            .db
            .record_event(&NewEvent {
                kind: "daemon",
                action: "stop",
                actor_id: &state.daemon_id,
                attributes: Default::default(),
            })
            .await?;
        state.db.close().await;
        drop(socket);
        tracing::info!("wharf daemon stopped");
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Loads the configured certificate, or makes (once) and loads the daemon's own, and says so.
fn prepare_tls(
    config: &Config,
    layout: &DataRoot,
    addrs: &[Option<SocketAddr>],
) -> Result<TlsSetup, StartupError> {
    let setup = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => crate::tls::load(cert, key, None, false),
        _ => {
            let mut names = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ];
            if let Ok(host) = nix::unistd::gethostname() {
                names.insert(0, host.to_string_lossy().into_owned());
            }
            for addr in addrs
                .iter()
                .flatten()
                .filter(|a| !a.ip().is_unspecified() && !a.ip().is_loopback())
            {
                if !names.contains(&addr.ip().to_string()) {
                    names.push(addr.ip().to_string());
                }
            }
            crate::tls::self_signed(&layout.tls_dir(), &names)
        }
    }
    .map_err(StartupError::Tls)?;
    let trust = setup
        .ca_path
        .as_ref()
        .map(|ca| format!("; clients trust {}", ca.display()))
        .unwrap_or_default();
    let made = if setup.generated {
        "made a self-signed TLS certificate"
    } else {
        "TLS certificate"
    };
    match config.log_format {
        LogFormat::Text => eprintln!(
            "wharf: {made} {}\nwharf: SHA-256 fingerprint {}{trust}",
            setup.cert_path.display(),
            setup.fingerprint
        ),
        LogFormat::Json => tracing::info!(
            certificate = %setup.cert_path.display(),
            fingerprint = %setup.fingerprint,
            generated = setup.generated,
            "TLS on the TCP listener"
        ),
    }
    Ok(setup)
}

/// The one router served on every listener.
pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .merge(crate::api::router())
        .merge(crate::web::router());
    crate::web::security_headers(router)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// 200 `ok` while the database answers, 503 otherwise.
async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
    }
}

/// Creates the data root (mode 0711, like docker's) if needed and checks it is a directory.
fn prepare_data_root(layout: &DataRoot) -> Result<(), StartupError> {
    let root = layout.root();
    let fail = |what: &str, source| StartupError::DataRoot {
        path: root.to_owned(),
        what: what.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(root)
        .map_err(|e| fail("cannot create it", e))?;
    let meta = std::fs::metadata(root).map_err(|e| fail("cannot stat it", e))?;
    if !meta.is_dir() {
        return Err(fail(
            "it is not a directory",
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    // What containers and pushes leave here is root's alone: layer trees (which an image may
    // give to any uid), container specs and logs, volumes, uploads in progress, blobs of
    // private repositories.
    for dir in [
        layout.blobs(),
        layout.layers(),
        layout.uploads(),
        root.join("containers"),
        root.join("volumes"),
        root.join("runtime"),
        root.join("builds"),
    ] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| fail(&format!("cannot create {}", dir.display()), e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(&format!("cannot restrict {}", dir.display()), e))?;
    }
    Ok(())
}

/// One daemon per data root: an exclusive `flock` on `<data-root>/wharf.lock`, held for the
/// daemon's lifetime and released by the kernel however the daemon ends. The file holds the
/// holder's pid, for the error message of a second daemon. The file itself is never removed.
struct DaemonLock {
    _file: Flock<File>,
}

impl DaemonLock {
    fn acquire(layout: &DataRoot) -> Result<DaemonLock, StartupError> {
        let path = layout.lock_file();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StartupError::DataRoot {
                path: layout.root().to_owned(),
                what: format!("cannot write {}", path.display()),
                source,
            })?;
        let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StartupError::AlreadyRunning {
                    root: layout.root().to_owned(),
                    lock: path,
                    pid: text.trim().parse().ok(),
                });
            }
            Err((_, errno)) => {
                return Err(StartupError::DataRoot {
                    path: layout.root().to_owned(),
                    what: format!("cannot lock {}", path.display()),
                    source: errno.into(),
                });
            }
        };
        let write_pid = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()
        };
        write_pid(&mut locked).map_err(|source| StartupError::DataRoot {
            path: layout.root().to_owned(),
            what: format!("cannot write {}", path.display()),
            source,
        })?;
        Ok(DaemonLock { _file: locked })
    }
}

/// The socket file; removed when the daemon stops (or fails to start after binding it).
struct SocketFile {
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the API socket at `path`, mode 0660, owned by root and `group`.
///
/// A stale socket left by a daemon that died is replaced; a socket some process still answers
/// on, or a path that is not a socket, is an error — never silently taken over.
fn bind_socket(
    path: &Path,
    group: Option<&str>,
) -> Result<(UnixListener, SocketFile), StartupError> {
    let fail = |what: String| StartupError::Socket {
        path: path.to_owned(),
        what,
    };
    let gid = match group {
        Some(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Some(g.gid),
            Ok(None) => return Err(fail(format!("group {name:?} does not exist"))),
            Err(e) => return Err(fail(format!("cannot look up group {name:?}: {e}"))),
        },
        None => None,
    };
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| fail(format!("cannot create {}: {e}", parent.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(fail(
                    "another process is serving on it (is another wharf daemon running with a different data root?)"
                        .to_owned(),
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
        }
        Ok(_) => return Err(fail("the path exists and is not a socket".to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let listener = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    let socket = SocketFile {
        path: path.to_owned(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| fail(format!("cannot set its mode: {e}")))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| {
            fail(format!(
                "cannot give it to group {}: {e}",
                group.unwrap_or_default()
            ))
        })?;
    }
    Ok((listener, socket))
}
