//! Files in and out of a container's filesystem: `cp` both ways, `export` and `diff`.
//!
//! Every path is resolved inside the container's root (`openat2(RESOLVE_IN_ROOT)`), and every
//! step below it is taken from a descriptor already held, one component at a time and never
//! through a symlink. A container that swaps a directory for a symlink to `/` while a copy runs
//! can therefore only redirect the copy within itself (CVE-2018-15664). Nothing of the
//! container's is executed or loaded by the daemon (CVE-2019-14271).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::sys::stat::{FileStat, Mode, SFlag};
use serde::Serialize;

use crate::runtime::inroot;
pub use crate::runtime::inroot::Root;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: no such file or directory in the container")]
    NotFound { path: String },
    #[error("{path}: {reason}")]
    Path { path: String, reason: String },
    #[error("the archive: {0}")]
    Tar(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn at(path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.as_ref().display().to_string();
    move |e| {
        if e.raw_os_error() == Some(libc::ENOENT) {
            ArchiveError::NotFound { path }
        } else {
            ArchiveError::Path {
                path,
                reason: e.to_string(),
            }
        }
    }
}

fn nix_at(path: impl AsRef<Path>) -> impl FnOnce(nix::Error) -> ArchiveError {
    let f = at(path);
    move |e| f(io::Error::from(e))
}

/// What `cp` needs to know of a path in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PathStat {
    pub name: String,
    pub size: u64,
    /// Permission bits and file type, as `st_mode`.
    pub mode: u32,
    pub is_dir: bool,
    /// The target, when the path is a symlink.
    pub link_target: Option<String>,
}

/// The resolve flags of one step below a held directory: no symlink, no `..` out of it.
const ONE_STEP: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

fn step(dir: &File, name: &OsStr, flags: libc::c_int) -> io::Result<File> {
    inroot::openat2(dir, Path::new(name), flags, 0, ONE_STEP)
}

/// `path` split into the directory to resolve in the root and the last name (`None` for `/`).
fn split(path: &Path) -> (PathBuf, Option<OsString>) {
    let parts: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    match parts.split_last() {
        None => (PathBuf::from("/"), None),
        Some((last, rest)) => (
            std::iter::once(OsStr::new("/"))
                .chain(rest.iter().copied())
                .collect(),
            Some(last.to_os_string()),
        ),
    }
}

