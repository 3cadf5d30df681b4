//! The dashboard: server-rendered pages (askama templates from `templates/`) for people in a
//! browser, and the static assets they use.
//!
//! Owns page handlers, the browser session extractor with its synchronizer CSRF check on every
//! form, HTML error pages, and the security headers of every response. It calls `auth` and `db`
//! like the JSON API does, and never touches the runtime or the blob files.

mod containers;
mod error;
mod pages;
mod registry;
mod session;
mod users;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::startup::AppState;

pub use error::WebError;
pub use session::WebUser;

/// Our own stylesheet and scripts, and the browser libraries `src/build.rs` fetched with npm.
const CSS: &[u8] = include_bytes!("../../static/wharf.css");
const WHARF_JS: &[u8] = include_bytes!("../../static/wharf.js");
const IMAGES_JS: &[u8] = include_bytes!("../../static/images.js");
const CONTAINERS_JS: &[u8] = include_bytes!("../../static/containers.js");
const REGISTRY_JS: &[u8] = include_bytes!("../../static/registry.js");
const USERS_JS: &[u8] = include_bytes!("../../static/users.js");
const XTERM_JS: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/npm/node_modules/@xterm/xterm/lib/xterm.js"
));
const XTERM_CSS: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/npm/node_modules/@xterm/xterm/css/xterm.css"
));
const XTERM_FIT_JS: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/npm/node_modules/@xterm/addon-fit/lib/addon-fit.js"
));
const UPLOT_JS: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/npm/node_modules/uplot/dist/uPlot.iife.min.js"
));
const HTMX_JS: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/npm/node_modules/htmx.org/dist/htmx.min.js"
));
const UPLOT_CSS: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/npm/node_modules/uplot/dist/uPlot.min.css"
));

/// A short hash of an asset, for its URL (`/static/NAME-HASH.EXT`), so it can be cached for a
/// year and still change.
macro_rules! version_of {
    ($bytes:expr) => {{
        const HEX: [u8; 16] = hash_hex($bytes);
        match std::str::from_utf8(&HEX) {
            Ok(s) => s,
            Err(_) => panic!("hex digits are UTF-8"),
        }
    }};
}

pub const CSS_VERSION: &str = version_of!(CSS);
pub const WHARF_JS_VERSION: &str = version_of!(WHARF_JS);
pub const JS_VERSION: &str = version_of!(IMAGES_JS);
pub const CONTAINERS_JS_VERSION: &str = version_of!(CONTAINERS_JS);
pub const REGISTRY_JS_VERSION: &str = version_of!(REGISTRY_JS);
pub const USERS_JS_VERSION: &str = version_of!(USERS_JS);
pub const XTERM_JS_VERSION: &str = version_of!(XTERM_JS);
pub const XTERM_CSS_VERSION: &str = version_of!(XTERM_CSS);
pub const XTERM_FIT_VERSION: &str = version_of!(XTERM_FIT_JS);
pub const UPLOT_JS_VERSION: &str = version_of!(UPLOT_JS);
pub const UPLOT_CSS_VERSION: &str = version_of!(UPLOT_CSS);
pub const HTMX_VERSION: &str = version_of!(HTMX_JS);

const JS: &str = "text/javascript; charset=utf-8";
const STYLE: &str = "text/css; charset=utf-8";

/// Every asset: (name without hash, hash, extension, content type, body).
const ASSETS: [(&str, &str, &str, &str, &[u8]); 12] = [
    ("wharf", WHARF_JS_VERSION, "js", JS, WHARF_JS),
    ("htmx", HTMX_VERSION, "js", JS, HTMX_JS),
    ("users", USERS_JS_VERSION, "js", JS, USERS_JS),
    ("wharf", CSS_VERSION, "css", STYLE, CSS),
    ("images", JS_VERSION, "js", JS, IMAGES_JS),
    ("containers", CONTAINERS_JS_VERSION, "js", JS, CONTAINERS_JS),
    ("registry", REGISTRY_JS_VERSION, "js", JS, REGISTRY_JS),
    ("xterm", XTERM_JS_VERSION, "js", JS, XTERM_JS),
    ("xterm", XTERM_CSS_VERSION, "css", STYLE, XTERM_CSS),
    ("xterm-fit", XTERM_FIT_VERSION, "js", JS, XTERM_FIT_JS),
    ("uplot", UPLOT_JS_VERSION, "js", JS, UPLOT_JS),
    ("uplot", UPLOT_CSS_VERSION, "css", STYLE, UPLOT_CSS),
];

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const fn hash_hex(bytes: &[u8]) -> [u8; 16] {
    let hash = fnv1a(bytes);
    let digits = b"0123456789abcdef";
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = digits[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

/// `/static/NAME-HASH.EXT`: cached for a year, since a change changes its URL; any other name
/// is 404.
async fn asset(Path(file): Path<String>) -> Response {
    let found = ASSETS.iter().find(|(name, version, ext, _, _)| {
        file.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.strip_prefix(version))
            .and_then(|rest| rest.strip_prefix('.'))
            == Some(ext)
    });
    match found {
        Some((_, _, _, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The dashboard's routes. Pages and assets go out gzip-compressed to browsers that accept
/// it (a list of hundreds of containers shrinks about tenfold); the JSON API's streams are not
/// compressed, so logs and progress are not held back.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/setup", get(pages::setup_page).post(pages::setup))
        .route("/account", get(pages::account))
        .route("/account/tokens", post(pages::create_token))
        .route("/account/tokens/{id}/revoke", post(pages::revoke_token))
        .route("/account/password", post(pages::change_password))
        .route("/audit", get(pages::audit))
        .route("/settings", get(pages::settings))
        .route("/users", get(users::users))
        .route("/images", get(pages::images))
        .route("/images/detail", get(pages::image))
        .route("/images/build", get(pages::build_page))
        .route("/containers", get(containers::containers))
        .route("/containers/new", get(containers::new_container))
        .route("/containers/{id}", get(containers::container))
        .route("/registry", get(registry::registry))
        .route("/registry/repository", get(registry::repository))
        .route("/registry/manifest", get(registry::manifest))
        .route("/volumes", get(containers::volumes))
        .route("/networks", get(containers::networks))
        .route("/static/{file}", get(asset))
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
}

/// The headers every response carries: a strict Content-Security-Policy (no inline scripts or
/// styles, no framing), and the usual hardening.
pub fn security_headers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    router
        .layer(set(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
        ))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::REFERRER_POLICY, "same-origin"))
}
