//! The `wharf` executable: daemon, client and (with later issues) OCI runtime and shim.
//!
//! Parsing and dispatch are synchronous; a tokio runtime is built only inside the command that
//! needs one, so that hidden subcommands which fork (the shim, the runtime) run in a process that
//! has never had more than one thread.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    wharf::cli::run(wharf::cli::Cli::parse())
}
