//! Daemon settings and the data-root layout.
//!
//! Owns how `wharf serve` decides its settings — built-in defaults, then the config file, then
//! `WHARF_*` environment variables, then command-line flags, each layer overriding the one before
//! field by field — and where everything lives under the data root. It reads the config file and
//! the environment it is handed; it creates nothing on disk (that is `startup`'s job).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// Where the config file is looked for when neither `--config` nor `WHARF_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/wharf/wharf.toml";
/// Default data root: the SQLite database, blobs, layers, containers and volumes live under it.
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/wharf";
/// Default unix socket of the API, used by the local CLI.
pub const DEFAULT_SOCKET: &str = "/run/wharf/wharf.sock";
/// Default TCP address of the API and the dashboard.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Default TCP address of the built-in registry (loopback: docker pushes there over plain HTTP
/// without an insecure-registries entry).
pub const DEFAULT_REGISTRY_LISTEN: &str = "127.0.0.1:5000";
/// How long events are kept unless configured: a week.
pub const DEFAULT_EVENT_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 60 * 60);

/// The settings of one daemon, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Root of all state (see [`DataRoot`]).
    pub data_root: PathBuf,
    /// TCP address to serve on; `None` serves on the unix socket only.
    pub listen: Option<SocketAddr>,
    /// TCP address of the registry (`/v2/`); `None` turns the registry off.
    pub registry_listen: Option<SocketAddr>,
    /// Registry uploads untouched for longer than this are reaped.
    pub registry_upload_max_age: std::time::Duration,
    /// Events older than this are dropped from the database.
    pub event_retention: std::time::Duration,
    /// The network of containers that name none: `bridge` (the default network) or `none`.
    pub default_network: String,
    /// The subnet of the default `bridge` network.
    pub bridge_subnet: String,
    /// Path of the unix socket the local CLI talks to.
    pub socket: PathBuf,
    /// Group given access to the socket (mode 0660); `None` leaves it root's group.
    pub socket_group: Option<String>,
    /// `tracing` filter directive, e.g. `info` or `wharf=debug,tower_http=info`.
    pub log_level: String,
    /// How log lines are written to stderr.
    pub log_format: LogFormat,
    /// Whether the TCP listener speaks TLS.
    pub tls: TlsMode,
    /// PEM certificate chain and key for TLS; without them the daemon makes its own.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Remote registries (`host[:port]`) pull may reach over plain HTTP, besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Which config file contributed, if any (reported by `system/info`).
    pub config_file: Option<PathBuf>,
    /// The wharf binary that runs container shims; `None` is this process's own binary (an
    /// in-process test daemon sets the real one).
    pub shim_exe: Option<PathBuf>,
}

impl Config {
    /// The built-in defaults, before any file, environment or flag.
    pub fn defaults() -> Config {
        Config {
            data_root: PathBuf::from(DEFAULT_DATA_ROOT),
            listen: Some(
                DEFAULT_LISTEN
                    .parse()
                    .expect("default listen address parses"),
            ),
            registry_listen: Some(
                DEFAULT_REGISTRY_LISTEN
                    .parse()
                    .expect("default registry address parses"),
            ),
            registry_upload_max_age: std::time::Duration::from_secs(24 * 60 * 60),
            event_retention: DEFAULT_EVENT_RETENTION,
            default_network: crate::network::DEFAULT_NETWORK.to_owned(),
            bridge_subnet: crate::network::DEFAULT_SUBNET.to_owned(),
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_group: None,
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            tls: TlsMode::Auto,
            tls_cert: None,
            tls_key: None,
            insecure_registries: Vec::new(),
            config_file: None,
            shim_exe: None,
        }
    }

    /// Whether the TCP listener will speak TLS: `on`, or `auto` with a certificate given or an
    /// address other than loopback (a network-facing appliance never serves plain HTTP by default).
    pub fn tls_enabled(&self) -> bool {
        match self.tls {
            TlsMode::On => true,
            TlsMode::Off => false,
            TlsMode::Auto => {
                self.tls_cert.is_some() || self.listen.is_some_and(|a| !a.ip().is_loopback())
            }
        }
    }

