//! Opening and creating paths inside a container's root filesystem without ever leaving it.
//!
//! Every path is resolved by the kernel with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! relative to a descriptor of the root, so a symlink (even `../../etc` or `/etc`) resolves
//! inside the root. Mounts then target `/proc/self/fd/N` of the resolved descriptor, so what was
//! checked is what gets mounted on (CVE-2021-30465: no window to swap a path for a symlink).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A directory descriptor that paths are resolved under.
pub struct Root {
    dir: File,
    path: PathBuf,
}

/// What to make when a path is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Make {
    Nothing,
    Dir,
    File,
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `openat2(dir, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
pub fn openat2_in_root(dir: &File, path: &Path, flags: libc::c_int, mode: u32) -> io::Result<File> {
    openat2(
        dir,
        path,
        flags,
        mode,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// `openat2(dir, path, flags)` with the given `RESOLVE_*` flags, retried on EAGAIN/EINTR.
pub(crate) fn openat2(
    dir: &File,
    path: &Path,
    flags: libc::c_int,
    mode: u32,
    resolve: u64,
) -> io::Result<File> {
    let c = cstring(path)?;
    // SAFETY: open_how is plain data; an all-zero value is valid and every field is then set.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & libc::O_CREAT != 0 {
        mode as u64
    } else {
        0
    };
    how.resolve = resolve;
    loop {
        // SAFETY: the path is a valid NUL-terminated string and `how` outlives the call; the
        // kernel returns a new descriptor that we alone own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: fd is a fresh descriptor owned by nobody else.
            return Ok(unsafe { File::from_raw_fd(fd as i32) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EAGAIN) && err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

impl Root {
    /// Opens `path` as the root to resolve under.
    pub fn open(path: &Path) -> io::Result<Root> {
        let c = cstring(path)?;
        // SAFETY: valid C string; the returned descriptor is owned by the File.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Root {
            // SAFETY: fd is a fresh descriptor.
            dir: unsafe { File::from_raw_fd(fd) },
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path` (absolute inside the container, or relative to its root) without its leading `/`.
    fn relative(path: &Path) -> PathBuf {
        path.components()
            .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
            .collect()
    }

    /// Opens `path` inside the root with `flags`.
    pub fn open_at(&self, path: &Path, flags: libc::c_int) -> io::Result<File> {
        let rel = Self::relative(path);
        if rel.as_os_str().is_empty() {
            return openat2_in_root(&self.dir, Path::new("."), flags, 0);
        }
        openat2_in_root(&self.dir, &rel, flags, 0)
    }

    /// Resolves `path` inside the root to an `O_PATH` descriptor, making it (and its parent
    /// directories) when missing.
    pub fn resolve(&self, path: &Path, make: Make) -> io::Result<File> {
        self.resolve_depth(path, make, 0)
    }

    fn resolve_depth(&self, path: &Path, make: Make, depth: u32) -> io::Result<File> {
        if depth > 40 {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let rel = Self::relative(path);
        match self.open_at(&rel, libc::O_PATH) {
            Ok(f) => return Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && make != Make::Nothing => {}
            Err(e) => return Err(e),
        }
        let components = rel
            .components()
            .map(|c| match c {
                Component::Normal(name) => Ok(name),
                _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            })
            .collect::<io::Result<Vec<_>>>()?;
        // Find the deepest ancestor that exists (usually the parent), then make the rest below
        // it; every step is resolved in the root again, so a link met on the way stays inside.
        let mut made = components.len() - 1;
        let mut parent = loop {
            let prefix: PathBuf = components[..made].iter().collect();
            match self.open_at(&prefix, libc::O_PATH | libc::O_DIRECTORY) {
                Ok(dir) => break dir,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && made > 0 => made -= 1,
                Err(e) => return Err(e),
            }
        };
        for (i, name) in components.iter().enumerate().skip(made) {
            let last = i + 1 == components.len();
            let c = CString::new(name.as_bytes())
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            let rc = if last && make == Make::File {
                // SAFETY: parent is a directory descriptor; c is a valid name; we close the fd.
                let fd = unsafe {
                    libc::openat(
                        parent.as_raw_fd(),
                        c.as_ptr(),
                        libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_WRONLY
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o644,
                    )
                };
                if fd >= 0 {
                    // SAFETY: fd is ours to close.
                    unsafe { libc::close(fd) };
                    0
                } else {
                    -1
                }
            } else {
                // SAFETY: as above.
                unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o755) }
            };
            if rc != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EEXIST) {
                    return Err(err);
                }
                // A dangling symlink is in the way: make what it points to, inside the root.
                if let Ok(target) = nix::fcntl::readlinkat(&parent, *name) {
                    let target = PathBuf::from(target);
                    let inside = if target.is_absolute() {
                        target
                    } else {
                        Path::new("/")
                            .join(components[..i].iter().collect::<PathBuf>())
                            .join(target)
                    };
                    let make_target = if last { make } else { Make::Dir };
                    self.resolve_depth(&inside, make_target, depth + 1)?;
                }
            }
            if !last {
                let prefix: PathBuf = components[..=i].iter().collect();
                parent = self.open_at(&prefix, libc::O_PATH | libc::O_DIRECTORY)?;
            }
        }
        self.open_at(&rel, libc::O_PATH)
    }
}

