//! `wharf user …`, `wharf token …`, `wharf login` and `wharf logout`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use clap::Subcommand;
use hyper::Method;
use serde::{Deserialize, Serialize};

use super::Format;
use super::client::{ApiClient, ClientError, Endpoint};
use crate::api::{CreatedToken, GrantView, UserView, WhoAmI};
use crate::db::{AccountKind, ApiToken};
use crate::domain::{Role, percent_encode};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (with a role) or a robot (registry only, with grants)
    Add {
        name: String,
        /// admin, operator or viewer (users only)
        #[arg(long)]
        role: Option<Role>,
        /// Make a robot account: it can only pull and push where its grants allow
        #[arg(long)]
        robot: bool,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
        /// Registry rights, e.g. team/*=pull,push (repeatable)
        #[arg(long = "grant", value_name = "PATTERN=RIGHTS")]
        grants: Vec<String>,
    },
    /// List users and robots
    Ls {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Remove a user or robot, with its sessions and tokens
    Rm { name: String },
    /// Set a new password (ends the user's sessions)
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Replace the registry rights of a user or robot, e.g. `team/**=pull,push app=pull`
    Grant {
        name: String,
        #[arg(value_name = "PATTERN=RIGHTS")]
        grants: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token (printed once, never again)
    Create {
        #[arg(long)]
        name: String,
        /// At most the owner's role; defaults to it
        #[arg(long)]
        role: Option<Role>,
        /// Lifetime such as 30d or 12h (default: no expiry)
        #[arg(long)]
        expires: Option<String>,
        /// The owner (admins and the local socket; default: yourself)
        #[arg(long)]
        user: Option<String>,
    },
    /// List your API tokens (everyone's with --all)
    Ls {
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Revoke an API token by id
    Revoke { id: i64 },
}

/// Reads a password: from stdin with `--password-stdin`, else twice from the terminal.
fn read_password(from_stdin: bool, confirm: bool) -> Result<String, ClientError> {
    let fail = |reason: String| ClientError::Input { reason };
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| fail(format!("cannot read the password from standard input: {e}")))?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(fail(
            "no terminal to ask for the password on: use --password-stdin".into(),
        ));
    }
    let first = rpassword::prompt_password("Password: ").map_err(|e| fail(e.to_string()))?;
    if confirm {
        let again =
            rpassword::prompt_password("Password again: ").map_err(|e| fail(e.to_string()))?;
        if again != first {
            return Err(fail("the passwords do not match".into()));
        }
    }
    Ok(first)
}

/// Parses `PATTERN=pull,push,delete`.
fn parse_grant(text: &str) -> Result<GrantView, ClientError> {
    let fail = |reason: &str| ClientError::Input {
        reason: format!("invalid grant {text:?}: {reason}"),
    };
    let (pattern, rights) = text
        .split_once('=')
        .ok_or_else(|| fail("expected PATTERN=RIGHTS, e.g. team/*=pull,push"))?;
    let mut grant = GrantView {
        pattern: pattern.to_owned(),
        pull: false,
        push: false,
        delete: false,
    };
    for right in rights.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        match right {
            "pull" => grant.pull = true,
            "push" => grant.push = true,
            "delete" => grant.delete = true,
            _ => return Err(fail("rights are pull, push and delete")),
        }
    }
    Ok(grant)
}

fn time(secs: Option<i64>) -> String {
    match secs {
        Some(s) if s >= 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s as u64))
                .to_string()
        }
        _ => "-".to_owned(),
    }
}

