//! Containers' seccomp profiles: the default one (what docker users expect: every syscall an
//! ordinary program makes, and none of those that reach across the container's boundary unless
//! the container holds the capability that makes them safe), and profiles users give in docker's
//! file format, both resolved here into the OCI `linux.seccomp` the runtime compiles.
//!
//! Docker's profile format adds conditions to each rule (`includes`/`excludes` of capabilities
//! and architectures, `minKernel`); this module evaluates them for one container, so a profile
//! written for docker means the same here.

use serde::Deserialize;
use serde_json::{Value, json};

use super::EngineError;

/// Errno of a denied syscall: EPERM, as docker returns.
const EPERM: u32 = 1;
/// `clone3` is answered "not implemented", so that libc falls back to `clone`, whose flags the
/// filter can see (clone3 passes them in memory).
const ENOSYS: u32 = 38;
/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
const NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// `socket` domain AF_VSOCK, refused: it reaches the hypervisor host.
const AF_VSOCK: u64 = 40;

/// What every container may call: the syscalls of ordinary programs.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls allowed only to a container that holds the capability (the kernel checks it too;
/// the filter keeps the attack surface of these calls away from containers without it).
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// The architectures of this build's filter: the native one and those its kernel also runs.
fn architectures() -> Vec<&'static str> {
    if cfg!(target_arch = "x86_64") {
        vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    } else if cfg!(target_arch = "aarch64") {
        vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        Vec::new()
    }
}

/// Syscalls only some architectures have (or need).
fn arch_specific() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["arch_prctl", "modify_ldt"]
    } else if cfg!(target_arch = "aarch64") {
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ]
    } else {
        &[]
    }
}

/// The default profile for a container holding `capabilities` (`CAP_…` names).
pub fn default_profile(capabilities: &[String]) -> Value {
    let has = |cap: &str| capabilities.iter().any(|c| c == cap);
    let mut allowed: Vec<&str> = ALLOWED.iter().chain(arch_specific()).copied().collect();
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            allowed.extend(names.iter().copied());
        }
    }
    allowed.sort_unstable();
    allowed.dedup();
    let mut syscalls = vec![json!({"names": allowed, "action": "SCMP_ACT_ALLOW"})];
    // Only the personalities programs ask for (Linux, with or without the 32-bit address
    // space or UNAME26), and the query.
    for persona in [0x0u64, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
        syscalls.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                             "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]}));
    }
    syscalls.push(json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]}));
    if !has("CAP_SYS_ADMIN") {
        // Threads and processes, but no new namespaces.
        syscalls.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                             "args": [{"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0,
                                       "op": "SCMP_CMP_MASKED_EQ"}]}));
        syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": architectures(),
        "syscalls": syscalls,
    })
}

/// A profile in docker's format (a superset of OCI's `linux.seccomp`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerProfile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    /// `[{architecture, subArchitectures}]`: the native architecture's entry names the set.
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    syscalls: Vec<DockerRule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerRule {
    #[serde(default)]
    names: Vec<String>,
    /// The single-name form of older profiles.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// The short architecture names docker's profiles use in `includes.arches`.
fn native_arch_names() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["amd64", "x86_64", "SCMP_ARCH_X86_64"]
    } else if cfg!(target_arch = "aarch64") {
        &["arm64", "aarch64", "SCMP_ARCH_AARCH64"]
    } else {
        &[]
    }
}

