//! TLS on the TCP listener: a client that trusts the daemon's CA gets in, the printed fingerprint
//! is the certificate served, plain HTTP is refused cleanly, and cookies become `__Host-`/`Secure`.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::net::TcpStream;
use wharf::cli::client::{ApiClient, Endpoint};

use crate::harness::{self, DaemonProcess, run_wharf, run_wharf_input, wharf_command};

/// Starts `wharf serve --tls on` (plus `extra` flags); returns it, its port and the printed fingerprint.
fn start_tls(extra: &[&str]) -> (DaemonProcess, u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = DaemonProcess::command(dir.path());
    cmd.args(["--tls", "on"]).args(extra);
    let mut daemon = DaemonProcess::spawn(dir, cmd);
    daemon.wait_ready();
    let stderr = daemon.stderr();
    let fingerprint = stderr
        .split("SHA-256 fingerprint ")
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint printed:\n{stderr}"))
        .split([';', '\n'])
        .next()
        .unwrap()
        .to_owned();
    let url = stderr
        .split("https://127.0.0.1:")
        .nth(1)
        .expect("an https setup URL");
    let port: u16 = url.split('/').next().unwrap().parse().unwrap();
    (daemon, port, fingerprint)
}

/// The SHA-256 fingerprint of the certificate a TLS server presents, seen by a rustls client
/// that trusts `ca`.
async fn served_fingerprint(port: u16, ca: &std::path::Path) -> String {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    wharf::tls::fingerprint(&session.peer_certificates().unwrap()[0])
}

#[tokio::test]
async fn a_client_trusting_the_generated_ca_reaches_the_api_and_sees_the_printed_certificate() {
    if harness::skip_unless_root(
        "a_client_trusting_the_generated_ca_reaches_the_api_and_sees_the_printed_certificate",
    ) {
        return;
    }
    let (daemon, port, printed) = start_tls(&[]);
    let ca = daemon.data_root.join("tls/ca.pem");
    assert!(
        daemon
            .stderr()
            .contains(&format!("clients trust {}", ca.display()))
    );
    assert_eq!(
        served_fingerprint(port, &ca).await,
        printed,
        "the printed fingerprint is the served certificate's"
    );

    // A real HTTPS client (curl) with the CA, by name and by address.
    for host in ["localhost", "127.0.0.1"] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&ca)
            .arg(format!("https://{host}:{port}/healthz"))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"ok\n");
    }

    // The wharf CLI over https with a token; the fingerprint is also in `info`.
    let socket = format!("unix://{}", daemon.socket.display());
    let (status, _, err) = run_wharf_input(
        wharf_command().args([
            "-H",
            &socket,
            "user",
            "add",
            "tess",
            "--role",
            "admin",
            "--password-stdin",
        ]),
        "tess-password\n",
    );
    assert!(status.success(), "{err}");
    let (_, token, _) = run_wharf(wharf_command().args([
        "-H", &socket, "token", "create", "--name", "t", "--user", "tess",
    ]));
    let https = format!("https://localhost:{port}");
    let (status, out, err) = run_wharf(
        wharf_command()
            .args([
                "-H",
                &https,
                "--token",
                token.trim(),
                "info",
                "--format",
                "json",
            ])
            .arg("--tls-ca")
            .arg(&ca),
    );
    assert!(status.success(), "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["tls_fingerprint"], printed.as_str());

    // Without trusting the CA, the client refuses the daemon.
    let (status, _, err) =
        run_wharf(wharf_command().args(["-H", &https, "--token", token.trim(), "info"]));
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("TLS to the wharf daemon") && err.contains("UnknownIssuer"),
        "{err}"
    );

    // A browser session over TLS gets a __Host- cookie marked Secure.
    let client = ApiClient::new(
        Endpoint::Https {
            authority: format!("localhost:{port}"),
        },
        None,
    )
    .with_tls_ca(Some(ca.clone()));
    let r = client
        .request(
            Method::POST,
            "/api/v1/auth/login",
            Some(
                serde_json::to_vec(&json!({"username": "tess", "password": "tess-password"}))
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("__Host-wharf_session=")
            && cookie.contains("Secure")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails_cleanly_and_the_daemon_goes_on() {
    if harness::skip_unless_root("plain_http_to_the_tls_port_fails_cleanly_and_the_daemon_goes_on")
    {
        return;
    }
    let (daemon, port, _) = start_tls(&[]);
    let plain = ApiClient::new(
        Endpoint::Http {
            authority: format!("127.0.0.1:{port}"),
        },
        None,
    );
    let r = plain.request(Method::GET, "/healthz", None).await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&r.body).contains("use https://"));
    // A client that connects and says nothing does not block others either.
    let _silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let ca = daemon.data_root.join("tls/ca.pem");
    let tls = ApiClient::new(
        Endpoint::Https {
            authority: format!("localhost:{port}"),
        },
        None,
    )
    .with_tls_ca(Some(ca));
    let r = tls.request(Method::GET, "/healthz", None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn an_operator_certificate_is_served_as_given() {
    if harness::skip_unless_root("an_operator_certificate_is_served_as_given") {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let made = wharf::tls::self_signed(certs.path(), &["localhost".into()]).unwrap();
    let cert = certs.path().join("server.pem");
    let key = certs.path().join("server-key.pem");
    let (daemon, port, printed) = start_tls(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(printed, made.fingerprint);
    assert!(
        daemon
            .stderr()
            .contains(&format!("TLS certificate {}", cert.display()))
    );
    assert!(
        !daemon.data_root.join("tls").exists(),
        "no certificate of its own was made"
    );
    assert_eq!(
        served_fingerprint(port, &certs.path().join("ca.pem")).await,
        made.fingerprint
    );

    // A key that does not match the certificate is refused at start, naming both files.
    let other = tempfile::tempdir().unwrap();
    wharf::tls::self_signed(other.path(), &["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = DaemonProcess::command(dir.path());
    cmd.args([
        "--tls",
        "on",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
    ])
    .arg(other.path().join("server-key.pem"));
    let mut bad = DaemonProcess::spawn(dir, cmd);
    let status = bad
        .wait_exit(std::time::Duration::from_secs(20))
        .expect("exits");
    assert_eq!(status.code(), Some(1));
    let stderr = bad.stderr();
    assert!(
        stderr.contains("do not work together") && stderr.contains("server.pem"),
        "{stderr}"
    );
}
