//! The container's root filesystem, built inside its new mount namespace by the init process:
//! propagation, the spec's mounts (resolved inside the root), device nodes, `pivot_root`, and
//! then masked paths, read-only paths and a read-only root.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use super::inroot::{Make, Root, fd_path};

/// A failed step of the root filesystem set-up, naming what and where.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}: {reason}", path.display())]
pub struct RootfsError {
    pub step: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

fn fail(
    step: &'static str,
    path: &Path,
) -> impl FnOnce(std::fmt::Arguments) -> RootfsError + use<> {
    let path = path.to_owned();
    move |reason| RootfsError {
        step,
        path,
        reason: reason.to_string(),
    }
}

fn err<E: std::fmt::Display>(
    step: &'static str,
    path: &Path,
) -> impl FnOnce(E) -> RootfsError + use<E> {
    let path = path.to_owned();
    move |e| RootfsError {
        step,
        path,
        reason: e.to_string(),
    }
}

/// Mount flags and file-system data parsed from a spec mount's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Propagation to set after mounting (private, shared, slave, unbindable; maybe recursive).
    pub propagation: MsFlags,
    pub data: Vec<String>,
}

/// Parses `options` the way mount(8) and runc do.
pub fn parse_options(options: &[String]) -> MountOptions {
    let mut out = MountOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let mut p = match option.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                if option.starts_with('r') {
                    p |= MsFlags::MS_REC;
                }
                out.propagation |= p;
                continue;
            }
            _ => {
                out.data.push(option.clone());
                continue;
            }
        };
        out.flags |= set;
        out.flags &= !clear;
    }
    out
}

/// The devices every container gets (as runc and docker give them).
fn default_devices() -> Vec<(&'static str, u64, u64)> {
    vec![
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
}

/// Everything before `pivot_root`: propagation, mounts and devices. Runs in the init process, in
/// its own mount namespace.
pub fn prepare(spec: &Spec, rootfs: &Path, cgroup_v2: bool) -> Result<(), RootfsError> {
    let linux = spec.linux().as_ref();
    let propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        Some("shared") | Some("rshared") => MsFlags::MS_SHARED | MsFlags::MS_REC,
        Some("private") | Some("rprivate") => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        Some("unbindable") | Some("runbindable") => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    // Nothing we mount may propagate back to the host.
    mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
        .map_err(err("set propagation of", Path::new("/")))?;

    // A rootfs whose /proc or /dev is a symlink could point our mounts anywhere: refuse it.
    for special in ["proc", "dev"] {
        let path = rootfs.join(special);
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && meta.file_type().is_symlink()
        {
            return Err(fail("refuse rootfs", &path)(format_args!(
                "/{special} is a symlink"
            )));
        }
    }

    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("bind the root filesystem", rootfs))?;
    let root = Root::open(rootfs).map_err(err("open the root filesystem", rootfs))?;

    // cgroup file systems wait for `mount_cgroups`, once the cgroup namespace exists.
    for m in spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| !is_cgroup_mount(m))
    {
        mount_one(&root, m, cgroup_v2)?;
    }
    make_devices(
        &root,
        linux
            .and_then(|l| l.devices().as_ref())
            .map_or(&[][..], |d| &d[..]),
        spec,
    )
}

fn is_cgroup_mount(m: &Mount) -> bool {
    matches!(m.typ().as_deref(), Some("cgroup") | Some("cgroup2"))
}

/// The spec's cgroup file system mounts, made after the init has joined its cgroup and made its
/// cgroup namespace (so they show the container's own cgroup as the root). Before pivot_root.
pub fn mount_cgroups(spec: &Spec, rootfs: &Path, cgroup_v2: bool) -> Result<(), RootfsError> {
    let root = Root::open(rootfs).map_err(err("open the root filesystem", rootfs))?;
    for m in spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| is_cgroup_mount(m))
    {
        mount_one(&root, m, cgroup_v2)?;
    }
    Ok(())
}

