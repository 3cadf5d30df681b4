//! Containers from images through the daemon: the CLI as users type it, real runtime, real
//! overlayfs, the shim's logs.

use std::time::{Duration, Instant};

use crate::fixtures::{self, ImageBuilder};
use crate::harness::{self, DaemonProcess, run_wharf, wait_until, wharf_command};

const IMAGE: &str = "wharf-test/busybox:latest";

/// A daemon with the busybox fixture loaded as [`IMAGE`]; `None` after a recorded skip.
fn daemon_with_busybox(test: &str) -> Option<DaemonProcess> {
    DaemonProcess::with_busybox(test)
}

fn host(daemon: &DaemonProcess) -> String {
    daemon.host()
}

fn wharf(daemon: &DaemonProcess, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    daemon.wharf(args)
}

/// Mounts under the daemon's data root (its containers' root filesystems).
fn mounts_under(daemon: &DaemonProcess) -> Vec<String> {
    let root = daemon.data_root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&root))
        .collect()
}

#[test]
fn run_rm_prints_the_output_and_leaves_nothing_behind() {
    let test = "containers::run_rm_prints_the_output_and_leaves_nothing_behind";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let (status, out, err) = wharf(&daemon, &["run", "--rm", IMAGE, "echo", "hello"]);
    assert!(status.success(), "{err}");
    assert_eq!(out, "hello\n");
    let (_, out, _) = wharf(&daemon, &["ps", "-a", "-q"]);
    assert_eq!(out, "", "the container is gone");
    assert!(
        mounts_under(&daemon).is_empty(),
        "{:?}",
        mounts_under(&daemon)
    );

    // The exit code is the container's; stderr stays stderr.
    let (status, out, err) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(status.code(), Some(3));
    assert_eq!(out, "out\n");
    assert!(err.contains("err\n"), "{err}");

    // Detached with --rm: once it ends, its directory, mounts and cgroups are gone.
    let (status, id, err) = wharf(&daemon, &["run", "-d", "--rm", IMAGE, "sleep", "0.3"]);
    assert!(status.success(), "{err}");
    let id = id.trim().to_owned();
    let cgroups: Vec<std::path::PathBuf> = ["pids", "memory", "unified", ""]
        .iter()
        .map(|c| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(c)
                .join("wharf")
                .join(&id)
        })
        .collect();
    assert!(
        cgroups.iter().any(|c| c.exists()),
        "its cgroup exists while it runs"
    );
    let dir = daemon.data_root.join("containers").join(&id);
    wait_until("the --rm container to go", || !dir.exists());
    assert!(cgroups.iter().all(|c| !c.exists()), "{cgroups:?}");
    assert!(mounts_under(&daemon).is_empty());
}

