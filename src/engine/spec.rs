//! The OCI spec of a container: the runtime's defaults (the 11 Podman capabilities,
//! no_new_privileges, docker's seccomp filter, masked and read-only paths, every namespace but
//! user), the image's
//! config (Entrypoint, Cmd, Env, WorkingDir, User) and the request's overrides.

use serde_json::{Value, json};

use super::{ContainerConfig, EngineError};

/// The pids limit of a container unless it asks for another.
pub const DEFAULT_PIDS_LIMIT: i64 = 2048;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// The ids a numeric `uid[:gid]` names; `None` for names (or a uid alone, whose group comes
/// from the container's /etc/passwd), which are resolved when the container starts.
fn numeric_user(user: &str) -> Option<(u32, u32)> {
    let (u, g) = user.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// NOFILE 1024:524288, as docker and Podman give; where the daemon may not raise a hard limit
/// (no CAP_SYS_RESOURCE), the hard limit is the daemon's own, which the container may keep.
fn nofile_limits() -> (u64, u64) {
    const SOFT: u64 = 1024;
    const HARD: u64 = 524_288;
    let may_raise = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    let hard = if may_raise {
        HARD
    } else {
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(SOFT, |(_, hard)| hard.min(HARD))
    };
    (SOFT.min(hard), hard)
}

/// A bind mount of a host path (or a volume's directory) into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: std::path::PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// The cgroup resources of a request.
fn resources(request: &ContainerConfig) -> Value {
    let mut r = json!({});
    let pids = request.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT);
    r["pids"] = json!({"limit": if pids > 0 { pids } else { -1 }});
    if request.memory.is_some() || request.memory_swap.is_some() {
        let mut m = json!({});
        if let Some(limit) = request.memory {
            m["limit"] = limit.into();
        }
        if let Some(swap) = request.memory_swap {
            m["swap"] = swap.into();
        }
        r["memory"] = m;
    }
    let mut cpu = json!({});
    if let Some(nano) = request.nano_cpus {
        cpu["period"] = 100_000.into();
        cpu["quota"] = (nano / 10_000).into();
    }
    if let Some(shares) = request.cpu_shares {
        cpu["shares"] = shares.into();
    }
    if cpu.as_object().is_some_and(|c| !c.is_empty()) {
        r["cpu"] = cpu;
    }
    r
}

/// Checks the limits of a request.
fn check_limits(request: &ContainerConfig) -> Result<(), EngineError> {
    if let Some(m) = request.memory
        && m < 6 << 20
    {
        return Err(EngineError::Invalid(format!(
            "memory limit {m} bytes is too small: give at least 6 MiB"
        )));
    }
    if let (Some(swap), Some(m)) = (request.memory_swap, request.memory)
        && swap != -1
        && swap < m
    {
        return Err(EngineError::Invalid(format!(
            "memory-swap {swap} must be at least the memory limit {m} (or -1 for unlimited)"
        )));
    }
    if request.memory_swap.is_some() && request.memory.is_none() {
        return Err(EngineError::Invalid(
            "memory-swap needs a memory limit as well".into(),
        ));
    }
    if let Some(n) = request.nano_cpus
        && n < 10_000_000
    {
        return Err(EngineError::Invalid(format!(
            "cpus {} is too small: give at least 0.01",
            n as f64 / 1e9
        )));
    }
    Ok(())
}

/// The default 11 capabilities with the request's additions and removals (`ALL` for every
/// one); names with or without `CAP_`, in any case.
fn capabilities(request: &ContainerConfig) -> Result<Vec<String>, EngineError> {
    use std::str::FromStr;
    // "Every capability" is every one the daemon itself may hand on (its bounding set): a
    // host may withhold some, and no container can get those.
    let available = caps::read(None, caps::CapSet::Bounding).unwrap_or_else(|_| caps::all());
    let mut all: Vec<String> = available.iter().map(|c| c.to_string()).collect();
    all.sort();
    let normalize = |name: &str| -> Result<Option<String>, EngineError> {
        let upper = name.trim().to_ascii_uppercase();
        if upper == "ALL" {
            return Ok(None);
        }
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        caps::Capability::from_str(&full)
            .map(|c| Some(c.to_string()))
            .map_err(|_| EngineError::Invalid(format!("unknown capability {name:?}")))
    };
    if request.privileged {
        return Ok(all);
    }
    let mut set: Vec<String> = crate::runtime::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    for name in &request.cap_drop {
        match normalize(name)? {
            None => set.clear(),
            Some(cap) => set.retain(|c| *c != cap),
        }
    }
    for name in &request.cap_add {
        match normalize(name)? {
            None => set = all.clone(),
            Some(cap) if !all.contains(&cap) => {
                return Err(EngineError::Invalid(format!(
                    "capability {cap} is not available on this host (the daemon's bounding set lacks it)"
                )));
            }
            Some(cap) if !set.contains(&cap) => set.push(cap),
            Some(_) => {}
        }
    }
    Ok(set)
}

