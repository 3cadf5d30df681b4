//! Password hashing with Argon2id at the argon2 crate's defaults (m=19456 KiB, t=2, p=1), stored
//! as PHC strings. Hashing is CPU-heavy, so it runs on tokio's blocking pool.

use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::domain::InvalidValue;

/// Shortest password accepted.
pub const MIN_LENGTH: usize = 8;
/// Longest password accepted (hashing cost grows with length only slightly, but bound it).
pub const MAX_LENGTH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Refuses passwords that are too short or too long.
pub fn check_acceptable(password: &str) -> Result<(), InvalidValue> {
    let len = password.chars().count();
    if len < MIN_LENGTH {
        return Err(InvalidValue::new(
            "password",
            "(hidden)",
            &format!("must be at least {MIN_LENGTH} characters"),
        ));
    }
    if password.len() > MAX_LENGTH {
        return Err(InvalidValue::new(
            "password",
            "(hidden)",
            &format!("must be at most {MAX_LENGTH} bytes"),
        ));
    }
    Ok(())
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

fn hash_now(password: &str) -> Result<String, PasswordError> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Hashes a password to a PHC string.
pub async fn hash(password: String) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || hash_now(&password)).await?
}

/// The result of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The hash was made with other parameters than today's: store a new one.
    pub needs_rehash: bool,
}

/// Checks `password` against the PHC string `stored`.
pub async fn verify(password: String, stored: String) -> Result<Verification, PasswordError> {
    tokio::task::spawn_blocking(move || verify_now(&password, &stored))
        .await
        .map_err(PasswordError::from)
}

fn verify_now(password: &str, stored: &str) -> Verification {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verification {
            matches: false,
            needs_rehash: true,
        };
    };
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    let current = Params::default();
    let needs_rehash = parsed.algorithm.as_str() != "argon2id"
        || parsed.version != Some(Version::V0x13.into())
        || Params::try_from(&parsed).map_or(true, |p| {
            p.m_cost() != current.m_cost()
                || p.t_cost() != current.t_cost()
                || p.p_cost() != current.p_cost()
        });
    Verification {
        matches,
        needs_rehash,
    }
}

/// Spends the same effort as a real check, for sign-ins naming an unknown user, so that timing
/// does not tell which user names exist.
pub async fn verify_unknown_user(password: String) -> Result<(), PasswordError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    tokio::task::spawn_blocking(move || {
        let stored = match DUMMY.get() {
            Some(h) => h.clone(),
            None => {
                let h = hash_now(&crate::auth::secret::random_string(16))?;
                DUMMY.get_or_init(|| h).clone()
            }
        };
        let _ = verify_now(&password, &stored);
        Ok(())
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_phc_strings_with_the_default_parameters() {
        let phc = hash("correct horse battery".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let ok = verify("correct horse battery".into(), phc.clone())
            .await
            .unwrap();
        assert_eq!(
            ok,
            Verification {
                matches: true,
                needs_rehash: false
            }
        );
        let bad = verify("wrong horse".into(), phc.clone()).await.unwrap();
        assert!(!bad.matches);
        assert_ne!(
            phc,
            hash("correct horse battery".into()).await.unwrap(),
            "salted"
        );
    }

    #[tokio::test]
    async fn weaker_parameters_ask_for_a_rehash() {
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        )
        .hash_password(b"old password")
        .unwrap()
        .to_string();
        let v = verify("old password".into(), weak).await.unwrap();
        assert_eq!(
            v,
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
        let v = verify("x".into(), "not a phc string".into()).await.unwrap();
        assert!(!v.matches && v.needs_rehash);
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert!(check_acceptable("1234567").is_err());
        assert!(check_acceptable("12345678").is_ok());
        assert!(check_acceptable(&"x".repeat(MAX_LENGTH + 1)).is_err());
        let err = check_acceptable("short").unwrap_err().to_string();
        assert!(
            !err.contains("short"),
            "the password itself is never echoed: {err}"
        );
    }
}
