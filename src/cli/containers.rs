//! Container commands with docker's verbs: run, create, start, stop, kill, rm, ps, logs, wait.

use clap::Args;
use hyper::Method;

use super::client::{ApiClient, ClientError};
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
    /// uid[:gid] to run as
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
    /// The image (local name, name@digest)
    pub image: String,
    /// Command and arguments (default: the image's)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

impl CreateArgs {
    fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "image": self.image,
            "cmd": self.command,
            "entrypoint": self.entrypoint.iter().collect::<Vec<_>>(),
            "env": self.env,
            "working_dir": self.workdir,
            "user": self.user,
            "hostname": self.hostname,
            "auto_remove": self.rm,
        })
    }
}

fn path(id: &str, action: &str) -> String {
    format!("/api/v1/containers/{}{action}", percent_encode(id))
}

pub(super) async fn create(client: ApiClient, args: CreateArgs) -> Result<(), ClientError> {
    let created: ContainerView = client
        .send_json(Method::POST, "/api/v1/containers", &args.body())
        .await?;
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
    let mut body = args.body();
    if !detach {
        body["auto_remove"] = false.into();
    }
    let created: ContainerView = client
        .send_json(Method::POST, "/api/v1/containers", &body)
        .await?;
    let started = client
        .send_json::<ContainerView>(
            Method::POST,
            &path(&created.id, "/start"),
            &serde_json::json!({}),
        )
        .await;
    if let Err(e) = started {
        if args.rm {
            let _ = client
                .send(Method::DELETE, &path(&created.id, "?force=true"), None)
                .await;
        }
        return Err(e);
    }
    if detach {
        println!("{}", created.id);
        return Ok(());
    }
    follow_logs(&client, &created.id, None).await?;
    let waited: serde_json::Value = client
        .send_json(
            Method::POST,
            &path(&created.id, "/wait"),
            &serde_json::json!({}),
        )
        .await?;
    let code = waited["exit_code"].as_i64().unwrap_or(255);
    if args.rm {
        client
            .send(Method::DELETE, &path(&created.id, "?force=true"), None)
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

pub(super) async fn logs(
    client: ApiClient,
    container: String,
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
) -> Result<(), ClientError> {
    let mut query = format!("?follow={follow}");
    if let Some(n) = tail {
        query.push_str(&format!("&tail={n}"));
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let ago = |t: i64| {
        let secs = (now - t).max(0) as u64;
        humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let command = c.config.cmd.join(" ");
            let status = match (c.state.as_str(), c.started_at, c.finished_at) {
                ("running", Some(t), _) => format!("Up {}", ago(t)),
                ("exited", _, Some(t)) => {
                    format!("Exited ({}) {} ago", c.exit_code.unwrap_or(0), ago(t))
                }
                (state, _, _) => state.to_owned(),
            };
            vec![
                c.id[..12].to_owned(),
                c.image.clone(),
                command,
                status,
                c.name.clone(),
            ]
        })
        .collect();
    print_table(
        &["CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAMES"],
        &rows,
    );
    Ok(())
}
