//! `wharf runtime` against the real kernel: namespaces, cgroups, mounts, capabilities. Every
//! test has its own state root, bundle and cgroup parent, all removed when it ends.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fixtures;
use crate::harness::{self, run_wharf, wharf_command};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A bundle made from the busybox image, a state root and a cgroup parent, for one test.
pub struct TestBundle {
    pub dir: tempfile::TempDir,
    pub bundle: PathBuf,
    pub root: PathBuf,
    pub id: String,
    /// `/wharf-test-<pid>-<n>`: the container's cgroup is `<parent>/<id>`.
    pub cgroup_parent: String,
}

impl TestBundle {
    /// A busybox bundle running `args`; `edit` may change the spec. `None` (skip recorded) when
    /// not root or busybox is missing.
    pub fn new(test: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> Option<TestBundle> {
        if harness::skip_unless_root(test) {
            return None;
        }
        let busybox = fixtures::busybox(test)?;
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!("c{n}");
        let cgroup_parent = format!("/wharf-test-{}-{n}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let layer = fixtures::busybox_layer(&busybox);
        let mut archive = tar::Archive::new(&layer[..]);
        archive.set_preserve_permissions(true);
        // Our own trusted fixture: the tar crate may unpack it.
        archive.unpack(&rootfs).unwrap();
        let mut spec = serde_json::to_value(wharf::runtime::default_spec()).unwrap();
        spec["process"]["args"] = json!(args);
        spec["linux"]["cgroupsPath"] = json!(format!("{cgroup_parent}/{id}"));
        edit(&mut spec);
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        Some(TestBundle {
            root: dir.path().join("state"),
            bundle,
            id,
            cgroup_parent,
            dir,
        })
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    /// `wharf runtime --root <root> <args…>`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = wharf_command();
        cmd.arg("runtime").arg("--root").arg(&self.root).args(args);
        cmd
    }

    /// Runs a runtime command that ends quickly: (status, stdout, stderr).
    pub fn wharf(&self, args: &[&str]) -> (ExitStatus, String, String) {
        run_wharf(&mut self.cmd(args))
    }

    /// `run` in the foreground: the container's output and exit status.
    pub fn run(&self) -> (ExitStatus, String, String) {
        let bundle = self.bundle.to_str().unwrap().to_owned();
        self.wharf(&["run", "--bundle", &bundle, &self.id])
    }

    /// `create`, with the container's stdio going to files in the test directory (a pipe
    /// would keep `output()` waiting for the container).
    pub fn create(&self) -> (ExitStatus, String) {
        let err = self.dir.path().join("create.stderr");
        let status = self
            .cmd(&[
                "create",
                "--bundle",
                self.bundle.to_str().unwrap(),
                &self.id,
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.path().join("container.stdout")).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        (status, std::fs::read_to_string(err).unwrap_or_default())
    }

    pub fn state(&self) -> Value {
        let (status, out, err) = self.wharf(&["state", &self.id]);
        assert!(status.success(), "state: {err}");
        serde_json::from_str(&out).unwrap()
    }

    /// Waits until `state` reports `status` (the container may not exist yet).
    pub fn wait_for(&self, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (ok, out, err) = self.wharf(&["state", &self.id]);
            if ok.success() {
                let state: Value = serde_json::from_str(&out).unwrap();
                if state["status"] == status {
                    return state;
                }
            }
            assert!(Instant::now() < deadline, "never {status}: {out} {err}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The container's cgroup directory for a v1 controller, or the v2 directory.
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        let base = Path::new("/sys/fs/cgroup");
        let v2 = nix::sys::statfs::statfs(base).unwrap().filesystem_type()
            == nix::sys::statfs::CGROUP2_SUPER_MAGIC;
        let rel = format!("{}/{}", self.cgroup_parent.trim_start_matches('/'), self.id);
        if v2 {
            base.join(rel)
        } else {
            base.join(controller).join(rel)
        }
    }
}

impl Drop for TestBundle {
    fn drop(&mut self) {
        let _ = self
            .cmd(&["delete", "--force", &self.id])
            .stdin(Stdio::null())
            .output();
        // The cgroup parent this test made, in every hierarchy.
        let parent = self.cgroup_parent.trim_start_matches('/');
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir(entry.path().join(parent));
            }
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(parent));
    }
}

#[test]
fn lifecycle_create_start_kill_delete_with_clear_wrong_state_errors() {
    let Some(t) = TestBundle::new("runtime::lifecycle", &["sleep", "300"], |_| {}) else {
        return;
    };
    let (status, err) = t.create();
    assert!(status.success(), "create: {err}");
    let state = t.state();
    assert_eq!(state["status"], "created");
    let pid = state["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(state["id"], t.id.as_str());
    assert_eq!(state["bundle"], t.bundle.to_str().unwrap());
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let (status, _, err) = t.wharf(&["create", "--bundle", t.bundle.to_str().unwrap(), &t.id]);
    assert!(
        !status.success() && err.contains(&format!("container \"{}\" already exists", t.id)),
        "{err}"
    );

    let (status, _, err) = t.wharf(&["start", &t.id]);
    assert!(status.success(), "start: {err}");
    assert_eq!(t.state()["status"], "running");
    let (status, _, err) = t.wharf(&["start", &t.id]);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains(&format!(
            "cannot start container \"{}\": it is running",
            t.id
        )),
        "{err}"
    );
    let (status, _, err) = t.wharf(&["delete", &t.id]);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("it is running: stop it first, or use --force"),
        "{err}"
    );

    let (_, out, _) = t.wharf(&["list", "--format", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["id"], t.id.as_str());
    let (_, out, _) = t.wharf(&["ps", "--format", "json", &t.id]);
    let pids: Vec<i64> = serde_json::from_str(&out).unwrap();
    assert_eq!(pids, [pid]);

    let (status, _, err) = t.wharf(&["kill", &t.id, "KILL"]);
    assert!(status.success(), "kill: {err}");
    let state = t.wait_for("stopped");
    assert_eq!(state["pid"], 0);
    let (status, _, err) = t.wharf(&["kill", &t.id]);
    assert!(!status.success() && err.contains("it is stopped"), "{err}");

    let (status, _, err) = t.wharf(&["delete", &t.id]);
    assert!(status.success(), "delete: {err}");
    assert!(!t.cgroup_dir("pids").exists(), "the cgroup is removed");
    let (status, _, err) = t.wharf(&["state", &t.id]);
    assert!(
        !status.success() && err.contains(&format!("container \"{}\" does not exist", t.id)),
        "{err}"
    );
}

#[test]
fn isolation_as_seen_from_inside() {
    let script = "echo pid=$$; echo host=$(hostname); grep -E '^(CapBnd|CapEff|NoNewPrivs|SigIgn|Cpus_allowed_list):' /proc/self/status; \
                  echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,); \
                  echo keys=$(wc -c < /proc/keys); \
                  echo 1 > /proc/sys/kernel/shmmax && echo sys=writable || echo sys=read-only; \
                  echo othermounts=$(awk '{print $5}' /proc/self/mountinfo | grep -v -E '^/$|^/(proc|dev|sys)(/|$)' | wc -l); \
                  echo rootmount=$(awk '$5 == \"/\" {print $4}' /proc/self/mountinfo); \
                  echo user=$(id -u):$(id -g)";
    let Some(t) = TestBundle::new("runtime::isolation", &["sh", "-c", script], |spec| {
        spec["hostname"] = "isolated-box".into();
    }) else {
        return;
    };
    // The bundle's host path, for the check that no host path shows in the container's mounts.
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(t.bundle.join("config.json")).unwrap()).unwrap();
    spec["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!(format!("BUNDLE={}", t.bundle.display())));
    std::fs::write(
        t.bundle.join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    // Started from a thread pinned to one CPU (as a service with CPUAffinity= would start it),
    // the program still gets every CPU of its cpuset, as with runc and crun.
    let me = nix::unistd::Pid::from_raw(0);
    let mask = nix::sched::sched_getaffinity(me).unwrap();
    let mut one = nix::sched::CpuSet::new();
    one.set(
        (0..nix::sched::CpuSet::count())
            .find(|&c| mask.is_set(c).unwrap())
            .unwrap(),
    )
    .unwrap();
    nix::sched::sched_setaffinity(me, &one).unwrap();
    let (status, out, err) = t.run();
    nix::sched::sched_setaffinity(me, &mask).unwrap();
    assert!(status.success(), "{out} {err}");
    let line = |key: &str| {
        out.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{key}="))
                    .or_else(|| l.strip_prefix(&format!("{key}:\t")))
            })
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .to_owned()
    };
    assert_eq!(line("pid"), "1");
    assert_eq!(line("host"), "isolated-box");
    assert_eq!(line("ifaces"), "lo,", "only the loopback interface");
    assert_eq!(line("NoNewPrivs"), "1");
    // What the kernel gives a thread here that asks for every CPU: its cpuset's, or all
    // possible CPUs without one (the container's cgroup is made with its parent's cpuset).
    let everything = std::thread::spawn(|| {
        let all = [u64::MAX; 128];
        // SAFETY: the pointer and length describe `all`, which outlives the call.
        let done = unsafe {
            libc::syscall(
                libc::SYS_sched_setaffinity,
                0,
                std::mem::size_of_val(&all),
                all.as_ptr(),
            )
        };
        assert_eq!(done, 0, "{}", std::io::Error::last_os_error());
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:\t"))
            .unwrap()
            .to_owned()
    })
    .join()
    .unwrap();
    assert_eq!(line("Cpus_allowed_list"), everything);
    let ignored = u64::from_str_radix(&line("SigIgn"), 16).unwrap();
    assert_eq!(
        ignored & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE is not left ignored"
    );
    // The 11 default capabilities: CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6,
    // SETUID 7, SETPCAP 8, NET_BIND_SERVICE 10, SYS_CHROOT 18, SETFCAP 31.
    let expected = [0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 31]
        .iter()
        .fold(0u64, |m, b| m | (1 << b));
    assert_eq!(line("CapBnd"), format!("{expected:016x}"));
    assert_eq!(line("CapEff"), format!("{expected:016x}"));
    assert_eq!(line("keys"), "0", "/proc/keys is masked");
    assert_eq!(line("sys"), "read-only");
    assert_eq!(line("user"), "0:0");
    // "/" is the bundle's rootfs (pivot_root happened) and the host's root is gone.
    assert_eq!(line("rootmount"), t.rootfs().to_str().unwrap());
    assert_eq!(
        line("othermounts"),
        "0",
        "its own mount table: /, /proc, /dev and /sys only"
    );

    // No host descriptor reaches the program: `ls` (PID 1) sees stdio and its own directory.
    let t = TestBundle::new("runtime::isolation", &["ls", "-l", "/proc/self/fd"], |_| {}).unwrap();
    let (status, out, err) = t.run();
    assert!(status.success(), "{err}");
    let fds: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with('l'))
        .map(|l| {
            l.split(" -> ")
                .next()
                .unwrap()
                .split_whitespace()
                .last()
                .unwrap()
        })
        .collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{out}");
    if Path::new("/proc/kcore").exists() {
        let t = TestBundle::new(
            "runtime::isolation",
            &["sh", "-c", "wc -c < /proc/kcore"],
            |_| {},
        )
        .unwrap();
        assert_eq!(t.run().1.trim(), "0", "/proc/kcore is masked");
    }
}

