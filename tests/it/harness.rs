//! The test harness: the real daemon, in-process or as a child process, on port 0 with a fresh
//! temporary data root and socket, torn down when the guard drops.
//!
//! Every test that needs root calls [`skip_unless_root`] first. A skip prints its reason and is
//! appended to the file named by `WHARF_TEST_SKIP_LOG`; the test command fails when that file is
//! not empty after a run as root.

#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::sync::oneshot;
use wharf::cli::client::{ApiClient, Endpoint};
use wharf::config::{Config, LogFormat, TlsMode};
use wharf::startup::{Application, StartupError};

/// The `wharf` binary built for these tests.
pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

/// The environment variables the daemon reads; cleared from every child so the developer's own
/// settings never leak into a test.
const WHARF_ENV: [&str; 13] = [
    "WHARF_TLS",
    "WHARF_TLS_CERT",
    "WHARF_TLS_KEY",
    "WHARF_TLS_CA",
    "WHARF_CONFIG",
    "WHARF_DATA_ROOT",
    "WHARF_LISTEN",
    "WHARF_SOCKET",
    "WHARF_SOCKET_GROUP",
    "WHARF_LOG",
    "WHARF_LOG_FORMAT",
    "WHARF_HOST",
    "WHARF_TOKEN",
];

/// Records a skipped test: printed, and appended to `$WHARF_TEST_SKIP_LOG` when set.
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
    if let Ok(log) = std::env::var("WHARF_TEST_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
    {
        let _ = writeln!(f, "{test}: {reason}");
    }
}

/// True (after recording the skip) when the test cannot run because we are not root.
pub fn skip_unless_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    skip(
        test,
        "needs root (run the test command as root, as CI does)",
    );
    true
}

/// True (after recording the skip) when `program` is not installed; `package` is the Debian
/// package that brings it.
pub fn skip_unless_installed(test: &str, program: &str, package: &str) -> bool {
    if Path::new(program).exists() {
        return false;
    }
    let name = Path::new(program)
        .file_name()
        .map_or(program.into(), |n| n.to_string_lossy());
    skip(
        test,
        &format!("{name} is missing: install the {package} package"),
    );
    true
}

/// A daemon's settings for a test: everything under `dir`, TCP on 127.0.0.1 port 0.
pub fn test_config(dir: &Path) -> Config {
    Config {
        data_root: dir.join("data"),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        registry_listen: Some("127.0.0.1:0".parse().unwrap()),
        registry_upload_max_age: std::time::Duration::from_secs(24 * 60 * 60),
        event_retention: wharf::config::DEFAULT_EVENT_RETENTION,
        // Containers of tests stay off the host's network; the network tests run their
        // daemons in namespaces of their own with bridges.
        default_network: "none".to_owned(),
        bridge_subnet: wharf::network::DEFAULT_SUBNET.to_owned(),
        socket: dir.join("run/wharf.sock"),
        socket_group: None,
        log_level: "warn".to_owned(),
        log_format: LogFormat::Text,
        tls: TlsMode::Auto,
        tls_cert: None,
        tls_key: None,
        insecure_registries: Vec::new(),
        config_file: None,
        shim_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_wharf"))),
    }
}

