//! Change requests in the console: a project's list by state, one change request's page (its
//! state, mergeability with the conflicting paths, the file list with stats, the unified diff
//! with neutral line highlighting, renames and binaries), and merge, close and reopen. The
//! buttons a role may not use are absent, and the same requests posted anyway are refused by
//! the domain service (403).

use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Console;
use super::auth::{CsrfForm, Peer, SignedIn};
use super::error::{ConsoleError, ConsoleResult, status_of};
use super::layout::{self, button_form, esc, time, url_segment};
use super::projects::{may, role_on};
use crate::change_requests::ListRequest;
use crate::changes::FileStatus;
use crate::error::DomainError;
use crate::permissions::Action;
use crate::store::CrState;

/// Diff lines rendered on one page; the rest is summarised.
const DIFF_LINES: usize = 20_000;
/// Change requests listed per page.
const LIST_PAGE: u32 = 100;

pub fn cr_path(project: &str, number: i64) -> String {
    format!(
        "/projects/{}/change-requests/{number}",
        url_segment(project)
    )
}

#[derive(Deserialize)]
pub struct StateFilter {
    #[serde(default)]
    state: Option<String>,
}

pub async fn list(
    State(console): State<Console>,
    Path(project): Path<String>,
    Query(filter): Query<StateFilter>,
    headers: HeaderMap,
) -> ConsoleResult<Response> {
    let me = console.signed_in(&headers).await?;
    let (project, _) = role_on(&console, &me, &project).await?;
    let wanted = filter.state.as_deref().unwrap_or("open");
    let state = match wanted {
        "all" => None,
        s => Some(
            s.parse::<CrState>()
                .map_err(|e| DomainError::Invalid(e.to_string()))?,
        ),
    };
    let page = console
        .inner
        .change_requests
        .list(
            &me.caller(Action::ViewChangeRequests)?,
            ListRequest {
                project: project.id.clone(),
                state,
                page_size: LIST_PAGE,
                page_token: String::new(),
            },
        )
        .await?;
    let base = format!("/projects/{}/change-requests", url_segment(&project.name));
    let mut body = format!(
        "<p class=\"crumbs\"><a href=\"/projects/{}\">{}</a> / change requests</p><h1>Change requests</h1><nav class=\"tabs\">",
        url_segment(&project.name),
        esc(&project.name)
    );
    for s in ["open", "merged", "closed", "all"] {
        let class = if s == wanted { " class=\"active\"" } else { "" };
        let _ = write!(body, "<a href=\"{base}?state={s}\"{class}>{s}</a>");
    }
    body.push_str("</nav>");
    if page.change_requests.is_empty() {
        let _ = write!(body, "<p class=\"empty\">No {wanted} change requests.</p>");
    } else {
        body.push_str("<ul class=\"cards\">");
        for cr in &page.change_requests {
            let _ = write!(
                body,
                "<li><a href=\"{}\">#{} {}</a><span class=\"badge cr-{}\">{}</span><span class=\"muted\"><code>{}</code> → <code>{}</code> · updated {}</span></li>",
                cr_path(&project.name, cr.number),
                cr.number,
                esc(&cr.title),
                cr.state.as_str(),
                cr.state.as_str(),
                esc(&cr.head_branch),
                esc(&cr.base_branch),
                time(cr.updated_ms)
            );
        }
        body.push_str("</ul>");
    }
    Ok(layout::page("Change requests", Some(&me.chrome()), &body).into_response())
}

pub async fn page(
    State(console): State<Console>,
    Path((project, number)): Path<(String, u64)>,
    headers: HeaderMap,
) -> ConsoleResult<Response> {
    let me = console.signed_in(&headers).await?;
    render(&console, &me, &project, number, None).await
}

