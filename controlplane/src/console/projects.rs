//! The project list (the console's home) and a project's overview: its sessions, change
//! requests, triggers with their next and recent firings, secret names, connectors and
//! approvals (see [`super::approvals`]). A section the caller may not see, or that fails (a broken manifest),
//! says so in place instead of taking the page down.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Console;
use super::auth::{SignedIn, sign_in_page};
use super::error::{ConsoleError, ConsoleResult};
use super::layout::{self, esc, time, url_segment};
use crate::permissions::{self, Action, ProjectRole};
use crate::store::Project;

/// Sessions shown on a project's overview.
const SESSIONS_SHOWN: usize = 50;
/// Recent firings shown per project.
const FIRINGS_SHOWN: u32 = 10;

pub async fn home(State(console): State<Console>, headers: HeaderMap) -> Response {
    match console.signed_in(&headers).await {
        Ok(me) => match project_list(&console, &me).await {
            Ok(page) => page,
            Err(e) => e.into_response(),
        },
        Err(ConsoleError::SignedOut) => sign_in_page(&console, StatusCode::OK, None),
        Err(e) => e.into_response(),
    }
}

async fn project_list(console: &Console, me: &SignedIn) -> ConsoleResult<Response> {
    let projects = console
        .inner
        .projects
        .list(&me.caller(Action::ListProjects)?)
        .await?;
    let mut body = String::from("<h1>Projects</h1>");
    if projects.is_empty() {
        body.push_str(
            "<p class=\"empty\">No projects yet: <code>kortix projects create</code>.</p>",
        );
    } else {
        body.push_str("<ul class=\"cards\">");
        for p in &projects {
            let _ = write!(
                body,
                "<li><a href=\"/projects/{}\">{}</a><span class=\"muted\">default branch {}</span></li>",
                url_segment(&p.name),
                esc(&p.name),
                esc(&p.default_branch)
            );
        }
        body.push_str("</ul>");
    }
    Ok(layout::page("Projects", Some(&me.chrome()), &body).into_response())
}

/// The caller's role on `project` (at least viewer, else NOT_FOUND).
pub async fn role_on(
    console: &Console,
    me: &SignedIn,
    project: &str,
) -> ConsoleResult<(Project, ProjectRole)> {
    let caller = me.caller(Action::ViewProject)?;
    Ok(permissions::project_role(&console.inner.store, &caller, project).await?)
}

/// Whether `role` may do `action` (the permission table's rule, for showing controls).
pub fn may(role: ProjectRole, action: Action) -> bool {
    permissions::check::role_allows(role, action)
}

pub async fn overview(
    State(console): State<Console>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> ConsoleResult<Response> {
    let me = console.signed_in(&headers).await?;
    let (project, role) = role_on(&console, &me, &project).await?;
    let base = format!("/projects/{}", url_segment(&project.name));
    let mut body = format!(
        "<h1>{}</h1><p class=\"muted\">You are {} · <a href=\"{base}/change-requests\">change requests</a></p>",
        esc(&project.name),
        role.as_str()
    );
    if may(role, Action::StartSession) {
        let _ = write!(
            body,
            "<section><h2>Start a session</h2><form method=\"post\" action=\"{base}/sessions\" class=\"stack\">{}\
             <label for=\"prompt\">What should the agent do?</label>\
             <textarea id=\"prompt\" name=\"prompt\" rows=\"3\" required></textarea>\
             <button type=\"submit\">Start session</button></form></section>",
            layout::csrf_field(&me.csrf)
        );
    }
    body.push_str(&section(
        "Sessions",
        sessions(&console, &me, &project, &base).await,
    ));
    body.push_str(&section(
        "Open change requests",
        change_requests(&console, &me, &project, &base).await,
    ));
    body.push_str(&section(
        "Triggers",
        triggers(&console, &me, &project).await,
    ));
    body.push_str(&section("Secrets", secrets(&console, &me, &project).await));
    body.push_str(&section(
        "Connectors",
        connectors(&console, &me, &project).await,
    ));
    body.push_str(&section(
        "Approvals",
        super::approvals::section(&console, &me, &project, role).await,
    ));
    Ok(layout::page(&project.name, Some(&me.chrome()), &body).into_response())
}

fn section(title: &str, content: ConsoleResult<String>) -> String {
    let inner = content
        .unwrap_or_else(|e| format!("<p class=\"notice error\">{}</p>", esc(&e.to_string())));
    format!("<section><h2>{}</h2>{inner}</section>", esc(title))
}

/// A table with `head` columns, or `empty` when there are no rows.
pub fn table(head: &[&str], rows: Vec<String>, empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>", esc(empty));
    }
    let mut html = String::from("<div class=\"scroll\"><table><thead><tr>");
    for h in head {
        let _ = write!(html, "<th>{}</th>", esc(h));
    }
    html.push_str("</tr></thead><tbody>");
    for r in rows {
        html.push_str(&r);
    }
    html.push_str("</tbody></table></div>");
    html
}