/// The real application, running on its own thread and runtime, stopped on drop.
pub struct TestDaemon {
    pub dir: TempDir,
    pub data_root: PathBuf,
    pub socket: PathBuf,
    pub tcp: SocketAddr,
    /// The built-in registry's address, when it is on.
    pub registry: Option<SocketAddr>,
    /// The first-run setup URL the daemon printed (a fresh data root has no users).
    pub setup_url: Option<String>,
    admin_token: tokio::sync::OnceCell<String>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl TestDaemon {
    /// `unix://` and the daemon's socket, for the `wharf` client.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Loads the busybox test image (see [`load_busybox`]).
    pub fn load_busybox(&self, busybox: &[u8]) {
        load_busybox(&self.host(), self.dir.path(), busybox);
    }

    /// Starts a daemon with the [`test_config`] in a fresh temporary directory.
    pub fn start() -> TestDaemon {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = test_config(dir.path());
        Self::start_in(dir, config).unwrap_or_else(|e| panic!("daemon did not start: {e}"))
    }

    /// Starts a daemon with `config`; `dir` is kept for the daemon's lifetime.
    pub fn start_in(dir: TempDir, config: Config) -> Result<TestDaemon, StartupError> {
        let data_root = config.data_root.clone();
        let socket = config.socket.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let app = match Application::build(config).await {
                    Ok(app) => app,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let ready = (
                    app.tcp_addr().expect("TCP listener"),
                    app.registry_addr(),
                    app.setup_url().map(str::to_owned),
                );
                let _ = ready_tx.send(Ok(ready));
                app.run_until_stopped(async {
                    let _ = shutdown_rx.await;
                })
                .await
                .map_err(|e| e.to_string())
            })
        });
        match ready_rx.recv().expect("daemon thread reports") {
            Ok((tcp, registry, setup_url)) => Ok(TestDaemon {
                dir,
                data_root,
                socket,
                tcp,
                registry,
                setup_url,
                admin_token: tokio::sync::OnceCell::new(),
                shutdown: Some(shutdown_tx),
                thread: Some(thread),
            }),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    pub fn unix_client(&self) -> ApiClient {
        ApiClient::new(Endpoint::Unix(self.socket.clone()), None)
    }

    /// An anonymous client over TCP.
    pub fn tcp_client(&self) -> ApiClient {
        self.tcp_client_with(None)
    }

    /// A client over TCP presenting `token`.
    pub fn tcp_client_with(&self, token: Option<String>) -> ApiClient {
        ApiClient::new(
            Endpoint::Http {
                authority: self.tcp.to_string(),
            },
            token,
        )
    }

    /// Creates a user through the socket (as the local root) and returns an API token for it.
    pub async fn user_with_token(&self, name: &str, role: &str) -> String {
        let socket = self.unix_client();
        let _: serde_json::Value = socket
            .send_json(
                hyper::Method::POST,
                "/api/v1/users",
                &serde_json::json!({"name": name, "role": role, "password": format!("{name}-password")}),
            )
            .await
            .unwrap_or_else(|e| panic!("create user {name}: {e}"));
        let created: wharf::api::CreatedToken = socket
            .send_json(
                hyper::Method::POST,
                "/api/v1/tokens",
                &serde_json::json!({"name": "test", "user": name}),
            )
            .await
            .unwrap_or_else(|e| panic!("token for {name}: {e}"));
        created.token
    }

    /// A TCP client with an admin's API token (the admin `admin` is created on first use).
    pub async fn admin_client(&self) -> ApiClient {
        let token = self
            .admin_token
            .get_or_init(|| self.user_with_token("admin", "admin"))
            .await;
        self.tcp_client_with(Some(token.clone()))
    }

    /// Stops the daemon cleanly and returns its result; the temporary directory stays alive.
    pub fn stop(&mut self) -> Result<(), String> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| "daemon thread panicked".to_owned())?,
            None => Ok(()),
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A `wharf` command with the developer's `WHARF_*` settings removed.
pub fn wharf_command() -> Command {
    let mut cmd = Command::new(WHARF);
    for name in WHARF_ENV {
        cmd.env_remove(name);
    }
    cmd
}

/// `wharf serve` as a child process, in its own temporary directory, killed on drop.
pub struct DaemonProcess {
    pub dir: TempDir,
    pub data_root: PathBuf,
    pub socket: PathBuf,
    child: Child,
    stderr: PathBuf,
}

impl DaemonProcess {
    /// The `wharf serve` command for `dir`: data root, socket and an empty config file inside it,
    /// TCP on 127.0.0.1 port 0. Tests add or override flags and environment.
    pub fn command(dir: &Path) -> Command {
        Self::command_with_network(dir, "none")
    }

