//! Layers stored once per chain id, and container root filesystems as overlays of them.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use wharf::domain::Digest;
use wharf::images::snapshot::{LayerStore, SnapshotError, chain_ids, mount_overlay};
use wharf::images::store::{BlobStore, Expect};
use wharf::images::unpack::Limits;

use crate::fixtures::{self, ImageBuilder, LayerBuilder};
use crate::harness;

/// Overlay mounts made by a test, undone on drop.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for target in self.0.iter().rev() {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Upper, work and rootfs directories for one container under `dir`, mounted over `lowers`.
fn container(dir: &Path, name: &str, lowers: &[PathBuf], mounts: &mut Mounts) -> PathBuf {
    let base = dir.join(name);
    for sub in ["upper", "work", "rootfs"] {
        std::fs::create_dir_all(base.join(sub)).unwrap();
    }
    mount_overlay(
        lowers,
        &base.join("upper"),
        &base.join("work"),
        &base.join("rootfs"),
    )
    .unwrap();
    mounts.0.push(base.join("rootfs"));
    base
}

#[test]
fn overlays_keep_each_containers_changes_in_its_own_upper_dir() {
    let test = "snapshots::overlays_keep_each_containers_changes_in_its_own_upper_dir";
    if harness::skip_unless_root(test) {
        return;
    }
    let Some(busybox) = fixtures::busybox(test) else {
        return;
    };
    let image = ImageBuilder::busybox(&busybox)
        .layer(
            LayerBuilder::new()
                .dir("srv", 0o755)
                .file("srv/a", 0o644, b"from the image\n")
                .finish(),
            "COPY a /srv/",
        )
        .layer(
            LayerBuilder::new().whiteout("etc/group").finish(),
            "RUN rm /etc/group",
        )
        .build();
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::new(dir.path().join("blobs"));
    let layers = LayerStore::new(dir.path().join("layers"));
    let diff_ids: Vec<Digest> = image
        .layers
        .iter()
        .map(|l| Digest::parse(&l.diff_id).unwrap())
        .collect();
    let chains = chain_ids(&diff_ids);
    let mut lowers = Vec::new();
    for ((layer, diff), chain) in image.layers.iter().zip(&diff_ids).zip(&chains) {
        let digest = Digest::parse(&layer.digest).unwrap();
        blobs
            .put(
                &mut &layer.gzip[..],
                &Expect {
                    digest: Some(digest.clone()),
                    ..Expect::default()
                },
            )
            .unwrap();
        lowers.push(
            layers
                .ensure(chain, diff, blobs.open(&digest).unwrap(), Limits::default())
                .unwrap(),
        );
    }
    assert!(layers.exists(&chains[2]));
    // A layer whose content does not match its diff id is refused and not kept.
    let bogus_chain = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
    let err = layers
        .ensure(
            &bogus_chain,
            &diff_ids[0],
            &image.layers[1].gzip[..],
            Limits::default(),
        )
        .unwrap_err();
    assert!(matches!(err, SnapshotError::DiffIdMismatch { .. }), "{err}");
    assert!(!layers.exists(&bogus_chain));
    assert_eq!(
        std::fs::read_dir(dir.path().join("layers"))
            .unwrap()
            .count(),
        3,
        "no leftovers"
    );

    lowers.reverse(); // top first
    let mut mounts = Mounts(Vec::new());
    let a = container(dir.path(), "a", &lowers, &mut mounts);
    let b = container(dir.path(), "b", &lowers, &mut mounts);
    for c in [&a, &b] {
        assert_eq!(
            std::fs::read_to_string(c.join("rootfs/srv/a")).unwrap(),
            "from the image\n"
        );
        assert!(
            !c.join("rootfs/etc/group").exists(),
            "the image's whiteout applies"
        );
        assert!(c.join("rootfs/bin/busybox").is_file());
    }
    std::fs::write(a.join("rootfs/mine"), "a's file").unwrap();
    std::fs::remove_file(a.join("rootfs/srv/a")).unwrap();
    assert_eq!(
        std::fs::read_to_string(a.join("upper/mine")).unwrap(),
        "a's file",
        "writes land in the upper dir"
    );
    let whiteout = std::fs::symlink_metadata(a.join("upper/srv/a")).unwrap();
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "a deleted lower file leaves a whiteout"
    );
    assert!(
        !b.join("rootfs/mine").exists(),
        "b does not see a's new file"
    );
    assert!(
        b.join("rootfs/srv/a").exists(),
        "b does not see a's deletion"
    );
    assert!(
        lowers[1].join("srv/a").exists(),
        "the layer itself is untouched"
    );

    // The runtime runs a container on such a root filesystem.
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let mut spec = serde_json::to_value(wharf::runtime::default_spec()).unwrap();
    spec["root"]["path"] = a.join("rootfs").to_str().unwrap().into();
    spec["process"]["args"] =
        serde_json::json!(["sh", "-c", "echo made-inside > /inside; ls /srv | wc -l"]);
    let parent = format!("/wharf-test-snap-{}", std::process::id());
    spec["linux"]["cgroupsPath"] = format!("{parent}/c").into();
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    let (status, out, err) = harness::run_wharf(
        harness::wharf_command()
            .args(["runtime", "--root"])
            .arg(dir.path().join("state"))
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg("snap"),
    );
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join(parent.trim_start_matches('/')));
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(parent.trim_start_matches('/')));
    assert!(status.success(), "{err}");
    assert_eq!(
        out.trim(),
        "0",
        "a's deletion of /srv/a holds inside the container"
    );
    assert_eq!(
        std::fs::read_to_string(a.join("upper/inside")).unwrap(),
        "made-inside\n"
    );
}

#[test]
fn images_of_more_than_a_hundred_layers_mount() {
    let test = "snapshots::images_of_more_than_a_hundred_layers_mount";
    if harness::skip_unless_root(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Long paths, so the classic mount option string would be far beyond one page.
    let layers = LayerStore::new(
        dir.path()
            .join("layers-with-a-deliberately-long-directory-name-to-fill-option-strings"),
    );
    let mut diff_ids = Vec::new();
    let mut tars = Vec::new();
    for i in 0..130 {
        let tar = LayerBuilder::new()
            .file(&format!("layer-{i:03}"), 0o644, format!("{i}").as_bytes())
            .finish();
        diff_ids.push(Digest::parse(&fixtures::sha256_digest(&tar)).unwrap());
        tars.push(tar);
    }
    let chains = chain_ids(&diff_ids);
    let mut lowers: Vec<PathBuf> = tars
        .iter()
        .zip(&diff_ids)
        .zip(&chains)
        .map(|((tar, diff), chain)| {
            layers
                .ensure(chain, diff, &tar[..], Limits::default())
                .unwrap()
        })
        .collect();
    let option_length: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(
        option_length > 4096,
        "the test must exceed a page: {option_length}"
    );
    lowers.reverse();
    let mut mounts = Mounts(Vec::new());
    let c = container(dir.path(), "c", &lowers, &mut mounts);
    let seen = std::fs::read_dir(c.join("rootfs")).unwrap().count();
    assert_eq!(seen, 130);
    assert_eq!(
        std::fs::read_to_string(c.join("rootfs/layer-000")).unwrap(),
        "0"
    );
    assert_eq!(
        std::fs::read_to_string(c.join("rootfs/layer-129")).unwrap(),
        "129"
    );
}
