//! A session's page — its status, the conversation so far rendered on the server, the agent's
//! logs, a chat box, stop and "open change request" — and those actions. The page records the
//! seq it was rendered up to; the live stream ([`super::live`]) continues from there, so a
//! reload resumes where the page left off.

use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tokio_stream::StreamExt as _;

use super::Console;
use super::auth::{Peer, SignedIn};
use super::error::ConsoleResult;
use super::layout::{self, button_form, csrf_field, esc, short, url_segment};
use super::page_view::PageView;
use super::projects::{may, role_on};
use crate::error::DomainError;
use crate::permissions::Action;
use crate::sessions::access::NamedSession;
use crate::sessions::lifecycle::StartRequest;
use crate::store::{Project, Session, SessionSave};

/// Where a session's page is.
pub fn session_path(project: &str, id: &str) -> String {
    format!(
        "/projects/{}/sessions/{}",
        url_segment(project),
        url_segment(id)
    )
}

/// The session `id` of `project` as the caller doing `action` may see it.
pub async fn session_of(
    console: &Console,
    me: &SignedIn,
    project: &str,
    id: &str,
    action: Action,
) -> ConsoleResult<(Project, NamedSession)> {
    let (project, _) = role_on(console, me, project).await?;
    let named = console
        .inner
        .sessions
        .get_for(&me.caller(action)?, id)
        .await?;
    if named.session.project_id != project.id {
        return Err(DomainError::NotFound(format!("session {id} not found")).into());
    }
    Ok((project, named))
}

/// What a session's last sandbox saved for a resume, and whether it can be resumed.
fn saved_html(session: &Session, saved: Option<&SessionSave>) -> String {
    let resumable = session.status.is_resumable();
    if saved.is_none() && !resumable {
        return String::new();
    }
    let what = saved.map_or_else(
        || "nothing was saved by its last sandbox".to_string(),
        |s| {
            let wip = if s.wip_commit.is_empty() {
                esc(if s.wip_note.is_empty() {
                    "no uncommitted work"
                } else {
                    &s.wip_note
                })
            } else {
                format!(
                    "uncommitted work <code>{}</code> at <code>{}</code> ({})",
                    esc(&short(&s.wip_commit)),
                    esc(&crate::sessions::resume::wip_ref(&session.id)),
                    esc(&s.wip_note)
                )
            };
            let conversation = if s.conversation_bytes > 0 {
                format!("conversation of {} bytes", s.conversation_bytes)
            } else if s.conversation_note.is_empty() {
                "no conversation".to_string()
            } else {
                esc(&s.conversation_note)
            };
            format!("Saved {}: {wip}; {conversation}", layout::time(s.saved_ms))
        },
    );
    format!(
        "<p id=\"saved\" class=\"muted\">{}{what}</p>",
        if resumable {
            "<strong>Resumable.</strong> "
        } else {
            ""
        }
    )
}

