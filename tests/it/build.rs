//! Making images on the daemon: `commit` of a container's changes, and Dockerfile builds.

use std::io::Read;

use crate::harness::{self, DaemonProcess, run_wharf, wharf_command};

const IMAGE: &str = "wharf-test/busybox:latest";

fn ok(daemon: &DaemonProcess, args: &[&str]) -> String {
    let (status, out, err) = daemon.wharf(args);
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
    // Each entry's name, and `NAME [KEY]` for each extended attribute it carries.
    let mut names: Vec<String> = Vec::new();
    for entry in tar::Archive::new(plain).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        if let Ok(Some(extensions)) = entry.pax_extensions() {
            for ext in extensions.flatten() {
                if let Ok(key) = ext.key()
                    && key.starts_with("SCHILY.xattr.")
                {
                    names.push(format!("{name} [{key}]"));
                }
            }
        }
        names.push(name);
    }
    names.sort();
    names
}

#[test]
fn commit_keeps_a_containers_changes_deletions_and_settings() {
    let test = "build::commit_keeps_a_containers_changes_deletions_and_settings";
    let Some(daemon) = DaemonProcess::with_busybox(test) else {
        return;
    };
    let _gone = harness::RemoveContainers(daemon.host());

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
    // A capability set on a file (as `setcap` in the container would) is part of the layer.
    let id: serde_json::Value = serde_json::from_str(&ok(&daemon, &["inspect", "first"])).unwrap();
    let file = daemon.data_root.join(format!(
        "containers/{}/upper/srv/app/f",
        id["id"].as_str().unwrap()
    ));
    // vfs_cap_data v2, effective: CAP_NET_BIND_SERVICE permitted.
    let mut caps = [0u8; 20];
    caps[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    caps[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
    let path = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated strings and a value buffer of the length given.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            caps.as_ptr().cast(),
            caps.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
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
    for wanted in [
        "srv/app/f",
        "srv/app/f [SCHILY.xattr.security.capability]",
        "usr/bin/old",
        "etc/.wh.group",
    ] {
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
        daemon
            .wharf(&["exec", "busy", "test", "-e", "/live"])
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

    // A container that ran its --entrypoint alone: so does its image.
    ok(
        &daemon,
        &["run", "--name", "ep", "--entrypoint", "hostname", IMAGE],
    );
    ok(&daemon, &["commit", "ep", "wharf-test/committed:ep"]);
    let detail = inspect(&daemon, "wharf-test/committed:ep");
    assert_eq!(
        detail["config"]["config"]["Entrypoint"],
        serde_json::json!(["hostname"])
    );
    assert!(detail["config"]["config"]["Cmd"].is_null(), "{detail}");

    // Bad input: unknown container, a digest for a name.
    let (status, _, err) = daemon.wharf(&["commit", "nope", "wharf-test/x:1"]);
    assert!(!status.success());
    assert!(err.contains("no such container: nope"), "{err}");
    let (status, _, err) = daemon.wharf(&[
        "commit",
        "first",
        "x@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ]);
    assert!(!status.success());
    assert!(err.contains("not a digest"), "{err}");
}

/// A context directory with a Dockerfile, files, a gzip tar and a link.
fn write_context(dir: &std::path::Path, dockerfile: &str) {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.join("files/a.txt"), "file a\n").unwrap();
    std::fs::write(dir.join("files/b.txt"), "file b\n").unwrap();
    std::fs::write(dir.join("files/skip.md"), "not copied\n").unwrap();
    std::fs::write(dir.join("secret.key"), "never sent\n").unwrap();
    std::fs::write(dir.join(".dockerignore"), "*.key\n").unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(7);
        h.set_mode(0o644);
        tar.append_data(&mut h, "inner/file.txt", &b"inside\n"[..])
            .unwrap();
        tar.finish().unwrap();
    }
    std::fs::write(dir.join("bundle.tar.gz"), gz.finish().unwrap()).unwrap();
}

const MULTI_STAGE: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=wharf-test/busybox:latest
ARG GREETING=hello
FROM ${BASE} AS tools
ARG GREETING
# a comment inside the stage
RUN echo "$GREETING from the tools stage" > /greeting.txt \
 && mkdir -p /out && echo tool > /out/tool.txt

FROM $BASE
MAINTAINER The Wharf Tests <tests@wharf.invalid>
LABEL org.example.title="wharf test" version=1
ENV APP_HOME=/app PATH=/app/bin:/usr/bin:/bin
WORKDIR $APP_HOME
COPY --from=tools /greeting.txt ./
COPY --from=tools /out /app/out
COPY files/*.txt notes/
ADD bundle.tar.gz /app/unpacked/
ADD ["files/a.txt", "/app/added.txt"]
COPY --chown=1000 files/a.txt owned.txt
RUN ["sh", "-c", "echo exec-form > /app/exec.txt"]
SHELL ["/bin/sh", "-c"]
RUN rm /etc/group && echo "$APP_HOME" > /app/home.txt
USER 1000:1000
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD ["true"]
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/greeting.txt"]
"#;

fn build(
    daemon: &DaemonProcess,
    context: &std::path::Path,
    extra: &[&str],
) -> (bool, String, String) {
    let mut args = vec!["build"];
    args.extend_from_slice(extra);
    args.push(context.to_str().unwrap());
    let (status, out, err) = daemon.wharf(&args);
    (status.success(), out, err)
}

#[test]
fn a_multi_stage_dockerfile_builds_runs_and_rebuilds_from_the_cache() {
    let test = "build::a_multi_stage_dockerfile_builds_runs_and_rebuilds_from_the_cache";
    let Some(daemon) = DaemonProcess::with_busybox(test) else {
        return;
    };
    let _gone = harness::RemoveContainers(daemon.host());
    let context = daemon.dir.path().join("context");
    write_context(&context, MULTI_STAGE);

    let (ok_, out, err) = build(
        &daemon,
        &context,
        &[
            "-t",
            "wharf-test/built:v1",
            "--build-arg",
            "GREETING=bonjour",
        ],
    );
    assert!(ok_, "{out}\n{err}");
    assert!(out.contains("Step 1/"), "{out}");
    assert!(
        out.contains("Successfully tagged wharf-test/built:v1"),
        "{out}"
    );
    assert!(!out.contains("Using cache"), "{out}");

    // The image runs with its ENTRYPOINT and CMD, as its USER.
    let out = ok(&daemon, &["run", "--rm", "wharf-test/built:v1"]);
    assert_eq!(out, "bonjour from the tools stage\n");
    let out = ok(
        &daemon,
        &["run", "--rm", "wharf-test/built:v1", "id -u; pwd"],
    );
    assert_eq!(out, "1000\n/app\n");
    let check = "cat out/tool.txt; ls notes; cat unpacked/inner/file.txt added.txt exec.txt home.txt; \
                 stat -c %u:%g owned.txt notes/a.txt; test -e /etc/group || echo no-group; \
                 test -e secret.key || echo no-key";
    let out = ok(
        &daemon,
        &["run", "--rm", "--user", "0", "wharf-test/built:v1", check],
    );
    assert_eq!(
        out,
        "tool\na.txt\nb.txt\ninside\nfile a\nexec-form\n/app\n1000:1000\n0:0\nno-group\nno-key\n"
    );

    // The config, history and layers are what the Dockerfile says.
    let detail = inspect(&daemon, "wharf-test/built:v1");
    let config = &detail["config"]["config"];
    let env = config["Env"].as_array().unwrap();
    assert!(env.contains(&"APP_HOME=/app".into()), "{config}");
    assert!(
        env.contains(&"PATH=/app/bin:/usr/bin:/bin".into()),
        "{config}"
    );
    assert!(
        !env.iter()
            .any(|e| e.as_str().unwrap().starts_with("GREETING")),
        "build args are not kept: {config}"
    );
    assert_eq!(config["WorkingDir"], "/app");
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(
        detail["config"]["author"],
        "The Wharf Tests <tests@wharf.invalid>"
    );
    assert_eq!(config["Labels"]["org.example.title"], "wharf test");
    assert_eq!(config["Labels"]["version"], "1");
    assert_eq!(
        config["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "53/udp": {}})
    );
    assert_eq!(config["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(config["StopSignal"], "SIGINT");
    assert_eq!(
        config["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "true"])
    );
    assert_eq!(config["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert_eq!(config["Healthcheck"]["Retries"], 4);
    assert_eq!(config["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(config["Cmd"], serde_json::json!(["cat /app/greeting.txt"]));
    assert_eq!(config["Shell"], serde_json::json!(["/bin/sh", "-c"]));
    // The base's layer and one per COPY, ADD and RUN of the last stage.
    assert_eq!(detail["layers"].as_array().unwrap().len(), 9, "{detail}");
    let history = detail["config"]["history"].as_array().unwrap();
    let made: Vec<&str> = history
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    let with_layers = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(with_layers, 9, "{made:#?}");
    assert!(
        made.iter()
            .any(|m| m.starts_with("RUN sh -c echo exec-form")),
        "{made:#?}"
    );
    assert!(made.contains(&"WORKDIR /app"), "{made:#?}");
    assert!(
        made.iter()
            .any(|m| m.starts_with("COPY files/*.txt")
                || m.starts_with("COPY files/a.txt files/b.txt")),
        "{made:#?}"
    );

    // Unchanged: every step from the cache.
    let (ok_, out, err) = build(
        &daemon,
        &context,
        &[
            "-t",
            "wharf-test/built:v2",
            "--build-arg",
            "GREETING=bonjour",
        ],
    );
    assert!(ok_, "{out}\n{err}");
    assert_eq!(out.matches("Using cache").count(), 9, "{out}");
    // The image is the one the first build made (docker's builder answers so too).
    let v1 = inspect(&daemon, "wharf-test/built:v1")["digest"].clone();
    assert_eq!(inspect(&daemon, "wharf-test/built:v2")["digest"], v1);
    assert_eq!(
        ok(&daemon, &["run", "--rm", "wharf-test/built:v2"]),
        "bonjour from the tools stage\n"
    );

    // One copied file changed: the steps before it come from the cache, the rest run again.
    std::fs::write(context.join("files/b.txt"), "file b, changed\n").unwrap();
    let (ok_, out, err) = build(
        &daemon,
        &context,
        &[
            "-t",
            "wharf-test/built:v3",
            "--build-arg",
            "GREETING=bonjour",
        ],
    );
    assert!(ok_, "{out}\n{err}");
    assert_eq!(out.matches("Using cache").count(), 3, "{out}");
    assert_ne!(inspect(&daemon, "wharf-test/built:v3")["digest"], v1);
    let out = ok(
        &daemon,
        &[
            "run",
            "--rm",
            "--user",
            "0",
            "wharf-test/built:v3",
            "cat notes/b.txt",
        ],
    );
    assert_eq!(out, "file b, changed\n");

    // Another build arg changes the RUN of the first stage, and all after it.
    let (ok_, out, err) = build(&daemon, &context, &["-t", "wharf-test/built:v4"]);
    assert!(ok_, "{out}\n{err}");
    assert_eq!(out.matches("Using cache").count(), 0, "{out}");
    assert_eq!(
        ok(&daemon, &["run", "--rm", "wharf-test/built:v4"]),
        "hello from the tools stage\n"
    );
    // --target stops at a stage; -q prints only the digest.
    let (ok_, out, err) = build(
        &daemon,
        &context,
        &["-q", "--target", "tools", "-t", "wharf-test/tools"],
    );
    assert!(ok_, "{out}\n{err}");
    assert!(
        out.trim().starts_with("sha256:") && out.lines().count() == 1,
        "{out}"
    );
    assert_eq!(
        ok(
            &daemon,
            &["run", "--rm", "wharf-test/tools", "cat", "/greeting.txt"]
        ),
        "hello from the tools stage\n"
    );
}

#[test]
fn bad_dockerfiles_and_escaping_sources_fail_naming_the_line() {
    let test = "build::bad_dockerfiles_and_escaping_sources_fail_naming_the_line";
    let Some(daemon) = DaemonProcess::with_busybox(test) else {
        return;
    };
    let _gone = harness::RemoveContainers(daemon.host());
    let context = daemon.dir.path().join("bad");
    write_context(&context, "");
    // A link out of the context, and a file beside it that must never be read.
    let outside = daemon.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "OUTSIDE").unwrap();
    std::os::unix::fs::symlink(&outside, context.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../outside", context.join("rel-link")).unwrap();
    let cases: &[(&str, &str)] = &[
        ("FROM\n", "Dockerfile line 1: FROM needs arguments"),
        (
            &format!("FROM {IMAGE}\nFOO bar\n"),
            "Dockerfile line 2: unknown instruction: FOO",
        ),
        (
            &format!("FROM {IMAGE}\nRUN true\nCOPY ../outside/secret /x\n"),
            "Dockerfile line 3: COPY: ../outside/secret: the path leaves the build context",
        ),
        (
            &format!("FROM {IMAGE}\nCOPY {}/secret /x\n", outside.display()),
            "Dockerfile line 2: COPY:",
        ),
        (
            &format!("FROM {IMAGE}\nCOPY abs-link/secret /x\n"),
            "outside the build context",
        ),
        (
            &format!("FROM {IMAGE}\nCOPY rel-link/secret /x\n"),
            "rel-link is a symbolic link to ../outside, outside the build context",
        ),
        (
            &format!("FROM {IMAGE}\nENV A=1\nRUN exit 3\n"),
            "Dockerfile line 3: RUN: the command '/bin/sh -c exit 3' returned a non-zero code: 3",
        ),
        (
            &format!("FROM {IMAGE}\nCOPY nope.txt /x\n"),
            "Dockerfile line 2: COPY: nope.txt: no such file or directory in the build context",
        ),
        // Not here, and its registry (a closed port on loopback) cannot give it.
        (
            "FROM 127.0.0.1:1/wharf-test/absent:1\n",
            "Dockerfile line 1: FROM: no such image: 127.0.0.1:1/wharf-test/absent:1, and pulling it failed: registry 127.0.0.1:1",
        ),
    ];
    for (dockerfile, wanted) in cases {
        std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
        let (ok_, out, err) = build(&daemon, &context, &["-t", "wharf-test/bad:1"]);
        assert!(!ok_, "{dockerfile}: built\n{out}");
        assert!(
            err.contains(wanted),
            "{dockerfile}: wanted {wanted:?}\n{err}"
        );
        assert!(!out.contains("OUTSIDE") && !err.contains("OUTSIDE"));
    }
    // Nothing was tagged, and no step's container or mount is left.
    let (status, _, err) = daemon.wharf(&["image", "inspect", "wharf-test/bad:1"]);
    assert!(!status.success(), "{err}");
    let listed = ok(&daemon, &["ps", "-a", "-q"]);
    assert!(listed.trim().is_empty(), "{listed}");
    let root = daemon.data_root.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains(&format!("{root}/builds"))),
        "{mounts}"
    );
    let builds = daemon.data_root.join("builds");
    let left: Vec<_> = std::fs::read_dir(&builds)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// A build moved to another wharf host with `push`, run there, and pulled by a real dockerd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_image_is_pushed_to_another_wharf_and_runs_there_and_in_docker() {
    let test = "build::a_built_image_is_pushed_to_another_wharf_and_runs_there_and_in_docker";
    let Some(daemon) = DaemonProcess::with_busybox(test) else {
        return;
    };
    let Some(docker) = crate::dockerd::Dockerd::start(test, serde_json::json!({})) else {
        return;
    };
    let _gone = harness::RemoveContainers(daemon.host());
    let context = daemon.dir.path().join("moved");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("note.txt"), "moved between hosts\n").unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM {IMAGE}\nCOPY note.txt /note.txt\nRUN echo built-here >> /note.txt\nCMD [\"cat\", \"/note.txt\"]\n"
        ),
    )
    .unwrap();
    let (built, out, err) = build(&daemon, &context, &["-t", "wharf-test/moved:v1"]);
    assert!(built, "{out}\n{err}");

    let other = harness::TestDaemon::start();
    other.user_with_token("pusher", "operator").await;
    let addr = other.registry.unwrap().to_string();
    let remote = format!("{addr}/team/moved:v1");
    // Without a login the other registry refuses, and says what to do.
    let (status, _, err) = daemon.wharf(&["push", "wharf-test/moved:v1", &remote]);
    assert!(!status.success());
    assert!(err.contains(&format!("wharf login {addr}")), "{err}");
    let (status, _, err) = harness::run_wharf_input(
        wharf_command()
            .args(["-H", &daemon.host(), "login", &addr, "-u", "pusher"])
            .arg("--password-stdin"),
        "pusher-password\n",
    );
    assert!(status.success(), "{err}");
    let (status, out, err) = daemon.wharf(&["push", "wharf-test/moved:v1", &remote]);
    assert!(status.success(), "{err}");
    assert!(out.contains(&format!("Pushed: {remote}")), "{out}");
    assert_eq!(
        err.matches("pushed ").count(),
        4,
        "three layers and the config: {err}"
    );
    // A name without a registry is this daemon's own registry's, which has it already.
    let (status, out, err) = daemon.wharf(&["push", "wharf-test/moved:v1"]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("wharf-test/moved:v1 is in this daemon's registry already"),
        "{out}"
    );
    // A new name without a registry is not a push.
    let (status, _, err) = daemon.wharf(&["push", "wharf-test/moved:v1", "team/elsewhere:v1"]);
    assert!(!status.success());
    assert!(err.contains("team/elsewhere:v1 names no registry"), "{err}");
    // Again: the registry has every blob.
    let (status, _, err) = daemon.wharf(&["push", "wharf-test/moved:v1", &remote]);
    assert!(status.success(), "{err}");
    assert_eq!(err.matches("exists ").count(), 4, "{err}");

    // A build here FROM the other host's image pulls it (with the stored login).
    let again = daemon.dir.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    std::fs::write(
        again.join("Dockerfile"),
        format!("FROM {remote}\nRUN echo and-back >> /note.txt\n"),
    )
    .unwrap();
    let (built, out, err) = build(&daemon, &again, &["-t", "wharf-test/again:v1"]);
    assert!(built, "{out}\n{err}");
    assert!(out.contains(&format!("Pulling {remote}")), "{out}");
    assert_eq!(
        ok(&daemon, &["run", "--rm", "wharf-test/again:v1"]),
        "moved between hosts\nbuilt-here\nand-back\n"
    );

    // The other host runs it at once.
    let other_host = other.host();
    let _gone_there = harness::RemoveContainers(other_host.clone());
    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &other_host, "run", "--rm", "team/moved:v1"]));
    assert!(status.success(), "{err}");
    assert_eq!(out, "moved between hosts\nbuilt-here\n");

    // And a real dockerd pulls it from there and runs it.
    let ok_ = crate::harness::succeeded;
    ok_(
        docker.docker(&["login", &addr, "-u", "pusher", "-p", "pusher-password"]),
        "login",
    );
    ok_(docker.docker(&["pull", &remote]), "pull");
    let said = ok_(
        docker.docker(&["run", "--rm", "--network", "none", &remote]),
        "run",
    );
    assert_eq!(said, "moved between hosts\nbuilt-here\n");
}

#[test]
fn copy_follows_dockers_rules_for_destinations_links_owners_and_archives() {
    let test = "build::copy_follows_dockers_rules_for_destinations_links_owners_and_archives";
    let Some(daemon) = DaemonProcess::with_busybox(test) else {
        return;
    };
    let _gone = harness::RemoveContainers(daemon.host());
    let context = daemon.dir.path().join("rules");
    write_context(&context, "");
    std::os::unix::fs::symlink("files/a.txt", context.join("link.txt")).unwrap();
    // A gzip of something that is not a tar: ADD copies it as it is.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, b"not a tar").unwrap();
    std::fs::write(context.join("data.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM {IMAGE} AS base\n\
             RUN mkdir /out && echo tool > /out/tool.txt && ln -s tool.txt /out/current && ln -s /out /link-to-out\n\
             FROM {IMAGE}\n\
             WORKDIR /app\n\
             COPY files/a.txt .\n\
             COPY link.txt linked/\n\
             COPY --from=base /out/current /app/current.txt\n\
             COPY --from=base /link-to-out/ /app/from-dir/\n\
             COPY --chown=1000:1000 files/ /app/owned/deep/\n\
             ADD data.gz /app/\n"
        ),
    )
    .unwrap();
    let (built, out, err) = build(&daemon, &context, &["-t", "wharf-test/rules:v1"]);
    assert!(built, "{out}\n{err}");
    let check = "cat a.txt linked/link.txt current.txt from-dir/tool.txt; \
                 test -L from-dir/current && echo link-kept; \
                 stat -c %u:%g owned owned/deep owned/deep/a.txt; \
                 gunzip -c data.gz; echo";
    let out = ok(
        &daemon,
        &["run", "--rm", "wharf-test/rules:v1", "sh", "-c", check],
    );
    assert_eq!(
        out,
        "file a\nfile a\ntool\ntool\nlink-kept\n1000:1000\n1000:1000\n1000:1000\nnot a tar\n"
    );
    // A destination that became a directory is another step, not the cached file copy.
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {IMAGE}\nCOPY files/a.txt /data\n"),
    )
    .unwrap();
    let (built, out, err) = build(&daemon, &context, &["-t", "wharf-test/rules:file"]);
    assert!(built, "{out}\n{err}");
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {IMAGE}\nCOPY files/a.txt /data/\n"),
    )
    .unwrap();
    let (built, out, err) = build(&daemon, &context, &["-t", "wharf-test/rules:dir"]);
    assert!(built, "{out}\n{err}");
    assert!(!out.contains("Using cache"), "{out}");
    let out = ok(
        &daemon,
        &["run", "--rm", "wharf-test/rules:dir", "cat", "/data/a.txt"],
    );
    assert_eq!(out, "file a\n");
}

#[test]
fn a_build_whose_client_goes_away_stops_its_quiet_step_and_leaves_nothing() {
    let test = "build::a_build_whose_client_goes_away_stops_its_quiet_step_and_leaves_nothing";
    let Some(daemon) = DaemonProcess::with_busybox(test) else {
        return;
    };
    let _gone = harness::RemoveContainers(daemon.host());
    let context = daemon.dir.path().join("quiet");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN sleep 300\n"),
    )
    .unwrap();
    let mut client = wharf_command()
        .args(["-H", &daemon.host(), "build", context.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    harness::wait_until("the step's container runs", || {
        ok(&daemon, &["ps", "-q"]).lines().count() == 1
    });
    client.kill().unwrap();
    client.wait().unwrap();
    harness::wait_until("the step's container is gone", || {
        ok(&daemon, &["ps", "-a", "-q"]).trim().is_empty()
    });
    let builds = daemon.data_root.join("builds");
    harness::wait_until("the build's directory is gone", || {
        std::fs::read_dir(&builds).map_or(true, |mut d| d.next().is_none())
    });
}

#[test]
fn onbuild_triggers_run_in_the_child_and_unsupported_flags_are_refused() {
    let test = "build::onbuild_triggers_run_in_the_child_and_unsupported_flags_are_refused";
    let Some(daemon) = DaemonProcess::with_busybox(test) else {
        return;
    };
    let _gone = harness::RemoveContainers(daemon.host());
    let context = daemon.dir.path().join("onbuild");
    write_context(&context, "");
    let dockerfile = |text: String| std::fs::write(context.join("Dockerfile"), text).unwrap();
    dockerfile(format!(
        "FROM {IMAGE}\nONBUILD RUN echo triggered > /triggered\nONBUILD COPY files/a.txt /from-trigger.txt\n"
    ));
    let (built, out, err) = build(&daemon, &context, &["-t", "wharf-test/onbuild-base:v1"]);
    assert!(built, "{out}\n{err}");
    let base = inspect(&daemon, "wharf-test/onbuild-base:v1");
    assert_eq!(
        base["config"]["config"]["OnBuild"],
        serde_json::json!([
            "RUN echo triggered > /triggered",
            "COPY files/a.txt /from-trigger.txt"
        ])
    );
    dockerfile(
        "FROM wharf-test/onbuild-base:v1\nCMD [\"cat\", \"/triggered\", \"/from-trigger.txt\"]\n"
            .into(),
    );
    let (built, out, err) = build(&daemon, &context, &["-t", "wharf-test/onbuild-child:v1"]);
    assert!(built, "{out}\n{err}");
    assert!(out.contains("# Executing 2 build triggers"), "{out}");
    assert_eq!(
        ok(&daemon, &["run", "--rm", "wharf-test/onbuild-child:v1"]),
        "triggered\nfile a\n"
    );
    let child = inspect(&daemon, "wharf-test/onbuild-child:v1");
    assert!(child["config"]["config"]["OnBuild"].is_null(), "{child}");

    for (text, wanted) in [
        (
            format!("FROM {IMAGE}\nRUN --mount=type=cache,target=/c true\n"),
            "Dockerfile line 2: RUN: the flag --mount is not supported here",
        ),
        (
            format!("FROM --platform=linux/s390x {IMAGE}\n"),
            "Dockerfile line 1: FROM: --platform=linux/s390x: this host builds for linux/",
        ),
    ] {
        dockerfile(text);
        let (built, out, err) = build(&daemon, &context, &[]);
        assert!(!built, "{out}");
        assert!(err.contains(wanted), "{err}");
    }
}

#[test]
fn a_daemon_killed_mid_build_removes_what_the_build_left_when_it_starts_again() {
    let test = "build::a_daemon_killed_mid_build_removes_what_the_build_left_when_it_starts_again";
    let Some(mut daemon) = DaemonProcess::with_busybox(test) else {
        return;
    };
    let _gone = harness::RemoveContainers(daemon.host());
    let context = daemon.dir.path().join("killed");
    write_context(
        &context,
        &format!("FROM {IMAGE}\nCOPY files/ /f/\nRUN sleep 300\n"),
    );
    let mut client = wharf_command()
        .args(["-H", &daemon.host(), "build", context.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    harness::wait_until("the RUN step's container runs", || {
        ok(&daemon, &["ps", "-q"]).lines().count() == 1
    });
    let builds = daemon.data_root.join("builds");
    assert_eq!(
        std::fs::read_dir(&builds).unwrap().count(),
        1,
        "a build in progress"
    );
    daemon.kill_and_restart();
    let _ = client.wait();
    // The step's container (which outlived the daemon, as containers do) and the build's
    // files are gone; nothing of it stays mounted.
    let listed = ok(&daemon, &["ps", "-a", "-q"]);
    assert!(listed.trim().is_empty(), "{listed}");
    assert_eq!(std::fs::read_dir(&builds).unwrap().count(), 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&builds.display().to_string()), "{mounts}");
}
