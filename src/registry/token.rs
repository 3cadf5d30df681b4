//! Bearer tokens of the registry's token endpoint: short-lived, signed with HMAC-SHA256 by a
//! key made at daemon start and kept only in memory (a restart makes clients log in again,
//! which docker and skopeo do on their own), naming the account and the granted access.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// How long a token is good for.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);

/// One granted scope: `repository:NAME:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account's name.
    pub sub: String,
    pub access: Vec<Access>,
    /// Unix seconds.
    pub exp: u64,
    pub iat: u64,
}

impl Claims {
    /// Whether the token grants `action` on repository `name`.
    pub fn allows(&self, name: &str, action: &str) -> bool {
        self.access.iter().any(|a| {
            a.kind == "repository" && a.name == name && a.actions.iter().any(|x| x == action)
        })
    }
}

pub struct TokenSigner {
    key: ring::hmac::Key,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenSigner {
    /// A signer with a fresh random key.
    pub fn new() -> TokenSigner {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the kernel gives random bytes");
        TokenSigner {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        }
    }

    /// A token for `sub` with `access`, and its lifetime in seconds.
    pub fn issue(&self, sub: &str, access: Vec<Access>) -> (String, u64) {
        let iat = now();
        let claims = Claims {
            sub: sub.to_owned(),
            access,
            exp: iat + TOKEN_TTL.as_secs(),
            iat,
        };
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let tag = ring::hmac::sign(&self.key, payload.as_bytes());
        (
            format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())),
            TOKEN_TTL.as_secs(),
        )
    }

    /// The claims of a token this signer issued and that has not expired.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let (payload, tag) = token.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        ring::hmac::verify(&self.key, payload.as_bytes(), &tag).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims.exp > now()).then_some(claims)
    }
}

impl Default for TokenSigner {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses a scope (`repository:team/app:pull,push`); other resource types give `None`.
pub fn parse_scope(scope: &str) -> Option<Access> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some(Access {
        kind: kind.to_owned(),
        name: name.to_owned(),
        actions: actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_unaltered_and_unexpired() {
        let signer = TokenSigner::new();
        let access = vec![parse_scope("repository:team/app:pull,push").unwrap()];
        let (token, ttl) = signer.issue("alice", access);
        assert_eq!(ttl, 300);
        let claims = signer.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert!(claims.allows("team/app", "push"));
        assert!(!claims.allows("team/app", "delete"));
        assert!(!claims.allows("team/other", "pull"));
        assert!(TokenSigner::new().verify(&token).is_none(), "another key");
        let (payload, tag) = token.split_once('.').unwrap();
        let mut forged: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        forged.access[0].actions.push("delete".into());
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap())
        );
        assert!(signer.verify(&forged).is_none(), "altered claims");
        assert!(signer.verify("garbage").is_none());
    }

    #[test]
    fn scopes_parse_with_ports_and_slashes_in_names() {
        let a = parse_scope("repository:team/sub/app:pull").unwrap();
        assert_eq!(
            (a.kind.as_str(), a.name.as_str()),
            ("repository", "team/sub/app")
        );
        assert_eq!(a.actions, vec!["pull"]);
        let all = parse_scope("repository:a:*").unwrap();
        assert_eq!(all.actions, vec!["*"]);
        assert!(parse_scope("nonsense").is_none());
    }
}
