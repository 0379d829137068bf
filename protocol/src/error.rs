//! The JSON error envelope every non-2xx API answer carries.

use serde::{Deserialize, Serialize};

/// `{"error": {"code": "...", "message": "..."}}`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ApiError,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    /// Stable, machine-readable code such as `unauthorized` or `bad_request`.
    pub code: String,
    /// Human-readable explanation of what was wrong and what to do.
    pub message: String,
}