impl Root {
    /// The symlink through which `path` would climb above the root with `..`, if any.
    ///
    /// Resolution inside the root is always contained; this finds the paths that *try* to leave
    /// (a relative link such as `../../../etc`), so they can be refused with a clear message
    /// rather than quietly remapped. Absolute links are the container's own view of its root
    /// (`/var/run -> /run`) and are fine.
    pub fn escaping_link(&self, path: &Path) -> io::Result<Option<PathBuf>> {
        use std::collections::VecDeque;
        use std::ffi::OsString;
        // Fast path: a path with no symlink and no `..` above the root cannot climb out. One
        // openat2 tells; ENOENT/ENOTDIR mean what exists of the path has neither.
        let rel = Self::relative(path);
        if !rel.as_os_str().is_empty() {
            let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
            match openat2(&self.dir, &rel, libc::O_PATH, 0, resolve) {
                Ok(_) => return Ok(None),
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) => return Ok(None),
                    Some(libc::ELOOP) | Some(libc::EXDEV) => {}
                    _ => return Err(e),
                },
            }
        }
        let mut resolved: Vec<OsString> = Vec::new();
        let mut pending: VecDeque<(OsString, Option<PathBuf>)> = Self::relative(path)
            .components()
            .map(|c| (c.as_os_str().to_owned(), None))
            .collect();
        let mut links = 0;
        while let Some((name, via)) = pending.pop_front() {
            if name == "." || name.is_empty() {
                continue;
            }
            if name == ".." {
                if resolved.pop().is_none() {
                    return Ok(Some(via.unwrap_or_else(|| path.to_owned())));
                }
                continue;
            }
            let parent: PathBuf = resolved.iter().collect();
            let dir = self.open_at(&parent, libc::O_PATH | libc::O_DIRECTORY)?;
            match nix::fcntl::readlinkat(&dir, name.as_os_str()) {
                Ok(target) => {
                    links += 1;
                    if links > 40 {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let link = Path::new("/").join(&parent).join(&name);
                    let target = PathBuf::from(target);
                    if target.is_absolute() {
                        resolved.clear();
                    }
                    for c in target.components().rev() {
                        if !matches!(c, Component::RootDir) {
                            pending.push_front((c.as_os_str().to_owned(), Some(link.clone())));
                        }
                    }
                }
                Err(nix::Error::EINVAL) => resolved.push(name),
                Err(nix::Error::ENOENT) | Err(nix::Error::ENOTDIR) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

/// The path through which the kernel reaches a descriptor's file, for `mount(2)` targets.
pub fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir_all(root_path.join("etc")).unwrap();
        std::fs::write(root_path.join("etc/passwd"), "inside").unwrap();
        std::os::unix::fs::symlink("/etc", root_path.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc", root_path.join("up")).unwrap();
        let root = Root::open(&root_path).unwrap();
        for link in ["abs/passwd", "up/passwd", "/up/passwd"] {
            let f = root.open_at(Path::new(link), libc::O_RDONLY).unwrap();
            let text = std::io::read_to_string(f).unwrap();
            assert_eq!(text, "inside", "{link} escaped the root");
        }
    }

    #[test]
    fn links_that_climb_out_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("root");
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::os::unix::fs::symlink("../../../../outside", r.join("a/up")).unwrap();
        std::os::unix::fs::symlink("/a/b", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../a/b", r.join("a/b/rel")).unwrap();
        let root = Root::open(&r).unwrap();
        assert_eq!(
            root.escaping_link(Path::new("/a/up/x")).unwrap(),
            Some(PathBuf::from("/a/up"))
        );
        assert_eq!(
            root.escaping_link(Path::new("/abs/c")).unwrap(),
            None,
            "absolute links stay inside"
        );
        assert_eq!(root.escaping_link(Path::new("/a/b/rel/c")).unwrap(), None);
        assert_eq!(root.escaping_link(Path::new("/not/there")).unwrap(), None);
    }

    #[test]
    fn missing_paths_are_made_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root_path).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // A symlink that points out of the root: making through it must stay inside.
        std::os::unix::fs::symlink(&outside, root_path.join("evil")).unwrap();
        let root = Root::open(&root_path).unwrap();
        root.resolve(Path::new("/evil/made/here"), Make::Dir)
            .unwrap();
        root.resolve(Path::new("/a/b/file"), Make::File).unwrap();
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "nothing was made outside"
        );
        assert!(
            root_path
                .join(outside.strip_prefix("/").unwrap())
                .join("made/here")
                .is_dir()
        );
        assert!(root_path.join("a/b/file").is_file());
        let err = root.resolve(Path::new("/nope"), Make::Nothing).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
}
