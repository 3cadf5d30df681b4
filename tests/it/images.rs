//! Loading images through the daemon: `docker save` archives (from the fixture builder and from a
//! real dockerd) and OCI layouts, then listing and inspecting them.

use std::path::Path;

use crate::dockerd::Dockerd;
use crate::fixtures::{self, ImageBuilder, LayerBuilder};
use crate::harness::{self, DaemonProcess, run_wharf, wharf_command};

fn host(daemon: &DaemonProcess) -> String {
    format!("unix://{}", daemon.socket.display())
}

/// Tars a directory (an OCI layout) with relative names.
fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

fn images_json(daemon: &DaemonProcess) -> serde_json::Value {
    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &host(daemon), "images", "--format", "json"]));
    assert!(status.success(), "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn docker_archives_and_oci_layouts_load_and_can_be_inspected() {
    let test = "images::docker_archives_and_oci_layouts_load_and_can_be_inspected";
    if harness::skip_unless_root(test) {
        return;
    }
    let Some(busybox) = fixtures::busybox(test) else {
        return;
    };
    let daemon = DaemonProcess::start();
    let work = tempfile::tempdir().unwrap();
    let image = ImageBuilder::busybox(&busybox)
        .layer(
            LayerBuilder::new()
                .dir("srv", 0o755)
                .file("srv/hello", 0o644, b"hi\n")
                .finish(),
            "COPY hello /srv/",
        )
        .cmd(&["cat", "/srv/hello"])
        .build();

    let archive = work.path().join("saved.tar");
    image.write_docker_archive(&archive, "wharf-test/busybox:v1");
    let (status, out, err) = run_wharf(
        wharf_command()
            .args(["-H", &host(&daemon), "load", "-i"])
            .arg(&archive),
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "Loaded image: wharf-test/busybox:v1\n");
    assert!(
        err.contains("stored") && err.contains("unpacked"),
        "progress is shown: {err}"
    );

    let list = images_json(&daemon);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        list[0]["tags"],
        serde_json::json!(["wharf-test/busybox:v1"])
    );
    assert_eq!(list[0]["layers"], 2);
    assert_eq!(list[0]["config_digest"], image.config_digest);
    let (status, out, err) = run_wharf(wharf_command().args([
        "-H",
        &host(&daemon),
        "image",
        "inspect",
        "wharf-test/busybox:v1",
    ]));
    assert!(status.success(), "{err}");
    let detail: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        detail["config"]["config"]["Cmd"],
        serde_json::json!(["cat", "/srv/hello"])
    );
    assert_eq!(detail["layers"][1]["diff_id"], image.layers[1].diff_id);
    let chain = detail["layers"][1]["chain_id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let layer_dir = daemon.data_root.join("layers").join(chain);
    assert_eq!(
        std::fs::read_to_string(layer_dir.join("srv/hello")).unwrap(),
        "hi\n"
    );
    let (status, _, err) = run_wharf(wharf_command().args([
        "-H",
        &host(&daemon),
        "image",
        "inspect",
        "wharf-test/nope:v9",
    ]));
    assert!(
        !status.success() && err.contains("image wharf-test/nope:v9 not found"),
        "{err}"
    );

    // An OCI layout named only by a tag needs a repository to load under.
    let layout = image.write_oci_layout(&work.path().join("layout"), "v2");
    let layout_tar = work.path().join("layout.tar");
    tar_dir(&layout, &layout_tar);
    let (status, _, err) = run_wharf(
        wharf_command()
            .args(["-H", &host(&daemon), "load", "-i"])
            .arg(&layout_tar),
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("named only by the tag \"v2\": give a repository"),
        "{err}"
    );
    // On a terminal, the bytes sent show on a bar redrawn in place.
    let (status, out, shown) = harness::run_wharf_on_terminal(
        wharf_command()
            .args([
                "-H",
                &host(&daemon),
                "load",
                "--repository",
                "wharf-test/oci",
                "-i",
            ])
            .arg(&layout_tar),
    );
    assert!(status.success(), "{shown}");
    assert_eq!(out, "Loaded image: wharf-test/oci:v2\n");
    assert!(
        shown.contains("\r\x1b[Ksending [") && shown.contains("#]"),
        "a full bar: {shown:?}"
    );
    assert!(shown.contains("stored"), "{shown:?}");
    assert_eq!(images_json(&daemon).as_array().unwrap().len(), 2);

    // A layout whose blob does not match its name is refused; nothing is recorded.
    let bad = tempfile::tempdir().unwrap();
    let bad_layout = ImageBuilder::busybox(&busybox)
        .label("bad", "yes")
        .build()
        .write_oci_layout(&bad.path().join("layout"), "wharf-test/bad:v1");
    let layer_blob = bad_layout
        .join("blobs/sha256")
        .join(image.layers[0].digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&layer_blob).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    std::fs::write(&layer_blob, bytes).unwrap();
    let bad_tar = bad.path().join("bad.tar");
    tar_dir(&bad_layout, &bad_tar);
    let (status, _, err) = run_wharf(
        wharf_command()
            .args(["-H", &host(&daemon), "load", "-i"])
            .arg(&bad_tar),
    );
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("digest mismatch"), "{err}");
    assert_eq!(
        images_json(&daemon).as_array().unwrap().len(),
        2,
        "nothing recorded"
    );
}