/// Opens the parent of `path` inside `root` (resolving links within the root) and returns it
/// with the last name; `/` is its own parent, named `.`.
fn parent_of(root: &Root, path: &Path) -> Result<(File, OsString), ArchiveError> {
    let (parent, name) = split(path);
    let dir = root
        .open_at(&parent, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(at(&parent))?;
    Ok((dir, name.unwrap_or_else(|| OsString::from("."))))
}

fn stat_at(dir: &File, name: &OsStr) -> nix::Result<FileStat> {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// `stat` of `path` in the container (a final symlink is not followed).
pub fn stat(root: &Root, path: &Path) -> Result<PathStat, ArchiveError> {
    let (dir, name) = parent_of(root, path)?;
    let st = stat_at(&dir, &name).map_err(nix_at(path))?;
    let is_link = kind(&st) == SFlag::S_IFLNK;
    let link_target = if is_link {
        Some(
            nix::fcntl::readlinkat(&dir, name.as_os_str())
                .map_err(nix_at(path))?
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    Ok(PathStat {
        name: if name == "." {
            "/".into()
        } else {
            name.to_string_lossy().into_owned()
        },
        size: st.st_size as u64,
        mode: st.st_mode,
        is_dir: kind(&st) == SFlag::S_IFDIR,
        link_target,
    })
}

/// Filesystems whose contents are the kernel's, not files: a copy shows their mount point empty.
fn is_virtual(dir: &File) -> bool {
    nix::sys::statfs::fstatfs(dir).is_ok_and(|fs| {
        let t = fs.filesystem_type();
        t == nix::sys::statfs::PROC_SUPER_MAGIC
            || t == nix::sys::statfs::SYSFS_MAGIC
            || t == nix::sys::statfs::CGROUP_SUPER_MAGIC
            || t == nix::sys::statfs::CGROUP2_SUPER_MAGIC
    })
}

/// A reader that gives exactly `left` bytes: a file that shrank while being read is padded
/// with zeros, one that grew is cut, so the tar stays well-formed.
struct Exactly<R> {
    inner: R,
    left: u64,
    ended: bool,
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = if self.ended {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            self.ended = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes trees to a tar, from descriptors.
struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
    /// (dev, inode) of files with several links, to the name first written.
    links: HashMap<(u64, u64), PathBuf>,
    /// Writing an image layer from an overlay upper directory: whiteouts (0/0 character
    /// devices) become `.wh.NAME` files and opaque directories get a `.wh..wh..opq` entry.
    layer: bool,
}

/// How deep a tree may go (a loop of bind mounts would otherwise never end).
const MAX_DEPTH: usize = 512;

impl<W: Write> TarWriter<W> {
    fn header(st: &FileStat, entry: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(entry);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid.into());
        h.set_gid(st.st_gid.into());
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        h
    }

    /// Adds the entry `name` of `dir` as `tar_name`, and everything below it.
    fn add(
        &mut self,
        dir: &File,
        name: &OsStr,
        tar_name: &Path,
        depth: usize,
    ) -> Result<(), ArchiveError> {
        let shown = || tar_name.display().to_string();
        let st = match stat_at(dir, name) {
            Ok(st) => st,
            // Gone since the directory was read: a running container changes its files.
            Err(nix::Error::ENOENT) => return Ok(()),
            Err(e) => return Err(nix_at(shown())(e)),
        };
        let b = &mut self.builder;
        match kind(&st) {
            SFlag::S_IFREG => {
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key) {
                        let mut h = Self::header(&st, tar::EntryType::Link);
                        b.append_link(&mut h, tar_name, first)?;
                        return Ok(());
                    }
                    self.links.insert(key, tar_name.to_owned());
                }
                let file = match step(
                    dir,
                    name,
                    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
                ) {
                    Ok(f) => f,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                    Err(e) => return Err(at(shown())(e)),
                };
                // What was opened is what is written: stat it again through the descriptor.
                let st = nix::sys::stat::fstat(&file).map_err(nix_at(shown()))?;
                if kind(&st) != SFlag::S_IFREG {
                    return Ok(());
                }
                // A layer keeps a file's capabilities (`setcap` in a RUN step).
                if self.layer
                    && let Some(caps) = file_capability(&file)
                {
                    b.append_pax_extensions([(CAPABILITY_RECORD, &caps[..])])?;
                }
                let mut h = Self::header(&st, tar::EntryType::Regular);
                h.set_size(st.st_size as u64);
                let data = Exactly {
                    inner: file,
                    left: st.st_size as u64,
                    ended: false,
                };
                b.append_data(&mut h, tar_name, data)?;
            }
            SFlag::S_IFCHR if self.layer && st.st_rdev == 0 => {
                let mut whiteout = OsString::from(WHITEOUT_PREFIX);
                whiteout.push(name);
                let mut h = Self::header(&st, tar::EntryType::Regular);
                h.set_mode(0o600);
                b.append_data(&mut h, tar_name.with_file_name(whiteout), io::empty())?;
            }
            SFlag::S_IFDIR => {
                let sub = match step(dir, name, libc::O_RDONLY | libc::O_DIRECTORY) {
                    Ok(f) => f,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                    Err(e) => return Err(at(shown())(e)),
                };
                let st = nix::sys::stat::fstat(&sub).map_err(nix_at(shown()))?;
                let mut h = Self::header(&st, tar::EntryType::Directory);
                b.append_data(&mut h, tar_name, io::empty())?;
                if self.layer && is_opaque(&sub) {
                    let mut h = Self::header(&st, tar::EntryType::Regular);
                    h.set_mode(0o600);
                    b.append_data(&mut h, tar_name.join(OPAQUE_MARKER), io::empty())?;
                }
                if depth >= MAX_DEPTH {
                    return Err(ArchiveError::Path {
                        path: shown(),
                        reason: format!("deeper than {MAX_DEPTH} directories"),
                    });
                }
                if is_virtual(&sub) {
                    return Ok(());
                }
                let mut names: Vec<OsString> = list(&sub).map_err(at(shown()))?;
                names.sort();
                for child in names {
                    self.add(&sub, &child, &tar_name.join(&child), depth + 1)?;
                }
            }
            SFlag::S_IFLNK => {
                let target = match nix::fcntl::readlinkat(dir, name) {
                    Ok(t) => t,
                    Err(nix::Error::ENOENT) => return Ok(()),
                    Err(e) => return Err(nix_at(shown())(e)),
                };
                let mut h = Self::header(&st, tar::EntryType::Symlink);
                b.append_link(&mut h, tar_name, Path::new(&target))?;
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                let entry = match kind(&st) {
                    SFlag::S_IFCHR => tar::EntryType::Char,
                    SFlag::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = Self::header(&st, entry);
                h.set_device_major(nix::sys::stat::major(st.st_rdev) as u32)?;
                h.set_device_minor(nix::sys::stat::minor(st.st_rdev) as u32)?;
                b.append_data(&mut h, tar_name, io::empty())?;
            }
            _ => {} // sockets are not files to copy
        }
        Ok(())
    }
}

impl<W: Write> TarWriter<W> {
    /// Adds the entries of directory `path` (links followed inside the root) at the top.
    fn add_children(&mut self, root: &Root, path: &Path) -> Result<(), ArchiveError> {
        let top = root
            .open_at(path, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOTDIR) {
                    ArchiveError::Path {
                        path: path.display().to_string(),
                        reason: "not a directory".into(),
                    }
                } else {
                    at(path)(e)
                }
            })?;
        let mut names = list(&top).map_err(at(path))?;
        names.sort();
        for child in names {
            self.add(&top, &child, Path::new(&child), 1)?;
        }
        Ok(())
    }
}

/// Copies what directory `path` of `from` holds into the root of `to`, owners and modes kept
/// (a new volume filled from its image). Both sides resolve inside their roots.
pub fn copy_dir_contents(from: &Root, path: &Path, to: &Root) -> Result<(), ArchiveError> {
    copy_through_tar(to, Path::new("/"), Owners::Keep, |w| {
        w.add_children(from, path)
    })?;
    // The directory itself: its owner and mode become the destination root's.
    let source = from
        .open_at(path, libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(at(path))?;
    let st = nix::sys::stat::fstat(&source).map_err(nix_at(path))?;
    let dest = to
        .open_at(Path::new("/"), libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(at("/"))?;
    nix::unistd::fchown(&dest, Some(st.st_uid.into()), Some(st.st_gid.into()))?;
    nix::sys::stat::fchmod(&dest, Mode::from_bits_truncate(st.st_mode & 0o7777))?;
    Ok(())
}

/// Copies `src` of `from` into directory `dest_dir` of `to`: a directory's contents, or
/// anything else under `name` (its own name when `None`), with owners as `owners`; the number
/// of entries written. Both sides resolve inside their roots, and a link is copied as a link.
pub fn copy_between(
    from: &Root,
    src: &Path,
    to: &Root,
    dest_dir: &Path,
    name: Option<&OsStr>,
    owners: Owners,
) -> Result<u64, ArchiveError> {
    let (dir, own_name) = parent_of(from, src)?;
    let st = stat_at(&dir, &own_name).map_err(nix_at(src))?;
    copy_through_tar(to, dest_dir, owners, |w| {
        if kind(&st) == SFlag::S_IFDIR {
            w.add_children(from, src)
        } else {
            let tar_name = name.unwrap_or(&own_name);
            w.add(&dir, &own_name, Path::new(tar_name), 0)
        }
    })
}

/// Writes what `produce` adds to a tar on one thread while `extract_tar` unpacks it into
/// `dest_dir` of `to` on this one; the number of entries unpacked.
fn copy_through_tar(
    to: &Root,
    dest_dir: &Path,
    owners: Owners,
    produce: impl FnOnce(&mut TarWriter<io::BufWriter<io::PipeWriter>>) -> Result<(), ArchiveError>
    + Send,
) -> Result<u64, ArchiveError> {
    let (reader, writer) = io::pipe()?;
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || -> Result<(), ArchiveError> {
            let mut w = TarWriter {
                builder: tar::Builder::new(io::BufWriter::with_capacity(1 << 20, writer)),
                links: HashMap::new(),
                layer: false,
            };
            produce(&mut w)?;
            w.builder.into_inner()?.flush()?;
            Ok(())
        });
        let consumed = extract_tar(to, dest_dir, reader, owners);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(ArchiveError::Tar("the copying thread failed".into())));
        match (produced, consumed) {
            // The writer's broken pipe is the consequence when the reader failed first.
            (Err(ArchiveError::Io(e)), Err(reason)) if e.kind() == io::ErrorKind::BrokenPipe => {
                Err(reason)
            }
            (Err(e), _) => Err(e),
            (Ok(()), consumed) => consumed,
        }
    })
}

