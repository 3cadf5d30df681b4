//! The lifecycle verbs: create, start, run, kill, delete, pause, resume, state, list, ps.
//! Each one: load the state → derive the status → check the guard → act → save.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;

use super::cgroups::{self, Cgroup, CgroupError};
use super::channel::{Channel, ChannelError, Child, Parent};
use super::init::{self, InitArgs};
use super::process;
use super::spec::{self, Bundle, SpecError};
use super::state::{State, StateError, StateRoot, Status, process_start_time};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("{0}")]
    Init(String),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {action} container {id:?}: it is {status}{hint}")]
    WrongState {
        id: String,
        action: &'static str,
        status: Status,
        hint: &'static str,
    },
    #[error("unknown signal {0:?}")]
    Signal(String),
}

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Sys { what, source }
}

fn nix_sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::Sys {
        what,
        source: std::io::Error::from(e),
    }
}

/// The runtime's settings for one invocation.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub root: StateRoot,
    /// Where the cgroup file systems are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    /// Where to send the pty master when `process.terminal` is set.
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
}

/// The annotation that asks for the built-in minimal init (`docker run --init`).
pub const INIT_ANNOTATION: &str = "io.wharf.init";

/// What `exec` runs in a container.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub process: oci_spec::runtime::Process,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
}

/// Connects to the console socket when the process wants a terminal.
fn console_for(
    wants_terminal: bool,
    socket: Option<&Path>,
) -> Result<Option<std::os::unix::net::UnixStream>, RuntimeError> {
    match (wants_terminal, socket) {
        (false, _) => Ok(None),
        (true, None) => Err(RuntimeError::Init(
            "process.terminal is set but no --console-socket was given to send the terminal to"
                .into(),
        )),
        (true, Some(path)) => std::os::unix::net::UnixStream::connect(path)
            .map(Some)
            .map_err(sys(format!(
                "connect to the console socket {}",
                path.display()
            ))),
    }
}

/// A container just created by this process (its init is our child).
pub struct Created {
    pub pid: i32,
    exec_error: File,
    /// Whether the spec has poststart or poststop hooks.
    late_hooks: bool,
}

impl Created {
    /// Waits until the started program has replaced the init (its `execve` succeeded), or
    /// returns why it could not ("exec failed: …").
    pub fn exec_result(&mut self) -> Result<(), String> {
        let mut message = String::new();
        let _ = (&self.exec_error).read_to_string(&mut message);
        if message.is_empty() {
            Ok(())
        } else {
            Err(message)
        }
    }
}

/// Undoes a half-made container when creation fails.
struct CreateGuard<'a> {
    runtime: &'a Runtime,
    id: &'a str,
    cgroup: Option<Cgroup>,
    child: Option<i32>,
    armed: bool,
}

impl CreateGuard<'_> {
    /// Makes the container's cgroup (removed again if creation fails later) with its limits.
    fn make_cgroup(
        &mut self,
        cgroup: Cgroup,
        resources: Option<&oci_spec::runtime::LinuxResources>,
    ) -> Result<(), RuntimeError> {
        cgroup.create()?;
        let cgroup = self.cgroup.insert(cgroup);
        if let Some(resources) = resources {
            cgroup.apply(resources)?;
        }
        Ok(())
    }
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.child {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.remove();
        }
        let _ = self.runtime.root.remove(self.id);
    }
}

/// Receives the container init's next step, which must be `wanted` (named `name`), or the
/// reason it failed.
fn next_step(channel: &mut Channel, wanted: Child, name: &'static str) -> Result<(), RuntimeError> {
    match channel.recv::<Child>(name)? {
        Child::Failed { message } => Err(RuntimeError::Init(message)),
        got if got == wanted => Ok(()),
        got => Err(RuntimeError::Init(format!(
            "the container init sent {got:?} where {name} was due"
        ))),
    }
}

