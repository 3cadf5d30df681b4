//! A real dockerd (Debian's `docker.io`) started by the test, in its own directories, with no
//! bridge and no iptables changes; stopped and cleaned up on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness;

pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's docker client (another one may sit earlier on PATH).
pub const DOCKER: &str = "/usr/bin/docker";

pub struct Dockerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// The cgroup parent of its containers (cgroupfs driver).
    pub cgroup_parent: String,
    child: Child,
}

impl Dockerd {
    /// Starts dockerd with `daemon_json` merged into its config; `None` (skip recorded) when not
    /// root or docker.io is missing.
    pub fn start(test: &str, mut daemon_json: serde_json::Value) -> Option<Dockerd> {
        if harness::skip_unless_root(test) {
            return None;
        }
        for binary in [DOCKERD, DOCKER] {
            if !Path::new(binary).exists() {
                harness::skip(test, &format!("{binary} is missing: install docker.io"));
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let cgroup_parent = format!(
            "/wharf-test-docker-{}-{}",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        );
        daemon_json["exec-opts"] = serde_json::json!(["native.cgroupdriver=cgroupfs"]);
        daemon_json["cgroup-parent"] = cgroup_parent.clone().into();
        let config = dir.path().join("daemon.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&daemon_json).unwrap()).unwrap();
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(dir.path().join("root"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--config-file")
            .arg(&config)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let daemon = Dockerd {
            dir,
            socket,
            cgroup_parent,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = daemon
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success();
            if ok {
                return Some(daemon);
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not start:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Runs the docker client against this daemon.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new(DOCKER)
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Stop by the pid we started; dockerd stops its containers and its containerd.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Anything still mounted under our directory (overlay layers, netns files) goes first.
        let base = self.dir.path().to_string_lossy().into_owned();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&base))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for point in points {
                let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
            }
        }
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
fn dockerd_runs_containers_with_wharf_as_its_runtime() {
    let test = "dockerd::dockerd_runs_containers_with_wharf_as_its_runtime";
    let runtimes = serde_json::json!({"runtimes": {"wharf": {"path": harness::WHARF, "runtimeArgs": ["runtime"]}}});
    let Some(daemon) = Dockerd::start(test, runtimes) else {
        return;
    };
    let Some(busybox) = crate::fixtures::busybox(test) else {
        return;
    };
    let archive = daemon.dir.path().join("busybox.tar");
    crate::fixtures::ImageBuilder::busybox(&busybox)
        .build()
        .write_docker_archive(&archive, "wharf-test/busybox:v1");
    let loaded = daemon.docker(&["load", "--input", archive.to_str().unwrap()]);
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );

    let out = daemon.docker(&[
        "run",
        "--runtime",
        "wharf",
        "--rm",
        "wharf-test/busybox:v1",
        "echo",
        "hi",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");

    // Exit codes, docker's seccomp profile, and errors reach the docker user.
    let out = daemon.docker(&[
        "run",
        "--runtime",
        "wharf",
        "--rm",
        "wharf-test/busybox:v1",
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Seccomp:\t2\n");
    let out = daemon.docker(&[
        "run",
        "--runtime",
        "wharf",
        "--rm",
        "wharf-test/busybox:v1",
        "/bin/nope",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("exec failed: /bin/nope: No such file or directory")
    );

    // A detached container, exec into it, stop it.
    let out = daemon.docker(&[
        "run",
        "--runtime",
        "wharf",
        "-d",
        "wharf-test/busybox:v1",
        "sleep",
        "300",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = daemon.docker(&["exec", &id, "sh", "-c", "echo pid=$$; exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pid=2\n",
        "exec joins the container's pid namespace"
    );
    let out = daemon.docker(&["stop", "--time", "1", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = daemon.docker(&["rm", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