/// The names in a directory (without `.` and `..`).
fn list(dir: &File) -> io::Result<Vec<OsString>> {
    let fd: OwnedFd = dir.as_fd().try_clone_to_owned()?;
    let listing = nix::dir::Dir::from_fd(fd).map_err(io::Error::from)?;
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry.map_err(io::Error::from)?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name != "." && name != ".." {
            names.push(name.to_os_string());
        }
    }
    Ok(names)
}

/// Writes `path` of the container (and, for a directory, all below it) to `out` as a tar whose
/// top entry is the path's own name (`.` contents for `/`), as `docker cp` sends it.
pub fn write_tar(root: &Root, path: &Path, out: impl Write) -> Result<(), ArchiveError> {
    let (dir, name) = parent_of(root, path)?;
    let mut w = TarWriter {
        builder: tar::Builder::new(out),
        links: HashMap::new(),
        layer: false,
    };
    if name == "." {
        // The whole root: its entries at the top of the archive.
        w.add_children(root, Path::new("/"))?;
    } else {
        stat_at(&dir, &name).map_err(nix_at(path))?;
        w.add(&dir, &name, Path::new(&name), 0)?;
    }
    w.builder.finish()?;
    Ok(())
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// The PAX record of a file's capabilities (what image unpacking sets back).
const CAPABILITY_RECORD: &str = "SCHILY.xattr.security.capability";

/// A file's `security.capability` attribute, if it has one.
fn file_capability(file: &File) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut value = vec![0u8; 64];
    // SAFETY: the descriptor is open for the call and the buffer is valid for its length.
    let n = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            c"security.capability".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    (n > 0).then(|| {
        value.truncate(n as usize);
        value
    })
}

