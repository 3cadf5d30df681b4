//! Unpacking one layer (a tar, maybe gzip or zstd compressed) into an empty directory, in the
//! form overlayfs reads: OCI whiteouts become 0:0 character devices, opaque markers become the
//! `trusted.overlay.opaque` attribute.
//!
//! Nothing is ever written outside the directory. Every entry is made relative to a descriptor
//! of its parent directory, opened one component at a time with `O_NOFOLLOW`: a name with `..`
//! or a leading `/` is refused, and so is any entry whose path goes through a symlink (a layer
//! never legitimately writes through a link it made itself). Ownership, modes and times are set
//! on descriptors or with `AT_SYMLINK_NOFOLLOW`, never by following a path. The tar crate only
//! reads; its `unpack` is not used. Decompressed size and entry count are bounded.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};

/// Bounds on what one layer may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Decompressed bytes (a gzip bomb stops here).
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 30,
            max_entries: 2_000_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {name:?}: {reason}")]
    Entry { name: String, reason: String },
    #[error("the layer is larger than the limit of {limit} bytes unpacked")]
    TooLarge { limit: u64 },
    #[error("the layer has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("the layer is not a readable tar (truncated or corrupt): {0}")]
    Tar(String),
}

fn entry_err(name: &str, reason: impl std::fmt::Display) -> UnpackError {
    UnpackError::Entry {
        name: name.chars().take(200).collect(),
        reason: reason.to_string(),
    }
}

/// What a layer held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
}

/// Counts decompressed bytes and stops past the limit.
struct Bounded<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(BOMB));
        }
        Ok(n)
    }
}

const BOMB: &str = "wharf: layer size limit";

/// Peeks at the first bytes to pick the decompressor: gzip, zstd or a plain tar.
pub fn decompressed<'a>(mut blob: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = blob.read(&mut magic[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = io::Cursor::new(magic[..got].to_vec());
    let whole = head.chain(blob);
    Ok(if got >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(whole))
    } else if got == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::new(whole)?)
    } else {
        Box::new(whole)
    })
}

/// A checked relative path: its normal components.
fn clean(name: &str) -> Result<Vec<&OsStr>, String> {
    let path = Path::new(name);
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => parts.push(c),
            Component::CurDir => {}
            Component::RootDir => return Err("an absolute path is not allowed in a layer".into()),
            Component::ParentDir => return Err("'..' is not allowed in a layer".into()),
            Component::Prefix(_) => return Err("not a unix path".into()),
        }
    }
    if parts.is_empty() {
        return Err("an empty path".into());
    }
    Ok(parts)
}

fn open_at(dir: &OwnedFd, name: &OsStr, flags: OFlag) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
}

/// Is `name` in `dir` a symlink (looked at, never followed)?
fn is_symlink(dir: &OwnedFd, name: &OsStr) -> bool {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

/// Opens the directory `parts` under `root` without following any symlink, making missing
/// directories (0755, as tar does for implied parents).
fn walk(root: &OwnedFd, parts: &[&OsStr], name: &str) -> Result<OwnedFd, UnpackError> {
    let mut dir = root.try_clone().map_err(|e| entry_err(name, e))?;
    for (i, part) in parts.iter().enumerate() {
        let next = match open_at(&dir, part, OFlag::O_DIRECTORY | OFlag::O_RDONLY) {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT) => {
                nix::sys::stat::mkdirat(&dir, *part, Mode::from_bits_truncate(0o755))
                    .map_err(|e| entry_err(name, e.desc()))?;
                open_at(&dir, part, OFlag::O_DIRECTORY | OFlag::O_RDONLY)
                    .map_err(|e| entry_err(name, e.desc()))?
            }
            Err(_) if is_symlink(&dir, part) => {
                let through: PathBuf = parts[..=i].iter().collect();
                return Err(entry_err(
                    name,
                    format!("it goes through the symlink {}", through.display()),
                ));
            }
            Err(e) => {
                return Err(entry_err(
                    name,
                    format!("parent {}: {}", Path::new(part).display(), e.desc()),
                ));
            }
        };
        dir = next;
    }
    Ok(dir)
}

