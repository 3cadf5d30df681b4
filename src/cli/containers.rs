//! Container commands with docker's verbs: run, create, start, stop, kill, rm, ps, logs, wait.

use clap::Args;
use hyper::Method;

use super::client::{ApiClient, ClientError};
use super::interactive;
use super::{Format, print_table};
use crate::domain::percent_encode;
use crate::engine::ContainerView;

/// What `wharf run` and `wharf create` take.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name the container (default: wharf-<id prefix>)
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY for an empty value); repeatable
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User to run as: name|uid[:group|gid]
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Replace the image's entrypoint
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name
    #[arg(long)]
    pub hostname: Option<String>,
    /// Remove the container when it ends
    #[arg(long)]
    pub rm: bool,
    /// Restart policy: no, always, on-failure[:N] or unless-stopped
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// Memory limit, e.g. 256m or 1g
    #[arg(short = 'm', long, value_parser = parse_size)]
    pub memory: Option<i64>,
    /// Memory plus swap, e.g. 512m (-1: unlimited swap)
    #[arg(long, value_parser = parse_swap, allow_hyphen_values = true)]
    pub memory_swap: Option<i64>,
    /// CPUs the container may use, e.g. 1.5
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<i64>,
    /// Relative CPU weight (default 1024)
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<u64>,
    /// Process limit (default 2048; -1: unlimited)
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Mount the root filesystem read-only
    #[arg(long)]
    pub read_only: bool,
    /// Run an init as PID 1 that reaps zombies and forwards signals
    #[arg(long)]
    pub init: bool,
    /// Bind a host path or a named volume: SOURCE:TARGET[:ro]; repeatable
    #[arg(short = 'v', long = "volume", value_name = "SOURCE:TARGET[:ro]")]
    pub volumes: Vec<String>,
    /// Mount, docker's long form: type=bind|volume|tmpfs,source=…,target=…[,readonly]
    /// [,volume-nocopy][,tmpfs-size=…][,tmpfs-mode=…]; repeatable
    #[arg(long = "mount", value_name = "OPTIONS")]
    pub mounts: Vec<String>,
    /// Mount a tmpfs: PATH[:OPTIONS]; repeatable
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    pub tmpfs: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments); repeatable
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Set a label KEY=VALUE; repeatable
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Add a capability to the default set (ALL for every one); repeatable
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop a capability from the default set (ALL for every one); repeatable
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Give every capability and no masked paths (use with care)
    #[arg(long)]
    pub privileged: bool,
    /// Security option: seccomp=unconfined, seccomp=PROFILE.json or no-new-privileges[=false];
    /// repeatable
    #[arg(long = "security-opt", value_name = "OPTION")]
    pub security_opt: Vec<String>,
    /// Healthcheck command, run with /bin/sh -c in the container
    #[arg(long, value_name = "COMMAND")]
    pub health_cmd: Option<String>,
    /// Time between healthchecks, e.g. 30s (default: the image's, else 30s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns)]
    pub health_interval: Option<u64>,
    /// Time a healthcheck may take, e.g. 5s (default 30s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns)]
    pub health_timeout: Option<u64>,
    /// Failures in a row that make the container unhealthy (default 3)
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u32>,
    /// Time after the start during which failures do not count, e.g. 1m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns)]
    pub health_start_period: Option<u64>,
    /// Run no healthcheck, not even the image's
    #[arg(long, conflicts_with = "health_cmd")]
    pub no_healthcheck: bool,
    /// Signal that stop sends first (default: the image's, else SIGTERM)
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Seconds stop waits before SIGKILL (default 10)
    #[arg(long)]
    pub stop_timeout: Option<u64>,
    /// Log option: max-size=SIZE (rotate at, default 10m) or max-file=N (files kept, default 3)
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opts: Vec<String>,
    /// Network: bridge (the default), none, host, container:NAME, or a user network
    #[arg(long, alias = "net", value_name = "NETWORK")]
    pub network: Option<String>,
    /// A fixed IPv4 address on a user network
    #[arg(long)]
    pub ip: Option<String>,
    /// A name server for the container's /etc/resolv.conf; repeatable
    #[arg(long)]
    pub dns: Vec<String>,
    /// An /etc/hosts line NAME:IP; repeatable
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_hosts: Vec<String>,
    /// Publish a port: [ip:][hostport:]port[/tcp|udp]; repeatable
    #[arg(short = 'p', long = "publish", value_name = "PORT")]
    pub ports: Vec<String>,
    /// Publish every port the image exposes on a free host port
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// Another name the container answers to on its user network; repeatable
    #[arg(long = "network-alias", value_name = "ALIAS")]
    pub network_aliases: Vec<String>,
    /// Keep stdin open and send it to the container
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the container a terminal
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Keys that detach from the container and leave it running
    #[arg(long, default_value = interactive::DEFAULT_DETACH_KEYS)]
    pub detach_keys: String,
    /// Pull the image: missing (when it is not here), always, or never
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
    /// The image (local name, name@digest, or a registry reference to pull)
    pub image: String,
    /// Command and arguments (default: the image's)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

