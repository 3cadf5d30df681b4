//! The process that becomes the container: `clone3` into new namespaces, and the final steps
//! before `execve` (limits, identity, capabilities, no_new_privs, working directory, descriptors).

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability};
use oci_spec::runtime::{Capabilities, LinuxCapabilities, PosixRlimitType, Process};

/// `clone3` with `flags` (CLONE_NEW* bits): like `fork`, returns `None` in the child and the
/// child's pid in the parent. Only call it from a single-threaded process.
pub fn clone_into(flags: u64) -> io::Result<Option<i32>> {
    clone_into_cgroup(flags, None)
}

/// Moves the just-cloned init `pid` to this process's other CPUs. Timing marks on a 2-CPU
/// machine showed the new child queued on its parent's CPU, first running only once the parent
/// blocked after making the cgroup v1 directories, with the other CPU idle; moved, it makes
/// its namespaces and mounts meanwhile. The init widens its mask again with
/// [`reset_affinity`] once the parent says Proceed (which comes after this move), so the
/// restriction never reaches the container's program. Nothing to do with one CPU.
pub fn move_off_this_cpu(pid: i32) {
    use nix::sched::CpuSet;
    let Ok(mut others) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return;
    };
    // SAFETY: no arguments; it only reads which CPU runs this thread.
    let here = unsafe { libc::sched_getcpu() };
    if here < 0 || others.unset(here as usize).is_err() {
        return;
    }
    if (0..CpuSet::count()).any(|cpu| others.is_set(cpu).unwrap_or(false)) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &others);
    }
}

/// Lets this process run on every CPU its cgroup's cpuset allows: the kernel narrows an
/// all-set mask to the cpuset. This undoes [`move_off_this_cpu`] and, as runc and crun do,
/// drops a mask inherited from whoever started the runtime (a service's `CPUAffinity=`):
/// since Linux 6.2 a cpuset no longer replaces such a mask when a process joins it. The mask
/// covers 8192 CPUs (the kernel's largest `NR_CPUS`), not just the 1024 of a `cpu_set_t`.
pub fn reset_affinity() {
    let all = [u64::MAX; 128];
    // SAFETY: the pointer and length describe `all`, which outlives the call; the kernel only
    // reads it.
    unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            0,
            std::mem::size_of_val(&all),
            all.as_ptr(),
        );
    }
}

/// [`clone_into`], the child starting in the cgroup v2 directory `cgroup` (CLONE_INTO_CGROUP).
pub fn clone_into_cgroup(flags: u64, cgroup: Option<&std::fs::File>) -> io::Result<Option<i32>> {
    use std::os::fd::AsRawFd;
    // SAFETY: clone_args is plain data; zero is valid for every field; we set flags and the
    // exit signal. Without a stack, clone3 behaves like fork: the child gets a copy of this
    // (single-threaded) process and returns 0.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags;
    args.exit_signal = libc::SIGCHLD as u64;
    if let Some(dir) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = dir.as_raw_fd() as u64;
    }
    // SAFETY: a valid pointer and size for clone_args.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    let pid = match pid {
        // clone3 refused (a seccomp filter answers ENOSYS so that flags stay visible, as in a
        // container's own init forking its program): plain clone does the same without a cgroup.
        -1 if cgroup.is_none()
            && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) =>
        {
            // SAFETY: clone without a new stack behaves like fork (see above); the arguments
            // after the flags (stack, parent tid, child tid, tls) are all null.
            unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    flags | libc::SIGCHLD as u64,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            }
        }
        pid => pid,
    };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid as i32)),
    }
}

/// `CLONE_INTO_CGROUP` (linux/sched.h; the libc crate does not name it).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Finds `program` as `execve` would with `PATH` from `env` (inside the current root).
pub fn find_executable(program: &str, env: &[String]) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        let path = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(program))
            .collect()
    };
    let mut last = format!("{program}: executable file not found in $PATH");
    for candidate in candidates {
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() => {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o111 != 0 {
                    return Ok(candidate);
                }
                last = format!("{}: Permission denied", candidate.display());
            }
            Ok(_) => last = format!("{}: is a directory", candidate.display()),
            Err(e) if program.contains('/') => {
                return Err(format!("{}: {}", candidate.display(), io_message(&e)));
            }
            Err(_) => {}
        }
    }
    Err(last)
}

