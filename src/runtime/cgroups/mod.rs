//! Control groups: which hierarchy the host has, and the v1 and v2 backends behind one small
//! trait ([`Backend`]), picked once per container by [`Cgroup::open`].
//!
//! The hierarchy is decided once, by `statfs` of the cgroup root, the way runc and youki do it:
//! a cgroup2 file system there is the unified (v2) hierarchy; a tmpfs there holds v1 controller
//! mounts, possibly with a v2 hierarchy beside them under `unified/` ("hybrid").
//! The root is a parameter so that the logic can be tested against any directory.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
use oci_spec::runtime::LinuxResources;
use serde::Serialize;

mod v1;
mod v2;

/// The default mount point of the cgroup file systems.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup hierarchy a host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Pure cgroup v2: one unified hierarchy mounted at the root.
    Unified,
    /// cgroup v1 controllers mounted under the root, with a v2 hierarchy under `unified/`.
    Hybrid,
    /// cgroup v1 only.
    Legacy,
}

impl CgroupMode {
    /// Decides the mode from the file system types at `root` and `root/unified`.
    pub fn detect(root: &Path) -> Result<CgroupMode, CgroupError> {
        let stat = statfs(root).map_err(|source| CgroupError::Statfs {
            path: root.to_owned(),
            source,
        })?;
        let kind = stat.filesystem_type();
        if kind == CGROUP2_SUPER_MAGIC {
            return Ok(CgroupMode::Unified);
        }
        if kind != TMPFS_MAGIC {
            return Err(CgroupError::UnknownFilesystem {
                path: root.to_owned(),
                magic: kind.0 as i64,
            });
        }
        let unified = root.join("unified");
        match statfs(&unified) {
            Ok(s) if s.filesystem_type() == CGROUP2_SUPER_MAGIC => Ok(CgroupMode::Hybrid),
            _ => Ok(CgroupMode::Legacy),
        }
    }

    /// The cgroup version the runtime manages containers with: 2 on a unified host, else 1.
    pub fn version(self) -> u8 {
        match self {
            CgroupMode::Unified => 2,
            CgroupMode::Hybrid | CgroupMode::Legacy => 1,
        }
    }
}

impl fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupMode::Unified => "unified",
            CgroupMode::Hybrid => "hybrid",
            CgroupMode::Legacy => "legacy",
        })
    }
}

/// What a container's cgroup reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    /// The highest memory use seen, where the kernel tracks it.
    pub memory_max_usage_bytes: Option<u64>,
    /// The memory limit, `None` for unlimited.
    pub memory_limit_bytes: Option<u64>,
    pub pids_current: u64,
    pub pids_limit: Option<u64>,
    /// How many times the OOM killer killed a process of this cgroup.
    pub oom_kills: u64,
    /// Bytes read from and written to block devices.
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
}

/// The operations every cgroup backend offers.
pub trait Backend {
    /// Makes the cgroup (and its parents) if missing.
    fn create(&self) -> Result<(), CgroupError>;
    /// Writes the spec's resource limits.
    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError>;
    /// Moves a process into the cgroup.
    fn add_task(&self, pid: i32) -> Result<(), CgroupError>;
    /// The processes in the cgroup.
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;
    /// Freezes (`true`) or thaws the cgroup, waiting until the kernel has done it.
    fn freeze(&self, frozen: bool) -> Result<(), CgroupError>;
    fn stats(&self) -> Result<Stats, CgroupError>;
    /// Removes the (empty) cgroup.
    fn remove(&self) -> Result<(), CgroupError>;
}

/// A container's cgroup on whichever hierarchy the host has.
pub enum Cgroup {
    V1(v1::V1),
    V2(v2::V2),
}

impl Cgroup {
    /// The cgroup at `path` (e.g. `/wharf/abc`) under `root` (normally `/sys/fs/cgroup`).
    pub fn open(root: &Path, path: &str) -> Result<Cgroup, CgroupError> {
        let relative = path.trim_start_matches('/');
        if relative.is_empty() || relative.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(CgroupError::BadPath(path.to_owned()));
        }
        Ok(match CgroupMode::detect(root)? {
            CgroupMode::Unified => Cgroup::V2(v2::V2::new(root, relative)),
            CgroupMode::Hybrid | CgroupMode::Legacy => Cgroup::V1(v1::V1::new(root, relative)),
        })
    }

    fn backend(&self) -> &dyn Backend {
        match self {
            Cgroup::V1(b) => b,
            Cgroup::V2(b) => b,
        }
    }

    pub fn version(&self) -> u8 {
        match self {
            Cgroup::V1(_) => 1,
            Cgroup::V2(_) => 2,
        }
    }

    pub fn create(&self) -> Result<(), CgroupError> {
        self.backend().create()
    }
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        self.backend().apply(resources)
    }
    pub fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        self.backend().add_task(pid)
    }
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        self.backend().pids()
    }
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        self.backend().freeze(frozen)
    }
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        self.backend().stats()
    }
    pub fn remove(&self) -> Result<(), CgroupError> {
        self.backend().remove()
    }

    /// How a new process can enter this cgroup without the global threadgroup lock (whose
    /// write side waits for an RCU grace period, milliseconds):
    /// - v2: `clone3(CLONE_INTO_CGROUP)` with a descriptor of the directory;
    /// - v1: the (single-threaded) process writes `0` to each hierarchy's `tasks` file itself.
    pub fn entry(&self) -> Result<Entry, CgroupError> {
        match self {
            Cgroup::V2(b) => Ok(Entry::CloneInto(b.open_dir()?)),
            Cgroup::V1(b) => Ok(Entry::SelfJoin(b.task_files())),
        }
    }
}

