//! The `wharf` executable: daemon, client and (with later issues) OCI runtime and shim.
//!
//! Parsing and dispatch are synchronous; a tokio runtime is built only inside the command that
//! needs one, so that hidden subcommands which fork (the shim, the runtime) run in a process that
//! has never had more than one thread.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = wharf::cli::Cli::parse();
    if !matches!(
        cli.command,
        wharf::cli::Command::Serve(_) | wharf::cli::Command::Runtime(_)
    ) {
        // A client whose output is piped into `head` should end quietly, as other Unix tools do,
        // not panic on EPIPE. The daemon and the runtime keep Rust's default (SIGPIPE ignored):
        // the runtime writes to hooks and pipes that may close early, and resets SIGPIPE for
        // every process it starts.
        // SAFETY: restoring a signal's default disposition has no memory-safety preconditions,
        // and no other thread exists yet.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    wharf::cli::run(cli)
}
