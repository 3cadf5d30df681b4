//! Failures of dashboard requests, shown as HTML pages (or a redirect to the sign-in page).

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::auth::AuthError;
use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Not signed in: go to the sign-in page.
    #[error("sign in first")]
    SignIn,
    #[error(
        "the form's CSRF token is missing or belongs to another session; reload the page and try again"
    )]
    Csrf,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("{0}")]
    Internal(String),
}

impl WebError {
    /// A failure of a JSON API helper the pages share, as a page.
    pub fn from_api(e: crate::api::ApiError) -> WebError {
        use crate::api::ApiError as A;
        match e {
            A::NotFound(m) | A::Missing(m) => WebError::NotFound(m),
            A::Forbidden(m) => WebError::Forbidden(m),
            A::Database(e) => WebError::Database(e),
            A::Auth(e) => WebError::Auth(e),
            A::Internal(m) | A::BadGateway(m) => WebError::Internal(m),
            other => WebError::BadRequest(other.to_string()),
        }
    }

    /// An engine failure as a page: a missing container is 404, a refused request 400.
    pub fn from_engine(e: crate::engine::EngineError) -> WebError {
        use crate::engine::EngineError as E;
        match e {
            E::NoContainer(_) | E::NoImage(_) | E::NoVolume(_) | E::NoNetwork(_) => {
                WebError::NotFound(e.to_string())
            }
            E::Invalid(_) | E::Start { .. } | E::WrongState { .. } => {
                WebError::BadRequest(e.to_string())
            }
            E::Io { .. } => WebError::Internal(e.to_string()),
            E::Database(e) => WebError::Database(e),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: String,
    message: &'a str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebError::SignIn => return Redirect::to("/login").into_response(),
            WebError::Csrf | WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Auth(e) => e.status(),
            WebError::Database(_) | WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "dashboard request failed");
            "Something went wrong inside the daemon; its log has the details.".to_owned()
        } else {
            self.to_string()
        };
        let page = ErrorPage {
            status: status.to_string(),
            message: &message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "error page did not render");
                (status, message).into_response()
            }
        }
    }
}