    /// Whether the registry listener speaks TLS: as for the API's, by its own address.
    pub fn registry_tls_enabled(&self) -> bool {
        match self.tls {
            TlsMode::On => true,
            TlsMode::Off => false,
            TlsMode::Auto => {
                self.tls_cert.is_some()
                    || self.registry_listen.is_some_and(|a| !a.ip().is_loopback())
            }
        }
    }

    /// The layout of this daemon's data root.
    pub fn layout(&self) -> DataRoot {
        DataRoot::new(&self.data_root)
    }

    /// Resolves the settings: defaults → config file → `WHARF_*` environment → flags.
    ///
    /// The config file is `flags.config`, else `WHARF_CONFIG`, else [`DEFAULT_CONFIG_FILE`] when it
    /// exists. A file named explicitly must exist. `env` looks up one environment variable; the
    /// daemon passes `std::env::var`, tests pass a map.
    pub fn load(
        flags: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::defaults();

        let (file, explicit) = match (&flags.config, env("WHARF_CONFIG")) {
            (Some(path), _) => (Some(path.clone()), true),
            (None, Some(path)) if !path.is_empty() => (Some(PathBuf::from(path)), true),
            _ => (Some(PathBuf::from(DEFAULT_CONFIG_FILE)), false),
        };
        if let Some(path) = file {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let parsed = ConfigFile::parse(&text).map_err(|reason| ConfigError::File {
                        path: path.clone(),
                        reason,
                    })?;
                    config.apply_layer(parsed.into_overrides(), "config file", &path)?;
                    config.config_file = Some(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
                Err(e) => {
                    return Err(ConfigError::File {
                        path,
                        reason: e.to_string(),
                    });
                }
            }
        }

        config.apply_layer(Overrides::from_env(env)?, "environment", Path::new(""))?;
        config.apply_layer(flags.clone(), "flags", Path::new(""))?;
        config.check_tls()?;
        Ok(config)
    }

