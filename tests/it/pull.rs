//! Pulling from Debian's `docker-registry`, started by the test on 127.0.0.1, with images pushed
//! there by skopeo from the busybox fixtures.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::{self, ImageBuilder, LayerBuilder};
use crate::harness::{self, DaemonProcess, run_wharf, run_wharf_input, wharf_command};

const REGISTRY: &str = "/usr/bin/docker-registry";

/// A docker-registry on a free loopback port, stopped (by its pid) on drop.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub addr: String,
    /// `user:password` when the registry asks for a login (htpasswd).
    creds: Option<String>,
    child: Child,
}

impl Registry {
    pub fn start(test: &str) -> Option<Registry> {
        Self::start_with_login(test, None)
    }

    /// A registry that serves only `user` with `password` (htpasswd, bcrypt).
    pub fn start_with_login(test: &str, login: Option<(&str, &str)>) -> Option<Registry> {
        if harness::skip_unless_installed(test, REGISTRY, "docker-registry") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = login {
            let htpasswd = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 5).unwrap();
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wharf-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, yaml).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Registry {
            dir,
            addr,
            creds: login.map(|(u, p)| format!("{u}:{p}")),
            child,
        })
    }

    /// Pushes an OCI layout's `tag` as `repo:tag` with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str) {
        let mut skopeo = Command::new("skopeo");
        skopeo.args(["copy", "--dest-tls-verify=false"]);
        if let Some(creds) = &self.creds {
            skopeo.args(["--dest-creds", creds]);
        }
        let out = skopeo
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.addr))
            .output()
            .expect("skopeo");
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What every pull test needs, or `None` after a recorded skip: root, the busybox fixture and
/// a registry on loopback.
pub fn busybox_and_registry(test: &str) -> Option<(Vec<u8>, Registry)> {
    if harness::skip_unless_root(test) {
        return None;
    }
    let busybox = fixtures::busybox(test)?;
    Some((busybox, Registry::start(test)?))
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_multi_layer_image_with_whiteouts_is_pulled_from_a_local_registry() {
    let test = "pull::a_multi_layer_image_with_whiteouts_is_pulled_from_a_local_registry";
    let Some((busybox, registry)) = busybox_and_registry(test) else {
        return;
    };
    let image = ImageBuilder::busybox(&busybox)
        .layer(
            LayerBuilder::new()
                .dir("srv", 0o755)
                .file("srv/data", 0o644, b"pulled\n")
                .finish(),
            "COPY data /srv/",
        )
        .layer(
            LayerBuilder::new().whiteout("etc/group").finish(),
            "RUN rm /etc/group",
        )
        .cmd(&["cat", "/srv/data"])
        .build();
    let layout = image.write_oci_layout(&registry.dir.path().join("layout"), "v1");
    registry.push(&layout, "v1", "wharf-test/pulled");

    let daemon = DaemonProcess::start();
    let host = format!("unix://{}", daemon.socket.display());
    let reference = format!("{}/wharf-test/pulled:v1", registry.addr);
    let (status, out, err) = run_wharf(wharf_command().args(["-H", &host, "pull", &reference]));
    assert!(status.success(), "{err}");
    assert!(
        out.contains(&format!("Pulled: {reference}")) && out.contains("Digest: sha256:"),
        "{out}"
    );
    assert!(
        err.contains("downloaded") && err.contains("unpacked"),
        "progress is shown: {err}"
    );

    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &host, "image", "inspect", &reference]));
    assert!(status.success(), "{err}");
    let detail: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        detail["config"]["config"]["Cmd"],
        serde_json::json!(["cat", "/srv/data"])
    );
    let layers = detail["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    let (status, top_level, err) =
        run_wharf(wharf_command().args(["-H", &host, "inspect", &reference]));
    assert!(status.success(), "{err}");
    assert_eq!(top_level, out, "wharf inspect is wharf image inspect");

    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &host, "history", "--format", "json", &reference]));
    assert!(status.success(), "{err}");
    let history: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(history.len(), 3, "{out}");
    assert_eq!(
        history[0]["created_by"], "RUN rm /etc/group",
        "newest first"
    );
    assert_eq!(history[0]["layer"], layers[2]["diff_id"]);
    assert_eq!(history[1]["created_by"], "COPY data /srv/");
    assert_eq!(history[2]["layer"], layers[0]["diff_id"]);
    let (status, out, err) = run_wharf(wharf_command().args(["-H", &host, "history", &reference]));
    assert!(status.success(), "{err}");
    assert!(
        out.starts_with("LAYER") && out.contains("RUN rm /etc/group"),
        "{out}"
    );
    let (status, _, err) =
        run_wharf(wharf_command().args(["-H", &host, "history", "no/such:image"]));
    assert!(!status.success());
    assert!(err.contains("image no/such:image not found"), "{err}");
    let dir_of = |i: usize| {
        daemon.data_root.join("layers").join(
            layers[i]["chain_id"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        )
    };
    assert_eq!(
        std::fs::read_to_string(dir_of(1).join("srv/data")).unwrap(),
        "pulled\n"
    );
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let whiteout = std::fs::symlink_metadata(dir_of(2).join("etc/group")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);

    // Pulling again finds everything in place; an unknown tag is a clear error.
    let (status, _, err) = run_wharf(wharf_command().args(["-H", &host, "pull", "-q", &reference]));
    assert!(status.success(), "{err}");
    let missing = format!("{}/wharf-test/pulled:nope", registry.addr);
    let (status, _, err) = run_wharf(wharf_command().args(["-H", &host, "pull", &missing]));
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("pull failed") && err.contains(&registry.addr),
        "{err}"
    );
}

