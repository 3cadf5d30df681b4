//! Wharf: a web-managed container host appliance in one binary.
//!
//! The library holds every face of the `wharf` executable so that the integration tests in `tests/`
//! can start the real daemon in-process; `main.rs` only parses the command line and dispatches.
//! The module map and the direction of dependencies are described in README.md ("Architecture").

pub mod api;
pub mod auth;
pub mod builder;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod engine;
pub mod host;
pub mod images;
pub mod network;
pub mod registry;
pub mod runtime;
pub mod startup;
pub mod tls;
pub mod web;

/// The wharf version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version of the JSON API served under `/api/v1`.
pub const API_VERSION: &str = "v1";