async fn sessions(
    console: &Console,
    me: &SignedIn,
    project: &Project,
    base: &str,
) -> ConsoleResult<String> {
    let caller = me.caller(Action::ViewSessions)?;
    let list = console
        .inner
        .sessions
        .list_for(&caller, &project.id)
        .await?;
    let rows = list
        .iter()
        .take(SESSIONS_SHOWN)
        .map(|s| {
            let s = &s.session;
            format!(
                "<tr><td><a href=\"{base}/sessions/{}\"><code>{}</code></a></td><td><span class=\"badge status-{}\">{}</span></td><td>{}</td><td>{}</td></tr>",
                url_segment(&s.id),
                esc(&layout::short(&s.id)),
                esc(s.status.as_str()),
                esc(s.status.as_str()),
                esc(&kortix_timeline::cut_chars(&s.prompt, 80)),
                time(s.created_ms)
            )
        })
        .collect();
    Ok(table(
        &["Session", "Status", "Prompt", "Started"],
        rows,
        "No sessions yet.",
    ))
}

async fn change_requests(
    console: &Console,
    me: &SignedIn,
    project: &Project,
    base: &str,
) -> ConsoleResult<String> {
    let caller = me.caller(Action::ViewChangeRequests)?;
    let page = console
        .inner
        .change_requests
        .list(
            &caller,
            crate::change_requests::ListRequest {
                project: project.id.clone(),
                state: Some(crate::store::CrState::Open),
                ..Default::default()
            },
        )
        .await?;
    let rows = page
        .change_requests
        .iter()
        .map(|cr| {
            format!(
                "<tr><td><a href=\"{base}/change-requests/{}\">#{} {}</a></td><td><code>{}</code> → <code>{}</code></td><td>{}</td></tr>",
                cr.number,
                cr.number,
                esc(&cr.title),
                esc(&cr.head_branch),
                esc(&cr.base_branch),
                time(cr.updated_ms)
            )
        })
        .collect();
    Ok(table(
        &["Change request", "Branches", "Updated"],
        rows,
        "No open change requests.",
    ))
}

async fn triggers(console: &Console, me: &SignedIn, project: &Project) -> ConsoleResult<String> {
    let caller = me.caller(Action::ViewTriggers)?;
    let triggers = &console.inner.triggers;
    let list = triggers.list_for(&caller, &project.id).await?;
    let rows = list
        .triggers
        .iter()
        .map(|t| {
            let next = t.next_fire.map_or_else(
                || "—".into(),
                |n| n.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            );
            let last = t.last_firing.as_ref().map_or_else(
                || "never".into(),
                |f| format!("{} ({})", time(f.fired_ms), f.outcome.as_str()),
            );
            format!(
                "<tr><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.trigger.slug),
                t.trigger.kind.as_str(),
                if t.trigger.enabled { "" } else { " (disabled)" },
                esc(&next),
                esc(&last)
            )
        })
        .collect();
    let mut html = table(
        &["Trigger", "Kind", "Next firing", "Last firing"],
        rows,
        "No triggers.",
    );
    for e in &list.errors {
        let _ = write!(html, "<p class=\"notice error\">{}</p>", esc(e));
    }
    let firings = triggers
        .firings_for(&caller, &project.id, "", FIRINGS_SHOWN)
        .await?;
    if !firings.is_empty() {
        html.push_str("<h3>Recent firings</h3>");
        let rows = firings
            .iter()
            .map(|f| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&f.trigger_slug),
                    time(f.fired_ms),
                    esc(f.outcome.as_str()),
                    esc(f.error.as_deref().or(f.session_id.as_deref()).unwrap_or(""))
                )
            })
            .collect();
        html.push_str(&table(
            &["Trigger", "Fired", "Outcome", "Session or error"],
            rows,
            "",
        ));
    }
    Ok(html)
}

async fn secrets(console: &Console, me: &SignedIn, project: &Project) -> ConsoleResult<String> {
    let caller = me.caller(Action::ListSecretNames)?;
    let list = console.inner.secrets.list(&caller, &project.id).await?;
    let rows = list
        .iter()
        .map(|s| {
            format!(
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                esc(&s.name),
                time(s.updated_ms)
            )
        })
        .collect();
    Ok(table(&["Name", "Updated"], rows, "No secrets."))
}

async fn connectors(console: &Console, me: &SignedIn, project: &Project) -> ConsoleResult<String> {
    let caller = me.caller(Action::ViewConnectors)?;
    let list = console.inner.connectors.list(&caller, &project.id).await?;
    let rows = list
        .iter()
        .map(|c| {
            let state = if c.unavailable.is_empty() {
                if c.enabled {
                    "ready".to_string()
                } else {
                    "disabled".into()
                }
            } else {
                c.unavailable.clone()
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.slug),
                esc(&c.provider),
                c.tool_count,
                esc(&c.credential_state),
                esc(&state)
            )
        })
        .collect();
    Ok(table(
        &["Connector", "Provider", "Tools", "Credential", "State"],
        rows,
        "No connectors.",
    ))
}