#[test]
fn a_detached_container_logs_stops_and_is_removed() {
    let test = "containers::a_detached_container_logs_stops_and_is_removed";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let script = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done";
    let (status, _, err) = wharf(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "ticker",
            "-e",
            "GREETING=hi",
            IMAGE,
            "sh",
            "-c",
            script,
        ],
    );
    assert!(status.success(), "{err}");
    wait_until("three ticks", || {
        wharf(&daemon, &["logs", "ticker"]).1.lines().count() >= 3
    });
    let (_, out, _) = wharf(&daemon, &["logs", "--tail", "1", "ticker"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("tick "), "{out}");
    let (_, out, _) = wharf(&daemon, &["logs", "-t", "--tail", "1", "ticker"]);
    assert!(out.starts_with("20") && out.contains("Z tick "), "{out}");
    let (_, out, _) = wharf(&daemon, &["ps"]);
    assert!(out.contains("ticker") && out.contains("Up "), "{out}");
    let (status, _, err) = wharf(&daemon, &["run", "-d", "--name", "ticker", IMAGE, "true"]);
    assert!(!status.success());
    assert!(err.contains("name \"ticker\" is already in use"), "{err}");

    // The container sees its environment and its own hostname.
    let (_, out, _) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "-e",
            "GREETING=hi",
            IMAGE,
            "sh",
            "-c",
            "echo $GREETING $(hostname)",
        ],
    );
    assert!(out.starts_with("hi "), "{out}");

    // sh as PID 1 ignores SIGTERM: stop waits its timeout, then SIGKILL.
    let started = Instant::now();
    let (status, _, err) = wharf(&daemon, &["stop", "-t", "1", "ticker"]);
    assert!(status.success(), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let (_, out, _) = wharf(&daemon, &["ps", "-a"]);
    assert!(out.contains("Exited (137)"), "{out}");
    let (_, out, _) = wharf(&daemon, &["wait", "ticker"]);
    assert_eq!(out.trim(), "137");
    assert!(mounts_under(&daemon).is_empty());
    let (status, _, err) = wharf(&daemon, &["rm", "ticker"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(&daemon, &["logs", "ticker"]);
    assert!(
        !status.success() && err.contains("no such container: ticker"),
        "{err}"
    );
}

#[test]
fn errors_name_the_image_the_command_and_the_state() {
    let test = "containers::errors_name_the_image_the_command_and_the_state";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    // Without --pull never, run would try docker.io: tests contact nothing but loopback.
    let (status, _, err) = wharf(
        &daemon,
        &["run", "--rm", "--pull", "never", "nope/nothing:v1", "true"],
    );
    assert!(!status.success());
    assert!(err.contains("no such image: nope/nothing:v1"), "{err}");
    let (status, _, err) = wharf(&daemon, &["run", "--rm", IMAGE, "/bin/nope"]);
    assert!(!status.success());
    assert!(
        err.contains("exec failed") && err.contains("/bin/nope"),
        "{err}"
    );
    assert!(mounts_under(&daemon).is_empty());
    let (_, out, _) = wharf(&daemon, &["ps", "-a", "-q"]);
    assert_eq!(out, "", "a failed --rm run leaves no container");
    let (status, _, err) = wharf(
        &daemon,
        &["run", "-d", "--name", "sleeper", IMAGE, "sleep", "30"],
    );
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(&daemon, &["rm", "sleeper"]);
    assert!(!status.success() && err.contains("stop it first"), "{err}");
    let (status, _, err) = wharf(&daemon, &["rm", "-f", "sleeper"]);
    assert!(status.success(), "{err}");
    assert!(mounts_under(&daemon).is_empty());
    let (status, _, err) = wharf(&daemon, &["run", "--name", "bad name", IMAGE, "true"]);
    assert!(!status.success() && err.contains("not valid"), "{err}");
}

#[test]
fn an_image_containers_use_is_not_removed_from_under_them() {
    let test = "containers::an_image_containers_use_is_not_removed_from_under_them";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let (status, _, err) = wharf(&daemon, &["create", "--name", "user1", IMAGE, "true"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(&daemon, &["rmi", IMAGE]);
    assert!(!status.success());
    assert!(
        err.contains(&format!("image {IMAGE} is used by container user1")),
        "{err}"
    );
    // Forced, only the name goes; the container still runs from the image.
    let (status, out, err) = wharf(&daemon, &["rmi", "-f", IMAGE]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("Untagged") && !out.contains("Deleted"),
        "{out}"
    );
    let (status, _, err) = wharf(&daemon, &["image", "prune"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(&daemon, &["start", "user1"]);
    assert!(status.success(), "{err}");
    let (_, out, _) = wharf(&daemon, &["wait", "user1"]);
    assert_eq!(out.trim(), "0");
    let (status, _, err) = wharf(&daemon, &["rm", "user1"]);
    assert!(status.success(), "{err}");
    // With no container left, prune takes the unnamed image.
    let (_, out, _) = wharf(&daemon, &["image", "prune"]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
}

/// Removes every container of the daemon however the test ends (see
/// [`harness::remove_all_containers`]).
struct RemoveEvery<'a>(&'a DaemonProcess);

impl Drop for RemoveEvery<'_> {
    fn drop(&mut self) {
        harness::remove_all_containers(&host(self.0));
    }
}

/// Every `wharf __shim` process: pid, parent pid, command line (NULs as spaces).
fn shims() -> Vec<(u32, u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            cmdline.contains("__shim ").then_some((pid, ppid, cmdline))
        })
        .collect()
}

/// The same for a daemon the test restarts.
struct RemoveAll<'a>(&'a std::cell::RefCell<DaemonProcess>);

impl Drop for RemoveAll<'_> {
    fn drop(&mut self) {
        let socket = self.0.borrow().socket.clone();
        harness::remove_all_containers(&format!("unix://{}", socket.display()));
    }
}

#[test]
fn containers_outlive_a_killed_daemon_and_keep_their_exit_codes() {
    let test = "containers::containers_outlive_a_killed_daemon_and_keep_their_exit_codes";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let daemon = std::cell::RefCell::new(daemon);
    let _cleanup = RemoveAll(&daemon);
    let script = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done";
    {
        let d = daemon.borrow();
        for args in [
            &["run", "-d", "--name", "survivor", IMAGE, "sh", "-c", script][..],
            &[
                "run",
                "-d",
                "--name",
                "quitter",
                IMAGE,
                "sh",
                "-c",
                "sleep 1; exit 7",
            ][..],
        ] {
            let (status, _, err) = wharf(&d, args);
            assert!(status.success(), "{err}");
        }
    }
    let before = wharf(&daemon.borrow(), &["logs", "survivor"])
        .1
        .lines()
        .count();

    // SIGKILL the daemon; the containers go on without it. Start it again on the same root.
    {
        let mut d = daemon.borrow_mut();
        d.signal(nix::sys::signal::Signal::SIGKILL);
        d.wait_exit(Duration::from_secs(10))
            .expect("the daemon died");
    }
    std::thread::sleep(Duration::from_millis(1500));
    // A removal the killed daemon had not finished: the directory had left its name, its
    // files had not gone yet. The next daemon deletes them.
    let unfinished = daemon
        .borrow()
        .data_root
        .join("containers/.removed-0123abcd/upper/etc");
    std::fs::create_dir_all(&unfinished).unwrap();
    std::fs::write(unfinished.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    {
        let mut d = daemon.borrow_mut();
        let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
        let cmd = DaemonProcess::command(dir.path());
        let mut restarted = DaemonProcess::spawn(dir, cmd);
        restarted.wait_ready();
        *d = restarted;
    }
    let d = daemon.borrow();
    wait_until("the unfinished removal to be finished", || {
        !d.data_root.join("containers/.removed-0123abcd").exists()
    });
    let (_, out, _) = wharf(&d, &["ps"]);
    assert!(out.contains("survivor") && out.contains("Up "), "{out}");
    wait_until("the quitter's exit to be picked up", || {
        wharf(&d, &["ps", "-a"]).1.contains("Exited (7)")
    });
    let (_, out, _) = wharf(&d, &["wait", "quitter"]);
    assert_eq!(out.trim(), "7");
    // Its logs were kept while the daemon was away, and still grow.
    let during = wharf(&d, &["logs", "survivor"]).1.lines().count();
    assert!(during > before + 5, "{before} then {during} lines");
    wait_until("more ticks", || {
        wharf(&d, &["logs", "survivor"]).1.lines().count() > during
    });
    // The restored container stops and is removed like any other.
    let (status, _, err) = wharf(&d, &["stop", "-t", "1", "survivor"]);
    assert!(status.success(), "{err}");
    let (_, out, _) = wharf(&d, &["wait", "survivor"]);
    assert_eq!(out.trim(), "137");
    let (status, _, err) = wharf(&d, &["rm", "survivor", "quitter"]);
    assert!(status.success(), "{err}");
    assert!(mounts_under(&d).is_empty(), "{:?}", mounts_under(&d));
    // Their directories leave at once and their files soon after.
    let containers = d.data_root.join("containers");
    wait_until("the removed containers' files to go", || {
        std::fs::read_dir(&containers).unwrap().next().is_none()
    });
}

#[test]
fn limits_volumes_read_only_and_init_from_the_command_line() {
    let test = "containers::limits_volumes_read_only_and_init_from_the_command_line";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    // Limits land in the container's cgroup, read from inside through its cgroup mounts.
    let (status, out, err) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "-m",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "100",
            IMAGE,
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max \
             /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max \
             /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null; true",
        ],
    );
    assert!(status.success(), "{err}");
    assert!(out.contains(&(64u64 << 20).to_string()), "memory: {out}");
    assert!(out.contains("50000"), "cpu quota: {out}");
    assert!(out.lines().any(|l| l.trim() == "100"), "pids: {out}");
    let (status, _, err) = wharf(&daemon, &["run", "--rm", "-m", "lots", IMAGE, "true"]);
    assert!(
        !status.success() && err.contains("invalid size \"lots\""),
        "{err}"
    );

    // A named volume outlives its container; a read-only bind cannot be written.
    let (status, _, err) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "-v",
            "keep:/data",
            IMAGE,
            "sh",
            "-c",
            "echo kept > /data/file",
        ],
    );
    assert!(status.success(), "{err}");
    let (_, out, _) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "-v",
            "keep:/data",
            IMAGE,
            "cat",
            "/data/file",
        ],
    );
    assert_eq!(out, "kept\n");
    let host_dir = daemon.dir.path().join("shared");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("in"), "from the host\n").unwrap();
    let bind = format!("{}:/host:ro", host_dir.display());
    let (status, out, _) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "-v",
            &bind,
            IMAGE,
            "sh",
            "-c",
            "cat /host/in; echo x > /host/out",
        ],
    );
    assert!(!status.success(), "writing a read-only bind fails");
    assert_eq!(out, "from the host\n");
    assert!(!host_dir.join("out").exists());
    let (status, _, err) = wharf(
        &daemon,
        &["run", "--rm", "-v", "/no/such/dir:/x", IMAGE, "true"],
    );
    assert!(
        !status.success() && err.contains("bind source /no/such/dir does not exist"),
        "{err}"
    );

    // A read-only root filesystem.
    let (status, _, _) = wharf(
        &daemon,
        &["run", "--rm", "--read-only", IMAGE, "touch", "/file"],
    );
    assert!(!status.success(), "the root is read-only");

    // --init: PID 1 is the built-in init, and orphans are reaped.
    let (status, out, err) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "--init",
            IMAGE,
            "sh",
            "-c",
            "(sleep 0.1 &) ; sleep 0.3; ps -o pid,stat,comm | grep -c ' Z ' ; cat /proc/1/comm",
        ],
    );
    assert!(status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some("0"), "no zombie: {out}");
    assert_ne!(
        lines.get(1).copied(),
        Some("sh"),
        "PID 1 is not the shell: {out}"
    );
}