#[test]
fn exit_codes_exec_failures_and_signal_deaths() {
    let Some(t) = TestBundle::new(
        "runtime::exit_codes",
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
        |_| {},
    ) else {
        return;
    };
    let (status, out, err) = t.run();
    assert_eq!(status.code(), Some(7));
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert!(
        !t.root.join(&t.id).exists(),
        "run deletes the container after it ends"
    );

    let t = TestBundle::new("runtime::exit_codes", &["/bin/nope"], |_| {}).unwrap();
    let (status, _, err) = t.run();
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        err.trim(),
        "wharf runtime: exec failed: /bin/nope: No such file or directory"
    );
    assert!(
        !t.root.join(&t.id).exists() && !t.cgroup_dir("pids").exists(),
        "nothing left behind"
    );

    let t = TestBundle::new("runtime::exit_codes", &["sleep", "300"], |_| {}).unwrap();
    let mut running = t
        .cmd(&["run", "--bundle", t.bundle.to_str().unwrap(), &t.id])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    t.wait_for("running");
    let (status, _, err) = t.wharf(&["kill", &t.id, "9"]);
    assert!(status.success(), "{err}");
    let status = running.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 9), "a death by SIGKILL exits 137");
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    let Some(t) = TestBundle::new(
        "runtime::pids_limit",
        &[
            "sh",
            "-c",
            "for i in $(seq 1 100); do sleep 300 & done; sleep 300",
        ],
        |spec| {
            spec["linux"]["resources"]["pids"] = json!({"limit": 16});
        },
    ) else {
        return;
    };
    let (status, err) = t.create();
    assert!(status.success(), "{err}");
    assert!(t.wharf(&["start", &t.id]).0.success());
    let dir = t.cgroup_dir("pids");
    // Wait until the loop has hit the limit.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let events = std::fs::read_to_string(dir.join("pids.events")).unwrap_or_default();
        let refused: u64 = events
            .lines()
            .find_map(|l| l.strip_prefix("max "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if refused > 0 {
            break refused;
        }
        assert!(Instant::now() < deadline, "the pids limit was never hit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(refused >= 1);
    let current: u64 = std::fs::read_to_string(dir.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(current <= 16, "{current} processes under a limit of 16");
    // The host is fine: we can still start processes.
    assert!(Command::new("true").status().unwrap().success());
    assert!(t.wharf(&["delete", "--force", &t.id]).0.success());
}

#[test]
fn memory_past_the_limit_oom_kills_only_the_container_and_state_reports_it() {
    // `tail` keeps /dev/zero's one endless line in memory until the OOM killer ends it.
    let Some(t) = TestBundle::new("runtime::memory_limit", &["tail", "/dev/zero"], |spec| {
        spec["linux"]["resources"]["memory"] =
            json!({"limit": 32 * 1024 * 1024, "swap": 32 * 1024 * 1024});
    }) else {
        return;
    };
    let (status, err) = t.create();
    assert!(status.success(), "{err}");
    let (status, _, err) = t.wharf(&["start", &t.id]);
    assert!(status.success(), "{err}");
    let state = t.wait_for("stopped");
    assert_eq!(state["oomKilled"], true, "{state}");
    let (_, out, _) = t.wharf(&["events", "--stats", &t.id]);
    let stats: Value = serde_json::from_str(&out).unwrap();
    assert!(stats["data"]["oom_kills"].as_u64().unwrap() >= 1);
    assert_eq!(stats["data"]["memory_limit_bytes"], 32 * 1024 * 1024);
    // Only the container died: this process is fine and so is the host.
    assert!(Command::new("true").status().unwrap().success());
}

#[test]
fn cpu_limits_are_visible_in_the_cgroup_files() {
    let Some(t) = TestBundle::new("runtime::cpu_limits", &["sleep", "300"], |spec| {
        spec["linux"]["resources"]["cpu"] =
            json!({"quota": 50000, "period": 100000, "shares": 512});
    }) else {
        return;
    };
    let (status, err) = t.create();
    assert!(status.success(), "{err}");
    let dir = t.cgroup_dir("cpu");
    if dir.join("cpu.max").exists() {
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.max")).unwrap().trim(),
            "50000 100000"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.weight"))
                .unwrap()
                .trim(),
            "20"
        );
    } else {
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.cfs_quota_us"))
                .unwrap()
                .trim(),
            "50000"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.cfs_period_us"))
                .unwrap()
                .trim(),
            "100000"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.shares"))
                .unwrap()
                .trim(),
            "512"
        );
    }
    let pid = t.state()["pid"].as_i64().unwrap();
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "the init is in the cgroup"
    );
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let Some(t) = TestBundle::new("runtime::pause", &["sleep", "300"], |_| {}) else {
        return;
    };
    assert!(t.create().0.success());
    assert!(t.wharf(&["start", &t.id]).0.success());
    let (status, _, err) = t.wharf(&["pause", &t.id]);
    assert!(status.success(), "{err}");
    assert_eq!(t.state()["status"], "paused");
    let (status, _, err) = t.wharf(&["pause", &t.id]);
    assert!(!status.success() && err.contains("it is paused"), "{err}");
    let (status, _, err) = t.wharf(&["resume", &t.id]);
    assert!(status.success(), "{err}");
    assert_eq!(t.state()["status"], "running");
}

