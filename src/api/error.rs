//! How API failures reach the client: a status code and `{"message": "..."}`, as docker's API does.
//! Internal causes are logged in full and summarised to the client.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::auth::password::PasswordError;
use crate::db::DbError;
use crate::domain::InvalidValue;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A daemon-side failure that names the file or part that failed.
    #[error("{0}")]
    Internal(String),
    /// A 404 whose message is complete as it is.
    #[error("{0}")]
    Missing(String),
    /// Another server the daemon had to ask (a remote registry) failed or could not be reached.
    #[error("{0}")]
    BadGateway(String),
    /// Refused whoever asks (not a missing right: a request that may not be made this way).
    #[error("{0}")]
    Forbidden(String),
}

impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        ApiError::Auth(AuthError::Password(e))
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Auth(e) => return e.into_response(),
            ApiError::Database(DbError::NotFound { what }) => {
                (StatusCode::NOT_FOUND, format!("{what} not found"))
            }
            ApiError::Database(DbError::Conflict { what }) => (StatusCode::CONFLICT, what),
            ApiError::Database(e) => {
                tracing::error!(error = %e, "API request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error: the daemon's database failed; see the daemon log".to_owned(),
                )
            }
            ApiError::Invalid(e) => (StatusCode::BAD_REQUEST, e.to_string()),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            e @ ApiError::NotFound(_) => (StatusCode::NOT_FOUND, e.to_string()),
            ApiError::BadGateway(m) => (StatusCode::BAD_GATEWAY, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::Missing(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "API request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, m)
            }
        };
        (status, Json(ErrorBody { message })).into_response()
    }
}

/// A JSON request body whose rejections are [`ApiError`]s with the parser's reason.
#[derive(Debug, Clone, Copy, Default)]
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(ApiError::BadRequest(match rejection {
                JsonRejection::JsonDataError(e) => {
                    format!("invalid request body: {}", e.body_text())
                }
                JsonRejection::JsonSyntaxError(e) => {
                    format!("request body is not valid JSON: {}", e.body_text())
                }
                JsonRejection::MissingJsonContentType(_) => {
                    "the request body must be JSON (Content-Type: application/json)".to_owned()
                }
                other => other.body_text(),
            })),
        }
    }
}
