//! Settings layer as documented: defaults, then the config file, then `WHARF_*`, then flags.

use crate::harness::{self, DaemonProcess, run_wharf, wharf_command};

#[test]
fn file_env_and_flags_layer_in_a_running_daemon() {
    if harness::skip_unless_root("file_env_and_flags_layer_in_a_running_daemon") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "# from the file\ndata_root = \"{}\"\nsocket = \"{}\"\nlisten = \"127.0.0.1:1\"\nlog_format = \"json\"\n",
            d.join("file-data").display(),
            d.join("file.sock").display()
        ),
    )
    .unwrap();
    let mut cmd = wharf_command();
    cmd.arg("serve")
        .env("WHARF_CONFIG", &config)
        .env("WHARF_LISTEN", "127.0.0.1:0") // env beats the file's port 1
        .env("WHARF_SOCKET", d.join("env.sock"))
        .arg("--socket") // and the flag beats env
        .arg(d.join("flag.sock"));
    let mut daemon = DaemonProcess::spawn(dir, cmd);
    daemon.socket = daemon.dir.path().join("flag.sock");
    daemon.wait_ready();

    let host = format!("unix://{}", daemon.socket.display());
    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &host, "info", "--format", "json"]));
    assert!(status.success(), "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    let d = daemon.dir.path();
    assert_eq!(
        info["data_root"],
        d.join("file-data").display().to_string(),
        "from the file"
    );
    assert_eq!(
        info["config_file"],
        d.join("wharf.toml").display().to_string()
    );
    assert_eq!(
        info["socket"],
        d.join("flag.sock").display().to_string(),
        "flag over env"
    );
    let tcp = info["tcp_address"].as_str().unwrap();
    assert!(
        tcp.starts_with("127.0.0.1:") && !tcp.ends_with(":1"),
        "env over file: {tcp}"
    );
    assert!(!d.join("file.sock").exists() && !d.join("env.sock").exists());

    // log_format = "json" from the file: every log line is a JSON object.
    let stderr = daemon.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string(), "{line}");
    }
}

#[test]
fn an_invalid_environment_value_names_its_variable() {
    if harness::skip_unless_root("an_invalid_environment_value_names_its_variable") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let (status, _, err) = run_wharf(
        wharf_command()
            .arg("serve")
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--socket")
            .arg(dir.path().join("wharf.sock"))
            .env("WHARF_CONFIG", &config)
            .env("WHARF_LISTEN", "localhost:http"),
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("invalid listen \"localhost:http\" (from environment)"),
        "{err}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing created before the settings are valid"
    );
}
