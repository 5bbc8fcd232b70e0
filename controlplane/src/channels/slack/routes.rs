//! The public endpoints Slack calls:
//!
//! - `POST /v1/webhooks/slack/{project}` — the Events API. 200 `{"challenge"}` for
//!   `url_verification`; 200 for every event, at once: a new `event_id` is claimed and acted
//!   on afterwards, a retried one (`X-Slack-Retry-Num`) or one claimed by another replica is
//!   acknowledged and nothing more.
//! - `POST /v1/webhooks/slack/{project}/interactivity` — block actions (`payload=`) and the
//!   `/kortix` slash command (`command=`), form-encoded; 200 at once, answered through the
//!   Web API afterwards.
//!
//! Both refuse a missing, bad or stale signature with 401 before anything is stored, answer
//! 404 for a project that does not exist or is not bound to Slack, 413 for a body over
//! [`MAX_BODY_BYTES`], 503 when this replica is busy with [`super::MAX_JOBS`] jobs or the
//! database is out of reach (Slack retries), 500 when the control plane fails otherwise.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use super::event::{self, Envelope};
use super::{Slack, signature};
use crate::error::DomainError;
use crate::store::Project;

/// The largest request accepted (Slack's are a few KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The Slack routes, to be merged into the public HTTP listener.
pub fn router(slack: Slack) -> Router {
    Router::new()
        .route("/v1/webhooks/slack/{project}", post(events))
        .route(
            "/v1/webhooks/slack/{project}/interactivity",
            post(interactivity),
        )
        .with_state(slack)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn internal(e: DomainError) -> Response {
    let status = match e {
        DomainError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        DomainError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status != StatusCode::NOT_FOUND {
        tracing::error!(error = %e, "Slack request");
    }
    error(status, e.to_string())
}

/// A verified request: the project, the raw body, and a job slot for the work it asks for.
struct Verified {
    project: Project,
    body: Bytes,
    permit: OwnedSemaphorePermit,
}

/// Reads the body (bounded), finds the bound project and checks Slack's signature.
async fn verify(
    slack: &Slack,
    project_ref: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Verified, Response> {
    let announced = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("reading the body: {e}"),
            ));
        }
    };
    let project = slack
        .store()
        .find_project(project_ref)
        .await
        .map_err(|e| internal(e.into()))?;
    let Some(credentials) = slack.credentials(&project).await.map_err(internal)? else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("project {} is not bound to Slack", project.name),
        ));
    };
    signature::verify_request(
        credentials.signing_secret.expose().as_bytes(),
        headers,
        &body,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|e| error(StatusCode::UNAUTHORIZED, e.to_string()))?;
    let permit = slack.inner.jobs.clone().try_acquire_owned().map_err(|_| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many Slack requests in progress; retry later",
        )
    })?;
    Ok(Verified {
        project,
        body,
        permit,
    })
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body over {MAX_BODY_BYTES} bytes"),
    )
}

async fn events(
    State(slack): State<Slack>,
    Path(project_ref): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match verify(&slack, &project_ref, &headers, body).await {
        Ok(verified) => take_event(slack, verified).await,
        Err(response) => response,
    }
}

/// Answers a verified Events API request; a new event is claimed and acted on afterwards.
async fn take_event(slack: Slack, verified: Verified) -> Response {
    let Verified {
        project,
        body,
        permit,
    } = verified;
    let (event_id, message) = match event::parse(&body) {
        Ok(Envelope::UrlVerification { challenge }) => {
            return Json(json!({ "challenge": challenge })).into_response();
        }
        Ok(Envelope::Ignored(why)) => {
            tracing::debug!(project = %project.name, why, "Slack event ignored");
            return StatusCode::OK.into_response();
        }
        Ok(Envelope::Event { event_id, message }) => (event_id, message),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match slack
        .store()
        .claim_slack_event(&project.id, &event_id)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(project = %project.name, event = %event_id, "Slack event already taken");
            return StatusCode::OK.into_response();
        }
        Err(e) => return internal(e.into()),
    }
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = slack.on_message(&project, &event_id, message).await {
            tracing::warn!(project = %project.name, event = %event_id, error = %e,
                "acting on a Slack event failed");
        }
    });
    StatusCode::OK.into_response()
}

async fn interactivity(
    State(slack): State<Slack>,
    Path(project_ref): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Verified {
        project,
        body,
        permit,
    } = match verify(&slack, &project_ref, &headers, body).await {
        Ok(verified) => verified,
        Err(response) => return response,
    };
    let request = match super::interactivity::parse(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = slack.on_interaction(&project, request).await {
            tracing::warn!(project = %project.name, error = %e, "acting on a Slack interaction failed");
        }
    });
    StatusCode::OK.into_response()
}
