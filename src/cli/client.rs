//! The API client of the command-line face: one HTTP/1.1 exchange per call, over the daemon's unix
//! socket or over TCP, with an optional bearer token.

use std::fmt;
use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::config::DEFAULT_SOCKET;

/// The default `--host`: the daemon's default socket.
pub fn default_host() -> String {
    format!("unix://{DEFAULT_SOCKET}")
}

/// Where the daemon is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///run/wharf/wharf.sock`
    Unix(PathBuf),
    /// `http://host:port` (also written `tcp://host:port`)
    Http { authority: String },
    /// `https://host:port`
    Https { authority: String },
}

impl Endpoint {
    /// Parses `unix:///path`, `http://host:port` or `tcp://host:port`.
    pub fn parse(host: &str) -> Result<Endpoint, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidHost {
            host: host.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(path) = host.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(invalid(
                    "a unix socket path must be absolute, as in unix:///run/wharf/wharf.sock",
                ));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let (rest, tls) = if let Some(rest) = host.strip_prefix("https://") {
            (rest, true)
        } else if let Some(rest) = host
            .strip_prefix("http://")
            .or_else(|| host.strip_prefix("tcp://"))
        {
            (rest, false)
        } else {
            return Err(invalid(
                "expected unix:///path, https://host:port, http://host:port or tcp://host:port",
            ));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(invalid("expected host:port after the scheme, with no path"));
        }
        let authority = match authority.rsplit_once(':') {
            Some((_, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                authority.to_owned()
            }
            _ if authority.ends_with(']') || !authority.contains(':') => {
                format!("{authority}:7878")
            }
            _ => return Err(invalid("the port must be a number")),
        };
        Ok(if tls {
            Endpoint::Https { authority }
        } else {
            Endpoint::Http { authority }
        })
    }

    /// The host part of a network endpoint, without the port or IPv6 brackets.
    fn host_name(&self) -> Option<&str> {
        match self {
            Endpoint::Unix(_) => None,
            Endpoint::Http { authority } | Endpoint::Https { authority } => {
                let host = authority
                    .rsplit_once(':')
                    .map_or(authority.as_str(), |(h, _)| h);
                Some(host.trim_start_matches('[').trim_end_matches(']'))
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Http { authority } => write!(f, "http://{authority}"),
            Endpoint::Https { authority } => write!(f, "https://{authority}"),
        }
    }
}

/// Why a call to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid daemon host {host:?}: {reason}")]
    InvalidHost { host: String, reason: String },
    #[error("cannot reach the wharf daemon at {endpoint}: is `wharf serve` running? ({source})")]
    Unreachable {
        endpoint: Endpoint,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "permission denied on the wharf daemon socket {endpoint}: run as root, or as a member of the socket's group"
    )]
    PermissionDenied { endpoint: Endpoint },
    #[error("the exchange with the wharf daemon at {endpoint} failed: {source}")]
    Http {
        endpoint: Endpoint,
        #[source]
        source: hyper::Error,
    },
    #[error("{reason}")]
    Input { reason: String },
    /// Not a failure of wharf's: `wharf run` ends with its container's exit code.
    #[error("the container exited with code {0}")]
    ContainerExit(u8),
    #[error("TLS to the wharf daemon at {endpoint} failed: {reason}")]
    Tls { endpoint: Endpoint, reason: String },
    #[error("the daemon answered {status}: {message}")]
    Api { status: StatusCode, message: String },
    #[error("the daemon's answer to {path} could not be read: {source}")]
    Decode {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A connection to the daemon, whatever carries it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct ApiClient {
    endpoint: Endpoint,
    token: Option<String>,
    /// CA certificates (PEM) to trust for https, instead of the system's.
    tls_ca: Option<PathBuf>,
}

/// A complete answer: status and body.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl ApiClient {
    pub fn new(endpoint: Endpoint, token: Option<String>) -> ApiClient {
        ApiClient {
            endpoint,
            token: token.filter(|t| !t.is_empty()),
            tls_ca: None,
        }
    }

    /// Trusts the CA certificates in this PEM file for https (e.g. the daemon's `tls/ca.pem`).
    pub fn with_tls_ca(mut self, ca: Option<PathBuf>) -> ApiClient {
        self.tls_ca = ca;
        self
    }

    fn tls_connector(&self) -> Result<tokio_rustls::TlsConnector, ClientError> {
        let fail = |reason: String| ClientError::Tls {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        match &self.tls_ca {
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                let pem = std::fs::read(path)
                    .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|_| {
                        fail(format!("{} holds no PEM certificate", path.display()))
                    })?;
                    roots
                        .add(cert)
                        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
            config,
        )))
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request and reads the whole answer, whatever its status.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ApiResponse, ClientError> {
        self.request_with_headers(method, path, &[], body).await
    }