fn default_cgroup_path(id: &str) -> String {
    format!("/wharf/{id}")
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime {
            root: StateRoot::new(root),
            cgroup_root: PathBuf::from(cgroups::DEFAULT_ROOT),
        }
    }

    /// The spec's seccomp filter as BPF, compiled here (or found in the cache under the state
    /// root) before any child exists.
    fn seccomp_program(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<Option<super::seccomp::Program>, RuntimeError> {
        let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
            return Ok(None);
        };
        super::seccomp::program(profile, Some(&self.root.seccomp_cache()))
            .map(Some)
            .map_err(|e| RuntimeError::Init(e.to_string()))
    }

    fn cgroup_of(&self, state: &State) -> Result<Cgroup, RuntimeError> {
        Ok(Cgroup::open(&self.cgroup_root, &state.cgroup_path)?)
    }

    /// Creates the container: namespaces, cgroup and root filesystem ready, its init waiting
    /// for `start`. Must be called from a single-threaded process.
    pub fn create(&self, id: &str, options: &CreateOptions) -> Result<Created, RuntimeError> {
        self.create_then(id, options, false)
    }

    /// [`Runtime::create`]; with `at_once` there is no exec fifo and the init goes on to its
    /// program as soon as it is ready, without waiting for a `start` (what `run` wants).
    fn create_then(
        &self,
        id: &str,
        options: &CreateOptions,
        at_once: bool,
    ) -> Result<Created, RuntimeError> {
        spec::check_id(id)?;
        let bundle = Bundle::load(&options.bundle)?;
        let spec = &bundle.spec;
        let linux = spec.linux().as_ref().expect("validated");
        self.root.create_dir(id)?;
        let mut guard = CreateGuard {
            runtime: self,
            id,
            cgroup: None,
            child: None,
            armed: true,
        };

        let cgroup_path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| format!("/{}", p.display().to_string().trim_start_matches('/')))
            .unwrap_or_else(|| default_cgroup_path(id));
        let cgroup = Cgroup::open(&self.cgroup_root, &cgroup_path)?;
        let cgroup_v2 = cgroup.version() == 2;
        let resources = linux.resources().as_ref();
        // cgroup v2: the child is cloned straight into its cgroup, which must exist first. v1:
        // the child writes itself into its cgroups after Proceed, so they are made after the
        // clone, while the child builds its namespaces.
        let (entry, make_later) = if cgroup_v2 {
            guard.make_cgroup(cgroup, resources)?;
            (guard.cgroup.as_ref().expect("made above").entry()?, None)
        } else {
            (cgroup.entry()?, Some(cgroup))
        };

        let mut flags = 0u64;
        let mut join = Vec::new();
        let mut new_namespaces = Vec::new();
        for ns in linux.namespaces().iter().flatten() {
            let clone_flag = CloneFlags::from_bits_truncate(ns.typ() as i32);
            match ns.path() {
                // The cgroup namespace is made by the child once it is in its cgroup, so that
                // the container sees its own cgroup as the root.
                None if ns.typ() == LinuxNamespaceType::Cgroup => new_namespaces.push(ns.typ()),
                None => {
                    flags |= ns.typ() as u64;
                    new_namespaces.push(ns.typ());
                }
                Some(path) if ns.typ() == LinuxNamespaceType::Pid => {
                    // A pid namespace applies to children: join it here, before cloning.
                    let f = File::open(path)
                        .map_err(sys(format!("open namespace {}", path.display())))?;
                    nix::sched::setns(&f, CloneFlags::CLONE_NEWPID)
                        .map_err(nix_sys(format!("join {}", path.display())))?;
                }
                Some(path) => join.push((path.clone(), clone_flag)),
            }
        }

        let wants_terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
        let console = console_for(wants_terminal, options.console_socket.as_deref())?;
        let new_user_ns = new_namespaces.contains(&LinuxNamespaceType::User);
        // The mount, uts, ipc and network namespaces are made by the child itself, in parallel
        // with the parent's cgroup work; with a new user namespace all come from the clone, so
        // that they belong to it from the start.
        let (clone_flags, unshare) = if new_user_ns {
            (flags, CloneFlags::empty())
        } else {
            // pid (and time) namespaces apply to children: those stay with the clone.
            let moved = flags
                & (libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWNET)
                    as u64;
            (flags & !moved, CloneFlags::from_bits_truncate(moved as i32))
        };
        // A user namespace given by path is joined first, so the others are joined as its root.
        join.sort_by_key(|(_, flag)| *flag != CloneFlags::CLONE_NEWUSER);
        let (mut parent_end, child_end) = Channel::pair().map_err(sys("make the sync channel"))?;
        let (error_read, error_write): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(nix_sys("make the exec error pipe"))?;

        // Enter the cgroup without the global threadgroup lock where possible (see
        // Cgroup::entry); a child in a new user namespace cannot write the host's cgroup files,
        // so the parent moves it.
        let (clone_cgroup, self_join) = match entry {
            cgroups::Entry::CloneInto(dir) => (Some(dir), Vec::new()),
            cgroups::Entry::SelfJoin(files) if !new_user_ns => (None, files),
            cgroups::Entry::SelfJoin(_) => (None, Vec::new()),
        };
        let parent_moves_child = clone_cgroup.is_none() && self_join.is_empty();
        let seccomp = self.seccomp_program(spec)?;
        let fifo = self.root.exec_fifo(id);
        let child = process::clone_into_cgroup(clone_flags, clone_cgroup.as_ref())
            .map_err(sys("clone3 into new namespaces"))?;
        let Some(pid) = child else {
            drop(parent_end);
            drop(error_read);
            init::run(InitArgs {
                id: id.to_owned(),
                bundle: &bundle.dir,
                spec,
                rootfs: &bundle.rootfs,
                channel: child_end,
                exec_fifo: (!at_once).then_some(fifo.as_path()),
                exec_error: error_write,
                join,
                unshare,
                new_namespaces,
                cgroup_v2,
                no_pivot: options.no_pivot,
                join_cgroup: self_join,
                reaper: spec
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(INIT_ANNOTATION))
                    .is_some_and(|v| v == "true"),
                console,
                seccomp,
            });
        };
        guard.child = Some(pid);
        // Read while the init surely lives (it waits for Proceed): under `run` a short program
        // may be gone by the time the state is saved.
        let pid_start = process_start_time(pid).unwrap_or(0);
        process::move_off_this_cpu(pid);
        drop(console);
        drop(child_end);
        drop(error_write);

        if let Some(cgroup) = make_later {
            guard.make_cgroup(cgroup, resources)?;
        }
        if !at_once {
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
                .map_err(nix_sys(format!("make {}", fifo.display())))?;
            // mkfifo applied the umask; the init (maybe another uid in a user namespace) must
            // write.
            std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o622))
                .map_err(sys(format!("chmod {}", fifo.display())))?;
        }
        if new_user_ns {
            write_id_maps(pid, linux)?;
        }
        if parent_moves_child {
            guard.cgroup.as_ref().expect("set above").add_task(pid)?;
        }
        parent_end.send(&Parent::Proceed)?;
        // Without prestart or createRuntime hooks there is nothing to wait for in between.
        if super::hooks::runtime_side(spec) {
            next_step(&mut parent_end, Child::Mounted, "Mounted")?;
            let annotations: std::collections::BTreeMap<String, String> = spec
                .annotations()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            let hook_state =
                super::hooks::state_json(id, "creating", pid, &bundle.dir, &annotations);
            let hooks = spec.hooks().as_ref();
            super::hooks::run(
                "prestart",
                hooks.and_then(|h| h.prestart().as_ref()),
                &hook_state,
            )
            .map_err(RuntimeError::Init)?;
            super::hooks::run(
                "createRuntime",
                hooks.and_then(|h| h.create_runtime().as_ref()),
                &hook_state,
            )
            .map_err(RuntimeError::Init)?;
            parent_end.send(&Parent::HooksDone)?;
        }
        next_step(&mut parent_end, Child::Ready, "Ready")?;

        let state = State {
            id: id.to_owned(),
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            pid,
            pid_start,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            cgroup_path,
            annotations: spec
                .annotations()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            paused: false,
            late_hooks: spec
                .hooks()
                .as_ref()
                .is_some_and(|h| h.poststart().is_some() || h.poststop().is_some()),
        };
        self.root.save(&state)?;
        if let Some(pid_file) = &options.pid_file {
            write_pid_file(pid_file, pid)?;
        }
        guard.armed = false;
        Ok(Created {
            pid,
            exec_error: File::from(error_read),
            late_hooks: state.late_hooks,
        })
    }

    /// Lets a created container run its program.
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let state = self.root.load(id)?;
        let status = self.root.status(&state);
        if !status.can_start() {
            return Err(RuntimeError::WrongState {
                id: id.to_owned(),
                action: "start",
                status,
                hint: "",
            });
        }
        let fifo = self.root.exec_fifo(id);
        // Non-blocking, so a dead init cannot leave us waiting forever.
        let reader = nix::fcntl::open(
            &fifo,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_NONBLOCK
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map(File::from)
        .map_err(nix_sys(format!("open {}", fifo.display())))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut byte = [0u8; 1];
        loop {
            match (&reader).read(&mut byte) {
                Ok(1) => break,
                Ok(_) | Err(_) => {
                    if !super::state::process_is(state.pid, state.pid_start) {
                        return Err(RuntimeError::Init(format!(
                            "the init process of {id:?} died before it was started"
                        )));
                    }
                    if Instant::now() > deadline {
                        return Err(RuntimeError::Init(format!(
                            "the init process of {id:?} did not take the start signal"
                        )));
                    }
                    let mut fds = [nix::poll::PollFd::new(
                        std::os::fd::AsFd::as_fd(&reader),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16));
                }
            }
        }
        std::fs::remove_file(&fifo).map_err(sys(format!("remove {}", fifo.display())))?;
        Self::poststart(&state);
        Ok(())
    }

    /// Runs the poststart hooks of a container that was just started.
    fn poststart(state: &State) {
        if state.late_hooks
            && let Ok(bundle) = Bundle::load(&state.bundle)
            && let Some(hooks) = bundle
                .spec
                .hooks()
                .as_ref()
                .and_then(|h| h.poststart().as_ref())
        {
            let hook_state = super::hooks::state_json(
                &state.id,
                "running",
                state.pid,
                &state.bundle,
                &state.annotations,
            );
            if let Err(message) = super::hooks::run("poststart", Some(hooks), &hook_state) {
                eprintln!("wharf runtime: warning: {message}");
            }
        }
    }

    /// Sends `signal` to the init process (or, with `all`, to every process of the container).
    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError> {
        let state = self.root.load(id)?;
        let status = self.root.status(&state);
        if !status.can_kill() {
            return Err(RuntimeError::WrongState {
                id: id.to_owned(),
                action: "kill",
                status,
                hint: "",
            });
        }
        if all {
            for pid in self.cgroup_of(&state)?.pids()? {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
            }
            if status == Status::Paused {
                self.cgroup_of(&state)?.freeze(false)?;
            }
            return Ok(());
        }
        nix::sys::signal::kill(Pid::from_raw(state.pid), signal)
            .map_err(nix_sys(format!("kill {} {signal}", state.pid)))
    }

    /// Removes a stopped (or, with `force`, any) container: its processes, cgroup and state.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let state = match self.root.load(id) {
            Ok(s) => s,
            Err(StateError::NotFound(_)) if force => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let status = self.root.status(&state);
        if !status.can_delete() && !force {
            return Err(RuntimeError::WrongState {
                id: id.to_owned(),
                action: "delete",
                status,
                hint: ": stop it first, or use --force",
            });
        }
        let cgroup = self.cgroup_of(&state).ok();
        if status != Status::Stopped {
            if let Some(cg) = &cgroup {
                for pid in cg.pids().unwrap_or_default() {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                if status == Status::Paused {
                    let _ = cg.freeze(false);
                }
            }
            let _ = nix::sys::signal::kill(Pid::from_raw(state.pid), Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(10);
            while super::state::process_is(state.pid, state.pid_start) && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if let Some(cg) = cgroup {
            // The last processes may still be leaving the cgroup.
            let deadline = Instant::now() + Duration::from_secs(10);
            while cg.pids().is_ok_and(|p| !p.is_empty()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            cg.remove()?;
        }
        if state.late_hooks
            && let Ok(bundle) = Bundle::load(&state.bundle)
            && let Some(hooks) = bundle
                .spec
                .hooks()
                .as_ref()
                .and_then(|h| h.poststop().as_ref())
        {
            let hook_state =
                super::hooks::state_json(id, "stopped", 0, &state.bundle, &state.annotations);
            if let Err(message) = super::hooks::run("poststop", Some(hooks), &hook_state) {
                eprintln!("wharf runtime: warning: {message}");
            }
        }
        self.root.remove(id)?;
        Ok(())
    }

    pub fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.root.load(id)?;
        let status = self.root.status(&state);
        if !status.can_pause() {
            return Err(RuntimeError::WrongState {
                id: id.to_owned(),
                action: "pause",
                status,
                hint: "",
            });
        }
        self.cgroup_of(&state)?.freeze(true)?;
        state.paused = true;
        Ok(self.root.save(&state)?)
    }

    pub fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.root.load(id)?;
        let status = self.root.status(&state);
        if !status.can_resume() {
            return Err(RuntimeError::WrongState {
                id: id.to_owned(),
                action: "resume",
                status,
                hint: "",
            });
        }
        self.cgroup_of(&state)?.freeze(false)?;
        state.paused = false;
        Ok(self.root.save(&state)?)
    }

    /// The OCI state document, with the cgroup's OOM kill count.
    pub fn state(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        let state = self.root.load(id)?;
        let mut doc = self.root.oci_state(&state);
        if let Ok(stats) = self.cgroup_of(&state).and_then(|c| Ok(c.stats()?)) {
            doc["oomKilled"] = serde_json::json!(stats.oom_kills > 0);
        }
        Ok(doc)
    }

    /// The cgroup statistics of a container.
    pub fn stats(&self, id: &str) -> Result<cgroups::Stats, RuntimeError> {
        let state = self.root.load(id)?;
        Ok(self.cgroup_of(&state)?.stats()?)
    }

    /// The host pids of the container's processes.
    pub fn processes(&self, id: &str) -> Result<Vec<i32>, RuntimeError> {
        let state = self.root.load(id)?;
        Ok(self.cgroup_of(&state)?.pids()?)
    }

    /// Every container under the root with its state document.
    pub fn list(&self) -> Result<Vec<serde_json::Value>, RuntimeError> {
        let mut out = Vec::new();
        for id in self.root.list()? {
            if let Ok(state) = self.root.load(&id) {
                out.push(self.root.oci_state(&state));
            }
        }
        Ok(out)
    }

    /// Runs another process in a running container: it joins the init's namespaces and cgroup,
    /// takes the spec's identity, capabilities and seccomp profile, and never sees a host
    /// descriptor. Returns its exit code (0 at once with `detach`).
    pub fn exec(&self, id: &str, options: &ExecOptions) -> Result<i32, RuntimeError> {
        let state = self.root.load(id)?;
        let status = self.root.status(&state);
        if !matches!(status, Status::Running | Status::Created) {
            return Err(RuntimeError::WrongState {
                id: id.to_owned(),
                action: "exec in",
                status,
                hint: "",
            });
        }
        let bundle = Bundle::load(&state.bundle)?;
        let linux = bundle.spec.linux().as_ref().expect("validated");
        let order = [
            LinuxNamespaceType::User,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
        ];
        let wanted: Vec<LinuxNamespaceType> = linux
            .namespaces()
            .iter()
            .flatten()
            .map(|n| n.typ())
            .collect();
        let mut namespaces = Vec::new();
        for typ in order.into_iter().filter(|t| wanted.contains(t)) {
            let path = format!("/proc/{}/ns/{typ}", state.pid);
            let file = File::open(&path).map_err(sys(format!("open {path}")))?;
            namespaces.push((typ, file));
        }
        let console = console_for(
            options.process.terminal() == Some(true),
            options.console_socket.as_deref(),
        )?;
        let cgroup = self.cgroup_of(&state)?;
        let (error_read, error_write): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(nix_sys("make the exec error pipe"))?;
        let (go_read, go_write): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(nix_sys("make the start pipe"))?;
        // No process in the container may reach into this one, or through /proc/<pid>/exe to
        // the host's wharf binary (CVE-2019-5736).
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        // The pid namespace applies to children: join it here; the child joins the others.
        if let Some((_, pid_ns)) = namespaces
            .iter()
            .find(|(t, _)| *t == LinuxNamespaceType::Pid)
        {
            nix::sched::setns(pid_ns, CloneFlags::CLONE_NEWPID)
                .map_err(nix_sys("join the pid namespace"))?;
        }
        let filter = self.seccomp_program(&bundle.spec)?;
        let child = process::clone_into(0).map_err(sys("fork the exec process"))?;
        let Some(pid) = child else {
            drop(error_read);
            drop(go_write);
            let message = exec_child(
                go_read,
                &namespaces,
                console.as_ref(),
                &options.process,
                filter.as_ref(),
                !options.detach,
            );
            let mut pipe = File::from(error_write);
            let _ = std::io::Write::write_all(&mut pipe, message.as_bytes());
            std::process::exit(127);
        };
        drop(error_write);
        drop(go_read);
        drop(console);
        let joined = cgroup.add_task(pid);
        drop(go_write); // EOF tells the child to go on
        joined?;
        let mut message = String::new();
        let _ = (&File::from(error_read)).read_to_string(&mut message);
        if !message.is_empty() {
            let _ = waitpid(Pid::from_raw(pid), None);
            return Err(RuntimeError::Init(message));
        }
        if let Some(pid_file) = &options.pid_file {
            write_pid_file(pid_file, pid)?;
        }
        if options.detach {
            return Ok(0);
        }
        wait_forwarding_signals(pid)
    }

    /// Create and start in one (the init goes on to its program as soon as it is ready, so its
    /// state is saved while the program may already run), then wait; returns the exit code
    /// (128+N for a death by signal N). The container is deleted when its program ends.
    pub fn run(
        &self,
        id: &str,
        options: &CreateOptions,
        detach: bool,
    ) -> Result<i32, RuntimeError> {
        let created = self.create_then(id, options, true)?;
        let mut message = String::new();
        let _ = (&created.exec_error).read_to_string(&mut message);
        if !message.is_empty() {
            let _ = waitpid(Pid::from_raw(created.pid), None);
            let _ = self.delete(id, true);
            return Err(RuntimeError::Init(message));
        }
        // The program has been executed: poststart's moment.
        if created.late_hooks {
            match self.root.load(id) {
                Ok(state) => Self::poststart(&state),
                Err(e) => {
                    let _ = self.delete(id, true);
                    return Err(e.into());
                }
            }
        }
        if detach {
            return Ok(0);
        }
        let code = wait_forwarding_signals(created.pid)?;
        self.delete(id, true)?;
        Ok(code)
    }
}