/// An OCI layout whose `tag` names an index of `images` for their (os, architecture).
fn write_multi_platform_layout(dir: &Path, tag: &str, images: &[(&fixtures::Image, &str)]) {
    use std::collections::HashMap;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let write = |digest: &str, bytes: &[u8]| {
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap()
    };
    let mut entries = Vec::new();
    for (image, arch) in images {
        write(&image.config_digest, &image.config);
        write(&image.manifest_digest, &image.manifest);
        for layer in &image.layers {
            write(&layer.digest, &layer.gzip);
        }
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries})).unwrap();
    let index_digest = fixtures::sha256_digest(&index);
    write(&index_digest, &index);
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": index_digest,
        "size": index.len(),
        "annotations": HashMap::from([("org.opencontainers.image.ref.name", tag)]),
    }]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
}

#[test]
fn an_index_with_two_platforms_yields_this_hosts_image_by_pull_and_by_load() {
    let test = "pull::an_index_with_two_platforms_yields_this_hosts_image_by_pull_and_by_load";
    let Some((busybox, registry)) = busybox_and_registry(test) else {
        return;
    };
    let host_arch = wharf::host::oci_architecture(std::env::consts::ARCH);
    let other_arch = if host_arch == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let ours = ImageBuilder::busybox(&busybox)
        .label("platform", "host")
        .build();
    let theirs = ImageBuilder::busybox(&busybox)
        .label("platform", "other")
        .build();
    let layout = registry.dir.path().join("multi");
    write_multi_platform_layout(&layout, "v1", &[(&theirs, other_arch), (&ours, host_arch)]);
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/wharf-test/multi:v1", registry.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let daemon = DaemonProcess::start();
    let host = format!("unix://{}", daemon.socket.display());
    let reference = format!("{}/wharf-test/multi:v1", registry.addr);
    let (status, _, err) = run_wharf(wharf_command().args(["-H", &host, "pull", "-q", &reference]));
    assert!(status.success(), "{err}");
    let (_, out, _) =
        run_wharf(wharf_command().args(["-H", &host, "image", "inspect", &reference]));
    let detail: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        detail["config_digest"], ours.config_digest,
        "the host's platform was chosen"
    );
    assert_eq!(detail["architecture"], host_arch);

    // The same layout loaded as a tar picks the same image.
    let tar_path = registry.dir.path().join("multi.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.finish().unwrap();
    let (status, out, err) = run_wharf(
        wharf_command()
            .args([
                "-H",
                &host,
                "load",
                "-q",
                "--repository",
                "wharf-test/multi-loaded",
                "-i",
            ])
            .arg(&tar_path),
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "Loaded image: wharf-test/multi-loaded:v1\n");
    let (_, out, _) = run_wharf(wharf_command().args([
        "-H",
        &host,
        "image",
        "inspect",
        "wharf-test/multi-loaded:v1",
    ]));
    let detail: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(detail["config_digest"], ours.config_digest);
}

