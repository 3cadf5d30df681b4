//! How API failures reach the client: a status code and `{"message": "..."}`, as docker's API does.
//! Internal causes are logged in full and summarised to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Database(#[from] DbError),
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            ApiError::Database(e) => {
                tracing::error!(error = %e, "API request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error: the daemon's database failed; see the daemon log".to_owned(),
                )
            }
        };
        (status, Json(ErrorBody { message })).into_response()
    }
}