/// The change request's page, with `notice` (what a refused action said) on top.
async fn render(
    console: &Console,
    me: &SignedIn,
    project: &str,
    number: u64,
    notice: Option<&DomainError>,
) -> ConsoleResult<Response> {
    let (project, role) = role_on(console, me, project).await?;
    let crs = &console.inner.change_requests;
    let caller = me.caller(Action::ViewChangeRequests)?;
    let detail = crs.detail(&caller, &project.id, number).await?;
    let diff = crs.diff(&caller, &project.id, number).await?;
    let cr = &detail.change_request;
    let path = cr_path(&project.name, cr.number);
    let state = cr.state.as_str();
    let mut body = format!(
        "<p class=\"crumbs\"><a href=\"/projects/{p}\">{pn}</a> / <a href=\"/projects/{p}/change-requests\">change requests</a></p>\
         <h1>#{} {} <span id=\"cr-state\" class=\"badge cr-{state}\">{state}</span></h1>\
         <p class=\"muted\"><code>{}</code> → <code>{}</code> · {} ahead, {} behind · opened {}</p>",
        cr.number,
        esc(&cr.title),
        esc(&cr.head_branch),
        esc(&cr.base_branch),
        detail.ahead_behind.ahead,
        detail.ahead_behind.behind,
        time(cr.created_ms),
        p = url_segment(&project.name),
        pn = esc(&project.name),
    );
    if let Some(e) = notice {
        let _ = write!(
            body,
            "<p class=\"notice error\" id=\"notice\">{}</p>",
            esc(&e.to_string())
        );
    }
    if !cr.body.is_empty() {
        let _ = write!(body, "<p class=\"cr-body\">{}</p>", esc(&cr.body));
    }
    if let Some(session) = &cr.session_id {
        let _ = write!(
            body,
            "<p>From <a href=\"{}\">session <code>{}</code></a></p>",
            super::sessions::session_path(&project.name, session),
            esc(&layout::short(session))
        );
    }
    if cr.state == CrState::Merged {
        let _ = write!(
            body,
            "<p class=\"notice good\">Merged as <code>{}</code></p>",
            esc(&cr.merge_commit)
        );
    } else if cr.state == CrState::Open && !detail.mergeable {
        body.push_str("<div class=\"notice error\" id=\"conflicts\"><p>This change request cannot be merged.</p>");
        if !detail.conflicting_paths.is_empty() {
            body.push_str("<p>Conflicts in:</p><ul>");
            for p in &detail.conflicting_paths {
                let _ = write!(body, "<li><code>{}</code></li>", esc(p));
            }
            body.push_str("</ul>");
        }
        body.push_str("</div>");
    }
    let mut actions = String::new();
    if cr.state == CrState::Open && may(role, Action::MergeChangeRequest) {
        actions.push_str(&button_form(
            &format!("{path}/merge"),
            &me.csrf,
            "Merge",
            "primary",
        ));
    }
    if may(role, Action::OpenOrCloseChangeRequest) {
        match cr.state {
            CrState::Open => actions.push_str(&button_form(
                &format!("{path}/close"),
                &me.csrf,
                "Close",
                "",
            )),
            CrState::Closed => actions.push_str(&button_form(
                &format!("{path}/reopen"),
                &me.csrf,
                "Reopen",
                "",
            )),
            CrState::Merged => {}
        }
    }
    let _ = write!(body, "<div class=\"actions\">{actions}</div>");
    body.push_str(&files(&detail.files));
    body.push_str(&unified(&diff.diff));
    let status = notice.map_or(axum::http::StatusCode::OK, status_of);
    Ok((
        status,
        layout::page(
            &format!("#{} {}", cr.number, cr.title),
            Some(&me.chrome()),
            &body,
        ),
    )
        .into_response())
}

fn files(files: &[crate::changes::FileChange]) -> String {
    let totals = crate::changes::DiffTotals::of(files);
    let mut html = format!(
        "<h2>{} files changed <span class=\"add\">+{}</span> <span class=\"del\">−{}</span></h2><ul class=\"files\">",
        totals.files, totals.insertions, totals.deletions
    );
    for f in files {
        let name = match (&f.old_path, f.status) {
            (Some(old), FileStatus::Renamed | FileStatus::Copied) => {
                format!("<code>{}</code> → <code>{}</code>", esc(old), esc(&f.path))
            }
            _ => format!("<code>{}</code>", esc(&f.path)),
        };
        let stats = if f.binary {
            "<span class=\"muted\">binary</span>".to_string()
        } else {
            format!(
                "<span class=\"add\">+{}</span> <span class=\"del\">−{}</span>",
                f.insertions, f.deletions
            )
        };
        let _ = write!(
            html,
            "<li><span class=\"letter s-{}\">{}</span> {name} {stats}</li>",
            f.status.letter(),
            f.status.letter()
        );
    }
    html.push_str("</ul>");
    html
}