#[test]
fn a_registry_that_asks_for_a_login_is_pulled_from_with_the_one_from_wharf_login() {
    let test =
        "pull::a_registry_that_asks_for_a_login_is_pulled_from_with_the_one_from_wharf_login";
    if harness::skip_unless_root(test) {
        return;
    }
    let Some(busybox) = fixtures::busybox(test) else {
        return;
    };
    let Some(registry) = Registry::start_with_login(test, Some(("puller", "s3cret-pass"))) else {
        return;
    };
    let image = ImageBuilder::busybox(&busybox).cmd(&["true"]).build();
    let layout = image.write_oci_layout(&registry.dir.path().join("layout"), "v1");
    registry.push(&layout, "v1", "wharf-test/private");

    let daemon = DaemonProcess::start();
    let host = format!("unix://{}", daemon.socket.display());
    let reference = format!("{}/wharf-test/private:v1", registry.addr);
    let pull = || run_wharf(wharf_command().args(["-H", &host, "pull", "-q", &reference]));
    let (status, _, err) = pull();
    assert!(!status.success());
    assert!(
        err.contains(&format!("registry {}", registry.addr))
            && err.contains(&format!("wharf login {}", registry.addr)),
        "an anonymous pull is refused and the error names the registry: {err}"
    );

    let login = |password: &str| {
        run_wharf_input(
            wharf_command()
                .args(["-H", &host, "login", &registry.addr, "-u", "puller"])
                .arg("--password-stdin"),
            &format!("{password}\n"),
        )
    };
    // The registry checks the login before it is stored, as with `docker login`.
    let file = daemon.data_root.join("registry-credentials.json");
    let (status, _, err) = login("wrong");
    assert!(!status.success(), "a wrong password is refused at login");
    assert!(
        err.contains(&format!("registry {}", registry.addr))
            && err.contains("wrong user name or password"),
        "{err}"
    );
    assert!(!file.exists(), "a refused login is not stored");

    let (status, out, err) = login("s3cret-pass");
    assert!(status.success(), "{err}");
    assert!(out.contains(&registry.addr), "{out}");
    let meta = std::fs::metadata(&file).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "root-only");
    let good = std::fs::read(&file).unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&good).unwrap();
    assert_eq!(stored["registries"][&registry.addr]["username"], "puller");

    // A stored login the registry stops accepting (a changed password) names the fix.
    let mut stale = stored.clone();
    stale["registries"][&registry.addr]["password"] = "changed-since".into();
    std::fs::write(&file, serde_json::to_vec(&stale).unwrap()).unwrap();
    let (status, _, err) = pull();
    assert!(!status.success(), "a wrong stored password does not pull");
    assert!(err.contains("refused the stored login"), "{err}");
    std::fs::write(&file, &good).unwrap();

    let (status, _, err) = pull();
    assert!(status.success(), "the stored login pulls: {err}");
    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &host, "image", "inspect", &reference]));
    assert!(status.success(), "{err}");
    assert!(out.contains("\"true\""), "{out}");

    let (status, _, err) = run_wharf(wharf_command().args(["-H", &host, "logout", &registry.addr]));
    assert!(status.success(), "{err}");
    let (status, _, err) = pull();
    assert!(
        !status.success(),
        "after logout the pull is anonymous again"
    );
    assert!(err.contains("wants a login"), "{err}");
    let (status, _, err) = run_wharf(wharf_command().args(["-H", &host, "logout", &registry.addr]));
    assert!(!status.success());
    assert!(err.contains("not found"), "{err}");
}