impl CreateArgs {
    /// The request; env files are read here, on the client's side, as docker does.
    fn body(&self) -> Result<serde_json::Value, ClientError> {
        let mut env = Vec::new();
        for file in &self.env_file {
            let text = std::fs::read_to_string(file).map_err(|e| ClientError::Input {
                reason: format!("cannot read env file {}: {e}", file.display()),
            })?;
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                // A bare name takes the value from the client's environment, as docker does.
                env.push(match line.split_once('=') {
                    Some(_) => line.to_owned(),
                    None => format!("{line}={}", std::env::var(line).unwrap_or_default()),
                });
            }
        }
        env.extend(self.env.iter().cloned());
        let mut labels = serde_json::Map::new();
        for label in &self.labels {
            let (k, v) = label.split_once('=').unwrap_or((label.as_str(), ""));
            if k.is_empty() {
                return Err(ClientError::Input {
                    reason: format!("label {label:?} has no name"),
                });
            }
            labels.insert(k.to_owned(), v.into());
        }
        let (mut log_max_size, mut log_max_files) = (None, None);
        for opt in &self.log_opts {
            match opt.split_once('=') {
                Some(("max-size", v)) => {
                    log_max_size =
                        Some(parse_size(v).map_err(|reason| ClientError::Input { reason })?)
                }
                Some(("max-file", v)) => {
                    log_max_files =
                        Some(v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                            ClientError::Input {
                                reason: format!(
                                    "log option {opt:?}: max-file takes a number of at least 1"
                                ),
                            }
                        })?)
                }
                _ => {
                    return Err(ClientError::Input {
                        reason: format!(
                            "log option {opt:?} is not known: give max-size=SIZE or max-file=N"
                        ),
                    });
                }
            }
        }
        let mut binds = self.volumes.clone();
        let mut tmpfs = self.tmpfs.clone();
        for mount in &self.mounts {
            match parse_mount(mount).map_err(|reason| ClientError::Input { reason })? {
                Mount::Bind(b) => binds.push(b),
                Mount::Tmpfs(t) => tmpfs.push(t),
            }
        }
        let mut security_opt = Vec::new();
        for opt in &self.security_opt {
            // A seccomp profile given by path is read here and sent whole, as docker does.
            security_opt.push(match opt.split_once(['=', ':']) {
                Some(("seccomp", path)) if path != "unconfined" && !path.starts_with('{') => {
                    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Input {
                        reason: format!("cannot read seccomp profile {path}: {e}"),
                    })?;
                    format!("seccomp={text}")
                }
                _ => opt.clone(),
            });
        }
        let test: Vec<&str> = match (&self.health_cmd, self.no_healthcheck) {
            (_, true) => vec!["NONE"],
            (Some(cmd), false) => vec!["CMD-SHELL", cmd.as_str()],
            (None, false) => Vec::new(),
        };
        let healthcheck = serde_json::json!({
            "test": test,
            "interval": self.health_interval,
            "timeout": self.health_timeout,
            "retries": self.health_retries,
            "start_period": self.health_start_period,
        });
        Ok(serde_json::json!({
            "network": self.network,
            "ip": self.ip,
            "dns": self.dns,
            "add_hosts": self.add_hosts,
            "network_aliases": self.network_aliases,
            "ports": self.ports,
            "publish_all": self.publish_all,
            "tty": self.tty,
            "open_stdin": self.interactive,
            "healthcheck": healthcheck,
            "security_opt": security_opt,
            "log_max_size": log_max_size,
            "log_max_files": log_max_files,
            "env": env,
            "labels": labels,
            "tmpfs": tmpfs,
            "cap_add": self.cap_add,
            "cap_drop": self.cap_drop,
            "privileged": self.privileged,
            "stop_signal": self.stop_signal,
            "stop_timeout": self.stop_timeout,
            "name": self.name,
            "image": self.image,
            "cmd": self.command,
            "entrypoint": self.entrypoint.iter().collect::<Vec<_>>(),
            "working_dir": self.workdir,
            "user": self.user,
            "hostname": self.hostname,
            "auto_remove": self.rm,
            "restart": self.restart,
            "memory": self.memory,
            "memory_swap": self.memory_swap,
            "nano_cpus": self.cpus,
            "cpu_shares": self.cpu_shares,
            "pids_limit": self.pids_limit,
            "read_only": self.read_only,
            "init": self.init,
            "binds": binds,
        }))
    }
}