#[test]
fn hostile_bundles_are_refused_and_nothing_outside_is_touched() {
    // /proc as a symlink to a host directory
    let Some(t) = TestBundle::new("runtime::hostile", &["true"], |_| {}) else {
        return;
    };
    let proc_dir = t.rootfs().join("proc");
    std::fs::remove_dir(&proc_dir).unwrap();
    let outside = t.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, &proc_dir).unwrap();
    let (status, _, err) = t.run();
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("/proc is a symlink"), "{err}");
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing mounted or made outside"
    );

    // /dev/null as a regular file, with no tmpfs over /dev to hide it
    let t = TestBundle::new("runtime::hostile", &["true"], |spec| {
        let mounts = spec["mounts"].as_array_mut().unwrap();
        mounts.retain(|m| {
            m["destination"] != "/dev"
                && m["destination"] != "/dev/pts"
                && m["destination"] != "/dev/shm"
                && m["destination"] != "/dev/mqueue"
        });
    })
    .unwrap();
    std::fs::write(t.rootfs().join("dev/null"), "not a device").unwrap();
    let (status, _, err) = t.run();
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("/dev/null") && err.contains("is not the device 1:3"),
        "{err}"
    );

    // cwd through a descriptor (CVE-2024-21626)
    let t = TestBundle::new("runtime::hostile", &["true"], |spec| {
        spec["process"]["cwd"] = "/proc/self/fd/3".into();
    })
    .unwrap();
    let (status, _, err) = t.run();
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("cwd /proc/self/fd/3"), "{err}");

    // a mount destination that climbs out of the root through a symlink
    let t = TestBundle::new("runtime::hostile", &["true"], |spec| {
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/mnt/evil/x", "type": "tmpfs", "source": "tmpfs"}));
    })
    .unwrap();
    let target = t.dir.path().join("escape-target");
    std::fs::create_dir(&target).unwrap();
    std::fs::create_dir_all(t.rootfs().join("mnt")).unwrap();
    let climb = format!(
        "{}{}",
        "../".repeat(40),
        target.strip_prefix("/").unwrap().display()
    );
    std::os::unix::fs::symlink(&climb, t.rootfs().join("mnt/evil")).unwrap();
    let (status, _, err) = t.run();
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("refuse mount destination /mnt/evil/x")
            && err.contains("through the symlink /mnt/evil"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(&target).unwrap().next().is_none(),
        "nothing made or mounted outside the bundle"
    );
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(target.to_str().unwrap()));
}

