//! The audit log of privileged actions: who did what to which thing, when and from where.
//!
//! Domain services call [`record`] after an action has taken effect. Writing the event can
//! fail independently of the action (the action is not undone for it): such a failure is
//! logged at error level and counted in `kortix_audit_write_failures_total`, so an operator
//! sees a gap in the log. People read an account's log through [`AuditLog::list`], which
//! needs the account role admin; nothing in the API changes or deletes an event.

use crate::auth::Caller;
use crate::error::{DomainError, DomainResult, check_len};
use crate::permissions::{self, check::MAX_PROJECT_REF};
use crate::store::{Account, AuditEvent, AuditQuery, NewAuditEvent, Project, Store};

/// What happened, for [`record`].
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// e.g. `change_request.merge`; see the README for the list.
    pub action: &'static str,
    /// The account it happened in.
    pub account_id: &'a str,
    /// The project it happened in, if any.
    pub project: Option<&'a Project>,
    /// What it was done to: a change request number, a secret's name, a person, a session.
    pub target: &'a str,
    /// Anything else worth keeping (a role, a merged commit).
    pub detail: &'a str,
}

impl<'a> Event<'a> {
    /// An event in `project` (and so in its account).
    pub fn in_project(action: &'static str, project: &'a Project, target: &'a str) -> Self {
        Event {
            action,
            account_id: &project.account_id,
            project: Some(project),
            target,
            detail: "",
        }
    }

    /// An event in an account, outside any one project.
    pub fn in_account(action: &'static str, account_id: &'a str, target: &'a str) -> Self {
        Event {
            action,
            account_id,
            project: None,
            target,
            detail: "",
        }
    }

    pub fn with_detail(self, detail: &'a str) -> Self {
        Event { detail, ..self }
    }
}

/// Appends `event` as done by `caller`.
pub async fn record(store: &Store, caller: &Caller, event: Event<'_>) {
    let actor = format!("person:{}", caller.person_id);
    append(store, &actor, "", &caller.token_id, &caller.from, event).await;
}

/// Appends `event` as done by the trigger whose origin is `origin` (`trigger:<slug>`).
pub async fn record_trigger(store: &Store, origin: &str, event: Event<'_>) {
    let name = origin.strip_prefix("trigger:").unwrap_or(origin);
    append(store, origin, name, "", "", event).await;
}

/// Appends `event` as done by the agent of session `session_id`, from `from` (its address).
pub async fn record_agent(store: &Store, session_id: &str, from: &str, event: Event<'_>) {
    let actor = format!("agent:{session_id}");
    append(store, &actor, "", "", from, event).await;
}

/// Appends `event` as done by the control plane itself, e.g. `apps:deploy-sweep`.
pub async fn record_as(store: &Store, actor: &str, event: Event<'_>) {
    append(store, actor, "", "", "", event).await;
}

async fn append(
    store: &Store,
    actor: &str,
    actor_name: &str,
    token_id: &str,
    from: &str,
    e: Event<'_>,
) {
    let row = NewAuditEvent {
        at_ms: crate::clock::now_ms(),
        account_id: e.account_id,
        project_id: e.project.map_or("", |p| p.id.as_str()),
        project_name: e.project.map_or("", |p| p.name.as_str()),
        actor,
        actor_name,
        token_id,
        action: e.action,
        target: e.target,
        detail: e.detail,
        from_addr: from,
    };
    if let Err(err) = store.append_audit(&row).await {
        crate::metrics::metrics().audit_write_failures.inc();
        tracing::error!(
            error = %err,
            action = e.action,
            actor,
            target = e.target,
            "the audit log misses an event"
        );
    }
}

/// Most events one call returns.
pub const MAX_PAGE: u32 = 1000;

/// An account's log as people read it. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    store: Store,
}

impl AuditLog {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Events of `account` (empty: the caller's personal account), newest first, optionally
    /// only `project`'s and only those older than event `before_id`.
    pub async fn list(
        &self,
        caller: &Caller,
        account: &str,
        project: &str,
        before_id: i64,
        limit: u32,
    ) -> DomainResult<(Account, Vec<AuditEvent>)> {
        let (account, _) = permissions::account(&self.store, caller, account).await?;
        let project = if project.is_empty() {
            None
        } else {
            check_len("the project name or id", project, MAX_PROJECT_REF)?;
            let not_found = || {
                DomainError::NotFound(format!(
                    "project '{project}' not found in account '{}'",
                    account.name
                ))
            };
            // The account role checked above authorizes; the project only narrows the log.
            let found = match self.store.find_project(project).await {
                Err(e) if e.is_not_found() => return Err(not_found()),
                other => other?,
            };
            if found.account_id != account.id {
                return Err(not_found());
            }
            Some(found)
        };
        let events = self
            .store
            .list_audit(&AuditQuery {
                account_id: &account.id,
                project_id: project.as_ref().map(|p| p.id.as_str()),
                before_id: (before_id > 0).then_some(before_id),
                limit: if limit == 0 { 100 } else { limit.min(MAX_PAGE) },
            })
            .await?;
        Ok((account, events))
    }
}