    fn check_tls(&self) -> Result<(), ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            origin: "settings".into(),
            field: "tls",
            value: self.tls.to_string(),
            reason: reason.to_owned(),
        };
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "tls_cert and tls_key go together: give both or neither",
            ));
        }
        if self.tls == TlsMode::Off && self.tls_cert.is_some() {
            return Err(invalid("a certificate is given but tls is off"));
        }
        if self.tls == TlsMode::On && self.listen.is_none() {
            return Err(invalid(
                "tls is on but the daemon does not listen on TCP (listen = none)",
            ));
        }
        Ok(())
    }

    fn apply_layer(
        &mut self,
        layer: Overrides,
        source: &'static str,
        file: &Path,
    ) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, value: &str, reason: String| ConfigError::Invalid {
            origin: if file.as_os_str().is_empty() {
                source.to_owned()
            } else {
                format!("{source} {}", file.display())
            },
            field,
            value: value.to_owned(),
            reason,
        };
        if let Some(root) = layer.data_root {
            if !root.is_absolute() {
                return Err(invalid(
                    "data_root",
                    &root.display().to_string(),
                    "must be an absolute path".into(),
                ));
            }
            self.data_root = root;
        }
        if let Some(listen) = layer.listen {
            self.listen = parse_listen(&listen).map_err(|r| invalid("listen", &listen, r))?;
        }
        if let Some(listen) = layer.registry_listen {
            self.registry_listen =
                parse_listen(&listen).map_err(|r| invalid("registry_listen", &listen, r))?;
        }
        if let Some(age) = layer.registry_upload_max_age {
            let parsed = humantime::parse_duration(age.trim()).map_err(|e| {
                invalid(
                    "registry_upload_max_age",
                    &age,
                    format!("{e}: give a duration such as 24h or 90m"),
                )
            })?;
            if parsed < std::time::Duration::from_secs(60) {
                return Err(invalid(
                    "registry_upload_max_age",
                    &age,
                    "must be at least 1m: a slow push must not lose its upload".into(),
                ));
            }
            self.registry_upload_max_age = parsed;
        }
        if let Some(keep) = layer.event_retention {
            let parsed = humantime::parse_duration(keep.trim()).map_err(|e| {
                invalid(
                    "event_retention",
                    &keep,
                    format!("{e}: give a duration such as 7d or 12h"),
                )
            })?;
            if parsed < std::time::Duration::from_secs(60) {
                return Err(invalid(
                    "event_retention",
                    &keep,
                    "must be at least 1m".into(),
                ));
            }
            self.event_retention = parsed;
        }
        if let Some(mode) = layer.default_network {
            if !matches!(mode.as_str(), "bridge" | "none") {
                return Err(invalid(
                    "default_network",
                    &mode,
                    "give bridge or none".into(),
                ));
            }
            self.default_network = mode;
        }
        if let Some(subnet) = layer.bridge_subnet {
            crate::network::ipam::Subnet::parse(&subnet)
                .map_err(|reason| invalid("bridge_subnet", &subnet, reason))?;
            self.bridge_subnet = subnet;
        }
        if let Some(socket) = layer.socket {
            if !socket.is_absolute() {
                return Err(invalid(
                    "socket",
                    &socket.display().to_string(),
                    "must be an absolute path".into(),
                ));
            }
            self.socket = socket;
        }
        if let Some(group) = layer.socket_group {
            self.socket_group = (!group.is_empty()).then_some(group);
        }
        if let Some(level) = layer.log_level {
            tracing_subscriber::EnvFilter::try_new(&level)
                .map_err(|e| invalid("log_level", &level, e.to_string()))?;
            self.log_level = level;
        }
        if let Some(format) = layer.log_format {
            self.log_format = format
                .parse()
                .map_err(|r| invalid("log_format", &format, r))?;
        }
        if let Some(tls) = layer.tls {
            self.tls = tls.parse().map_err(|r| invalid("tls", &tls, r))?;
        }
        if let Some(hosts) = layer.insecure_registries {
            let mut normalized = Vec::new();
            for host in hosts {
                let host = crate::images::credentials::normalize_host(&host)
                    .map_err(|e| invalid("insecure_registries", &host, e.to_string()))?;
                if !normalized.contains(&host) {
                    normalized.push(host);
                }
            }
            self.insecure_registries = normalized;
        }
        for (field, value, slot) in [
            ("tls_cert", layer.tls_cert, &mut self.tls_cert),
            ("tls_key", layer.tls_key, &mut self.tls_key),
        ] {
            if let Some(path) = value {
                if !path.is_absolute() {
                    let shown = path.display().to_string();
                    return Err(invalid(field, &shown, "must be an absolute path".into()));
                }
                *slot = Some(path);
            }
        }
        Ok(())
    }
}

/// `--listen` accepts `host:port` (port 0 picks a free port) or `none` to serve on the socket only.
fn parse_listen(value: &str) -> Result<Option<SocketAddr>, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("none") || value.is_empty() {
        return Ok(None);
    }
    value
        .parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| "expected IP:PORT such as 127.0.0.1:7878 or [::1]:7878, or `none`".to_owned())
}

/// One layer of settings: every field optional, `None` keeps what the layers below decided.
/// The command line fills one of these; the environment and the config file are turned into one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_root: Option<PathBuf>,
    pub listen: Option<String>,
    pub registry_listen: Option<String>,
    pub registry_upload_max_age: Option<String>,
    pub event_retention: Option<String>,
    pub default_network: Option<String>,
    pub bridge_subnet: Option<String>,
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub tls: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Replaces (not extends) the list of the layers below.
    pub insecure_registries: Option<Vec<String>>,
}

impl Overrides {
    fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Overrides, ConfigError> {
        let path = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Ok(Overrides {
            config: None,
            data_root: path("WHARF_DATA_ROOT"),
            listen: env("WHARF_LISTEN"),
            registry_listen: env("WHARF_REGISTRY_LISTEN"),
            registry_upload_max_age: env("WHARF_REGISTRY_UPLOAD_MAX_AGE").filter(|v| !v.is_empty()),
            event_retention: env("WHARF_EVENT_RETENTION").filter(|v| !v.is_empty()),
            default_network: env("WHARF_DEFAULT_NETWORK").filter(|v| !v.is_empty()),
            bridge_subnet: env("WHARF_BRIDGE_SUBNET").filter(|v| !v.is_empty()),
            socket: path("WHARF_SOCKET"),
            socket_group: env("WHARF_SOCKET_GROUP"),
            log_level: env("WHARF_LOG").filter(|v| !v.is_empty()),
            log_format: env("WHARF_LOG_FORMAT").filter(|v| !v.is_empty()),
            tls: env("WHARF_TLS").filter(|v| !v.is_empty()),
            tls_cert: path("WHARF_TLS_CERT"),
            tls_key: path("WHARF_TLS_KEY"),
            // Comma-separated; set but empty clears the list.
            insecure_registries: env("WHARF_INSECURE_REGISTRIES").map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
        })
    }
}

