//! Test images, made at test time from Debian's static busybox: no binary is committed.
//!
//! [`ImageBuilder`] assembles layers ([`LayerBuilder`]: files, directories, symlinks, hardlinks,
//! whiteouts) and an image config into an [`Image`] with correct digests, which can be written
//! as an OCI image layout directory or as a `docker save`-style tar. Everything is deterministic
//! (fixed mtimes, uid 0), so the same builder calls give the same digests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, HistoryBuilder,
    ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os,
    RootFsBuilder,
};
use sha2::{Digest as _, Sha256};

use crate::harness;

/// Where Debian's `busybox-static` puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Fixed modification time of every entry (2023-11-14T22:13:20Z).
const MTIME: u64 = 1_700_000_000;

/// The default PATH of test images.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in hash {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("sha256:{hex}")
}

/// The static busybox binary, or `None` after recording why the test is skipped.
pub fn busybox(test: &str) -> Option<Vec<u8>> {
    match std::fs::read(BUSYBOX) {
        Ok(bytes) if is_static_elf(&bytes) => Some(bytes),
        Ok(_) => {
            harness::skip(
                test,
                "/bin/busybox is dynamically linked: install busybox-static",
            );
            None
        }
        Err(e) => {
            harness::skip(test, &format!("{BUSYBOX}: {e}: install busybox-static"));
            None
        }
    }
}

/// True for a 64-bit little-endian ELF with no program interpreter (a static executable).
fn is_static_elf(bytes: &[u8]) -> bool {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        bytes
            .get(at..at + 4)
            .map(|t| u32::from_le_bytes(t.try_into().unwrap()))
            != Some(3) // PT_INTERP
    })
}

/// The applets the busybox binary offers (`busybox --list`).
fn busybox_applets() -> Vec<String> {
    let out = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.contains('/'))
        .map(str::to_owned)
        .collect()
}

/// One layer tar, built entry by entry.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        LayerBuilder { tar }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.tar
            .append_data(&mut h, format!("{}/", path.trim_end_matches('/')), &[][..])
            .unwrap();
        self
    }

    pub fn file(mut self, path: &str, mode: u32, contents: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, contents.len() as u64);
        self.tar.append_data(&mut h, path, contents).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    /// An OCI whiteout: `path` is deleted in this layer.
    pub fn whiteout(self, path: &str) -> Self {
        let p = Path::new(path);
        let name = p.file_name().unwrap().to_str().unwrap();
        let wh = match p
            .parent()
            .and_then(|d| d.to_str())
            .filter(|d| !d.is_empty())
        {
            Some(dir) => format!("{dir}/.wh.{name}"),
            None => format!(".wh.{name}"),
        };
        self.file(&wh, 0o644, b"")
    }

    /// An OCI opaque whiteout: the lower layers' contents of `dir` are hidden.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(
            &format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            0o644,
            b"",
        )
    }

    pub fn finish(self) -> Vec<u8> {
        self.tar.into_inner().unwrap()
    }
}

/// The root filesystem of the busybox test image: the binary, one symlink per applet in /bin,
/// the usual top-level directories, and root and nobody in /etc/passwd and /etc/group.
pub fn busybox_layer(busybox: &[u8]) -> Vec<u8> {
    let mut layer = LayerBuilder::new();
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("var", 0o755),
    ] {
        layer = layer.dir(dir, mode);
    }
    layer = layer.file("bin/busybox", 0o755, busybox);
    for applet in busybox_applets() {
        if applet != "busybox" {
            layer = layer.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    layer
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")
        .finish()
}

/// A finished layer: its tar, the gzip of it, and both digests.
#[derive(Debug, Clone)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub gzip: Vec<u8>,
    /// `sha256:` of the uncompressed tar (the config's rootfs.diff_ids).
    pub diff_id: String,
    /// `sha256:` of the gzip (the manifest's layer digest).
    pub digest: String,
}

