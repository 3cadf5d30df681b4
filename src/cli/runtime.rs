//! `wharf runtime …`: runc's command line over [`crate::runtime`], so that tools written for
//! runc (dockerd, containerd) can drive it. Synchronous: no tokio runtime ever exists here.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::runtime::container::{CreateOptions, ExecOptions, Runtime, parse_signal};

/// Where container state lives unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/wharf/runtime";

#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Directory for container state
    #[arg(long, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Also write errors to this file (as runc does, for dockerd and containerd to read)
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Format of the log file: text or json
    #[arg(long, default_value = "text")]
    pub log_format: String,
    /// Use systemd for cgroups (not supported: refused)
    #[arg(long)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility
    #[arg(long)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: RuntimeCommand,
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The bundle directory (holding config.json)
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Write the init process's pid to this file
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the terminal's master end to (for process.terminal)
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Move the root and chroot instead of pivot_root (for a rootfs on ramfs)
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility
    #[arg(long)]
    pub no_new_keyring: bool,
}

#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// Create a container (its program waits for `start`)
    Create {
        #[command(flatten)]
        bundle: BundleArgs,
        id: String,
    },
    /// Start a created container
    Start { id: String },
    /// Create and start a container, wait for it, exit with its status
    Run {
        #[command(flatten)]
        bundle: BundleArgs,
        /// Do not wait for the container
        #[arg(long, short = 'd')]
        detach: bool,
        id: String,
    },
    /// Run another process in a running container
    Exec(ExecArgs),
    /// Print the state of a container (OCI JSON)
    State { id: String },
    /// Send a signal (default SIGTERM) to a container
    Kill {
        /// Signal every process of the container
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a container
    Delete {
        /// Kill it first if it runs
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    /// Freeze every process of a container
    Pause { id: String },
    /// Thaw a paused container
    Resume { id: String },
    /// List containers
    List {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// List a container's processes
    Ps {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        id: String,
    },
    /// Print a container's resource use (cgroup statistics) as JSON
    Events {
        /// Print the statistics once (the only mode)
        #[arg(long)]
        stats: bool,
        id: String,
    },
    /// Print what this runtime supports (OCI features JSON)
    Features,
    /// Write a default config.json into the bundle
    Spec {
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// An OCI process.json to run (instead of COMMAND)
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    /// Do not wait for the process
    #[arg(long, short = 'd')]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Give the process a terminal (needs --console-socket)
    #[arg(long, short = 't')]
    pub tty: bool,
    #[arg(long)]
    pub cwd: Option<String>,
    /// Extra environment, KEY=VALUE (repeatable)
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// UID[:GID]
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn fail(args: &RuntimeArgs, message: &str) -> ExitCode {
    eprintln!("wharf runtime: {message}");
    if let Some(log) = &args.log {
        let line = if args.log_format == "json" {
            serde_json::json!({
                "level": "error",
                "msg": message,
                "time": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            })
            .to_string()
        } else {
            format!("level=error msg={message:?}")
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    ExitCode::FAILURE
}

fn create_options(b: &BundleArgs) -> Result<CreateOptions, String> {
    Ok(CreateOptions {
        bundle: b.bundle.clone(),
        pid_file: b.pid_file.clone(),
        console_socket: b.console_socket.clone(),
        no_pivot: b.no_pivot,
    })
}

/// The process `exec` runs: from `--process`, or the container's own process with another
/// command (and extra environment, cwd, user, terminal).
fn exec_process(runtime: &Runtime, e: &ExecArgs) -> Result<oci_spec::runtime::Process, String> {
    if let Some(path) = &e.process {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("read {}: {err}", path.display()))?;
        return serde_json::from_str(&text)
            .map_err(|err| format!("{}: not an OCI process: {err}", path.display()));
    }
    if e.command.is_empty() {
        return Err("exec needs a command, or --process with a process.json".into());
    }
    let state = runtime.root.load(&e.id).map_err(|err| err.to_string())?;
    let bundle =
        crate::runtime::spec::Bundle::load(&state.bundle).map_err(|err| err.to_string())?;
    let mut value = serde_json::to_value(bundle.spec.process().clone().unwrap_or_default())
        .expect("a process serializes");
    value["args"] = serde_json::json!(e.command);
    value["terminal"] = e.tty.into();
    if let Some(cwd) = &e.cwd {
        value["cwd"] = cwd.clone().into();
    }
    if let Some(user) = &e.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user.as_str(), "0"));
        value["user"]["uid"] = uid
            .parse::<u32>()
            .map_err(|_| format!("--user {user}: expected UID[:GID]"))?
            .into();
        value["user"]["gid"] = gid
            .parse::<u32>()
            .map_err(|_| format!("--user {user}: expected UID[:GID]"))?
            .into();
    }
    if let Some(env) = value["env"].as_array_mut() {
        for kv in &e.env {
            let key = kv.split('=').next().unwrap_or_default();
            env.retain(|v| v.as_str().is_none_or(|s| s.split('=').next() != Some(key)));
            env.push(kv.clone().into());
        }
    }
    serde_json::from_value(value).map_err(|err| format!("exec process: {err}"))
}

/// Runs one runtime command; errors go to stderr (and `--log`), exit status 1.
pub fn run(args: RuntimeArgs) -> ExitCode {
    if args.systemd_cgroup {
        return fail(
            &args,
            "--systemd-cgroup is not supported: wharf manages cgroups through the cgroup file system (cgroupfs)",
        );
    }
    let runtime = Runtime::new(&args.root);
    let result: Result<ExitCode, String> = (|| match &args.command {
        RuntimeCommand::Create { bundle, id } => {
            runtime
                .create(id, &create_options(bundle)?)
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        RuntimeCommand::Start { id } => {
            runtime.start(id).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        RuntimeCommand::Run { bundle, detach, id } => {
            let code = runtime
                .run(id, &create_options(bundle)?, *detach)
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        RuntimeCommand::Exec(e) => {
            let process = exec_process(&runtime, e)?;
            let code = runtime
                .exec(
                    &e.id,
                    &ExecOptions {
                        process,
                        detach: e.detach,
                        pid_file: e.pid_file.clone(),
                        console_socket: e.console_socket.clone(),
                    },
                )
                .map_err(|err| err.to_string())?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        RuntimeCommand::State { id } => {
            let doc = runtime.state(id).map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("state serializes")
            );
            Ok(ExitCode::SUCCESS)
        }
        RuntimeCommand::Kill { all, id, signal } => {
            let signal =
                parse_signal(signal.as_deref().unwrap_or("SIGTERM")).map_err(|e| e.to_string())?;
            runtime.kill(id, signal, *all).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        RuntimeCommand::Delete { force, id } => {
            runtime.delete(id, *force).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        RuntimeCommand::Pause { id } => {
            runtime.pause(id).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        RuntimeCommand::Resume { id } => {
            runtime.resume(id).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        RuntimeCommand::List { format, quiet } => {
            let list = runtime.list().map_err(|e| e.to_string())?;
            if format == "json" {
                println!("{}", serde_json::to_string(&list).expect("list serializes"));
            } else if *quiet {
                for c in &list {
                    println!("{}", c["id"].as_str().unwrap_or_default());
                }
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        ["id", "pid", "status", "bundle", "created"]
                            .iter()
                            .map(|k| match &c[*k] {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect()
                    })
                    .collect();
                super::print_table(&["ID", "PID", "STATUS", "BUNDLE", "CREATED"], &rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        RuntimeCommand::Ps { format, id } => {
            let pids = runtime.processes(id).map_err(|e| e.to_string())?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids).expect("pids serialize"));
            } else {
                let rows: Vec<Vec<String>> = pids
                    .iter()
                    .map(|pid| {
                        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                            .map(|b| {
                                String::from_utf8_lossy(&b)
                                    .replace('\0', " ")
                                    .trim()
                                    .to_owned()
                            })
                            .unwrap_or_default();
                        vec![pid.to_string(), cmd]
                    })
                    .collect();
                super::print_table(&["PID", "CMD"], &rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        RuntimeCommand::Events { id, .. } => {
            let stats = runtime.stats(id).map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::json!({"type": "stats", "id": id, "data": stats})
            );
            Ok(ExitCode::SUCCESS)
        }
        RuntimeCommand::Features => {
            let doc = crate::runtime::features();
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("features serialize")
            );
            Ok(ExitCode::SUCCESS)
        }
        RuntimeCommand::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(format!("{} exists already", path.display()));
            }
            let spec = crate::runtime::default_spec();
            let text = serde_json::to_string_pretty(&spec).expect("spec serializes");
            std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    })();
    match result {
        Ok(code) => code,
        Err(message) => fail(&args, &message),
    }
}