/// What one `--mount` comes to: a `-v` bind or a `--tmpfs`.
#[derive(Debug, PartialEq, Eq)]
enum Mount {
    Bind(String),
    Tmpfs(String),
}

/// Reads docker's `--mount` (`key=value` pairs, commas between) into the short forms.
fn parse_mount(text: &str) -> Result<Mount, String> {
    let (mut kind, mut source, mut target) = ("volume", None, None);
    let (mut read_only, mut nocopy) = (false, false);
    let mut tmpfs_options = Vec::new();
    for field in text.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        match key {
            "type" => kind = value,
            "source" | "src" => source = Some(value),
            "target" | "destination" | "dst" => target = Some(value),
            "readonly" | "ro" => read_only = matches!(value, "" | "true" | "1"),
            "volume-nocopy" => nocopy = matches!(value, "" | "true" | "1"),
            "tmpfs-size" => tmpfs_options.push(format!("size={value}")),
            "tmpfs-mode" => tmpfs_options.push(format!("mode={value}")),
            _ => return Err(format!("--mount {text:?}: {key:?} is not a known field")),
        }
    }
    let target = target
        .filter(|t| t.starts_with('/'))
        .ok_or_else(|| format!("--mount {text:?}: give target=ABSOLUTE-PATH"))?;
    let mut options = Vec::new();
    if read_only {
        options.push("ro");
    }
    if nocopy {
        options.push("nocopy");
    }
    let suffix = if options.is_empty() {
        String::new()
    } else {
        format!(":{}", options.join(","))
    };
    match (kind, source) {
        ("bind", Some(src)) if src.starts_with('/') => {
            Ok(Mount::Bind(format!("{src}:{target}{suffix}")))
        }
        ("bind", _) => Err(format!(
            "--mount {text:?}: a bind needs source=ABSOLUTE-HOST-PATH"
        )),
        ("volume", Some(src)) if !src.is_empty() => {
            if src.contains('/') {
                return Err(format!(
                    "--mount {text:?}: a volume source is a volume name"
                ));
            }
            Ok(Mount::Bind(format!("{src}:{target}{suffix}")))
        }
        // No source: an anonymous volume.
        ("volume", _) if suffix.is_empty() => Ok(Mount::Bind(target.to_owned())),
        ("volume", _) => Err(format!(
            "--mount {text:?}: options of an anonymous volume are not supported; name the volume"
        )),
        ("tmpfs", None) => Ok(Mount::Tmpfs(if tmpfs_options.is_empty() {
            target.to_owned()
        } else {
            format!("{target}:{}", tmpfs_options.join(","))
        })),
        ("tmpfs", Some(_)) => Err(format!("--mount {text:?}: a tmpfs has no source")),
        (other, _) => Err(format!(
            "--mount {text:?}: type {other:?} is not known (bind, volume, tmpfs)"
        )),
    }
}

/// `30s`, `1m30s`, `500ms` as nanoseconds.
fn parse_duration_ns(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?}: {e} (e.g. 30s, 1m, 500ms)"))?;
    u64::try_from(d.as_nanos()).map_err(|_| format!("duration {text:?} is too long"))
}

/// `exec -i`/`-t`: the program on a WebSocket session, a real terminal with `-t`.
async fn exec_interactive(client: ApiClient, args: &ExecArgs) -> Result<(), ClientError> {
    let detach_keys = interactive::parse_detach_keys(&args.detach_keys)
        .map_err(|reason| ClientError::Input { reason })?;
    let mut ws = client.websocket(&path(&args.container, "/exec/ws")).await?;
    let size = interactive::terminal_size().filter(|_| args.tty);
    let start = serde_json::json!({
        "cmd": args.command, "env": args.env, "working_dir": args.workdir, "user": args.user,
        "tty": args.tty, "rows": size.map(|s| s.0), "cols": size.map(|s| s.1),
    });
    {
        use futures_util::SinkExt;
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            start.to_string().into(),
        ))
        .await
        .map_err(|e| ClientError::Input {
            reason: format!("the session with the daemon failed: {e}"),
        })?;
    }
    let ended = interactive::run_session(
        ws,
        interactive::SessionOptions {
            stdin: args.interactive,
            tty: args.tty,
            detach_keys,
        },
    )
    .await;
    match ended? {
        interactive::Ended::Exited(0) => Ok(()),
        interactive::Ended::Exited(code) => {
            Err(ClientError::ContainerExit(code.clamp(0, 255) as u8))
        }
        interactive::Ended::Detached => Ok(()),
        interactive::Ended::Closed => Err(ClientError::Input {
            reason: "the exec ended without an exit code".into(),
        }),
    }
}

