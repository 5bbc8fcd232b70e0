//! A project's Slack app: its signing secret and bot token, sealed under the master key and
//! bound to the project (never project secrets: nothing of them reaches a sandbox).

use super::Slack;
use crate::auth::Caller;
use crate::error::{DomainError, DomainResult};
use crate::secrets::SecretValue;
use crate::store::{LiveSlackThread, Project, SlackBinding};

/// Longest signing secret or bot token accepted.
const MAX_CREDENTIAL_BYTES: usize = 512;
/// Threads listed per binding.
const LIST_THREADS: u32 = 200;

/// The decrypted credentials of a binding.
pub struct Credentials {
    pub signing_secret: SecretValue,
    pub bot_token: SecretValue,
}

/// What `connect` answers: where Slack must send its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub project: String,
    pub request_url: String,
    pub interactivity_url: String,
}

/// A binding and its live threads, for `kortix channels ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingView {
    pub project: String,
    pub kind: &'static str,
    pub request_url: String,
    pub interactivity_url: String,
    pub connected_by: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub threads: Vec<LiveSlackThread>,
}

// The sealing context: a project id no project has, so a binding's ciphertext cannot be
// passed off as a project secret (the associated data binds project and name).
fn seal_scope(project_id: &str) -> String {
    format!("slack-binding:{project_id}")
}
const SIGNING_NAME: &str = "SLACK_SIGNING_SECRET";
const TOKEN_NAME: &str = "SLACK_BOT_TOKEN";

fn check_credentials(signing_secret: &str, bot_token: &str) -> DomainResult<()> {
    for (what, value) in [("signing secret", signing_secret), ("bot token", bot_token)] {
        if value.is_empty() {
            return Err(DomainError::Invalid(format!("the Slack {what} is empty")));
        }
        if value.len() > MAX_CREDENTIAL_BYTES {
            return Err(DomainError::Invalid(format!(
                "the Slack {what} is longer than {MAX_CREDENTIAL_BYTES} bytes"
            )));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(DomainError::Invalid(format!(
                "the Slack {what} contains whitespace"
            )));
        }
    }
    if !bot_token.starts_with("xoxb-") {
        return Err(DomainError::Invalid(
            "the bot token must be a Slack bot token (xoxb-…): the first line is the signing secret, the second the bot token".into(),
        ));
    }
    if signing_secret.starts_with("xox") {
        return Err(DomainError::Invalid(
            "the signing secret looks like a Slack token: the first line is the signing secret, the second the bot token".into(),
        ));
    }
    Ok(())
}

impl Slack {
    /// Binds the caller's project to a Slack app (replacing an earlier binding).
    pub async fn connect(
        &self,
        caller: &Caller,
        project: &str,
        signing_secret: &str,
        bot_token: &str,
    ) -> DomainResult<Connected> {
        check_credentials(signing_secret, bot_token)?;
        let project = crate::permissions::project(self.store(), caller, project).await?;
        let scope = seal_scope(&project.id);
        let seal = |name: &str, value: &str| {
            self.inner
                .key
                .seal(&scope, name, value)
                .map_err(|e| DomainError::Internal(e.to_string()))
        };
        let signing = seal(SIGNING_NAME, signing_secret)?;
        let token = seal(TOKEN_NAME, bot_token)?;
        self.store()
            .put_slack_binding(&SlackBinding {
                project_id: project.id.clone(),
                signing_nonce: signing.nonce,
                signing_sealed: signing.ciphertext,
                token_nonce: token.nonce,
                token_sealed: token.ciphertext,
                connected_by: format!("person:{}", caller.person_id),
                created_ms: 0,
                updated_ms: 0,
            })
            .await?;
        tracing::info!(project = %project.name, "project bound to a Slack app");
        crate::audit::record(
            self.store(),
            caller,
            crate::audit::Event::in_project("channel.slack.connect", &project, "slack"),
        )
        .await;
        Ok(Connected {
            request_url: self.request_url(&project.name),
            interactivity_url: self.interactivity_url(&project.name),
            project: project.name,
        })
    }

    /// The caller's project's bindings (none or one) with their live threads.
    pub async fn list(&self, caller: &Caller, project: &str) -> DomainResult<Vec<BindingView>> {
        let project = crate::permissions::project(self.store(), caller, project).await?;
        let Some(binding) = self.store().slack_binding(&project.id).await? else {
            return Ok(Vec::new());
        };
        let threads = self
            .store()
            .live_slack_threads(&project.id, None, LIST_THREADS)
            .await?;
        Ok(vec![BindingView {
            kind: "slack",
            request_url: self.request_url(&project.name),
            interactivity_url: self.interactivity_url(&project.name),
            connected_by: binding.connected_by,
            created_ms: binding.created_ms,
            updated_ms: binding.updated_ms,
            threads,
            project: project.name,
        }])
    }

    /// The project's decrypted credentials; `None` when it is not bound.
    pub(crate) async fn credentials(&self, project: &Project) -> DomainResult<Option<Credentials>> {
        let Some(b) = self.store().slack_binding(&project.id).await? else {
            return Ok(None);
        };
        Ok(Some(self.open(&b)?))
    }

    /// The bot token of project `project_id` (for outbound calls).
    pub(crate) async fn bot_token(&self, project_id: &str) -> DomainResult<Option<SecretValue>> {
        let Some(b) = self.store().slack_binding(project_id).await? else {
            return Ok(None);
        };
        Ok(Some(self.open(&b)?.bot_token))
    }

    fn open(&self, b: &SlackBinding) -> DomainResult<Credentials> {
        let scope = seal_scope(&b.project_id);
        let open = |name: &str, nonce: &[u8], sealed: &[u8]| {
            self.inner
                .key
                .open(&scope, name, nonce, sealed)
                .map_err(|e| DomainError::Internal(e.to_string()))
        };
        Ok(Credentials {
            signing_secret: open(SIGNING_NAME, &b.signing_nonce, &b.signing_sealed)?,
            bot_token: open(TOKEN_NAME, &b.token_nonce, &b.token_sealed)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_checked() {
        check_credentials("8f742231b10e8888abcd99yyyzzz85a5", "xoxb-1-2-abc").unwrap();
        for (secret, token, says) in [
            ("", "xoxb-1", "signing secret is empty"),
            ("s", "", "bot token is empty"),
            ("s", "xoxp-1", "must be a Slack bot token"),
            ("xoxb-1", "xoxb-2", "looks like a Slack token"),
            ("a b", "xoxb-1", "contains whitespace"),
        ] {
            let e = check_credentials(secret, token).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        let long = "x".repeat(MAX_CREDENTIAL_BYTES + 1);
        assert!(check_credentials(&long, "xoxb-1").is_err());
    }
}