/// Removes whatever `name` is in `dir` (a tree for a directory), never following links.
fn remove(dir: &OwnedFd, name: &OsStr) -> nix::Result<()> {
    match nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Ok(()),
        Err(nix::Error::ENOENT) => Ok(()),
        Err(nix::Error::EISDIR) | Err(nix::Error::EPERM) => {
            let sub = open_at(dir, name, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
            let mut entries =
                nix::dir::Dir::from_fd(sub.try_clone().map_err(|_| nix::Error::EBADF)?)?;
            let names: Vec<CString> = entries
                .iter()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_owned())
                .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
                .collect();
            for child in names {
                remove(&sub, OsStr::from_bytes(child.as_bytes()))?;
            }
            nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::RemoveDir)
        }
        Err(e) => Err(e),
    }
}

fn set_xattrs(
    fd: &impl AsRawFd,
    entry: &mut tar::Entry<impl Read>,
    name: &str,
) -> Result<(), UnpackError> {
    let Ok(Some(extensions)) = entry.pax_extensions() else {
        return Ok(());
    };
    for ext in extensions.flatten() {
        let Ok(key) = ext.key() else { continue };
        let Some(attr) = key.strip_prefix("SCHILY.xattr.") else {
            continue;
        };
        let attr_c = CString::new(attr).map_err(|_| entry_err(name, "an xattr name holds NUL"))?;
        let value = ext.value_bytes();
        // SAFETY: valid descriptor, NUL-terminated name, and a value pointer/length pair.
        let rc = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                attr_c.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            return Err(entry_err(
                name,
                format!("set xattr {attr}: {}", io::Error::last_os_error()),
            ));
        }
    }
    Ok(())
}

fn timespec(secs: u64) -> nix::sys::time::TimeSpec {
    nix::sys::time::TimeSpec::new(secs.min(i64::MAX as u64) as i64, 0)
}

/// Unpacks `tar` (already decompressed) into the empty directory `dest`.
pub fn unpack(tar: impl Read, dest: &Path, limits: Limits) -> Result<Unpacked, UnpackError> {
    unpack_entries(tar, dest, limits).map_err(|e| match e {
        UnpackError::TooLarge { .. } => UnpackError::TooLarge {
            limit: limits.max_bytes,
        },
        other => other,
    })
}

