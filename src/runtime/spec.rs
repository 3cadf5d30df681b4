//! Reading a bundle's `config.json` and checking it before anything is done with it.
//!
//! Validation is a list of small read-only checks, each with its own message, run before any
//! side effect (the runc way): a bad spec never leaves a half-made container behind.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
    #[error("invalid config.json: {0}")]
    Invalid(String),
}

/// A loaded bundle: its directory, the spec and the absolute root filesystem path.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
}

impl Bundle {
    /// Loads and validates `<dir>/config.json`.
    pub fn load(dir: &Path) -> Result<Bundle, SpecError> {
        let dir = std::fs::canonicalize(dir).map_err(|e| SpecError::Load {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        let path = dir.join("config.json");
        // Read whole and parsed from memory: serde_json's reader parses byte by byte, which a
        // profile of hundreds of syscalls makes a noticeable part of a start.
        let bytes = std::fs::read(&path).map_err(|e| SpecError::Load {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let spec: Spec = serde_json::from_slice(&bytes).map_err(|e| SpecError::Load {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        validate(&spec)?;
        let root = spec.root().as_ref().expect("validated: root is set").path();
        let rootfs = if root.is_absolute() {
            root.clone()
        } else {
            dir.join(root)
        };
        let meta = std::fs::symlink_metadata(&rootfs).map_err(|e| SpecError::Load {
            path: rootfs.clone(),
            reason: format!("root.path: {e}"),
        })?;
        if !meta.is_dir() {
            return Err(SpecError::Invalid(format!(
                "root.path {} is not a directory",
                rootfs.display()
            )));
        }
        Ok(Bundle { dir, spec, rootfs })
    }
}

fn invalid(message: impl Into<String>) -> SpecError {
    SpecError::Invalid(message.into())
}

/// Whether `path` is absolute and has no `..` component.
fn clean_absolute(path: &Path) -> bool {
    path.is_absolute() && !path.components().any(|c| c == Component::ParentDir)
}

/// The checks, in order. Each refuses one kind of mistake with a message naming the field.
pub fn validate(spec: &Spec) -> Result<(), SpecError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process is missing"))?;
    let args = process.args().as_ref().filter(|a| !a.is_empty());
    if args.is_none_or(|a| a[0].is_empty()) {
        return Err(invalid("process.args must name the program to run"));
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(format!(
            "process.cwd {} must be absolute",
            process.cwd().display()
        )));
    }
    for kv in process.env().iter().flatten() {
        if !kv.contains('=') {
            return Err(invalid(format!(
                "process.env entry {kv:?} is not KEY=VALUE"
            )));
        }
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root is missing"))?;
    if root.path().as_os_str().is_empty() {
        return Err(invalid("root.path is empty"));
    }
    for mount in spec.mounts().iter().flatten() {
        if !clean_absolute(mount.destination()) {
            return Err(invalid(format!(
                "mount destination {} must be absolute, without ..",
                mount.destination().display()
            )));
        }
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| invalid("linux is missing"))?;
    let mut seen = HashSet::new();
    for ns in linux.namespaces().iter().flatten() {
        if !seen.insert(ns.typ()) {
            return Err(invalid(format!("namespace {} is listed twice", ns.typ())));
        }
        if let Some(path) = ns.path()
            && !path.is_absolute()
        {
            return Err(invalid(format!(
                "namespace {} path {} must be absolute",
                ns.typ(),
                path.display()
            )));
        }
    }
    let new_ns = |t: LinuxNamespaceType| seen.contains(&t);
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !new_ns(LinuxNamespaceType::Uts) {
        return Err(invalid("hostname needs a uts namespace"));
    }
    if !new_ns(LinuxNamespaceType::Mount) {
        return Err(invalid("a mount namespace is required"));
    }
    let user_ns = new_ns(LinuxNamespaceType::User);
    let mapped = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        && linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if user_ns && !mapped {
        return Err(invalid(
            "a user namespace needs uidMappings and gidMappings",
        ));
    }
    if !user_ns && (linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())) {
        return Err(invalid(
            "uidMappings are given but there is no user namespace",
        ));
    }
    for key in linux.sysctl().iter().flat_map(|s| s.keys()) {
        let needs = if key.starts_with("net.") {
            Some(LinuxNamespaceType::Network)
        } else if key.starts_with("kernel.shm")
            || key.starts_with("kernel.msg")
            || key == "kernel.sem"
            || key.starts_with("fs.mqueue.")
        {
            Some(LinuxNamespaceType::Ipc)
        } else if key == "kernel.hostname" || key == "kernel.domainname" {
            Some(LinuxNamespaceType::Uts)
        } else {
            None
        };
        match needs {
            Some(ns) if new_ns(ns) => {}
            Some(ns) => return Err(invalid(format!("sysctl {key} needs a {ns} namespace"))),
            None => {
                return Err(invalid(format!(
                    "sysctl {key} is not namespaced: it would change the host"
                )));
            }
        }
    }
    if let Some(path) = linux.cgroups_path()
        && path.components().any(|c| c == Component::ParentDir)
    {
        return Err(invalid(format!(
            "cgroupsPath {} must not contain ..",
            path.display()
        )));
    }
    for path in linux
        .masked_paths()
        .iter()
        .chain(linux.readonly_paths().iter())
        .flatten()
    {
        if !clean_absolute(Path::new(path)) {
            return Err(invalid(format!(
                "masked/readonly path {path} must be absolute, without .."
            )));
        }
    }
    Ok(())
}

/// A container id: what runc accepts (letters, digits, `_ + - .`), at most 1024 characters.
pub fn check_id(id: &str) -> Result<(), SpecError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "container id {id:?}: use letters, digits, '_', '+', '-' and '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(f: impl FnOnce(&mut serde_json::Value)) -> Result<(), SpecError> {
        let mut value = serde_json::to_value(Spec::default()).unwrap();
        value["process"]["args"] = serde_json::json!(["sh"]);
        f(&mut value);
        validate(&serde_json::from_value(value).unwrap())
    }

    #[test]
    fn the_default_spec_is_valid() {
        spec_with(|_| {}).unwrap();
    }

    #[test]
    fn each_check_names_its_field() {
        type Change = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|v| v["process"]["args"] = serde_json::json!([])),
                "process.args",
            ),
            (
                Box::new(|v| v["process"]["cwd"] = "relative".into()),
                "process.cwd",
            ),
            (
                Box::new(|v| v["process"]["env"] = serde_json::json!(["NOEQUALS"])),
                "NOEQUALS",
            ),
            (
                Box::new(|v| v["mounts"][0]["destination"] = "/a/../../etc".into()),
                "mount destination",
            ),
            (
                Box::new(|v| v["linux"]["sysctl"] = serde_json::json!({"vm.swappiness": "1"})),
                "not namespaced",
            ),
            (
                Box::new(|v| v["linux"]["cgroupsPath"] = "/a/../b".into()),
                "cgroupsPath",
            ),
            (
                Box::new(|v| v["linux"]["maskedPaths"] = serde_json::json!(["proc/kcore"])),
                "masked/readonly",
            ),
            (
                Box::new(|v| {
                    v["linux"]["namespaces"]
                        .as_array_mut()
                        .unwrap()
                        .push(serde_json::json!({"type": "user"}));
                }),
                "uidMappings",
            ),
            (
                Box::new(|v| {
                    v["linux"]["namespaces"]
                        .as_array_mut()
                        .unwrap()
                        .retain(|n| n["type"] != "uts");
                }),
                "hostname needs a uts namespace",
            ),
        ];
        for (change, needle) in cases {
            let err = spec_with(change).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("abc-1.2_3+4").is_ok());
        for bad in ["", "..", "a/b", "a b", "x\n"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }
}
