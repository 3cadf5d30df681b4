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
        set_size(&slave, rows, cols);
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

/// Accepts one connection on `listener` and receives the pty master a runtime sends over it
/// (the other end of `--console-socket`). Waits at most `timeout` for the descriptor.
pub fn receive_master(
    listener: &std::os::unix::net::UnixListener,
    timeout: std::time::Duration,
) -> Result<OwnedFd, String> {
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("accept on the console socket: {e}"))?;
    receive_fd(&stream, timeout)
}

/// Receives the one descriptor sent (SCM_RIGHTS) on a connected console socket.
pub fn receive_fd(stream: &UnixStream, timeout: std::time::Duration) -> Result<OwnedFd, String> {
    use std::os::fd::FromRawFd;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| format!("console socket timeout: {e}"))?;
    let mut name = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receive the pty master: {}", e.desc()))?;
    for cmsg in msg
        .cmsgs()
        .map_err(|e| format!("read the console message: {}", e.desc()))?
    {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel installed this descriptor for us with SCM_RIGHTS; we own it.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err("the console socket carried no descriptor".into())
}

/// Sets a terminal's size (either end of the pty); the program gets SIGWINCH.
pub fn set_size(terminal: &impl AsRawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize from the pointer we pass; a descriptor that is
    // not a terminal only makes the ioctl fail.
    unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}