/// The exec child: wait for the parent, join the namespaces (mount last), take the terminal,
/// then the process's limits, identity, capabilities, cwd and seccomp, and exec. Returns only
/// the reason it failed.
fn exec_child(
    go: OwnedFd,
    namespaces: &[(LinuxNamespaceType, File)],
    console: Option<&std::os::unix::net::UnixStream>,
    process: &oci_spec::runtime::Process,
    filter: Option<&super::seccomp::Program>,
    die_with_parent: bool,
) -> String {
    let run = || -> Result<std::convert::Infallible, String> {
        // SAFETY: restoring SIGPIPE's default disposition, which the runtime ignores, so the
        // program does not inherit an ignored SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        let mut byte = [0u8; 1];
        let _ = (&File::from(go)).read(&mut byte);
        // In the container's cgroup now: every CPU of its cpuset, not the caller's mask.
        super::process::reset_affinity();
        for (typ, file) in namespaces
            .iter()
            .filter(|(t, _)| *t != LinuxNamespaceType::Pid)
        {
            nix::sched::setns(file, CloneFlags::empty())
                .map_err(|e| format!("join the {typ} namespace: {}", e.desc()))?;
        }
        nix::unistd::chdir("/").map_err(|e| format!("chdir to /: {}", e.desc()))?;
        if let Some(socket) = console {
            let size = process
                .console_size()
                .map(|b| (b.height() as u16, b.width() as u16));
            super::console::setup(socket, size)?;
        }
        let argv = process.args().clone().unwrap_or_default();
        let env = process.env().clone().unwrap_or_default();
        let program = process::find_executable(argv.first().map_or("", String::as_str), &env)?;
        process::set_rlimits(process)?;
        let nnp = process.no_new_privileges() == Some(true);
        if let (Some(f), false) = (filter, nnp) {
            super::seccomp::load(f).map_err(|e| e.to_string())?;
        }
        process::drop_privileges(process)?;
        process::enter_cwd(process.cwd())?;
        process::close_extra_fds()?;
        if die_with_parent {
            // The helper that waits for this program may be killed (a client gone, a probe
            // past its timeout): the program goes with it rather than run on unwatched. Set
            // after the identity change, which clears it.
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        }
        if let (Some(f), true) = (filter, nnp) {
            super::seccomp::load(f).map_err(|e| e.to_string())?;
        }
        Err(process::exec(&program, &argv, &env))
    };
    match run() {
        Ok(never) => match never {},
        Err(message) if message.starts_with("exec failed") => message,
        Err(message) => format!("exec failed: {message}"),
    }
}

