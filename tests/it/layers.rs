//! Layer unpacking against a corpus of hostile tars: every case must end in a clear error, with
//! no partial layer and the sentinel directory beside the layer untouched.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use wharf::images::unpack::{Limits, unpack_into_new};

use crate::harness;

/// Builds tars entry by entry, writing names raw so hostile ones survive.
struct RawTar {
    bytes: Vec<u8>,
}

impl RawTar {
    fn new() -> RawTar {
        RawTar { bytes: Vec::new() }
    }

    fn header(kind: tar::EntryType, name: &str, link: &str, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        h
    }

    fn push(mut self, header: tar::Header, data: &[u8]) -> Self {
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        let h = Self::header(tar::EntryType::Regular, name, "", 0o644, data.len() as u64);
        self.push(h, data)
    }
    fn dir(self, name: &str, mode: u32) -> Self {
        let h = Self::header(tar::EntryType::Directory, name, "", mode, 0);
        self.push(h, &[])
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        let h = Self::header(tar::EntryType::Symlink, name, target, 0o777, 0);
        self.push(h, &[])
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        let h = Self::header(tar::EntryType::Link, name, target, 0o644, 0);
        self.push(h, &[])
    }
    fn finish(mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        self.bytes
    }
}

/// A layer directory with a sentinel beside it.
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sentinel")).unwrap();
        std::fs::write(dir.path().join("sentinel/keep"), "untouched").unwrap();
        Scene { dir }
    }
    fn layer(&self) -> PathBuf {
        self.dir.path().join("layer")
    }
    fn sentinel(&self) -> PathBuf {
        self.dir.path().join("sentinel")
    }
    /// The sentinel's entries with their modes and contents.
    fn sentinel_state(&self) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = vec![(
            "".into(),
            std::fs::metadata(self.sentinel()).unwrap().mode(),
            Vec::new(),
        )];
        for e in std::fs::read_dir(self.sentinel()).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            out.push((
                e.file_name().to_string_lossy().into_owned(),
                meta.mode(),
                std::fs::read(e.path()).unwrap_or_default(),
            ));
        }
        out.sort();
        out
    }
}

#[test]
fn hostile_layers_fail_cleanly_and_touch_nothing_outside() {
    if harness::skip_unless_root("layers::hostile_layers_fail_cleanly_and_touch_nothing_outside") {
        return;
    }
    let probe = Scene::new();
    let abs_sentinel = probe.sentinel().display().to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dot-dot name",
            RawTar::new().file("../escape", b"x").finish(),
            "'..' is not allowed",
        ),
        (
            "nested dot-dot",
            RawTar::new().file("a/../../escape", b"x").finish(),
            "'..' is not allowed",
        ),
        (
            "absolute name",
            RawTar::new().file("/tmp/escape", b"x").finish(),
            "absolute path",
        ),
        (
            "write through an absolute symlink",
            RawTar::new()
                .symlink("link", &abs_sentinel)
                .file("link/pwned", b"x")
                .finish(),
            "goes through the symlink link",
        ),
        (
            "write through an up-and-out symlink",
            RawTar::new()
                .symlink("link", "../sentinel")
                .file("link/pwned", b"x")
                .finish(),
            "goes through the symlink link",
        ),
        (
            "write through chained symlinks",
            RawTar::new()
                .symlink("b", "../sentinel")
                .symlink("a", "b")
                .file("a/pwned", b"x")
                .finish(),
            "goes through the symlink a",
        ),
        (
            "hardlink up and out",
            RawTar::new().hardlink("hl", "../../etc/passwd").finish(),
            "'..' is not allowed",
        ),
        (
            "hardlink to an absolute path",
            RawTar::new().hardlink("hl", "/etc/passwd").finish(),
            "absolute path",
        ),
        (
            "hardlink through a symlinked dir",
            RawTar::new()
                .symlink("d", "../sentinel")
                .hardlink("hl", "d/keep")
                .finish(),
            "goes through the symlink d",
        ),
        (
            "a 0777 dir through a symlink to an outside dir",
            RawTar::new()
                .symlink("link", "../sentinel")
                .dir("link/sub", 0o777)
                .finish(),
            "goes through the symlink link",
        ),
        (
            "whiteout of .",
            RawTar::new().file(".wh..", b"").finish(),
            "an invalid whiteout",
        ),
        (
            "whiteout of ..",
            RawTar::new().file(".wh...", b"").finish(),
            "an invalid whiteout",
        ),
        (
            "nested whiteout of .",
            RawTar::new()
                .dir("etc", 0o755)
                .file("etc/.wh..", b"")
                .finish(),
            "an invalid whiteout",
        ),
    ];
    for (what, tar, expected) in cases {
        let scene = Scene::new();
        let before = scene.sentinel_state();
        let err = unpack_into_new(&tar[..], &scene.layer(), Limits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{what}: {err}");
        assert!(!scene.layer().exists(), "{what}: no partial layer");
        assert_eq!(
            scene.sentinel_state(),
            before,
            "{what}: the sentinel is untouched"
        );
        assert!(!Path::new("/tmp/escape").exists());
    }

    // A truncated tar: cut in the middle of a file's data.
    let scene = Scene::new();
    let tar = RawTar::new().file("big", &vec![1u8; 4096]).finish();
    let err = unpack_into_new(&tar[..2000], &scene.layer(), Limits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated"), "{err}");
    assert!(!scene.layer().exists());

    // A PAX size that disagrees with the header: the data runs into garbage.
    let scene = Scene::new();
    let mut pax = tar::Header::new_ustar();
    pax.set_entry_type(tar::EntryType::XHeader);
    let record = "15 size=999999\n"; // the length counts the whole record
    pax.set_size(record.len() as u64);
    pax.set_path("PaxHeaders/f").unwrap();
    pax.set_cksum();
    let tar = RawTar::new()
        .push(pax, record.as_bytes())
        .file("f", b"short")
        .finish();
    let err = unpack_into_new(&tar[..], &scene.layer(), Limits::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"f\"") && err.contains("truncated or corrupt"),
        "{err}"
    );
    assert!(!scene.layer().exists());

    // A gzip bomb: 64 MiB of zeros in a few KiB, against a 8 MiB limit.
    let scene = Scene::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 64 << 20];
    gz.write_all(&RawTar::new().file("zeros", &zeros).finish())
        .unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let limits = Limits {
        max_bytes: 8 << 20,
        ..Limits::default()
    };
    let err = unpack_into_new(&bomb[..], &scene.layer(), limits)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "the layer is larger than the limit of {} bytes unpacked",
            8 << 20
        )
    );
    assert!(!scene.layer().exists());
}

