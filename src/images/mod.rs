//! Images: the content store shared with the registry, layer unpacking into overlayfs layer
//! directories, and (with the images issue) manifests, configs, pull, load and save.
//!
//! Owns `<data-root>/blobs` ([`store`]), `<data-root>/layers` ([`unpack`]) and the remote
//! registry credentials ([`credentials`], checked by [`login`]). It must not run
//! containers (that is `runtime` via `engine`) nor serve HTTP.

pub mod compose;
pub mod credentials;
pub mod load;
pub mod login;
pub mod pull;
pub mod push;
pub mod save;
pub mod snapshot;
pub mod store;
pub mod unpack;