/// What `--privileged` and `--security-opt` make of the seccomp filter and no_new_privs.
struct Security {
    seccomp: Option<Value>,
    no_new_privileges: Option<bool>,
}

fn security_options(request: &ContainerConfig, caps: &[String]) -> Result<Security, EngineError> {
    // Docker's default filter, unless privileged (which has none) or told otherwise.
    let mut seccomp = (!request.privileged).then(|| super::seccomp::default_profile(caps));
    let mut no_new_privileges = None;
    for opt in &request.security_opt {
        // docker accepts both `key=value` and the older `key:value`.
        let (key, value) = opt
            .split_once(['=', ':'])
            .map_or((opt.as_str(), None), |(k, v)| (k, Some(v)));
        match (key, value) {
            ("seccomp", Some("unconfined")) => seccomp = None,
            ("seccomp", Some(profile)) if profile.trim_start().starts_with('{') => {
                seccomp = Some(super::seccomp::resolve_profile(profile, caps)?);
            }
            ("seccomp", _) => {
                return Err(EngineError::Invalid(format!(
                    "security option {opt:?}: give seccomp=unconfined or the profile's JSON (the CLI reads a profile file for you)"
                )));
            }
            ("no-new-privileges", None | Some("true")) => no_new_privileges = Some(true),
            ("no-new-privileges", Some("false")) => no_new_privileges = Some(false),
            _ => {
                return Err(EngineError::Invalid(format!(
                    "security option {opt:?} is not supported: give seccomp=unconfined, seccomp=PROFILE or no-new-privileges[=true|false]"
                )));
            }
        }
    }
    Ok(Security {
        seccomp,
        no_new_privileges,
    })
}