fn restart_count(daemon: &DaemonProcess, name: &str) -> (i64, String) {
    let client = wharf::cli::client::ApiClient::new(
        wharf::cli::client::Endpoint::Unix(daemon.socket.clone()),
        None,
    );
    let view: serde_json::Value = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(client.get_json(&format!("/api/v1/containers/{name}")))
        .unwrap();
    (
        view["restart_count"].as_i64().unwrap(),
        view["state"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn restart_policies_restart_with_back_off_and_stop_when_told() {
    let test = "containers::restart_policies_restart_with_back_off_and_stop_when_told";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let daemon = std::cell::RefCell::new(daemon);
    let _cleanup = RemoveAll(&daemon);
    let d = daemon.borrow();
    // on-failure:3 restarts a failing command three times, then leaves it down.
    let (status, _, err) = wharf(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "failing",
            "--restart",
            "on-failure:3",
            IMAGE,
            "sh",
            "-c",
            "echo try; exit 1",
        ],
    );
    assert!(status.success(), "{err}");
    wait_until("three restarts", || {
        restart_count(&d, "failing") == (3, "exited".into())
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        restart_count(&d, "failing"),
        (3, "exited".into()),
        "no fourth"
    );
    let (_, out, _) = wharf(&d, &["logs", "failing"]);
    assert_eq!(out.matches("try").count(), 4, "{out}");
    // A clean exit is not a failure.
    let (status, _, err) = wharf(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "clean",
            "--restart",
            "on-failure",
            IMAGE,
            "true",
        ],
    );
    assert!(status.success(), "{err}");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(restart_count(&d, "clean").0, 0);

    // always: restarts after clean exits too, until a user stops it.
    let (status, _, err) = wharf(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "looper",
            "--restart",
            "always",
            IMAGE,
            "sh",
            "-c",
            "echo round; sleep 0.2",
        ],
    );
    assert!(status.success(), "{err}");
    wait_until("two restarts", || restart_count(&d, "looper").0 >= 2);
    let (status, _, err) = wharf(&d, &["stop", "-t", "1", "looper"]);
    assert!(status.success(), "{err}");
    let stopped_at = restart_count(&d, "looper").0;
    std::thread::sleep(Duration::from_millis(1500));
    let (count, state) = restart_count(&d, "looper");
    assert_eq!(
        (count, state.as_str()),
        (stopped_at, "exited"),
        "a stopped container stays down"
    );
    let (status, _, err) = wharf(&d, &["run", "--rm", "--restart", "always", IMAGE, "true"]);
    assert!(
        !status.success() && err.contains("do not go together"),
        "{err}"
    );
    let (status, _, err) = wharf(&d, &["run", "--restart", "sometimes", IMAGE, "true"]);
    assert!(
        !status.success() && err.contains("restart policy \"sometimes\""),
        "{err}"
    );
}

#[test]
fn exec_top_and_stats_on_a_running_container() {
    let test = "containers::exec_top_and_stats_on_a_running_container";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let daemon = std::cell::RefCell::new(daemon);
    let _cleanup = RemoveAll(&daemon);
    let d = daemon.borrow();
    // A spare shim, already loaded, waits for the next container: it is the one that takes it.
    let spare = || {
        shims()
            .into_iter()
            .find(|(_, ppid, cmdline)| *ppid == d.pid() && cmdline.contains("__shim --spare"))
            .map(|(pid, _, _)| pid)
    };
    wait_until("a spare shim", || spare().is_some());
    let waiting = spare().unwrap();
    let (status, _, err) = wharf(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "busy",
            "-m",
            "32m",
            IMAGE,
            "sh",
            "-c",
            "while true; do :; done",
        ],
    );
    assert!(status.success(), "{err}");
    // exec joins the container: its hostname, its processes, its environment; exit codes and
    // stderr come back.
    let (status, out, err) = wharf(
        &d,
        &[
            "exec",
            "-e",
            "WHO=exec",
            "busy",
            "sh",
            "-c",
            "echo $WHO $(hostname); tr '\\0' ' ' < /proc/1/cmdline; echo; echo oops >&2; exit 4",
        ],
    );
    assert_eq!(status.code(), Some(4), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let (_, id, _) = wharf(&d, &["ps", "-q"]);
    assert_eq!(lines[0], format!("exec {}", id.trim()), "{out}");
    assert_eq!(
        lines[1].trim(),
        "sh -c while true; do :; done",
        "PID 1 of its pid namespace is the container's: {out}"
    );
    assert!(err.contains("oops"), "{err}");
    let (status, _, err) = wharf(&d, &["exec", "busy", "/bin/nope"]);
    assert!(!status.success());
    assert!(err.contains("/bin/nope"), "{err}");

    // One shim supervises it.
    let (_, out, _) = wharf(&d, &["inspect", "busy"]);
    let full: serde_json::Value = serde_json::from_str(&out).unwrap();
    let full_id = full["id"].as_str().unwrap().to_owned();
    let watchers: Vec<u32> = shims()
        .into_iter()
        .filter(|(_, _, cmdline)| cmdline.contains(&full_id))
        .map(|(pid, _, _)| pid)
        .collect();
    assert_eq!(
        watchers,
        [waiting],
        "the spare shim supervises the container"
    );
    wait_until("a new spare shim", || {
        spare().is_some_and(|pid| pid != waiting)
    });

    // top lists the container's processes; stats shows the busy loop's CPU and the limit.
    let (status, out, err) = wharf(&d, &["top", "busy"]);
    assert!(status.success(), "{err}");
    assert!(out.contains("while true"), "{out}");
    let (status, out, err) = wharf(&d, &["stats", "--no-stream", "busy"]);
    assert!(status.success(), "{err}");
    let row = out.lines().nth(1).unwrap_or_default();
    assert!(row.contains("busy") && row.contains("/ 32.00MiB"), "{out}");
    assert!(
        out.contains("NET I/O") && out.contains("BLOCK I/O"),
        "{out}"
    );
    // Network counters come from the container's own namespace: only lo there, so none.
    assert!(row.contains("0B / 0B"), "{out}");
    let percent: f64 = row
        .split_whitespace()
        .find(|c| c.ends_with('%'))
        .and_then(|c| c.trim_end_matches('%').parse().ok())
        .unwrap();
    assert!(percent > 20.0, "a busy loop uses a CPU: {out}");

    let (status, _, err) = wharf(&d, &["stop", "-t", "0", "busy"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(&d, &["exec", "busy", "true"]);
    assert!(
        !status.success() && err.contains("exec needs a running container"),
        "{err}"
    );
}

/// The effective capability mask of PID 1, as a number.
fn cap_eff(out: &str) -> u64 {
    let hex = out
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap_or_else(|| panic!("{out}"))
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
fn capabilities_tmpfs_env_files_labels_and_the_stop_signal() {
    let test = "containers::capabilities_tmpfs_env_files_labels_and_the_stop_signal";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let status_of = |args: &[&str]| {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[IMAGE, "cat", "/proc/self/status"]);
        let (status, out, err) = wharf(&daemon, &all);
        assert!(status.success(), "{err}");
        cap_eff(&out)
    };
    const CHOWN: u64 = 1 << 0;
    const NET_ADMIN: u64 = 1 << 12;
    const SYS_ADMIN: u64 = 1 << 21;
    let default = status_of(&[]);
    assert_eq!(
        default.count_ones(),
        11,
        "the 11 default capabilities: {default:x}"
    );
    assert!(default & CHOWN != 0 && default & NET_ADMIN == 0);
    let more = status_of(&["--cap-add", "net_admin", "--cap-drop", "CAP_CHOWN"]);
    assert!(more & NET_ADMIN != 0 && more & CHOWN == 0, "{more:x}");
    let none = status_of(&["--cap-drop", "ALL"]);
    assert_eq!(none, 0);
    let privileged = status_of(&["--privileged"]);
    assert!(
        privileged & SYS_ADMIN != 0 && privileged.count_ones() > 30,
        "{privileged:x}"
    );
    let (status, _, err) = wharf(
        &daemon,
        &["run", "--rm", "--cap-add", "CAP_FLY", IMAGE, "true"],
    );
    assert!(
        !status.success() && err.contains("unknown capability \"CAP_FLY\""),
        "{err}"
    );

    // tmpfs, env files (the command line wins) and labels.
    let env_file = daemon.dir.path().join("app.env");
    std::fs::write(&env_file, "# settings\nCOLOR=blue\nSIZE=large\n").unwrap();
    let (status, out, err) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "--tmpfs",
            "/scratch:size=8m",
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "SIZE=small",
            IMAGE,
            "sh",
            "-c",
            "grep ' /scratch ' /proc/mounts; echo $COLOR $SIZE",
        ],
    );
    assert!(status.success(), "{err}");
    assert!(
        out.contains("tmpfs /scratch tmpfs") && out.contains("size=8192k"),
        "{out}"
    );
    assert!(out.ends_with("blue small\n"), "{out}");
    let (status, _, err) = wharf(
        &daemon,
        &[
            "create", "--name", "labelled", "-l", "tier=web", IMAGE, "true",
        ],
    );
    assert!(status.success(), "{err}");
    let (status, out, err) = wharf(&daemon, &["inspect", "labelled"]);
    assert!(status.success(), "{err}");
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["config"]["labels"]["tier"], "web");
    let (status, out, _) = wharf(&daemon, &["inspect", IMAGE]);
    assert!(
        status.success() && out.contains("config_digest"),
        "an image is inspected too: {out}"
    );

    // The stop signal reaches a process that handles it, which then ends cleanly.
    let script = "trap 'echo got usr1; exit 0' USR1; while true; do sleep 0.1; done";
    let (status, _, err) = wharf(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "graceful",
            "--stop-signal",
            "SIGUSR1",
            IMAGE,
            "sh",
            "-c",
            script,
        ],
    );
    assert!(status.success(), "{err}");
    let started = Instant::now();
    let (status, _, err) = wharf(&daemon, &["stop", "graceful"]);
    assert!(status.success(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no SIGKILL needed"
    );
    let (_, out, _) = wharf(&daemon, &["wait", "graceful"]);
    assert_eq!(out.trim(), "0");
    let (_, out, _) = wharf(&daemon, &["logs", "graceful"]);
    assert_eq!(out, "got usr1\n");
    let (status, _, err) = wharf(&daemon, &["rm", "graceful", "labelled"]);
    assert!(status.success(), "{err}");
}