/// See [`Cgroup::entry`].
pub enum Entry {
    CloneInto(std::fs::File),
    SelfJoin(Vec<PathBuf>),
}

/// Moves the calling single-threaded process into the cgroups of these `tasks` files, whose
/// absolute paths are resolved from `root`: a descriptor of the host's `/` opened before the
/// caller entered other namespaces (a joined mount namespace need not show the host's cgroup
/// hierarchies).
pub fn join_self(root: &std::fs::File, task_files: &[PathBuf]) -> Result<(), CgroupError> {
    use std::io::Write;
    for path in task_files {
        let failed = |source: std::io::Error| CgroupError::Write {
            path: path.clone(),
            value: "0".into(),
            source,
        };
        let relative = path.strip_prefix("/").unwrap_or(path);
        let mut file = nix::fcntl::openat(
            root,
            relative,
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map(std::fs::File::from)
        .map_err(|e| failed(e.into()))?;
        file.write_all(b"0").map_err(failed)?;
    }
    Ok(())
}

/// Writes `value` to a cgroup file, naming the file and value on failure.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

pub(crate) fn read_file(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a number; `max` (and v1's huge "unlimited" values) give `None`.
pub(crate) fn read_limit(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text = read_file(path)?;
    let text = text.trim();
    if text == "max" {
        return Ok(None);
    }
    let value: u64 = text.parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        text: text.to_owned(),
    })?;
    Ok((value < (1 << 62)).then_some(value))
}

pub(crate) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    Ok(read_limit(path)?.unwrap_or(u64::MAX))
}

/// The value of `key` in a flat-keyed file such as `memory.events` or `cpu.stat`.
pub(crate) fn keyed(path: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
    let text = read_file(path)?;
    Ok(text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    }))
}

/// Bytes read and written, summed over devices: v2's `io.stat` (`MAJ:MIN rbytes=N wbytes=N
/// …`) or v1's `blkio.throttle.io_service_bytes` (`MAJ:MIN Read N`, `MAJ:MIN Write N`).
pub(crate) fn block_io(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines() {
        let mut fields = line.split_whitespace().skip(1);
        while let Some(field) = fields.next() {
            match field.split_once('=') {
                Some(("rbytes", n)) => read += n.parse::<u64>().unwrap_or(0),
                Some(("wbytes", n)) => written += n.parse::<u64>().unwrap_or(0),
                Some(_) => {}
                None => {
                    let n = fields
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                    match field {
                        "Read" => read += n,
                        "Write" => written += n,
                        _ => {}
                    }
                }
            }
        }
    }
    (read, written)
}

pub(crate) fn read_pids(path: &Path) -> Result<Vec<i32>, CgroupError> {
    Ok(read_file(path)?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Removes a cgroup directory, retrying briefly while the kernel finishes tearing down its
/// last processes (EBUSY).
pub(crate) fn remove_dir(path: &Path) -> Result<(), CgroupError> {
    for attempt in 0..50 {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Errors of the cgroup layer; each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroup path {0:?}")]
    BadPath(String),
    #[error("failed to write {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected {text:?} in {}", path.display())]
    Parse { path: PathBuf, text: String },
    #[error("failed to create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to remove {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} did not reach {want:?}", path.display())]
    Freeze { path: PathBuf, want: &'static str },
    #[error("cannot statfs {}: {source}", path.display())]
    Statfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{} is neither a cgroup2 nor a tmpfs mount (file system magic {magic:#x}): no cgroup hierarchy found", path.display())]
    UnknownFilesystem { path: PathBuf, magic: i64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_io_sums_both_formats() {
        let v2 =
            "8:0 rbytes=1000 wbytes=200 rios=3 wios=1 dbytes=0 dios=0\n8:16 rbytes=24 wbytes=0\n";
        assert_eq!(block_io(v2), (1024, 200));
        let v1 = "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\nTotal 4608\n";
        assert_eq!(block_io(v1), (4096, 512));
    }

    #[test]
    fn a_plain_directory_is_not_a_cgroup_root() {
        // The target directory sits on the build's ordinary file system, never tmpfs or cgroup2.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let err = CgroupMode::detect(dir).unwrap_err().to_string();
        assert!(err.contains("no cgroup hierarchy"), "{err}");
    }

    #[test]
    fn a_missing_root_names_the_path() {
        let err = CgroupMode::detect(Path::new("/nonexistent/cgroup"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/cgroup"), "{err}");
    }

    #[test]
    fn this_host_has_a_known_mode() {
        let root = Path::new(DEFAULT_ROOT);
        let mode = CgroupMode::detect(root).unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let root_line = mounts
            .lines()
            .rfind(|l| l.split(' ').nth(1) == Some(DEFAULT_ROOT))
            .expect("/sys/fs/cgroup is mounted");
        let fstype = root_line.split(' ').nth(2).unwrap();
        match mode {
            CgroupMode::Unified => assert_eq!(fstype, "cgroup2"),
            CgroupMode::Hybrid | CgroupMode::Legacy => assert_eq!(fstype, "tmpfs"),
        }
    }
}
