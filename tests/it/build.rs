//! Making images on the daemon: `commit` of a container's changes, and Dockerfile builds.

use std::io::Read;

use crate::fixtures;
use crate::harness::{self, DaemonProcess, run_wharf, wharf_command};

const IMAGE: &str = "wharf-test/busybox:latest";

fn daemon_with_busybox(test: &str) -> Option<DaemonProcess> {
    if harness::skip_unless_root(test) {
        return None;
    }
    let busybox = fixtures::busybox(test)?;
    let daemon = DaemonProcess::start();
    harness::load_busybox(&host(&daemon), daemon.dir.path(), &busybox);
    Some(daemon)
}

fn host(daemon: &DaemonProcess) -> String {
    format!("unix://{}", daemon.socket.display())
}

fn wharf(daemon: &DaemonProcess, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    run_wharf(wharf_command().args(["-H", &host(daemon)]).args(args))
}

fn ok(daemon: &DaemonProcess, args: &[&str]) -> String {
    let (status, out, err) = wharf(daemon, args);
    assert!(status.success(), "wharf {args:?}: {err}");
    out
}

fn inspect(daemon: &DaemonProcess, name: &str) -> serde_json::Value {
    serde_json::from_str(&ok(daemon, &["image", "inspect", name])).unwrap()
}

/// The entries of an image's top layer, as `wharf save` writes it.
fn top_layer_entries(daemon: &DaemonProcess, name: &str) -> Vec<String> {
    let saved = daemon.dir.path().join("saved.tar");
    ok(daemon, &["save", "-o", saved.to_str().unwrap(), name]);
    let mut files = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&saved).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(path, bytes);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let top = manifest[0]["Layers"].as_array().unwrap().last().unwrap();
    let bytes = &files[top.as_str().unwrap()];
    let plain: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&bytes[..]))
    } else {
        Box::new(&bytes[..])
    };
    let mut names: Vec<String> = tar::Archive::new(plain)
        .entries()
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn commit_keeps_a_containers_changes_deletions_and_settings() {
    let test = "build::commit_keeps_a_containers_changes_deletions_and_settings";
    let Some(daemon) = daemon_with_busybox(test) else {
        return;
    };
    let _gone = harness::RemoveContainers(host(&daemon));

    // First: files added, one removed, settings given to the container.
    ok(
        &daemon,
        &[
            "run",
            "--name",
            "first",
            "-e",
            "GREETING=hello",
            "-w",
            "/srv",
            "--label",
            "made.by=test",
            IMAGE,
            "sh",
            "-c",
            "mkdir -p /srv/app /usr/bin && echo made > /srv/app/f && echo old > /usr/bin/old && rm /etc/group",
        ],
    );
    let digest = ok(
        &daemon,
        &[
            "commit",
            "-m",
            "the first change",
            "-a",
            "A Tester",
            "first",
            "wharf-test/committed:v1",
        ],
    );
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    let entries = top_layer_entries(&daemon, "wharf-test/committed:v1");
    for wanted in ["srv/app/f", "usr/bin/old", "etc/.wh.group"] {
        assert!(
            entries.iter().any(|e| e == wanted),
            "{wanted} in {entries:?}"
        );
    }
    // The runtime's mount points are not the container's changes.
    for unwanted in [
        "proc",
        "sys",
        "dev",
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
    ] {
        assert!(
            !entries.iter().any(|e| e == unwanted),
            "{unwanted} in {entries:?}"
        );
    }
    let detail = inspect(&daemon, "wharf-test/committed:v1");
    assert_eq!(detail["digest"], digest.trim());
    assert_eq!(detail["config"]["author"], "A Tester");
    let config = &detail["config"]["config"];
    assert!(
        config["Env"]
            .as_array()
            .unwrap()
            .contains(&"GREETING=hello".into()),
        "{config}"
    );
    assert_eq!(config["WorkingDir"], "/srv");
    assert_eq!(config["Labels"]["made.by"], "test");
    let history = detail["config"]["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["comment"], "the first change");
    assert!(
        last["created_by"].as_str().unwrap().contains("first"),
        "{last}"
    );
    assert_eq!(detail["layers"].as_array().unwrap().len(), 2);

    // Second, on the first: a directory replaced (opaque), the settings inherited.
    ok(
        &daemon,
        &[
            "run",
            "--name",
            "second",
            "wharf-test/committed:v1",
            "sh",
            "-c",
            "rm -rf /usr/bin && mkdir /usr/bin && echo new > /usr/bin/only",
        ],
    );
    ok(&daemon, &["commit", "second", "wharf-test/committed:v2"]);
    let entries = top_layer_entries(&daemon, "wharf-test/committed:v2");
    assert!(
        entries.iter().any(|e| e == "usr/bin/.wh..wh..opq"),
        "{entries:?}"
    );
    let out = ok(
        &daemon,
        &[
            "run",
            "--rm",
            "wharf-test/committed:v2",
            "sh",
            "-c",
            "cat app/f; ls /usr/bin; test -e /etc/group || echo no-group; echo $GREETING; pwd",
        ],
    );
    assert_eq!(out, "made\nonly\nno-group\nhello\n/srv\n");

    // A running container is committed while paused, and goes on running.
    ok(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            "busy",
            IMAGE,
            "sh",
            "-c",
            "echo live > /live; sleep 60",
        ],
    );
    harness::wait_until("the running container wrote its file", || {
        wharf(&daemon, &["exec", "busy", "test", "-e", "/live"])
            .0
            .success()
    });
    ok(&daemon, &["commit", "busy", "wharf-test/committed:live"]);
    let state: serde_json::Value =
        serde_json::from_str(&ok(&daemon, &["inspect", "busy"])).unwrap();
    assert_eq!(state["state"], "running", "{state}");
    let out = ok(
        &daemon,
        &["run", "--rm", "wharf-test/committed:live", "cat", "/live"],
    );
    assert_eq!(out, "live\n");

    // Bad input: unknown container, a digest for a name.
    let (status, _, err) = wharf(&daemon, &["commit", "nope", "wharf-test/x:1"]);
    assert!(!status.success());
    assert!(err.contains("no such container: nope"), "{err}");
    let (status, _, err) = wharf(
        &daemon,
        &[
            "commit",
            "first",
            "x@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ],
    );
    assert!(!status.success());
    assert!(err.contains("not a digest"), "{err}");
}
