//! Credentials for remote registries, given with `wharf login REGISTRY` and used by pull.
//!
//! Owns `<data-root>/registry-credentials.json`: one user name and password per registry host,
//! mode 0600 (root only, like the rest of the data root). Passwords must be sent to the registry,
//! so they are stored as given, never returned by the API. Writes go to a temp file that is
//! fsynced and renamed into place, so a daemon killed mid-write leaves the old file whole.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("registry host {host:?} is not valid: {reason}")]
    Host { host: String, reason: &'static str },
    #[error("registry credentials file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// One registry's login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    registries: BTreeMap<String, RegistryLogin>,
}

/// The credentials file. Callers serialize writers (the API holds one lock).
#[derive(Debug, Clone)]
pub struct CredentialStore {
    path: PathBuf,
}

/// The key a registry's credentials are stored under: the lower-case `host[:port]`, without a
/// scheme or path; Docker Hub's several names are one.
pub fn normalize_host(host: &str) -> Result<String, CredentialError> {
    let bad = |reason| CredentialError::Host {
        host: host.to_owned(),
        reason,
    };
    let lower = host.trim().to_ascii_lowercase();
    let trimmed = lower
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    if !trimmed
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    {
        return Err(bad(
            "a host may hold only letters, digits, '.', '-', ':' and brackets",
        ));
    }
    Ok(match trimmed.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => trimmed,
    })
}

impl CredentialStore {
    pub fn new(path: impl Into<PathBuf>) -> CredentialStore {
        CredentialStore { path: path.into() }
    }

    fn fail(&self, reason: impl ToString) -> CredentialError {
        CredentialError::File {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn read(&self) -> Result<Stored, CredentialError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.fail(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn write(&self, stored: &Stored) -> Result<(), CredentialError> {
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.fail(format!("cannot create {}: {e}", tmp.display())))?;
        let bytes = serde_json::to_vec_pretty(stored).expect("credentials serialize");
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| self.fail(format!("cannot write {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.fail(e))?;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")));
        Ok(())
    }

    /// The login stored for `host`, if any.
    pub fn get(&self, host: &str) -> Result<Option<RegistryLogin>, CredentialError> {
        let host = normalize_host(host)?;
        Ok(self.read()?.registries.remove(&host))
    }

    /// Stores (or replaces) `host`'s login; returns the normalized host.
    pub fn set(&self, host: &str, login: RegistryLogin) -> Result<String, CredentialError> {
        let host = normalize_host(host)?;
        let mut stored = self.read()?;
        stored.registries.insert(host.clone(), login);
        self.write(&stored)?;
        Ok(host)
    }

    /// Forgets `host`'s login; false when there was none.
    pub fn remove(&self, host: &str) -> Result<bool, CredentialError> {
        let host = normalize_host(host)?;
        let mut stored = self.read()?;
        if stored.registries.remove(&host).is_none() {
            return Ok(false);
        }
        self.write(&stored)?;
        Ok(true)
    }

    /// Every host with a login, and its user name.
    pub fn list(&self) -> Result<Vec<(String, String)>, CredentialError> {
        Ok(self
            .read()?
            .registries
            .into_iter()
            .map(|(host, login)| (host, login.username))
            .collect())
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn hosts_are_normalized_and_hostile_ones_refused() {
        assert_eq!(
            normalize_host("HTTPS://Registry.Example:5000/").unwrap(),
            "registry.example:5000"
        );
        assert_eq!(normalize_host("index.docker.io").unwrap(), "docker.io");
        for bad in ["", "   ", "a b", "host/path", "x\ny", "user@host"] {
            let err = normalize_host(bad).unwrap_err().to_string();
            assert!(err.contains("is not valid"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn logins_are_stored_root_only_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::new(dir.path().join("creds.json"));
        assert!(store.get("r.example").unwrap().is_none());
        let login = |u: &str, p: &str| RegistryLogin {
            username: u.into(),
            password: p.into(),
        };
        store.set("R.example", login("ann", "one")).unwrap();
        store.set("other:5000", login("bob", "two")).unwrap();
        store.set("r.example", login("ann", "three")).unwrap();
        let mode = std::fs::metadata(dir.path().join("creds.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(store.get("r.example").unwrap().unwrap().password, "three");
        assert_eq!(
            store.list().unwrap(),
            vec![
                ("other:5000".to_owned(), "bob".to_owned()),
                ("r.example".to_owned(), "ann".to_owned())
            ]
        );
        assert!(store.remove("r.example").unwrap());
        assert!(!store.remove("r.example").unwrap());
        assert!(store.get("r.example").unwrap().is_none());
        assert!(store.get("other:5000").unwrap().is_some());
    }

    #[test]
    fn a_damaged_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = CredentialStore::new(&path)
            .get("r.example")
            .unwrap_err()
            .to_string();
        assert!(err.contains("creds.json"), "{err}");
    }
}
