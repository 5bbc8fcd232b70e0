//! Slack users linked to Kortix people, self-service: `/kortix link` in Slack answers the
//! Slack user (only them) with a one-time code, and the person redeems it with their own
//! login (`kortix channels slack link CODE`). Whoever holds both the Slack session and the
//! Kortix login is the same person, so nobody can link someone else. A link lends the Slack
//! user nothing of its own: every use checks the person's rights again.

use std::time::Duration;

use super::Slack;
use crate::auth::Caller;
use crate::auth::hash_token;
use crate::error::{DomainError, DomainResult};
use crate::store::Project;

/// How long a code can be redeemed.
pub const CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// Characters of a code: no 0/O, 1/I/L, so it survives being read aloud or retyped.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
const CODE_LEN: usize = 10;

/// What redeeming a code linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    pub project: String,
    pub slack_user: String,
}

/// A fresh code, see [`code_from`].
fn new_code() -> String {
    let mut bytes = [0u8; CODE_LEN];
    // aws-lc's RNG only fails if the OS has no entropy source, where nothing can go on.
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random number generator failed");
    code_from(&bytes)
}

/// A code from random bytes, as `XXXXX-XXXXX`: each byte taken modulo the alphabet's 31
/// characters (a bias of under 1 % per character, irrelevant for a code that lives ten
/// minutes and is redeemed once).
fn code_from(bytes: &[u8; CODE_LEN]) -> String {
    let mut code = String::with_capacity(CODE_LEN + 1);
    for (i, b) in bytes.iter().enumerate() {
        if i == CODE_LEN / 2 {
            code.push('-');
        }
        code.push(ALPHABET[usize::from(*b) % ALPHABET.len()] as char);
    }
    code
}

/// A code as typed: case and the dash do not matter.
fn normalize(code: &str) -> DomainResult<String> {
    let kept: String = code
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let valid = kept.len() == CODE_LEN && kept.bytes().all(|b| ALPHABET.contains(&b));
    if !valid {
        return Err(DomainError::Invalid(
            "that is not a Slack link code: type `/kortix link` in Slack and copy the code it answers (like ABCDE-FGHJK)"
                .into(),
        ));
    }
    Ok(format!(
        "{}-{}",
        &kept[..CODE_LEN / 2],
        &kept[CODE_LEN / 2..]
    ))
}

/// What the store keeps of a code (as [`normalize`] writes it).
pub fn code_hash(code: &str) -> String {
    hash_token(&format!("slack-link:{code}"))
}

impl Slack {
    /// Gives Slack user `slack_user` a code to link themselves; the answer tells them how.
    pub(super) async fn start_link(
        &self,
        project: &Project,
        slack_user: &str,
    ) -> DomainResult<String> {
        let code = new_code();
        let expires = crate::clock::now_ms() + CODE_TTL.as_millis() as i64;
        self.store()
            .put_slack_link_code(&code_hash(&code), &project.id, slack_user, expires)
            .await?;
        Ok(format!(
            "To act as your Kortix account here (approving connector calls), run this with your own Kortix login within {} minutes:\n`kortix channels slack link {code}`",
            CODE_TTL.as_secs() / 60
        ))
    }

    /// Links the Slack user who was given `code` to the caller.
    pub async fn redeem_link(&self, caller: &Caller, code: &str) -> DomainResult<Linked> {
        let code = normalize(code)?;
        let unknown = || {
            DomainError::NotFound(
                "no such Slack link code (codes work once, for ten minutes): type `/kortix link` in Slack for a new one"
                    .into(),
            )
        };
        let hash = code_hash(&code);
        let taken = self
            .store()
            .take_slack_link_code(&hash)
            .await?
            .ok_or_else(unknown)?;
        if taken.expires_ms < crate::clock::now_ms() {
            return Err(unknown());
        }
        let project =
            match crate::permissions::project(self.store(), caller, &taken.project_id).await {
                Err(e) if e.is_not_found() => {
                    // Someone who cannot see the project learns nothing and spoils nothing: the
                    // code stays for the person it was meant for.
                    self.store()
                        .put_slack_link_code(
                            &hash,
                            &taken.project_id,
                            &taken.slack_user,
                            taken.expires_ms,
                        )
                        .await?;
                    return Err(unknown());
                }
                other => other?,
            };
        self.store()
            .put_slack_link(&project.id, &taken.slack_user, &caller.person_id)
            .await?;
        tracing::info!(project = %project.name, slack_user = %taken.slack_user,
            person = %caller.person_id, "Slack user linked");
        crate::audit::record(
            self.store(),
            caller,
            crate::audit::Event::in_project("channel.slack.link", &project, &taken.slack_user),
        )
        .await;
        Ok(Linked {
            project: project.name,
            slack_user: taken.slack_user,
        })
    }

    /// The person Slack user `slack_user` acts as in the project, if linked.
    pub(super) async fn linked_person(
        &self,
        project: &Project,
        slack_user: &str,
    ) -> DomainResult<Option<String>> {
        Ok(self
            .store()
            .slack_linked_person(&project.id, slack_user)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_readable_and_typed_loosely() {
        let code = code_from(&[0, 1, 2, 30, 31, 62, 255, 100, 7, 8]);
        assert_eq!(code.len(), CODE_LEN + 1);
        assert_eq!(&code[5..6], "-");
        assert_eq!(normalize(&code.to_lowercase()).unwrap(), code);
        assert_eq!(
            normalize(&format!(" {} ", code.replace('-', ""))).unwrap(),
            code
        );
        for bad in [
            "",
            "ABCDE",
            "ABCDE-FGHJ0",
            "ABCDE-FGHJK-L",
            "ABCDE-FGHJ#",
            "ABCDE-FGHJI",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
        let fresh = new_code();
        assert_eq!(normalize(&fresh).unwrap(), fresh);
        assert_ne!(new_code(), fresh);
        assert_ne!(code_hash(&fresh), code_hash(&new_code()));
    }
}
