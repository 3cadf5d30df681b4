//! Who is calling, and what they may do: one permission model for the dashboard, the JSON API
//! and the registry.
//!
//! Owns password hashing ([`password`]), random secrets and their digests ([`secret`]), the one
//! authorization function ([`policy::authorize`]), login throttling ([`throttle`]), sign-in,
//! sessions, API tokens and the first-run setup token ([`service`]), and the axum extractors that
//! turn a request into a [`policy::Principal`] ([`extract`]). It stores nothing itself: rows live in
//! `db`, which it calls.

pub mod extract;
pub mod password;
pub mod policy;
pub mod secret;
pub mod service;
pub mod throttle;

pub use extract::{Caller, ClientSource, Peer};
pub use policy::{Action, Principal, Target, Via, authorize};
pub use service::{AuthError, Authenticator};
