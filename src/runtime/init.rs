//! The container's init process, from `clone3` to `execve` (the child side of
//! [`super::channel`]'s protocol). It never returns: it execs the container's program or exits.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::channel::{Channel, Child, Parent};
use super::console;
use super::hooks;
use super::process;
use super::reaper;
use super::rootfs;
use super::seccomp;

/// What the init process needs, prepared by the parent before `clone3`.
pub struct InitArgs<'a> {
    pub id: String,
    pub bundle: &'a Path,
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub channel: Channel,
    /// The fifo `start` opens; none when the container starts as soon as it is ready (`run`).
    pub exec_fifo: Option<&'a Path>,
    /// Write end of the CLOEXEC pipe on which an `execve` failure is reported.
    pub exec_error: OwnedFd,
    /// Namespaces to join by path (all but pid, which the parent joined before cloning).
    pub join: Vec<(PathBuf, nix::sched::CloneFlags)>,
    /// New mount, uts, ipc and network namespaces the child makes itself, before waiting for
    /// Proceed (none with a new user namespace: the clone made them all).
    pub unshare: nix::sched::CloneFlags,
    pub new_namespaces: Vec<LinuxNamespaceType>,
    pub cgroup_v2: bool,
    /// cgroup v1 `tasks` files this process writes itself into (see `Cgroup::entry`).
    pub join_cgroup: Vec<PathBuf>,
    /// `--no-pivot`: move the root and chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Run a minimal init as PID 1 that forwards signals and reaps zombies.
    pub reaper: bool,
    /// Connected to `--console-socket`, when the process wants a terminal.
    pub console: Option<std::os::unix::net::UnixStream>,
    /// The spec's seccomp filter, compiled by the parent.
    pub seccomp: Option<seccomp::Program>,
}

/// Everything checked and made ready before the container waits to be started.
struct Prepared {
    fifo: Option<File>,
    program: PathBuf,
}

/// Runs in the child. Never returns.
pub fn run(mut args: InitArgs) -> ! {
    // SAFETY: restoring the default disposition of SIGPIPE, which the Rust runtime ignores; an
    // ignored signal would stay ignored in the container's program.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let prepared = match prepare(&mut args) {
        Ok(p) => p,
        Err(message) => {
            let _ = args.channel.send(&Child::Failed { message });
            std::process::exit(1);
        }
    };
    if args.channel.send(&Child::Ready).is_err() {
        std::process::exit(1);
    }
    drop(args.channel);
    let waited = prepared.fifo.as_ref().map_or(Ok(()), wait_for_start);
    let started = waited.and_then(|()| {
        let state = hooks::state_json(
            &args.id,
            "created",
            std::process::id() as i32,
            args.bundle,
            &Default::default(),
        );
        let hooks = args
            .spec
            .hooks()
            .as_ref()
            .and_then(|h| h.start_container().as_ref());
        hooks::run("startContainer", hooks, &state)
    });
    let message = match started.and_then(|()| finish(args.spec, args.seccomp.as_ref())) {
        Ok(()) => {
            let process = args.spec.process().as_ref().expect("validated");
            let argv = process.args().clone().unwrap_or_default();
            let env = process.env().clone().unwrap_or_default();
            if args.reaper {
                match reaper::fork_program() {
                    Ok(reaper::Role::Program) => process::exec(&prepared.program, &argv, &env),
                    Ok(reaper::Role::Reaper(child)) => {
                        drop(args.exec_error);
                        reaper::serve(child)
                    }
                    Err(message) => message,
                }
            } else {
                process::exec(&prepared.program, &argv, &env)
            }
        }
        Err(message) => message,
    };
    let mut pipe = File::from(args.exec_error);
    let _ = pipe.write_all(message.as_bytes());
    let _ = writeln!(std::io::stderr(), "wharf runtime: {message}");
    std::process::exit(127);
}