/// The TOML config file. Unknown keys are an error, so a typo does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data_root: Option<PathBuf>,
    listen: Option<String>,
    registry_listen: Option<String>,
    registry_upload_max_age: Option<String>,
    event_retention: Option<String>,
    default_network: Option<String>,
    bridge_subnet: Option<String>,
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    tls: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure_registries: Option<Vec<String>>,
}

impl ConfigFile {
    fn parse(text: &str) -> Result<ConfigFile, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    fn into_overrides(self) -> Overrides {
        Overrides {
            config: None,
            data_root: self.data_root,
            listen: self.listen,
            registry_listen: self.registry_listen,
            registry_upload_max_age: self.registry_upload_max_age,
            event_retention: self.event_retention,
            default_network: self.default_network,
            bridge_subnet: self.bridge_subnet,
            socket: self.socket,
            socket_group: self.socket_group,
            log_level: self.log_level,
            log_format: self.log_format,
            tls: self.tls,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            insecure_registries: self.insecure_registries,
        }
    }
}

/// Whether the TCP listener speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS when a certificate is given or the address is not loopback.
    Auto,
    On,
    Off,
}

impl FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(TlsMode::Auto),
            "on" => Ok(TlsMode::On),
            "off" => Ok(TlsMode::Off),
            _ => Err("expected `auto`, `on` or `off`".to_owned()),
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Auto => "auto",
            TlsMode::On => "on",
            TlsMode::Off => "off",
        })
    }
}

/// Format of the daemon's log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected `text` or `json`".to_owned()),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Why the settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("invalid {field} {value:?} (from {origin}): {reason}")]
    Invalid {
        origin: String,
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// The on-disk layout under the data root. Every path of the daemon's state is named here, once.
///
/// ```text
/// <data-root>/wharf.lock              one daemon per data root (flock), holds the daemon's pid
/// <data-root>/wharf.db                SQLite in WAL mode (+ -wal, -shm)
/// <data-root>/tls/                    ca.pem, server.pem, server-key.pem (made when none is given)
/// <data-root>/blobs/sha256/<ab>/<hex> content-addressed bytes            (images::store)
/// <data-root>/layers/<chain-id hex>/  unpacked layers                    (images::snapshot)
/// <data-root>/uploads/<uuid>          registry upload sessions           (registry)
/// <data-root>/containers/<id>/        spec, state, upper/work dirs, logs (engine)
/// <data-root>/volumes/<name>/_data    named volumes                      (engine)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRoot {
    root: PathBuf,
}

impl DataRoot {
    pub fn new(root: impl Into<PathBuf>) -> DataRoot {
        DataRoot { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("wharf.lock")
    }

    pub fn database(&self) -> PathBuf {
        self.root.join("wharf.db")
    }

    /// The content store (see `images::store`).
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// Unpacked layers (see `images::snapshot`).
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// Registry upload sessions in progress (see `registry::uploads`).
    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// Credentials for remote registries, from `wharf login` (see `images::credentials`).
    pub fn registry_credentials(&self) -> PathBuf {
        self.root.join("registry-credentials.json")
    }

    /// The daemon's own TLS certificate and its CA, when none is configured.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn write_file(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("wharf.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let dir = temp_dir();
        let missing = dir.path().join("absent.toml");
        let env = env_of(&[("WHARF_CONFIG", missing.to_str().unwrap())]);
        // An explicitly named file that is missing is an error ...
        let err = Config::load(&Overrides::default(), &env).unwrap_err();
        assert!(err.to_string().contains("absent.toml"), "{err}");
        // ... while with nothing named the defaults stand (unless /etc/wharf/wharf.toml exists).
        if !Path::new(DEFAULT_CONFIG_FILE).exists() {
            let config = Config::load(&Overrides::default(), &env_of(&[])).unwrap();
            assert_eq!(config, Config::defaults());
        }
    }

