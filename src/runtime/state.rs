//! What the runtime remembers about a container between invocations, under `--root`:
//!
//! ```text
//! <root>/<id>/state.json   this file's State (written atomically)
//! <root>/<id>/exec.fifo    exists while the container is "created"; `start` opens it
//! ```
//!
//! The status is not stored: it is derived each time from the init process (alive, and the same
//! process, by its start time in `/proc/<pid>/stat`), the exec fifo and the freezer.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lifecycle states of the OCI runtime spec, plus paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
    pub fn can_start(self) -> bool {
        self == Status::Created
    }
    pub fn can_kill(self) -> bool {
        matches!(self, Status::Created | Status::Running | Status::Paused)
    }
    pub fn can_delete(self) -> bool {
        matches!(self, Status::Stopped | Status::Created | Status::Creating)
    }
    pub fn can_pause(self) -> bool {
        self == Status::Running
    }
    pub fn can_resume(self) -> bool {
        self == Status::Paused
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored state of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// The init process, as the host sees it.
    pub pid: i32,
    /// Its start time (clock ticks after boot), so a recycled pid is not mistaken for it.
    pub pid_start: u64,
    /// RFC 3339.
    pub created: String,
    /// The cgroup path (relative to each hierarchy's root).
    pub cgroup_path: String,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Set by `pause`, cleared by `resume`.
    #[serde(default)]
    pub paused: bool,
    /// Whether the spec has poststart or poststop hooks (so start and delete read it again;
    /// a state written before this field existed is read as having them).
    #[serde(default = "assume_late_hooks")]
    pub late_hooks: bool,
}

fn assume_late_hooks() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The runtime's state directory (`--root`).
#[derive(Debug, Clone)]
pub struct StateRoot {
    root: PathBuf,
}

impl StateRoot {
    pub fn new(root: impl Into<PathBuf>) -> StateRoot {
        StateRoot { root: root.into() }
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Compiled seccomp filters; `@` is not allowed in container ids, so no container's
    /// directory can take this name.
    pub fn seccomp_cache(&self) -> PathBuf {
        self.root.join("@seccomp")
    }

    pub fn exec_fifo(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("exec.fifo")
    }

    /// Makes `<root>/<id>/` (mode 0711); fails if the container exists.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf, StateError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.root)
            .map_err(io(&self.root))?;
        let dir = self.container_dir(id);
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists(id.to_owned()))
            }
            Err(e) => Err(io(&dir)(e)),
        }
    }

    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let path = self.container_dir(&state.id).join("state.json");
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        // No fsync: the state lives in /run (tmpfs) and describes processes that a reboot ends
        // anyway; the rename alone keeps readers from seeing a partial file.
        file.write_all(&serde_json::to_vec(state).expect("state serializes"))
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    pub fn load(&self, id: &str) -> Result<State, StateError> {
        let path = self.container_dir(id).join("state.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_owned()));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    /// Ids of every container with a state directory.
    pub fn list(&self) -> Result<Vec<String>, StateError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.root)(e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("state.json").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let dir = self.container_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&dir)(e)),
            _ => Ok(()),
        }
    }

    /// The container's status now.
    pub fn status(&self, state: &State) -> Status {
        if !process_is(state.pid, state.pid_start) {
            return Status::Stopped;
        }
        if self.exec_fifo(&state.id).exists() {
            return Status::Created;
        }
        if state.paused {
            return Status::Paused;
        }
        Status::Running
    }

    /// The OCI state document (`wharf runtime state ID`).
    pub fn oci_state(&self, state: &State) -> serde_json::Value {
        let status = self.status(state);
        serde_json::json!({
            "ociVersion": "1.2.0",
            "id": state.id,
            "status": status.as_str(),
            "pid": if status == Status::Stopped { 0 } else { state.pid },
            "bundle": state.bundle,
            "rootfs": state.rootfs,
            "created": state.created,
            "annotations": state.annotations,
        })
    }
}

/// The start time (field 22 of `/proc/<pid>/stat`) of a process, if it exists and is not a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // fields[0] is field 3 (state); field 22 is fields[19].
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` is alive and is the process that started at `start`.
pub fn process_is(pid: i32, start: u64) -> bool {
    pid > 0 && process_start_time(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_has_a_start_time_and_a_dead_pid_has_none() {
        let me = std::process::id() as i32;
        let start = process_start_time(me).unwrap();
        assert!(process_is(me, start));
        assert!(!process_is(me, start + 1), "same pid, other process");
        assert!(!process_is(i32::MAX, 0));
    }

    #[test]
    fn guards_follow_the_lifecycle() {
        assert!(Status::Created.can_start() && !Status::Running.can_start());
        assert!(Status::Running.can_kill() && !Status::Stopped.can_kill());
        assert!(Status::Stopped.can_delete() && !Status::Running.can_delete());
        assert!(Status::Running.can_pause() && Status::Paused.can_resume());
    }

    #[test]
    fn state_round_trips_and_missing_containers_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::new(dir.path().join("root"));
        assert!(matches!(root.load("nope"), Err(StateError::NotFound(_))));
        root.create_dir("c1").unwrap();
        assert!(matches!(root.create_dir("c1"), Err(StateError::Exists(_))));
        let state = State {
            id: "c1".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            pid: 1,
            pid_start: 0,
            created: "2026-11-28T00:00:00Z".into(),
            cgroup_path: "/x".into(),
            annotations: Default::default(),
            paused: false,
            late_hooks: false,
        };
        root.save(&state).unwrap();
        assert_eq!(root.load("c1").unwrap().bundle, PathBuf::from("/b"));
        assert_eq!(root.list().unwrap(), ["c1"]);
        assert_eq!(root.status(&state), Status::Stopped);
        root.remove("c1").unwrap();
        assert!(root.list().unwrap().is_empty());
    }
}