pub async fn page(
    State(console): State<Console>,
    Path((project, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ConsoleResult<Response> {
    let me = console.signed_in(&headers).await?;
    let (project, role) = role_on(&console, &me, &project).await?;
    let caller = me.caller(Action::ViewSessions)?;
    let (_, named) = session_of(&console, &me, &project.id, &id, Action::ViewSessions).await?;
    let session = &named.session;
    // The page's state as this process last rendered it (else none), brought up to date with
    // the records stored since: a reload does not re-read the session from its first record.
    let mut view = console
        .inner
        .pages
        .at_or_before(&session.id, u64::MAX)
        .map_or_else(PageView::new, |(_, v)| (*v).clone());
    let mut stored = console
        .inner
        .sessions
        .attach_for(&caller, &session.id, view.next_seq(), false)
        .await?;
    let before = view.at();
    while let Some(record) = stored.next().await {
        let record = record.map_err(|s| {
            DomainError::Unavailable(format!("reading session {}: {}", session.id, s.message()))
        })?;
        view.push(&record);
    }
    let after = view.at();
    // Saved where the page ends: for the next render, and (the timeline alone) for the live
    // stream this page opens next.
    if after > before {
        console.inner.pages.put(&session.id, after, view.clone());
        console
            .inner
            .checkpoints
            .put(&session.id, after, view.timeline().clone());
    }
    let ended = session.status.is_terminal();
    if ended {
        view.finish();
    }
    let path = session_path(&project.name, &session.id);
    let mut actions = String::new();
    if !ended && may(role, Action::StopSession) {
        actions.push_str(&button_form(
            &format!("{path}/stop"),
            &me.csrf,
            "Stop",
            "danger",
        ));
    }
    if may(role, Action::OpenOrCloseChangeRequest) {
        actions.push_str(&button_form(
            &format!("{path}/change-request"),
            &me.csrf,
            "Open change request",
            "",
        ));
    }
    let status = session.status.as_str();
    let saved = saved_html(session, named.saved.as_ref());
    if session.status.is_resumable() && may(role, Action::StartSession) {
        let _ = write!(
            actions,
            "<form method=\"post\" action=\"{path}/resume\" class=\"inline\">{}\
             <label for=\"resume-text\" class=\"sr\">Prompt after resuming</label>\
             <input id=\"resume-text\" name=\"text\" placeholder=\"Prompt after resuming (optional)\">\
             <button type=\"submit\">Resume</button></form>",
            csrf_field(&me.csrf)
        );
    }
    let mut body = format!(
        "<p class=\"crumbs\"><a href=\"/projects/{}\">{}</a> / session</p>\
         <h1>Session <code>{}</code> <span id=\"status\" class=\"badge status-{status}\">{status}</span></h1>\
         <p class=\"muted\">Branch <code>{}</code> · started {}</p>{saved}\
         <div class=\"actions\">{actions}</div>\
         <nav class=\"tabs\"><a href=\"#conversation\" data-tab=\"conversation\">Conversation</a>\
         <a href=\"#logs\" data-tab=\"logs\">Agent logs</a></nav>\
         <div id=\"live\" data-events=\"{path}/events\" data-after=\"{after}\" data-live=\"{}\">\
         <section id=\"conversation\" class=\"pane timeline\">{}</section>\
         <section id=\"logs\" class=\"pane logs\">{}</section></div>",
        url_segment(&project.name),
        esc(&project.name),
        esc(&short(&session.id)),
        esc(&session.id),
        layout::time(session.created_ms),
        !ended,
        view.conversation_html(),
        view.logs_html(),
    );
    // A message to a hibernated session resumes it with that message.
    if (!ended || session.status == crate::store::SessionStatus::Hibernated)
        && may(role, Action::ChatInSession)
    {
        let _ = write!(
            body,
            "<form id=\"chat\" method=\"post\" action=\"{path}/prompt\" class=\"chat\">{}\
             <label for=\"text\" class=\"sr\">Message</label>\
             <textarea id=\"text\" name=\"text\" rows=\"2\" placeholder=\"Message the agent\" required></textarea>\
             <button type=\"submit\">Send</button></form>",
            csrf_field(&me.csrf)
        );
    }
    Ok(layout::page(
        &format!("Session {}", short(&session.id)),
        Some(&me.chrome()),
        &body,
    )
    .into_response())
}

#[derive(Deserialize)]
pub struct StartForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    prompt: String,
}

pub async fn start(
    State(console): State<Console>,
    Path(project): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<StartForm>,
) -> ConsoleResult<Response> {
    let me = console.posted(&headers, &peer, &form.csrf).await?;
    if form.prompt.trim().is_empty() {
        return Err(DomainError::Invalid("the prompt is empty".into()).into());
    }
    let started = console
        .inner
        .sessions
        .start_for(
            &me.caller(Action::StartSession)?,
            StartRequest {
                project,
                prompt: form.prompt,
                origin: "console".into(),
                launched_by: String::new(),
                template: String::new(),
                agent: String::new(),
                idempotency_key: String::new(),
                resume_branch: String::new(),
            },
        )
        .await?;
    Ok(Redirect::to(&session_path(&started.project_name, &started.session.id)).into_response())
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    /// The chat message (`prompt`).
    #[serde(default)]
    text: String,
}

/// A session's buttons: `prompt` (chat; it resumes a hibernated session), `stop`,
/// `resume` (with an optional prompt) and `change-request` (open one from the session's
/// branch). Each goes back to the page it came from, except a new change request,
/// which is shown.
pub async fn act(
    State(console): State<Console>,
    Path((project, id, verb)): Path<(String, String, String)>,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> ConsoleResult<Response> {
    let me = console.posted(&headers, &peer, &form.csrf).await?;
    let action = match verb.as_str() {
        "prompt" => Action::ChatInSession,
        "stop" => Action::StopSession,
        "change-request" => Action::OpenOrCloseChangeRequest,
        "resume" => Action::StartSession,
        other => {
            return Err(DomainError::NotFound(format!(
                "no session action {other:?}; prompt, stop, resume or change-request"
            ))
            .into());
        }
    };
    let (project, named) = session_of(&console, &me, &project, &id, Action::ViewSessions).await?;
    let (caller, sessions) = (me.caller(action)?, &console.inner.sessions);
    let id = &named.session.id;
    match action {
        Action::ChatInSession => {
            sessions
                .send_prompt(
                    &caller,
                    id,
                    form.text,
                    String::new(),
                    std::time::Duration::ZERO,
                )
                .await?;
        }
        Action::StopSession => {
            sessions.stop_for(&caller, id).await?;
        }
        Action::StartSession => {
            sessions.resume_for(&caller, id, form.text.trim()).await?;
        }
        _ => {
            let cr = console
                .inner
                .change_requests
                .open(
                    &caller,
                    crate::change_requests::OpenRequest {
                        project: project.id.clone(),
                        session_id: id.clone(),
                        ..Default::default()
                    },
                )
                .await?;
            let to = super::change_requests::cr_path(&project.name, cr.number);
            return Ok(Redirect::to(&to).into_response());
        }
    }
    Ok(Redirect::to(&session_path(&project.name, id)).into_response())
}