/// `wharf attach`: the container's terminal or output (and stdin, unless told not to), until
/// it ends (with its exit code) or the detach keys.
pub(super) async fn attach(
    client: ApiClient,
    container: String,
    no_stdin: bool,
    detach_keys: String,
) -> Result<(), ClientError> {
    let detach_keys = interactive::parse_detach_keys(&detach_keys)
        .map_err(|reason| ClientError::Input { reason })?;
    let view: ContainerView = client.get_json(&path(&container, "")).await?;
    let ws = client.websocket(&path(&view.id, "/attach/ws")).await?;
    let stdin = view.config.open_stdin && !no_stdin;
    let ended = interactive::run_session(
        ws,
        interactive::SessionOptions {
            stdin,
            tty: view.config.tty,
            detach_keys,
        },
    )
    .await;
    if ended? == interactive::Ended::Detached {
        eprintln!("\r\nread escape sequence: {container} keeps running");
        return Ok(());
    }
    let waited: serde_json::Value = client
        .send_json(
            Method::POST,
            &path(&view.id, "/wait"),
            &serde_json::json!({}),
        )
        .await?;
    match waited["exit_code"].as_i64().unwrap_or(255) {
        0 => Ok(()),
        code => Err(ClientError::ContainerExit(code.clamp(0, 255) as u8)),
    }
}

/// `wharf port`: a container's published ports.
pub(super) async fn port(client: ApiClient, container: String) -> Result<(), ClientError> {
    let view: ContainerView = client.get_json(&path(&container, "")).await?;
    for p in view.network_settings.iter().flat_map(|n| n.ports.iter()) {
        println!(
            "{}/{} -> {}:{}",
            p.container_port, p.protocol, p.host_ip, p.host_port
        );
    }
    Ok(())
}

/// `512`, `64k`, `256m`, `1g` (bytes; powers of 1024, as docker reads them).
pub fn parse_size(text: &str) -> Result<i64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, unit) = match t
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '.')
    {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => {
            return Err(format!(
                "invalid size {text:?}: give a number with k, m, g or t, e.g. 256m"
            ));
        }
    };
    let n: f64 = digits.parse().map_err(|_| {
        format!("invalid size {text:?}: give a number with k, m, g or t, e.g. 256m")
    })?;
    Ok((n * (1u64 << shift) as f64) as i64)
}

fn parse_swap(text: &str) -> Result<i64, String> {
    if text.trim() == "-1" {
        Ok(-1)
    } else {
        parse_size(text)
    }
}

/// `--cpus 1.5` as billionths of a CPU.
fn parse_cpus(text: &str) -> Result<i64, String> {
    let cpus: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid --cpus {text:?}: give a number such as 0.5 or 2"))?;
    if !cpus.is_finite() || cpus <= 0.0 {
        return Err(format!("invalid --cpus {text:?}: it must be more than 0"));
    }
    Ok((cpus * 1e9) as i64)
}

fn path(id: &str, action: &str) -> String {
    format!("/api/v1/containers/{}{action}", percent_encode(id))
}

/// When `run` and `create` pull their image, as docker's `--pull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    Missing,
    Always,
    Never,
}

/// Creates the container, pulling its image first (`always`) or when the daemon does not have
/// it (`missing`), with the pull's progress on stderr.
async fn create_pulling(
    client: &ApiClient,
    args: &CreateArgs,
    body: &serde_json::Value,
) -> Result<ContainerView, ClientError> {
    if args.pull == PullPolicy::Always {
        super::images::pull(client.clone(), args.image.clone(), false).await?;
    }
    match client
        .send_json(Method::POST, "/api/v1/containers", body)
        .await
    {
        Err(ClientError::Api { status, message })
            if status == hyper::StatusCode::NOT_FOUND
                && message.starts_with("no such image")
                && args.pull == PullPolicy::Missing =>
        {
            eprintln!("Unable to find image '{}' here: pulling it", args.image);
            super::images::pull(client.clone(), args.image.clone(), false).await?;
            client
                .send_json(Method::POST, "/api/v1/containers", body)
                .await
        }
        other => other,
    }
}

pub(super) async fn create(client: ApiClient, args: CreateArgs) -> Result<(), ClientError> {
    let created = create_pulling(&client, &args, &args.body()?).await?;
    println!("{}", created.id);
    Ok(())
}

