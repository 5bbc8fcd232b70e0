//! A project's connector approvals on its overview, and deciding them: Approve, or Deny with
//! a reason, through the same domain calls as `kortix approvals approve/deny`
//! ([`crate::connectors::Connectors::approve`] and `deny`, which check
//! [`Action::DecideApproval`] on the approval's own project and audit the decision). The
//! buttons show only to a role that may decide; a decision posted anyway by one that may not
//! is refused with 403. Recent decisions stay listed, so the page shows what was decided.

use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Console;
use super::auth::{Peer, SignedIn};
use super::error::ConsoleResult;
use super::layout::{self, csrf_field, esc, time, url_segment};
use super::projects::{may, table};
use crate::error::DomainError;
use crate::permissions::{Action, ProjectRole};
use crate::store::{Approval, Project};

/// Decided approvals shown under the pending ones, newest first.
const DECIDED_SHOWN: usize = 10;

/// Where an approval's buttons post.
fn decide_path(project: &str, id: &str, verb: &str) -> String {
    format!(
        "/projects/{}/approvals/{}/{verb}",
        url_segment(project),
        url_segment(id)
    )
}

/// The overview's section: pending approvals (with Approve and Deny for a role that may
/// decide), then the latest decisions.
pub async fn section(
    console: &Console,
    me: &SignedIn,
    project: &Project,
    role: ProjectRole,
) -> ConsoleResult<String> {
    let caller = me.caller(Action::ViewConnectors)?;
    let all = console
        .inner
        .connectors
        .list_approvals(&caller, &project.id, "")
        .await?;
    let decides = may(role, Action::DecideApproval);
    let (pending, decided): (Vec<&Approval>, Vec<&Approval>) = all
        .iter()
        .map(|(a, _)| a)
        .partition(|a| a.state == "pending");
    let mut head = vec!["Tool", "Session", "Arguments", "Expires"];
    if decides {
        head.push("Decide");
    }
    let rows = pending
        .iter()
        .map(|a| {
            let expires = if a.expires_ms > 0 {
                time(a.expires_ms)
            } else {
                "when decided".into()
            };
            let mut row = format!(
                "<tr id=\"approval-{}\"><td>{}.{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>",
                esc(&a.id),
                esc(&a.connector),
                esc(&a.tool),
                esc(&layout::short(&a.session_id)),
                esc(&a.args_preview),
                esc(&expires)
            );
            if decides {
                row.push_str(&buttons(&project.name, a, &me.csrf));
            }
            row.push_str("</tr>");
            row
        })
        .collect();
    let mut html = table(&head, rows, "No approvals waiting.");
    if !decided.is_empty() {
        html.push_str("<h3>Recently decided</h3>");
        let rows = decided
            .iter()
            .take(DECIDED_SHOWN)
            .map(|a| {
                let reason = if a.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", esc(&a.reason))
                };
                format!(
                    "<tr id=\"approval-{}\"><td>{}.{}</td><td><span class=\"badge approval-{}\">{}</span>{reason}</td><td>{}</td><td>{}</td></tr>",
                    esc(&a.id),
                    esc(&a.connector),
                    esc(&a.tool),
                    esc(&a.state),
                    esc(&a.state),
                    esc(&a.decided_by),
                    time(a.decided_ms)
                )
            })
            .collect();
        html.push_str(&table(&["Tool", "Decision", "By", "When"], rows, ""));
    }
    Ok(html)
}

/// Approve, and Deny with an optional reason, for one pending approval.
fn buttons(project: &str, a: &Approval, csrf: &str) -> String {
    let mut html = String::from("<td class=\"decide\">");
    let _ = write!(
        html,
        "<form method=\"post\" action=\"{}\" class=\"inline\">{}<button type=\"submit\">Approve</button></form>\
         <form method=\"post\" action=\"{}\" class=\"inline\">{}\
         <label for=\"reason-{id}\" class=\"sr\">Reason for denying</label>\
         <input id=\"reason-{id}\" name=\"reason\" maxlength=\"1024\" placeholder=\"Reason (optional)\">\
         <button type=\"submit\" class=\"danger\">Deny</button></form>",
        esc(&decide_path(project, &a.id, "approve")),
        csrf_field(csrf),
        esc(&decide_path(project, &a.id, "deny")),
        csrf_field(csrf),
        id = esc(&a.id),
    );
    html.push_str("</td>");
    html
}

#[derive(Deserialize)]
pub struct DecideForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    /// Why a call is denied (optional).
    #[serde(default)]
    reason: String,
}

/// `approve` or `deny` an approval, then back to its project's overview, which lists the
/// decision. The approval's own project decides the permission (as in the API); the project
/// in the path only names where the button was.
pub async fn decide(
    State(console): State<Console>,
    Path((_project, id, verb)): Path<(String, String, String)>,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<DecideForm>,
) -> ConsoleResult<Response> {
    let me = console.posted(&headers, &peer, &form.csrf).await?;
    let caller = me.caller(Action::DecideApproval)?;
    let connectors = &console.inner.connectors;
    let (a, project) = match verb.as_str() {
        "approve" => connectors.approve(&caller, &id).await?,
        "deny" => connectors.deny(&caller, &id, &form.reason).await?,
        other => {
            return Err(DomainError::NotFound(format!(
                "no approval action {other:?}; approve or deny"
            ))
            .into());
        }
    };
    let to = format!(
        "/projects/{}#approval-{}",
        url_segment(&project),
        url_segment(&a.id)
    );
    Ok(Redirect::to(&to).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_post_to_the_approval_with_the_csrf_token() {
        let a = Approval {
            id: "a<1".into(),
            project_id: "p".into(),
            session_id: "s".into(),
            connector: "pets".into(),
            tool: "addPet".into(),
            digest: String::new(),
            state: "pending".into(),
            reason: String::new(),
            args_preview: String::new(),
            requested_ms: 0,
            decided_ms: 0,
            decided_by: String::new(),
            expires_ms: 0,
        };
        let html = buttons("my app", &a, "tok");
        assert!(
            html.contains("action=\"/projects/my%20app/approvals/a%3C1/approve\""),
            "{html}"
        );
        assert!(html.contains("/approvals/a%3C1/deny\""), "{html}");
        assert_eq!(html.matches("name=\"_csrf\" value=\"tok\"").count(), 2);
        assert!(html.contains("name=\"reason\""));
    }
}