#[test]
fn pause_unpause_rename_and_prune() {
    let test = "containers::pause_unpause_rename_and_prune";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let daemon = std::cell::RefCell::new(daemon);
    let _cleanup = RemoveAll(&daemon);
    let d = daemon.borrow();
    let script = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done";
    let (status, _, err) = wharf(
        &d,
        &["run", "-d", "--name", "counter", IMAGE, "sh", "-c", script],
    );
    assert!(status.success(), "{err}");
    wait_until("some output", || {
        !wharf(&d, &["logs", "counter"]).1.is_empty()
    });
    let (status, _, err) = wharf(&d, &["pause", "counter"]);
    assert!(status.success(), "{err}");
    let (_, out, _) = wharf(&d, &["ps"]);
    assert!(out.contains("(Paused)"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    let frozen = wharf(&d, &["logs", "counter"]).1.lines().count();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        wharf(&d, &["logs", "counter"]).1.lines().count(),
        frozen,
        "nothing runs while paused"
    );
    let (status, _, err) = wharf(&d, &["pause", "counter"]);
    assert!(
        !status.success() && err.contains("only a running container can be paused"),
        "{err}"
    );
    let (status, _, err) = wharf(&d, &["unpause", "counter"]);
    assert!(status.success(), "{err}");
    wait_until("output again", || {
        wharf(&d, &["logs", "counter"]).1.lines().count() > frozen
    });

    let (status, _, err) = wharf(&d, &["rename", "counter", "tally"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(&d, &["logs", "counter"]);
    assert!(
        !status.success() && err.contains("no such container"),
        "{err}"
    );
    // A paused container stops (thawed first) like any other.
    let (status, _, err) = wharf(&d, &["pause", "tally"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(&d, &["stop", "-t", "1", "tally"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(&d, &["create", "--name", "never-started", IMAGE, "true"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(&d, &["run", "-d", "--name", "keeper", IMAGE, "sleep", "30"]);
    assert!(status.success(), "{err}");
    let (status, out, err) = wharf(&d, &["container", "prune"]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("tally") && out.contains("never-started") && !out.contains("keeper"),
        "{out}"
    );
    let (_, out, _) = wharf(&d, &["ps", "-a"]);
    assert!(out.contains("keeper") && !out.contains("tally"), "{out}");
}

#[test]
fn logs_rotate_by_size_and_select_by_time() {
    let test = "containers::logs_rotate_by_size_and_select_by_time";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    // 400 lines of ~100 bytes of JSON each, in files of at most 8 KiB, two kept.
    let (status, id, err) = wharf(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "chatty",
            "--log-opt",
            "max-size=8k",
            "--log-opt",
            "max-file=2",
            IMAGE,
            "sh",
            "-c",
            "i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); done",
        ],
    );
    assert!(status.success(), "{err}");
    let (_, code, _) = wharf(&daemon, &["wait", "chatty"]);
    assert_eq!(code.trim(), "0");
    let dir = daemon.data_root.join("containers").join(id.trim());
    let current = std::fs::metadata(dir.join("container.log")).unwrap().len();
    let older = std::fs::metadata(dir.join("container.log.1"))
        .unwrap()
        .len();
    assert!(current <= 8192 && older <= 8192, "{current} {older}");
    assert!(!dir.join("container.log.2").exists(), "two files kept");
    let (_, out, _) = wharf(&daemon, &["logs", "chatty"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.last().copied(),
        Some("line 399"),
        "the newest lines are there"
    );
    assert!(
        lines.len() < 400 && lines.len() > 50,
        "older ones rotated away: {}",
        lines.len()
    );
    let numbers: Vec<u32> = lines.iter().map(|l| l[5..].parse().unwrap()).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, across the two files"
    );
    let (_, out, _) = wharf(&daemon, &["logs", "--tail", "3", "chatty"]);
    assert_eq!(out, "line 397\nline 398\nline 399\n");

    // Time selection: nothing since a minute ahead, everything since an hour ago.
    let (_, out, _) = wharf(&daemon, &["logs", "--since", "1h", "--tail", "1", "chatty"]);
    assert_eq!(out, "line 399\n");
    let future =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(60))
            .to_string();
    let (status, out, err) = wharf(&daemon, &["logs", "--since", &future, "chatty"]);
    assert!(status.success(), "{err}");
    assert_eq!(out, "");
    let (_, out, _) = wharf(&daemon, &["logs", "--until", "1h", "chatty"]);
    assert_eq!(out, "");
    let (status, _, err) = wharf(&daemon, &["logs", "--since", "yesterday-ish", "chatty"]);
    assert!(!status.success() && err.contains("--since"), "{err}");
    let (status, _, err) = wharf(&daemon, &["run", "--log-opt", "colour=red", IMAGE, "true"]);
    assert!(
        !status.success() && err.contains("log option \"colour=red\""),
        "{err}"
    );
    let (status, _, err) = wharf(&daemon, &["rm", "chatty"]);
    assert!(status.success(), "{err}");
}

#[test]
fn events_tell_a_containers_life_and_can_be_followed() {
    let test = "containers::events_tell_a_containers_life_and_can_be_followed";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    // A follower started before anything happens sees it as it happens.
    let mut follower = wharf_command()
        .args(["-H", &host(&daemon), "events", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (status, _, err) = wharf(
        &daemon,
        &["run", "--name", "lifecycle", IMAGE, "sh", "-c", "exit 5"],
    );
    assert_eq!(status.code(), Some(5), "{err}");
    let (status, _, err) = wharf(&daemon, &["rm", "lifecycle"]);
    assert!(status.success(), "{err}");
    let (_, out, _) = wharf(&daemon, &["events", "--since", "1h", "--until", "0s"]);
    let actions: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("name=lifecycle"))
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(actions, ["create", "start", "die", "destroy"], "{out}");
    assert!(out.contains("exitCode=5"), "{out}");
    // The follower got them too, live.
    std::thread::sleep(Duration::from_millis(400));
    let _ = follower.kill();
    let followed = follower.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&followed.stdout);
    let live: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["attributes"]["name"] == "lifecycle")
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(live, ["create", "start", "die", "destroy"], "{text}");
}

#[test]
fn volumes_are_listed_kept_while_used_and_pruned() {
    let test = "containers::volumes_are_listed_kept_while_used_and_pruned";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let (status, out, err) = wharf(&daemon, &["volume", "create", "made"]);
    assert!(status.success() && out.trim() == "made", "{err}");
    let (status, _, err) = wharf(
        &daemon,
        &[
            "run",
            "--name",
            "writer",
            "-v",
            "used:/data",
            IMAGE,
            "sh",
            "-c",
            "echo x > /data/f",
        ],
    );
    assert!(status.success(), "{err}");
    let (_, out, _) = wharf(&daemon, &["volume", "ls"]);
    assert!(
        out.contains("made")
            && out
                .lines()
                .any(|l| l.starts_with("used") && l.contains("writer")),
        "{out}"
    );
    let (status, out, err) = wharf(&daemon, &["volume", "inspect", "used"]);
    assert!(status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mountpoint = std::path::PathBuf::from(v["mountpoint"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("f")).unwrap(),
        "x\n"
    );
    // A stopped container still holds its volume.
    let (status, _, err) = wharf(&daemon, &["volume", "rm", "used"]);
    assert!(
        !status.success() && err.contains("in use by container(s) writer"),
        "{err}"
    );
    let (status, out, err) = wharf(&daemon, &["volume", "prune"]);
    assert!(status.success(), "{err}");
    assert!(out.contains("made") && !out.contains("used"), "{out}");
    let (status, _, err) = wharf(&daemon, &["rm", "writer"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(&daemon, &["volume", "rm", "used"]);
    assert!(status.success(), "{err}");
    assert!(!mountpoint.exists());
    let (status, _, err) = wharf(&daemon, &["volume", "inspect", "used"]);
    assert!(
        !status.success() && err.contains("no such volume: used"),
        "{err}"
    );
    let (status, _, err) = wharf(&daemon, &["volume", "create", "../up"]);
    assert!(!status.success() && err.contains("not valid"), "{err}");
}

#[test]
fn seccomp_filters_by_default_and_security_opt_changes_it() {
    let Some(daemon) =
        daemon_with_busybox("seccomp_filters_by_default_and_security_opt_changes_it")
    else {
        return;
    };
    // unshare(CLONE_NEWUSER) needs no capability, so only the filter stops it.
    let probe =
        "grep '^Seccomp:' /proc/self/status; unshare -U true && echo unshared || echo refused";
    let (status, out, err) = wharf(&daemon, &["run", "--rm", IMAGE, "sh", "-c", probe]);
    assert!(status.success(), "{err}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("refused"), "{out}");
    let (status, out, err) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "--security-opt",
            "seccomp=unconfined",
            IMAGE,
            "sh",
            "-c",
            probe,
        ],
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("Seccomp:\t0"), "{out}");
    if !out.contains("unshared") {
        // Some hosts (Ubuntu's AppArmor) refuse user namespaces to processes without
        // CAP_SYS_ADMIN themselves: there the filter cannot be told apart by this probe.
        eprintln!("note: this host refuses user namespaces without the filter too");
    }
    // Exec'd processes get the container's filter too.
    struct Gone<'a>(&'a DaemonProcess);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            let _ = wharf(self.0, &["rm", "-f", "filtered"]);
        }
    }
    let _gone = Gone(&daemon);
    let (status, _, err) = wharf(
        &daemon,
        &["run", "-d", "--name", "filtered", IMAGE, "sleep", "60"],
    );
    assert!(status.success(), "{err}");
    let (status, out, err) = wharf(&daemon, &["exec", "filtered", "sh", "-c", probe]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("Seccomp:\t2") && out.contains("refused"),
        "{out}"
    );
    let (status, _, err) = wharf(&daemon, &["rm", "-f", "filtered"]);
    assert!(status.success(), "{err}");

    // A profile file in docker's format, read by the client.
    let profile = daemon.dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let (status, out, err) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "--security-opt",
            &opt,
            IMAGE,
            "sh",
            "-c",
            "mkdir /tmp/x 2>&1; echo done",
        ],
    );
    assert!(status.success(), "{err}");
    assert!(
        out.contains("Permission denied") && out.contains("done"),
        "{out}"
    );

    // Bad options are refused with the reason, and nothing is created.
    for (opt, reason) in [
        ("apparmor=unconfined", "is not supported"),
        (
            "seccomp={\"syscalls\": 1}",
            "seccomp profile: not a profile",
        ),
        (
            "seccomp=/nonexistent.json",
            "cannot read seccomp profile /nonexistent.json",
        ),
    ] {
        let (status, _, err) = wharf(&daemon, &["create", "--security-opt", opt, IMAGE, "true"]);
        assert!(!status.success());
        assert!(err.contains(reason), "{opt}: {err}");
    }
    let (_, out, _) = wharf(&daemon, &["ps", "-a", "-q"]);
    assert_eq!(out.trim(), "", "nothing was created");
}

#[test]
fn users_are_looked_up_in_the_containers_own_files() {
    let test = "containers::users_are_looked_up_in_the_containers_own_files";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let _gone = RemoveEvery(&daemon);
    let busybox = fixtures::busybox(test).unwrap();
    let etc = fixtures::LayerBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n",
        )
        .file(
            "etc/group",
            0o644,
            b"root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
        )
        .finish();
    let archive = daemon.dir.path().join("users.tar");
    ImageBuilder::busybox(&busybox)
        .layer(etc, "users")
        .user("app")
        .cmd(&["sh"])
        .build()
        .write_docker_archive(&archive, "wharf-test/users:latest");
    let (status, _, err) = run_wharf(
        wharf_command()
            .args(["-H", &host(&daemon), "load", "-q", "-i"])
            .arg(&archive),
    );
    assert!(status.success(), "{err}");
    let ids = "echo $(id -u) $(id -g) $(id -G) $HOME";
    // The image's USER by name, with its groups and home.
    let (status, out, err) = wharf(
        &daemon,
        &["run", "--rm", "wharf-test/users:latest", "sh", "-c", ids],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out.trim(), "1000 1000 1000 10 /home/app");
    // -u overrides; a uid without an entry gets gid 0, as docker gives.
    let (_, out, _) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "-u",
            "4242",
            "wharf-test/users:latest",
            "sh",
            "-c",
            ids,
        ],
    );
    assert_eq!(out.trim(), "4242 0 0 /");
    let (_, out, _) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "-u",
            "app:wheel",
            "wharf-test/users:latest",
            "sh",
            "-c",
            ids,
        ],
    );
    assert_eq!(out.trim(), "1000 10 10 /home/app");
    // exec -u resolves in the running container too.
    let (status, _, err) = wharf(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "users",
            "-u",
            "root",
            "wharf-test/users:latest",
            "sleep",
            "60",
        ],
    );
    assert!(status.success(), "{err}");
    let (status, out, err) = wharf(&daemon, &["exec", "-u", "app", "users", "sh", "-c", ids]);
    assert!(status.success(), "{err}");
    assert_eq!(
        out.trim(),
        "1000 1000 1000 10 /root",
        "HOME stays the container's"
    );
    let (status, _, err) = wharf(&daemon, &["exec", "-u", "ghost", "users", "true"]);
    assert!(!status.success());
    assert!(err.contains("unable to find user ghost"), "{err}");
    wharf(&daemon, &["rm", "-f", "users"]);
    // An unknown name fails the start with the reason, and nothing stays mounted.
    let (status, _, err) = wharf(&daemon, &["run", "--rm", "-u", "ghost", IMAGE, "true"]);
    assert!(!status.success());
    assert!(err.contains("unable to find user ghost"), "{err}");
    assert!(
        mounts_under(&daemon).is_empty(),
        "{:?}",
        mounts_under(&daemon)
    );
}