fn prepare(args: &mut InitArgs) -> Result<Prepared, String> {
    let in_user_ns = args.new_namespaces.contains(&LinuxNamespaceType::User);
    // The cgroup files are reached through the host's mounts, whatever namespaces come next.
    // (Only cgroup v1 joins itself; v2 was cloned into its cgroup.)
    let host_root = if args.join_cgroup.is_empty() {
        None
    } else {
        Some(File::open("/").map_err(|e| format!("open /: {}", process::io_message(&e)))?)
    };
    // Without a new user namespace, the namespaces and the root's mounts are made while the
    // parent makes the cgroup (so their memory counts against the runtime's cgroup, not the
    // container's); a failure is told once the parent listens.
    let early = (!in_user_ns).then(|| enter_and_mount(args));
    let _: Parent = args.channel.recv("Proceed").map_err(|e| e.to_string())?;
    if let Some(root) = host_root {
        super::cgroups::join_self(&root, &args.join_cgroup).map_err(|e| e.to_string())?;
    }
    // The parent may have moved us off its CPU; the program gets every CPU of its cpuset.
    process::reset_affinity();
    match early {
        Some(done) => done?,
        None => {
            // The parent has written our id maps: become the namespace's root.
            nix::unistd::setresgid(0.into(), 0.into(), 0.into())
                .map_err(|e| format!("become gid 0 in the user namespace: {}", e.desc()))?;
            nix::unistd::setresuid(0.into(), 0.into(), 0.into())
                .map_err(|e| format!("become uid 0 in the user namespace: {}", e.desc()))?;
            enter_and_mount(args)?;
        }
    }
    let spec = args.spec;
    // The fifo is reached by descriptor after pivot_root, when its host path is gone.
    let fifo = match args.exec_fifo {
        Some(path) => Some(
            nix::fcntl::open(
                path,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map(File::from)
            .map_err(|e| format!("open {}: {}", path.display(), e.desc()))?,
        ),
        None => None,
    };
    if hooks::runtime_side(spec) {
        args.channel
            .send(&Child::Mounted)
            .map_err(|e| e.to_string())?;
        let _: Parent = args.channel.recv("HooksDone").map_err(|e| e.to_string())?;
    }
    // The parent moved us into our cgroup before Proceed: the namespace shows it as the root.
    if args.new_namespaces.contains(&LinuxNamespaceType::Cgroup) {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("make the cgroup namespace: {}", e.desc()))?;
    }
    rootfs::mount_cgroups(spec, args.rootfs, args.cgroup_v2).map_err(|e| e.to_string())?;
    let state = hooks::state_json(
        &args.id,
        "creating",
        std::process::id() as i32,
        args.bundle,
        &Default::default(),
    );
    hooks::run(
        "createContainer",
        spec.hooks()
            .as_ref()
            .and_then(|h| h.create_container().as_ref()),
        &state,
    )?;
    if args.no_pivot {
        rootfs::move_root(args.rootfs).map_err(|e| e.to_string())?;
    } else {
        rootfs::pivot(args.rootfs).map_err(|e| e.to_string())?;
    }
    rootfs::finish(spec).map_err(|e| e.to_string())?;
    if let Some(socket) = &args.console {
        let size = spec
            .process()
            .as_ref()
            .and_then(|p| p.console_size())
            .map(|b| (b.height() as u16, b.width() as u16));
        console::setup(socket, size)?;
    }

    let process = spec.process().as_ref().expect("validated");
    let argv = process.args().as_deref().unwrap_or_default();
    let env = process.env().as_deref().unwrap_or_default();
    let program =
        process::find_executable(&argv[0], env).map_err(|e| format!("exec failed: {e}"))?;
    // A missing working directory is made, as runc and docker make it (the root is the
    // container's own now, so nothing here can lead outside it).
    if !process.cwd().exists()
        && let Err(e) = std::fs::create_dir_all(process.cwd())
    {
        return Err(format!(
            "cwd {} does not exist in the container and cannot be made: {}",
            process.cwd().display(),
            process::io_message(&e)
        ));
    }
    Ok(Prepared { fifo, program })
}

/// Makes and joins the container's namespaces (all but pid, which came with the clone), sets
/// its host and domain name, brings up `lo` and mounts its root filesystem.
fn enter_and_mount(args: &InitArgs) -> Result<(), String> {
    nix::sched::unshare(args.unshare)
        .map_err(|e| format!("make the container's namespaces: {}", e.desc()))?;
    for (path, flag) in &args.join {
        let ns = File::open(path).map_err(|e| {
            format!(
                "open namespace {}: {}",
                path.display(),
                process::io_message(&e)
            )
        })?;
        nix::sched::setns(&ns, *flag)
            .map_err(|e| format!("join namespace {}: {}", path.display(), e.desc()))?;
    }
    let spec = args.spec;
    if args.new_namespaces.contains(&LinuxNamespaceType::Uts) {
        if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            nix::unistd::sethostname(hostname)
                .map_err(|e| format!("set hostname {hostname:?}: {}", e.desc()))?;
        }
        if let Some(domain) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
            // SAFETY: a valid pointer and length.
            if unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) } != 0 {
                return Err(format!(
                    "set domain name {domain:?}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    if args.new_namespaces.contains(&LinuxNamespaceType::Network) {
        rootfs::loopback_up().map_err(|e| format!("bring up lo: {}", process::io_message(&e)))?;
    }
    rootfs::prepare(spec, args.rootfs, args.cgroup_v2).map_err(|e| e.to_string())
}

/// Blocks until `start` opens the fifo for reading, then tells it we go.
fn wait_for_start(fifo: &File) -> Result<(), String> {
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| format!("open the exec fifo: {}", process::io_message(&e)))?;
    writer
        .write_all(b"0")
        .map_err(|e| format!("write the exec fifo: {}", process::io_message(&e)))
}

/// The last steps, in the order the kernel needs them. The seccomp filter goes last, so it
/// need not allow our own set-up; without no_new_privs it must go in while we still hold
/// CAP_SYS_ADMIN, before privileges are dropped.
fn finish(spec: &Spec, filter: Option<&seccomp::Program>) -> Result<(), String> {
    let process = spec.process().as_ref().expect("validated");
    let nnp = process.no_new_privileges() == Some(true);
    process::set_rlimits(process)?;
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("set oom_score_adj {adj}: {}", process::io_message(&e)))?;
    }
    if let Some(mask) = process.user().umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if let (Some(filter), false) = (filter, nnp) {
        seccomp::load(filter).map_err(|e| e.to_string())?;
    }
    process::drop_privileges(process)?;
    process::enter_cwd(process.cwd())?;
    process::close_extra_fds()?;
    if let (Some(filter), true) = (filter, nnp) {
        seccomp::load(filter).map_err(|e| e.to_string())?;
    }
    Ok(())
}