    /// [`DaemonProcess::command`] whose containers join `default_network` unless told.
    pub fn command_with_network(dir: &Path, default_network: &str) -> Command {
        let config = dir.join("wharf.toml");
        if !config.exists() {
            std::fs::write(&config, "").unwrap();
        }
        let mut cmd = wharf_command();
        cmd.arg("serve")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--socket")
            .arg(dir.join("wharf.sock"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--registry-listen")
            .arg("127.0.0.1:0")
            // Containers of tests stay off the host's network unless the daemon has a
            // network namespace of its own (see `DaemonProcess::start_in_netns`).
            .arg("--default-network")
            .arg(default_network)
            .env("WHARF_CONFIG", config)
            .env("WHARF_LOG", "info");
        cmd
    }

    /// Spawns `cmd` (usually from [`DaemonProcess::command`]) with stderr captured to a file.
    pub fn spawn(dir: TempDir, mut cmd: Command) -> DaemonProcess {
        let stderr = dir.path().join("daemon.stderr");
        let file = std::fs::File::create(&stderr).unwrap();
        // The child gets its own process group so that a SIGINT meant for the test runner does
        // not reach it, and so that it cannot outlive us unnoticed.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .process_group(0);
        let child = cmd.spawn().expect("spawn wharf serve");
        DaemonProcess {
            data_root: dir.path().join("data"),
            socket: dir.path().join("wharf.sock"),
            dir,
            child,
            stderr,
        }
    }

    /// A daemon in the network namespace `netns` (see [`Netns`]), whose containers join the
    /// default bridge network: its bridges, veths and nftables rules never touch the host's
    /// network, and go with the namespace.
    pub fn start_in(netns: &Netns) -> DaemonProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Self::spawn_in(dir, netns);
        daemon.wait_ready();
        daemon
    }

    fn spawn_in(dir: TempDir, netns: &Netns) -> DaemonProcess {
        let mut cmd = Self::command_with_network(dir.path(), "bridge");
        let file = std::fs::File::open(&netns.path).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: between fork and exec only setns on a descriptor we hold open until spawn.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let daemon = Self::spawn(dir, cmd);
        drop(file);
        daemon
    }

    /// SIGKILLs the daemon and starts another on the same data root.
    pub fn kill_and_restart(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(10)).expect("killed");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let cmd = Self::command(dir.path());
        let mut daemon = Self::spawn(dir, cmd);
        daemon.wait_ready();
        *self = daemon;
    }

    /// SIGKILLs the daemon and starts another on the same data root in `netns`.
    pub fn kill_and_restart_in(&mut self, netns: &Netns) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(10)).expect("killed");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let mut daemon = Self::spawn_in(dir, netns);
        daemon.wait_ready();
        *self = daemon;
    }

    /// Spawns the daemon with the default test flags and waits until it answers on its socket.
    pub fn start() -> DaemonProcess {
        let dir = tempfile::tempdir().unwrap();
        let cmd = Self::command(dir.path());
        let mut daemon = Self::spawn(dir, cmd);
        daemon.wait_ready();
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A started daemon with the busybox fixture loaded as `wharf-test/busybox:latest`;
    /// `None` after a recorded skip (not root, or no busybox).
    pub fn with_busybox(test: &str) -> Option<DaemonProcess> {
        if skip_unless_root(test) {
            return None;
        }
        let busybox = crate::fixtures::busybox(test)?;
        let daemon = DaemonProcess::start();
        load_busybox(&daemon.host(), daemon.dir.path(), &busybox);
        Some(daemon)
    }

    /// `unix://SOCKET`, for `wharf -H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs the client against this daemon: its status, stdout and stderr.
    pub fn wharf(&self, args: &[&str]) -> (ExitStatus, String, String) {
        run_wharf(wharf_command().args(["-H", &self.host()]).args(args))
    }

    /// Waits (up to 20 s) until `/healthz` answers on the socket; panics with the daemon's stderr otherwise.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("wharf serve exited with {status}:\n{}", self.stderr());
            }
            if healthz_over_socket(&self.socket) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("wharf serve not ready after 20 s:\n{}", self.stderr());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the daemon (by the pid we started).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// What the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One blocking `GET /healthz` over a unix socket; true on `200`.
