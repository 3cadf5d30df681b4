//! The container runtime: synchronous code that turns an OCI bundle into an isolated process.
//!
//! Owns namespaces, mounts, cgroups, process setup and container state on disk. It must stay a
//! leaf: no tokio, no sqlx, no axum, nothing from the daemon's modules — it could become a crate
//! of its own, and it runs inside short-lived single-threaded processes (the shim, `wharf runtime`).

pub mod cgroups;
pub mod channel;
pub mod console;
pub mod container;
pub mod hooks;
mod init;
pub mod inroot;
pub mod process;
mod reaper;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;

use oci_spec::runtime::Spec;

/// What this runtime supports, in the OCI features document format (`wharf runtime features`).
pub fn features() -> serde_json::Value {
    let capabilities: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async", "dirsync",
            "remount", "mand", "nomand", "atime", "noatime", "diratime", "nodiratime", "relatime",
            "norelatime", "strictatime", "bind", "rbind", "private", "rprivate", "shared", "rshared",
            "slave", "rslave", "unbindable", "runbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": capabilities,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {
            "io.wharf.runtime.version": crate::VERSION,
            "io.wharf.init": "set to \"true\" for a minimal init as PID 1 that forwards signals and reaps zombies"
        }
    })
}

/// The capabilities a container gets unless its spec says otherwise: the 11 that Podman grants.
pub const DEFAULT_CAPABILITIES: [&str; 11] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// The spec `wharf runtime spec` writes: `sh` in `rootfs/`, every namespace but user and time,
/// the default mounts, masked and read-only paths, [`DEFAULT_CAPABILITIES`], no_new_privileges.
pub fn default_spec() -> Spec {
    let mut value = serde_json::to_value(Spec::default()).expect("the default spec serializes");
    value["hostname"] = "wharf".into();
    value["root"] = serde_json::json!({"path": "rootfs", "readonly": false});
    let caps = serde_json::json!(DEFAULT_CAPABILITIES);
    value["process"]["args"] = serde_json::json!(["sh"]);
    value["process"]["terminal"] = false.into();
    value["process"]["noNewPrivileges"] = true.into();
    value["process"]["env"] = serde_json::json!([
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TERM=xterm"
    ]);
    value["process"]["capabilities"] = serde_json::json!({
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []
    });
    serde_json::from_value(value).expect("the default spec is valid")
}
