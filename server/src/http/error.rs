//! One error type for every handler: a status, a stable code and a message,
//! rendered as `{"error": {"code", "message"}}`. Internal details never reach
//! the client; the `log_internal_errors` middleware logs them once.

use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrolog_protocol::{ApiError, ErrorBody};

#[derive(Debug)]
pub enum AppError {
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    PayloadTooLarge(String),
    TooManyRequests(String),
    /// Temporarily over a capacity limit: 503 with `Retry-After`.
    Busy(String),
    /// The database's disk is full: 503 with `Retry-After`, nothing stored.
    StorageFull(String),
    /// Logged server-side; the client sees a generic message.
    Internal(String),
}

/// Carries an internal error's detail from the response to the logging middleware.
#[derive(Debug, Clone)]
pub struct InternalDetail(pub String);

/// Marks a response refused because the database's disk is full (counted and
/// logged by the middleware, at most every few seconds).
#[derive(Debug, Clone)]
pub struct StorageFull(pub String);

pub type ApiResult<T> = Result<T, AppError>;

impl AppError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The message the client sees (never an internal detail), for a page
    /// that shows it.
    pub fn message(&self) -> &str {
        self.parts().2
    }

    /// Whether it is the server's fault (logged by the middleware: answer with
    /// the error itself rather than a page).
    pub fn is_internal(&self) -> bool {
        self.status().is_server_error()
    }

    fn parts(&self) -> (StatusCode, &'static str, &str) {
        match self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            AppError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            AppError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            AppError::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m),
            AppError::TooManyRequests(m) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests", m),
            AppError::Busy(m) => (StatusCode::SERVICE_UNAVAILABLE, "busy", m),
            AppError::StorageFull(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_full",
                "the server's disk is full: nothing of this request was stored; retry later",
            ),
            AppError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; the server log has the details",
            ),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let body = ErrorBody {
            error: ApiError {
                code: code.to_string(),
                message: message.to_string(),
            },
        };
        let mut resp = (status, Json(body)).into_response();
        match self {
            AppError::Internal(detail) => {
                resp.extensions_mut().insert(InternalDetail(detail));
            }
            AppError::Busy(_) => {
                resp.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
            }
            AppError::StorageFull(detail) => {
                resp.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("10"),
                );
                resp.extensions_mut().insert(StorageFull(detail));
            }
            _ => {}
        }
        resp
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => AppError::Conflict(m),
            StoreError::Invalid(m) => AppError::BadRequest(m),
            StoreError::Retry {
                message,
                disk_full: false,
            } => AppError::Internal(message),
            e if e.is_disk_full() => AppError::StorageFull(e.to_string()),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for AppError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        body_error(r.status(), r.body_text())
    }
}

impl From<axum::extract::rejection::BytesRejection> for AppError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        body_error(r.status(), r.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for AppError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        AppError::BadRequest(r.body_text())
    }
}

fn body_error(status: StatusCode, text: String) -> AppError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge(format!(
            "request body exceeds http.max_body_bytes (after decompression): {text}"
        ))
    } else {
        AppError::BadRequest(text)
    }
}