#[test]
fn whiteouts_and_opaque_markers_become_overlayfs_form() {
    if harness::skip_unless_root("layers::whiteouts_and_opaque_markers_become_overlayfs_form") {
        return;
    }
    let scene = Scene::new();
    // A whiteout of a symlink removes the link only; an opaque marker after its siblings applies.
    let tar = RawTar::new()
        .symlink("s", "../sentinel/keep")
        .file(".wh.s", b"")
        .file(".wh.gone", b"")
        .dir("d", 0o755)
        .file("d/a", b"kept")
        .file("d/.wh..wh..opq", b"")
        .finish();
    unpack_into_new(&tar[..], &scene.layer(), Limits::default()).unwrap();
    let layer = scene.layer();
    for name in ["s", "gone"] {
        let meta = std::fs::symlink_metadata(layer.join(name)).unwrap();
        assert!(
            meta.file_type().is_char_device() && meta.rdev() == 0,
            "{name} is an overlay whiteout"
        );
    }
    assert_eq!(
        std::fs::read_to_string(scene.sentinel().join("keep")).unwrap(),
        "untouched"
    );
    assert_eq!(std::fs::read_to_string(layer.join("d/a")).unwrap(), "kept");
    let mut value = [0u8; 8];
    let attr = c"trusted.overlay.opaque";
    let path = std::ffi::CString::new(layer.join("d").to_str().unwrap()).unwrap();
    // SAFETY: valid C strings and buffer.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            attr.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    assert_eq!(&value[..n.max(0) as usize], b"y");
    assert!(!layer.join("d/.wh..wh..opq").exists());
}

#[test]
fn a_real_layer_keeps_modes_owners_times_links_and_devices() {
    if harness::skip_unless_root("layers::a_real_layer_keeps_modes_owners_times_links_and_devices")
    {
        return;
    }
    let scene = Scene::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut add =
        |kind: tar::EntryType, path: &str, mode: u32, uid: u64, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mtime(1_600_000_000);
            h.set_size(data.len() as u64);
            if kind == tar::EntryType::Char {
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
            }
            match link {
                Some(l) => b.append_link(&mut h, path, l).unwrap(),
                None => b.append_data(&mut h, path, data).unwrap(),
            }
        };
    // `docker import` and `tar -C dir .` begin with the root itself: it sets the root's mode.
    add(tar::EntryType::Directory, "./", 0o750, 0, &[], None);
    add(tar::EntryType::Directory, "usr/bin/", 0o755, 0, &[], None);
    add(
        tar::EntryType::Regular,
        "usr/bin/tool",
        0o4755,
        0,
        b"#!/bin/sh\n",
        None,
    );
    add(
        tar::EntryType::Regular,
        "home/user/notes",
        0o600,
        1000,
        b"mine",
        None,
    );
    add(
        tar::EntryType::Link,
        "usr/bin/tool-again",
        0o755,
        0,
        &[],
        Some("usr/bin/tool"),
    );
    add(
        tar::EntryType::Symlink,
        "bin",
        0o777,
        0,
        &[],
        Some("usr/bin"),
    );
    add(tar::EntryType::Fifo, "run/pipe", 0o620, 0, &[], None);
    add(tar::EntryType::Char, "dev/null", 0o666, 0, &[], None);
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let stats =
        unpack_into_new(&gz.finish().unwrap()[..], &scene.layer(), Limits::default()).unwrap();
    assert_eq!(stats.entries, 8);
    let l = scene.layer();
    assert_eq!(std::fs::metadata(&l).unwrap().mode() & 0o7777, 0o750);
    let tool = std::fs::metadata(l.join("usr/bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4755, "set-uid survives chown");
    assert_eq!(tool.mtime(), 1_600_000_000);
    assert_eq!(tool.nlink(), 2, "hardlinked");
    let notes = std::fs::metadata(l.join("home/user/notes")).unwrap();
    assert_eq!(
        (notes.uid(), notes.gid(), notes.mode() & 0o777),
        (1000, 1000, 0o600)
    );
    assert_eq!(
        std::fs::read_link(l.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert!(
        std::fs::symlink_metadata(l.join("run/pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        std::fs::symlink_metadata(l.join("dev/null"))
            .unwrap()
            .rdev(),
        nix::sys::stat::makedev(1, 3)
    );
    assert_eq!(
        std::fs::metadata(l.join("usr/bin")).unwrap().mtime(),
        1_600_000_000,
        "directory times are set last"
    );

    // zstd layers too.
    let scene = Scene::new();
    let compressed = zstd::encode_all(&RawTar::new().file("z", b"zstd").finish()[..], 3).unwrap();
    unpack_into_new(&compressed[..], &scene.layer(), Limits::default()).unwrap();
    assert_eq!(std::fs::read(scene.layer().join("z")).unwrap(), b"zstd");
}