fn unpack_entries(tar: impl Read, dest: &Path, limits: Limits) -> Result<Unpacked, UnpackError> {
    let bounded = Bounded {
        inner: tar,
        read: 0,
        limit: limits.max_bytes,
    };
    let mut archive = tar::Archive::new(bounded);
    let root: OwnedFd = nix::fcntl::open(
        dest,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| entry_err(".", format!("open {}: {}", dest.display(), e.desc())))?;
    let mut stats = Unpacked::default();
    let mut dir_times: Vec<(Vec<u8>, u64)> = Vec::new();
    let entries = archive.entries().map_err(|e| tar_error(&e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| tar_error(&e))?;
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let name_bytes = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&name_bytes).into_owned();
        // `./` (docker import and `tar -C dir .` write one): the layer's own root directory.
        if Path::new(&name)
            .components()
            .all(|c| matches!(c, Component::CurDir))
            && entry.header().entry_type() == tar::EntryType::Directory
        {
            let header = entry.header();
            let mode = header.mode().map_err(|e| entry_err(&name, e))? & 0o7777;
            let uid = header.uid().map_err(|e| entry_err(&name, e))? as u32;
            let gid = header.gid().map_err(|e| entry_err(&name, e))? as u32;
            nix::unistd::fchown(&root, Some(uid.into()), Some(gid.into()))
                .and_then(|()| {
                    nix::sys::stat::fchmod(&root, Mode::from_bits_truncate(mode as libc::mode_t))
                })
                .map_err(|e| {
                    entry_err(
                        &name,
                        format!("set the layer root's owner and mode: {}", e.desc()),
                    )
                })?;
            continue;
        }
        let parts = clean(&name).map_err(|r| entry_err(&name, r))?;
        let (base, parents) = parts.split_last().expect("clean paths are not empty");
        let parent = walk(&root, parents, &name)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|e| entry_err(&name, e))? & 0o7777;
        let uid = header.uid().map_err(|e| entry_err(&name, e))? as u32;
        let gid = header.gid().map_err(|e| entry_err(&name, e))? as u32;
        let mtime = header.mtime().unwrap_or(0);
        let base_bytes = base.as_bytes();

        if let Some(hidden) = base_bytes.strip_prefix(b".wh.") {
            if hidden == b".wh..opq" {
                let value = b"y";
                let attr = c"trusted.overlay.opaque";
                // SAFETY: parent is an open directory; name and value are valid for the call.
                let rc = unsafe {
                    libc::fsetxattr(
                        parent.as_raw_fd(),
                        attr.as_ptr(),
                        value.as_ptr().cast(),
                        1,
                        0,
                    )
                };
                if rc != 0 {
                    return Err(entry_err(
                        &name,
                        format!("mark the directory opaque: {}", io::Error::last_os_error()),
                    ));
                }
                continue;
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.starts_with(b".wh.")
            {
                return Err(entry_err(&name, "an invalid whiteout"));
            }
            let hidden = OsStr::from_bytes(hidden);
            remove(&parent, hidden).map_err(|e| entry_err(&name, e.desc()))?;
            nix::sys::stat::mknodat(
                &parent,
                hidden,
                SFlag::S_IFCHR,
                Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(|e| entry_err(&name, format!("make the whiteout: {}", e.desc())))?;
            continue;
        }

        match kind {
            tar::EntryType::Directory => {
                if !nix::sys::stat::fstatat(&parent, *base, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
                {
                    remove(&parent, base).map_err(|e| entry_err(&name, e.desc()))?;
                    nix::sys::stat::mkdirat(&parent, *base, Mode::from_bits_truncate(0o700))
                        .map_err(|e| entry_err(&name, e.desc()))?;
                }
                let fd = open_at(&parent, base, OFlag::O_DIRECTORY | OFlag::O_RDONLY)
                    .map_err(|e| entry_err(&name, e.desc()))?;
                nix::unistd::fchown(&fd, Some(uid.into()), Some(gid.into()))
                    .map_err(|e| entry_err(&name, format!("chown: {}", e.desc())))?;
                nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))
                    .map_err(|e| entry_err(&name, format!("chmod: {}", e.desc())))?;
                set_xattrs(&fd, &mut entry, &name)?;
                dir_times.push((
                    parts
                        .iter()
                        .flat_map(|p| [b"/".as_slice(), p.as_bytes()])
                        .flatten()
                        .copied()
                        .collect(),
                    mtime,
                ));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove(&parent, base).map_err(|e| entry_err(&name, e.desc()))?;
                let fd = nix::fcntl::openat(
                    &parent,
                    *base,
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| entry_err(&name, e.desc()))?;
                let mut file = File::from(fd);
                let expected = entry.size();
                let copied = io::copy(&mut entry, &mut file).map_err(|e| read_error(&name, &e))?;
                if copied != expected {
                    // A truncated layer, or a PAX size that disagrees with the data.
                    return Err(entry_err(
                        &name,
                        format!(
                            "the layer ends after {copied} of its {expected} bytes (truncated or corrupt)"
                        ),
                    ));
                }
                stats.bytes += copied;
                nix::unistd::fchown(&file, Some(uid.into()), Some(gid.into()))
                    .map_err(|e| entry_err(&name, format!("chown: {}", e.desc())))?;
                // After chown, which clears set-id bits.
                nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode))
                    .map_err(|e| entry_err(&name, format!("chmod: {}", e.desc())))?;
                set_xattrs(&file, &mut entry, &name)?;
                nix::sys::stat::futimens(&file, &timespec(mtime), &timespec(mtime))
                    .map_err(|e| entry_err(&name, e.desc()))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| entry_err(&name, "a symlink without a target"))?
                    .into_owned();
                remove(&parent, base).map_err(|e| entry_err(&name, e.desc()))?;
                nix::unistd::symlinkat(OsStr::from_bytes(&target), &parent, *base)
                    .map_err(|e| entry_err(&name, e.desc()))?;
                nix::unistd::fchownat(
                    &parent,
                    *base,
                    Some(uid.into()),
                    Some(gid.into()),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| entry_err(&name, format!("chown: {}", e.desc())))?;
                nix::sys::stat::utimensat(
                    &parent,
                    *base,
                    &timespec(mtime),
                    &timespec(mtime),
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| entry_err(&name, e.desc()))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| entry_err(&name, "a hardlink without a target"))?
                    .into_owned();
                let target = String::from_utf8_lossy(&target).into_owned();
                let tparts = clean(&target)
                    .map_err(|r| entry_err(&name, format!("hardlink target {target:?}: {r}")))?;
                let (tbase, tparents) = tparts.split_last().expect("clean paths are not empty");
                let tparent = walk(&root, tparents, &name)?;
                let tstat = nix::sys::stat::fstatat(&tparent, *tbase, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| {
                        entry_err(&name, format!("hardlink target {target:?}: {}", e.desc()))
                    })?;
                if tstat.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    return Err(entry_err(
                        &name,
                        format!("hardlink target {target:?} is a directory"),
                    ));
                }
                remove(&parent, base).map_err(|e| entry_err(&name, e.desc()))?;
                // Flags 0: a symlink target is linked itself, never followed.
                nix::unistd::linkat(&tparent, *tbase, &parent, *base, AtFlags::empty()).map_err(
                    |e| entry_err(&name, format!("hardlink to {target:?}: {}", e.desc())),
                )?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    tar::EntryType::Char | tar::EntryType::Block => {
                        let major = header.device_major().ok().flatten().unwrap_or(0) as u64;
                        let minor = header.device_minor().ok().flatten().unwrap_or(0) as u64;
                        let flag = if kind == tar::EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (flag, nix::sys::stat::makedev(major, minor))
                    }
                    _ => (SFlag::S_IFIFO, 0),
                };
                remove(&parent, base).map_err(|e| entry_err(&name, e.desc()))?;
                nix::sys::stat::mknodat(&parent, *base, sflag, Mode::from_bits_truncate(mode), dev)
                    .map_err(|e| entry_err(&name, e.desc()))?;
                let fd = open_at(&parent, base, OFlag::O_PATH)
                    .map_err(|e| entry_err(&name, e.desc()))?;
                nix::unistd::fchownat(
                    &parent,
                    *base,
                    Some(uid.into()),
                    Some(gid.into()),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| entry_err(&name, format!("chown: {}", e.desc())))?;
                nix::sys::stat::fchmodat(
                    &parent,
                    *base,
                    Mode::from_bits_truncate(mode),
                    nix::sys::stat::FchmodatFlags::NoFollowSymlink,
                )
                .or_else(|e| {
                    if e == nix::Error::ENOTSUP {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| entry_err(&name, format!("chmod: {}", e.desc())))?;
                drop(fd);
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            other => {
                return Err(entry_err(
                    &name,
                    format!("unsupported entry type {other:?}"),
                ));
            }
        }
    }
    // Directory times last: making their children changed them.
    for (path, mtime) in dir_times.into_iter().rev() {
        let rel = OsStr::from_bytes(&path[1..]);
        let parts: Vec<&OsStr> = Path::new(rel).components().map(|c| c.as_os_str()).collect();
        if let Some((base, parents)) = parts.split_last()
            && let Ok(parent) = walk(&root, parents, "")
        {
            let _ = nix::sys::stat::utimensat(
                &parent,
                *base,
                &timespec(mtime),
                &timespec(mtime),
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            );
        }
    }
    Ok(stats)
}

fn tar_error(e: &io::Error) -> UnpackError {
    if e.get_ref().is_some_and(|inner| inner.to_string() == BOMB) {
        return UnpackError::TooLarge { limit: 0 };
    }
    UnpackError::Tar(e.to_string())
}

fn read_error(name: &str, e: &io::Error) -> UnpackError {
    match tar_error(e) {
        UnpackError::TooLarge { limit } => UnpackError::TooLarge { limit },
        _ => entry_err(
            name,
            format!("reading its content: {e} (a truncated layer?)"),
        ),
    }
}

/// Unpacks into `dest` (made here, must not exist); on any error `dest` is removed: there is
/// never a partial layer.
pub fn unpack_into_new(
    blob: impl Read,
    dest: &Path,
    limits: Limits,
) -> Result<Unpacked, UnpackError> {
    std::fs::create_dir(dest)
        .map_err(|e| entry_err(".", format!("make {}: {e}", dest.display())))?;
    let result = decompressed(blob)
        .map_err(|e| UnpackError::Tar(e.to_string()))
        .and_then(|tar| unpack(tar, dest, limits));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    result
}
