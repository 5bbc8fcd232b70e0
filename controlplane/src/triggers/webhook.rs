//! `POST /v1/webhooks/projects/{project}/{slug}`: signed deliveries that start sessions.
//!
//! Answers, all JSON:
//! - 202 `{session_id, firing_id}` — started; a redelivery (same `X-GitHub-Delivery` or
//!   `X-Kortix-Delivery`) gets the original session and starts nothing. A redelivery whose
//!   original is still starting gets `{firing_id, session_id: null, status: "pending"}`.
//! - 401 bad, missing or truncated signature.
//! - 404 unknown project, unknown trigger, or a cron trigger.
//! - 409 trigger disabled, no `secret_env`, or the secret has no value.
//! - 413 body over [`MAX_BODY_BYTES`].
//! - 422 the prompt template failed (the firing is recorded as failed with the reason).
//! - 502 the session service refused or timed out (recorded likewise).
//! - 500 the control plane could not do its part (store, repository).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use kortix_manifest::TriggerKind;
use serde_json::{Map, Value, json};

use super::firing::{self, FailureKind, FireOutcome, FireRequest, Source};
use super::{TriggerError, Triggers, signature};
use crate::store::{Firing, FiringOutcome};

/// The largest delivery accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest delivery id kept in a firing key.
const MAX_DELIVERY_ID: usize = 256;
/// How long a redelivery waits for the original delivery's session to be started.
const PENDING_WAIT: Duration = Duration::from_secs(10);

pub const GITHUB_DELIVERY_HEADER: &str = "x-github-delivery";
pub const KORTIX_DELIVERY_HEADER: &str = "x-kortix-delivery";

/// The webhook routes, to be merged into the public HTTP listener.
pub fn router(triggers: Triggers) -> Router {
    Router::new()
        .route("/v1/webhooks/projects/{project}/{slug}", post(deliver))
        .with_state(triggers)
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    answer(status, json!({ "error": message.into() }))
}

fn internal(e: TriggerError) -> Response {
    tracing::error!(error = %e, "webhook delivery");
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn deliver(
    State(triggers): State<Triggers>,
    Path((project_ref, slug)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Refuse an announced oversize body before looking anything up.
    let announced = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large();
    }

    let project = match triggers.store().find_project(&project_ref).await {
        Ok(p) => p,
        Err(e) if e.is_not_found() => {
            return error(StatusCode::NOT_FOUND, format!("project {project_ref:?} not found"));
        }
        Err(e) => return internal(e.into()),
    };
    let manifest = match triggers
        .manifests()
        .get(&project.id, &project.default_branch)
        .await
    {
        Ok(m) => m,
        Err(e) => return internal(e),
    };
    let Some(trigger) = manifest
        .trigger(&slug)
        .filter(|t| t.kind == TriggerKind::Webhook)
        .cloned()
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!("project {} has no webhook trigger {slug:?}", project.name),
        );
    };
    if !trigger.enabled {
        return error(StatusCode::CONFLICT, format!("trigger {slug} is disabled"));
    }
    let Some(secret_name) = trigger.secret_env.clone() else {
        return error(
            StatusCode::CONFLICT,
            format!("trigger {slug} has no secret_env; unsigned deliveries are refused"),
        );
    };

    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };

    let secret = match secret_value(&triggers, &project.id, &secret_name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return error(
                StatusCode::CONFLICT,
                format!("secret {secret_name} (the secret_env of trigger {slug}) is not set"),
            );
        }
        Err(e) => return internal(e),
    };
    let verified = signature::from_headers(&headers)
        .and_then(|sig| signature::verify(secret.expose().as_bytes(), &body, sig));
    if let Err(e) = verified {
        return error(StatusCode::UNAUTHORIZED, e.to_string());
    }

    let delivery_id = match delivery_id(&headers) {
        Ok(id) => id,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let request = FireRequest {
        project_id: project.id.clone(),
        key: firing::delivery_key(delivery_id.as_deref()),
        source: Source::Webhook {
            headers: header_map(&headers),
            body: body_value(&body),
            delivery_id,
        },
        trigger,
    };
    match firing::fire(&triggers, request).await {
        Ok(FireOutcome { firing, claimed: true }) => firing_answer(&firing),
        Ok(FireOutcome { firing, claimed: false }) => {
            match wait_while_pending(&triggers, firing).await {
                Ok(firing) => firing_answer(&firing),
                Err(e) => internal(e),
            }
        }
        Err(e) => internal(e),
    }
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body over {MAX_BODY_BYTES} bytes"),
    )
}

