//! Spawning container shims (`wharf __shim`). Loading the wharf binary for each container
//! (exec, dynamic linking, relocations, the first page faults) is a measurable part of a
//! container start, so one spare shim waits, already loaded, for the next container's
//! arguments on its stdin (`wharf __shim --spare`), and a new spare is made each time one is
//! taken. A spare whose daemon goes away reads end-of-file and exits.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

#[derive(Debug)]
pub struct Shims {
    exe: PathBuf,
    spare: Mutex<Option<Child>>,
}

impl Shims {
    pub fn new(exe: PathBuf) -> Arc<Shims> {
        Arc::new(Shims {
            exe,
            spare: Mutex::new(None),
        })
    }

    /// A shim running with `args` (what follows `__shim`), its stdout piped: the spare when
    /// one waits, a new process otherwise. The caller calls [`Shims::refill`] once its
    /// container has started, so that loading the next spare does not slow this start.
    pub async fn spawn(self: &Arc<Self>, args: Vec<String>) -> std::io::Result<Child> {
        let spare = self.spare.lock().await.take();
        match spare {
            Some(mut spare) => match hand_over(&mut spare, &args).await {
                Ok(()) => Ok(spare),
                // It died while waiting: it cannot have read anything; start afresh.
                Err(_) => {
                    let _ = spare.start_kill();
                    self.command(&args).stdin(Stdio::null()).spawn()
                }
            },
            None => self.command(&args).stdin(Stdio::null()).spawn(),
        }
    }

    /// Makes a spare in the background, unless one already waits.
    pub fn refill(self: &Arc<Self>) {
        let shims = Arc::clone(self);
        tokio::spawn(async move {
            let mut slot = shims.spare.lock().await;
            if slot.is_none() {
                match shims
                    .command(&["--spare".to_owned(), "-".repeat(super::shim::SPARE_PADDING)])
                    .stdin(Stdio::piped())
                    .spawn()
                {
                    Ok(child) => *slot = Some(child),
                    Err(e) => tracing::warn!(error = %e, "could not start a spare shim"),
                }
            }
        });
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.exe);
        command
            .arg("__shim")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(false);
        command
    }
}

/// Gives a waiting spare its arguments, one JSON line, and closes its stdin.
async fn hand_over(spare: &mut Child, args: &[String]) -> std::io::Result<()> {
    let mut stdin = spare
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("the spare shim has no stdin"))?;
    let mut line = serde_json::to_vec(args).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stdin.write_all(&line).await?;
    stdin.flush().await
}