/// The unified diff with each line classed by its role (file header, hunk, added, removed,
/// context), not by language: syntax-neutral.
fn unified(diff: &str) -> String {
    let mut html = String::from("<div class=\"scroll\"><pre class=\"diff\">");
    let mut in_header = false;
    for (shown, line) in diff.lines().enumerate() {
        if shown == DIFF_LINES {
            let rest = diff.lines().count() - DIFF_LINES;
            let _ = write!(
                html,
                "<span class=\"meta\">… {rest} more lines not shown</span>"
            );
            break;
        }
        if line.starts_with("diff --git ") {
            in_header = true;
        } else if line.starts_with("@@") {
            in_header = false;
        }
        let class = if line.starts_with("diff --git ") {
            "file"
        } else if in_header {
            "meta"
        } else if line.starts_with("@@") {
            "hunk"
        } else if line.starts_with('+') {
            "add"
        } else if line.starts_with('-') {
            "del"
        } else {
            "ctx"
        };
        // One block per line: the line break is the block's, not a newline in the `<pre>`.
        let _ = write!(html, "<span class=\"{class}\">{}</span>", esc(line));
    }
    html.push_str("</pre></div>");
    html
}

/// A state change asked for by a button: `merge`, `close` or `reopen`. A refusal the person
/// can act on (a conflict, a state that moved) shows the change request again with the
/// reason; anything else is an error page.
pub async fn change_state(
    State(console): State<Console>,
    Path((project, number, verb)): Path<(String, u64, String)>,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> ConsoleResult<Response> {
    let me = console.posted(&headers, &peer, &form.csrf).await?;
    let crs = &console.inner.change_requests;
    let done = match verb.as_str() {
        "merge" => {
            crs.merge(&me.caller(Action::MergeChangeRequest)?, &project, number)
                .await
        }
        "close" => {
            crs.close(
                &me.caller(Action::OpenOrCloseChangeRequest)?,
                &project,
                number,
            )
            .await
        }
        "reopen" => {
            crs.reopen(
                &me.caller(Action::OpenOrCloseChangeRequest)?,
                &project,
                number,
            )
            .await
        }
        other => {
            return Err(DomainError::NotFound(format!(
                "no change request action {other:?}; merge, close or reopen"
            ))
            .into());
        }
    };
    match done {
        Ok(cr) => {
            let (project, _) = role_on(&console, &me, &project).await?;
            Ok(Redirect::to(&cr_path(&project.name, cr.number)).into_response())
        }
        Err(e @ (DomainError::Precondition(_) | DomainError::Aborted(_))) => {
            render(&console, &me, &project, number, Some(&e)).await
        }
        Err(e) => Err(ConsoleError::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lines_are_classed_by_role() {
        let html = unified(
            "diff --git a/x b/y\nsimilarity index 90%\nrename from x\nrename to y\n--- a/x\n+++ b/y\n@@ -1 +1 @@\n-old <\n+new\n same\nBinary files a/p.png and b/p.png differ\n",
        );
        assert!(html.contains("<span class=\"file\">diff --git a/x b/y</span>"));
        assert!(
            html.contains("<span class=\"meta\">+++ b/y</span>"),
            "{html}"
        );
        assert!(html.contains("<span class=\"hunk\">@@ -1 +1 @@</span>"));
        assert!(html.contains("<span class=\"del\">-old &lt;</span>"));
        assert!(html.contains("<span class=\"add\">+new</span>"));
        assert!(html.contains("<span class=\"ctx\"> same</span>"));
    }

    #[test]
    fn renames_and_binaries_show_in_the_file_list() {
        let html = files(&[
            crate::changes::FileChange {
                path: "new.rs".into(),
                old_path: Some("old.rs".into()),
                status: FileStatus::Renamed,
                insertions: 1,
                deletions: 0,
                binary: false,
            },
            crate::changes::FileChange {
                path: "logo.png".into(),
                old_path: None,
                status: FileStatus::Added,
                insertions: 0,
                deletions: 0,
                binary: true,
            },
        ]);
        assert!(
            html.contains("<code>old.rs</code> → <code>new.rs</code>"),
            "{html}"
        );
        assert!(html.contains("binary"));
        assert!(html.starts_with("<h2>2 files changed"));
    }
}
