//! `/kortix help | sessions | stop [SESSION] | link`, answered to the person who typed it only
//! (`chat.postEphemeral`). `sessions` lists this channel's live sessions; `stop` stops the
//! session of the thread it was typed in, or the named one — only sessions started from
//! this project's Slack threads: the binding authorizes Slack users for those, nothing more.
//! `link` gives the Slack user a one-time code to link their Kortix account ([`super::links`]).

use super::Slack;
use super::web::body;
use crate::error::DomainResult;
use crate::store::Project;

/// Live sessions listed by `sessions`.
const LISTED: u32 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// As typed: `/kortix` (the app may name it differently).
    pub command: String,
    pub text: String,
    pub user: String,
    pub channel: String,
    /// Set when Slack says the command was typed in a thread.
    pub thread_ts: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subcommand {
    Help,
    Sessions,
    Stop(Option<String>),
    Link,
    Unknown(String),
}

pub fn parse(text: &str) -> Subcommand {
    let mut words = text.split_whitespace();
    match words.next() {
        None | Some("help") => Subcommand::Help,
        Some("sessions") => Subcommand::Sessions,
        Some("stop") => Subcommand::Stop(words.next().map(str::to_string)),
        Some("link") => Subcommand::Link,
        Some(other) => Subcommand::Unknown(other.to_string()),
    }
}

fn help(command: &str) -> String {
    format!(
        "*{command}* — drive this project from Slack.\n\
         • Mention me (or DM me) with a request: a session starts and answers in the thread.\n\
         • Reply in the thread to steer the same session.\n\
         • `{command} sessions` — this channel's live sessions.\n\
         • `{command} stop [SESSION]` — stop the thread's session (or the one named).\n\
         • `{command} link` — link your Kortix account, to approve connector calls here.\n\
         • `{command} help` — this help."
    )
}

impl Slack {
    pub(super) async fn on_command(&self, project: &Project, cmd: Command) -> DomainResult<()> {
        let answer = match parse(&cmd.text) {
            Subcommand::Help => help(&cmd.command),
            Subcommand::Unknown(word) => {
                format!("Unknown subcommand `{word}`.\n{}", help(&cmd.command))
            }
            Subcommand::Sessions => self.channel_sessions(project, &cmd.channel).await?,
            Subcommand::Stop(named) => self.stop_from_slack(project, &cmd, named).await?,
            Subcommand::Link => self.start_link(project, &cmd.user).await?,
        };
        self.call_now(
            &project.id,
            "chat.postEphemeral",
            body::ephemeral(&cmd.channel, &cmd.user, cmd.thread_ts.as_deref(), &answer),
        )
        .await;
        Ok(())
    }

    async fn channel_sessions(&self, project: &Project, channel: &str) -> DomainResult<String> {
        let threads = self
            .store()
            .live_slack_threads(&project.id, Some(channel), LISTED)
            .await?;
        if threads.is_empty() {
            return Ok("No live sessions in this channel.".into());
        }
        let mut text = format!("Live sessions in this channel ({}):", threads.len());
        for t in threads {
            text.push_str(&format!(
                "\n• `{}` — {} — asked by <@{}> (thread {})",
                t.session_id, t.status, t.asked_by, t.thread_ts
            ));
        }
        Ok(text)
    }

    async fn stop_from_slack(
        &self,
        project: &Project,
        cmd: &Command,
        named: Option<String>,
    ) -> DomainResult<String> {
        let thread = match (&named, &cmd.thread_ts) {
            (Some(id), _) => self
                .store()
                .slack_thread_of_session(id)
                .await?
                .filter(|t| t.project_id == project.id),
            (None, Some(ts)) => {
                self.store()
                    .slack_thread(&project.id, &cmd.channel, ts)
                    .await?
            }
            (None, None) => {
                return Ok(format!(
                    "Name the session: `{} stop SESSION` (see `{} sessions`).",
                    cmd.command, cmd.command
                ));
            }
        };
        let Some(thread) = thread.filter(|t| !t.session_id.is_empty()) else {
            return Ok(match named {
                Some(id) => {
                    format!("No session `{id}` was started from this project's Slack threads.")
                }
                None => "This thread has no session.".into(),
            });
        };
        let session = self
            .sessions()
            .stop(
                &thread.session_id,
                false,
                &format!("stopped from Slack by {}", cmd.user),
            )
            .await?;
        crate::audit::record_trigger(
            self.store(),
            &format!("slack:{}", cmd.user),
            crate::audit::Event::in_project("session.stop", project, &session.id),
        )
        .await;
        Ok(format!(
            "Stopping session `{}` ({}).",
            session.id, session.status
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands() {
        assert_eq!(parse(""), Subcommand::Help);
        assert_eq!(parse("  help "), Subcommand::Help);
        assert_eq!(parse("sessions"), Subcommand::Sessions);
        assert_eq!(parse("stop"), Subcommand::Stop(None));
        assert_eq!(parse("stop s-1 now"), Subcommand::Stop(Some("s-1".into())));
        assert_eq!(parse("link"), Subcommand::Link);
        assert_eq!(parse("deploy"), Subcommand::Unknown("deploy".into()));
        assert!(help("/kortix").contains("`/kortix stop [SESSION]`"));
    }
}