async fn secret_value(
    triggers: &Triggers,
    project_id: &str,
    name: &str,
) -> Result<Option<crate::secrets::SecretValue>, TriggerError> {
    let snapshot = triggers.store().load_secrets(project_id).await?;
    let Some(row) = snapshot.secrets.into_iter().find(|r| r.name == name) else {
        return Ok(None);
    };
    triggers
        .master_key()
        .open(project_id, name, &row.nonce, &row.ciphertext)
        .map(Some)
        .map_err(|e| TriggerError::Secret {
            project_id: project_id.to_owned(),
            name: name.to_owned(),
            reason: e.to_string(),
        })
}

/// The sender's delivery id, which makes redeliveries recognisable.
fn delivery_id(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers
        .get(GITHUB_DELIVERY_HEADER)
        .or_else(|| headers.get(KORTIX_DELIVERY_HEADER))
    else {
        return Ok(None);
    };
    let id = value
        .to_str()
        .map_err(|_| "the delivery id header is not text".to_owned())?
        .trim();
    if id.is_empty() {
        return Ok(None);
    }
    if id.len() > MAX_DELIVERY_ID {
        return Err(format!("delivery id longer than {MAX_DELIVERY_ID} bytes"));
    }
    Ok(Some(id.to_owned()))
}

/// Headers for templates: `User-Agent` → `user_agent`; repeated headers joined with ", ".
fn header_map(headers: &HeaderMap) -> Map<String, Value> {
    let mut out: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let key = name.as_str().to_ascii_lowercase().replace('-', "_");
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.get_mut(&key) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&text);
            }
            _ => {
                out.insert(key, Value::String(text));
            }
        }
    }
    out
}

/// JSON bodies are parsed so templates can reach into them; anything else is text.
fn body_value(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// A redelivery arriving while the original is still starting its session waits (bounded)
/// so it can answer with the same session.
async fn wait_while_pending(triggers: &Triggers, mut firing: Firing) -> Result<Firing, TriggerError> {
    let deadline = tokio::time::Instant::now() + PENDING_WAIT;
    let mut pause = Duration::from_millis(20);
    while firing.outcome == FiringOutcome::Pending && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
        firing = triggers.store().get_firing(&firing.id).await?;
    }
    Ok(firing)
}

fn firing_answer(firing: &Firing) -> Response {
    match firing.outcome {
        FiringOutcome::Started => answer(
            StatusCode::ACCEPTED,
            json!({ "session_id": firing.session_id, "firing_id": firing.id }),
        ),
        FiringOutcome::Pending => answer(
            StatusCode::ACCEPTED,
            json!({ "session_id": null, "firing_id": firing.id, "status": "pending" }),
        ),
        FiringOutcome::Failed => {
            let status = match firing::failure_kind(firing) {
                Some(FailureKind::Template) => StatusCode::UNPROCESSABLE_ENTITY,
                Some(FailureKind::Start) => StatusCode::BAD_GATEWAY,
                Some(FailureKind::Abandoned) | None => StatusCode::INTERNAL_SERVER_ERROR,
            };
            answer(
                status,
                json!({ "error": firing.error, "firing_id": firing.id }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn header_names_for_templates() {
        let mut headers = HeaderMap::new();
        headers.insert("User-Agent", HeaderValue::from_static("Slackbot 1.0"));
        headers.append("X-Multi", HeaderValue::from_static("a"));
        headers.append("X-Multi", HeaderValue::from_static("b"));
        let map = header_map(&headers);
        assert_eq!(map["user_agent"], "Slackbot 1.0");
        assert_eq!(map["x_multi"], "a, b");
    }

    #[test]
    fn bodies_for_templates() {
        assert_eq!(body_value(br#"{"text":"hi"}"#)["text"], "hi");
        assert_eq!(body_value(b"plain words"), Value::String("plain words".into()));
        assert_eq!(body_value(b""), Value::String(String::new()));
    }

    #[test]
    fn delivery_ids() {
        let mut headers = HeaderMap::new();
        assert_eq!(delivery_id(&headers), Ok(None));
        headers.insert(KORTIX_DELIVERY_HEADER, HeaderValue::from_static("k-1"));
        assert_eq!(delivery_id(&headers), Ok(Some("k-1".into())));
        headers.insert(GITHUB_DELIVERY_HEADER, HeaderValue::from_static("gh-1"));
        assert_eq!(delivery_id(&headers), Ok(Some("gh-1".into())));
        headers.insert(GITHUB_DELIVERY_HEADER, HeaderValue::from_str(&"x".repeat(300)).unwrap());
        assert!(delivery_id(&headers).is_err());
    }
}