#[test]
fn a_bad_spec_is_refused_before_anything_is_made() {
    let Some(t) = TestBundle::new("runtime::bad_spec", &[""], |_| {}) else {
        return;
    };
    let (status, _, err) = t.run();
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("invalid config.json: process.args must name the program to run"),
        "{err}"
    );
    assert!(!t.root.join(&t.id).exists());
    let (status, _, err) = t.wharf(&["run", "--bundle", "/nonexistent-bundle", "x"]);
    assert!(
        !status.success() && err.contains("/nonexistent-bundle"),
        "{err}"
    );
    let (status, _, err) = t.wharf(&["--systemd-cgroup", "list"]);
    assert!(
        !status.success() && err.contains("--systemd-cgroup is not supported"),
        "{err}"
    );
    let (status, _, err) = t.wharf(&["kill", "nope", "NOTASIGNAL"]);
    assert!(
        !status.success() && err.contains("unknown signal \"NOTASIGNAL\""),
        "{err}"
    );
}

#[test]
fn the_seccomp_profile_is_enforced() {
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    });
    let script = "grep '^Seccomp:' /proc/self/status; mkdir /tmp/blocked || echo mkdir-refused; hostname other 2>&1; touch /tmp/allowed && echo touch-ok";
    for nnp in [true, false] {
        let Some(t) = TestBundle::new("runtime::seccomp", &["sh", "-c", script], |spec| {
            spec["linux"]["seccomp"] = profile.clone();
            spec["process"]["noNewPrivileges"] = nnp.into();
            // sethostname needs CAP_SYS_ADMIN to get as far as seccomp's refusal mattering;
            // the ERRNO comes first either way.
        }) else {
            return;
        };
        let (status, out, err) = t.run();
        assert!(status.success(), "{out} {err}");
        assert!(out.contains("Seccomp:\t2"), "a filter is loaded: {out}");
        assert!(
            out.contains("mkdir-refused") && err.contains("Operation not permitted"),
            "{out} {err}"
        );
        assert!(
            out.contains("Function not implemented"),
            "errnoRet 38 is ENOSYS: {out}"
        );
        assert!(out.contains("touch-ok"), "{out}");
    }
    let Some(t) = TestBundle::new("runtime::seccomp", &["true"], |spec| {
        spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_NOTIFY"});
    }) else {
        return;
    };
    let (status, _, err) = t.run();
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("SCMP_ACT_NOTIFY (a seccomp agent) is not supported"),
        "{err}"
    );
}

