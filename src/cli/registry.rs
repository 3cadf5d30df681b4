//! `wharf registry …`: the built-in registry's repositories, tags, settings and garbage
//! collection, through the daemon's API.

use clap::Subcommand;

use super::client::{ApiClient, ClientError};
use super::{Format, print_table};
use crate::domain::percent_encode;
use crate::host::human_bytes;

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// List the repositories you may pull
    Ls {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List a repository's tags with digest and size
    Tags {
        repository: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Remove a tag (REPOSITORY:TAG); its manifest goes at the next garbage collection
    Rm { name: String },
    /// Let anyone pull a repository without logging in, or stop that (on|off)
    AnonymousPull {
        repository: String,
        #[arg(value_parser = ["on", "off"])]
        setting: String,
    },
    /// Remove blobs and layers nothing uses, while the registry keeps serving
    Gc {
        /// Report what would be freed, remove nothing
        #[arg(long)]
        dry_run: bool,
        /// Keep blobs younger than this many seconds (a push in progress is safe)
        #[arg(long, default_value_t = 3600)]
        grace: u64,
    },
}

pub(super) async fn run(client: ApiClient, command: RegistryCommand) -> Result<(), ClientError> {
    match command {
        RegistryCommand::Ls { format } => {
            let repos: serde_json::Value = client.get_json("/api/v1/registry/repositories").await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&repos).expect("JSON"));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = repos
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![
                        r["name"].as_str().unwrap_or_default().to_owned(),
                        r["tags"].to_string(),
                        if r["anonymous_pull"] == true {
                            "yes"
                        } else {
                            "no"
                        }
                        .to_owned(),
                    ]
                })
                .collect();
            print_table(&["REPOSITORY", "TAGS", "ANONYMOUS PULL"], &rows);
        }
        RegistryCommand::Tags { repository, format } => {
            let tags: serde_json::Value = client
                .get_json(&format!(
                    "/api/v1/registry/tags?repository={}",
                    percent_encode(&repository)
                ))
                .await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&tags).expect("JSON"));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = tags
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    vec![
                        t["tag"].as_str().unwrap_or_default().to_owned(),
                        t["digest"].as_str().unwrap_or_default().to_owned(),
                        human_bytes(t["size"].as_u64().unwrap_or(0)),
                    ]
                })
                .collect();
            print_table(&["TAG", "DIGEST", "SIZE"], &rows);
        }
        RegistryCommand::Rm { name } => {
            let Some((repository, tag)) = name.rsplit_once(':').filter(|(r, _)| !r.is_empty())
            else {
                return Err(ClientError::Input {
                    reason: format!("{name:?}: give REPOSITORY:TAG"),
                });
            };
            client
                .send(
                    hyper::Method::DELETE,
                    &format!(
                        "/api/v1/registry/tags?repository={}&tag={}",
                        percent_encode(repository),
                        percent_encode(tag)
                    ),
                    None,
                )
                .await?;
            println!("Untagged: {repository}:{tag}");
        }
        RegistryCommand::AnonymousPull {
            repository,
            setting,
        } => {
            let _: serde_json::Value = client
                .send_json(
                    hyper::Method::PUT,
                    &format!(
                        "/api/v1/registry/settings?repository={}",
                        percent_encode(&repository)
                    ),
                    &serde_json::json!({"anonymous_pull": setting == "on"}),
                )
                .await?;
            println!("Anonymous pull of {repository}: {setting}");
        }
        RegistryCommand::Gc { dry_run, grace } => {
            let report: serde_json::Value = client
                .send_json(
                    hyper::Method::POST,
                    "/api/v1/registry/gc",
                    &serde_json::json!({"dry_run": dry_run, "grace_seconds": grace}),
                )
                .await?;
            let verb = if dry_run { "Would free" } else { "Freed" };
            println!(
                "{verb} {} in {} blobs and {} unpacked layers ({} unused blob links)",
                human_bytes(report["bytes"].as_u64().unwrap_or(0)),
                report["blobs"],
                report["layers"],
                report["links"]
            );
        }
    }
    Ok(())
}
