//! Calls that need a person. A `require_approval` call does not run: it waits behind an
//! approval keyed by the call's digest. Approving lets exactly one identical call run;
//! denying, or the time of an unattended (trigger) session running out, refuses it. Either
//! way the session is told by a prompt.

use std::time::Duration;

use kortix_proto::v1::{ApprovalRecord, ConnectorCallRecord, ControlFrame, Prompt, control_frame};

use super::Connectors;
use super::broker::{Outcome, Status, now};
use crate::auth::Caller;
use crate::error::{DomainError, DomainResult, check_len};
use crate::store::Approval;

const MAX_ID: usize = 64;
const MAX_REASON: usize = 1024;
const STATES: &[&str] = &["pending", "approved", "denied", "used"];
/// How often unattended approvals are checked for expiry.
const EXPIRY_SWEEP: Duration = Duration::from_secs(10);

/// What the gate decided for one call.
pub(super) struct Gate {
    /// Set when the call must not run now.
    pub waiting: Option<Outcome>,
    /// The approval the call consumed (when it runs).
    pub used: ApprovalRecord,
}

fn record(a: &Approval) -> ApprovalRecord {
    ApprovalRecord {
        approval_id: a.id.clone(),
        connector: a.connector.clone(),
        tool: a.tool.clone(),
        digest: a.digest.clone(),
        state: a.state.clone(),
        reason: a.reason.clone(),
        args_preview: a.args_preview.clone(),
    }
}