#[test]
fn cp_export_and_diff_stay_inside_the_container() {
    let test = "containers::cp_export_and_diff_stay_inside_the_container";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let _gone = RemoveEvery(&daemon);
    let work = daemon.dir.path().join("cp");
    std::fs::create_dir_all(work.join("tree/sub")).unwrap();
    std::fs::write(work.join("note.txt"), "from the host\n").unwrap();
    std::fs::write(work.join("tree/sub/deep"), "deep\n").unwrap();
    let unique = format!("wharf-cp-{}", std::process::id());
    let host_secret = std::path::PathBuf::from("/tmp").join(&unique);
    std::fs::create_dir_all(&host_secret).unwrap();
    std::fs::write(host_secret.join("secret"), "HOST").unwrap();
    struct Cleanup(Vec<std::path::PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
    let _cleanup = Cleanup(vec![
        host_secret.clone(),
        std::path::PathBuf::from("/").join(&unique),
    ]);

    // A container that keeps swapping /w between a directory and a link to its root.
    let swap = format!(
        "mkdir -p /tmp/{u}; echo inside-root > /tmp/{u}/secret; \
         while true; do mkdir -p /w/tmp/{u}; echo inside > /w/tmp/{u}/secret; \
         rm -rf /w; ln -s / /w; rm /w; done",
        u = unique
    );
    let (status, _, err) = wharf(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "files",
            "-v",
            "cpvol:/data",
            IMAGE,
            "sh",
            "-c",
            &swap,
        ],
    );
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(
        &daemon,
        &["exec", "files", "sh", "-c", "echo vol > /data/v"],
    );
    assert!(status.success(), "{err}");

    // In: a file into a directory, a directory under a new name.
    let note = work.join("note.txt");
    let (status, _, err) = wharf(&daemon, &["cp", note.to_str().unwrap(), "files:/tmp/"]);
    assert!(status.success(), "{err}");
    let tree = work.join("tree");
    let (status, _, err) = wharf(&daemon, &["cp", tree.to_str().unwrap(), "files:/srv"]);
    assert!(status.success(), "{err}");
    let (status, out, err) = wharf(
        &daemon,
        &[
            "exec",
            "files",
            "sh",
            "-c",
            "cat /tmp/note.txt /srv/sub/deep; stat -c %u /srv/sub/deep",
        ],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "from the host\ndeep\n0\n");

    // Out: a file under a new name, a directory (the volume's contents included) into one.
    let got = work.join("got");
    std::fs::create_dir(&got).unwrap();
    let (status, _, err) = wharf(
        &daemon,
        &[
            "cp",
            "files:/tmp/note.txt",
            got.join("renamed").to_str().unwrap(),
        ],
    );
    assert!(status.success(), "{err}");
    assert_eq!(
        std::fs::read_to_string(got.join("renamed")).unwrap(),
        "from the host\n"
    );
    let (status, _, err) = wharf(&daemon, &["cp", "files:/data", got.to_str().unwrap()]);
    assert!(status.success(), "{err}");
    assert_eq!(
        std::fs::read_to_string(got.join("data/v")).unwrap(),
        "vol\n"
    );

    // While /w flips to a link to /, copies through it read and write only the container.
    let secret_path = format!("files:/w/tmp/{unique}/secret");
    for round in 0..30 {
        let out_file = work.join(format!("secret-{round}"));
        let (status, _, _) = wharf(&daemon, &["cp", &secret_path, out_file.to_str().unwrap()]);
        if status.success() {
            let read = std::fs::read_to_string(&out_file).unwrap();
            // The container rewrites the file as it goes (it may be caught empty); the host's
            // file it never is.
            assert!(
                !read.contains("HOST"),
                "a copy read the host's file: {read:?}"
            );
        }
        let into = format!("files:/w/tmp/{unique}/");
        let _ = wharf(&daemon, &["cp", note.to_str().unwrap(), &into]);
    }
    // However many of those met /w as a link: a link to / that stays resolves inside too.
    let (status, _, err) = wharf(&daemon, &["exec", "files", "ln", "-s", "/", "/stable"]);
    assert!(status.success(), "{err}");
    let through = work.join("through-stable");
    let (status, _, err) = wharf(
        &daemon,
        &[
            "cp",
            &format!("files:/stable/tmp/{unique}/secret"),
            through.to_str().unwrap(),
        ],
    );
    assert!(status.success(), "{err}");
    assert_eq!(std::fs::read_to_string(&through).unwrap(), "inside-root\n");
    assert!(
        !host_secret.join("note.txt").exists(),
        "a copy wrote on the host"
    );
    assert_eq!(
        std::fs::read_to_string(host_secret.join("secret")).unwrap(),
        "HOST"
    );
    assert!(!std::path::Path::new("/").join(&unique).exists());

    // Clear errors.
    let (status, _, err) = wharf(&daemon, &["cp", "files:/nope", got.to_str().unwrap()]);
    assert!(!status.success());
    assert!(
        err.contains("/nope: no such file or directory in the container"),
        "{err}"
    );
    let (status, _, err) = wharf(
        &daemon,
        &["cp", note.to_str().unwrap(), "files:/missing/dir/x"],
    );
    assert!(!status.success());
    assert!(err.contains("/missing/dir"), "{err}");

    // diff lists what the container wrote.
    let (status, out, err) = wharf(&daemon, &["diff", "files"]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("A /tmp/note.txt") && out.contains("A /srv/sub/deep"),
        "{out}"
    );
    assert!(out.contains("C /tmp"), "{out}");

    // Stopped: cp and export mount the root filesystem only while they run.
    let (status, _, err) = wharf(&daemon, &["stop", "-t", "1", "files"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(
        &daemon,
        &[
            "cp",
            "files:/srv/sub/deep",
            work.join("deep-again").to_str().unwrap(),
        ],
    );
    assert!(status.success(), "{err}");
    assert_eq!(
        std::fs::read_to_string(work.join("deep-again")).unwrap(),
        "deep\n"
    );
    let tarball = work.join("export.tar");
    let (status, _, err) = wharf(
        &daemon,
        &["export", "-o", tarball.to_str().unwrap(), "files"],
    );
    assert!(status.success(), "{err}");
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&tarball).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    assert!(names.iter().any(|n| n == "srv/sub/deep"), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "data/v"),
        "volumes are not exported: {names:?}"
    );
    assert!(
        mounts_under(&daemon).is_empty(),
        "{:?}",
        mounts_under(&daemon)
    );
    // The exported file system, imported again, is an image that runs with the changes.
    let (status, out, err) = wharf(
        &daemon,
        &["import", tarball.to_str().unwrap(), "wharf-test/moved:v1"],
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("Imported image: wharf-test/moved:v1"), "{out}");
    let (status, out, err) = wharf(
        &daemon,
        &["run", "--rm", "wharf-test/moved:v1", "cat", "/srv/sub/deep"],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "deep\n");
    let (_, history, _) = wharf(&daemon, &["history", "wharf-test/moved:v1"]);
    assert!(history.contains("wharf import"), "{history}");
    // What is not a tar is refused with the reason, and no image is made.
    let garbage = work.join("garbage.tar");
    std::fs::write(&garbage, vec![0x5a; 4096]).unwrap();
    let (status, _, err) = wharf(
        &daemon,
        &["import", garbage.to_str().unwrap(), "wharf-test/garbage:v1"],
    );
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("import failed: the layer is not a readable tar"),
        "{err}"
    );
    let (_, images, _) = wharf(&daemon, &["images"]);
    assert!(!images.contains("wharf-test/garbage"), "{images}");
    let (status, _, err) = wharf(&daemon, &["rm", "-f", "files"]);
    assert!(status.success(), "{err}");
}

