//! What a console request can fail with, as a page: a domain error keeps its meaning (404,
//! 403, 409, …) and its message; a missing or stale sign-in goes back to the sign-in form.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::layout;
use crate::error::DomainError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No cookie, or its token no longer resolves (revoked, expired).
    #[error("not signed in")]
    SignedOut,
    /// A state-changing request without the form's CSRF token, or from another origin.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Domain(#[from] DomainError),
}

pub type ConsoleResult<T> = Result<T, ConsoleError>;

/// The HTTP status a domain error reads as.
pub fn status_of(e: &DomainError) -> StatusCode {
    match e {
        DomainError::NotFound(_) => StatusCode::NOT_FOUND,
        DomainError::AlreadyExists(_) | DomainError::Precondition(_) | DomainError::Aborted(_) => {
            StatusCode::CONFLICT
        }
        DomainError::Invalid(_) => StatusCode::BAD_REQUEST,
        DomainError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        DomainError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        DomainError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        DomainError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            ConsoleError::SignedOut => return Redirect::to("/").into_response(),
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            ConsoleError::Domain(e) => (status_of(e), e.to_string()),
        };
        if status.is_server_error() {
            tracing::warn!(%status, error = %message, "console request failed");
        }
        let body = format!(
            "<h1>{}</h1><p class=\"notice error\">{}</p><p><a href=\"/\">Back to the projects</a></p>",
            layout::esc(status.canonical_reason().unwrap_or("Error")),
            layout::esc(&message)
        );
        (status, layout::page("Error", None, &body)).into_response()
    }
}
