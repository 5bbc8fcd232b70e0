//! The public gRPC API for people (bearer tokens), one service per file.
//!
//! - [`authn`]: the layer that turns `authorization: Bearer …` into a [`crate::auth::Principal`]
//!   in the request extensions before any service runs.
//! - [`convert`]: store rows → wire messages.

pub mod accounts;
pub mod authn;
pub mod change_requests;
pub mod convert;
pub mod projects;
pub mod secrets;
pub mod sessions;

use tonic::Status;

/// Maps store errors to statuses without leaking other accounts' names.
pub(crate) fn store_status(e: crate::store::Error) -> Status {
    use crate::store::Error;
    match e {
        Error::NotFound(what) => Status::not_found(format!("{what} not found")),
        Error::AlreadyExists(what) => Status::already_exists(format!("{what} already exists")),
        Error::Invalid { .. } => Status::invalid_argument(e.to_string()),
        other => {
            tracing::error!(error = %other, "store failure");
            Status::unavailable(other.to_string())
        }
    }
}