impl Layer {
    fn new(tar: Vec<u8>) -> Layer {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&tar).unwrap();
        let gzip = gz.finish().unwrap();
        Layer {
            diff_id: sha256_digest(&tar),
            digest: sha256_digest(&gzip),
            tar,
            gzip,
        }
    }
}

/// An image config and its layers, before serialization.
#[derive(Default)]
pub struct ImageBuilder {
    layers: Vec<(Vec<u8>, String)>,
    env: Vec<String>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: HashMap<String, String>,
    stop_signal: Option<String>,
    volumes: Vec<String>,
    exposed: Vec<String>,
}

impl ImageBuilder {
    /// An image with no layers (`FROM scratch`).
    pub fn scratch() -> ImageBuilder {
        ImageBuilder::default()
    }

    /// The busybox base image: one layer, PATH set, `sh` as the command.
    pub fn busybox(busybox: &[u8]) -> ImageBuilder {
        ImageBuilder::scratch()
            .layer(busybox_layer(busybox), "ADD busybox / # wharf test fixture")
            .env(PATH_ENV)
            .cmd(&["sh"])
    }

    /// Adds a layer on top; `created_by` goes into the history.
    pub fn layer(mut self, tar: Vec<u8>, created_by: &str) -> Self {
        self.layers.push((tar, created_by.to_owned()));
        self
    }

    pub fn env(mut self, kv: &str) -> Self {
        self.env.push(kv.to_owned());
        self
    }

    pub fn cmd(mut self, cmd: &[&str]) -> Self {
        self.cmd = Some(cmd.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn entrypoint(mut self, ep: &[&str]) -> Self {
        self.entrypoint = Some(ep.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.to_owned());
        self
    }

    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Declares an EXPOSE (`80/tcp`).
    pub fn expose(mut self, port: &str) -> Self {
        self.exposed.push(port.to_owned());
        self
    }

    /// Declares a VOLUME.
    pub fn volume(mut self, path: &str) -> Self {
        self.volumes.push(path.to_owned());
        self
    }

    pub fn stop_signal(mut self, signal: &str) -> Self {
        self.stop_signal = Some(signal.to_owned());
        self
    }

    /// Serializes the config and manifest and computes every digest.
    pub fn build(self) -> Image {
        let layers: Vec<Layer> = self
            .layers
            .iter()
            .map(|(tar, _)| Layer::new(tar.clone()))
            .collect();
        let created = "2023-11-14T22:13:20Z";
        let mut config = ConfigBuilder::default().env(self.env.clone());
        if let Some(cmd) = &self.cmd {
            config = config.cmd(cmd.clone());
        }
        if let Some(ep) = &self.entrypoint {
            config = config.entrypoint(ep.clone());
        }
        if let Some(dir) = &self.working_dir {
            config = config.working_dir(dir.clone());
        }
        if let Some(user) = &self.user {
            config = config.user(user.clone());
        }
        if !self.labels.is_empty() {
            config = config.labels(self.labels.clone());
        }
        if let Some(sig) = &self.stop_signal {
            config = config.stop_signal(sig.clone());
        }
        if !self.volumes.is_empty() {
            config = config.volumes(self.volumes.clone());
        }
        if !self.exposed.is_empty() {
            config = config.exposed_ports(self.exposed.clone());
        }
        let history = self
            .layers
            .iter()
            .map(|(_, by)| {
                HistoryBuilder::default()
                    .created(created)
                    .created_by(by.clone())
                    .build()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        let arch = wharf::host::oci_architecture(std::env::consts::ARCH);
        let image_config = ImageConfigurationBuilder::default()
            .created(created)
            .architecture(Arch::from(arch))
            .os(Os::Linux)
            .config(config.build().unwrap())
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
                    .build()
                    .unwrap(),
            )
            .history(history)
            .build()
            .unwrap();
        let config_json = image_config.to_string().unwrap().into_bytes();
        let config_digest = sha256_digest(&config_json);

        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(
                MediaType::ImageConfig,
                &config_digest,
                config_json.len(),
            ))
            .layers(
                layers
                    .iter()
                    .map(|l| descriptor(MediaType::ImageLayerGzip, &l.digest, l.gzip.len()))
                    .collect::<Vec<_>>(),
            )
            .build()
            .unwrap();
        let manifest_json = manifest.to_string().unwrap().into_bytes();
        Image {
            manifest_digest: sha256_digest(&manifest_json),
            manifest: manifest_json,
            config_digest,
            config: config_json,
            layers,
        }
    }
}

fn descriptor(media_type: MediaType, digest: &str, size: usize) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest.parse::<Digest>().unwrap())
        .size(size as u64)
        .build()
        .unwrap()
}

