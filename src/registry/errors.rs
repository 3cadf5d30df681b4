//! The distribution spec's error codes and their JSON body: every registry failure answers
//! `{"errors":[{"code","message","detail"}]}` with the status the spec gives the code.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The error codes of the OCI distribution spec (and `TOOMANYREQUESTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    PaginationNumberInvalid,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// A `Range`/`Content-Range` that does not fit (416, with BLOB_UPLOAD_INVALID's code).
    RangeInvalid,
    /// A manifest over the size limit (413, with SIZE_INVALID's code).
    TooLarge,
    /// A failure on the daemon's side (500, code UNKNOWN).
    Internal,
}

impl Code {
    pub fn name(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid | Code::RangeInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Code::SizeInvalid | Code::TooLarge => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::Internal => "UNKNOWN",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::PaginationNumberInvalid
            | Code::SizeInvalid => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One entry of the error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub code: Code,
    pub message: String,
    pub detail: Option<serde_json::Value>,
}

/// A registry failure: one or more entries (a manifest may miss several blobs), and for 401 the
/// challenge to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .entries.iter().map(|e| format!("{}: {}", e.code.name(), e.message)).collect::<Vec<_>>().join("; "))]
pub struct RegistryError {
    pub entries: Vec<Entry>,
    pub challenge: Option<String>,
}

impl RegistryError {
    pub fn new(code: Code, message: impl Into<String>) -> RegistryError {
        RegistryError {
            entries: vec![Entry {
                code,
                message: message.into(),
                detail: None,
            }],
            challenge: None,
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> RegistryError {
        if let Some(first) = self.entries.first_mut() {
            first.detail = Some(detail);
        }
        self
    }

    pub fn with_challenge(mut self, challenge: String) -> RegistryError {
        self.challenge = Some(challenge);
        self
    }

    pub fn code(&self) -> Code {
        self.entries.first().map_or(Code::Internal, |e| e.code)
    }

    /// A daemon-side failure: logged in full, answered with the thing that failed.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> RegistryError {
        tracing::error!(error = %e, "registry: {what}");
        RegistryError::new(Code::Internal, format!("{what}: {e}"))
    }
}

impl From<crate::db::DbError> for RegistryError {
    fn from(e: crate::db::DbError) -> Self {
        RegistryError::internal("the daemon's database failed", e)
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = self.code().status();
        let body = serde_json::json!({
            "errors": self.entries.iter().map(|e| serde_json::json!({
                "code": e.code.name(),
                "message": e.message,
                "detail": e.detail.clone().unwrap_or(serde_json::Value::Null),
            })).collect::<Vec<_>>()
        });
        let mut response = (status, Json(body)).into_response();
        if let Some(challenge) = self.challenge
            && let Ok(value) = HeaderValue::from_str(&challenge)
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_specs_statuses() {
        assert_eq!(Code::BlobUnknown.status(), StatusCode::NOT_FOUND);
        assert_eq!(Code::DigestInvalid.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            Code::RangeInvalid.status(),
            StatusCode::RANGE_NOT_SATISFIABLE
        );
        assert_eq!(Code::RangeInvalid.name(), "BLOB_UPLOAD_INVALID");
        assert_eq!(Code::TooLarge.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(Code::Unauthorized.status(), StatusCode::UNAUTHORIZED);
    }
}
