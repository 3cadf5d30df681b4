//! The `wharf` executable: daemon, client and (with later issues) OCI runtime and shim.
//!
//! Parsing and dispatch are synchronous; a tokio runtime is built only inside the command that
//! needs one, so that hidden subcommands which fork (the shim, the runtime) run in a process that
//! has never had more than one thread.

use std::process::ExitCode;

use clap::{Args, FromArgMatches, Parser};

fn main() -> ExitCode {
    // `wharf runtime …` is run once per container start by dockerd or the shim: parse only its
    // own command line, not the whole client's, which costs a measurable part of a start.
    // The container shim (spawned by the daemon, never by users): no clap, no tokio.
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).is_some_and(|a| a == "__shim") {
        let args = if raw.get(2).is_some_and(|a| a == "--spare") {
            match wharf::engine::shim::spare_args() {
                Some(args) => args,
                // The daemon went away before it needed this spare.
                None => return ExitCode::SUCCESS,
            }
        } else {
            raw[2..].to_vec()
        };
        return match wharf::engine::shim::ShimArgs::parse(&args) {
            Ok(args) => ExitCode::from(wharf::engine::shim::run(&args) as u8),
            Err(message) => {
                eprintln!("{message}");
                ExitCode::from(2)
            }
        };
    }
    let mut args = std::env::args_os();
    let argv0 = args.next();
    if args.next().is_some_and(|a| a == "runtime") {
        let command = wharf::cli::runtime::RuntimeArgs::augment_args(
            clap::Command::new("runtime")
                .bin_name("wharf runtime")
                .about("The OCI runtime: runc's command line (create, start, run, state, kill, delete, …)"),
        );
        let matches = command.get_matches_from(argv0.into_iter().chain(args));
        let runtime = wharf::cli::runtime::RuntimeArgs::from_arg_matches(&matches)
            .unwrap_or_else(|e| e.exit());
        return wharf::cli::runtime::run(runtime);
    }
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
