//! The API server's error type and its mapping to gRPC status codes (the
//! mapping is the contract in weir.proto's header).

use crate::storage::StorageError;

/// Why an API request failed. Messages follow Kubernetes' wording.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Stale resourceVersion or a failed precondition.
    #[error("{0}")]
    Conflict(String),
    /// Validation failed (the message lists every field error).
    #[error("{0}")]
    Invalid(String),
    /// The request itself is malformed (bad JSON, wrong kind, bad selector).
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but not allowed now (e.g. namespace terminating).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// `pods "x" not found`
    pub fn not_found(plural: &str, name: &str) -> Self {
        ApiError::NotFound(format!("{plural} {name:?} not found"))
    }

    /// Kubernetes' optimistic-concurrency conflict message.
    pub fn modified(plural: &str, name: &str) -> Self {
        ApiError::Conflict(format!(
            "Operation cannot be fulfilled on {plural} {name:?}: the object has been modified; please apply your changes to the latest version and try again"
        ))
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        use tonic::Code;
        let code = match &e {
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::Conflict(_) => Code::Aborted,
            ApiError::Invalid(_) | ApiError::BadRequest(_) => Code::InvalidArgument,
            ApiError::Forbidden(_) => Code::FailedPrecondition,
            ApiError::Expired(_) | ApiError::Storage(StorageError::Compacted { .. }) => {
                Code::OutOfRange
            }
            ApiError::Unimplemented(_) => Code::Unimplemented,
            ApiError::Storage(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        };
        let message = match &e {
            ApiError::Storage(StorageError::Compacted {
                requested,
                compacted,
            }) => {
                format!("too old resource version: {requested} ({compacted})")
            }
            other => other.to_string(),
        };
        tonic::Status::new(code, message)
    }
}