fn grants_text(grants: &[GrantView]) -> String {
    if grants.is_empty() {
        return "-".into();
    }
    grants
        .iter()
        .map(|g| {
            let rights: Vec<&str> = [(g.pull, "pull"), (g.push, "push"), (g.delete, "delete")]
                .into_iter()
                .filter_map(|(on, n)| on.then_some(n))
                .collect();
            format!("{}={}", g.pattern, rights.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) async fn user(client: ApiClient, command: UserCommand) -> Result<(), ClientError> {
    match command {
        UserCommand::Add {
            name,
            role,
            robot,
            password_stdin,
            grants,
        } => {
            let grants = grants
                .iter()
                .map(|g| parse_grant(g))
                .collect::<Result<Vec<_>, _>>()?;
            let password = read_password(password_stdin, true)?;
            let kind = if robot {
                AccountKind::Robot
            } else {
                AccountKind::User
            };
            let body = serde_json::json!({ "name": name, "kind": kind, "role": role, "password": password, "grants": grants });
            let user: UserView = client
                .send_json(Method::POST, "/api/v1/users", &body)
                .await?;
            match user.role {
                Some(role) => println!("added user {} ({role})", user.name),
                None => println!("added robot {} ({})", user.name, grants_text(&user.grants)),
            }
        }
        UserCommand::Ls { format } => {
            let users: Vec<UserView> = client.get_json("/api/v1/users").await?;
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&users).expect("users serialize")
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = users
                .iter()
                .map(|u| {
                    vec![
                        u.name.clone(),
                        format!("{:?}", u.kind).to_lowercase(),
                        u.role.map_or("-".into(), |r| r.to_string()),
                        grants_text(&u.grants),
                        time(Some(u.created_at)),
                    ]
                })
                .collect();
            super::print_table(&["NAME", "KIND", "ROLE", "GRANTS", "CREATED"], &rows);
        }
        UserCommand::Rm { name } => {
            client
                .send(
                    Method::DELETE,
                    &format!("/api/v1/users/{}", percent_encode(&name)),
                    None,
                )
                .await?;
            println!("removed {name}");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let current = if matches!(client.endpoint(), Endpoint::Http { .. }) {
                let me: WhoAmI = client.get_json("/api/v1/auth/whoami").await?;
                if me.name == name {
                    eprint!("Current password: ");
                    Some(read_password(password_stdin, false)?)
                } else {
                    None
                }
            } else {
                None
            };
            let password = read_password(password_stdin, true)?;
            let body = serde_json::json!({ "password": password, "current_password": current });
            client
                .send(
                    Method::PUT,
                    &format!("/api/v1/users/{}/password", percent_encode(&name)),
                    Some(&body),
                )
                .await?;
            println!("password of {name} changed; its sessions were ended");
        }
        UserCommand::Grant { name, grants } => {
            let grants = grants
                .iter()
                .map(|g| parse_grant(g))
                .collect::<Result<Vec<_>, _>>()?;
            let body = serde_json::json!({ "grants": grants });
            let user: UserView = client
                .send_json(
                    Method::PUT,
                    &format!("/api/v1/users/{}/grants", percent_encode(&name)),
                    &body,
                )
                .await?;
            println!("{}: {}", user.name, grants_text(&user.grants));
        }
    }
    Ok(())
}

pub(super) async fn token(client: ApiClient, command: TokenCommand) -> Result<(), ClientError> {
    match command {
        TokenCommand::Create {
            name,
            role,
            expires,
            user,
        } => {
            let body = serde_json::json!({ "name": name, "role": role, "expires_in": expires, "user": user });
            let created: CreatedToken = client
                .send_json(Method::POST, "/api/v1/tokens", &body)
                .await?;
            eprintln!(
                "token {} for {} ({}, expires {}); it is shown only now:",
                created.info.id,
                created.info.user,
                created.info.role,
                time(created.info.expires_at)
            );
            println!("{}", created.token);
        }
        TokenCommand::Ls { all, format } => {
            let tokens: Vec<ApiToken> = client
                .get_json(if all {
                    "/api/v1/tokens?all=true"
                } else {
                    "/api/v1/tokens"
                })
                .await?;
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&tokens).expect("tokens serialize")
                );
                return Ok(());
            }
            let now = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    let status = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t.expires_at.is_some_and(|e| e <= now) {
                        "expired"
                    } else {
                        "active"
                    };
                    vec![
                        t.id.to_string(),
                        t.name.clone(),
                        t.user.clone(),
                        t.role.to_string(),
                        format!("{}…", t.prefix),
                        time(t.expires_at),
                        time(t.last_used_at),
                        status.to_owned(),
                    ]
                })
                .collect();
            super::print_table(
                &[
                    "ID",
                    "NAME",
                    "USER",
                    "ROLE",
                    "TOKEN",
                    "EXPIRES",
                    "LAST USED",
                    "STATUS",
                ],
                &rows,
            );
        }
        TokenCommand::Revoke { id } => {
            client
                .send(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
                .await?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

/// Tokens from `wharf login`, per daemon host, in `$XDG_CONFIG_HOME/wharf/credentials.json`
/// (default `~/.config/wharf/`), mode 0600.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CredentialStore {
    pub hosts: BTreeMap<String, StoredLogin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredLogin {
    pub username: String,
    pub token: String,
    pub token_id: i64,
}

impl CredentialStore {
    pub fn path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("wharf/credentials.json"))
    }

    pub fn load() -> CredentialStore {
        Self::path()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self) -> Result<PathBuf, ClientError> {
        let fail = |reason: String| ClientError::Input { reason };
        let path =
            Self::path().ok_or_else(|| fail("neither XDG_CONFIG_HOME nor HOME is set".into()))?;
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail(format!("cannot write {}: {e}", tmp.display())))?;
        file.write_all(&serde_json::to_vec_pretty(self).expect("credentials serialize"))
            .and_then(|()| file.sync_all())
            .map_err(|e| fail(format!("cannot write {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }
}

pub(super) async fn login(
    endpoint: Endpoint,
    username: Option<String>,
    password_stdin: bool,
) -> Result<(), ClientError> {
    if matches!(endpoint, Endpoint::Unix(_)) {
        return Err(ClientError::Input {
            reason: "the local socket needs no login; give the daemon's http:// address".into(),
        });
    }
    let username = read_username(username, password_stdin)?;
    let password = read_password(password_stdin, false)?;
    let client_host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown host".into());
    let body = serde_json::json!({
        "username": username,
        "password": password,
        "name": format!("wharf login from {client_host}"),
        "expires_in": "90d",
    });
    let anonymous = ApiClient::new(endpoint.clone(), None);
    let created: CreatedToken = anonymous
        .send_json(Method::POST, "/api/v1/auth/token", &body)
        .await?;
    let mut store = CredentialStore::load();
    store.hosts.insert(
        endpoint.to_string(),
        StoredLogin {
            username: username.clone(),
            token: created.token,
            token_id: created.info.id,
        },
    );
    let path = store.save()?;
    println!(
        "logged in to {endpoint} as {username} ({}); token stored in {}",
        created.info.role,
        path.display()
    );
    Ok(())
}

/// The user name from `--username`, else asked on a terminal.
fn read_username(username: Option<String>, password_stdin: bool) -> Result<String, ClientError> {
    Ok(match username {
        Some(u) => u,
        None if std::io::stdin().is_terminal() && !password_stdin => {
            eprint!("Username: ");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| ClientError::Input {
                    reason: format!("cannot read the user name: {e}"),
                })?;
            line.trim().to_owned()
        }
        None => {
            return Err(ClientError::Input {
                reason: "give the user name with --username".into(),
            });
        }
    })
}

/// `host[:port]` as one URL path segment.
fn host_segment(host: &str) -> String {
    host.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `wharf login REGISTRY`: the daemon keeps the login and pulls from that registry with it.
pub(super) async fn registry_login(
    client: ApiClient,
    registry: String,
    username: Option<String>,
    password_stdin: bool,
) -> Result<(), ClientError> {
    let username = read_username(username, password_stdin)?;
    let password = read_password(password_stdin, false)?;
    #[derive(Deserialize)]
    struct Summary {
        host: String,
        username: String,
    }
    let stored: Summary = client
        .send_json(
            Method::PUT,
            &format!("/api/v1/registries/logins/{}", host_segment(&registry)),
            &serde_json::json!({ "username": username, "password": password }),
        )
        .await?;
    println!(
        "login for registry {} as {} stored by the daemon; pulls from it use it",
        stored.host, stored.username
    );
    Ok(())
}

/// `wharf logout REGISTRY`: the daemon forgets that registry's login.
pub(super) async fn registry_logout(
    client: ApiClient,
    registry: String,
) -> Result<(), ClientError> {
    client
        .send(
            Method::DELETE,
            &format!("/api/v1/registries/logins/{}", host_segment(&registry)),
            None,
        )
        .await?;
    println!("the daemon forgot its login for registry {registry}");
    Ok(())
}

pub(super) async fn logout(endpoint: Endpoint) -> Result<(), ClientError> {
    let mut store = CredentialStore::load();
    let Some(stored) = store.hosts.remove(&endpoint.to_string()) else {
        return Err(ClientError::Input {
            reason: format!("not logged in to {endpoint}"),
        });
    };
    let client = ApiClient::new(endpoint.clone(), Some(stored.token.clone()));
    let revoked = client
        .send(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", stored.token_id),
            None,
        )
        .await;
    store.save()?;
    match revoked {
        Ok(()) => println!("logged out of {endpoint}; the token was revoked"),
        Err(e) => {
            eprintln!("logged out of {endpoint} locally; the daemon did not revoke the token: {e}")
        }
    }
    Ok(())
}