/// Whether overlayfs marked the directory opaque (what was below it in the image is hidden).
fn is_opaque(dir: &File) -> bool {
    use std::os::fd::AsRawFd;
    let mut value = [0u8; 1];
    // SAFETY: the descriptor is open for the call and the buffer is valid for its length.
    let n = unsafe {
        libc::fgetxattr(
            dir.as_raw_fd(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// The directories the runtime mounts over at the top of a root filesystem, and the files it
/// mounts over in `/etc`: when one is empty in an upper directory, the runtime made it, not
/// the container.
const MOUNT_DIRS: [&str; 3] = ["proc", "sys", "dev"];
const MOUNT_FILES_IN_ETC: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// Writes the overlay upper directory `upper` as an image layer (an OCI layer tar): its
/// whiteouts and opaque directories in the OCI form, and without the empty mount points the
/// runtime left. Every step is taken from a descriptor, never through a symlink, so a running
/// container cannot point the walk outside its layer.
pub fn write_layer(upper: &Path, out: impl Write) -> Result<(), ArchiveError> {
    let top = File::open(upper).map_err(at(upper))?;
    let mut w = TarWriter {
        builder: tar::Builder::new(out),
        links: HashMap::new(),
        layer: true,
    };
    let mut names = list(&top).map_err(at(upper))?;
    names.sort();
    for name in names {
        if name == "etc" {
            w.add_except(&top, &name, &MOUNT_FILES_IN_ETC)?;
        } else if !(MOUNT_DIRS.iter().any(|d| name == *d) && empty_dir(&top, &name)) {
            w.add(&top, &name, Path::new(&name), 1)?;
        }
    }
    w.builder.into_inner()?.flush()?;
    Ok(())
}

/// Whether `name` in `dir` is a directory with nothing in it.
fn empty_dir(dir: &File, name: &OsStr) -> bool {
    step(dir, name, libc::O_RDONLY | libc::O_DIRECTORY)
        .ok()
        .and_then(|d| list(&d).ok())
        .is_some_and(|names| names.is_empty())
}

impl<W: Write> TarWriter<W> {
    /// Adds directory `name` of `dir` with its contents, leaving out the empty regular files
    /// among `except` (the runtime's mount points); a directory left with nothing is left out.
    fn add_except(
        &mut self,
        dir: &File,
        name: &OsStr,
        except: &[&str],
    ) -> Result<(), ArchiveError> {
        let sub = match step(dir, name, libc::O_RDONLY | libc::O_DIRECTORY) {
            Ok(f) => f,
            Err(_) => return self.add(dir, name, Path::new(name), 1),
        };
        let mut children = list(&sub).map_err(at(name))?;
        children.sort();
        children.retain(|c| {
            !(except.iter().any(|e| c == *e)
                && stat_at(&sub, c).is_ok_and(|st| kind(&st) == SFlag::S_IFREG && st.st_size == 0))
        });
        if children.is_empty() && !is_opaque(&sub) {
            return Ok(());
        }
        let st = nix::sys::stat::fstat(&sub).map_err(nix_at(name))?;
        let mut h = Self::header(&st, tar::EntryType::Directory);
        self.builder
            .append_data(&mut h, Path::new(name), io::empty())?;
        if is_opaque(&sub) {
            let mut h = Self::header(&st, tar::EntryType::Regular);
            h.set_mode(0o600);
            self.builder
                .append_data(&mut h, Path::new(name).join(OPAQUE_MARKER), io::empty())?;
        }
        for child in children {
            self.add(&sub, &child, &Path::new(name).join(&child), 2)?;
        }
        Ok(())
    }
}

/// A tar entry's path as relative components; `..`, absolute paths and empty names are refused.
fn entry_path(raw: &Path) -> Result<PathBuf, ArchiveError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => {
                return Err(ArchiveError::Tar(format!(
                    "entry {} leaves the destination: paths must be relative, without '..'",
                    raw.display()
                )));
            }
        }
    }
    Ok(out)
}

/// Whether copied files keep the archive's owners (`cp -a`) or become root's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    Keep,
    Root,
    /// Every entry gets this uid and gid (a build's `COPY --chown`).
    Set(u32, u32),
}

