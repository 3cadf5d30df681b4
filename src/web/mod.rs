//! The dashboard: server-rendered pages (askama templates from `templates/`) for people in a
//! browser, and the static assets they use.
//!
//! Owns page handlers, the browser session extractor with its synchronizer CSRF check on every
//! form, HTML error pages, and the security headers of every response. It calls `auth` and `db`
//! like the JSON API does, and never touches the runtime or the blob files.

mod containers;
mod error;
mod pages;
mod session;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::startup::AppState;

pub use error::WebError;
pub use session::WebUser;

const CSS: &str = include_str!("../../static/wharf.css");
const IMAGES_JS: &str = include_str!("../../static/images.js");
const CONTAINERS_JS: &str = include_str!("../../static/containers.js");

/// A short hash of the stylesheet, in its URL, so it can be cached for a year and still change.
pub const CSS_VERSION: &str = match std::str::from_utf8(&CSS_HASH_HEX) {
    Ok(s) => s,
    Err(_) => panic!("hex digits are UTF-8"),
};
const CSS_HASH_HEX: [u8; 16] = hash_hex(CSS.as_bytes());

/// The same for the Images page's script.
pub const JS_VERSION: &str = match std::str::from_utf8(&JS_HASH_HEX) {
    Ok(s) => s,
    Err(_) => panic!("hex digits are UTF-8"),
};
const JS_HASH_HEX: [u8; 16] = hash_hex(IMAGES_JS.as_bytes());

/// The same for the Containers pages' script.
pub const CONTAINERS_JS_VERSION: &str = match std::str::from_utf8(&CONTAINERS_JS_HASH_HEX) {
    Ok(s) => s,
    Err(_) => panic!("hex digits are UTF-8"),
};
const CONTAINERS_JS_HASH_HEX: [u8; 16] = hash_hex(CONTAINERS_JS.as_bytes());

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

/// A versioned asset: cached for a year, since a change changes its URL.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
}

async fn stylesheet() -> impl IntoResponse {
    asset("text/css; charset=utf-8", CSS)
}

async fn images_script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", IMAGES_JS)
}

async fn containers_script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", CONTAINERS_JS)
}

/// The dashboard's routes.
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
        .route("/images", get(pages::images))
        .route("/containers", get(containers::containers))
        .route("/containers/new", get(containers::new_container))
        .route("/containers/{id}", get(containers::container))
        .route(
            &format!("/static/containers-{CONTAINERS_JS_VERSION}.js"),
            get(containers_script),
        )
        .route(&format!("/static/wharf-{CSS_VERSION}.css"), get(stylesheet))
        .route(
            &format!("/static/images-{JS_VERSION}.js"),
            get(images_script),
        )
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