#[test]
fn hooks_run_at_their_points_with_the_state_on_stdin() {
    let Some(t) = TestBundle::new(
        "runtime::hooks",
        &["sh", "-c", "cat /started-by-hook"],
        |_| {},
    ) else {
        return;
    };
    let out = t.dir.path().join("hooks");
    std::fs::create_dir(&out).unwrap();
    let save = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}.json", out.display())]});
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(t.bundle.join("config.json")).unwrap()).unwrap();
    spec["hooks"] = json!({
        "prestart": [save("prestart")],
        "createRuntime": [save("createRuntime")],
        "createContainer": [save("createContainer")],
        // runs inside the container, after pivot_root: its paths are the container's
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo from-startContainer > /started-by-hook"]}],
        "poststart": [save("poststart")],
        "poststop": [save("poststop")]
    });
    std::fs::write(
        t.bundle.join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    let (status, stdout, err) = t.run();
    assert!(status.success(), "{err}");
    assert_eq!(stdout, "from-startContainer\n");
    for (name, status) in [
        ("prestart", "creating"),
        ("createRuntime", "creating"),
        ("createContainer", "creating"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let text = std::fs::read_to_string(out.join(format!("{name}.json")))
            .unwrap_or_else(|_| panic!("{name} did not run"));
        let state: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(state["id"], t.id.as_str(), "{name}");
        assert_eq!(state["status"], status, "{name}");
        assert_eq!(state["bundle"], t.bundle.to_str().unwrap(), "{name}");
    }

    // A failing createRuntime hook stops the creation and leaves nothing behind.
    let t = TestBundle::new("runtime::hooks", &["true"], |spec| {
        spec["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo no-network >&2; exit 2"]}]});
    })
    .unwrap();
    let (status, _, err) = t.run();
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("createRuntime hook /bin/sh exited with 2: no-network"),
        "{err}"
    );
    assert!(!t.root.join(&t.id).exists() && !t.cgroup_dir("pids").exists());
}