/// `major.minor` of the running kernel.
fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_version(&release).unwrap_or((0, 0))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// Resolves a profile given by the user (docker's format, or OCI's) for a container holding
/// `capabilities`: rules whose conditions do not hold are left out.
pub fn resolve_profile(text: &str, capabilities: &[String]) -> Result<Value, EngineError> {
    let bad = |reason: String| EngineError::Invalid(format!("seccomp profile: {reason}"));
    let profile: DockerProfile =
        serde_json::from_str(text).map_err(|e| bad(format!("not a profile: {e}")))?;
    let native = native_arch_names();
    let mut arches: Vec<String> = profile.architectures.clone();
    for map in &profile.arch_map {
        if native.contains(&map.architecture.as_str()) {
            arches.push(map.architecture.clone());
            arches.extend(map.sub_architectures.iter().cloned());
        }
    }
    if arches.is_empty() && !profile.arch_map.is_empty() {
        return Err(bad(format!(
            "its archMap has no entry for this machine ({})",
            native.first().copied().unwrap_or("unknown")
        )));
    }
    let kernel = kernel_version();
    let mut syscalls = Vec::new();
    for rule in profile.syscalls {
        let arch_matches = |list: &[String]| list.iter().any(|a| native.contains(&a.as_str()));
        let holds_all = rule.includes.caps.iter().all(|c| capabilities.contains(c));
        let arch_ok = rule.includes.arches.is_empty() || arch_matches(&rule.includes.arches);
        let kernel_ok = match &rule.includes.min_kernel {
            None => true,
            Some(min) => {
                let wanted = parse_version(min)
                    .ok_or_else(|| bad(format!("minKernel {min:?} is not a version")))?;
                kernel >= wanted
            }
        };
        let excluded_cap = rule.excludes.caps.iter().any(|c| capabilities.contains(c));
        let excluded_arch = arch_matches(&rule.excludes.arches);
        if !(holds_all && arch_ok && kernel_ok) || excluded_cap || excluded_arch {
            continue;
        }
        let mut names = rule.names;
        names.extend(rule.name);
        if names.is_empty() {
            return Err(bad(format!(
                "a rule with action {} names no syscall",
                rule.action
            )));
        }
        let mut out = json!({"names": names, "action": rule.action, "args": rule.args});
        if let Some(errno) = rule.errno_ret {
            out["errnoRet"] = errno.into();
        }
        syscalls.push(out);
    }
    let mut out = json!({
        "defaultAction": profile.default_action,
        "architectures": arches,
        "flags": profile.flags,
        "syscalls": syscalls,
    });
    if let Some(errno) = profile.default_errno_ret {
        out["defaultErrnoRet"] = errno.into();
    }
    // What the runtime will parse: refuse now, with the reason, rather than at start.
    serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(out.clone())
        .map_err(|e| bad(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_allowed(profile: &Value) -> Vec<String> {
        profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_default_profile_follows_the_capabilities() {
        let default: Vec<String> = crate::runtime::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        let p = default_profile(&default);
        let allowed = names_allowed(&p);
        for name in ["read", "execve", "chroot", "ptrace", "arch_prctl"] {
            assert!(allowed.iter().any(|n| n == name), "{name} must be allowed");
        }
        for name in [
            "mount", "unshare", "setns", "reboot", "bpf", "clone", "keyctl",
        ] {
            assert!(!allowed.iter().any(|n| n == name), "{name} must not be");
        }
        assert!(p.to_string().contains("SCMP_CMP_MASKED_EQ"));
        let mut admin = default.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let allowed = names_allowed(&default_profile(&admin));
        assert!(allowed.iter().any(|n| n == "mount") && allowed.iter().any(|n| n == "clone"));
        // The runtime compiles it.
        let spec: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p).unwrap();
        crate::runtime::seccomp::compile(&spec).unwrap();
    }

    #[test]
    fn docker_profiles_are_resolved_by_their_conditions() {
        let text = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]},
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}}
            ]}"#;
        let plain = resolve_profile(text, &["CAP_CHOWN".into()]).unwrap();
        let s = plain.to_string();
        assert!(s.contains("\"read\"") && s.contains("\"clone\""));
        assert!(!s.contains("mount") && !s.contains("ptrace"), "{s}");
        let admin = resolve_profile(text, &["CAP_SYS_ADMIN".into()]).unwrap();
        let s = admin.to_string();
        assert!(s.contains("mount") && !s.contains("clone"), "{s}");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                plain["architectures"],
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
            );
        }
        let err = resolve_profile("{\"syscalls\": []}", &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("seccomp profile: not a profile"),
            "{err}"
        );
        let err = resolve_profile(r#"{"defaultAction": "SCMP_ACT_NOPE", "syscalls": []}"#, &[])
            .unwrap_err();
        assert!(err.to_string().contains("SCMP_ACT_NOPE"), "{err}");
    }
}