/// "No such file or directory" rather than "No such file or directory (os error 2)".
pub fn io_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn rlimit_resource(t: PosixRlimitType) -> Option<libc::__rlimit_resource_t> {
    let name = serde_json::to_value(t).ok()?;
    Some(match name.as_str()? {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// Sets the spec's rlimits (before privileges are dropped: raising a hard limit needs them).
pub fn set_rlimits(process: &Process) -> Result<(), String> {
    for limit in process.rlimits().iter().flatten() {
        let resource = rlimit_resource(limit.typ())
            .ok_or_else(|| format!("unknown rlimit {:?}", limit.typ()))?;
        let value = libc::rlimit {
            rlim_cur: limit.soft(),
            rlim_max: limit.hard(),
        };
        // SAFETY: a valid resource and a valid rlimit value.
        if unsafe { libc::setrlimit(resource, &value) } != 0 {
            return Err(format!(
                "setrlimit {:?}: {}",
                limit.typ(),
                io_message(&io::Error::last_os_error())
            ));
        }
    }
    Ok(())
}

fn to_caps(set: &Option<Capabilities>) -> HashSet<Capability> {
    set.iter()
        .flatten()
        .filter_map(|c| format!("CAP_{c}").parse::<Capability>().ok())
        .collect()
}

/// Takes the identity (groups, gid, uid) and exactly the spec's capabilities, then
/// no_new_privs. Order matters: the bounding set shrinks while we still have CAP_SETPCAP;
/// KEEPCAPS carries the permitted set across setuid; effective ⊆ permitted at each step.
pub fn drop_privileges(process: &Process) -> Result<(), String> {
    let user = process.user();
    let empty = LinuxCapabilities::default();
    let spec_caps = process.capabilities().as_ref().unwrap_or(&empty);
    let bounding = to_caps(spec_caps.bounding());
    for cap in caps::all() {
        if bounding.contains(&cap) {
            continue;
        }
        // One prctl per capability: dropping one already gone succeeds, and EINVAL means this
        // kernel does not know the capability, so there is nothing to drop.
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap.index() as libc::c_ulong, 0, 0, 0) } != 0
        {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(format!(
                    "drop {cap} from the bounding set: {}",
                    io_message(&err)
                ));
            }
        }
    }
    let prctl = |option, value: libc::c_ulong, what: &str| -> Result<(), String> {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(option, value, 0, 0, 0) } != 0 {
            return Err(format!(
                "{what}: {}",
                io_message(&io::Error::last_os_error())
            ));
        }
        Ok(())
    };
    prctl(libc::PR_SET_KEEPCAPS, 1, "keep capabilities across setuid")?;
    let groups: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups {groups:?}: {e}"))?;
    nix::unistd::setresgid(user.gid().into(), user.gid().into(), user.gid().into())
        .map_err(|e| format!("setgid {}: {e}", user.gid()))?;
    nix::unistd::setresuid(user.uid().into(), user.uid().into(), user.uid().into())
        .map_err(|e| format!("setuid {}: {e}", user.uid()))?;
    let permitted = to_caps(spec_caps.permitted());
    let effective: HashSet<Capability> = to_caps(spec_caps.effective())
        .intersection(&permitted)
        .copied()
        .collect();
    caps::set(None, CapSet::Effective, &effective)
        .map_err(|e| format!("set effective capabilities: {e}"))?;
    caps::set(None, CapSet::Permitted, &permitted)
        .map_err(|e| format!("set permitted capabilities: {e}"))?;
    caps::set(None, CapSet::Inheritable, &to_caps(spec_caps.inheritable()))
        .map_err(|e| format!("set inheritable capabilities: {e}"))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("clear ambient capabilities: {e}"))?;
    for cap in to_caps(spec_caps.ambient()) {
        caps::raise(None, CapSet::Ambient, cap).map_err(|e| format!("raise ambient {cap}: {e}"))?;
    }
    prctl(libc::PR_SET_KEEPCAPS, 0, "stop keeping capabilities")?;
    if process.no_new_privileges() == Some(true) {
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "set no_new_privs")?;
    }
    Ok(())
}

/// Changes to the spec's working directory and checks it is inside the root: a cwd reached
/// through a leaked descriptor (`/proc/self/fd/N`, CVE-2024-21626) would be outside it.
pub fn enter_cwd(cwd: &Path) -> Result<(), String> {
    nix::unistd::chdir(cwd).map_err(|e| format!("chdir to cwd {}: {}", cwd.display(), e.desc()))?;
    match nix::unistd::getcwd() {
        Ok(now) if now.is_absolute() => Ok(()),
        _ => Err(format!(
            "cwd {} is outside the container root",
            cwd.display()
        )),
    }
}

/// Marks every descriptor from 3 up close-on-exec, so the program starts with stdio only.
pub fn close_extra_fds() -> Result<(), String> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    if unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) } != 0 {
        return Err(format!(
            "close_range: {}",
            io_message(&io::Error::last_os_error())
        ));
    }
    Ok(())
}

/// `execve`; returns only on failure, with the reason.
pub fn exec(path: &Path, args: &[String], env: &[String]) -> String {
    let c = |s: &[u8]| CString::new(s).unwrap_or_default();
    let path_c = c(path.as_os_str().as_bytes());
    let argv: Vec<CString> = args.iter().map(|a| c(a.as_bytes())).collect();
    let envp: Vec<CString> = env.iter().map(|e| c(e.as_bytes())).collect();
    let err = nix::unistd::execve(&path_c, &argv, &envp).unwrap_err();
    format!("exec failed: {}: {}", path.display(), err.desc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_found_on_path_or_explained() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_owned()];
        let sh = find_executable("sh", &env).unwrap();
        assert!(sh.ends_with("sh"));
        let err = find_executable("no-such-program-xyz", &env).unwrap_err();
        assert_eq!(
            err,
            "no-such-program-xyz: executable file not found in $PATH"
        );
        let err = find_executable("/bin/nope", &env).unwrap_err();
        assert_eq!(err, "/bin/nope: No such file or directory");
        assert!(
            find_executable("/etc", &env)
                .unwrap_err()
                .contains("is a directory")
        );
    }
}