/// Writes the spec's uid and gid mappings for a child in a new user namespace (as root, so
/// setgroups stays allowed).
fn write_id_maps(pid: i32, linux: &oci_spec::runtime::Linux) -> Result<(), RuntimeError> {
    for (file, mappings) in [
        ("uid_map", linux.uid_mappings()),
        ("gid_map", linux.gid_mappings()),
    ] {
        let text: String = mappings
            .iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect();
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, &text).map_err(sys(format!(
            "write {path} ({})",
            text.trim().replace('\n', ", ")
        )))?;
    }
    Ok(())
}

fn write_pid_file(path: &Path, pid: i32) -> Result<(), RuntimeError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string()).map_err(sys(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(sys(format!("write {}", path.display())))
}

static FORWARD: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember_signal(signal: libc::c_int) {
    FORWARD.store(signal, Ordering::SeqCst);
}

/// Waits for `pid`, passing on the signals a user sends to `wharf runtime run`.
fn wait_forwarding_signals(pid: i32) -> Result<i32, RuntimeError> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(remember_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(nix_sys("install signal handlers"))?;
    }
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) => {}
            Err(nix::Error::EINTR) => {
                let signal = FORWARD.swap(0, Ordering::SeqCst);
                if signal != 0 {
                    // SAFETY: kill with a pid we started and a signal number we received.
                    unsafe { libc::kill(pid, signal) };
                }
            }
            Err(e) => return Err(nix_sys(format!("wait for {pid}"))(e)),
        }
    }
}

/// Parses `KILL`, `SIGKILL` or `9`.
pub fn parse_signal(text: &str) -> Result<Signal, RuntimeError> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| RuntimeError::Signal(text.to_owned()));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| RuntimeError::Signal(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(
            parse_signal("NOPE")
                .unwrap_err()
                .to_string()
                .contains("\"NOPE\"")
        );
    }
}
