//! The client face: `wharf version` and `wharf info` through the socket and over TCP, and the
//! messages a user sees when the daemon is not there.

use crate::harness::{self, DaemonProcess, run_wharf, run_wharf_input, wharf_command};

#[test]
fn version_and_info_answer_through_the_socket() {
    if harness::skip_unless_root("version_and_info_answer_through_the_socket") {
        return;
    }
    let daemon = DaemonProcess::start();
    let host = format!("unix://{}", daemon.socket.display());

    let (status, out, err) = run_wharf(wharf_command().args(["--host", &host, "version"]));
    assert!(status.success(), "{err}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(out.starts_with("Client:\n"), "{out}");
    assert!(out.contains("\nServer:\n"), "{out}");
    assert_eq!(
        out.matches(&format!(" Version:      {version}\n")).count(),
        2,
        "{out}"
    );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        out.contains(&format!(" Kernel:       {}", kernel.trim())),
        "{out}"
    );

    let (status, out, err) = run_wharf(wharf_command().env("WHARF_HOST", &host).arg("info"));
    assert!(status.success(), "{err}");
    assert!(
        out.contains(&format!(
            " Data root:         {}\n",
            daemon.data_root.display()
        )),
        "{out}"
    );
    assert!(out.contains(" Cgroup driver:     cgroupfs\n"), "{out}");

    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &host, "info", "--format", "json"]));
    assert!(status.success(), "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["data_root"], daemon.data_root.display().to_string());
    assert_eq!(info["socket"], daemon.socket.display().to_string());
}

#[test]
fn over_tcp_the_client_needs_a_token_or_a_login() {
    if harness::skip_unless_root("over_tcp_the_client_needs_a_token_or_a_login") {
        return;
    }
    let daemon = DaemonProcess::start();
    let socket = format!("unix://{}", daemon.socket.display());
    let (_, out, _) = run_wharf(wharf_command().args(["-H", &socket, "info", "--format", "json"]));
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tcp = format!(
        "http://{}",
        info["tcp_address"].as_str().expect("serving on TCP")
    );

    // Without credentials: refused, with a hint.
    let (status, _, err) = run_wharf(wharf_command().args(["-H", &tcp, "info"]));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("401") && err.contains("wharf login"), "{err}");

    // A user made on the socket, and a token for it.
    let (status, out, err) = run_wharf_input(
        wharf_command().args([
            "-H",
            &socket,
            "user",
            "add",
            "ops",
            "--role",
            "operator",
            "--password-stdin",
        ]),
        "ops-password\n",
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "added user ops (operator)\n");
    let (status, token, err) = run_wharf(wharf_command().args([
        "-H", &socket, "token", "create", "--name", "ci", "--user", "ops",
    ]));
    assert!(status.success(), "{err}");
    let token = token.trim();
    assert!(token.starts_with("wharf_"), "{token}");

    let (status, out, err) = run_wharf(
        wharf_command()
            .env("WHARF_HOST", &tcp)
            .env("WHARF_TOKEN", token)
            .args(["version", "--format", "json"]),
    );
    assert!(status.success(), "{err}");
    let version: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(version["server"]["version"], env!("CARGO_PKG_VERSION"));
    // An operator may not manage users.
    let (status, _, err) =
        run_wharf(wharf_command().args(["-H", &tcp, "--token", token, "user", "ls"]));
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("403") && err.contains("ops may not user.manage"),
        "{err}"
    );

    // wharf login keeps a token per host (mode 0600); logout revokes it.
    let home = tempfile::tempdir().unwrap();
    let (status, out, err) = run_wharf_input(
        wharf_command().env("XDG_CONFIG_HOME", home.path()).args([
            "login",
            &tcp,
            "--username",
            "ops",
            "--password-stdin",
        ]),
        "ops-password\n",
    );
    assert!(status.success(), "{err}");
    assert!(
        out.starts_with(&format!("logged in to {tcp} as ops (operator)")),
        "{out}"
    );
    let store = home.path().join("wharf/credentials.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (status, _, err) = run_wharf(
        wharf_command()
            .env("XDG_CONFIG_HOME", home.path())
            .args(["-H", &tcp, "info"]),
    );
    assert!(status.success(), "the stored token is used: {err}");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    let login_token = stored["hosts"][&tcp]["token"].as_str().unwrap().to_owned();

    let (status, out, err) = run_wharf(
        wharf_command()
            .env("XDG_CONFIG_HOME", home.path())
            .args(["logout", &tcp]),
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("the token was revoked"), "{out}");
    let (status, _, err) =
        run_wharf(wharf_command().args(["-H", &tcp, "--token", &login_token, "info"]));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("revoked"), "{err}");

    let (status, _, err) = run_wharf_input(
        wharf_command().env("XDG_CONFIG_HOME", home.path()).args([
            "login",
            &tcp,
            "--username",
            "ops",
            "--password-stdin",
        ]),
        "wrong-password\n",
    );
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("wrong user name or password"), "{err}");
}

#[test]
fn an_absent_daemon_is_reported_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody-home.sock");
    let host = format!("unix://{}", socket.display());
    let (status, out, err) = run_wharf(wharf_command().args(["-H", &host, "version"]));
    assert_eq!(status.code(), Some(1));
    assert!(
        out.contains("Client:"),
        "the client part is still shown: {out}"
    );
    assert!(
        err.contains(&format!(
            "cannot reach the wharf daemon at {host}: is `wharf serve` running?"
        )),
        "{err}"
    );

    // A TCP port nobody listens on: bind one, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (status, _, err) = run_wharf(
        wharf_command()
            .env("WHARF_HOST", format!("http://127.0.0.1:{port}"))
            .arg("info"),
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains(&format!(
            "cannot reach the wharf daemon at http://127.0.0.1:{port}: is `wharf serve` running?"
        )),
        "{err}"
    );
}

#[test]
fn bad_hosts_and_flags_are_usage_errors() {
    let (status, _, err) = run_wharf(wharf_command().args(["-H", "ftp://x", "info"]));
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("invalid daemon host \"ftp://x\""), "{err}");

    let (status, _, err) = run_wharf(wharf_command().args(["info", "--format", "yaml"]));
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("yaml"), "{err}");

    let (status, _, err) = run_wharf(wharf_command().arg("no-such-command"));
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("no-such-command"), "{err}");
}