/// Builds the spec of container `id`.
pub fn build(
    id: &str,
    request: &ContainerConfig,
    image: &Value,
    binds: &[Bind],
) -> Result<oci_spec::runtime::Spec, EngineError> {
    check_limits(request)?;
    let cfg = &image["config"];
    let entrypoint = if request.entrypoint.is_empty() {
        strings(&cfg["Entrypoint"])
    } else {
        request.entrypoint.clone()
    };
    let cmd = if !request.cmd.is_empty() {
        request.cmd.clone()
    } else if request.entrypoint.is_empty() {
        strings(&cfg["Cmd"])
    } else {
        Vec::new()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(EngineError::Invalid(format!(
            "image {} has no command: give one after the image name",
            request.image
        )));
    }
    let mut env: Vec<String> = strings(&cfg["Env"]);
    for kv in &request.env {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        if key.is_empty() {
            return Err(EngineError::Invalid(format!(
                "environment variable {kv:?} has no name"
            )));
        }
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(if kv.contains('=') {
            kv.clone()
        } else {
            format!("{kv}=")
        });
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let cwd = request
        .working_dir
        .clone()
        .or_else(|| {
            cfg["WorkingDir"]
                .as_str()
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(EngineError::Invalid(format!(
            "working directory {cwd:?} must be an absolute path"
        )));
    }
    let user = request
        .user
        .as_deref()
        .or_else(|| cfg["User"].as_str())
        .unwrap_or("");
    super::user::check(user)?;
    let (uid, gid) = numeric_user(user).unwrap_or((0, 0));
    let hostname = request
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_owned());

    let mut spec =
        serde_json::to_value(crate::runtime::default_spec()).expect("the default spec serializes");
    spec["hostname"] = hostname.into();
    spec["process"]["args"] = json!(args);
    spec["process"]["env"] = json!(env);
    spec["process"]["cwd"] = cwd.into();
    spec["process"]["terminal"] = request.tty.into();
    if request.network.as_deref() == Some("host") {
        // The host's network: no namespace of its own.
        if let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() {
            namespaces.retain(|ns| ns["type"] != "network");
        }
    }
    if request.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        spec["process"]["env"]
            .as_array_mut()
            .expect("set above")
            .push("TERM=xterm".into());
    }
    spec["process"]["user"] = json!({"uid": uid, "gid": gid});
    let (soft, hard) = nofile_limits();
    spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": hard, "soft": soft}]);
    spec["linux"]["cgroupsPath"] = format!("/wharf/{id}").into();
    spec["linux"]["resources"] = resources(request);
    spec["root"]["readonly"] = request.read_only.into();
    if request.init {
        spec["annotations"] = json!({crate::runtime::container::INIT_ANNOTATION: "true"});
    }
    let caps = capabilities(request)?;
    spec["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []
    });
    if request.privileged {
        spec["process"]["noNewPrivileges"] = false.into();
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
    }
    let security = security_options(request, &caps)?;
    if let Some(profile) = security.seccomp {
        spec["linux"]["seccomp"] = profile;
    }
    if let Some(nnp) = security.no_new_privileges {
        spec["process"]["noNewPrivileges"] = nnp.into();
    }
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for tmpfs in &request.tmpfs {
            let (path, opts) = tmpfs.split_once(':').unwrap_or((tmpfs.as_str(), ""));
            if !path.starts_with('/') {
                return Err(EngineError::Invalid(format!(
                    "tmpfs {tmpfs:?}: the path must be absolute"
                )));
            }
            let mut options = vec!["nosuid".to_owned(), "nodev".to_owned(), "noexec".to_owned()];
            options.extend(opts.split(',').filter(|o| !o.is_empty()).map(str::to_owned));
            mounts.push(json!({"destination": path, "type": "tmpfs", "source": "tmpfs", "options": options}));
        }
        for bind in binds {
            let mut options = vec!["rbind", "rprivate"];
            if bind.read_only {
                options.push("ro");
            }
            mounts.push(json!({
                "destination": bind.target,
                "type": "bind",
                "source": bind.source,
                "options": options,
            }));
        }
    }
    serde_json::from_value(spec)
        .map_err(|e| EngineError::Invalid(format!("the container's spec: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Value {
        json!({"config": {"Entrypoint": ["/bin/ep"], "Cmd": ["default"], "Env": ["PATH=/bin", "A=1"],
                          "WorkingDir": "/srv", "User": "1000:1000"}})
    }

    #[test]
    fn the_image_config_and_the_request_make_the_process() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let request = ContainerConfig {
            image: "x".into(),
            cmd: vec!["given".into()],
            env: vec!["A=2".into(), "B".into()],
            ..ContainerConfig::default()
        };
        let spec = build(id, &request, &image(), &[]).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["/bin/ep", "given"]);
        assert_eq!(p.env().as_ref().unwrap(), &["PATH=/bin", "A=2", "B="]);
        assert_eq!(p.cwd().to_str(), Some("/srv"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
        assert_eq!(p.no_new_privileges(), Some(true));
        // A new entrypoint drops the image's CMD, as docker does.
        let request = ContainerConfig {
            image: "x".into(),
            entrypoint: vec!["/bin/sh".into()],
            ..ContainerConfig::default()
        };
        let spec = build(id, &request, &image(), &[]).unwrap();
        assert_eq!(
            spec.process().as_ref().unwrap().args().as_ref().unwrap(),
            &["/bin/sh"]
        );
    }

    #[test]
    fn bad_requests_say_why() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let none = json!({"config": {}});
        let err = build(
            id,
            &ContainerConfig {
                image: "x".into(),
                ..Default::default()
            },
            &none,
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("has no command"), "{err}");
        let request = ContainerConfig {
            image: "x".into(),
            cmd: vec!["true".into()],
            user: Some("nobody:".into()),
            ..Default::default()
        };
        assert!(
            build(id, &request, &none, &[])
                .unwrap_err()
                .to_string()
                .contains("the group is empty")
        );
    }
}
