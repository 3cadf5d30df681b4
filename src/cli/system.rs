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
