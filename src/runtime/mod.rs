//! The container runtime: synchronous code that turns an OCI bundle into an isolated process.
//!
//! Owns namespaces, mounts, cgroups, process setup and container state on disk. It must stay a
//! leaf: no tokio, no sqlx, no axum, nothing from the daemon's modules — it could become a crate
//! of its own, and it runs inside short-lived single-threaded processes (the shim, `wharf runtime`).

pub mod cgroups;
pub mod channel;
pub mod spec;
pub mod state;