#[test]
fn anonymous_volumes_are_filled_from_the_image_and_go_with_rm_v() {
    let test = "containers::anonymous_volumes_are_filled_from_the_image_and_go_with_rm_v";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let busybox = fixtures::busybox(test).unwrap();
    let data = fixtures::LayerBuilder::new()
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .dir("var/lib/app", 0o750)
        .file("var/lib/app/seed", 0o640, b"from the image\n")
        .finish();
    let archive = daemon.dir.path().join("vol.tar");
    ImageBuilder::busybox(&busybox)
        .layer(data, "seed")
        .volume("/var/lib/app")
        .build()
        .write_docker_archive(&archive, "wharf-test/vol:latest");
    let (status, _, err) = run_wharf(
        wharf_command()
            .args(["-H", &host(&daemon), "load", "-q", "-i"])
            .arg(&archive),
    );
    assert!(status.success(), "{err}");
    let volume_names = |daemon: &DaemonProcess| -> Vec<String> {
        let (_, out, _) = wharf(daemon, &["volume", "ls", "-q"]);
        out.lines().map(str::to_owned).collect()
    };

    // The image's VOLUME gets a fresh volume holding the image's files there.
    let (status, out, err) = wharf(
        &daemon,
        &[
            "run",
            "--name",
            "anon",
            "wharf-test/vol:latest",
            "sh",
            "-c",
            "cat /var/lib/app/seed; stat -c %a /var/lib/app; grep -c ' /var/lib/app ' /proc/self/mounts",
        ],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "from the image\n750\n1\n");
    assert_eq!(volume_names(&daemon).len(), 1);
    // -v /path is one too; a named volume by --mount is filled, one with nocopy is not.
    let (status, out, err) = wharf(
        &daemon,
        &[
            "run",
            "--name",
            "more",
            "-v",
            "/scratch",
            "--mount",
            "type=volume,source=named,target=/var/lib/app",
            "--mount",
            "type=volume,src=bare,dst=/etc,volume-nocopy",
            "--mount",
            "type=tmpfs,target=/fast,tmpfs-size=1m",
            "wharf-test/vol:latest",
            "sh",
            "-c",
            "cat /var/lib/app/seed; ls /etc | grep -cvx -e hosts -e hostname -e resolv.conf; grep ' /fast ' /proc/self/mounts | grep -c size=1024k",
        ],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "from the image\n0\n1\n");
    let names = volume_names(&daemon);
    assert_eq!(
        names.len(),
        4,
        "anon's, /scratch, named and bare: {names:?}"
    );

    // rm -v takes the anonymous volumes, not the named ones.
    let (status, _, err) = wharf(&daemon, &["rm", "-v", "anon", "more"]);
    assert!(status.success(), "{err}");
    let mut names = volume_names(&daemon);
    names.sort();
    assert_eq!(names, ["bare", "named"]);
    // --rm does as well; a filled volume is not filled again.
    let (status, _, err) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "-v",
            "named:/var/lib/app",
            "wharf-test/vol:latest",
            "sh",
            "-c",
            "echo changed > /var/lib/app/seed",
        ],
    );
    assert!(status.success(), "{err}");
    let (status, out, err) = wharf(
        &daemon,
        &[
            "run",
            "--rm",
            "-v",
            "named:/var/lib/app",
            "wharf-test/vol:latest",
            "cat",
            "/var/lib/app/seed",
        ],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "changed\n");
    let mut names = volume_names(&daemon);
    names.sort();
    assert_eq!(names, ["bare", "named"], "--rm left no anonymous volume");
    let (status, _, err) = wharf(&daemon, &["run", "--rm", "-v", "x:/y:rx", IMAGE, "true"]);
    assert!(
        !status.success() && err.contains("option \"rx\" is not known"),
        "{err}"
    );
}

