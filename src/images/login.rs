//! Checking a registry login before it is stored, as `docker login` does.
//!
//! `GET /v2/` tells what the registry wants: nothing (200), Basic (401 with a `Basic`
//! challenge: the same request again with the login) or a token (401 with a `Bearer` challenge:
//! the login is sent to the token realm, without a scope). Only a registry that accepts the
//! login makes it stored, so a typo is caught at `wharf login`, not at the next pull.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;

use super::credentials::RegistryLogin;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("registry {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("registry {registry} refused the login for {username:?}: wrong user name or password")]
    Refused { registry: String, username: String },
    #[error("registry {registry}: {reason}")]
    Protocol { registry: String, reason: String },
}

/// A parsed `WWW-Authenticate` challenge: its scheme and parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one challenge (`Bearer realm="https://a/token",service="reg"`): a scheme, then
/// comma-separated `key=value` pairs, values quoted (with `\` escapes) or bare.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, mut rest) = match header.split_once(char::is_whitespace) {
        Some((s, r)) => (s, r.trim_start()),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_owned();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((key, value));
        rest = remaining.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_owned(),
        params,
    })
}

/// Checks `login` against `registry` (`host[:port]`); `plain_http` for a loopback or insecure
/// registry.
pub async fn verify(
    registry: &str,
    login: &RegistryLogin,
    plain_http: bool,
) -> Result<(), LoginError> {
    let unreachable = |e: reqwest::Error| LoginError::Unreachable {
        registry: registry.to_owned(),
        reason: format!("cannot be reached: {e}"),
    };
    let protocol = |reason: String| LoginError::Protocol {
        registry: registry.to_owned(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(unreachable)?;
    let scheme = if plain_http { "http" } else { "https" };
    let base = format!("{scheme}://{registry}/v2/");
    let first = client.get(&base).send().await.map_err(unreachable)?;
    if first.status().is_success() {
        return Ok(());
    }
    if first.status() != StatusCode::UNAUTHORIZED {
        return Err(protocol(format!(
            "GET /v2/ answered {} (expected 200 or 401)",
            first.status()
        )));
    }
    let challenge = first
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_challenge)
        .ok_or_else(|| protocol("answered 401 without a WWW-Authenticate challenge".into()))?;
    let answer = if challenge.scheme.eq_ignore_ascii_case("basic") {
        client
            .get(&base)
            .basic_auth(&login.username, Some(&login.password))
            .send()
            .await
            .map_err(unreachable)?
    } else if challenge.scheme.eq_ignore_ascii_case("bearer") {
        let realm = challenge
            .param("realm")
            .ok_or_else(|| protocol("its Bearer challenge has no realm".into()))?;
        // The password goes to the realm: never in the clear unless the registry itself is
        // one that may be reached over plain HTTP.
        if !plain_http && !realm.starts_with("https://") {
            return Err(protocol(format!(
                "its token realm {realm} is not HTTPS; the password is not sent there"
            )));
        }
        let mut query = vec![("account", login.username.as_str())];
        if let Some(service) = challenge.param("service") {
            query.push(("service", service));
        }
        let answer = client
            .get(realm)
            .query(&query)
            .basic_auth(&login.username, Some(&login.password))
            .send()
            .await
            .map_err(unreachable)?;
        if answer.status().is_success() {
            let body: serde_json::Value = answer
                .json()
                .await
                .map_err(|e| protocol(format!("its token realm {realm} sent no JSON: {e}")))?;
            if body["token"].is_string() || body["access_token"].is_string() {
                return Ok(());
            }
            return Err(protocol(format!(
                "its token realm {realm} answered without a token"
            )));
        }
        answer
    } else {
        return Err(protocol(format!(
            "asks for an unknown authentication scheme {:?}",
            challenge.scheme
        )));
    };
    match answer.status() {
        s if s.is_success() => Ok(()),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(LoginError::Refused {
            registry: registry.to_owned(),
            username: login.username.clone(),
        }),
        s => Err(protocol(format!("answered {s} to the login"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_quotes_escapes_and_bare_values() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg \"one\"",scope=repository:a/b:pull"#,
        )
        .unwrap();
        assert_eq!(c.scheme, "Bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("service"), Some("reg \"one\""));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull"));
        let basic = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(basic.scheme, "Basic");
        assert_eq!(basic.param("REALM"), Some("Registry Realm"));
        assert_eq!(parse_challenge("Basic").unwrap().params, vec![]);
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
        assert!(parse_challenge("").is_none());
    }
}
