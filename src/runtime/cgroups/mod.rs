//! Control groups: which hierarchy the host has, and (with the runtime issue) the v1 and v2
//! backends behind one small trait.
//!
//! The hierarchy is decided once, by `statfs` of the cgroup root, the way runc and youki do it:
//! a cgroup2 file system there is the unified (v2) hierarchy; a tmpfs there holds v1 controller
//! mounts, possibly with a v2 hierarchy beside them under `unified/` ("hybrid").
//! The root is a parameter so that the logic can be tested against any directory.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};

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

/// Errors of the cgroup layer; each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
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
