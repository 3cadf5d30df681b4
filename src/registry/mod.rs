//! The built-in registry: the OCI distribution API under `/v2/`, served on its own listener.
//!
//! Owns the upload sessions under `<data-root>/uploads` ([`uploads`]) and the registry's bearer
//! tokens ([`token`]). Blobs live in the one content store of `images::store`, and the rows that
//! say which repository holds which manifest and blob are `db::registry`'s; a pushed image
//! manifest also becomes a local image. Rights come from `auth::policy` like everywhere else.
//!
//! - [`routes`]: the HTTP handlers, grouped per resource (base, blobs, uploads, manifests, tags,
//!   catalog, referrers, token), and authentication (Basic, Bearer, anonymous pull).
//! - [`manifest`]: parsing and checking a pushed manifest.
//! - [`gc`]: online garbage collection of the content store.
//! - [`errors`]: the spec's error codes and body. [`names`]: its name and tag grammar.

pub mod errors;
pub mod gc;
pub mod manifest;
pub mod names;
pub mod routes;
pub mod token;
pub mod uploads;

use std::sync::Arc;

use crate::startup::AppState;

/// What the registry's handlers share.
#[derive(Clone)]
pub struct RegistryState {
    pub app: AppState,
    pub uploads: Arc<uploads::Uploads>,
    pub tokens: Arc<token::TokenSigner>,
    /// Whether the registry listener speaks TLS (for the token realm's scheme).
    pub tls: bool,
}

impl RegistryState {
    pub fn new(app: AppState, tls: bool) -> RegistryState {
        let uploads = uploads::Uploads::new(app.config.layout().uploads());
        RegistryState {
            app,
            uploads: Arc::new(uploads),
            tokens: Arc::new(token::TokenSigner::new()),
            tls,
        }
    }
}