/// A TCP proxy on 127.0.0.1 in front of a registry that hangs up in the middle of the first
/// answer for one blob, and notes the `Range` header of every request for that blob.
struct CuttingProxy {
    addr: String,
    ranges: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CuttingProxy {
    fn start(upstream: &str, blob: &str, cut_after: usize) -> CuttingProxy {
        Self::spawn(upstream, blob, cut_after, None)
    }

    /// Answers every request for the blob with `response` (a whole HTTP/1.1 answer) itself.
    fn answering(upstream: &str, blob: &str, response: &'static str) -> CuttingProxy {
        Self::spawn(upstream, blob, usize::MAX, Some(response))
    }

    fn spawn(
        upstream: &str,
        blob: &str,
        cut_after: usize,
        answer: Option<&'static str>,
    ) -> CuttingProxy {
        use std::io::{Read, Write};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let ranges = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let cut_done = Arc::new(AtomicBool::new(false));
        let (upstream, blob) = (upstream.to_owned(), blob.to_owned());
        let (ranges2, stop2) = (Arc::clone(&ranges), Arc::clone(&stop));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let armed = Arc::new(AtomicBool::new(false));
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let mut c_reply = client.try_clone().unwrap();
                let (armed_w, cut_w, ranges_w, blob_w) = (
                    Arc::clone(&armed),
                    Arc::clone(&cut_done),
                    Arc::clone(&ranges2),
                    blob.clone(),
                );
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                        if text.starts_with("get ") && text.contains(&blob_w) {
                            let range = text
                                .lines()
                                .find_map(|l| l.strip_prefix("range:"))
                                .unwrap_or("")
                                .trim()
                                .to_owned();
                            ranges_w.lock().unwrap().push(range);
                            if let Some(response) = answer {
                                // HTTP/1.1 without pipelining: the server is idle now.
                                let _ = c_reply.write_all(response.as_bytes());
                                let _ = c_reply.shutdown(std::net::Shutdown::Both);
                                let _ = s_out.shutdown(std::net::Shutdown::Both);
                                break;
                            }
                            if !cut_w.swap(true, Ordering::SeqCst) {
                                armed_w.store(true, Ordering::SeqCst);
                            }
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 << 10];
                    let mut sent_armed = 0;
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let mut n = n;
                        if armed.load(Ordering::SeqCst) {
                            n = n.min(cut_after - sent_armed);
                            sent_armed += n;
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        if armed.load(Ordering::SeqCst) && sent_armed >= cut_after {
                            let _ = c_out.shutdown(std::net::Shutdown::Both);
                            let _ = s_in.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CuttingProxy { addr, ranges, stop }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(&self.addr); // wakes the accept loop
    }
}

#[test]
fn a_registry_error_for_a_layer_fails_the_pull_without_retrying() {
    let test = "pull::a_registry_error_for_a_layer_fails_the_pull_without_retrying";
    let Some((busybox, registry)) = busybox_and_registry(test) else {
        return;
    };
    let image = ImageBuilder::busybox(&busybox).cmd(&["true"]).build();
    let layer = image.layers[0].digest.clone();
    let layout = image.write_oci_layout(&registry.dir.path().join("layout"), "v1");
    registry.push(&layout, "v1", "wharf-test/broken");
    let body = r#"{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}"#;
    let response: &'static str = Box::leak(
        format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let proxy = CuttingProxy::answering(&registry.addr, &layer, response);

    let daemon = DaemonProcess::start();
    let host = format!("unix://{}", daemon.socket.display());
    let reference = format!("{}/wharf-test/broken:v1", proxy.addr);
    let (status, _, err) = run_wharf(wharf_command().args(["-H", &host, "pull", "-q", &reference]));
    assert!(!status.success(), "a 500 for a layer fails the pull");
    assert!(
        err.contains(&format!("registry {}", proxy.addr)) && err.contains("500"),
        "the error names the registry and its answer: {err}"
    );
    let asked = proxy.ranges.lock().unwrap().len();
    assert_eq!(asked, 1, "an answer from the registry is not retried");
    let (status, out, _) = run_wharf(wharf_command().args(["-H", &host, "images", "-q"]));
    assert!(status.success());
    assert!(out.trim().is_empty(), "no image half-made: {out}");
}

#[test]
fn a_layer_download_that_breaks_off_resumes_where_it_stopped() {
    let test = "pull::a_layer_download_that_breaks_off_resumes_where_it_stopped";
    let Some((busybox, registry)) = busybox_and_registry(test) else {
        return;
    };
    let image = ImageBuilder::busybox(&busybox).cmd(&["true"]).build();
    let layer = image.layers[0].digest.clone();
    assert!(
        image.layers[0].gzip.len() > 400_000,
        "the layer outlasts the cut"
    );
    let layout = image.write_oci_layout(&registry.dir.path().join("layout"), "v1");
    registry.push(&layout, "v1", "wharf-test/resumed");
    let proxy = CuttingProxy::start(&registry.addr, &layer, 200_000);

    let daemon = DaemonProcess::start();
    let host = format!("unix://{}", daemon.socket.display());
    let reference = format!("{}/wharf-test/resumed:v1", proxy.addr);
    let (status, _, err) = run_wharf(wharf_command().args(["-H", &host, "pull", "-q", &reference]));
    assert!(status.success(), "the pull survives the cut: {err}");
    let ranges = proxy.ranges.lock().unwrap().clone();
    assert!(
        ranges.len() >= 2,
        "the layer was asked for again: {ranges:?}"
    );
    let resumed_at: u64 = ranges[1]
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a range request resumes the layer: {ranges:?}"));
    assert!(
        resumed_at > 0 && resumed_at < image.layers[0].gzip.len() as u64,
        "it resumes mid-layer, not from the start: {ranges:?}"
    );
    let hex = layer.strip_prefix("sha256:").unwrap();
    let stored = daemon
        .data_root
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    assert_eq!(
        fixtures::sha256_digest(&std::fs::read(&stored).unwrap()),
        layer,
        "the resumed layer is whole"
    );
}

#[test]
fn pull_reports_the_bytes_of_a_big_layer_as_they_arrive() {
    let test = "pull::pull_reports_the_bytes_of_a_big_layer_as_they_arrive";
    let Some((busybox, registry)) = busybox_and_registry(test) else {
        return;
    };
    // 4 MiB that gzip cannot shrink (xorshift), so the layer spans several progress reports.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let image = ImageBuilder::busybox(&busybox)
        .layer(
            LayerBuilder::new().file("noise", 0o644, &noise).finish(),
            "COPY noise /",
        )
        .build();
    let big = image.layers[1].clone();
    assert!(big.gzip.len() > 3 << 20);
    let layout = image.write_oci_layout(&registry.dir.path().join("layout"), "v1");
    registry.push(&layout, "v1", "wharf-test/big");

    let daemon = DaemonProcess::start();
    let client = wharf::cli::client::ApiClient::new(
        wharf::cli::client::Endpoint::Unix(daemon.socket.clone()),
        None,
    );
    let body = serde_json::to_vec(
        &serde_json::json!({"reference": format!("{}/wharf-test/big:v1", registry.addr)}),
    )
    .unwrap();
    let mut events: Vec<serde_json::Value> = Vec::new();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(client.upload_streaming(
            "/api/v1/images/pull",
            "application/json",
            http_body_util::Full::new(hyper::body::Bytes::from(body)),
            &mut |line| events.push(serde_json::from_str(line).unwrap()),
        ))
        .unwrap();
    assert_eq!(events.last().unwrap()["status"], "done", "{events:?}");
    let of_big = |status: &str| {
        events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["status"] == status && e["digest"] == big.digest.as_str())
            .map(|(i, e)| (i, e.clone()))
            .collect::<Vec<_>>()
    };
    let reports = of_big("downloading");
    assert!(reports.len() >= 3, "a report per MiB or so: {reports:?}");
    let mut last = 0;
    for (_, r) in &reports {
        let (current, total) = (r["current"].as_u64().unwrap(), r["total"].as_u64().unwrap());
        assert_eq!(total, big.gzip.len() as u64);
        assert!(current > last && current <= total, "{reports:?}");
        last = current;
    }
    let stored = of_big("stored");
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].0 > reports.last().unwrap().0,
        "stored comes after the reports"
    );

