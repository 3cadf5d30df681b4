//! `wharf serve`: resolve the settings, set up logging, build the application, serve until
//! SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use super::ServeArgs;
use crate::config::{Config, LogFormat};
use crate::startup::Application;

pub(super) fn run(args: &ServeArgs) -> ExitCode {
    let config = match Config::load(&args.overrides(), &|name| std::env::var(name).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wharf serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&config);
    // Allocations of 4 MiB and more get mappings of their own, unmapped when freed. glibc's
    // default threshold grows to the largest block freed, after which an Argon2id check's
    // 19 MiB stayed in the arena of every blocking thread that ran one: twelve concurrent
    // sign-ins left the daemon 235 MiB bigger (test password_checks_leave_no_memory_behind).
    // Fixing the threshold also fixes the trim threshold, at 128 KiB: raised to 8 MiB, so the
    // 1 MiB chunks a blob is served in are reused rather than unmapped and faulted in again.
    // SAFETY: mallopt only sets malloc parameters; no other thread exists yet.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wharf-daemon")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wharf serve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Taken before anything is served: a signal sent as soon as the daemon answers stops
        // it cleanly instead of killing it.
        let mut stop = Box::pin(shutdown_signal());
        // A signal while starting (a data root on a hung disk, say) stops the start too.
        let app = tokio::select! {
            app = Application::build(config) => app?,
            () = &mut stop => {
                eprintln!("wharf serve: stopped while starting");
                return Ok(());
            }
        };
        // Tell systemd (Type=notify) we are ready; a no-op outside systemd.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        app.run_until_stopped(stop).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf serve: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    // The level was validated when the config was resolved.
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Takes SIGTERM and SIGINT now (in the runtime), and resolves at the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