    /// [`ApiClient::request`] with extra headers (cookies, CSRF tokens, content types).
    pub async fn request_with_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<ApiResponse, ClientError> {
        let json = body.is_some()
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        let mut builder = self.builder(method, path, headers);
        if json {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.invalid(e))?;
        let (response, driver) = self.send_on_new_connection(request).await?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.http(e))?
            .to_bytes();
        let _ = driver.await;
        Ok(ApiResponse {
            status,
            content_type,
            headers,
            body,
        })
    }

    /// Uploads `body` (streamed, e.g. a file) and hands each line of a streamed answer (NDJSON
    /// progress) to `on_line` as it arrives. A non-2xx answer is an error.
    pub async fn upload_streaming<B>(
        &self,
        path: &str,
        content_type: &str,
        body: B,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<(), ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.upload_streaming_as(Method::POST, path, content_type, body, on_line)
            .await
    }

    /// [`ApiClient::upload_streaming`] with another method (PUT of a container's files).
    pub async fn upload_streaming_as<B>(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: B,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<(), ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request = self
            .builder(method, path, &[])
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| self.invalid(e))?;
        self.lines_of(request, on_line).await
    }

    /// GETs `path` and calls `on_line` with each line of the answer as it arrives (NDJSON
    /// streams such as followed logs).
    pub async fn get_lines(
        &self,
        path: &str,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<(), ClientError> {
        let request = self
            .builder(Method::GET, path, &[])
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.invalid(e))?;
        self.lines_of(request, on_line).await
    }

    /// Sends `request` and hands each line of its (streamed) answer to `on_line` as it arrives;
    /// a non-2xx answer is an error.
    async fn lines_of<B>(
        &self,
        request: Request<B>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<(), ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (response, driver) = self.send_on_new_connection(request).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            return Err(self.error_answer(status, body).await);
        }
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.http(e))?;
            if let Some(data) = frame.data_ref() {
                pending.extend_from_slice(data);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    on_line(String::from_utf8_lossy(&line).trim_end());
                }
            }
        }
        if !pending.is_empty() {
            on_line(String::from_utf8_lossy(&pending).trim_end());
        }
        let _ = driver.await;
        Ok(())
    }

    /// GETs `path` and writes the answer's body to `out` as it arrives (large downloads).
    pub async fn download(
        &self,
        path: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, ClientError> {
        let request = self
            .builder(Method::GET, path, &[])
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.invalid(e))?;
        let (response, driver) = self.send_on_new_connection(request).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            return Err(self.error_answer(status, body).await);
        }
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.http(e))?;
            if let Some(data) = frame.data_ref() {
                out.write_all(data).map_err(|e| ClientError::Input {
                    reason: format!("writing the download: {e}"),
                })?;
                written += data.len() as u64;
            }
        }
        let _ = driver.await;
        Ok(written)
    }

    /// The error an answer with a non-2xx status carries.
    async fn error_answer(&self, status: StatusCode, body: hyper::body::Incoming) -> ClientError {
        match body.collect().await {
            Ok(collected) => api_error(&ApiResponse {
                status,
                content_type: None,
                headers: Default::default(),
                body: collected.to_bytes(),
            }),
            Err(e) => self.http(e),
        }
    }

    fn invalid(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::InvalidHost {
            host: self.endpoint.to_string(),
            reason: e.to_string(),
        }
    }

    fn http(&self, source: hyper::Error) -> ClientError {
        ClientError::Http {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// A request to the daemon with the host, user agent and token set.
    fn builder(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> hyper::http::request::Builder {
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "wharf",
            Endpoint::Http { authority } | Endpoint::Https { authority } => authority.as_str(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host)
            .header(
                hyper::header::USER_AGENT,
                concat!("wharf-cli/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = &self.token {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder
    }

    /// Opens a WebSocket session at `path` (attach, exec); an error answer in place of the
    /// upgrade is a [`ClientError::Api`].
    pub async fn websocket(
        &self,
        path: &str,
    ) -> Result<tokio_tungstenite::WebSocketStream<Box<dyn Io>>, ClientError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let io = self.connect().await?;
        let (scheme, host) = match &self.endpoint {
            Endpoint::Unix(_) => ("ws", "wharf"),
            Endpoint::Http { authority } => ("ws", authority.as_str()),
            Endpoint::Https { authority } => ("wss", authority.as_str()),
        };
        let failed = |reason: String| ClientError::Input {
            reason: format!("the session with the daemon failed: {reason}"),
        };
        let mut request = format!("{scheme}://{host}{path}")
            .into_client_request()
            .map_err(|e| failed(e.to_string()))?;
        let headers = request.headers_mut();
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            headers.insert(hyper::header::AUTHORIZATION, value);
        }
        match tokio_tungstenite::client_async(request, io).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                Err(api_error(&ApiResponse {
                    status,
                    content_type: Some("application/json".into()),
                    headers: Default::default(),
                    body: Bytes::from(response.into_body().unwrap_or_default()),
                }))
            }
            Err(e) => Err(failed(e.to_string())),
        }
    }

    /// Connects to the daemon (unix socket, TCP, or TLS over TCP).
    async fn connect(&self) -> Result<Box<dyn Io>, ClientError> {
        let unreachable = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                ClientError::PermissionDenied {
                    endpoint: self.endpoint.clone(),
                }
            } else {
                ClientError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    source,
                }
            }
        };
        Ok(match &self.endpoint {
            Endpoint::Unix(path) => Box::new(UnixStream::connect(path).await.map_err(unreachable)?),
            Endpoint::Http { authority } => Box::new(
                TcpStream::connect(authority.as_str())
                    .await
                    .map_err(unreachable)?,
            ),
            Endpoint::Https { authority } => {
                let connector = self.tls_connector()?;
                let name = rustls::pki_types::ServerName::try_from(
                    self.endpoint.host_name().unwrap_or_default().to_owned(),
                )
                .map_err(|e| ClientError::Tls {
                    endpoint: self.endpoint.clone(),
                    reason: e.to_string(),
                })?;
                let stream = TcpStream::connect(authority.as_str())
                    .await
                    .map_err(unreachable)?;
                Box::new(
                    connector
                        .connect(name, stream)
                        .await
                        .map_err(|e| ClientError::Tls {
                            endpoint: self.endpoint.clone(),
                            reason: format!("{e} (is the daemon's CA trusted? see --tls-ca)"),
                        })?,
                )
            }
        })
    }

    /// Sends one request on a fresh connection; the task driving the connection is returned so
    /// the caller can await it once it has read the answer.
    async fn send_on_new_connection<B>(
        &self,
        request: Request<B>,
    ) -> Result<
        (
            hyper::Response<hyper::body::Incoming>,
            tokio::task::JoinHandle<()>,
        ),
        ClientError,
    >
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let io = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.http(e))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.http(e))?;
        Ok((response, driver))
    }

    /// Sends `body` as JSON with `method` and decodes a JSON answer (non-2xx: [`ClientError::Api`]).
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).expect("request bodies serialize");
        let response = self.request(method, path, Some(bytes)).await?;
        if !response.status.is_success() {
            return Err(api_error(&response));
        }
        serde_json::from_slice(&response.body).map_err(|source| ClientError::Decode {
            path: path.to_owned(),
            source,
        })
    }

    /// Sends a request whose answer has no body worth reading; non-2xx is an error.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(), ClientError> {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON values serialize"));
        let response = self.request(method, path, bytes).await?;
        if !response.status.is_success() {
            return Err(api_error(&response));
        }
        Ok(())
    }

    /// GETs `path` and decodes a JSON answer; a non-2xx answer becomes [`ClientError::Api`].
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.request(Method::GET, path, None).await?;
        if !response.status.is_success() {
            return Err(api_error(&response));
        }
        serde_json::from_slice(&response.body).map_err(|source| ClientError::Decode {
            path: path.to_owned(),
            source,
        })
    }
}