pub(super) async fn run(
    client: ApiClient,
    args: CreateArgs,
    detach: bool,
) -> Result<(), ClientError> {
    // In the foreground the client removes the container after reading all of its output;
    // left to the daemon, it could be gone before the client asked for its logs.
    if args.rm && args.restart.as_deref().is_some_and(|r| r != "no") {
        return Err(ClientError::Input {
            reason: "--rm and a restart policy do not go together".into(),
        });
    }
    let mut body = args.body()?;
    if !detach {
        body["auto_remove"] = false.into();
    }
    let attach = !detach && (args.interactive || args.tty);
    let detach_keys = interactive::parse_detach_keys(&args.detach_keys)
        .map_err(|reason| ClientError::Input { reason })?;
    let created = create_pulling(&client, &args, &body).await?;
    let started = client
        .send_json::<ContainerView>(
            Method::POST,
            &path(
                &created.id,
                if attach {
                    "/start?attach=true"
                } else {
                    "/start"
                },
            ),
            &serde_json::json!({}),
        )
        .await;
    if let Err(e) = started {
        if args.rm {
            let _ = client
                .send(
                    Method::DELETE,
                    &path(&created.id, "?force=true&volumes=true"),
                    None,
                )
                .await;
        }
        return Err(e);
    }
    if detach {
        println!("{}", created.id);
        return Ok(());
    }
    let wait_path = path(&created.id, "/wait");
    let no_body = serde_json::json!({});
    let wait = || client.send_json::<serde_json::Value>(Method::POST, &wait_path, &no_body);
    let waited = if attach {
        let ws = client.websocket(&path(&created.id, "/attach/ws")).await?;
        let ended = interactive::run_session(
            ws,
            interactive::SessionOptions {
                stdin: args.interactive,
                tty: args.tty,
                detach_keys,
            },
        )
        .await;
        if ended? == interactive::Ended::Detached {
            eprintln!("\r\nread escape sequence: {} keeps running", created.id);
            return Ok(());
        }
        wait().await?
    } else {
        // The exit code is asked for while the output streams: no round trip after it ends.
        tokio::try_join!(follow_logs(&client, &created.id, None), wait())?.1
    };
    let code = waited["exit_code"].as_i64().unwrap_or(255);
    if args.rm {
        client
            .send(
                Method::DELETE,
                &path(&created.id, "?force=true&volumes=true"),
                None,
            )
            .await?;
    }
    if code != 0 {
        return Err(ClientError::ContainerExit(code.clamp(0, 255) as u8));
    }
    Ok(())
}

/// Prints a container's output, stdout to stdout and stderr to stderr, until it ends.
async fn follow_logs(client: &ApiClient, id: &str, tail: Option<usize>) -> Result<(), ClientError> {
    use std::io::Write;
    let mut query = "?follow=true".to_owned();
    if let Some(n) = tail {
        query.push_str(&format!("&tail={n}"));
    }
    client
        .get_lines(&path(id, &format!("/logs{query}")), &mut |line| {
            print_entry(line, false);
        })
        .await?;
    let _ = std::io::stdout().flush();
    Ok(())
}

fn print_entry(line: &str, timestamps: bool) {
    use std::io::Write;
    let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
        return;
    };
    let text = entry["log"].as_str().unwrap_or_default();
    let prefix = if timestamps {
        format!("{} ", entry["time"].as_str().unwrap_or_default())
    } else {
        String::new()
    };
    if entry["stream"] == "stderr" {
        let _ = write!(std::io::stderr(), "{prefix}{text}");
    } else {
        let mut out = std::io::stdout();
        let _ = write!(out, "{prefix}{text}");
        let _ = out.flush();
    }
}

/// `--since`/`--until`: RFC 3339, unix seconds, or a duration before now (`10m`, `2h`).
fn time_arg(what: &str, text: &str) -> Result<String, ClientError> {
    if text.parse::<u64>().is_ok() || humantime::parse_rfc3339_weak(text).is_ok() {
        return Ok(text.to_owned());
    }
    let ago = humantime::parse_duration(text).map_err(|_| ClientError::Input {
        reason: format!(
            "--{what} {text:?}: give a time (RFC 3339 or unix seconds) or a duration such as 10m"
        ),
    })?;
    let at = std::time::SystemTime::now() - ago;
    Ok(humantime::format_rfc3339_nanos(at).to_string())
}

