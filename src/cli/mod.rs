//! The command line: `wharf serve` (the daemon) and the client commands that talk to it.
//!
//! Owns argument parsing and what the user sees in the terminal. Client commands go through
//! [`client::ApiClient`]; `serve` hands a resolved [`Config`] to [`crate::startup`]. Parsing is
//! synchronous and happens before any tokio runtime exists, so hidden subcommands that must not
//! run inside a multi-threaded process (the shim, the OCI runtime) can be dispatched first.

mod auth;
mod build;
pub mod client;
mod containers;
mod files;
mod images;
mod interactive;
mod registry;
pub mod runtime;
mod serve;
mod system;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Overrides;
use client::{ApiClient, ClientError, Endpoint};

#[derive(Debug, Parser)]
#[command(
    name = "wharf",
    version,
    about = "A container host appliance: daemon, client, OCI runtime and private registry in one binary",
    propagate_version = true,
    args_override_self = true
)]
pub struct Cli {
    /// Daemon to talk to: unix:///path or http://host:port
    #[arg(
        long,
        short = 'H',
        global = true,
        env = "WHARF_HOST",
        default_value_t = client::default_host()
    )]
    pub host: String,
    /// API token sent as `Authorization: Bearer` (for TCP hosts)
    #[arg(long, global = true, env = "WHARF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate(s) to trust for https hosts, e.g. a copy of the daemon's tls/ca.pem
    #[arg(long, global = true, env = "WHARF_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon
    Serve(ServeArgs),
    /// Show the client's and the daemon's versions
    Version(FormatArgs),
    /// Show what the daemon and its host are
    Info(FormatArgs),
    /// Manage users and robots
    #[command(subcommand)]
    User(auth::UserCommand),
    /// Manage API tokens
    #[command(subcommand)]
    Token(auth::TokenCommand),
    /// Sign in to a daemon (an http(s):// address; keeps an API token here), or give the daemon
    /// a login for a registry host (no scheme, e.g. registry.example:5000) that pull then uses
    Login {
        /// http(s)://daemon (default: --host), or a registry host
        #[arg(value_name = "HOST")]
        target: Option<String>,
        #[arg(long, short = 'u')]
        username: Option<String>,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Load images from a `docker save` archive or an OCI layout tar
    Load {
        /// The archive (default: standard input)
        #[arg(long, short = 'i')]
        input: Option<PathBuf>,
        /// Repository for OCI layout images named only by a tag
        #[arg(long)]
        repository: Option<String>,
        /// Print only the loaded images' names
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Build an image from a Dockerfile and a context directory
    Build(build::BuildArgs),
    /// Make an image of one layer from the tar of a file system (such as `wharf export` writes)
    Import {
        /// The tar, or - for standard input
        source: PathBuf,
        /// The new image's name, NAME[:TAG]
        repository: String,
        /// Print only the image's name
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Push a local image to a registry (its name's, or REFERENCE's)
    Push {
        /// The local image, NAME[:TAG]
        name: String,
        /// Where to push it (default: NAME, whose first part names the registry)
        reference: Option<String>,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Pull an image from a registry (plain http only for loopback registries)
    Pull {
        reference: String,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// List images
    Images(ImagesArgs),
    /// Show a container's or an image's details as JSON
    Inspect { name: String },
    /// Show the steps that made an image, newest first
    History {
        name: String,
        #[command(flatten)]
        format: FormatArgs,
        /// Show each step's command in full
        #[arg(long)]
        no_trunc: bool,
    },
    /// Give an image another name
    Tag { source: String, target: String },
    /// Remove image names (and images left without one)
    Rmi {
        /// Untag an image containers still use (it stays while they exist)
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Write an image as a docker save archive (docker load reads it) or an OCI layout tar
    Save {
        name: String,
        /// The file (default: standard output)
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// docker-archive or oci-archive
        #[arg(long, default_value = "docker-archive", value_parser = ["docker-archive", "oci-archive"])]
        format: String,
    },
    /// Image commands
    #[command(subcommand)]
    Image(ImageCommand),
    /// Create and start a container, print its output and end with its exit code
    Run {
        /// Run in the background and print the container's id
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        args: containers::CreateArgs,
    },
    /// Create a container (not started) and print its id
    Create(containers::CreateArgs),
    /// Start containers
    Start {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers: SIGTERM, then SIGKILL after the timeout
    Stop {
        /// Seconds to wait before SIGKILL
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers (as stop does) and start them again
    Restart {
        /// Seconds to wait before SIGKILL
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers (default SIGKILL)
    Kill {
        #[arg(short = 's', long, default_value = "SIGKILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers
    Rm {
        /// Kill running containers first
        #[arg(short = 'f', long)]
        force: bool,
        /// Remove the containers' anonymous volumes too
        #[arg(short = 'v', long)]
        volumes: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers (running ones unless -a)
    Ps {
        #[arg(short = 'a', long)]
        all: bool,
        /// Only the ids
        #[arg(short = 'q', long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print a container's output
    Logs {
        /// Keep printing as the container writes, until it ends
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Prefix each line with its time
        #[arg(short = 't', long)]
        timestamps: bool,
        /// Only lines since a time (RFC 3339, unix seconds) or for a duration (10m)
        #[arg(long)]
        since: Option<String>,
        /// Only lines before a time (RFC 3339, unix seconds) or a duration ago (10m)
        #[arg(long)]
        until: Option<String>,
        container: String,
    },
    /// Wait for a container to end and print its exit code
    Wait { container: String },
    /// Run a command in a running container; ends with its exit code
    Exec {
        /// Set an environment variable; repeatable
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Working directory
        #[arg(short = 'w', long = "workdir")]
        workdir: Option<String>,
        /// User to run as: name|uid[:group|gid]
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// Keep stdin open and send it to the program
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Give the program a terminal
        #[arg(short = 't', long)]
        tty: bool,
        /// Keys that end the session and leave the program running
        #[arg(long, default_value = interactive::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        container: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Show events (container starts, deaths, …) as they happen, or those of a time range
    Events {
        /// Since a time (RFC 3339, unix seconds) or for a duration (10m)
        #[arg(long)]
        since: Option<String>,
        /// Until a time or a duration ago; without it, new events keep coming
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show the processes of a running container
    Top { container: String },
    /// Attach to a running container's terminal or output (and stdin, if it keeps one open)
    Attach {
        /// Do not send stdin
        #[arg(long)]
        no_stdin: bool,
        /// Keys that detach and leave the container running
        #[arg(long, default_value = interactive::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        container: String,
    },
    /// Copy files between a container and the host: CONTAINER:PATH HOSTPATH or the reverse
    /// (HOSTPATH - is a tar on stdout); the container may be running or stopped
    Cp {
        /// Keep the owners of the copied files (copying in); by default root owns them
        #[arg(short = 'a', long)]
        archive: bool,
        source: String,
        dest: String,
    },
    /// Write a container's filesystem (without its volumes) as a tar
    Export {
        /// Write to this file instead of stdout
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        container: String,
    },
    /// List the files a container changed (A added, C changed, D deleted)
    Diff { container: String },
    /// Show a container's published ports
    Port { container: String },
    /// Freeze the processes of containers
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Thaw paused containers
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Give a container another name
    Rename { container: String, new_name: String },
    /// Make an image of a container's changes (its writable layer on top of its image)
    Commit {
        container: String,
        /// The new image's name, NAME[:TAG] (none: an untagged image)
        repository: Option<String>,
        /// A message for the image's history
        #[arg(long, short = 'm')]
        message: Option<String>,
        /// The image's author
        #[arg(long, short = 'a')]
        author: Option<String>,
        /// Pause the container while its files are read (--pause=false to leave it running)
        #[arg(long, short = 'p', default_value_t = true, action = clap::ArgAction::Set)]
        pause: bool,
    },
    /// Container commands
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Named volumes: create, ls, inspect, rm, prune
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// The whole daemon: disk use, prune
    #[command(subcommand)]
    System(SystemCommand),
    /// Bridge networks: create, ls, inspect, rm
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Show CPU, memory and process use of running containers
    Stats {
        /// Accepted for docker compatibility: one reading is always shown
        #[arg(long)]
        no_stream: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// The built-in registry: repositories, tags, anonymous pull, garbage collection
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// The OCI runtime: runc's command line (create, start, run, state, kill, delete, …)
    Runtime(runtime::RuntimeArgs),
    /// Revoke and forget the token kept by `wharf login`, or make the daemon forget a registry's
    /// login (a host without a scheme)
    Logout {
        /// http(s)://daemon (default: --host), or a registry host
        #[arg(value_name = "HOST")]
        target: Option<String>,
    },
}

/// Settings of `wharf serve`; each overrides the config file and the `WHARF_*` environment.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (default /etc/wharf/wharf.toml when it exists; env WHARF_CONFIG)
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Root of all state (default /var/lib/wharf; env WHARF_DATA_ROOT)
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// TCP address, e.g. 127.0.0.1:7878 (port 0 picks one), or `none` (env WHARF_LISTEN)
    #[arg(long)]
    pub listen: Option<String>,
    /// TCP address of the built-in registry (default 127.0.0.1:5000), or `none` (env
    /// WHARF_REGISTRY_LISTEN)
    #[arg(long)]
    pub registry_listen: Option<String>,
    /// Reap registry uploads untouched for this long, e.g. 24h (env
    /// WHARF_REGISTRY_UPLOAD_MAX_AGE)
    #[arg(long)]
    pub registry_upload_max_age: Option<String>,
    /// Keep events this long, e.g. 7d (the default; env WHARF_EVENT_RETENTION)
    #[arg(long)]
    pub event_retention: Option<String>,
    /// Network of containers that name none: bridge (the default) or none (env
    /// WHARF_DEFAULT_NETWORK)
    #[arg(long)]
    pub default_network: Option<String>,
    /// Subnet of the default bridge network, e.g. 172.30.0.0/16 (the default; env
    /// WHARF_BRIDGE_SUBNET)
    #[arg(long)]
    pub bridge_subnet: Option<String>,
    /// Unix socket of the API (default /run/wharf/wharf.sock; env WHARF_SOCKET)
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Group that may use the socket (env WHARF_SOCKET_GROUP)
    #[arg(long)]
    pub socket_group: Option<String>,
    /// Log filter, e.g. info or wharf=debug (env WHARF_LOG)
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log line format: text or json (env WHARF_LOG_FORMAT)
    #[arg(long)]
    pub log_format: Option<String>,
    /// TLS on the TCP listener: auto, on or off (env WHARF_TLS)
    #[arg(long)]
    pub tls: Option<String>,
    /// PEM certificate chain for TLS (env WHARF_TLS_CERT)
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (env WHARF_TLS_KEY)
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// A registry host[:port] pull may reach over plain HTTP; repeat for more (env
    /// WHARF_INSECURE_REGISTRIES, comma-separated). Loopback registries always may.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            data_root: self.data_root.clone(),
            listen: self.listen.clone(),
            registry_listen: self.registry_listen.clone(),
            registry_upload_max_age: self.registry_upload_max_age.clone(),
            event_retention: self.event_retention.clone(),
            default_network: self.default_network.clone(),
            bridge_subnet: self.bridge_subnet.clone(),
            socket: self.socket.clone(),
            socket_group: self.socket_group.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
            tls: self.tls.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            insecure_registries: (!self.insecure_registries.is_empty())
                .then(|| self.insecure_registries.clone()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Make a named volume
    Create { name: String },
    /// List volumes and the containers that mount them
    Ls {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Only the names
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Show a volume as JSON
    Inspect { name: String },
    /// Remove volumes and their data (refused while a container mounts one)
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container mounts
    Prune,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Make a bridge network whose containers reach each other by name
    Create {
        /// Its subnet, a.b.c.d/len (default: the first free /24 of 10.90.0.0/16)
        #[arg(long)]
        subnet: Option<String>,
        name: String,
    },
    /// List networks and the containers on them
    Ls {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show a network as JSON
    Inspect { name: String },
    /// Plug a running container into a network as well (kept across restarts)
    Connect {
        /// A fixed address on the network
        #[arg(long)]
        ip: Option<String>,
        /// Another name it answers to there; repeatable
        #[arg(long = "alias")]
        aliases: Vec<String>,
        network: String,
        container: String,
    },
    /// Unplug a container from a network
    Disconnect { network: String, container: String },
    /// Remove networks (refused while a running container is on one)
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// What images, containers and volumes take on disk, and what a prune would free
    Df,
    /// Remove stopped containers and dangling images (with -a every unused image, with
    /// --volumes unused volumes)
    Prune {
        /// Every image no container uses, not only dangling ones
        #[arg(short = 'a', long)]
        all: bool,
        /// Unused volumes too
        #[arg(long)]
        volumes: bool,
        /// Do not ask
        #[arg(short = 'f', long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Remove every container that is not running
    Prune,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Show an image's manifest summary, layers and config as JSON
    Inspect { name: String },
    /// List images
    Ls(ImagesArgs),
    /// Remove images no name points at, and the files only they used
    Prune,
    /// Disk use of the content store and the unpacked layers
    Df,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Only the image IDs, one per image
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Runs a parsed command line and returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(&args),
        // Synchronous, before any tokio runtime: it clones the container's init process.
        Command::Runtime(args) => runtime::run(args),
        Command::Version(args) => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            system::version(c, args.format)
        }),
        Command::Info(args) => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            system::info(c, args.format)
        }),
        Command::Load {
            input,
            repository,
            quiet,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            images::load(c, input, repository, quiet)
        }),
        Command::Import {
            source,
            repository,
            quiet,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            images::import(c, source, repository, quiet)
        }),
        Command::Images(args) | Command::Image(ImageCommand::Ls(args)) => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| {
                images::list(c, args.format, args.quiet)
            })
        }
        Command::Push {
            name,
            reference,
            quiet,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            images::push(c, name, reference, quiet)
        }),
        Command::Pull { reference, quiet } => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| {
                images::pull(c, reference, quiet)
            })
        }
        Command::History {
            name,
            format,
            no_trunc,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            images::history(c, name, format.format, no_trunc)
        }),
        Command::Tag { source, target } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            images::tag(c, source, target)
        }),
        Command::Rmi { force, names } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            images::remove(c, names, force)
        }),
        Command::Save {
            name,
            output,
            format,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            images::save(c, name, output, format)
        }),
        Command::Run { detach, args } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::run(c, args, detach)
        }),
        Command::Create(args) => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::create(c, args)
        }),
        Command::Start { containers: list } => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| {
                containers::act(c, "start", list, String::new())
            })
        }
        Command::Stop {
            time,
            containers: list,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::act(c, "stop", list, format!("?timeout={time}"))
        }),
        Command::Restart {
            time,
            containers: list,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::act(c, "restart", list, format!("?timeout={time}"))
        }),
        Command::Kill {
            signal,
            containers: list,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::act(
                c,
                "kill",
                list,
                format!("?signal={}", crate::domain::percent_encode(&signal)),
            )
        }),
        Command::Rm {
            force,
            volumes,
            containers: list,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::act(c, "rm", list, format!("?force={force}&volumes={volumes}"))
        }),
        Command::Ps { all, quiet, format } => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| {
                containers::ps(c, all, quiet, format)
            })
        }
        Command::Logs {
            follow,
            tail,
            timestamps,
            since,
            until,
            container,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::logs(c, container, follow, tail, timestamps, since, until)
        }),
        Command::Exec {
            env,
            workdir,
            user,
            interactive,
            tty,
            detach_keys,
            container,
            command,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::exec(
                c,
                containers::ExecArgs {
                    container,
                    command,
                    env,
                    workdir,
                    user,
                    interactive,
                    tty,
                    detach_keys,
                },
            )
        }),
        Command::Attach {
            no_stdin,
            detach_keys,
            container,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::attach(c, container, no_stdin, detach_keys)
        }),
        Command::Pause { containers: list } => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| {
                containers::act(c, "pause", list, String::new())
            })
        }
        Command::Unpause { containers: list } => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| {
                containers::act(c, "unpause", list, String::new())
            })
        }
        Command::Rename {
            container,
            new_name,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::act(
                c,
                "rename",
                vec![container],
                format!("?name={}", crate::domain::percent_encode(&new_name)),
            )
        }),
        Command::Build(args) => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| build::build(c, args))
        }
        Command::Commit {
            container,
            repository,
            message,
            author,
            pause,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            images::commit(c, container, repository, message, author, pause)
        }),
        Command::Network(command) => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::network_command(c, command)
        }),
        Command::System(command) => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            system::system_command(c, command)
        }),
        Command::Volume(command) => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::volume(c, command)
        }),
        Command::Container(ContainerCommand::Prune) => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| async move {
                let pruned: serde_json::Value = c
                    .send_json(
                        hyper::Method::POST,
                        "/api/v1/containers/prune",
                        &serde_json::json!({}),
                    )
                    .await?;
                for name in pruned["removed"].as_array().into_iter().flatten() {
                    println!("Deleted: {}", name.as_str().unwrap_or_default());
                }
                Ok(())
            })
        }
        Command::Events {
            since,
            until,
            format,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::events(c, since, until, format)
        }),
        Command::Top { container } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::top(c, container)
        }),
        Command::Cp {
            archive,
            source,
            dest,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            files::cp(c, source, dest, archive)
        }),
        Command::Export { output, container } => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| {
                files::export(c, container, output)
            })
        }
        Command::Diff { container } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            files::diff(c, container)
        }),
        Command::Port { container } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::port(c, container)
        }),
        Command::Stats {
            no_stream: _,
            containers: list,
        } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::stats(c, list)
        }),
        Command::Wait { container } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::wait(c, container)
        }),
        Command::Registry(command) => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            registry::run(c, command)
        }),
        Command::Image(ImageCommand::Prune) => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| async move {
                let pruned: serde_json::Value = c
                    .send_json(
                        hyper::Method::POST,
                        "/api/v1/images/prune",
                        &serde_json::json!({}),
                    )
                    .await?;
                for digest in pruned["deleted"].as_array().into_iter().flatten() {
                    println!("Deleted: {}", digest.as_str().unwrap_or_default());
                }
                println!(
                    "Freed {} blobs and {} layers",
                    pruned["freed_blobs"], pruned["freed_layers"]
                );
                Ok(())
            })
        }
        Command::Image(ImageCommand::Df) => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| async move {
                let usage: serde_json::Value = c.get_json("/api/v1/images/df").await?;
                let bytes = |k: &str| crate::host::human_bytes(usage[k].as_u64().unwrap_or(0));
                println!("Images:  {}", usage["images"]);
                println!("Blobs:   {} ({})", usage["blobs"], bytes("blobs_bytes"));
                println!(
                    "Layers:  {} ({} unpacked)",
                    usage["layers"],
                    bytes("layers_bytes")
                );
                Ok(())
            })
        }
        Command::Image(ImageCommand::Inspect { name }) => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| {
                images::inspect(c, name)
            })
        }
        // As docker's: a container of that name or id, else an image.
        Command::Inspect { name } => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            containers::inspect_any(c, name)
        }),
        Command::User(command) => {
            client_command(&cli.host, cli.token, cli.tls_ca, |c| auth::user(c, command))
        }
        Command::Token(command) => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            auth::token(c, command)
        }),
        Command::Login {
            target,
            username,
            password_stdin,
        } => match target {
            Some(registry) if !registry.contains("://") => {
                client_command(&cli.host, cli.token, cli.tls_ca, |c| {
                    auth::registry_login(c, registry, username, password_stdin)
                })
            }
            host => {
                let host = host.unwrap_or(cli.host);
                client_command(&host, None, cli.tls_ca, |c| {
                    auth::login(c.endpoint().clone(), username, password_stdin)
                })
            }
        },
        Command::Logout {
            target: Some(registry),
        } if !registry.contains("://") => client_command(&cli.host, cli.token, cli.tls_ca, |c| {
            auth::registry_logout(c, registry)
        }),
        Command::Logout { target } => {
            let host = target.unwrap_or(cli.host);
            client_command(&host, None, cli.tls_ca, |c| {
                auth::logout(c.endpoint().clone())
            })
        }
    }
}

/// Runs one client command on a small single-threaded runtime; errors go to stderr, exit 1.
fn client_command<F, Fut>(
    host: &str,
    token: Option<String>,
    tls_ca: Option<PathBuf>,
    command: F,
) -> ExitCode
where
    F: FnOnce(ApiClient) -> Fut,
    Fut: Future<Output = Result<(), ClientError>>,
{
    let endpoint = match Endpoint::parse(host) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("wharf: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wharf: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Over the network, a token kept by `wharf login` is used when none is given.
    let token = token.or_else(|| match &endpoint {
        Endpoint::Http { .. } | Endpoint::Https { .. } => auth::CredentialStore::load()
            .hosts
            .get(&endpoint.to_string())
            .map(|login| login.token.clone()),
        Endpoint::Unix(_) => None,
    });
    match runtime.block_on(command(ApiClient::new(endpoint, token).with_tls_ca(tls_ca))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ClientError::ContainerExit(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("wharf: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints rows as left-aligned columns separated by three spaces, like docker does.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("   ")
    };
    println!("{}", line(header.to_vec()));
    for row in rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}