/// Unpacks `input` into the directory `dest` of the container. Every entry is created from a
/// descriptor of its parent, resolved inside the root, and never through a link: an entry
/// named through a symlink lands where that link points *inside* the container.
pub fn extract_tar(
    root: &Root,
    dest: &Path,
    input: impl Read,
    owners: Owners,
) -> Result<u64, ArchiveError> {
    // The destination may be a link to a directory (inside the container, like every link).
    match root.open_at(dest, libc::O_PATH | libc::O_DIRECTORY) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(ArchiveError::Path {
                path: dest.display().to_string(),
                reason: "not a directory".into(),
            });
        }
        Err(e) => return Err(at(dest)(e)),
    }
    let mut archive = tar::Archive::new(input);
    let mut count = 0;
    // Directory times are set last: writing into a directory changes its mtime.
    let mut dir_times = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| ArchiveError::Tar(e.to_string()))?
    {
        let mut entry = entry.map_err(|e| ArchiveError::Tar(e.to_string()))?;
        let raw = entry
            .path()
            .map_err(|e| ArchiveError::Tar(e.to_string()))?
            .into_owned();
        let rel = entry_path(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        let (parent, name) = match parent_of(root, &target) {
            // An archive need not list the directories above its files: tar makes them.
            Err(ArchiveError::NotFound { .. }) => {
                let above = target.parent().unwrap_or(Path::new("/"));
                root.resolve(above, inroot::Make::Dir).map_err(at(above))?;
                parent_of(root, &target)?
            }
            other => other?,
        };
        let h = entry.header();
        let mode = Mode::from_bits_truncate(h.mode().unwrap_or(0o644) & 0o7777);
        let (uid, gid) = match owners {
            Owners::Keep => (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32),
            Owners::Root => (0, 0),
            Owners::Set(uid, gid) => (uid, gid),
        };
        let mtime = h.mtime().unwrap_or(0) as i64;
        let shown = target.display().to_string();
        let existing = stat_at(&parent, &name).ok();
        let replace = |parent: &File| -> Result<(), ArchiveError> {
            // Whatever is in the way (but a directory) goes, as tar does.
            match existing.as_ref().map(kind) {
                Some(SFlag::S_IFDIR) | None => Ok(()),
                Some(_) => nix::unistd::unlinkat(
                    parent,
                    name.as_os_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                )
                .map_err(nix_at(&shown)),
            }
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                if existing.as_ref().map(kind) != Some(SFlag::S_IFDIR) {
                    replace(&parent)?;
                    nix::sys::stat::mkdirat(&parent, name.as_os_str(), mode)
                        .map_err(nix_at(&shown))?;
                }
                let dir =
                    step(&parent, &name, libc::O_RDONLY | libc::O_DIRECTORY).map_err(at(&shown))?;
                nix::sys::stat::fchmod(&dir, mode).map_err(nix_at(&shown))?;
                nix::unistd::fchown(&dir, Some(uid.into()), Some(gid.into()))
                    .map_err(nix_at(&shown))?;
                dir_times.push((dir, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if existing.as_ref().map(kind) == Some(SFlag::S_IFDIR) {
                    return Err(ArchiveError::Path {
                        path: shown,
                        reason: "a directory is in the way of a file".into(),
                    });
                }
                replace(&parent)?;
                let mut file = inroot::openat2(
                    &parent,
                    Path::new(&name),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                    ONE_STEP,
                )
                .map_err(at(&shown))?;
                io::copy(&mut entry, &mut file).map_err(at(&shown))?;
                nix::unistd::fchown(&file, Some(uid.into()), Some(gid.into()))
                    .map_err(nix_at(&shown))?;
                // After chown, which clears set-id bits.
                nix::sys::stat::fchmod(&file, mode).map_err(nix_at(&shown))?;
                set_times(&file, mtime).map_err(at(&shown))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| ArchiveError::Tar(e.to_string()))?
                    .ok_or_else(|| ArchiveError::Tar(format!("symlink {shown} has no target")))?
                    .into_owned();
                if existing.as_ref().map(kind) == Some(SFlag::S_IFDIR) {
                    return Err(ArchiveError::Path {
                        path: shown,
                        reason: "a directory is in the way of a symlink".into(),
                    });
                }
                replace(&parent)?;
                nix::unistd::symlinkat(&link, &parent, name.as_os_str()).map_err(nix_at(&shown))?;
                nix::unistd::fchownat(
                    &parent,
                    name.as_os_str(),
                    Some(uid.into()),
                    Some(gid.into()),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(nix_at(&shown))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| ArchiveError::Tar(e.to_string()))?
                    .ok_or_else(|| ArchiveError::Tar(format!("hard link {shown} has no target")))?
                    .into_owned();
                let source = dest.join(entry_path(&link)?);
                let (source_dir, source_name) = parent_of(root, &source)?;
                let source_file = step(&source_dir, &source_name, libc::O_PATH)
                    .map_err(at(source.display().to_string()))?;
                let st = nix::sys::stat::fstat(&source_file).map_err(nix_at(&shown))?;
                if kind(&st) != SFlag::S_IFREG {
                    return Err(ArchiveError::Tar(format!(
                        "hard link {shown} must point at a file the archive made"
                    )));
                }
                replace(&parent)?;
                nix::unistd::linkat(
                    &source_file,
                    "",
                    &parent,
                    name.as_os_str(),
                    AtFlags::AT_EMPTY_PATH,
                )
                .map_err(nix_at(&shown))?;
            }
            tar::EntryType::Fifo => {
                replace(&parent)?;
                nix::sys::stat::mknodat(&parent, name.as_os_str(), SFlag::S_IFIFO, mode, 0)
                    .map_err(nix_at(&shown))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(ArchiveError::Tar(format!(
                    "{shown} is a device file: devices are not copied into containers"
                )));
            }
            // Extended headers are the tar crate's to read; other types carry no file.
            _ => continue,
        }
        count += 1;
    }
    for (dir, mtime) in dir_times.iter().rev() {
        let _ = set_times(dir, *mtime);
    }
    Ok(count)
}