pub(super) async fn logs(
    client: ApiClient,
    container: String,
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
    since: Option<String>,
    until: Option<String>,
) -> Result<(), ClientError> {
    let mut query = format!("?follow={follow}");
    if let Some(n) = tail {
        query.push_str(&format!("&tail={n}"));
    }
    for (what, value) in [("since", since), ("until", until)] {
        if let Some(v) = value {
            query.push_str(&format!("&{what}={}", percent_encode(&time_arg(what, &v)?)));
        }
    }
    client
        .get_lines(&path(&container, &format!("/logs{query}")), &mut |line| {
            print_entry(line, timestamps)
        })
        .await
}

pub(super) async fn act(
    client: ApiClient,
    verb: &str,
    containers: Vec<String>,
    query: String,
) -> Result<(), ClientError> {
    let mut failed = None;
    for c in containers {
        let result = match verb {
            "rm" => client.send(Method::DELETE, &path(&c, &query), None).await,
            _ => {
                client
                    .send(
                        Method::POST,
                        &path(&c, &format!("/{verb}{query}")),
                        Some(&serde_json::json!({})),
                    )
                    .await
            }
        };
        match result {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("wharf: {e}");
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(_) => Err(ClientError::Input {
            reason: format!("{verb} failed for some containers"),
        }),
        None => Ok(()),
    }
}

pub(super) async fn wait(client: ApiClient, container: String) -> Result<(), ClientError> {
    let waited: serde_json::Value = client
        .send_json(
            Method::POST,
            &path(&container, "/wait"),
            &serde_json::json!({}),
        )
        .await?;
    println!("{}", waited["exit_code"]);
    Ok(())
}

pub(super) async fn ps(
    client: ApiClient,
    all: bool,
    quiet: bool,
    format: Format,
) -> Result<(), ClientError> {
    let list: Vec<ContainerView> = client
        .get_json(&format!("/api/v1/containers?all={all}"))
        .await?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&list).expect("JSON"));
        return Ok(());
    }
    if quiet {
        for c in &list {
            println!("{}", &c.id[..12]);
        }
        return Ok(());
    }
    let now = crate::db::now_secs();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let command = c.config.cmd.join(" ");
            let status = c.status_text(now);
            let ports = c.port_texts();
            vec![
                c.id[..12].to_owned(),
                c.image.clone(),
                command,
                status,
                ports.join(", "),
                c.name.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "STATUS",
            "PORTS",
            "NAMES",
        ],
        &rows,
    );
    Ok(())
}

/// What `wharf exec` runs and how.
pub struct ExecArgs {
    pub container: String,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub interactive: bool,
    pub tty: bool,
    pub detach_keys: String,
}

pub(super) async fn exec(client: ApiClient, args: ExecArgs) -> Result<(), ClientError> {
    use std::io::Write;
    let ExecArgs {
        container,
        command,
        env,
        workdir,
        user,
        ..
    } = &args;
    if args.interactive || args.tty {
        return exec_interactive(client, &args).await;
    }
    let body =
        serde_json::json!({"cmd": command, "env": env, "working_dir": workdir, "user": user});
    let bytes = serde_json::to_vec(&body).expect("JSON");
    let mut code = None;
    client
        .upload_streaming(
            &path(container, "/exec"),
            "application/json",
            http_body_util::Full::new(hyper::body::Bytes::from(bytes)),
            &mut |line| {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    return;
                };
                if let Some(c) = v["exit_code"].as_i64() {
                    code = Some(c);
                } else if v["stream"] == "stderr" {
                    let _ = write!(
                        std::io::stderr(),
                        "{}",
                        v["log"].as_str().unwrap_or_default()
                    );
                } else {
                    let mut out = std::io::stdout();
                    let _ = write!(out, "{}", v["log"].as_str().unwrap_or_default());
                    let _ = out.flush();
                }
            },
        )
        .await?;
    match code {
        Some(0) => Ok(()),
        Some(c) => Err(ClientError::ContainerExit(c.clamp(0, 255) as u8)),
        None => Err(ClientError::Input {
            reason: "the exec ended without an exit code".into(),
        }),
    }
}

pub(super) async fn top(client: ApiClient, container: String) -> Result<(), ClientError> {
    let processes: serde_json::Value = client.get_json(&path(&container, "/top")).await?;
    let rows: Vec<Vec<String>> = processes
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                p["uid"].to_string(),
                p["pid"].to_string(),
                p["command"].as_str().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    print_table(&["UID", "PID", "CMD"], &rows);
    Ok(())
}