    #[test]
    fn each_layer_overrides_the_one_below_field_by_field() {
        let dir = temp_dir();
        let file = write_file(
            dir.path(),
            "data_root = \"/srv/file\"\nlisten = \"127.0.0.1:9000\"\nsocket = \"/run/file.sock\"\nlog_level = \"debug\"\n",
        );
        let env = env_of(&[
            ("WHARF_LISTEN", "127.0.0.1:9100"),
            ("WHARF_SOCKET", "/run/env.sock"),
        ]);
        let flags = Overrides {
            config: Some(file.clone()),
            socket: Some(PathBuf::from("/run/flag.sock")),
            ..Overrides::default()
        };
        let config = Config::load(&flags, &env).unwrap();
        assert_eq!(
            config.data_root,
            PathBuf::from("/srv/file"),
            "file beats default"
        );
        assert_eq!(
            config.listen,
            Some("127.0.0.1:9100".parse().unwrap()),
            "env beats file"
        );
        assert_eq!(
            config.socket,
            PathBuf::from("/run/flag.sock"),
            "flag beats env"
        );
        assert_eq!(config.log_level, "debug");
        assert_eq!(
            config.log_format,
            LogFormat::Text,
            "default where no layer speaks"
        );
        assert_eq!(config.config_file, Some(file));
    }

    #[test]
    fn listen_none_serves_on_the_socket_only_and_port_zero_is_allowed() {
        let dir = temp_dir();
        let flags = Overrides {
            config: Some(write_file(dir.path(), "")),
            listen: Some("none".into()),
            ..Overrides::default()
        };
        assert_eq!(Config::load(&flags, &env_of(&[])).unwrap().listen, None);
        let flags = Overrides {
            listen: Some("127.0.0.1:0".into()),
            ..flags
        };
        assert_eq!(
            Config::load(&flags, &env_of(&[])).unwrap().listen,
            Some("127.0.0.1:0".parse().unwrap())
        );
    }

    #[test]
    fn bad_values_name_the_field_the_value_and_the_source() {
        let dir = temp_dir();
        let file = write_file(dir.path(), "");
        let env = env_of(&[
            ("WHARF_CONFIG", file.to_str().unwrap()),
            ("WHARF_LISTEN", "localhost"),
        ]);
        let err = Config::load(&Overrides::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listen") && err.contains("\"localhost\"") && err.contains("environment"),
            "{err}"
        );

        let flags = Overrides {
            config: Some(file),
            data_root: Some("relative/dir".into()),
            ..Overrides::default()
        };
        let err = Config::load(&flags, &env_of(&[])).unwrap_err().to_string();
        assert!(
            err.contains("data_root") && err.contains("absolute") && err.contains("flags"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_syntax_errors_in_the_file_name_the_file() {
        let dir = temp_dir();
        let file = write_file(dir.path(), "data_rot = \"/x\"\n");
        let flags = Overrides {
            config: Some(file.clone()),
            ..Overrides::default()
        };
        let err = Config::load(&flags, &env_of(&[])).unwrap_err().to_string();
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains("data_rot"),
            "{err}"
        );

        std::fs::write(&file, "listen = \n").unwrap();
        let err = Config::load(&flags, &env_of(&[])).unwrap_err().to_string();
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains("line 1"),
            "{err}"
        );

        std::fs::write(&file, "log_format = \"xml\"\n").unwrap();
        let err = Config::load(&flags, &env_of(&[])).unwrap_err().to_string();
        assert!(
            err.contains("log_format") && err.contains("config file"),
            "{err}"
        );
    }

