//! Pulling from Debian's `docker-registry`, started by the test on 127.0.0.1, with images pushed
//! there by skopeo from the busybox fixtures.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::{self, ImageBuilder, LayerBuilder};
use crate::harness::{self, DaemonProcess, run_wharf, wharf_command};

const REGISTRY: &str = "/usr/bin/docker-registry";

/// A docker-registry on a free loopback port, stopped (by its pid) on drop.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub addr: String,
    child: Child,
}

impl Registry {
    pub fn start(test: &str) -> Option<Registry> {
        if !Path::new(REGISTRY).exists() {
            harness::skip(
                test,
                "docker-registry is missing: install the docker-registry package",
            );
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
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
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
        Some(Registry { dir, addr, child })
    }

    /// Pushes an OCI layout's `tag` as `repo:tag` with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str) {
        let out = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
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

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_multi_layer_image_with_whiteouts_is_pulled_from_a_local_registry() {
    let test = "pull::a_multi_layer_image_with_whiteouts_is_pulled_from_a_local_registry";
    if harness::skip_unless_root(test) {
        return;
    }
    let Some(busybox) = fixtures::busybox(test) else {
        return;
    };
    let Some(registry) = Registry::start(test) else {
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
