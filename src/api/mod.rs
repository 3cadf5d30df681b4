//! The JSON API under `/api/v1`, for the CLI and for automation.
//!
//! Owns the handlers, their request and response types, and the OpenAPI document generated from
//! them (`GET /api/v1/openapi.json`). Handlers call the service layer (`db`, and later `engine`,
//! `images`, `auth`); they never touch the runtime or the blob files directly.

mod attach;
mod audit;
pub mod auth;
mod build;
mod containers;
mod error;
mod events;
mod files;
pub(crate) mod images;
mod networks;
mod registries;
mod registry;
mod stream;
mod system;
mod tokens;
pub(crate) mod users;
mod volumes;

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::startup::AppState;

pub use auth::{LoginResponse, WhoAmI};
pub use error::ApiError;
pub use system::{SystemInfo, VersionInfo};
pub use tokens::{CreatedToken, parse_expiry};
pub use users::{GrantView, UserView};

/// Path prefix of every JSON API route.
pub const PREFIX: &str = "/api/v1";

#[derive(OpenApi)]
#[openapi(info(
    title = "Wharf API",
    description = "JSON API of the Wharf container host appliance."
))]
struct ApiDoc;

/// The API routes, with `/api/v1/openapi.json` describing them.
pub fn router() -> Router<AppState> {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(
            PREFIX,
            system::routes()
                .merge(auth::routes())
                .merge(users::routes())
                .merge(tokens::routes())
                .merge(audit::routes())
                .merge(containers::routes())
                .merge(build::routes())
                .merge(files::routes())
                .merge(attach::routes())
                .merge(events::routes())
                .merge(volumes::routes())
                .merge(networks::routes())
                .merge(images::routes())
                .merge(registries::routes())
                .merge(registry::routes()),
        )
        .split_for_parts();
    doc.info.version = crate::VERSION.to_owned();
    let doc = Arc::new(doc);
    router.route(
        "/api/v1/openapi.json",
        get(move || {
            let doc = Arc::clone(&doc);
            async move { Json(doc) }
        }),
    )
}