#[test]
fn a_docker_save_of_a_real_dockerd_loads_and_runs() {
    let test = "images::a_docker_save_of_a_real_dockerd_loads_and_runs";
    let runtimes = serde_json::json!({"runtimes": {"wharf": {"path": harness::WHARF, "runtimeArgs": ["runtime"]}}});
    let Some(dockerd) = Dockerd::start(test, runtimes) else {
        return;
    };
    let Some(busybox) = fixtures::busybox(test) else {
        return;
    };
    let archive = dockerd.dir.path().join("fixture.tar");
    ImageBuilder::busybox(&busybox)
        .layer(
            LayerBuilder::new()
                .file("marker", 0o644, b"from dockerd\n")
                .finish(),
            "COPY marker /",
        )
        .build()
        .write_docker_archive(&archive, "wharf-test/roundtrip:v1");
    assert!(
        dockerd
            .docker(&["load", "--input", archive.to_str().unwrap()])
            .status
            .success()
    );
    let saved = dockerd.dir.path().join("docker-saved.tar");
    let out = dockerd.docker(&[
        "save",
        "--output",
        saved.to_str().unwrap(),
        "wharf-test/roundtrip:v1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let daemon = DaemonProcess::start();
    let (status, out, err) = run_wharf(
        wharf_command()
            .args(["-H", &host(&daemon), "load", "-i"])
            .arg(&saved),
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "Loaded image: wharf-test/roundtrip:v1\n");
    let (_, out, _) = run_wharf(wharf_command().args([
        "-H",
        &host(&daemon),
        "image",
        "inspect",
        "wharf-test/roundtrip:v1",
    ]));
    let detail: serde_json::Value = serde_json::from_str(&out).unwrap();
    let chain = detail["layers"][1]["chain_id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    assert_eq!(
        std::fs::read_to_string(daemon.data_root.join("layers").join(chain).join("marker"))
            .unwrap(),
        "from dockerd\n"
    );
    // It runs as a wharf container.
    let (status, out, err) = run_wharf(wharf_command().args([
        "-H",
        &host(&daemon),
        "run",
        "--rm",
        "wharf-test/roundtrip:v1",
        "cat",
        "/marker",
    ]));
    assert!(status.success(), "{err}");
    assert_eq!(out, "from dockerd\n");

    // And back: wharf save → docker load → docker run (with wharf as the runtime).
    let (status, _, err) = run_wharf(wharf_command().args([
        "-H",
        &host(&daemon),
        "tag",
        "wharf-test/roundtrip:v1",
        "wharf-test/back:v2",
    ]));
    assert!(status.success(), "{err}");
    let ours = dockerd.dir.path().join("wharf-saved.tar");
    let (status, _, err) = run_wharf(
        wharf_command()
            .args(["-H", &host(&daemon), "save", "wharf-test/back:v2", "-o"])
            .arg(&ours),
    );
    assert!(status.success(), "{err}");
    assert!(
        dockerd
            .docker(&["rmi", "wharf-test/roundtrip:v1"])
            .status
            .success()
    );
    let out = dockerd.docker(&["load", "--input", ours.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("wharf-test/back:v2"));
    let out = dockerd.docker(&[
        "run",
        "--runtime",
        "wharf",
        "--rm",
        "wharf-test/back:v2",
        "cat",
        "/marker",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from dockerd\n");
}

#[test]
fn tags_move_and_the_last_name_takes_the_image_and_its_unshared_files() {
    let test = "images::tags_move_and_the_last_name_takes_the_image_and_its_unshared_files";
    if harness::skip_unless_root(test) {
        return;
    }
    let Some(busybox) = fixtures::busybox(test) else {
        return;
    };
    let daemon = DaemonProcess::start();
    let work = tempfile::tempdir().unwrap();
    let base = ImageBuilder::busybox(&busybox).build();
    let child = ImageBuilder::busybox(&busybox)
        .layer(
            LayerBuilder::new()
                .file("only-in-child", 0o644, b"x")
                .finish(),
            "COPY",
        )
        .build();
    for (image, name) in [
        (&base, "wharf-test/base:v1"),
        (&child, "wharf-test/child:v1"),
    ] {
        let archive = work
            .path()
            .join(format!("{}.tar", name.replace(['/', ':'], "-")));
        image.write_docker_archive(&archive, name);
        assert!(
            run_wharf(
                wharf_command()
                    .args(["-H", &host(&daemon), "load", "-q", "-i"])
                    .arg(&archive)
            )
            .0
            .success()
        );
    }
    let (status, _, err) = run_wharf(wharf_command().args([
        "-H",
        &host(&daemon),
        "tag",
        "wharf-test/child:v1",
        "wharf-test/alias:latest",
    ]));
    assert!(status.success(), "{err}");
    let (status, _, err) =
        run_wharf(wharf_command().args(["-H", &host(&daemon), "tag", "wharf-test/nope:v1", "x:y"]));
    assert!(
        !status.success() && err.contains("image wharf-test/nope:v1 not found"),
        "{err}"
    );
    let list = images_json(&daemon);
    let child_entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["config_digest"] == child.config_digest)
        .unwrap();
    assert_eq!(
        child_entry["tags"],
        serde_json::json!(["wharf-test/alias:latest", "wharf-test/child:v1"])
    );

    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &host(&daemon), "rmi", "wharf-test/child:v1"]));
    assert!(status.success(), "{err}");
    assert_eq!(
        out, "Untagged: wharf-test/child:v1\n",
        "the alias keeps the image"
    );
    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &host(&daemon), "rmi", "wharf-test/alias"]));
    assert!(status.success(), "{err}");
    assert!(
        out.contains("Untagged: wharf-test/alias:latest\nDeleted: sha256:"),
        "{out}"
    );
    // The child's own layer and blobs are gone; the base layer it shared stays for the base image.
    let blob_path = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        daemon
            .data_root
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
    };
    assert!(!blob_path(&child.config_digest).exists());
    assert!(blob_path(&base.config_digest).exists());
    let layers: Vec<_> = std::fs::read_dir(daemon.data_root.join("layers"))
        .unwrap()
        .collect();
    assert_eq!(layers.len(), 1, "only the base layer remains");
    assert_eq!(images_json(&daemon).as_array().unwrap().len(), 1);

    // Loading another image under the base's name leaves the old one dangling: prune takes it.
    let newer = ImageBuilder::busybox(&busybox)
        .label("version", "2")
        .build();
    let archive = work.path().join("newer.tar");
    newer.write_docker_archive(&archive, "wharf-test/base:v1");
    assert!(
        run_wharf(
            wharf_command()
                .args(["-H", &host(&daemon), "load", "-q", "-i"])
                .arg(&archive)
        )
        .0
        .success()
    );
    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &host(&daemon), "image", "prune"]));
    assert!(status.success(), "{err}");
    assert!(
        out.contains("Deleted: sha256:") && out.contains("Freed 2 blobs and 0 layers"),
        "the shared layer stays: {out}"
    );
    assert!(!blob_path(&base.config_digest).exists() && blob_path(&newer.config_digest).exists());
    let (status, out, err) = run_wharf(wharf_command().args(["-H", &host(&daemon), "image", "df"]));
    assert!(status.success(), "{err}");
    assert!(
        out.starts_with("Images:  1\n") && out.contains("Layers:  1 ("),
        "{out}"
    );
}

