//! `wharf version` and `wharf info`.

use super::Format;
use super::client::{ApiClient, ClientError};
use crate::api::{SystemInfo, VersionInfo};
use crate::host::{human_bytes, oci_architecture};

pub(super) async fn version(client: ApiClient, format: Format) -> Result<(), ClientError> {
    let arch = oci_architecture(std::env::consts::ARCH);
    let server = client
        .get_json::<VersionInfo>("/api/v1/system/version")
        .await;
    if format == Format::Json {
        let server = server?;
        let doc = serde_json::json!({
            "client": { "version": crate::VERSION, "api_version": crate::API_VERSION, "os": std::env::consts::OS, "arch": arch },
            "server": server,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON value serializes")
        );
        return Ok(());
    }
    println!("Client:");
    println!(" Version:      {}", crate::VERSION);
    println!(" API version:  {}", crate::API_VERSION);
    println!(" OS/Arch:      {}/{arch}", std::env::consts::OS);
    println!();
    let server = server?;
    println!("Server:");
    println!(" Version:      {}", server.version);
    println!(" API version:  {}", server.api_version);
    println!(" OS/Arch:      {}/{}", server.os, server.arch);
    println!(" Kernel:       {}", server.kernel);
    Ok(())
}

pub(super) async fn info(client: ApiClient, format: Format) -> Result<(), ClientError> {
    if format == Format::Json {
        let raw = client
            .get_json::<serde_json::Value>("/api/v1/system/info")
            .await?;
        println!(
            "{}",
            serde_json::to_string_pretty(&raw).expect("JSON value serializes")
        );
        return Ok(());
    }
    let info: SystemInfo = client.get_json("/api/v1/system/info").await?;
    let host = &info.host;
    println!("Server:");
    println!(" ID:                {}", info.id);
    println!(" Version:           {}", info.version);
    println!(" API version:       {}", info.api_version);
    println!(" Data root:         {}", info.data_root.display());
    println!(
        " Config file:       {}",
        info.config_file
            .as_ref()
            .map_or("(none)".into(), |p| p.display().to_string())
    );
    println!(" Socket:            {}", info.socket.display());
    println!(
        " TCP address:       {}",
        info.tcp_address.as_deref().unwrap_or("(none)")
    );
    println!(
        " TLS:               {}",
        info.tls_fingerprint
            .as_deref()
            .map_or("off".to_owned(), |f| format!("on, SHA-256 {f}"))
    );
    println!(" Started:           {}", info.started_at);
    println!(" Events:            {}", info.counts.events);
    println!("Host:");
    println!(" Kernel:            {}", host.kernel);
    println!(" Operating system:  {}", host.operating_system);
    println!(" Architecture:      {}", host.architecture);
    println!(" CPUs:              {}", host.cpus);
    println!(" Total memory:      {}", human_bytes(host.memory_bytes));
    println!(
        " Cgroup version:    {} ({})",
        host.cgroup.version, host.cgroup.mode
    );
    println!(" Cgroup driver:     {}", host.cgroup.driver);
    println!(
        " Overlay fs:        {}",
        if host.overlayfs {
            "supported"
        } else {
            "not supported"
        }
    );
    Ok(())
}

pub(super) async fn system_command(
    client: ApiClient,
    command: super::SystemCommand,
) -> Result<(), ClientError> {
    match command {
        super::SystemCommand::Df => {
            let df: serde_json::Value = client.get_json("/api/v1/system/df").await?;
            let n = |k: &str| df[k].as_u64().unwrap_or(0);
            let images = &df["images"];
            let rows = vec![
                vec![
                    "Images".to_owned(),
                    images["images"].as_u64().unwrap_or(0).to_string(),
                    human_bytes(
                        images["blobs_bytes"].as_u64().unwrap_or(0)
                            + images["layers_bytes"].as_u64().unwrap_or(0),
                    ),
                    "-".to_owned(),
                ],
                vec![
                    "Containers".to_owned(),
                    format!("{} ({} running)", n("containers"), n("containers_running")),
                    human_bytes(n("containers_bytes")),
                    human_bytes(n("containers_reclaimable_bytes")),
                ],
                vec![
                    "Volumes".to_owned(),
                    format!("{} ({} unused)", n("volumes"), n("volumes_unused")),
                    human_bytes(n("volumes_bytes")),
                    human_bytes(n("volumes_reclaimable_bytes")),
                ],
            ];
            super::print_table(&["TYPE", "COUNT", "SIZE", "RECLAIMABLE"], &rows);
            Ok(())
        }
        super::SystemCommand::Prune {
            all,
            volumes,
            force,
        } => {
            use std::io::{BufRead, IsTerminal, Write};
            let mut what = vec!["stopped containers", "dangling images"];
            if all {
                what[1] = "images no container uses (the registry's repositories too)";
            }
            if volumes {
                what.push("volumes no container names");
            }
            if !force {
                if !std::io::stdin().is_terminal() {
                    return Err(ClientError::Input {
                        reason: "system prune removes data: confirm with -f".into(),
                    });
                }
                eprint!("This removes {}. Go on? [y/N] ", what.join(", "));
                let _ = std::io::stderr().flush();
                let mut answer = String::new();
                let _ = std::io::stdin().lock().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(());
                }
            }
            let empty = serde_json::json!({});
            let containers: serde_json::Value = client
                .send_json(hyper::Method::POST, "/api/v1/containers/prune", &empty)
                .await?;
            for name in containers["removed"].as_array().into_iter().flatten() {
                println!("Deleted container: {}", name.as_str().unwrap_or_default());
            }
            let images: serde_json::Value = client
                .send_json(
                    hyper::Method::POST,
                    &format!("/api/v1/images/prune?all={all}"),
                    &empty,
                )
                .await?;
            for digest in images["deleted"].as_array().into_iter().flatten() {
                println!("Deleted image: {}", digest.as_str().unwrap_or_default());
            }
            if volumes {
                let pruned: serde_json::Value = client
                    .send_json(hyper::Method::POST, "/api/v1/volumes/prune", &empty)
                    .await?;
                for name in pruned["removed"].as_array().into_iter().flatten() {
                    println!("Deleted volume: {}", name.as_str().unwrap_or_default());
                }
            }
            Ok(())
        }
    }
}
