//! cgroup v1: one directory per controller hierarchy (`<root>/<controller>/<path>`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

use super::{
    Backend, CgroupError, Stats, keyed, read_file, read_limit, read_pids, read_u64, remove_dir,
    write_file,
};

/// The controllers wharf manages on v1, when the host mounts them.
const CONTROLLERS: [&str; 8] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio",
];

/// Device rules appended after the spec's (see `apply`).
const DEFAULT_ALLOWED_DEVICES: [&str; 12] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

pub struct V1 {
    root: PathBuf,
    path: String,
}

impl V1 {
    pub fn new(root: &Path, relative: &str) -> V1 {
        V1 {
            root: root.to_owned(),
            path: relative.to_owned(),
        }
    }

    /// `<root>/<controller>/<path>`, if the host has that controller.
    fn dir(&self, controller: &str) -> Option<PathBuf> {
        let base = self.root.join(controller);
        base.is_dir().then(|| base.join(&self.path))
    }

    /// One directory per distinct hierarchy (cpu and cpuacct are often one, seen by two names).
    fn dirs(&self) -> Vec<PathBuf> {
        let mut seen = std::collections::HashSet::new();
        CONTROLLERS
            .iter()
            .filter_map(|c| std::fs::canonicalize(self.root.join(c)).ok())
            .filter(|real| seen.insert(real.clone()))
            .map(|real| real.join(&self.path))
            .collect()
    }

    fn file(&self, controller: &str, name: &str) -> Option<PathBuf> {
        self.dir(controller).map(|d| d.join(name))
    }
}

impl V1 {
    /// The `tasks` file of each hierarchy of this cgroup.
    pub fn task_files(&self) -> Vec<PathBuf> {
        self.dirs().into_iter().map(|d| d.join("tasks")).collect()
    }
}

