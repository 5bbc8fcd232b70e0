//! Bearer-token authentication for the public gRPC services.
//!
//! Runs as middleware in front of every `kortix.v1` service except the agent gateway (which
//! is mTLS on its own listener): it resolves the token once, asynchronously, and leaves a
//! [`Principal`] and the method's [`Action`] (from the permission table) in the request
//! extensions for the services to read. A method the table lacks is refused for everyone;
//! what the table decides without the store (server admin only, narrowed tokens) is refused
//! here. Health and reflection stay open so `grpcurl` and load balancers work without a
//! token.

use crate::auth::{Authenticator, Caller, Principal};
use crate::permissions::{self, Action};
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
    let Some(action) = permissions::rpc_action(req.uri().path()) else {
        return Status::permission_denied(format!(
            "{} has no entry in the permission table",
            req.uri().path()
        ))
        .into_http();
    };
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
                .map_err(crate::auth::AuthError::into_status),
        },
    };
    let principal = match result {
        Ok(principal) => principal,
        Err(status) => return status.into_http(),
    };
    if let Some(caller) = principal.caller(action)
        && let Err(refused) = permissions::upfront(&caller)
    {
        return Status::from(refused).into_http();
    }
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(action);
    next.run(req).await
}

/// The calling person; session git tokens are not accepted on the API.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
    if principal.person_id().is_none() {
        return Err(Status::permission_denied(
            "a session's git token cannot use the API",
        ));
    }
    let action = request
        .extensions()
        .get::<Action>()
        .copied()
        .ok_or_else(|| Status::internal("the request passed no permission check"))?;
    let mut caller = principal
        .caller(action)
        .ok_or_else(|| Status::permission_denied("a session's git token cannot use the API"))?;
    if let Some(peer) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        caller.from = peer.0.to_string();
    }
    Ok(caller)
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