fn healthz_over_socket(socket: &Path) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: wharf\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// Runs a `wharf` command to completion and returns (status, stdout, stderr).
pub fn run_wharf(cmd: &mut Command) -> (ExitStatus, String, String) {
    cmd.stdin(Stdio::null());
    let output = cmd.output().expect("run wharf");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Removes every container of the daemon at `host` (`unix://…`): for the guards of tests that
/// start containers, which outlive their daemon by design, so a failed assertion must not
/// leave them running on the host.
pub fn remove_all_containers(host: &str) {
    let (_, ids, _) = run_wharf(wharf_command().args(["-H", host, "ps", "-a", "-q"]));
    for id in ids.split_whitespace() {
        let _ = run_wharf(wharf_command().args(["-H", host, "rm", "-f", id]));
    }
}

/// Waits up to 20 s for `done`, looking every 50 ms; fails naming `what`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Loads the busybox test image as `wharf-test/busybox:latest` (its command `sh`) into the
/// daemon at `host`, through an archive written in `dir`.
pub fn load_busybox(host: &str, dir: &Path, busybox: &[u8]) {
    let archive = dir.join("busybox.tar");
    crate::fixtures::ImageBuilder::busybox(busybox)
        .cmd(&["sh"])
        .build()
        .write_docker_archive(&archive, "wharf-test/busybox:latest");
    let (status, _, err) = run_wharf(
        wharf_command()
            .args(["-H", host, "load", "-q", "-i"])
            .arg(&archive),
    );
    assert!(status.success(), "{err}");
}

/// Removes the containers of the daemon at `host` however the test ends.
pub struct RemoveContainers(pub String);

impl Drop for RemoveContainers {
    fn drop(&mut self) {
        remove_all_containers(&self.0);
    }
}

/// Runs a `wharf` command with `input` on its standard input.
pub fn run_wharf_input(cmd: &mut Command, input: &str) -> (ExitStatus, String, String) {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run wharf");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().expect("wait for wharf");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a `wharf` command with its standard error on a terminal (a pty the test opens), as a
/// user at a shell has it; returns (status, stdout, what the terminal showed).
pub fn run_wharf_on_terminal(cmd: &mut Command) -> (ExitStatus, String, String) {
    use std::io::Read;
    let pty = nix::pty::openpty(None, None).expect("open a pty");
    let mut master = std::fs::File::from(pty.master);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(pty.slave));
    let child = cmd.spawn().expect("run wharf");
    // Replacing the Command's stderr closes our copy of the slave end, so the master reads EOF
    // (EIO) once wharf exits.
    cmd.stderr(Stdio::null());
    let reader = std::thread::spawn(move || {
        let mut shown = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => shown.extend_from_slice(&buf[..n]),
            }
        }
        shown
    });
    let output = child.wait_with_output().expect("wait for wharf");
    let shown = reader.join().expect("pty reader");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&shown).into_owned(),
    )
}

/// A network namespace made for a test (only `lo`, up), kept in a file (as `ip netns` does)
/// so that daemons can be started in it one after another; gone on drop.
pub struct Netns {
    _dir: TempDir,
    pub path: PathBuf,
}

impl Netns {
    pub fn new() -> Netns {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net");
        std::fs::File::create(&path).unwrap();
        let target = path.clone();
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            // SAFETY: socket, ioctl and close on a descriptor of this thread.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                assert!(fd >= 0);
                let mut req: libc::ifreq = std::mem::zeroed();
                req.ifr_name[0] = b'l' as libc::c_char;
                req.ifr_name[1] = b'o' as libc::c_char;
                req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK) as libc::c_short;
                assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req), 0);
                libc::close(fd);
            }
            let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
            nix::mount::mount(
                Some(own.as_str()),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .unwrap();
        })
        .join()
        .unwrap();
        Netns { _dir: dir, path }
    }

    /// Runs `sh -c script` with the host's busybox inside the namespace; its stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.path.display()))
            .args(["/bin/busybox", "sh", "-c", script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The stdout of a command that must have succeeded (`what` names it in the failure, with
/// its output).
pub fn succeeded(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