/// Two readings half a second apart per container: CPU share, memory and processes.
pub(super) async fn stats(client: ApiClient, containers: Vec<String>) -> Result<(), ClientError> {
    let read = |c: String| {
        let client = client.clone();
        async move {
            client
                .get_json::<serde_json::Value>(&path(&c, "/stats"))
                .await
        }
    };
    let mut first = Vec::new();
    for c in &containers {
        first.push(read(c.clone()).await?);
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut rows = Vec::new();
    for (c, a) in containers.iter().zip(first) {
        let b = read(c.clone()).await?;
        let cpu = |v: &serde_json::Value| v["cpu_usage_ns"].as_u64().unwrap_or(0) as f64;
        let at = |v: &serde_json::Value| v["read_at_ns"].as_u64().unwrap_or(0) as f64;
        let elapsed = (at(&b) - at(&a)).max(1.0);
        let percent = (cpu(&b) - cpu(&a)).max(0.0) / elapsed * 100.0;
        let limit = b["memory_limit_bytes"]
            .as_u64()
            .map_or("unlimited".to_owned(), crate::host::human_bytes);
        rows.push(vec![
            b["id"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(12)
                .collect(),
            b["name"].as_str().unwrap_or_default().to_owned(),
            format!("{percent:.2}%"),
            format!(
                "{} / {limit}",
                crate::host::human_bytes(b["memory_usage_bytes"].as_u64().unwrap_or(0))
            ),
            {
                let n = |k: &str| crate::host::human_bytes(b[k].as_u64().unwrap_or(0));
                format!("{} / {}", n("net_rx_bytes"), n("net_tx_bytes"))
            },
            {
                let n = |k: &str| crate::host::human_bytes(b[k].as_u64().unwrap_or(0));
                format!("{} / {}", n("block_read_bytes"), n("block_write_bytes"))
            },
            b["pids_current"].to_string(),
        ]);
    }
    print_table(
        &[
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "NET I/O",
            "BLOCK I/O",
            "PIDS",
        ],
        &rows,
    );
    Ok(())
}

/// A container's details if `name` names one, else the image's.
pub(super) async fn inspect_any(client: ApiClient, name: String) -> Result<(), ClientError> {
    match client.get_json::<serde_json::Value>(&path(&name, "")).await {
        Ok(view) => {
            println!("{}", serde_json::to_string_pretty(&view).expect("JSON"));
            Ok(())
        }
        Err(ClientError::Api { status, .. }) if status == hyper::StatusCode::NOT_FOUND => {
            super::images::inspect(client, name).await
        }
        Err(e) => Err(e),
    }
}

/// Events as docker prints them: time, type, action, actor, (attributes).
pub(super) async fn events(
    client: ApiClient,
    since: Option<String>,
    until: Option<String>,
    format: Format,
) -> Result<(), ClientError> {
    use std::io::Write;
    let mut query = Vec::new();
    for (what, value) in [("since", since), ("until", until)] {
        if let Some(v) = value {
            query.push(format!("{what}={}", percent_encode(&time_arg(what, &v)?)));
        }
    }
    let path = format!("/api/v1/events?{}", query.join("&"));
    client
        .get_lines(&path, &mut |line| {
            let mut out = std::io::stdout();
            if format == Format::Json {
                let _ = writeln!(out, "{line}");
            } else if let Ok(e) = serde_json::from_str::<serde_json::Value>(line) {
                let nanos = e["time_nano"].as_i64().unwrap_or(0).max(0) as u64;
                let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos);
                let attributes: Vec<String> = e["attributes"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect();
                let _ = writeln!(
                    out,
                    "{} {} {} {} ({})",
                    humantime::format_rfc3339_nanos(time),
                    e["type"].as_str().unwrap_or_default(),
                    e["action"].as_str().unwrap_or_default(),
                    e["actor_id"].as_str().unwrap_or_default(),
                    attributes.join(", ")
                );
            }
            let _ = out.flush();
        })
        .await
}

/// `wharf volume …`.
pub(super) async fn volume(
    client: ApiClient,
    command: super::VolumeCommand,
) -> Result<(), ClientError> {
    use super::VolumeCommand;
    let at = |name: &str| format!("/api/v1/volumes/{}", percent_encode(name));
    match command {
        VolumeCommand::Create { name } => {
            let v: serde_json::Value = client
                .send_json(
                    Method::POST,
                    "/api/v1/volumes",
                    &serde_json::json!({"name": name}),
                )
                .await?;
            println!("{}", v["name"].as_str().unwrap_or_default());
        }
        VolumeCommand::Ls { format, quiet } => {
            let list: serde_json::Value = client.get_json("/api/v1/volumes").await?;
            if quiet {
                for v in list.as_array().into_iter().flatten() {
                    println!("{}", v["name"].as_str().unwrap_or_default());
                }
                return Ok(());
            }
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&list).expect("JSON"));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let users: Vec<&str> = v["used_by"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|u| u.as_str())
                        .collect();
                    vec![
                        v["name"].as_str().unwrap_or_default().to_owned(),
                        users.join(","),
                    ]
                })
                .collect();
            print_table(&["VOLUME NAME", "USED BY"], &rows);
        }
        VolumeCommand::Inspect { name } => {
            let v: serde_json::Value = client.get_json(&at(&name)).await?;
            println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
        }
        VolumeCommand::Rm { names } => {
            for name in names {
                client.send(Method::DELETE, &at(&name), None).await?;
                println!("{name}");
            }
        }
        VolumeCommand::Prune => {
            let pruned: serde_json::Value = client
                .send_json(
                    Method::POST,
                    "/api/v1/volumes/prune",
                    &serde_json::json!({}),
                )
                .await?;
            for name in pruned["removed"].as_array().into_iter().flatten() {
                println!("Deleted: {}", name.as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}

pub(super) async fn network_command(
    client: ApiClient,
    command: super::NetworkCommand,
) -> Result<(), ClientError> {
    use super::NetworkCommand;
    let at = |name: &str| format!("/api/v1/networks/{}", percent_encode(name));
    match command {
        NetworkCommand::Create { subnet, name } => {
            let n: serde_json::Value = client
                .send_json(
                    Method::POST,
                    "/api/v1/networks",
                    &serde_json::json!({"name": name, "subnet": subnet}),
                )
                .await?;
            println!("{}", n["id"].as_str().unwrap_or_default());
        }
        NetworkCommand::Ls { format } => {
            let list: serde_json::Value = client.get_json("/api/v1/networks").await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&list).expect("JSON"));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    let members: Vec<&str> = n["containers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["name"].as_str())
                        .collect();
                    vec![
                        n["id"]
                            .as_str()
                            .unwrap_or_default()
                            .chars()
                            .take(12)
                            .collect(),
                        n["name"].as_str().unwrap_or_default().to_owned(),
                        n["subnet"].as_str().unwrap_or_default().to_owned(),
                        n["bridge"].as_str().unwrap_or_default().to_owned(),
                        members.join(","),
                    ]
                })
                .collect();
            print_table(
                &["NETWORK ID", "NAME", "SUBNET", "BRIDGE", "CONTAINERS"],
                &rows,
            );
        }
        NetworkCommand::Inspect { name } => {
            let n: serde_json::Value = client.get_json(&at(&name)).await?;
            println!("{}", serde_json::to_string_pretty(&n).expect("JSON"));
        }
        NetworkCommand::Connect {
            ip,
            aliases,
            network,
            container,
        } => {
            client
                .send(
                    Method::POST,
                    &format!("{}/connect", at(&network)),
                    Some(
                        &serde_json::json!({"container": container, "ip": ip, "aliases": aliases}),
                    ),
                )
                .await?;
        }
        NetworkCommand::Disconnect { network, container } => {
            client
                .send(
                    Method::POST,
                    &format!("{}/disconnect", at(&network)),
                    Some(&serde_json::json!({"container": container})),
                )
                .await?;
        }
        NetworkCommand::Rm { names } => {
            let mut failed = false;
            for name in names {
                match client.send(Method::DELETE, &at(&name), None).await {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        eprintln!("wharf: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Err(ClientError::Input {
                    reason: "network rm failed for some networks".into(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_read_as_their_short_forms() {
        let ok = |t: &str| parse_mount(t).unwrap();
        assert_eq!(
            ok("type=bind,source=/srv,target=/data,readonly"),
            Mount::Bind("/srv:/data:ro".into())
        );
        assert_eq!(
            ok("type=volume,src=cache,dst=/cache,volume-nocopy"),
            Mount::Bind("cache:/cache:nocopy".into())
        );
        assert_eq!(ok("target=/anon"), Mount::Bind("/anon".into()));
        assert_eq!(
            ok("type=tmpfs,target=/run,tmpfs-size=64m,tmpfs-mode=1777"),
            Mount::Tmpfs("/run:size=64m,mode=1777".into())
        );
        for (bad, why) in [
            ("type=bind,target=/x", "a bind needs source"),
            (
                "type=volume,source=a/b,target=/x",
                "a volume source is a volume name",
            ),
            ("type=nfs,target=/x", "type \"nfs\" is not known"),
            ("type=volume,source=v", "give target="),
            (
                "type=bind,source=/a,target=/b,colour=red",
                "\"colour\" is not a known field",
            ),
        ] {
            let err = parse_mount(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