    // `wharf pull` on a terminal draws those reports as one bar redrawn in place (a fresh
    // daemon, so the layers download again).
    drop(daemon);
    let daemon = DaemonProcess::start();
    let host = format!("unix://{}", daemon.socket.display());
    let reference = format!("{}/wharf-test/big:v1", registry.addr);
    let (status, out, shown) =
        harness::run_wharf_on_terminal(wharf_command().args(["-H", &host, "pull", &reference]));
    assert!(status.success(), "{shown}");
    assert!(out.contains("Pulled: "), "{out}");
    assert!(
        shown.contains("\r\x1b[Kdownloading [") && shown.contains("downloaded "),
        "{shown:?}"
    );
}

#[test]
fn a_registry_that_sends_more_than_the_manifest_says_is_cut_off() {
    let test = "pull::a_registry_that_sends_more_than_the_manifest_says_is_cut_off";
    let Some((busybox, registry)) = busybox_and_registry(test) else {
        return;
    };
    let image = ImageBuilder::busybox(&busybox).cmd(&["true"]).build();
    let layout = image.write_oci_layout(&registry.dir.path().join("layout"), "v1");
    registry.push(&layout, "v1", "wharf-test/liar");
    // The same blobs under a manifest that says the layer is 1000 bytes shorter than it is.
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    let real = manifest["layers"][0]["size"].as_u64().unwrap();
    manifest["layers"][0]["size"] = (real - 1000).into();
    let registry_client = wharf::cli::client::ApiClient::new(
        wharf::cli::client::Endpoint::Http {
            authority: registry.addr.clone(),
        },
        None,
    );
    let put = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(registry_client.request_with_headers(
            hyper::Method::PUT,
            "/v2/wharf-test/liar/manifests/lying",
            &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
            Some(serde_json::to_vec(&manifest).unwrap()),
        ))
        .unwrap();
    assert!(
        put.status.is_success(),
        "{}",
        String::from_utf8_lossy(&put.body)
    );

    let daemon = DaemonProcess::start();
    let host = format!("unix://{}", daemon.socket.display());
    let reference = format!("{}/wharf-test/liar:lying", registry.addr);
    let (status, _, err) = run_wharf(wharf_command().args(["-H", &host, "pull", "-q", &reference]));
    assert!(!status.success());
    assert!(
        err.contains(&format!(
            "sent more than the {} bytes the manifest says",
            real - 1000
        )),
        "{err}"
    );
    let hex = image.layers[0].digest.strip_prefix("sha256:").unwrap();
    assert!(
        !daemon
            .data_root
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .exists(),
        "nothing of the layer is kept"
    );
    let incoming = std::fs::read_dir(daemon.data_root.join("blobs/.incoming"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(incoming, 0, "no partial download is left behind");
}

#[test]
fn run_pulls_a_missing_image_unless_told_not_to() {
    let test = "pull::run_pulls_a_missing_image_unless_told_not_to";
    let Some((busybox, registry)) = busybox_and_registry(test) else {
        return;
    };
    let image = ImageBuilder::busybox(&busybox)
        .cmd(&["echo", "pulled on demand"])
        .build();
    let layout = image.write_oci_layout(&registry.dir.path().join("layout"), "v1");
    registry.push(&layout, "v1", "wharf-test/ondemand");
    let daemon = DaemonProcess::start();
    let host = format!("unix://{}", daemon.socket.display());
    let reference = format!("{}/wharf-test/ondemand:v1", registry.addr);

    let (status, _, err) = run_wharf(
        wharf_command().args(["-H", &host, "run", "--rm", "--pull", "never", &reference]),
    );
    assert!(!status.success());
    assert!(err.contains("no such image"), "{err}");

    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &host, "run", "--rm", &reference]));
    assert!(status.success(), "{err}");
    assert!(
        err.contains("Unable to find image") && err.contains("downloaded"),
        "{err}"
    );
    assert!(
        out.contains("Pulled: ") && out.ends_with("pulled on demand\n"),
        "{out}"
    );

    // Present now: no pull; `always` pulls again.
    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &host, "run", "--rm", &reference]));
    assert!(status.success(), "{err}");
    assert_eq!(out, "pulled on demand\n");
    let (status, out, err) =
        run_wharf(wharf_command().args(["-H", &host, "create", "--pull", "always", &reference]));
    assert!(status.success(), "{err}");
    assert!(out.contains("Digest: sha256:"), "{out}");
}
