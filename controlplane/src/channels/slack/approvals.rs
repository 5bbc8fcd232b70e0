//! Connector approvals as Approve / Deny buttons in the session's thread. The follower
//! offers each pending approval once (claimed in the store); a click acts as the Slack user's
//! linked person through the same path as `kortix approvals approve|deny` (their permission,
//! the audit log, the prompt to the session), and the message then says who decided.

use kortix_proto::v1::ApprovalRecord;
use serde_json::{Value, json};

use super::Slack;
use super::interactivity::BlockActions;
use super::web::body;
use crate::auth::Caller;
use crate::error::DomainResult;
use crate::permissions::Action;
use crate::store::Project;

/// The feature prefix of the buttons' `action_id`s; the value is the approval id.
pub const FEATURE: &str = "approval";
const APPROVE: &str = "approval:approve";
const DENY: &str = "approval:deny";
/// Longest argument preview quoted in the message (Slack's section text takes 3000).
const PREVIEW_CHARS: usize = 1500;

/// What a click asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn of(action_id: &str) -> Option<Decision> {
        match action_id {
            APPROVE => Some(Decision::Approve),
            DENY => Some(Decision::Deny),
            _ => None,
        }
    }
}

fn question(a: &ApprovalRecord) -> String {
    let mut text = format!(
        "🔐 The agent wants to call *{}.{}*, which needs approval (approval `{}`).",
        a.connector, a.tool, a.approval_id
    );
    if !a.args_preview.is_empty() {
        text.push_str(&format!(
            "\n```{}```",
            kortix_timeline::cut_chars(&a.args_preview, PREVIEW_CHARS)
        ));
    }
    text
}

/// `chat.postMessage` in the thread: the question and the two buttons.
pub fn buttons_message(channel: &str, thread_ts: &str, a: &ApprovalRecord) -> Value {
    let text = question(a);
    let button = |label: &str, action_id: &str, style: &str| {
        json!({
            "type": "button",
            "text": {"type": "plain_text", "text": label},
            "action_id": action_id,
            "value": a.approval_id,
            "style": style,
        })
    };
    let mut message = body::post_message(channel, Some(thread_ts), &text);
    message["blocks"] = json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "elements": [
            button("Approve", APPROVE, "primary"),
            button("Deny", DENY, "danger"),
        ]},
    ]);
    message
}

/// `chat.update` of the buttons' message once decided: the question and who decided, no
/// buttons.
fn decided_message(channel: &str, ts: &str, question: &str, outcome: &str) -> Value {
    let text = format!("{question}\n{outcome}");
    let mut message = body::update(channel, ts, &text);
    message["blocks"] = json!([{"type": "section", "text": {"type": "mrkdwn", "text": text}}]);
    message
}

impl Slack {
    /// Offers a pending approval in the thread, once per approval.
    pub(super) async fn offer_approval(
        &self,
        project: &Project,
        channel: &str,
        thread_ts: &str,
        a: &ApprovalRecord,
    ) -> DomainResult<()> {
        if a.state != "pending"
            || !self
                .store()
                .claim_slack_approval_prompt(&project.id, &a.approval_id)
                .await?
        {
            return Ok(());
        }
        self.enqueue(
            &project.id,
            "chat.postMessage",
            &buttons_message(channel, thread_ts, a),
        )
        .await
    }

    /// An Approve or Deny click: decided as the clicker's linked person, or refused.
    pub(super) async fn on_approval_click(
        &self,
        project: &Project,
        click: &BlockActions,
        decision: Decision,
        approval_id: &str,
    ) -> DomainResult<()> {
        let tell = |text: String| async move {
            if let Some(channel) = &click.channel {
                self.call_now(
                    &project.id,
                    "chat.postEphemeral",
                    body::ephemeral(channel, &click.user, click.thread_ts.as_deref(), &text),
                )
                .await;
            }
        };
        let Some(person_id) = self.linked_person(project, &click.user).await? else {
            tell("Link your account first: type `/kortix link` here and run the command it gives you with your own Kortix login. Until then you cannot approve or deny connector calls.".into()).await;
            return Ok(());
        };
        // The approval must be this project's: a Slack app bound to one project decides
        // nothing in another, whatever the person may do there.
        match self.store().get_approval(approval_id).await {
            Ok(a) if a.project_id == project.id => {}
            Ok(_) => {
                tell(format!("Approval `{approval_id}` is not this project's.")).await;
                return Ok(());
            }
            Err(e) if e.is_not_found() => {
                tell(format!("Approval `{approval_id}` does not exist.")).await;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        let caller = Caller {
            from: format!("slack:{}", click.user),
            ..Caller::person(&person_id, Action::DecideApproval)
        };
        let reason = format!("denied from Slack by {}", click.user);
        let decided = match decision {
            Decision::Approve => self.connectors().approve(&caller, approval_id).await,
            Decision::Deny => self.connectors().deny(&caller, approval_id, &reason).await,
        };
        let (a, _) = match decided {
            Ok(decided) => decided,
            Err(e) => {
                tell(format!("Could not decide approval `{approval_id}`: {e}")).await;
                return Ok(());
            }
        };
        let person = self
            .store()
            .get_person(&person_id)
            .await
            .map(|p| p.name)
            .unwrap_or(person_id);
        let outcome = match decision {
            Decision::Approve => format!("✅ Approved by <@{}> ({person}).", click.user),
            Decision::Deny => format!("🚫 Denied by <@{}> ({person}).", click.user),
        };
        if let (Some(channel), Some(ts)) = (&click.channel, &click.message_ts) {
            let record = ApprovalRecord {
                approval_id: a.id.clone(),
                connector: a.connector.clone(),
                tool: a.tool.clone(),
                args_preview: a.args_preview.clone(),
                ..Default::default()
            };
            self.enqueue(
                &project.id,
                "chat.update",
                &decided_message(channel, ts, &question(&record), &outcome),
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_carry_the_approval_and_dispatch_back() {
        let a = ApprovalRecord {
            approval_id: "ap-1".into(),
            connector: "pets".into(),
            tool: "addPet".into(),
            state: "pending".into(),
            args_preview: r#"{"name":"fido"}"#.into(),
            ..Default::default()
        };
        let m = buttons_message("C1", "1.0", &a);
        assert_eq!(
            (m["channel"].as_str(), m["thread_ts"].as_str()),
            (Some("C1"), Some("1.0"))
        );
        assert!(m["text"].as_str().unwrap().contains("*pets.addPet*"));
        let buttons = m["blocks"][1]["elements"].as_array().unwrap();
        assert_eq!(buttons.len(), 2);
        for b in buttons {
            assert_eq!(b["value"], "ap-1");
            let id = b["action_id"].as_str().unwrap();
            assert_eq!(super::super::interactivity::feature(id), FEATURE);
            assert!(Decision::of(id).is_some());
        }
        assert_eq!(Decision::of(APPROVE), Some(Decision::Approve));
        assert_eq!(Decision::of(DENY), Some(Decision::Deny));
        assert_eq!(Decision::of("approval:other"), None);
        let done = decided_message("C1", "2.0", &question(&a), "✅ Approved by <@U1> (alice).");
        assert_eq!(done["ts"], "2.0");
        assert_eq!(
            done["blocks"].as_array().unwrap().len(),
            1,
            "no buttons left"
        );
        assert!(done["text"].as_str().unwrap().ends_with("(alice)."));
    }
}
