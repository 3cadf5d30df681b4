//! Random secrets (session ids, CSRF tokens, API tokens, setup tokens) and their digests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `bytes` random bytes from the kernel, base64url without padding.
pub fn random_string(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the kernel's random source is available");
    URL_SAFE_NO_PAD.encode(&buf)
}

/// A new API token: `wharf_` and 32 random bytes.
pub fn new_api_token() -> String {
    format!("{API_TOKEN_PREFIX}{}", random_string(32))
}

/// Every API token starts with this, so secret scanners and users recognise one.
pub const API_TOKEN_PREFIX: &str = "wharf_";

/// How many characters of a token are kept for display.
pub const DISPLAY_PREFIX_LEN: usize = 12;

/// SHA-256 of `secret`, lower-case hex: what is stored instead of the secret.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_digested() {
        let a = new_api_token();
        let b = new_api_token();
        assert_ne!(a, b);
        assert!(a.starts_with("wharf_") && a.len() == 6 + 43, "{a}");
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a, &b));
        assert!(!same_secret("short", "longer"));
    }
}
