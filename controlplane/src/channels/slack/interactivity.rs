//! The interactivity URL's requests, form-encoded: a slash command (`command=/kortix&…`) or
//! an interaction (`payload=<JSON>`: `block_actions` for button clicks).
//!
//! Button clicks are dispatched by their `action_id`'s feature prefix (`<feature>:<rest>`,
//! see [`feature`]) in [`Slack::on_action`]; a click no feature handles is answered to its
//! user only. Connector approvals (`approval:approve|deny`, the value the approval id, see
//! [`super::approvals`]) are the feature with buttons.

use serde::Deserialize;
use serde_json::Value;

use super::web::body;
use super::{Slack, approvals};
use crate::error::DomainResult;
use crate::store::Project;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Command(super::slash::Command),
    Actions(BlockActions),
    /// An interaction type the bot has no use for (`view_submission`, shortcuts, …).
    Other(String),
}

/// A `block_actions` payload: who clicked what where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockActions {
    pub user: String,
    pub channel: Option<String>,
    pub thread_ts: Option<String>,
    /// The message whose button was clicked.
    pub message_ts: Option<String>,
    /// `(action_id, value)` of each action.
    pub actions: Vec<(String, String)>,
}

/// The feature an `action_id` belongs to: its part before the first `:`.
pub fn feature(action_id: &str) -> &str {
    action_id.split_once(':').map_or(action_id, |(f, _)| f)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InteractionError {
    #[error("the body is not a form: {0}")]
    NotAForm(String),
    #[error("the interaction payload is not JSON: {0}")]
    BadPayload(String),
    #[error("neither a slash command nor an interaction payload")]
    Unknown,
    #[error("the slash command has no {0}")]
    Missing(&'static str),
}

#[derive(Deserialize)]
struct Form {
    payload: Option<String>,
    command: Option<String>,
    text: Option<String>,
    user_id: Option<String>,
    channel_id: Option<String>,
    thread_ts: Option<String>,
}

pub fn parse(body: &[u8]) -> Result<Request, InteractionError> {
    let form: Form = serde_urlencoded::from_bytes(body)
        .map_err(|e| InteractionError::NotAForm(e.to_string()))?;
    if let Some(payload) = form.payload {
        let v: Value = serde_json::from_str(&payload)
            .map_err(|e| InteractionError::BadPayload(e.to_string()))?;
        let kind = v["type"].as_str().unwrap_or_default();
        if kind != "block_actions" {
            return Ok(Request::Other(kind.to_string()));
        }
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        return Ok(Request::Actions(BlockActions {
            user: text(&v["user"]["id"]).unwrap_or_default(),
            channel: text(&v["channel"]["id"]).or_else(|| text(&v["container"]["channel_id"])),
            thread_ts: text(&v["container"]["thread_ts"])
                .or_else(|| text(&v["message"]["thread_ts"])),
            message_ts: text(&v["container"]["message_ts"]).or_else(|| text(&v["message"]["ts"])),
            actions: v["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    (
                        text(&a["action_id"]).unwrap_or_default(),
                        text(&a["value"]).unwrap_or_default(),
                    )
                })
                .collect(),
        }));
    }
    if let Some(command) = form.command {
        return Ok(Request::Command(super::slash::Command {
            command,
            text: form.text.unwrap_or_default(),
            user: form.user_id.ok_or(InteractionError::Missing("user_id"))?,
            channel: form
                .channel_id
                .ok_or(InteractionError::Missing("channel_id"))?,
            thread_ts: form.thread_ts.filter(|t| !t.is_empty()),
        }));
    }
    Err(InteractionError::Unknown)
}

impl Slack {
    /// Acts on a verified interactivity request.
    pub(crate) async fn on_interaction(
        &self,
        project: &Project,
        request: Request,
    ) -> DomainResult<()> {
        match request {
            Request::Command(command) => self.on_command(project, command).await,
            Request::Actions(actions) => {
                for (action_id, value) in &actions.actions {
                    self.on_action(project, &actions, action_id, value).await?;
                }
                Ok(())
            }
            Request::Other(kind) => {
                tracing::debug!(project = %project.name, kind = %kind, "Slack interaction ignored");
                Ok(())
            }
        }
    }
}

impl Slack {
    /// One button click, by feature; a click nothing handles is logged and its user told.
    async fn on_action(
        &self,
        project: &Project,
        actions: &BlockActions,
        action_id: &str,
        value: &str,
    ) -> DomainResult<()> {
        if feature(action_id) == approvals::FEATURE
            && let Some(decision) = approvals::Decision::of(action_id)
        {
            return self
                .on_approval_click(project, actions, decision, value)
                .await;
        }
        tracing::info!(project = %project.name, action = %action_id, feature = feature(action_id),
            value = %value, "Slack action nothing handles");
        if let Some(channel) = &actions.channel {
            self.call_now(
                &project.id,
                "chat.postEphemeral",
                body::ephemeral(
                    channel,
                    &actions.user,
                    actions.thread_ts.as_deref(),
                    "This button is not handled by this Kortix control plane.",
                ),
            )
            .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_commands_and_block_actions() {
        let cmd =
            parse(b"command=%2Fkortix&text=stop+s1&user_id=U1&channel_id=C1&team_id=T1").unwrap();
        assert_eq!(
            cmd,
            Request::Command(super::super::slash::Command {
                command: "/kortix".into(),
                text: "stop s1".into(),
                user: "U1".into(),
                channel: "C1".into(),
                thread_ts: None,
            })
        );
        let payload = serde_json::json!({
            "type": "block_actions",
            "user": {"id": "U1"},
            "channel": {"id": "C1"},
            "container": {"thread_ts": "1.0", "message_ts": "1.5"},
            "actions": [{"action_id": "approval:42", "value": "approve"}],
        });
        let form = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        let Request::Actions(actions) = parse(form.as_bytes()).unwrap() else {
            panic!("block actions");
        };
        assert_eq!(
            actions.actions,
            vec![("approval:42".into(), "approve".into())]
        );
        assert_eq!(actions.thread_ts.as_deref(), Some("1.0"));
        assert_eq!(actions.message_ts.as_deref(), Some("1.5"));
        assert_eq!(feature("approval:42"), "approval");
        assert_eq!(feature("plain"), "plain");
        let view =
            serde_urlencoded::to_string([("payload", r#"{"type":"view_submission"}"#)]).unwrap();
        assert_eq!(
            parse(view.as_bytes()).unwrap(),
            Request::Other("view_submission".into())
        );
        assert_eq!(parse(b"x=1"), Err(InteractionError::Unknown));
        assert_eq!(
            parse(b"command=%2Fkortix&channel_id=C1"),
            Err(InteractionError::Missing("user_id"))
        );
        assert!(matches!(
            parse(b"payload=%7B"),
            Err(InteractionError::BadPayload(_))
        ));
    }
}