impl Connectors {
    /// Runs the call if an approval of exactly this call is waiting to be used (and uses
    /// it); otherwise asks for one (or points at the one already asked for).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn gate(
        &self,
        project_id: &str,
        session_id: &str,
        connector: &str,
        tool: &str,
        digest: &str,
        preview: &str,
        ttl: Option<Duration>,
    ) -> DomainResult<Gate> {
        self.expire_due().await;
        let store = &self.inner.store;
        if let Some(mut a) = store.latest_approval(session_id, digest).await? {
            if a.state == "pending" {
                return Ok(waiting(&a));
            }
            // An approval lets exactly one identical call run: whoever moves it to `used`.
            if a.state == "approved"
                && store
                    .transition_approval(&a.id, "approved", "used", "", "", now())
                    .await?
            {
                a.state = "used".into();
                return Ok(Gate {
                    waiting: None,
                    used: record(&a),
                });
            }
        }
        let at = now();
        let a = Approval {
            id: crate::store::new_id(),
            project_id: project_id.to_owned(),
            session_id: session_id.to_owned(),
            connector: connector.to_owned(),
            tool: tool.to_owned(),
            digest: digest.to_owned(),
            state: "pending".into(),
            reason: String::new(),
            args_preview: preview.to_owned(),
            requested_ms: at,
            decided_ms: 0,
            decided_by: String::new(),
            expires_ms: ttl.map_or(0, |t| at + t.as_millis() as i64),
        };
        store.insert_approval(&a).await?;
        tracing::info!(session = %session_id, connector, tool, approval = %a.id, "connector call waits for approval");
        Ok(waiting(&a))
    }

    /// The project's approvals, newest first.
    pub async fn list_approvals(
        &self,
        caller: &Caller,
        project: &str,
        state: &str,
    ) -> DomainResult<Vec<(Approval, String)>> {
        if !state.is_empty() && !STATES.contains(&state) {
            return Err(DomainError::Invalid(format!(
                "unknown approval state {state:?}; one of {}",
                STATES.join(", ")
            )));
        }
        let project = crate::permissions::project(&self.inner.store, caller, project).await?;
        self.expire_due().await;
        let rows = self.inner.store.list_approvals(&project.id, state).await?;
        Ok(rows
            .into_iter()
            .map(|a| (a, project.name.clone()))
            .collect())
    }

    /// Approves a pending call; the session is told to make it again.
    pub async fn approve(&self, caller: &Caller, id: &str) -> DomainResult<(Approval, String)> {
        let (a, project) = self.decide(caller, id, "approved", "").await?;
        self.tell(
            &a,
            format!(
                "The connector call {}.{} (approval {}) was approved. Make exactly the same call again now (same connector, tool and arguments); it will run once.",
                a.connector, a.tool, a.id
            ),
        )
        .await;
        Ok((a, project))
    }

    /// Denies a pending call; the session is told why.
    pub async fn deny(
        &self,
        caller: &Caller,
        id: &str,
        reason: &str,
    ) -> DomainResult<(Approval, String)> {
        check_len("the reason", reason, MAX_REASON)?;
        let reason = if reason.trim().is_empty() {
            "no reason given"
        } else {
            reason.trim()
        };
        let (a, project) = self.decide(caller, id, "denied", reason).await?;
        self.tell(
            &a,
            format!(
                "The connector call {}.{} (approval {}) was denied: {}. Do not make it again; carry on without it.",
                a.connector, a.tool, a.id, a.reason
            ),
        )
        .await;
        Ok((a, project))
    }

    async fn decide(
        &self,
        caller: &Caller,
        id: &str,
        to: &str,
        reason: &str,
    ) -> DomainResult<(Approval, String)> {
        check_len("the approval id", id, MAX_ID)?;
        let store = &self.inner.store;
        let not_found = || DomainError::NotFound(format!("approval {id} not found"));
        let a = match store.get_approval(id).await {
            Err(e) if e.is_not_found() => return Err(not_found()),
            other => other?,
        };
        let project = match crate::permissions::project(store, caller, &a.project_id).await {
            Err(e) if e.is_not_found() => return Err(not_found()),
            other => other?,
        };
        self.expire_due().await;
        let by = format!("person:{}", caller.person_id);
        if !store
            .transition_approval(id, "pending", to, reason, &by, now())
            .await?
        {
            let current = store.get_approval(id).await?;
            return Err(DomainError::Precondition(format!(
                "approval {id} is {}; only pending approvals can be decided",
                current.state
            )));
        }
        let action = if to == "approved" {
            "connector.approve"
        } else {
            "connector.deny"
        };
        crate::audit::record(
            store,
            caller,
            crate::audit::Event::in_project(action, &project, id),
        )
        .await;
        Ok((store.get_approval(id).await?, project.name))
    }

    /// Expires unattended approvals every [`EXPIRY_SWEEP`] until `shutdown`, so a trigger's
    /// session hears about its denial even when nothing else asks.
    pub async fn run_approval_expiry(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(EXPIRY_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.expire_due().await,
                () = &mut shutdown => return,
            }
        }
    }

    /// Denies approvals whose time ran out, logs their calls as `denied` and tells their
    /// sessions. Best effort: a failure is logged and tried again on the next occasion.
    pub(super) async fn expire_due(&self) {
        match self.inner.store.expire_approvals(now()).await {
            Ok(expired) => {
                for a in expired {
                    // The call's final word in the log: it was asked for, and now it is denied.
                    let denied = ConnectorCallRecord {
                        connector: a.connector.clone(),
                        tool: a.tool.clone(),
                        digest: a.digest.clone(),
                        status: Status::Denied.as_str().into(),
                        args_preview: a.args_preview.clone(),
                        error: format!("approval {} expired: {}", a.id, a.reason),
                        approval_id: a.id.clone(),
                        ..Default::default()
                    };
                    self.log_call(&a.project_id, &a.session_id, &denied).await;
                    self.tell(
                        &a,
                        format!(
                            "The connector call {}.{} (approval {}) was denied: nobody approved it in time. Do not make it again; carry on without it.",
                            a.connector, a.tool, a.id
                        ),
                    )
                    .await;
                }
            }
            Err(e) => tracing::warn!("expiring connector approvals: {e}"),
        }
    }

    /// Sends the session a prompt (through whichever replica holds its agent); a session
    /// whose agent cannot be reached misses it (logged).
    async fn tell(&self, a: &Approval, text: String) {
        let agent = match self.inner.store.get_session(&a.session_id).await {
            Ok(s) if !s.status.is_terminal() => s.agent,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(session = %a.session_id, "approval {}: {e}", a.id);
                return;
            }
        };
        let id = crate::store::new_id();
        let frame = ControlFrame {
            frame: Some(control_frame::Frame::Prompt(Prompt {
                id: id.clone(),
                text,
                agent,
                command: None,
            })),
        };
        let sent = self
            .inner
            .sessions
            .send_command(&a.session_id, &id, frame, std::time::Duration::ZERO)
            .await;
        if let Err(e) = sent {
            tracing::warn!(session = %a.session_id, approval = %a.id, "the session was not told about its approval: {e}");
        }
    }
}

fn waiting(a: &Approval) -> Gate {
    let text = format!(
        "This call of {}.{} needs a person's approval before it runs (approval {}). Stop here and wait: do not retry it now. You will get a message when it is approved or denied; once approved, make exactly the same call again and it will run once.",
        a.connector, a.tool, a.id
    );
    Gate {
        waiting: Some(Outcome {
            status: Status::PendingApproval,
            text,
            upstream_status: 0,
            error: String::new(),
            approval: Some(record(a)),
        }),
        used: record(a),
    }
}