fn mount_one(root: &Root, m: &Mount, cgroup_v2: bool) -> Result<(), RootfsError> {
    let dest = m.destination();
    if let Some(link) = root
        .escaping_link(dest)
        .map_err(err("resolve mount destination", dest))?
    {
        return Err(fail("refuse mount destination", dest)(format_args!(
            "it leads out of the root filesystem through the symlink {}",
            link.display()
        )));
    }
    let options = parse_options(m.options().as_deref().unwrap_or(&[]));
    let kind = m.typ().as_deref().unwrap_or("");
    let is_bind = options.flags.contains(MsFlags::MS_BIND) || kind == "bind";
    let data = options.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());

    if is_bind {
        let source = m
            .source()
            .as_ref()
            .ok_or_else(|| fail("bind mount", dest)(format_args!("no source")))?;
        let meta = std::fs::metadata(source).map_err(err("bind mount source", source))?;
        let make = if meta.is_dir() { Make::Dir } else { Make::File };
        let target = root
            .resolve(dest, make)
            .map_err(err("make mount point", dest))?;
        let rec = options.flags & MsFlags::MS_REC;
        mount(
            Some(source),
            &fd_path(&target),
            None::<&str>,
            MsFlags::MS_BIND | rec,
            None::<&str>,
        )
        .map_err(err("bind mount", dest))?;
        let extra = options.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            // Re-open: the mount point now shows the bound file system.
            let target = root
                .resolve(dest, Make::Nothing)
                .map_err(err("reopen mount point", dest))?;
            let keep = locked_flags(&target);
            mount(
                None::<&str>,
                &fd_path(&target),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | keep,
                None::<&str>,
            )
            .map_err(err("remount bind mount", dest))?;
        }
    } else if kind == "cgroup" || kind == "cgroup2" {
        let target = root
            .resolve(dest, Make::Dir)
            .map_err(err("make mount point", dest))?;
        if cgroup_v2 {
            mount(
                Some("cgroup2"),
                &fd_path(&target),
                Some("cgroup2"),
                options.flags,
                None::<&str>,
            )
            .map_err(err("mount cgroup2 on", dest))?;
        } else {
            mount_cgroup_v1(root, dest, &options)?;
        }
    } else {
        let target = root
            .resolve(dest, Make::Dir)
            .map_err(err("make mount point", dest))?;
        let source = m
            .source()
            .as_ref()
            .map(|s| s.as_os_str().to_owned())
            .unwrap_or_else(|| kind.into());
        mount(
            Some(source.as_os_str()),
            &fd_path(&target),
            Some(kind),
            options.flags,
            data,
        )
        .map_err(err("mount", dest))?;
    }
    if !options.propagation.is_empty() {
        let target = root
            .resolve(dest, Make::Nothing)
            .map_err(err("reopen mount point", dest))?;
        mount(
            None::<&str>,
            &fd_path(&target),
            None::<&str>,
            options.propagation,
            None::<&str>,
        )
        .map_err(err("set propagation of", dest))?;
    }
    Ok(())
}

