//! The typed, one-way-at-a-time channel between the runtime (parent) and the container's init
//! (child), over a unix socket pair made before `clone3`.
//!
//! ```text
//!   parent (wharf runtime create/run)              child (container init, PID 1 of its pid ns)
//!   ─────────────────────────────────              ────────────────────────────────────────────
//!   socketpair, clone3(new pid ns) ───────────▶    (starts as PID 1 of a new pid ns)
//!   (v2: cloned into its cgroup); move the child   no user ns: unshare mnt/uts/ipc/net, join
//!    off this CPU (both work meanwhile)              namespaces by path, hostname, lo, rootfs
//!   v1: make the cgroups; create: the exec fifo;
//!   user ns: write uid_map, gid_map, move the        mounts, devices (all while the parent
//!    child into its cgroup                           works; a failure waits for Proceed)
//!   send  Parent::Proceed  ───────────────────▶    cgroup v1: write 0 to each `tasks` file;
//!                                                  CPU mask reset to the whole cpuset
//!                                                  user ns (every ns came with the clone):
//!                                                    become its root, then the same steps
//!         ◀──────────────────────────────────      send Child::Mounted    ┐ only with prestart
//!   prestart + createRuntime hooks                                         │ or createRuntime
//!   send  Parent::HooksDone ──────────────────▶                           ┘ hooks
//!                                                  cgroup ns, cgroup mounts, createContainer
//!                                                  hooks, pivot_root, sysctls,
//!                                                  masked/readonly paths, terminal, executable
//!                                                  resolved inside the rootfs
//!         ◀──────────────────────────────────      send Child::Ready  (or Child::Failed{message}
//!                                                  at any step)
//!   state.json written: "created"                  create: opens exec fifo O_WRONLY ─ blocks
//!   ... `start` opens the fifo O_RDONLY  ──────▶   writes one byte, drops privileges, execve
//!   (run: no fifo; the state is written while     (run: straight on to privileges and execve)
//!    the child goes on)
//! ```
//! An `execve` failure after Ready is written to a CLOEXEC pipe that `run` reads (EOF means
//! the exec happened).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What the parent tells the child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Parent {
    /// The child is in its cgroup; it may set itself up.
    Proceed,
    /// The runtime's hooks ran; the child may pivot into its root.
    HooksDone,
}

/// What the child tells the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Child {
    /// The mounts are made, the root not yet pivoted into: time for the runtime's hooks.
    Mounted,
    /// The container is set up; under `create` it now waits on the exec fifo.
    Ready,
    /// Set-up failed; the message names the step and the cause.
    Failed { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the {peer} closed the sync channel before sending {expected}")]
    Closed {
        peer: &'static str,
        expected: &'static str,
    },
    #[error("sync channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("sync channel: expected {expected}, received {received:?}")]
    Unexpected {
        expected: &'static str,
        received: String,
    },
}

/// One end of the channel.
pub struct Channel {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    peer: &'static str,
}

impl Channel {
    /// A connected pair: (the parent's end, the child's end). Both are CLOEXEC.
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = UnixStream::pair()?;
        let wrap = |s: UnixStream, peer| -> std::io::Result<Channel> {
            Ok(Channel {
                reader: BufReader::new(s.try_clone()?),
                writer: s,
                peer,
            })
        };
        Ok((wrap(a, "container init")?, wrap(b, "runtime")?))
    }

    pub fn send<T: Serialize>(&mut self, message: &T) -> Result<(), ChannelError> {
        let mut line = serde_json::to_vec(message).expect("channel messages serialize");
        line.push(b'\n');
        self.writer.write_all(&line)?;
        Ok(())
    }

    /// Waits for the next message, which must be a `T` (named `expected` in errors).
    pub fn recv<T: DeserializeOwned>(&mut self, expected: &'static str) -> Result<T, ChannelError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ChannelError::Closed {
                peer: self.peer,
                expected,
            });
        }
        serde_json::from_str(&line).map_err(|_| ChannelError::Unexpected {
            expected,
            received: line.trim().chars().take(200).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_and_surprises_are_named() {
        let (mut parent, mut child) = Channel::pair().unwrap();
        parent.send(&Parent::Proceed).unwrap();
        assert_eq!(child.recv::<Parent>("Proceed").unwrap(), Parent::Proceed);
        child
            .send(&Child::Failed {
                message: "mount /proc: EPERM".into(),
            })
            .unwrap();
        assert_eq!(
            parent.recv::<Child>("Ready").unwrap(),
            Child::Failed {
                message: "mount /proc: EPERM".into()
            }
        );
        child.send(&Parent::Proceed).unwrap();
        let err = parent.recv::<Child>("Ready").unwrap_err().to_string();
        assert_eq!(
            err,
            "sync channel: expected Ready, received \"\\\"Proceed\\\"\""
        );
        drop(child);
        let err = parent.recv::<Child>("Ready").unwrap_err().to_string();
        assert_eq!(
            err,
            "the container init closed the sync channel before sending Ready"
        );
    }
}
