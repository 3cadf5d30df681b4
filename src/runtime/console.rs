//! A terminal for the container's process (`process.terminal`): a pty made inside the
//! container's devpts, its master end sent over `--console-socket` (SCM_RIGHTS, as runc does),
//! its slave end made the process's controlling terminal and stdio.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// Makes the pty, hands its master to whoever listens on `socket`, and takes the slave as the
/// controlling terminal and stdio of this process.
pub fn setup(socket: &UnixStream, size: Option<(u16, u16)>) -> Result<(), String> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| format!("open a pty: {}", e.desc()))?;
    grantpt(&master).map_err(|e| format!("grantpt: {}", e.desc()))?;
    unlockpt(&master).map_err(|e| format!("unlockpt: {}", e.desc()))?;
    let name = ptsname_r(&master).map_err(|e| format!("ptsname: {}", e.desc()))?;
    let slave: OwnedFd = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open {name}: {}", e.desc()))?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a valid winsize from the pointer we pass.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(name.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("send the pty master over the console socket: {}", e.desc()))?;
    drop(master);
    nix::unistd::setsid().map_err(|e| format!("setsid: {}", e.desc()))?;
    // SAFETY: TIOCSCTTY takes an integer argument; the slave is a valid terminal descriptor.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(format!(
            "make {name} the controlling terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; slave stays valid until dropped below.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(format!(
                "dup2 the terminal onto {target}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
