//! `wharf serve` refuses to start, with a clear message and exit code 1, when it cannot run safely;
//! it shuts down cleanly on SIGTERM and SIGINT.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{self, DaemonProcess, TestDaemon};

/// Spawns `cmd`, expects it to exit with status 1 within 20 s, and returns its stderr.
fn expect_refusal(dir: tempfile::TempDir, cmd: std::process::Command) -> String {
    let mut daemon = DaemonProcess::spawn(dir, cmd);
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("wharf serve kept running:\n{}", daemon.stderr()));
    let stderr = daemon.stderr();
    assert_eq!(status.code(), Some(1), "exit status; stderr:\n{stderr}");
    stderr
}

#[test]
fn refuses_to_run_as_a_non_root_user() {
    if harness::skip_unless_root("refuses_to_run_as_a_non_root_user") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // nobody must be able to reach the binary and the empty config file.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = DaemonProcess::command(dir.path());
    cmd.uid(65534).gid(65534);
    let stderr = expect_refusal(dir, cmd);
    assert!(
        stderr.contains("must run as root") && stderr.contains("uid 65534"),
        "{stderr}"
    );
}

#[test]
fn refuses_a_data_root_that_is_not_a_directory() {
    if harness::skip_unless_root("refuses_a_data_root_that_is_not_a_directory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a directory").unwrap();
    let mut cmd = DaemonProcess::command(dir.path());
    cmd.arg("--data-root").arg(file.join("data"));
    let stderr = expect_refusal(dir, cmd);
    assert!(
        stderr.contains(&format!("data root {}/data is not usable", file.display()))
            && stderr.contains("Not a directory"),
        "{stderr}"
    );
}

#[test]
fn refuses_a_read_only_data_root() {
    if harness::skip_unless_root("refuses_a_read_only_data_root") {
        return;
    }
    // A read-only bind of the data root, visible only inside a private mount namespace made for
    // this one child, so the host's mounts are never touched.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let cmd = DaemonProcess::command(dir.path());
    let serve_args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut shell = std::process::Command::new("unshare");
    shell
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@""#)
        .arg("sh")
        .arg(&data)
        .arg(harness::WHARF)
        .args(&serve_args);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => shell.env(key, v),
            None => shell.env_remove(key),
        };
    }
    let stderr = expect_refusal(dir, shell);
    assert!(
        stderr.contains(&format!("data root {} is not usable", data.display()))
            && stderr.contains(&data.join("blobs").display().to_string())
            && stderr.contains("Read-only file system"),
        "{stderr}"
    );
}

#[test]
fn refuses_a_port_that_is_taken() {
    if harness::skip_unless_root("refuses_a_port_that_is_taken") {
        return;
    }
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = DaemonProcess::command(dir.path());
    cmd.arg("--listen").arg(addr.to_string());
    let stderr = expect_refusal(dir, cmd);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
}

#[test]
fn refuses_a_second_daemon_on_the_same_data_root() {
    if harness::skip_unless_root("refuses_a_second_daemon_on_the_same_data_root") {
        return;
    }
    let first = DaemonProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = DaemonProcess::command(dir.path());
    cmd.arg("--data-root").arg(&first.data_root);
    let stderr = expect_refusal(dir, cmd);
    assert!(
        stderr.contains(&format!(
            "another wharf daemon (pid {}) is already using data root {}",
            first.pid(),
            first.data_root.display()
        )),
        "{stderr}"
    );
    // The first one is unharmed.
    assert!(first.socket.exists());
}

#[test]
fn the_lock_is_taken_in_process_too_and_released_at_stop() {
    if harness::skip_unless_root("the_lock_is_taken_in_process_too_and_released_at_stop") {
        return;
    }
    let mut first = TestDaemon::start();
    let other = tempfile::tempdir().unwrap();
    let mut config = harness::test_config(other.path());
    config.data_root = first.data_root.clone();
    let err = TestDaemon::start_in(other, config.clone())
        .err()
        .expect("second daemon refused")
        .to_string();
    assert!(err.contains("another wharf daemon"), "{err}");

    first.stop().unwrap();
    let again = TestDaemon::start_in(tempfile::tempdir().unwrap(), config);
    assert!(
        again.is_ok(),
        "lock released at stop: {:?}",
        again.err().map(|e| e.to_string())
    );
}

#[test]
fn refuses_a_malformed_config_file_naming_it() {
    if harness::skip_unless_root("refuses_a_malformed_config_file_naming_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "data_root = \"/x\"\nlisten = [\n").unwrap();
    let mut cmd = DaemonProcess::command(dir.path());
    cmd.arg("--config").arg(&config);
    let stderr = expect_refusal(dir, cmd);
    assert!(
        stderr.contains(&format!("config file {}", config.display())) && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[test]
fn refuses_a_socket_another_process_serves_and_replaces_a_stale_one() {
    if harness::skip_unless_root("refuses_a_socket_another_process_serves_and_replaces_a_stale_one")
    {
        return;
    }
    let first = DaemonProcess::start();
    // A second daemon with its own data root but the first one's socket.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = DaemonProcess::command(dir.path());
    cmd.arg("--socket").arg(&first.socket);
    let stderr = expect_refusal(dir, cmd);
    assert!(
        stderr.contains(&format!(
            "cannot serve on socket {}",
            first.socket.display()
        )) && stderr.contains("another process is serving on it"),
        "{stderr}"
    );

    // A socket file nobody listens on (a daemon that was SIGKILLed) is replaced.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("wharf.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let cmd = DaemonProcess::command(dir.path());
    let mut daemon = DaemonProcess::spawn(dir, cmd);
    daemon.wait_ready();
}

#[test]
fn stops_cleanly_on_sigterm_and_sigint() {
    if harness::skip_unless_root("stops_cleanly_on_sigterm_and_sigint") {
        return;
    }
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut daemon = DaemonProcess::start();
        daemon.signal(signal);
        let status = daemon
            .wait_exit(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("daemon still running after {signal}"));
        let stderr = daemon.stderr();
        assert!(status.success(), "{signal}: {status}\n{stderr}");
        assert!(stderr.contains("wharf daemon stopped"), "{stderr}");
        assert!(!daemon.socket.exists(), "socket removed at stop");
        // The lock is free again: a new daemon on the same data root starts.
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = DaemonProcess::command(dir.path());
        cmd.arg("--data-root").arg(&daemon.data_root);
        let mut next = DaemonProcess::spawn(dir, cmd);
        next.wait_ready();
    }
}
