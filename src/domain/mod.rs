//! Validated values that cross module boundaries: once parsed, inner code never re-checks them.
//!
//! Owns the grammar of names (users, robots, repository patterns) and the closed sets (roles).
//! Pure code: no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a user may do across the appliance. Robots have no role, only repository grants.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read only: lists, inspect, pull.
    Viewer,
    /// Operate containers (start, stop, restart, logs, exec) and pull and push images.
    Operator,
    /// Everything, including users, tokens, the audit log and settings.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            _ => Err(InvalidValue::new(
                "role",
                s,
                "expected admin, operator or viewer",
            )),
        }
    }
}

/// The name of a user or robot: 1–64 characters of `a-z 0-9 . _ -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    pub fn parse(s: &str) -> Result<UserName, InvalidValue> {
        let ok_start = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok_chars = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if s.is_empty() || s.len() > 64 || !ok_start || !ok_chars {
            return Err(InvalidValue::new(
                "user name",
                s,
                "use 1 to 64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
            ));
        }
        Ok(UserName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A repository name or glob that a grant applies to.
///
/// Grammar: path components of `a-z 0-9 . _ -` separated by `/`, where a component may also be
/// `*` (any one component) or `**` (any number of components, at least one). Examples: `team/app`,
/// `team/*`, `team/**`, `**`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RepoPattern(String);

impl RepoPattern {
    pub fn parse(s: &str) -> Result<RepoPattern, InvalidValue> {
        let bad = |reason: &str| InvalidValue::new("repository pattern", s, reason);
        if s.is_empty() || s.len() > 255 {
            return Err(bad("must be 1 to 255 characters"));
        }
        for component in s.split('/') {
            let wildcard = component == "*" || component == "**";
            let plain = !component.is_empty()
                && component.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                });
            if !wildcard && !plain {
                return Err(bad(
                    "each /-separated part must be a lower-case name (a-z, 0-9, '.', '_', '-'), '*' or '**'",
                ));
            }
        }
        Ok(RepoPattern(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `repository` (a full name such as `team/app`) matches this pattern.
    pub fn matches(&self, repository: &str) -> bool {
        let pattern: Vec<&str> = self.0.split('/').collect();
        let name: Vec<&str> = repository.split('/').collect();
        glob_components(&pattern, &name)
    }
}

fn glob_components(pattern: &[&str], name: &[&str]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(&"**"), Some(_)) => {
            // `**` takes one component, then either stops or takes more.
            glob_components(&pattern[1..], &name[1..]) || glob_components(pattern, &name[1..])
        }
        (Some(&p), Some(&n)) => (p == "*" || p == n) && glob_components(&pattern[1..], &name[1..]),
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A content digest: `sha256:<64 hex>` or `sha512:<128 hex>`, lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Digest(String);

/// The hash algorithms a [`Digest`] may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha256,
    Sha512,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, InvalidValue> {
        let bad = |reason: &str| InvalidValue::new("digest", s, reason);
        let (algorithm, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected ALGORITHM:HEX, e.g. sha256:…"))?;
        let want = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(bad("the algorithm must be sha256 or sha512")),
        };
        if hex.len() != want
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad(&format!(
                "expected {want} lower-case hex digits after {algorithm}:"
            )));
        }
        Ok(Digest(s.to_owned()))
    }

    pub fn algorithm(&self) -> DigestAlgorithm {
        if self.0.starts_with("sha512:") {
            DigestAlgorithm::Sha512
        } else {
            DigestAlgorithm::Sha256
        }
    }

    pub fn algorithm_name(&self) -> &str {
        self.0.split(':').next().unwrap_or("sha256")
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

/// A local image reference: `name[:tag]` or `name@digest`, where the name is path components of
/// `a-z 0-9 . _ -` (the first may be a registry host with a port). The tag defaults to `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, InvalidValue> {
        let bad = |reason: &str| InvalidValue::new("image reference", s, reason);
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(Digest::parse(digest).map_err(|e| bad(&e.reason))?),
            ),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag (one before it is a registry port).
        let (repository, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_owned())),
            _ => (rest, None),
        };
        if let Some(tag) = &tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(bad(
                    "a tag is 1 to 128 of A-Z a-z 0-9 _ . - (not starting with . or -)",
                ));
            }
        }
        if repository.is_empty() || repository.len() > 255 {
            return Err(bad("the name must be 1 to 255 characters"));
        }
        for (i, part) in repository.split('/').enumerate() {
            let host = i == 0
                && repository.contains('/')
                && (part.contains('.') || part.contains(':') || part == "localhost");
            let ok = if host {
                part.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
            } else {
                !part.is_empty()
                    && part.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                    })
                    && part
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphanumeric())
            };
            if !ok {
                return Err(bad(
                    "name parts are lower-case letters, digits, '.', '_' and '-'",
                ));
            }
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        Ok(ImageRef {
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Percent-encodes a URL path segment or query value (RFC 3986 unreserved characters stay).
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A value that failed validation: what it was meant to be, the value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

impl InvalidValue {
    pub fn new(what: &'static str, value: &str, reason: &str) -> InvalidValue {
        let mut value = value.to_owned();
        value.truncate(100);
        InvalidValue {
            what,
            value,
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_from_viewer_to_admin() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        let err = "root".parse::<Role>().unwrap_err().to_string();
        assert!(
            err.contains("\"root\"") && err.contains("admin, operator or viewer"),
            "{err}"
        );
    }

    #[test]
    fn user_names_follow_the_grammar() {
        for ok in ["alice", "ci-bot", "a.b_c", "0day"] {
            assert!(UserName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Alice", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(UserName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs_match_as_documented() {
        let m = |p: &str, n: &str| RepoPattern::parse(p).unwrap().matches(n);
        assert!(m("team/app", "team/app"));
        assert!(!m("team/app", "team/app2"));
        assert!(!m("team/app", "team"));
        assert!(m("team/*", "team/app"));
        assert!(!m("team/*", "team/app/sub"), "* is one component");
        assert!(!m("team/*", "team"));
        assert!(m("team/**", "team/app"));
        assert!(m("team/**", "team/app/sub/deeper"));
        assert!(!m("team/**", "team"), "** needs at least one component");
        assert!(!m("team/**", "other/app"));
        assert!(m("**", "anything/at/all"));
        assert!(m("*/app", "team/app"));
        assert!(!m("*/app", "team/x/app"));
        assert!(m("a/**/z", "a/b/c/z"));
        assert!(!m("a/**/z", "a/z"));
    }

    #[test]
    fn image_references_parse_like_docker_names() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.tag.as_deref()),
            ("busybox", Some("latest"))
        );
        let r = ImageRef::parse("localhost:5000/team/app:v1.2").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000/team/app", Some("v1.2"))
        );
        let d = format!("sha256:{}", "b".repeat(64));
        let r = ImageRef::parse(&format!("app@{d}")).unwrap();
        assert_eq!((r.tag, r.digest.map(|x| x.to_string())), (None, Some(d)));
        assert_eq!(
            ImageRef::parse("team/app:v1").unwrap().to_string(),
            "team/app:v1"
        );
        for bad in [
            "",
            "UPPER",
            "a:",
            "a:-x",
            "a//b",
            "a@sha256:short",
            "x/../y",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_are_checked() {
        let hex = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(
            (d.algorithm(), d.hex()),
            (DigestAlgorithm::Sha256, hex.as_str())
        );
        assert!(Digest::parse(&format!("sha512:{}", "0".repeat(128))).is_ok());
        for bad in [
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            "md5:abc".into(),
            "nocolon".into(),
            format!("sha256:{}/..", "a".repeat(61)),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percent_encoding_keeps_unreserved_characters() {
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(percent_encode("user. x/y&z"), "user.%20x%2Fy%26z");
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "Team/app", "team//app", "team/a*", "/team", "team/"] {
            assert!(RepoPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