/// cgroup v1 inside the container: a tmpfs with each controller hierarchy mounted in it (the
/// cgroup namespace shows the container's own cgroup as each hierarchy's root).
fn mount_cgroup_v1(root: &Root, dest: &Path, options: &MountOptions) -> Result<(), RootfsError> {
    let target = root
        .resolve(dest, Make::Dir)
        .map_err(err("make mount point", dest))?;
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        &fd_path(&target),
        Some("tmpfs"),
        base,
        Some("mode=755"),
    )
    .map_err(err("mount tmpfs for cgroups on", dest))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(err("read", Path::new("/proc/self/mountinfo")))?;
    for line in mounts.lines() {
        let Some((_, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut fields = after.split(' ');
        if fields.next() != Some("cgroup") {
            continue;
        }
        let super_options = fields.nth(1).unwrap_or("");
        let controllers: Vec<&str> = super_options
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
            .collect();
        if controllers.is_empty() {
            continue;
        }
        let name = controllers
            .iter()
            .map(|c| c.trim_start_matches("name="))
            .collect::<Vec<_>>()
            .join(",");
        let sub = dest.join(&name);
        let target = root
            .resolve(&sub, Make::Dir)
            .map_err(err("make mount point", &sub))?;
        mount(
            Some("cgroup"),
            &fd_path(&target),
            Some("cgroup"),
            options.flags & !MsFlags::MS_RDONLY | base,
            Some(controllers.join(",").as_str()),
        )
        .map_err(err("mount cgroup on", &sub))?;
    }
    if options.flags.contains(MsFlags::MS_RDONLY) {
        let target = root
            .resolve(dest, Make::Nothing)
            .map_err(err("reopen mount point", dest))?;
        mount(
            None::<&str>,
            &fd_path(&target),
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base,
            None::<&str>,
        )
        .map_err(err("make read-only", dest))?;
    }
    Ok(())
}

/// The flags of the mount under `file` that a bind remount must keep (or the kernel refuses).
fn locked_flags(file: &File) -> MsFlags {
    let Ok(stat) = nix::sys::statvfs::fstatvfs(file) else {
        return MsFlags::empty();
    };
    let f = stat.flags();
    use nix::sys::statvfs::FsFlags;
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

fn device_kind(t: LinuxDeviceType) -> Option<libc::mode_t> {
    match t {
        LinuxDeviceType::C | LinuxDeviceType::U => Some(libc::S_IFCHR),
        LinuxDeviceType::B => Some(libc::S_IFBLK),
        LinuxDeviceType::P => Some(libc::S_IFIFO),
        LinuxDeviceType::A => None,
    }
}

/// Bind-mounts the host's device node at `path` (inside the root) when mknod is not allowed.
fn bind_host_device(
    root: &Root,
    path: &Path,
    kind: libc::mode_t,
    wanted: libc::dev_t,
) -> Result<(), RootfsError> {
    let host = std::fs::symlink_metadata(path).map_err(err("bind host device", path))?;
    if host.mode() & libc::S_IFMT != kind || host.rdev() != wanted {
        return Err(fail("bind host device", path)(format_args!(
            "the host's node is another device"
        )));
    }
    let target = root
        .resolve(path, Make::File)
        .map_err(err("make device mount point", path))?;
    mount(
        Some(path),
        &fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err("bind host device", path))
}

/// One device node to make.
struct DeviceNode {
    path: PathBuf,
    kind: libc::mode_t,
    major: u64,
    minor: u64,
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
}

/// Device nodes under the container's /dev, and the usual symlinks.
fn make_devices(root: &Root, devices: &[LinuxDevice], spec: &Spec) -> Result<(), RootfsError> {
    let (uid, gid) = spec
        .process()
        .as_ref()
        .map_or((0, 0), |p| (p.user().uid(), p.user().gid()));
    let mut list: Vec<DeviceNode> = default_devices()
        .into_iter()
        .map(|(path, major, minor)| DeviceNode {
            path: PathBuf::from(path),
            kind: libc::S_IFCHR,
            major,
            minor,
            mode: 0o666,
            owner: Some(0),
            group: Some(0),
        })
        .collect();
    for d in devices {
        let Some(kind) = device_kind(d.typ()) else {
            continue;
        };
        list.retain(|n| n.path != *d.path());
        list.push(DeviceNode {
            path: d.path().clone(),
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666),
            owner: d.uid().or(Some(uid)),
            group: d.gid().or(Some(gid)),
        });
    }
    for DeviceNode {
        path,
        kind,
        major,
        minor,
        mode,
        owner,
        group,
    } in list
    {
        let parent = path.parent().unwrap_or(Path::new("/dev"));
        let name = path
            .file_name()
            .ok_or_else(|| fail("make device", &path)(format_args!("no file name")))?;
        let dir = root
            .resolve(parent, Make::Dir)
            .map_err(err("make device directory", parent))?;
        let wanted = nix::sys::stat::makedev(major, minor);
        match nix::sys::stat::fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(existing) => {
                // The image (or a mount) already put something here: it must be this device.
                if existing.st_mode & libc::S_IFMT != kind || existing.st_rdev != wanted {
                    return Err(fail("refuse rootfs: device", &path)(format_args!(
                        "exists and is not the device {major}:{minor} of the expected type"
                    )));
                }
                continue;
            }
            Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(err("stat device", &path)(e)),
        }
        let made = nix::sys::stat::mknodat(
            &dir,
            name,
            nix::sys::stat::SFlag::from_bits_truncate(kind),
            nix::sys::stat::Mode::from_bits_truncate(mode),
            wanted,
        );
        match made {
            Ok(()) => {}
            // The devices cgroup (or a user namespace) forbids mknod: bind the host's node
            // instead, as runc does. It must be the same device.
            Err(nix::Error::EPERM) => {
                bind_host_device(root, &path, kind, wanted)?;
                continue;
            }
            Err(e) => return Err(err("make device", &path)(e)),
        }
        // mknod applied the umask: set the mode the spec asks for.
        nix::sys::stat::fchmodat(
            &dir,
            name,
            nix::sys::stat::Mode::from_bits_truncate(mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(err("chmod device", &path))?;
        nix::unistd::fchownat(
            &dir,
            name,
            owner.map(nix::unistd::Uid::from_raw),
            group.map(nix::unistd::Gid::from_raw),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(err("chown device", &path))?;
    }
    let dev = root
        .resolve(Path::new("/dev"), Make::Dir)
        .map_err(err("open", Path::new("/dev")))?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let _ = nix::unistd::unlinkat(&dev, link, nix::unistd::UnlinkatFlags::NoRemoveDir);
        nix::unistd::symlinkat(target, &dev, link)
            .map_err(err("make symlink", &Path::new("/dev").join(link)))?;
    }
    Ok(())
}

/// Makes `rootfs` the root without `pivot_root` (`--no-pivot`, for roots on a ramfs where
/// pivot_root cannot work): move the root mount over `/` and chroot into it. The host's root
/// stays reachable from outside the chroot, so pivot_root is preferred whenever it works.
pub fn move_root(rootfs: &Path) -> Result<(), RootfsError> {
    nix::unistd::chdir(rootfs).map_err(err("chdir to", rootfs))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(err("move the root mount of", rootfs))?;
    nix::unistd::chroot(".").map_err(err("chroot into", rootfs))?;
    nix::unistd::chdir("/").map_err(err("chdir to", Path::new("/")))?;
    Ok(())
}

/// Makes `rootfs` the root: `pivot_root(".", ".")` then detach the old root stacked under it.
pub fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    nix::unistd::chdir(rootfs).map_err(err("chdir to", rootfs))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root to", rootfs))?;
    // The old root is now on top of "/": keep its unmount from reaching the host, then drop it.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("make the old root a slave", Path::new("/")))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("unmount the old root", Path::new("/")))?;
    nix::unistd::chdir("/").map_err(err("chdir to", Path::new("/")))?;
    Ok(())
}

/// After `pivot_root`: sysctls, masked paths, read-only paths, then a read-only root if asked.
pub fn finish(spec: &Spec) -> Result<(), RootfsError> {
    let Some(linux) = spec.linux().as_ref() else {
        return Ok(());
    };
    for (key, value) in linux.sysctl().iter().flatten() {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(err("set sysctl", &path))?;
    }
    let root = Root::open(Path::new("/")).map_err(err("open", Path::new("/")))?;
    let masked = linux.masked_paths().as_deref().unwrap_or(&[]);
    if !masked.is_empty() {
        // Mask with the container's /dev/null, but only if it really is the null device
        // (CVE-2025-31133: a rootfs could have made it something else).
        let null = root
            .open_at(Path::new("/dev/null"), libc::O_PATH)
            .map_err(err("open", Path::new("/dev/null")))?;
        let meta = null
            .metadata()
            .map_err(err("stat", Path::new("/dev/null")))?;
        if !meta.file_type().is_char_device() || meta.rdev() != nix::sys::stat::makedev(1, 3) {
            return Err(fail("refuse to mask with", Path::new("/dev/null"))(
                format_args!("it is not the character device 1:3"),
            ));
        }
        for path in masked {
            let path = Path::new(path);
            let target = match root.open_at(path, libc::O_PATH | libc::O_NOFOLLOW) {
                Ok(t) => t,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(err("open masked path", path)(e)),
            };
            let is_dir = target.metadata().map(|m| m.is_dir()).unwrap_or(false);
            if is_dir {
                mount(
                    Some("tmpfs"),
                    &fd_path(&target),
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(err("mask", path))?;
            } else {
                mount(
                    Some(&fd_path(&null)),
                    &fd_path(&target),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(err("mask", path))?;
            }
        }
    }
    for path in linux.readonly_paths().iter().flatten() {
        let path = Path::new(path);
        let target = match root.open_at(path, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(err("open read-only path", path)(e)),
        };
        mount(
            Some(&fd_path(&target)),
            &fd_path(&target),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(err("bind read-only path", path))?;
        let target = root
            .open_at(path, libc::O_PATH | libc::O_NOFOLLOW)
            .map_err(err("reopen read-only path", path))?;
        let keep = locked_flags(&target);
        mount(
            None::<&str>,
            &fd_path(&target),
            None::<&str>,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | keep,
            None::<&str>,
        )
        .map_err(err("make read-only", path))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let keep = locked_flags(&File::open("/").map_err(err("open", Path::new("/")))?);
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep,
            None::<&str>,
        )
        .map_err(err("make read-only", Path::new("/")))?;
    }
    Ok(())
}

/// Brings the loopback interface of a new network namespace up, as docker does.
pub fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket call; the descriptor is closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; zero is a valid value; we set the name and flags.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write the ifreq we pass, which is valid.
    let result = unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: sock is ours.
    unsafe { libc::close(sock) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_into_flags_propagation_and_data() {
        let o = parse_options(
            &[
                "nosuid",
                "noexec",
                "nodev",
                "ro",
                "mode=755",
                "size=65536k",
                "rprivate",
            ]
            .map(String::from),
        );
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY
        );
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(o.data, ["mode=755", "size=65536k"]);
        let o = parse_options(&["rbind", "ro", "rw"].map(String::from));
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
    }
}
