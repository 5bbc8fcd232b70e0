//! `POST /v1/webhooks/projects/{project}/{slug}`: signed deliveries that start sessions.
//!
//! Answers, all JSON:
//! - 202 `{session_id, firing_id, duplicate}` — started (`duplicate: false`). A redelivery
//!   (same `X-GitHub-Delivery` or `X-Kortix-Delivery`), or a replay (an identical signed
//!   request without a delivery id within [`REPLAY_WINDOW`]), starts nothing and gets the
//!   original's answer with `duplicate: true`; while the original is still starting,
//!   `{firing_id, session_id: null, status: "pending", duplicate: true}`.
//! - 401 bad, missing or truncated signature.
//! - 404 unknown project, unknown trigger, or a cron trigger.
//! - 409 trigger disabled, no `secret_env`, or the secret has no value.
//! - 413 body over [`MAX_BODY_BYTES`].
//! - 422 the prompt template failed (the firing is recorded as failed with the reason).
//! - 502 the session service refused or timed out (recorded likewise).
//! - 500 the control plane could not do its part (repository, damaged data); 503 when the
//!   database is out of reach (retry later).

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
use super::{Triggers, signature};
use crate::error::DomainError;
use crate::store::{Firing, FiringOutcome};

/// The largest delivery accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest delivery id kept in a firing key.
const MAX_DELIVERY_ID: usize = 256;
/// How long a redelivery waits for the original delivery's session to be started.
const PENDING_WAIT: Duration = Duration::from_secs(10);
/// An identical signed request without a delivery id within this long is a replay.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

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

/// The control plane could not do its part: 503 when a dependency (the database) is out
/// of reach and the sender should retry, 500 otherwise.
fn internal(e: DomainError) -> Response {
    let status = match e {
        DomainError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    tracing::error!(error = %e, "webhook delivery");
    error(status, e.to_string())
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
            return error(
                StatusCode::NOT_FOUND,
                format!("project {project_ref:?} not found"),
            );
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

    let secret = match triggers.secrets().value(&project.id, &secret_name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return error(
                StatusCode::CONFLICT,
                format!("secret {secret_name} (the secret_env of trigger {slug}) is not set"),
            );
        }
        Err(e) => return internal(e),
    };
    let signature = match signature::from_headers(&headers)
        .and_then(|sig| signature::verify(secret.expose().as_bytes(), &body, sig).map(|()| sig))
    {
        Ok(sig) => sig.trim().to_ascii_lowercase(),
        Err(e) => return error(StatusCode::UNAUTHORIZED, e.to_string()),
    };

    let delivery_id = match delivery_id(&headers) {
        Ok(id) => id,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    // A delivery id makes a redelivery recognisable for good. Without one, an identical
    // signed request within REPLAY_WINDOW is a replay (anyone who saw the request could
    // repeat it); senders that mean to repeat a request send distinct delivery ids.
    let (key, reuse_after) = match &delivery_id {
        Some(id) => (firing::delivery_key(id), None),
        None => (
            firing::signed_key(signature.as_bytes(), &body),
            Some(REPLAY_WINDOW),
        ),
    };
    let request = FireRequest {
        project_id: project.id.clone(),
        key,
        reuse_after,
        source: Source::Webhook {
            headers: header_map(&headers),
            body: body_value(&body),
            delivery_id,
        },
        trigger,
    };
    match firing::fire(&triggers, request).await {
        Ok(FireOutcome {
            firing,
            claimed: true,
        }) => firing_answer(&firing, false),
        Ok(FireOutcome {
            firing,
            claimed: false,
        }) => match wait_while_pending(&triggers, firing).await {
            Ok(firing) => firing_answer(&firing, true),
            Err(e) => internal(e),
        },
        Err(e) => internal(e),
    }
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body over {MAX_BODY_BYTES} bytes"),
    )
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
async fn wait_while_pending(
    triggers: &Triggers,
    mut firing: Firing,
) -> Result<Firing, DomainError> {
    let deadline = tokio::time::Instant::now() + PENDING_WAIT;
    let mut pause = Duration::from_millis(20);
    while firing.outcome == FiringOutcome::Pending && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
        firing = triggers.store().get_firing(&firing.id).await?;
    }
    Ok(firing)
}

