//! cgroup v2: one unified hierarchy (`<root>/<path>`), controllers enabled top-down through
//! `cgroup.subtree_control`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

use super::{
    Backend, CgroupError, Stats, keyed, read_file, read_limit, read_pids, read_u64, remove_dir,
    write_file,
};

/// The controllers wharf enables for containers, when the host offers them.
const CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "memory", "pids", "io"];

pub struct V2 {
    root: PathBuf,
    path: String,
    dir: PathBuf,
}

impl V2 {
    pub fn new(root: &Path, relative: &str) -> V2 {
        V2 {
            root: root.to_owned(),
            path: relative.to_owned(),
            dir: root.join(relative),
        }
    }
}

/// cgroup v1 `cpu.shares` (2..262144) as a v2 `cpu.weight` (1..10000), the conversion runc uses.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

impl V2 {
    /// The cgroup directory, for `clone3(CLONE_INTO_CGROUP)`.
    pub fn open_dir(&self) -> Result<std::fs::File, CgroupError> {
        std::fs::File::open(&self.dir).map_err(|source| CgroupError::Read {
            path: self.dir.clone(),
            source,
        })
    }
}

impl Backend for V2 {
    fn create(&self) -> Result<(), CgroupError> {
        let mut level = self.root.clone();
        for component in self.path.split('/') {
            // Enable the controllers for the children of this level, then go down.
            let available = read_file(&level.join("cgroup.controllers"))?;
            let wanted: Vec<String> = CONTROLLERS
                .iter()
                .filter(|c| available.split_whitespace().any(|a| a == **c))
                .map(|c| format!("+{c}"))
                .collect();
            if !wanted.is_empty() {
                let enabled = read_file(&level.join("cgroup.subtree_control"))?;
                for w in wanted {
                    if !enabled.split_whitespace().any(|e| e == &w[1..]) {
                        write_file(&level.join("cgroup.subtree_control"), &w)?;
                    }
                }
            }
            level = level.join(component);
            std::fs::create_dir_all(&level).map_err(|source| CgroupError::Create {
                path: level.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        let set = |name: &str, value: String| -> Result<(), CgroupError> {
            let path = self.dir.join(name);
            if path.exists() {
                write_file(&path, &value)
            } else {
                Err(CgroupError::Write {
                    path,
                    value,
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                })
            }
        };
        if let Some(memory) = resources.memory() {
            if let Some(limit) = memory.limit() {
                set(
                    "memory.max",
                    if limit < 0 {
                        "max".into()
                    } else {
                        limit.to_string()
                    },
                )?;
                // OCI swap is memory+swap; v2 swap.max is the swap alone.
                if let Some(swap) = memory.swap()
                    && self.dir.join("memory.swap.max").exists()
                {
                    let value = if swap < 0 {
                        "max".into()
                    } else {
                        (swap - limit.max(0)).max(0).to_string()
                    };
                    set("memory.swap.max", value)?;
                }
            }
            if let Some(reservation) = memory.reservation() {
                set("memory.low", reservation.to_string())?;
            }
        }
        if let Some(cpu) = resources.cpu() {
            if let Some(shares) = cpu.shares() {
                set("cpu.weight", shares_to_weight(shares).to_string())?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                let period = cpu.period().unwrap_or(100_000);
                let quota = cpu
                    .quota()
                    .filter(|q| *q > 0)
                    .map_or("max".to_owned(), |q| q.to_string());
                set("cpu.max", format!("{quota} {period}"))?;
            }
            if let Some(cpus) = cpu.cpus().as_ref().filter(|c| !c.is_empty()) {
                set("cpuset.cpus", cpus.clone())?;
            }
            if let Some(mems) = cpu.mems().as_ref().filter(|m| !m.is_empty()) {
                set("cpuset.mems", mems.clone())?;
            }
        }
        if let Some(pids) = resources.pids() {
            set(
                "pids.max",
                if pids.limit() > 0 {
                    pids.limit().to_string()
                } else {
                    "max".into()
                },
            )?;
        }
        Ok(())
    }

    fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        write_file(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        read_pids(&self.dir.join("cgroup.procs"))
    }

    fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        write_file(
            &self.dir.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )?;
        let want = if frozen { 1 } else { 0 };
        for _ in 0..1000 {
            if keyed(&self.dir.join("cgroup.events"), "frozen")? == Some(want) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(CgroupError::Freeze {
            path: self.dir.join("cgroup.events"),
            want: if frozen { "frozen 1" } else { "frozen 0" },
        })
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let mut stats = Stats::default();
        if self.dir.join("cpu.stat").exists() {
            stats.cpu_usage_ns =
                keyed(&self.dir.join("cpu.stat"), "usage_usec")?.unwrap_or(0) * 1000;
        }
        if self.dir.join("memory.current").exists() {
            stats.memory_usage_bytes = read_u64(&self.dir.join("memory.current"))?;
            let peak = self.dir.join("memory.peak");
            stats.memory_max_usage_bytes = if peak.exists() {
                read_limit(&peak)?
            } else {
                None
            };
            stats.memory_limit_bytes = read_limit(&self.dir.join("memory.max"))?;
            stats.oom_kills = keyed(&self.dir.join("memory.events"), "oom_kill")?.unwrap_or(0);
        }
        if self.dir.join("pids.current").exists() {
            stats.pids_current = read_u64(&self.dir.join("pids.current"))?;
            stats.pids_limit = read_limit(&self.dir.join("pids.max"))?;
        }
        if let Ok(text) = std::fs::read_to_string(self.dir.join("io.stat")) {
            (stats.block_read_bytes, stats.block_write_bytes) = super::block_io(&text);
        }
        Ok(stats)
    }

    fn remove(&self) -> Result<(), CgroupError> {
        remove_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_to_weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 100);
    }

    #[test]
    fn limits_are_written_to_the_v2_files() {
        // The root is a parameter: the controller logic runs against plain files.
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("a/b");
        std::fs::create_dir_all(&cg).unwrap();
        for f in [
            "memory.max",
            "memory.swap.max",
            "cpu.weight",
            "cpu.max",
            "pids.max",
        ] {
            std::fs::write(cg.join(f), "").unwrap();
        }
        let v2 = V2::new(dir.path(), "a/b");
        let resources: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 67108864, "swap": 134217728},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
            "pids": {"limit": 64}
        }))
        .unwrap();
        v2.apply(&resources).unwrap();
        let read = |f: &str| std::fs::read_to_string(cg.join(f)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("memory.swap.max"), "67108864");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("pids.max"), "64");
    }
}
