//! Bearer-token authentication for the public gRPC services.
//!
//! Runs as middleware in front of every `kortix.v1` service except the agent gateway (which
//! is mTLS on its own listener): it resolves the token once, asynchronously, and leaves a
//! [`Principal`] in the request extensions for the services to read. Health and reflection stay
//! open so `grpcurl` and load balancers work without a token.

use crate::auth::{Authenticator, Caller, Principal};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use tonic::Status;

/// Whether `path` is a people-facing kortix.v1 method.
fn needs_token(path: &str) -> bool {
    path.starts_with("/kortix.v1.") && !path.starts_with("/kortix.v1.AgentGateway/")
}

pub async fn middleware(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !needs_token(req.uri().path()) {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}").to_string());
    let result = match header {
        None => Err(Status::unauthenticated(
            "missing bearer token (authorization: Bearer <token>)",
        )),
        Some(value) => match crate::auth::parse_bearer(&value) {
            Err(e) => Err(Status::unauthenticated(e.to_string())),
            Ok(token) => auth
                .authenticate(token)
                .await
                .map_err(|e| Status::unauthenticated(e.to_string())),
        },
    };
    match result {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(status) => status.into_http(),
    }
}

/// The calling person; session git tokens are not accepted on the API.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
    principal
        .caller()
        .ok_or_else(|| Status::permission_denied("a session's git token cannot use the API"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_people_facing_services_need_tokens() {
        assert!(super::needs_token("/kortix.v1.ProjectService/ListProjects"));
        assert!(!super::needs_token("/kortix.v1.AgentGateway/Enroll"));
        assert!(!super::needs_token("/grpc.health.v1.Health/Check"));
        assert!(!super::needs_token(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
    }
}
