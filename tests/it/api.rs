//! The one router answers on the TCP listener and on the unix socket alike.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use hyper::{Method, StatusCode};
use wharf::api::SystemInfo;

use crate::harness::{self, TestDaemon};

#[tokio::test]
async fn socket_and_tcp_serve_the_same_api() {
    if harness::skip_unless_root("socket_and_tcp_serve_the_same_api") {
        return;
    }
    let daemon = TestDaemon::start();
    let over_socket: SystemInfo = daemon
        .unix_client()
        .get_json("/api/v1/system/info")
        .await
        .unwrap();
    let admin = daemon.admin_client().await;
    let over_tcp: SystemInfo = admin.get_json("/api/v1/system/info").await.unwrap();

    assert_eq!(over_socket.id, over_tcp.id, "one daemon behind both");
    assert_eq!(over_socket.id.len(), 32);
    assert_eq!(over_tcp.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(over_tcp.data_root, daemon.data_root);
    assert_eq!(over_tcp.socket, daemon.socket);
    assert_eq!(over_tcp.tcp_address, Some(daemon.tcp.to_string()));
    assert_ne!(daemon.tcp.port(), 0, "port 0 resolved to a real port");
    assert_eq!(over_tcp.counts.events, 1, "the daemon start was recorded");
    assert_eq!(over_tcp.counts.users, 1, "the admin the harness made");

    // Host facts agree with the kernel's own view.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(over_tcp.host.kernel, release.trim());
    assert!(over_tcp.host.cpus >= 1 && over_tcp.host.memory_bytes > 0);
    let fs_type = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .unwrap()
        .filesystem_type();
    let expected_version = if fs_type == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        2
    } else {
        1
    };
    assert_eq!(over_tcp.host.cgroup.version, expected_version);
    assert_eq!(over_tcp.host.cgroup.driver, "cgroupfs");
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap();
    if filesystems.lines().any(|l| l.ends_with("\toverlay")) {
        assert!(over_tcp.host.overlayfs);
    }

    for client in [daemon.unix_client(), admin.clone(), daemon.tcp_client()] {
        let health = client.request(Method::GET, "/healthz", None).await.unwrap();
        assert_eq!(health.status, StatusCode::OK);
        assert_eq!(&health.body[..], b"ok\n");
        let missing = client
            .request(Method::GET, "/api/v1/no-such-thing", None)
            .await
            .unwrap();
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn the_socket_is_mode_0660() {
    if harness::skip_unless_root("the_socket_is_mode_0660") {
        return;
    }
    let daemon = TestDaemon::start();
    let meta = std::fs::symlink_metadata(&daemon.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.uid(), 0);
}

#[tokio::test]
async fn the_socket_group_is_applied() {
    if harness::skip_unless_root("the_socket_group_is_applied") {
        return;
    }
    // `nogroup` (65534) exists on Debian and Ubuntu alike.
    let group = nix::unistd::Group::from_gid(65534.into())
        .unwrap()
        .expect("group 65534 exists");
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness::test_config(dir.path());
    config.socket_group = Some(group.name.clone());
    let daemon = TestDaemon::start_in(dir, config).unwrap();
    assert_eq!(std::fs::metadata(&daemon.socket).unwrap().gid(), 65534);

    let dir = tempfile::tempdir().unwrap();
    let mut config = harness::test_config(dir.path());
    config.socket_group = Some("no-such-group-wharf".into());
    let err = TestDaemon::start_in(dir, config).err().unwrap().to_string();
    assert!(
        err.contains("group \"no-such-group-wharf\" does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes() {
    if harness::skip_unless_root("the_openapi_document_describes_the_routes") {
        return;
    }
    let daemon = TestDaemon::start();
    let doc: serde_json::Value = daemon
        .tcp_client()
        .get_json("/api/v1/openapi.json")
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let info = &doc["paths"]["/api/v1/system/info"]["get"];
    assert_eq!(
        info["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/SystemInfo"
    );
    assert!(doc["paths"]["/api/v1/system/version"]["get"].is_object());
    // Building, committing and pushing images.
    for (path, method) in [
        ("/api/v1/build", "post"),
        ("/api/v1/containers/{id}/commit", "post"),
        ("/api/v1/images/push", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} documented"
        );
    }
    let build_params: Vec<&str> = doc["paths"]["/api/v1/build"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in ["t", "dockerfile", "buildargs", "nocache", "target"] {
        assert!(build_params.contains(&name), "{name} in {build_params:?}");
    }
    let schema = &doc["components"]["schemas"]["SystemInfo"]["properties"];
    for field in [
        "id",
        "version",
        "data_root",
        "host",
        "counts",
        "socket",
        "tcp_address",
    ] {
        assert!(schema[field].is_object(), "SystemInfo.{field} documented");
    }
}