#[test]
fn the_built_in_init_reaps_orphans_and_forwards_signals() {
    // An orphan whose parent exits at once is reparented to PID 1, which must reap it.
    let script = "echo pid=$$; sh -c 'sleep 0.2 &'; sleep 0.8; \
                  echo zombies=$(cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == \"Z\"' | wc -l); \
                  echo init=$(tr '\\0' ' ' < /proc/1/cmdline | cut -c1-40)";
    let Some(t) = TestBundle::new("runtime::init", &["sh", "-c", script], |spec| {
        spec["annotations"] = json!({"io.wharf.init": "true"});
    }) else {
        return;
    };
    let (status, out, err) = t.run();
    assert!(status.success(), "{out} {err}");
    assert!(out.contains("pid=2\n"), "the program is not PID 1: {out}");
    assert!(out.contains("zombies=0\n"), "{out}");

    // SIGTERM to the container reaches the program through the init; its status comes back.
    let t = TestBundle::new(
        "runtime::init",
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; while true; do sleep 0.05; done",
        ],
        |spec| {
            spec["annotations"] = json!({"io.wharf.init": "true"});
        },
    )
    .unwrap();
    let mut running = t
        .cmd(&["run", "--bundle", t.bundle.to_str().unwrap(), &t.id])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    t.wait_for("running");
    std::thread::sleep(Duration::from_millis(200));
    assert!(t.wharf(&["kill", &t.id, "TERM"]).0.success());
    assert_eq!(running.wait().unwrap().code(), Some(42));
}

