//! A minimal init for containers that ask for one (`docker run --init`): PID 1 stays wharf's
//! own code, forwards every signal it gets to the program, reaps every zombie, and exits with the
//! program's status. No binary is needed inside the image.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Which side of the fork this process is.
pub enum Role {
    /// Exec the container's program.
    Program,
    /// Stay PID 1 for this child.
    Reaper(Pid),
}

/// Blocks all signals (the reaper takes them with `sigwait`), forks, and unblocks them in the
/// child that will become the program.
pub fn fork_program() -> Result<Role, String> {
    let all = SigSet::all();
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut old))
        .map_err(|e| format!("block signals: {}", e.desc()))?;
    match super::process::clone_into(0).map_err(|e| format!("fork the program: {e}"))? {
        None => {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)
                .map_err(|e| format!("unblock signals: {}", e.desc()))?;
            Ok(Role::Program)
        }
        Some(pid) => Ok(Role::Reaper(Pid::from_raw(pid))),
    }
}

/// Forwards signals to `child` and reaps every process until `child` ends; exits with its status.
pub fn serve(child: Pid) -> ! {
    let all = SigSet::all();
    loop {
        let signal = match all.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if signal != Signal::SIGCHLD {
            let _ = kill(child, signal);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => std::process::exit(code),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                    std::process::exit(128 + signal as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