/// A complete image: layers, config and OCI manifest, with their digests.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

impl Image {
    /// Writes an OCI image layout at `dir` (created if missing) with this image tagged `tag`.
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) -> PathBuf {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let write_blob =
            |digest: &str, bytes: &[u8]| std::fs::write(blobs.join(hex(digest)), bytes).unwrap();
        write_blob(&self.config_digest, &self.config);
        write_blob(&self.manifest_digest, &self.manifest);
        for layer in &self.layers {
            write_blob(&layer.digest, &layer.gzip);
        }
        let mut manifest = descriptor(
            MediaType::ImageManifest,
            &self.manifest_digest,
            self.manifest.len(),
        );
        manifest.set_annotations(Some(HashMap::from([(
            "org.opencontainers.image.ref.name".to_owned(),
            tag.to_owned(),
        )])));
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![manifest])
            .build()
            .unwrap();
        std::fs::write(dir.join("index.json"), index.to_string().unwrap()).unwrap();
        dir.to_owned()
    }

    /// Writes a `docker save`-style tar at `path`, with `repo_tag` (e.g. `busybox:test`) in its
    /// `manifest.json` and `repositories`.
    pub fn write_docker_archive(&self, path: &Path, repo_tag: &str) {
        let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
        let mut add = |name: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(MTIME);
            tar.append_data(&mut h, name, bytes).unwrap();
        };
        let config_name = format!("{}.json", hex(&self.config_digest));
        add(&config_name, &self.config);
        let mut layer_names = Vec::new();
        for layer in &self.layers {
            let id = hex(&layer.diff_id);
            add(&format!("{id}/VERSION"), b"1.0");
            add(&format!("{id}/layer.tar"), &layer.tar);
            add(
                &format!("{id}/json"),
                format!(r#"{{"id":"{id}"}}"#).as_bytes(),
            );
            layer_names.push(format!("{id}/layer.tar"));
        }
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": [repo_tag],
            "Layers": layer_names,
        }]);
        add("manifest.json", manifest.to_string().as_bytes());
        let (repo, tag) = repo_tag.rsplit_once(':').unwrap();
        let top = self
            .layers
            .last()
            .map(|l| hex(&l.diff_id).to_owned())
            .unwrap_or_default();
        add(
            "repositories",
            serde_json::json!({ repo: { tag: top } })
                .to_string()
                .as_bytes(),
        );
        tar.into_inner().unwrap().sync_all().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn skopeo(test: &str) -> bool {
        if Command::new("skopeo").arg("--version").output().is_ok() {
            return true;
        }
        harness::skip(
            test,
            "skopeo is not installed (the test command installs it)",
        );
        false
    }

    fn skopeo_json(args: &[&str]) -> serde_json::Value {
        let out = Command::new("skopeo").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    fn builds_are_deterministic() {
        let Some(bb) = busybox("fixtures::builds_are_deterministic") else {
            return;
        };
        let a = ImageBuilder::busybox(&bb).build();
        let b = ImageBuilder::busybox(&bb).build();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        let c = ImageBuilder::busybox(&bb).label("x", "y").build();
        assert_ne!(a.config_digest, c.config_digest);
        assert_eq!(a.layers[0].digest, c.layers[0].digest);
    }

    #[test]
    fn skopeo_reads_the_oci_layout_and_the_docker_archive() {
        let test = "fixtures::skopeo_reads_the_oci_layout_and_the_docker_archive";
        let Some(bb) = busybox(test) else { return };
        if !skopeo(test) {
            return;
        }
        let image = ImageBuilder::busybox(&bb)
            .layer(
                LayerBuilder::new()
                    .dir("srv", 0o755)
                    .file("srv/hello.txt", 0o644, b"hello\n")
                    .hardlink("srv/hello-again.txt", "srv/hello.txt")
                    .whiteout("etc/group")
                    .finish(),
                "COPY hello.txt /srv/",
            )
            .cmd(&["cat", "/srv/hello.txt"])
            .build();
        let dir = tempfile::tempdir().unwrap();
        let layout = image.write_oci_layout(&dir.path().join("layout"), "v1");
        let oci_ref = format!("oci:{}:v1", layout.display());

        let raw = Command::new("skopeo")
            .args(["inspect", "--raw", &oci_ref])
            .output()
            .unwrap();
        assert!(
            raw.status.success(),
            "{}",
            String::from_utf8_lossy(&raw.stderr)
        );
        assert_eq!(raw.stdout, image.manifest);
        let inspect = skopeo_json(&["inspect", &oci_ref]);
        let layers: Vec<&str> = inspect["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            layers,
            image
                .layers
                .iter()
                .map(|l| l.digest.as_str())
                .collect::<Vec<_>>()
        );
        assert_eq!(inspect["Digest"], image.manifest_digest);
        assert_eq!(inspect["Os"], "linux");
        assert!(
            inspect["Env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == PATH_ENV)
        );

        // A copy verifies every blob against its digest on the way.
        let copied = dir.path().join("copied.tar");
        let out = Command::new("skopeo")
            .args([
                "copy",
                &oci_ref,
                &format!("docker-archive:{}:wharf-test/copied:v1", copied.display()),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let archive = dir.path().join("saved.tar");
        image.write_docker_archive(&archive, "wharf-test/busybox:v1");
        // Naming the image by its tag finds it through manifest.json's RepoTags.
        let by_tag = format!("docker-archive:{}:wharf-test/busybox:v1", archive.display());
        let inspect = skopeo_json(&["inspect", &by_tag]);
        assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2, "{inspect}");
        let missing = Command::new("skopeo")
            .args([
                "inspect",
                &format!("docker-archive:{}:wharf-test/busybox:v2", archive.display()),
            ])
            .output()
            .unwrap();
        assert!(!missing.status.success(), "an unknown tag is not found");
        let config = skopeo_json(&["inspect", "--config", &by_tag]);
        assert_eq!(config["rootfs"]["diff_ids"][1], image.layers[1].diff_id);
        assert_eq!(config["config"]["Cmd"][1], "/srv/hello.txt");
    }

    #[test]
    fn the_busybox_layer_is_a_working_root_filesystem() {
        let test = "fixtures::the_busybox_layer_is_a_working_root_filesystem";
        if harness::skip_unless_root(test) {
            return;
        }
        let Some(bb) = busybox(test) else { return };
        let image = ImageBuilder::busybox(&bb).build();
        let dir = tempfile::tempdir().unwrap();
        let mut archive = tar::Archive::new(&image.layers[0].tar[..]);
        archive.set_preserve_permissions(true);
        // The fixture is our own trusted tar, so the tar crate may unpack it here.
        archive.unpack(dir.path()).unwrap();
        let out = Command::new("/usr/sbin/chroot")
            .arg(dir.path())
            .args([
                "/bin/sh",
                "-c",
                "echo hello from $(id -un) in $(pwd); ls /bin/busybox",
            ])
            .env_clear()
            .env("PATH", "/bin")
            .current_dir("/")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from root in /\n/bin/busybox\n"
        );
    }
}