#[test]
fn no_pivot_moves_the_root_instead() {
    let Some(t) = TestBundle::new(
        "runtime::no_pivot",
        &["sh", "-c", "cat /etc/passwd | head -1; ls /"],
        |_| {},
    ) else {
        return;
    };
    let (status, out, err) = t.wharf(&[
        "run",
        "--no-pivot",
        "--bundle",
        t.bundle.to_str().unwrap(),
        &t.id,
    ]);
    assert!(status.success(), "{err}");
    assert!(
        out.starts_with("root:x:0:0:root:/root:/bin/sh\n"),
        "the container's own /etc: {out}"
    );
    assert!(!out.contains("work\n") && out.contains("proc\n"), "{out}");
}

#[test]
fn a_user_namespace_maps_container_root_to_an_unprivileged_host_uid() {
    let script = "echo uid=$(id -u); cat /proc/self/uid_map; touch /owned-by-host-root 2>&1 || true; sleep 0.3";
    let Some(t) = TestBundle::new("runtime::userns", &["sh", "-c", script], |spec| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        // cgroup v1 hierarchies cannot be mounted from a user namespace
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["type"] != "cgroup");
    }) else {
        return;
    };
    let (status, out, err) = t.run();
    assert!(status.success(), "{out} {err}");
    assert!(out.contains("uid=0\n"), "{out}");
    assert!(
        out.split_whitespace()
            .collect::<Vec<_>>()
            .windows(3)
            .any(|w| w == ["0", "100000", "65536"]),
        "{out}"
    );
    assert!(
        out.contains("Permission denied") || out.contains("Read-only"),
        "host root's files are not the container root's: {out}"
    );
}

#[test]
fn exec_enters_a_running_container_and_features_are_listed() {
    let Some(t) = TestBundle::new("runtime::exec", &["sleep", "300"], |spec| {
        spec["hostname"] = "exec-target".into();
    }) else {
        return;
    };
    assert!(t.create().0.success());
    assert!(t.wharf(&["start", &t.id]).0.success());
    let (status, out, err) = t.wharf(&[
        "exec",
        &t.id,
        "sh",
        "-c",
        "echo $$ $(hostname); ls /proc/self/fd | wc -l; exit 9",
    ]);
    assert_eq!(status.code(), Some(9), "{err}");
    assert_eq!(
        out, "2 exec-target\n4\n",
        "pid 2 in the container's pid namespace, its hostname, stdio only"
    );
    let (status, out, err) = t.wharf(&[
        "exec",
        "-e",
        "GREETING=hello",
        "-u",
        "65534:65534",
        &t.id,
        "sh",
        "-c",
        "echo $GREETING $(id -u):$(id -g)",
    ]);
    assert!(status.success(), "{err}");
    assert_eq!(out, "hello 65534:65534\n");
    let (status, _, err) = t.wharf(&["exec", &t.id, "/bin/nope"]);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("exec failed: /bin/nope: No such file or directory"),
        "{err}"
    );
    let pid_file = t.dir.path().join("exec.pid");
    // Detached, the process keeps its stdio: give it none, or `output()` would wait for it.
    let status = t
        .cmd(&[
            "exec",
            "--detach",
            "--pid-file",
            pid_file.to_str().unwrap(),
            &t.id,
            "sleep",
            "300",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let procs = std::fs::read_to_string(t.cgroup_dir("pids").join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "the exec'd process is in the container's cgroup"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("NoNewPrivs:\t1"));

    let (status, out, _) = t.wharf(&["features"]);
    assert!(status.success());
    let features: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(features["linux"]["seccomp"]["enabled"], true);
    assert!(
        features["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&json!("user"))
    );
    assert!(
        features["hooks"]
            .as_array()
            .unwrap()
            .contains(&json!("createRuntime"))
    );
}
