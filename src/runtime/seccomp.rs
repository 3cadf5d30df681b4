//! The spec's seccomp profile, compiled to BPF by libseccomp (the library runc, crun and youki
//! use) and loaded as the last step before `execve`.

use std::path::Path;
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {what} is not supported")]
    Unsupported { what: String },
    #[error("seccomp: {what}: {reason}")]
    Library { what: String, reason: String },
}

fn library(
    what: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let what = what.into();
    move |e| SeccompError::Library {
        what,
        reason: e.to_string(),
    }
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32)
        }
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.unwrap_or(libc::EPERM as u32) as u16)
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Unsupported {
                what: "SCMP_ACT_NOTIFY (a seccomp agent)".into(),
            });
        }
    })
}

fn compare(op: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // OCI's value is the mask and valueTwo the datum.
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0)),
    }
}

/// Builds the filter (nothing is loaded yet). Syscall names this kernel's libseccomp does not
/// know are skipped, as runc does: profiles list syscalls of newer kernels.
pub fn compile(profile: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(library("make a filter"))?;
    for arch in profile.architectures().iter().flatten() {
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let arch = ScmpArch::from_str(&name).map_err(library(format!("architecture {name}")))?;
        ctx.add_arch(arch)
            .map_err(library(format!("add architecture {name}")))?;
    }
    for flag in profile.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
                ctx.set_ctl_log(true)
                    .map_err(library("flag SECCOMP_FILTER_FLAG_LOG"))?;
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                ctx.set_ctl_ssb(true)
                    .map_err(library("flag SECCOMP_FILTER_FLAG_SPEC_ALLOW"))?;
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {
                ctx.set_ctl_tsync(true)
                    .map_err(library("flag SECCOMP_FILTER_FLAG_TSYNC"))?;
            }
            other => {
                return Err(SeccompError::Unsupported {
                    what: format!("filter flag {other:?}"),
                });
            }
        }
    }
    // We set no_new_privs ourselves when the spec asks; libseccomp must not force it.
    ctx.set_ctl_nnp(false)
        .map_err(library("leave no_new_privs to the spec"))?;
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue; // libseccomp refuses rules that repeat the default
        }
        let conditions: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| {
                ScmpArgCompare::new(a.index() as u32, compare(a.op(), a.value_two()), a.value())
            })
            .collect();
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            ctx.add_rule_conditional(act, syscall, &conditions)
                .map_err(library(format!("rule for {name}")))?;
        }
    }
    Ok(ctx)
}

/// A filter compiled to BPF, ready to load, with the flags it loads with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// `struct sock_filter` instructions, 8 bytes each, in this machine's byte order.
    code: Vec<u8>,
    flags: libc::c_ulong,
}

/// The kernel's limit on a filter's length (BPF_MAXINSNS).
const MAX_INSTRUCTIONS: usize = 4096;

/// The `seccomp(2)` flags the profile asks for (libseccomp sets them only on its own load).
fn load_flags(profile: &LinuxSeccomp) -> Result<libc::c_ulong, SeccompError> {
    let mut flags = 0;
    for flag in profile.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            other => {
                return Err(SeccompError::Unsupported {
                    what: format!("filter flag {other:?}"),
                });
            }
        };
    }
    Ok(flags)
}

/// The profile as BPF. Compiling a profile of docker's size takes libseccomp milliseconds, so
/// programs are kept in `cache` (a root-only directory), keyed by the profile, this build and
/// the libseccomp version; a damaged or missing entry is compiled again.
pub fn program(profile: &LinuxSeccomp, cache: Option<&Path>) -> Result<Program, SeccompError> {
    use sha2::Digest;
    let flags = load_flags(profile)?;
    let mut key = sha2::Sha256::new();
    key.update(serde_json::to_vec(profile).expect("a profile serializes"));
    key.update(env!("CARGO_PKG_VERSION"));
    let version = libseccomp::ScmpVersion::current().map_err(library("libseccomp version"))?;
    key.update(format!(
        "{}.{}.{}",
        version.major, version.minor, version.micro
    ));
    let entry = cache.map(|dir| dir.join(format!("{:x}.bpf", key.finalize())));
    if let Some(entry) = &entry
        && let Ok(code) = std::fs::read(entry)
        && !code.is_empty()
        && code.len() % 8 == 0
        && code.len() / 8 <= MAX_INSTRUCTIONS
    {
        return Ok(Program { code, flags });
    }
    let ctx = compile(profile)?;
    let mut file =
        nix::sys::memfd::memfd_create("wharf-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map(std::fs::File::from)
            .map_err(|e| SeccompError::Library {
                what: "a memory file for the compiled filter".into(),
                reason: e.desc().to_owned(),
            })?;
    ctx.export_bpf(&file)
        .map_err(library("export the filter"))?;
    let mut code = Vec::new();
    std::io::Seek::rewind(&mut file)
        .and_then(|_| std::io::Read::read_to_end(&mut file, &mut code))
        .map_err(|e| SeccompError::Library {
            what: "read the compiled filter".into(),
            reason: e.to_string(),
        })?;
    if let (Some(dir), Some(entry)) = (cache, &entry) {
        // Best effort: a cache that cannot be written only costs the next container time.
        let _ = store(dir, entry, &code);
    }
    Ok(Program { code, flags })
}

fn store(dir: &Path, entry: &Path, code: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A name of this process's own; the rename makes the entry appear whole.
    let tmp = entry.with_extension(format!("tmp.{}", std::process::id()));
    let written = std::fs::write(&tmp, code).and_then(|()| std::fs::rename(&tmp, entry));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Loads a program into this process (inherited across `execve`). Without no_new_privs the
/// caller must hold CAP_SYS_ADMIN.
pub fn load(program: &Program) -> Result<(), SeccompError> {
    let filter = libc::sock_fprog {
        len: (program.code.len() / 8) as libc::c_ushort,
        filter: program.code.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `filter` points at `len` sock_filter instructions (8 bytes each, as libseccomp
    // exported them) that outlive the call; the kernel copies and verifies them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            program.flags,
            &filter as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Library {
            what: "load the filter".into(),
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_cached_and_a_damaged_entry_is_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]
        }));
        let fresh = program(&p, Some(&cache)).unwrap();
        assert_eq!(fresh.flags, libc::SECCOMP_FILTER_FLAG_LOG);
        let entries: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert_eq!(entries.len(), 1, "one entry, no temporary left");
        let entry = entries[0].as_ref().unwrap().path();
        assert_eq!(std::fs::read(&entry).unwrap(), fresh.code);
        assert_eq!(program(&p, Some(&cache)).unwrap(), fresh);
        std::fs::write(&entry, b"garbage").unwrap();
        assert_eq!(program(&p, Some(&cache)).unwrap(), fresh);
        assert_eq!(program(&p, None).unwrap(), fresh);
        let other = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"}));
        assert_ne!(program(&other, Some(&cache)).unwrap(), fresh);
    }

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn profiles_compile_and_notify_is_refused() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["read", "write", "exit_group", "not_a_real_syscall"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        }));
        compile(&p).unwrap();
        let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
        let err = compile(&p).unwrap_err().to_string();
        assert_eq!(
            err,
            "seccomp: SCMP_ACT_NOTIFY (a seccomp agent) is not supported"
        );
    }
}