impl Backend for V1 {
    fn create(&self) -> Result<(), CgroupError> {
        for controller in CONTROLLERS {
            let Some(dir) = self.dir(controller) else {
                continue;
            };
            if controller == "cpuset" {
                // A new cpuset cgroup starts with no cpus and no mems, and refuses tasks until
                // they are filled in: copy them down from the nearest ancestor, level by level.
                let base = self.root.join("cpuset");
                let mut level = base.clone();
                for component in self.path.split('/') {
                    let parent = level.clone();
                    level = level.join(component);
                    make_dir(&level)?;
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        if read_file(&level.join(file))?.trim().is_empty() {
                            let value = read_file(&parent.join(file))?;
                            write_file(&level.join(file), value.trim())?;
                        }
                    }
                }
            } else {
                make_dir(&dir)?;
            }
        }
        Ok(())
    }

    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(memory) = resources.memory() {
            if let Some(limit) = memory.limit()
                && let Some(f) = self.file("memory", "memory.limit_in_bytes")
            {
                write_file(&f, &limit.to_string())?;
            }
            if let Some(swap) = memory.swap()
                && let Some(f) = self.file("memory", "memory.memsw.limit_in_bytes")
                && f.exists()
            {
                write_file(&f, &swap.to_string())?;
            }
            if let Some(reservation) = memory.reservation()
                && let Some(f) = self.file("memory", "memory.soft_limit_in_bytes")
            {
                write_file(&f, &reservation.to_string())?;
            }
            if let Some(swappiness) = memory.swappiness()
                && let Some(f) = self.file("memory", "memory.swappiness")
            {
                write_file(&f, &swappiness.to_string())?;
            }
        }
        if let Some(cpu) = resources.cpu() {
            if let Some(shares) = cpu.shares()
                && let Some(f) = self.file("cpu", "cpu.shares")
            {
                write_file(&f, &shares.to_string())?;
            }
            if let Some(period) = cpu.period()
                && let Some(f) = self.file("cpu", "cpu.cfs_period_us")
            {
                write_file(&f, &period.to_string())?;
            }
            if let Some(quota) = cpu.quota()
                && let Some(f) = self.file("cpu", "cpu.cfs_quota_us")
            {
                write_file(&f, &quota.to_string())?;
            }
            if let Some(cpus) = cpu.cpus().as_ref().filter(|c| !c.is_empty())
                && let Some(f) = self.file("cpuset", "cpuset.cpus")
            {
                write_file(&f, cpus)?;
            }
            if let Some(mems) = cpu.mems().as_ref().filter(|m| !m.is_empty())
                && let Some(f) = self.file("cpuset", "cpuset.mems")
            {
                write_file(&f, mems)?;
            }
        }
        if let Some(pids) = resources.pids()
            && let Some(f) = self.file("pids", "pids.max")
        {
            let value = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".to_owned()
            };
            write_file(&f, &value)?;
        }
        if let Some(rules) = resources.devices()
            && let Some(dir) = self.dir("devices")
        {
            for rule in rules {
                let kind = rule
                    .typ()
                    .map_or_else(|| "a".to_owned(), |t| t.as_str().to_owned());
                let number = |n: Option<i64>| n.map_or("*".to_owned(), |n| n.to_string());
                let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
                let line = if kind == "a" && rule.major().is_none() && rule.minor().is_none() {
                    "a".to_owned()
                } else {
                    format!(
                        "{kind} {}:{} {access}",
                        number(rule.major()),
                        number(rule.minor())
                    )
                };
                let file = if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write_file(&dir.join(file), &line)?;
            }
            // After the spec's rules, the devices every container needs (as runc appends
            // them): mknod of any node (using one still needs a rule), the standard character
            // devices, the pty multiplexer and its terminals, and tun.
            for line in DEFAULT_ALLOWED_DEVICES {
                write_file(&dir.join("devices.allow"), line)?;
            }
        }
        Ok(())
    }

    fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        match self.dir("pids").or_else(|| self.dir("memory")) {
            Some(dir) => read_pids(&dir.join("cgroup.procs")),
            None => Ok(Vec::new()),
        }
    }

    fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let Some(file) = self.file("freezer", "freezer.state") else {
            return Err(CgroupError::Freeze {
                path: self.root.join("freezer"),
                want: "a freezer hierarchy",
            });
        };
        let want = if frozen { "FROZEN" } else { "THAWED" };
        for _ in 0..1000 {
            write_file(&file, want)?;
            if read_file(&file)?.trim() == want {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(CgroupError::Freeze { path: file, want })
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let mut stats = Stats::default();
        if let Some(f) = self.file("cpuacct", "cpuacct.usage") {
            stats.cpu_usage_ns = read_u64(&f)?;
        }
        if let Some(dir) = self.dir("memory") {
            stats.memory_usage_bytes = read_u64(&dir.join("memory.usage_in_bytes"))?;
            stats.memory_max_usage_bytes = read_limit(&dir.join("memory.max_usage_in_bytes"))?;
            stats.memory_limit_bytes = read_limit(&dir.join("memory.limit_in_bytes"))?;
            stats.oom_kills = keyed(&dir.join("memory.oom_control"), "oom_kill")?.unwrap_or(0);
        }
        if let Some(dir) = self.dir("pids") {
            stats.pids_current = read_u64(&dir.join("pids.current"))?;
            stats.pids_limit = read_limit(&dir.join("pids.max"))?;
        }
        if let Some(f) = self.file("blkio", "blkio.throttle.io_service_bytes")
            && let Ok(text) = std::fs::read_to_string(f)
        {
            (stats.block_read_bytes, stats.block_write_bytes) = super::block_io(&text);
        }
        Ok(stats)
    }

    fn remove(&self) -> Result<(), CgroupError> {
        for controller in CONTROLLERS {
            if let Some(dir) = self.dir(controller) {
                remove_dir(&dir)?;
            }
        }
        Ok(())
    }
}

fn make_dir(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Create {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_written_to_each_controller() {
        let dir = tempfile::tempdir().unwrap();
        for (ctrl, files) in [
            (
                "memory",
                vec!["memory.limit_in_bytes", "memory.soft_limit_in_bytes"],
            ),
            (
                "cpu",
                vec!["cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us"],
            ),
            ("pids", vec!["pids.max"]),
        ] {
            let d = dir.path().join(ctrl).join("t/c");
            std::fs::create_dir_all(&d).unwrap();
            for f in files {
                std::fs::write(d.join(f), "").unwrap();
            }
        }
        let v1 = V1::new(dir.path(), "t/c");
        let resources: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 1048576, "reservation": 524288},
            "cpu": {"shares": 512, "quota": 20000, "period": 100000},
            "pids": {"limit": 10}
        }))
        .unwrap();
        v1.apply(&resources).unwrap();
        let read = |c: &str, f: &str| {
            std::fs::read_to_string(dir.path().join(c).join("t/c").join(f)).unwrap()
        };
        assert_eq!(read("memory", "memory.limit_in_bytes"), "1048576");
        assert_eq!(read("memory", "memory.soft_limit_in_bytes"), "524288");
        assert_eq!(read("cpu", "cpu.shares"), "512");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "20000");
        assert_eq!(read("pids", "pids.max"), "10");
        let err = V1::new(dir.path(), "missing/x")
            .apply(&resources)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("memory.limit_in_bytes") && err.contains("1048576"),
            "{err}"
        );
    }
}
