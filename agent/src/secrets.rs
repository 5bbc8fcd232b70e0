//! `AgentGateway.WatchSecrets`: the project's secrets, held in memory only, handed to
//! OpenCode as environment variables and to the redactor. Every update replaces the set.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kortix_proto::v1::{SecretsUpdate, WatchSecretsRequest};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::enroll::Gateway;
use crate::records::RecordSink;

/// Secret sets above these are refused (the control plane bounds them too).
const MAX_SECRETS: usize = 1024;
const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Superseded values still redacted (they may linger in OpenCode's output until it restarts).
const MAX_REMEMBERED: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Secrets {
    pub version: u64,
    pub values: BTreeMap<String, String>,
}

/// A valid environment variable name that is not reserved for Kortix.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_');
    first_ok
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with("KORTIX_")
}

/// Checks an update; drops (and reports) entries that could not be environment variables.
pub fn accept(update: SecretsUpdate, sink: &RecordSink) -> Secrets {
    let mut values = BTreeMap::new();
    for (name, value) in update.secrets {
        if values.len() >= MAX_SECRETS {
            sink.agent(format!(
                "secrets update {} has more than {MAX_SECRETS} entries; the rest are ignored",
                update.version
            ));
            break;
        }
        if !valid_name(&name) || value.len() > MAX_VALUE_BYTES || value.contains('\0') {
            sink.agent(format!("secret {name:?} ignored: invalid name or value"));
            continue;
        }
        values.insert(name, value);
    }
    Secrets {
        version: update.version,
        values,
    }
}

/// Keeps the watch open for the life of the daemon; publishes each accepted set on `tx`
/// after the redactor knows its values.
pub async fn watch(gateway: Gateway, sink: RecordSink, tx: watch::Sender<Option<Secrets>>) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut remembered: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        let mut client = gateway.client();
        let opened = tokio::time::timeout(
            Duration::from_secs(20),
            client.watch_secrets(WatchSecretsRequest {}),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => {
                let delay = backoff.next_delay();
                if backoff.attempts() <= 3 || backoff.attempts().is_multiple_of(10) {
                    sink.agent(format!(
                        "WatchSecrets: {status}; retrying in {} ms",
                        delay.as_millis()
                    ));
                }
                tokio::time::sleep(delay).await;
                continue;
            }
            Err(_) => {
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(update)) => {
                    backoff.reset();
                    let secrets = accept(update, &sink);
                    // Old values stay redacted: they may linger in output until OpenCode restarts.
                    for (name, value) in &secrets.values {
                        if remembered.len() < MAX_REMEMBERED {
                            remembered.insert((name.clone(), value.clone()));
                        }
                    }
                    sink.set_redactions(remembered.iter().cloned().collect());
                    sink.agent(format!(
                        "secrets version {} received ({} values)",
                        secrets.version,
                        secrets.values.len()
                    ));
                    tx.send_replace(Some(secrets));
                }
                Ok(None) => {
                    sink.agent("WatchSecrets stream ended; reopening");
                    break;
                }
                Err(status) => {
                    sink.agent(format!("WatchSecrets stream failed: {status}; reopening"));
                    break;
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("API_KEY"));
        assert!(valid_name("_X1"));
        assert!(!valid_name("1X"));
        assert!(!valid_name("lower"));
        assert!(!valid_name("KORTIX_TOKEN"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"A".repeat(65)));
    }
}