#[test]
fn an_oci_archive_saved_by_wharf_keeps_every_digest_and_loads_back_by_name() {
    let test = "images::an_oci_archive_saved_by_wharf_keeps_every_digest_and_loads_back_by_name";
    if harness::skip_unless_root(test) {
        return;
    }
    let Some(busybox) = fixtures::busybox(test) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let image = ImageBuilder::busybox(&busybox)
        .layer(
            LayerBuilder::new()
                .file("etc/motd", 0o644, b"oci\n")
                .finish(),
            "COPY motd /etc/",
        )
        .build();
    let layout = image.write_oci_layout(&work.path().join("layout"), "v3");
    let layout_tar = work.path().join("layout.tar");
    tar_dir(&layout, &layout_tar);
    let daemon = DaemonProcess::start();
    let (status, _, err) = run_wharf(
        wharf_command()
            .args(["-H", &host(&daemon), "load", "-q", "--repository"])
            .arg("wharf-test/oci-save")
            .arg("-i")
            .arg(&layout_tar),
    );
    assert!(status.success(), "{err}");

    let saved = work.path().join("saved.tar");
    let (status, _, err) = run_wharf(
        wharf_command()
            .args([
                "-H",
                &host(&daemon),
                "save",
                "--format",
                "oci-archive",
                "-o",
            ])
            .arg(&saved)
            .arg("wharf-test/oci-save:v3"),
    );
    assert!(status.success(), "{err}");

    // skopeo reads it, and copying it verifies every blob against its digest.
    let archive = format!("oci-archive:{}", saved.display());
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", &archive])
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fixtures::sha256_digest(&out.stdout),
        image.manifest_digest,
        "the manifest is saved byte for byte"
    );
    let copied = work.path().join("copied");
    let out = std::process::Command::new("skopeo")
        .args(["copy", &archive])
        .arg(format!("dir:{}", copied.display()))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for layer in &image.layers {
        assert!(
            copied
                .join(layer.digest.strip_prefix("sha256:").unwrap())
                .exists(),
            "layer {} copied",
            layer.digest
        );
    }

    // Back into a fresh daemon: the full name travels in the index, no --repository needed.
    let other = DaemonProcess::start();
    let (status, out, err) = run_wharf(
        wharf_command()
            .args(["-H", &host(&other), "load", "-q", "-i"])
            .arg(&saved),
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("wharf-test/oci-save:v3"), "{out}");
    let listed = images_json(&other);
    assert_eq!(listed[0]["digest"], image.manifest_digest.as_str());

    let (status, _, err) = run_wharf(wharf_command().args([
        "-H",
        &host(&daemon),
        "save",
        "--format",
        "tarball",
        "wharf-test/oci-save:v3",
    ]));
    assert!(!status.success());
    assert!(err.contains("tarball"), "{err}");
}