#[test]
fn healthchecks_run_while_the_container_runs_and_tell_their_changes() {
    let test = "containers::healthchecks_run_while_the_container_runs_and_tell_their_changes";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let _gone = RemoveEvery(&daemon);
    let health = |name: &str| -> serde_json::Value {
        let (_, out, _) = wharf(&daemon, &["inspect", name]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["health"].clone()
    };
    let (status, _, err) = wharf(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "checked",
            "--health-cmd",
            "test -e /tmp/ok && echo fine",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
            IMAGE,
            "sleep",
            "60",
        ],
    );
    assert!(status.success(), "{err}");
    assert_eq!(health("checked")["status"], "starting");
    wait_until("unhealthy", || health("checked")["status"] == "unhealthy");
    let h = health("checked");
    assert!(h["failing_streak"].as_u64().unwrap() >= 2, "{h}");
    let (_, out, _) = wharf(&daemon, &["ps"]);
    assert!(out.contains("(unhealthy)"), "{out}");
    let (status, _, err) = wharf(&daemon, &["exec", "checked", "touch", "/tmp/ok"]);
    assert!(status.success(), "{err}");
    wait_until("healthy", || health("checked")["status"] == "healthy");
    let h = health("checked");
    assert_eq!(h["failing_streak"], 0);
    let last = h["log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["exit_code"].as_i64(), last["output"].as_str()),
        (Some(0), Some("fine\n"))
    );
    assert!(h["log"].as_array().unwrap().len() <= 5);
    let (_, out, _) = wharf(&daemon, &["events", "--since", "1h", "--until", "0s"]);
    let unhealthy = out
        .find("health_status: unhealthy")
        .expect("an unhealthy event");
    let healthy = out.find("health_status: healthy").expect("a healthy event");
    assert!(unhealthy < healthy, "{out}");
    // Stopped: the checks end with it.
    let (status, _, err) = wharf(&daemon, &["stop", "-t", "1", "checked"]);
    assert!(status.success(), "{err}");
    let before = health("checked")["log"].to_string();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(health("checked")["log"].to_string(), before);

    // A probe past its timeout fails, and says so.
    let (status, _, err) = wharf(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "slow",
            "--health-cmd",
            "sleep 5",
            "--health-interval",
            "100ms",
            "--health-timeout",
            "300ms",
            "--health-retries",
            "1",
            IMAGE,
            "sleep",
            "60",
        ],
    );
    assert!(status.success(), "{err}");
    wait_until("unhealthy by timeout", || {
        health("slow")["status"] == "unhealthy"
    });
    assert!(
        health("slow")["log"]
            .to_string()
            .contains("exceeded timeout")
    );
    // --no-healthcheck: none at all.
    let (status, _, err) = wharf(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "unchecked",
            "--no-healthcheck",
            IMAGE,
            "sleep",
            "60",
        ],
    );
    assert!(status.success(), "{err}");
    assert!(health("unchecked").is_null());
    let (status, _, err) = wharf(&daemon, &["create", "--health-interval", "soon", IMAGE]);
    assert!(
        !status.success() && err.contains("invalid duration \"soon\""),
        "{err}"
    );
    wharf(&daemon, &["rm", "-f", "checked", "slow", "unchecked"]);
}