    #[test]
    fn tls_follows_the_address_unless_told_and_its_files_go_together() {
        let dir = temp_dir();
        let file = write_file(dir.path(), "");
        let load = |pairs: &[(&str, &str)]| {
            let mut all = vec![("WHARF_CONFIG", file.to_str().unwrap())];
            all.extend_from_slice(pairs);
            Config::load(&Overrides::default(), &env_of(&all))
        };
        assert!(!load(&[]).unwrap().tls_enabled(), "loopback: plain HTTP");
        assert!(
            load(&[("WHARF_LISTEN", "0.0.0.0:7878")])
                .unwrap()
                .tls_enabled()
        );
        assert!(
            !load(&[("WHARF_LISTEN", "0.0.0.0:7878"), ("WHARF_TLS", "off")])
                .unwrap()
                .tls_enabled()
        );
        assert!(load(&[("WHARF_TLS", "on")]).unwrap().tls_enabled());
        let err = load(&[("WHARF_TLS_CERT", "/etc/x.pem")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("go together"), "{err}");
        let both = [
            ("WHARF_TLS_CERT", "/etc/x.pem"),
            ("WHARF_TLS_KEY", "/etc/x.key"),
        ];
        assert!(load(&both).unwrap().tls_enabled());
        let mut off = both.to_vec();
        off.push(("WHARF_TLS", "off"));
        assert!(load(&off).unwrap_err().to_string().contains("tls is off"));
        assert!(
            load(&[("WHARF_TLS", "yes")])
                .unwrap_err()
                .to_string()
                .contains("`auto`, `on` or `off`")
        );
    }

    #[test]
    fn insecure_registries_come_from_each_layer_normalized_and_checked() {
        let dir = temp_dir();
        let file = write_file(
            dir.path(),
            "insecure_registries = [\"Reg.Example:5000\", \"reg.example:5000\"]\n",
        );
        let flags = Overrides {
            config: Some(file.clone()),
            ..Overrides::default()
        };
        let config = Config::load(&flags, &env_of(&[])).unwrap();
        assert_eq!(config.insecure_registries, ["reg.example:5000"]);
        let env = env_of(&[("WHARF_INSECURE_REGISTRIES", "a.lan:80, b.lan")]);
        let config = Config::load(&flags, &env).unwrap();
        assert_eq!(
            config.insecure_registries,
            ["a.lan:80", "b.lan"],
            "env replaces file"
        );
        let flags_list = Overrides {
            insecure_registries: Some(vec![]),
            ..flags.clone()
        };
        assert!(
            Config::load(&flags_list, &env)
                .unwrap()
                .insecure_registries
                .is_empty()
        );
        let bad = env_of(&[("WHARF_INSECURE_REGISTRIES", "a.lan/path")]);
        let err = Config::load(&flags, &bad).unwrap_err().to_string();
        assert!(
            err.contains("insecure_registries") && err.contains("a.lan/path"),
            "{err}"
        );
    }

    #[test]
    fn the_packaged_config_file_documents_the_real_defaults() {
        let text = include_str!("../packaging/wharf.toml");
        assert!(
            ConfigFile::parse(text).is_ok(),
            "parses as shipped (all commented)"
        );
        // Uncommenting every setting must give back exactly the built-in defaults.
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.contains(" = ") && !l.starts_with(' ') && !l.starts_with("socket_group"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(uncommented.lines().count(), 12, "{uncommented}");
        let dir = temp_dir();
        let flags = Overrides {
            config: Some(write_file(dir.path(), &uncommented)),
            ..Overrides::default()
        };
        let config = Config::load(&flags, &env_of(&[])).unwrap();
        assert_eq!(
            Config {
                config_file: None,
                ..config
            },
            Config::defaults()
        );
    }

    #[test]
    fn the_upload_age_is_a_duration_of_at_least_a_minute() {
        let dir = temp_dir();
        let file = write_file(
            dir.path(),
            "registry_upload_max_age = \"90m\"\nevent_retention = \"2d\"\n",
        );
        let flags = Overrides {
            config: Some(file),
            ..Overrides::default()
        };
        let config = Config::load(&flags, &env_of(&[])).unwrap();
        assert_eq!(config.registry_upload_max_age.as_secs(), 90 * 60);
        assert_eq!(config.event_retention.as_secs(), 2 * 24 * 3600);
        for bad in ["soon", "10s"] {
            let env = env_of(&[("WHARF_REGISTRY_UPLOAD_MAX_AGE", bad)]);
            let err = Config::load(&Overrides::default(), &env)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("registry_upload_max_age") && err.contains(bad),
                "{err}"
            );
        }
    }
}