fn set_times(file: &File, mtime: i64) -> io::Result<()> {
    let t = nix::sys::time::TimeSpec::new(mtime, 0);
    nix::sys::stat::futimens(file, &t, &t).map_err(io::Error::from)
}

/// One change of a container's filesystem against its image, as `docker diff` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Change {
    pub path: String,
    /// `C` changed, `A` added, `D` deleted.
    pub kind: char,
}

/// The changes of the writable layer `upper` over the image layers `lowers` (top first).
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, ArchiveError> {
    let upper_dir = File::open(upper).map_err(at(upper))?;
    let lower_dirs: Vec<File> = lowers
        .iter()
        .map(|l| File::open(l).map_err(at(l)))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    walk_changes(&upper_dir, Path::new("/"), &lower_dirs, &mut out, 0)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn in_lowers(lowers: &[File], path: &Path) -> bool {
    let rel = path.strip_prefix("/").unwrap_or(path);
    lowers
        .iter()
        .any(|l| inroot::openat2(l, rel, libc::O_PATH | libc::O_NOFOLLOW, 0, ONE_STEP).is_ok())
}

fn walk_changes(
    dir: &File,
    at_path: &Path,
    lowers: &[File],
    out: &mut Vec<Change>,
    depth: usize,
) -> Result<(), ArchiveError> {
    if depth > MAX_DEPTH {
        return Err(ArchiveError::Path {
            path: at_path.display().to_string(),
            reason: format!("deeper than {MAX_DEPTH} directories"),
        });
    }
    for name in list(dir).map_err(at(at_path))? {
        let path = at_path.join(&name);
        let Ok(st) = stat_at(dir, &name) else {
            continue;
        };
        let shown = path.display().to_string();
        // A whiteout: a 0/0 character device.
        if kind(&st) == SFlag::S_IFCHR && st.st_rdev == 0 {
            out.push(Change {
                path: shown,
                kind: 'D',
            });
            continue;
        }
        let existed = in_lowers(lowers, &path);
        out.push(Change {
            path: shown,
            kind: if existed { 'C' } else { 'A' },
        });
        if kind(&st) == SFlag::S_IFDIR
            && let Ok(sub) = step(dir, &name, libc::O_RDONLY | libc::O_DIRECTORY)
        {
            walk_changes(&sub, &path, lowers, out, depth + 1)?;
        }
    }
    Ok(())
}

impl From<nix::Error> for ArchiveError {
    fn from(e: nix::Error) -> Self {
        ArchiveError::Io(io::Error::from(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("etc/conf.d")).unwrap();
        std::fs::write(p.join("etc/hostname"), "box\n").unwrap();
        std::fs::write(p.join("etc/conf.d/a"), "a").unwrap();
        std::fs::hard_link(p.join("etc/conf.d/a"), p.join("etc/conf.d/b")).unwrap();
        std::os::unix::fs::symlink("/", p.join("etc/up")).unwrap();
        d
    }

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        tar::Archive::new(tar_bytes)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn a_tree_goes_out_and_comes_back_in() {
        let src = tree();
        let root = Root::open(src.path()).unwrap();
        let mut bytes = Vec::new();
        write_tar(&root, Path::new("/etc"), &mut bytes).unwrap();
        let n = names(&bytes);
        assert_eq!(n[0], "etc");
        assert!(n.contains(&"etc/conf.d/b".to_owned()) && n.contains(&"etc/up".to_owned()));
        let st = stat(&root, Path::new("/etc/up")).unwrap();
        assert_eq!(st.link_target.as_deref(), Some("/"));
        assert!(stat(&root, Path::new("/")).unwrap().is_dir);
        let err = stat(&root, Path::new("/nope")).unwrap_err().to_string();
        assert_eq!(err, "/nope: no such file or directory in the container");

        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir(dst.path().join("in")).unwrap();
        let droot = Root::open(dst.path()).unwrap();
        extract_tar(&droot, Path::new("/in"), &bytes[..], Owners::Root).unwrap();
        let copied = dst.path().join("in/etc");
        assert_eq!(
            std::fs::read_to_string(copied.join("hostname")).unwrap(),
            "box\n"
        );
        assert_eq!(
            std::fs::read_link(copied.join("up")).unwrap(),
            Path::new("/")
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(copied.join("conf.d/a")).unwrap().ino(),
            std::fs::metadata(copied.join("conf.d/b")).unwrap().ino(),
            "hard links stay links"
        );
        // Again: files are replaced, directories kept.
        extract_tar(&droot, Path::new("/in"), &bytes[..], Owners::Root).unwrap();
    }

    #[test]
    fn symlinks_in_the_container_never_lead_out_of_it() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), "host secret").unwrap();
        let ctr = tempfile::tempdir().unwrap();
        // The container points a directory at the host's (as absolute and as relative links).
        std::os::unix::fs::symlink(host.path(), ctr.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../..", ctr.path().join("rel")).unwrap();
        let root = Root::open(ctr.path()).unwrap();
        for through in ["/abs/secret", "/rel/secret"] {
            let path = if through.starts_with("/abs") {
                format!("{}{}", "/abs", host.path().join("secret").display())
            } else {
                format!("/rel{}", host.path().join("secret").display())
            };
            assert!(
                matches!(
                    stat(&root, Path::new(&path)),
                    Err(ArchiveError::NotFound { .. })
                ),
                "{path} must resolve inside the container"
            );
            let mut out = Vec::new();
            assert!(write_tar(&root, Path::new(&path), &mut out).is_err());
        }
        // Writing through the link lands inside the container.
        std::fs::create_dir_all(ctr.path().join(host.path().strip_prefix("/").unwrap())).unwrap();
        let mut tar_bytes = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        tar_bytes
            .append_data(&mut h, "secret", &b"owned"[..])
            .unwrap();
        let tar_bytes = tar_bytes.into_inner().unwrap();
        extract_tar(&root, Path::new("/abs"), &tar_bytes[..], Owners::Root).unwrap();
        assert_eq!(
            std::fs::read_to_string(host.path().join("secret")).unwrap(),
            "host secret",
            "the host file is untouched"
        );
        let inside = ctr
            .path()
            .join(host.path().strip_prefix("/").unwrap())
            .join("secret");
        assert_eq!(std::fs::read_to_string(inside).unwrap(), "owned");
    }

    #[test]
    fn hostile_archives_are_refused_by_name() {
        let ctr = tempfile::tempdir().unwrap();
        let root = Root::open(ctr.path()).unwrap();
        for bad in ["../escape", "a/../../escape"] {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            // The tar crate refuses to write '..' names itself; put it in the raw header.
            h.as_gnu_mut().unwrap().name[..bad.len()].copy_from_slice(bad.as_bytes());
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
            let bytes = b.into_inner().unwrap();
            let err = extract_tar(&root, Path::new("/"), &bytes[..], Owners::Root)
                .unwrap_err()
                .to_string();
            assert!(err.contains("leaves the destination"), "{bad}: {err}");
        }
        assert!(!ctr.path().parent().unwrap().join("escape").exists());
        std::fs::write(ctr.path().join("file"), "").unwrap();
        let err = extract_tar(&root, Path::new("/file"), &b""[..], Owners::Root)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "/file: not a directory");
    }

    #[test]
    fn a_directory_is_copied_into_another_root() {
        let src = tree();
        let dst = tempfile::tempdir().unwrap();
        let from = Root::open(src.path()).unwrap();
        let to = Root::open(dst.path()).unwrap();
        copy_dir_contents(&from, Path::new("/etc"), &to).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("hostname")).unwrap(),
            "box\n"
        );
        assert_eq!(
            std::fs::read_to_string(dst.path().join("conf.d/b")).unwrap(),
            "a"
        );
        assert!(matches!(
            copy_dir_contents(&from, Path::new("/none"), &to),
            Err(ArchiveError::NotFound { .. })
        ));
        let err = copy_dir_contents(&from, Path::new("/etc/hostname"), &to).unwrap_err();
        assert_eq!(err.to_string(), "/etc/hostname: not a directory");
    }

    #[test]
    fn changes_list_added_changed_and_deleted() {
        let lower = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lower.path().join("etc")).unwrap();
        std::fs::write(lower.path().join("etc/passwd"), "").unwrap();
        std::fs::write(lower.path().join("etc/group"), "").unwrap();
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(upper.path().join("etc")).unwrap();
        std::fs::write(upper.path().join("etc/passwd"), "x").unwrap();
        std::fs::write(upper.path().join("etc/new"), "x").unwrap();
        nix::sys::stat::mknod(
            &upper.path().join("etc/group"),
            SFlag::S_IFCHR,
            Mode::empty(),
            0,
        )
        .unwrap();
        let got = changes(upper.path(), &[lower.path().to_owned()]).unwrap();
        let got: Vec<String> = got
            .iter()
            .map(|c| format!("{} {}", c.kind, c.path))
            .collect();
        assert_eq!(
            got,
            ["C /etc", "D /etc/group", "A /etc/new", "C /etc/passwd"]
        );
    }
}