/// The answer for a firing; `duplicate` when this request started nothing because an earlier
/// one (a redelivery's original, or a replayed request) did.
fn firing_answer(firing: &Firing, duplicate: bool) -> Response {
    match firing.outcome {
        FiringOutcome::Started => answer(
            StatusCode::ACCEPTED,
            json!({ "session_id": firing.session_id, "firing_id": firing.id, "duplicate": duplicate }),
        ),
        FiringOutcome::Pending => answer(
            StatusCode::ACCEPTED,
            json!({ "session_id": null, "firing_id": firing.id, "status": "pending", "duplicate": duplicate }),
        ),
        FiringOutcome::Failed => {
            let status = match firing::failure_kind(firing) {
                Some(FailureKind::Template) => StatusCode::UNPROCESSABLE_ENTITY,
                Some(FailureKind::Start) => StatusCode::BAD_GATEWAY,
                Some(FailureKind::Abandoned) | None => StatusCode::INTERNAL_SERVER_ERROR,
            };
            answer(
                status,
                json!({ "error": firing.error, "firing_id": firing.id, "duplicate": duplicate }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triggers::testkit::{Fixture, utc};
    use bytes::Bytes;
    use http::HeaderValue;
    use http_body_util::{Full, StreamBody};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use std::net::SocketAddr;

    const MANIFEST: &str = r#"
[[triggers]]
slug = "gh"
type = "webhook"
agent = "reviewer"
secret_env = "GH_SECRET"
prompt = "Event from {{ headers.user_agent }}: {{ body.action }} {{ body.pull_request.title }}"

[[triggers]]
slug = "off"
type = "webhook"
enabled = false
secret_env = "GH_SECRET"
prompt = "x"

[[triggers]]
slug = "nosecret"
type = "webhook"
secret_env = "NEVER_SET"
prompt = "x"

[[triggers]]
slug = "unsigned"
type = "webhook"
prompt = "x"

[[triggers]]
slug = "broken"
type = "webhook"
secret_env = "GH_SECRET"
prompt = "{{#body}} unclosed"

[[triggers]]
slug = "plain"
type = "webhook"
secret_env = "GH_SECRET"
prompt = "raw: {{ body }}"

[[triggers]]
slug = "nightly"
type = "cron"
cron = "0 0 3 * * *"
prompt = "x"
"#;
    const SECRET: &str = "It's a Secret to Everybody";

    async fn serve(fx: &Fixture) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(fx.triggers.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    async fn fixture_sqlite() -> Fixture {
        let fx = Fixture::sqlite(MANIFEST, utc(2026, 6, 1, 12, 0, 0)).await;
        fx.set_secret("GH_SECRET", SECRET).await;
        fx
    }

    async fn send<B>(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, String)],
        body: B,
    ) -> (StatusCode, Value)
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let client = Client::builder(TokioExecutor::new()).build_http::<B>();
        let mut req = http::Request::post(format!("http://{addr}{path}"));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(30),
            client.request(req.body(body).unwrap()),
        )
        .await
        .expect("no answer")
        .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, json)
    }

    async fn post(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (StatusCode, Value) {
        send(addr, path, headers, Full::new(Bytes::copy_from_slice(body))).await
    }

    fn github_headers(body: &[u8], delivery: &str) -> Vec<(&'static str, String)> {
        vec![
            (
                "x-hub-signature-256",
                signature::sign(SECRET.as_bytes(), body),
            ),
            ("x-github-delivery", delivery.to_owned()),
            ("user-agent", "GitHub-Hookshot/044aadd".to_owned()),
            ("content-type", "application/json".to_owned()),
        ]
    }

    #[tokio::test]
    async fn bad_missing_and_truncated_signatures_are_401() {
        let fx = fixture_sqlite().await;
        let addr = serve(&fx).await;
        let path = "/v1/webhooks/projects/web/gh";
        let body = br#"{"action":"opened"}"#;
        let good = signature::sign(SECRET.as_bytes(), body);
        let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
            ("missing", vec![]),
            (
                "wrong secret",
                vec![("x-hub-signature-256", signature::sign(b"guess", body))],
            ),
            (
                "other body",
                vec![(
                    "x-kortix-signature",
                    signature::sign(SECRET.as_bytes(), b"{}"),
                )],
            ),
            (
                "truncated",
                vec![("x-hub-signature-256", good[..good.len() - 2].to_owned())],
            ),
            (
                "prefix only",
                vec![("x-kortix-signature", "sha256=".to_owned())],
            ),
            (
                "no scheme",
                vec![("x-kortix-signature", good["sha256=".len()..].to_owned())],
            ),
        ];
        for (what, headers) in cases {
            let (status, json) = post(addr, path, &headers, body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {json}");
            assert!(json["error"].is_string(), "{what}: {json}");
        }
        assert!(fx.starter.calls().is_empty());
        assert!(
            fx.store
                .list_firings(&fx.project.id, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        fx.cleanup().await;
    }

    async fn github_delivery_and_redelivery(fx: Fixture) {
        let addr = serve(&fx).await;
        let body = br#"{"action":"opened","pull_request":{"title":"Fix <b>it</b> & more"}}"#;
        let headers = github_headers(body, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        let (status, first) = post(addr, "/v1/webhooks/projects/web/gh", &headers, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{first}");
        assert_eq!(first["session_id"], "session-1");
        assert!(first["firing_id"].is_string());

        // GitHub's "Redeliver": same delivery id, same body.
        let (status, again) = post(addr, "/v1/webhooks/projects/web/gh", &headers, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{again}");
        assert_eq!(first["duplicate"], false);
        assert_eq!(again["duplicate"], true);
        assert_eq!(
            (&again["session_id"], &again["firing_id"]),
            (&first["session_id"], &first["firing_id"])
        );

        let calls = fx.starter.calls();
        assert_eq!(calls.len(), 1, "redelivery started a session: {calls:?}");
        assert_eq!(
            calls[0].prompt,
            "Event from GitHub-Hookshot/044aadd: opened Fix <b>it</b> & more"
        );
        assert_eq!(calls[0].agent, "reviewer");
        assert_eq!(calls[0].origin, "trigger:gh");
        assert_eq!(
            calls[0].idempotency_key,
            "delivery:72d3162e-cc78-11e3-81ab-4c9367dc0958"
        );
        let firing = fx
            .store
            .last_firing(&fx.project.id, "gh")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(firing.outcome, FiringOutcome::Started);
        assert_eq!(Some(firing.id.as_str()), first["firing_id"].as_str());

        // Senders that mean to repeat a request give each one its own delivery id.
        for id in ["k-1", "k-2"] {
            let mut signed = github_headers(body, id);
            signed.retain(|(name, _)| *name != "x-github-delivery");
            signed.push(("x-kortix-delivery", id.to_owned()));
            let (s, j) = post(addr, "/v1/webhooks/projects/web/gh", &signed, body).await;
            assert_eq!(
                (s, &j["duplicate"]),
                (StatusCode::ACCEPTED, &json!(false)),
                "{j}"
            );
        }
        assert_eq!(fx.starter.calls().len(), 3);
        fx.cleanup().await;
    }

    /// A signed request without a delivery id could be replayed by anyone who saw it, each
    /// replay a new session. An identical one (same trigger, body and signature) within 24 h
    /// starts nothing and is answered as a duplicate; after that it fires again.
    async fn signed_requests_without_a_delivery_id_are_not_replayable(fx: Fixture) {
        let addr = serve(&fx).await;
        let body = br#"{"action":"opened"}"#;
        let sig = vec![(
            "x-kortix-signature",
            signature::sign(SECRET.as_bytes(), body),
        )];
        let (s1, a) = post(addr, "/v1/webhooks/projects/web/gh", &sig, body).await;
        let (s2, b) = post(addr, "/v1/webhooks/projects/web/gh", &sig, body).await;
        assert_eq!(
            (s1, s2),
            (StatusCode::ACCEPTED, StatusCode::ACCEPTED),
            "{a} {b}"
        );
        assert_eq!(
            (&a["duplicate"], &b["duplicate"]),
            (&json!(false), &json!(true))
        );
        assert_eq!(a["session_id"], b["session_id"]);
        assert_eq!(fx.starter.calls().len(), 1, "the replay started nothing");
        let first_key = &fx.starter.calls()[0].idempotency_key;
        assert!(first_key.starts_with("signed:"), "{first_key}");

        // Another body is another request.
        let other = br#"{"action":"closed"}"#;
        let other_sig = vec![(
            "x-kortix-signature",
            signature::sign(SECRET.as_bytes(), other),
        )];
        let (_, c) = post(addr, "/v1/webhooks/projects/web/gh", &other_sig, other).await;
        assert_eq!(c["duplicate"], false);
        assert_ne!(c["session_id"], a["session_id"]);

        fx.clock.advance(chrono::TimeDelta::hours(23));
        let (_, d) = post(addr, "/v1/webhooks/projects/web/gh", &sig, body).await;
        assert_eq!(d["duplicate"], true, "still within 24 h: {d}");
        fx.clock
            .advance(chrono::TimeDelta::hours(1) + chrono::TimeDelta::seconds(1));
        let (s, e) = post(addr, "/v1/webhooks/projects/web/gh", &sig, body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{e}");
        assert_eq!(e["duplicate"], false, "24 h later it fires again: {e}");
        assert_ne!(e["session_id"], a["session_id"]);
        let (_, f) = post(addr, "/v1/webhooks/projects/web/gh", &sig, body).await;
        assert_eq!(
            (&f["duplicate"], &f["session_id"]),
            (&json!(true), &e["session_id"])
        );
        assert_eq!(fx.starter.calls().len(), 3);
        let firings = fx
            .store
            .list_firings(&fx.project.id, Some("gh"), 10)
            .await
            .unwrap();
        assert_eq!(
            firings.len(),
            3,
            "the first firing is kept under a retired key"
        );
        fx.cleanup().await;
    }

    #[tokio::test]
    async fn signed_requests_without_a_delivery_id_are_not_replayable_sqlite() {
        signed_requests_without_a_delivery_id_are_not_replayable(fixture_sqlite().await).await;
    }

    #[tokio::test]
    async fn signed_requests_without_a_delivery_id_are_not_replayable_postgres() {
        if let Some(fx) = Fixture::postgres(MANIFEST, utc(2026, 6, 1, 12, 0, 0)).await {
            fx.set_secret("GH_SECRET", SECRET).await;
            signed_requests_without_a_delivery_id_are_not_replayable(fx).await;
        }
    }

    #[tokio::test]
    async fn github_delivery_and_redelivery_sqlite() {
        github_delivery_and_redelivery(fixture_sqlite().await).await;
    }

    #[tokio::test]
    async fn github_delivery_and_redelivery_postgres() {
        if let Some(fx) = Fixture::postgres(MANIFEST, utc(2026, 6, 1, 12, 0, 0)).await {
            fx.set_secret("GH_SECRET", SECRET).await;
            github_delivery_and_redelivery(fx).await;
        }
    }

    #[tokio::test]
    async fn a_redelivery_racing_the_original_gets_the_same_session() {
        let fx = fixture_sqlite().await;
        let addr = serve(&fx).await;
        let body = br#"{"action":"closed"}"#;
        let headers = github_headers(body, "race-1");
        let held = fx.starter.hold();
        let first = tokio::spawn({
            let headers = headers.clone();
            async move { post(addr, "/v1/webhooks/projects/web/gh", &headers, body).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while fx.starter.calls().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the first delivery never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The original is claimed and starting; the redelivery finds it pending and waits.
        let second = tokio::spawn(async move {
            post(addr, "/v1/webhooks/projects/web/gh", &headers, body).await
        });
        // Deterministically in the race: the key is claimed, the session not yet started.
        let manifest = fx
            .triggers
            .manifests()
            .get(&fx.project.id, "main")
            .await
            .unwrap();
        let racing = firing::fire(
            &fx.triggers,
            FireRequest {
                project_id: fx.project.id.clone(),
                trigger: manifest.trigger("gh").unwrap().clone(),
                key: "delivery:race-1".into(),
                source: Source::Manual,
                reuse_after: None,
            },
        )
        .await
        .unwrap();
        assert!(!racing.claimed);
        assert_eq!(racing.firing.outcome, FiringOutcome::Pending);
        let waited = tokio::spawn({
            let triggers = fx.triggers.clone();
            async move { wait_while_pending(&triggers, racing.firing).await }
        });
        drop(held);
        let waited = waited.await.unwrap().unwrap();
        assert_eq!(waited.outcome, FiringOutcome::Started);
        assert_eq!(waited.session_id.as_deref(), Some("session-1"));
        let (s1, a) = first.await.unwrap();
        let (s2, b) = second.await.unwrap();
        assert_eq!(
            (s1, s2),
            (StatusCode::ACCEPTED, StatusCode::ACCEPTED),
            "{a} {b}"
        );
        assert_eq!(a["session_id"], "session-1");
        assert_eq!(
            (&a["session_id"], &a["firing_id"]),
            (&b["session_id"], &b["firing_id"])
        );
        assert_eq!(
            [&a["duplicate"], &b["duplicate"]],
            [&json!(false), &json!(true)],
            "the first one started it"
        );
        assert_eq!(fx.starter.calls().len(), 1);
        fx.cleanup().await;
    }

    #[tokio::test]
    async fn lookups_and_refusals() {
        let fx = fixture_sqlite().await;
        let addr = serve(&fx).await;
        let body = br#"{"text":"hello"}"#;
        let signed = vec![(
            "x-kortix-signature",
            signature::sign(SECRET.as_bytes(), body),
        )];
        let status_of = |path: String| {
            let signed = signed.clone();
            async move { post(addr, &path, &signed, body).await }
        };

        let (s, j) = status_of("/v1/webhooks/projects/nope/gh".into()).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{j}");
        let (s, j) = status_of("/v1/webhooks/projects/web/nope".into()).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{j}");
        let (s, j) = status_of("/v1/webhooks/projects/web/nightly".into()).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "cron trigger: {j}");
        let (s, j) = status_of("/v1/webhooks/projects/web/off".into()).await;
        assert_eq!(s, StatusCode::CONFLICT, "{j}");
        assert!(j["error"].as_str().unwrap().contains("disabled"));
        let (s, j) = status_of("/v1/webhooks/projects/web/nosecret".into()).await;
        assert_eq!(s, StatusCode::CONFLICT, "{j}");
        assert!(j["error"].as_str().unwrap().contains("NEVER_SET"), "{j}");
        let (s, j) = status_of("/v1/webhooks/projects/web/unsigned".into()).await;
        assert_eq!(s, StatusCode::CONFLICT, "{j}");

        // The project by id works like by name.
        let (s, j) = status_of(format!("/v1/webhooks/projects/{}/plain", fx.project.id)).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{j}");
        assert_eq!(
            fx.starter.calls().last().unwrap().prompt,
            r#"raw: {"text":"hello"}"#
        );
        let text = b"not json at all";
        let (s, j) = post(
            addr,
            "/v1/webhooks/projects/web/plain",
            &[(
                "x-kortix-signature",
                signature::sign(SECRET.as_bytes(), text),
            )],
            text,
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{j}");
        assert_eq!(
            fx.starter.calls().last().unwrap().prompt,
            "raw: not json at all"
        );

        // A template error fails the firing, records why, and says so.
        let (s, j) = status_of("/v1/webhooks/projects/web/broken".into()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{j}");
        let error = j["error"].as_str().unwrap();
        assert!(error.starts_with("prompt template: "), "{error}");
        let firing = fx
            .store
            .last_firing(&fx.project.id, "broken")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(firing.outcome, FiringOutcome::Failed);
        assert_eq!(firing.error.as_deref(), Some(error));
        assert_eq!(Some(firing.id.as_str()), j["firing_id"].as_str());

        // Too large: announced by Content-Length, and streamed without one.
        let big = vec![b'x'; MAX_BODY_BYTES + 1];
        let big_sig = vec![(
            "x-kortix-signature",
            signature::sign(SECRET.as_bytes(), &big),
        )];
        let (s, j) = post(addr, "/v1/webhooks/projects/web/plain", &big_sig, &big).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{j}");
        let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = big
            .chunks(64 * 1024)
            .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let streamed = StreamBody::new(futures::stream::iter(chunks));
        let (s, j) = send(addr, "/v1/webhooks/projects/web/plain", &big_sig, streamed).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{j}");
        // Exactly the limit is fine.
        let max = vec![b'y'; MAX_BODY_BYTES];
        let max_sig = vec![(
            "x-kortix-signature",
            signature::sign(SECRET.as_bytes(), &max),
        )];
        let (s, j) = post(addr, "/v1/webhooks/projects/web/plain", &max_sig, &max).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{j}");

        let starts = fx.starter.calls().len();
        assert_eq!(starts, 3);
        fx.cleanup().await;
    }

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
        assert_eq!(
            body_value(b"plain words"),
            Value::String("plain words".into())
        );
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
        headers.insert(
            GITHUB_DELIVERY_HEADER,
            HeaderValue::from_str(&"x".repeat(300)).unwrap(),
        );
        assert!(delivery_id(&headers).is_err());
    }
}
