//! Prometheus' error envelope: `{"status":"error","errorType":…,"error":…}` with
//! the status codes Prometheus gives each type.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromError {
    /// The query or a parameter is wrong (400).
    #[error("{0}")]
    BadData(String),
    /// The query is valid but cannot be answered (422).
    #[error("{0}")]
    Execution(String),
    /// Evaluation took longer than `[prometheus] timeout` (503).
    #[error("{0}")]
    Timeout(String),
    /// No or a wrong credential (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The credential cannot read (403).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The store failed: logged, not shown (500).
    #[error("{0}")]
    Internal(String),
}

impl PromError {
    pub fn error_type(&self) -> &'static str {
        match self {
            PromError::BadData(_) => "bad_data",
            PromError::Execution(_) => "execution",
            PromError::Timeout(_) => "timeout",
            PromError::Unauthorized(_) => "unauthorized",
            PromError::Forbidden(_) => "forbidden",
            PromError::NotFound(_) => "not_found",
            PromError::Internal(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            PromError::BadData(_) => StatusCode::BAD_REQUEST,
            PromError::Execution(_) => StatusCode::UNPROCESSABLE_ENTITY,
            PromError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            PromError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            PromError::Forbidden(_) => StatusCode::FORBIDDEN,
            PromError::NotFound(_) => StatusCode::NOT_FOUND,
            PromError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::store::StoreError> for PromError {
    fn from(e: crate::store::StoreError) -> Self {
        PromError::Internal(e.to_string())
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            PromError::Internal(detail) => {
                tracing::error!(detail, "prometheus API: internal error");
                "internal error: the server log has the details".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = (
            status,
            Json(json!({"status": "error", "errorType": self.error_type(), "error": message})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"metrolog\""),
            );
        }
        resp
    }
}