/// The message of an error answer: the JSON `message` field, else the body as text.
fn api_error(response: &ApiResponse) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Body {
        message: String,
    }
    let mut message = serde_json::from_slice::<Body>(&response.body)
        .map(|b| b.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&response.body).trim().to_owned());
    if response.status == StatusCode::UNAUTHORIZED {
        message.push_str(
            " (sign in with `wharf login HOST`, or pass an API token with --token or WHARF_TOKEN)",
        );
    }
    ClientError::Api {
        status: response.status,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_into_endpoints() {
        assert_eq!(
            Endpoint::parse("unix:///run/wharf/wharf.sock").unwrap(),
            Endpoint::Unix("/run/wharf/wharf.sock".into())
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:7878").unwrap(),
            Endpoint::Http {
                authority: "127.0.0.1:7878".into()
            }
        );
        assert_eq!(
            Endpoint::parse("tcp://example.test").unwrap(),
            Endpoint::Http {
                authority: "example.test:7878".into()
            }
        );
        assert_eq!(
            Endpoint::parse("http://[::1]:99/").unwrap(),
            Endpoint::Http {
                authority: "[::1]:99".into()
            }
        );
        assert_eq!(
            Endpoint::parse(&default_host()).unwrap().to_string(),
            default_host()
        );
    }

    #[test]
    fn bad_hosts_say_what_is_wrong() {
        for (host, needle) in [
            ("unix://relative.sock", "absolute"),
            ("ftp://x:1", "expected unix://"),
            ("http://", "host:port"),
            ("http://h:1/api", "no path"),
            ("http://h:port", "port must be a number"),
            ("gopher://h:1", "https://host:port"),
        ] {
            let err = Endpoint::parse(host).unwrap_err().to_string();
            assert!(err.contains(host) && err.contains(needle), "{host}: {err}");
        }
    }
}