/// `wharf ARGS` with a new pseudo-terminal (rows × cols) as its stdin, stdout and stderr; the
/// master end, and everything the terminal shows, gathered by a thread.
struct OnPty {
    child: std::process::Child,
    master: std::fs::File,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl OnPty {
    fn start(daemon: &DaemonProcess, args: &[&str]) -> OnPty {
        use std::os::fd::{AsRawFd, OwnedFd};
        let pty = nix::pty::openpty(
            Some(&nix::pty::Winsize {
                ws_row: 30,
                ws_col: 100,
                ws_xpixel: 0,
                ws_ypixel: 0,
            }),
            None,
        )
        .unwrap();
        let slave: OwnedFd = pty.slave;
        let mut command = wharf_command();
        command.args(["-H", &host(daemon)]).args(args);
        command
            .stdin(std::fs::File::from(slave.try_clone().unwrap()))
            .stdout(std::fs::File::from(slave.try_clone().unwrap()))
            .stderr(std::fs::File::from(slave.try_clone().unwrap()));
        // The terminal becomes the client's controlling terminal, as in a real shell.
        let slave_fd = slave.as_raw_fd();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                libc::setsid();
                libc::ioctl(slave_fd, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        drop(slave);
        let master = std::fs::File::from(pty.master);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let gathered = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            // EIO once the client and the container are gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                gathered.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnPty {
            child,
            master,
            seen,
        }
    }

    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, text: &str) {
        wait_until(&format!("{text:?} on the terminal"), || {
            self.seen().contains(text)
        });
    }

    fn type_in(&mut self, keys: &[u8]) {
        use std::io::Write;
        self.master.write_all(keys).unwrap();
    }

    fn exit_code(mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the client did not end: {}",
                self.seen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn run_exec_and_attach_give_real_terminals() {
    let test = "containers::run_exec_and_attach_give_real_terminals";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let _gone = RemoveEvery(&daemon);
    let (status, _, err) = wharf(
        &daemon,
        &["run", "-d", "--name", "box", IMAGE, "sleep", "60"],
    );
    assert!(status.success(), "{err}");

    // exec -it: a terminal of the client's size; the exit code comes back.
    let mut exec = OnPty::start(&daemon, &["exec", "-it", "box", "sh"]);
    exec.type_in(b"tty; stty size; echo $((6*7)); exit 3\r");
    exec.wait_for("42");
    let seen = exec.seen();
    assert!(
        seen.contains("/dev/pts/") && seen.contains("30 100"),
        "{seen}"
    );
    assert_eq!(exec.exit_code(), Some(3));

    // run -it: the prompt is there from the start; ctrl-p ctrl-q detaches and it runs on.
    let mut run = OnPty::start(&daemon, &["run", "-it", "--name", "term", IMAGE, "sh"]);
    run.type_in(b"echo hi-$((1+1))\r");
    run.wait_for("hi-2");
    run.type_in(&[0x10, 0x11]);
    run.wait_for("read escape sequence");
    assert_eq!(run.exit_code(), Some(0));
    let (_, out, _) = wharf(&daemon, &["ps"]);
    assert!(out.contains("term"), "detached, still running: {out}");
    // attach: the same shell; its exit code is attach's.
    let mut attach = OnPty::start(&daemon, &["attach", "term"]);
    attach.type_in(b"echo back-$((2+2)); exit 7\r");
    attach.wait_for("back-4");
    assert_eq!(attach.exit_code(), Some(7));
    let (_, out, _) = wharf(&daemon, &["logs", "term"]);
    assert!(
        out.contains("hi-2") && out.contains("back-4"),
        "the terminal is logged: {out}"
    );

    // -i without a terminal: stdin is piped through and closes at its end.
    let mut cat = wharf_command()
        .args([
            "-H",
            &host(&daemon),
            "run",
            "-i",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "cat; echo done",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"piped in\n").unwrap();
    }
    let out = cat.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped in\ndone\n");
    let mut exec_i = wharf_command()
        .args([
            "-H",
            &host(&daemon),
            "exec",
            "-i",
            "box",
            "sh",
            "-c",
            "wc -c; exit 4",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        exec_i.stdin.take().unwrap().write_all(b"12345").unwrap();
    }
    let out = exec_i.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
    // A stopped container cannot be attached to, and says so.
    let (status, _, err) = wharf(&daemon, &["attach", "term"]);
    assert!(
        !status.success() && err.contains("attach needs a running container"),
        "{err}"
    );
    wharf(&daemon, &["rm", "-f", "box", "term"]);
}

#[test]
fn system_df_counts_and_system_prune_frees() {
    let test = "containers::system_df_counts_and_system_prune_frees";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let _gone = RemoveEvery(&daemon);
    let busybox = fixtures::busybox(test).unwrap();
    let archive = daemon.dir.path().join("spare.tar");
    ImageBuilder::busybox(&busybox)
        .label("spare", "yes")
        .build()
        .write_docker_archive(&archive, "wharf-test/spare:latest");
    let (status, _, err) = run_wharf(
        wharf_command()
            .args(["-H", &host(&daemon), "load", "-q", "-i"])
            .arg(&archive),
    );
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(
        &daemon,
        &["run", "-d", "--name", "up", IMAGE, "sleep", "60"],
    );
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(
        &daemon,
        &[
            "run",
            "--name",
            "done",
            "-v",
            "leftover:/data",
            IMAGE,
            "sh",
            "-c",
            "head -c 50000 /dev/zero > /data/z; echo x > /f",
        ],
    );
    assert!(status.success(), "{err}");
    let (status, out, err) = wharf(&daemon, &["system", "df"]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("2 (1 running)") && out.contains("1 (0 unused)"),
        "{out}"
    );
    // Without -f and without a terminal, nothing happens.
    let (status, _, err) = wharf(&daemon, &["system", "prune"]);
    assert!(
        !status.success() && err.contains("confirm with -f"),
        "{err}"
    );
    let (status, out, err) = wharf(&daemon, &["system", "prune", "-f", "-a", "--volumes"]);
    assert!(status.success(), "{err}");
    assert!(out.contains("Deleted container: done"), "{out}");
    assert!(out.contains("Deleted volume: leftover"), "{out}");
    assert_eq!(
        out.matches("Deleted image:").count(),
        1,
        "only the spare image: {out}"
    );
    let (_, out, _) = wharf(&daemon, &["images"]);
    assert!(
        out.contains("wharf-test/busybox") && !out.contains("wharf-test/spare"),
        "{out}"
    );
    let (_, out, _) = wharf(&daemon, &["system", "df"]);
    assert!(
        out.contains("1 (1 running)") && out.contains("0 (0 unused)"),
        "{out}"
    );
    wharf(&daemon, &["rm", "-f", "up"]);
}

#[test]
fn a_shim_that_let_go_of_its_memory_while_quiet_still_logs_and_records_the_exit() {
    let test =
        "containers::a_shim_that_let_go_of_its_memory_while_quiet_still_logs_and_records_the_exit";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let _gone = RemoveEvery(&daemon);
    // Quiet for longer than the shim's 2 s (it drops its unused mappings and heap then), then
    // output, then an exit code: all of it handled by the shim after the drop.
    let (status, _, err) = wharf(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "quiet",
            IMAGE,
            "sh",
            "-c",
            "echo before; sleep 3; i=0; while [ $i -lt 200 ]; do echo after $i; i=$((i+1)); done; exit 5",
        ],
    );
    assert!(status.success(), "{err}");
    let (_, out, _) = wharf(&daemon, &["wait", "quiet"]);
    assert_eq!(out.trim(), "5");
    let (_, logs, _) = wharf(&daemon, &["logs", "quiet"]);
    assert!(
        logs.starts_with("before\n") && logs.ends_with("after 199\n"),
        "{logs}"
    );
    assert_eq!(logs.lines().count(), 201, "{logs}");
}
