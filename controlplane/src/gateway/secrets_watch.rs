//! `WatchSecrets`: the project's complete secret set at start and after every change, only to
//! that project's live session agents.

use super::{Gateway, secrets_topic};
use crate::ca::SessionIdentity;
use kortix_proto::v1::SecretsUpdate;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

/// Re-check the version this often even without a wake-up (changes made on another replica).
const POLL: Duration = Duration::from_secs(2);

impl Gateway {
    pub(super) async fn do_watch_secrets(
        &self,
        who: SessionIdentity,
    ) -> Result<tokio_stream::wrappers::ReceiverStream<Result<SecretsUpdate, Status>>, Status> {
        let store = self.sessions.store().clone();
        let session = store
            .get_session(&who.session_id)
            .await
            .map_err(|e| Status::not_found(e.to_string()))?;
        if session.status.is_terminal() {
            return Err(Status::failed_precondition(format!(
                "session {} has ended",
                session.id
            )));
        }
        let project_id = session.project_id.clone();
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            let mut wake = this.sessions.hub().subscribe(&secrets_topic(&project_id));
            let closed = this.sessions.hub().closed();
            tokio::pin!(closed);
            let mut sent: Option<i64> = None;
            loop {
                match this.current_secrets(&project_id, sent).await {
                    Ok(Some(update)) => {
                        sent = Some(update.version as i64);
                        if tx.send(Ok(update)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
                match this.sessions.store().get_session(&session.id).await {
                    Ok(s) if !s.status.is_terminal() => {}
                    _ => return,
                }
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = tx.closed() => return,
                    _ = &mut closed => {
                        let _ = tx.send(Err(Status::unavailable("control plane shutting down; watch again"))).await;
                        return;
                    }
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// The project's decrypted secrets, unless the version is still `known`.
    async fn current_secrets(
        &self,
        project_id: &str,
        known: Option<i64>,
    ) -> Result<Option<SecretsUpdate>, Status> {
        let store = self.sessions.store();
        let version = store
            .secrets_version(project_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if known == Some(version) {
            return Ok(None);
        }
        let snapshot = store
            .load_secrets(project_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut secrets = HashMap::with_capacity(snapshot.secrets.len());
        for row in &snapshot.secrets {
            let value = self
                .master_key
                .open(project_id, &row.name, &row.nonce, &row.ciphertext)
                .map_err(|e| Status::data_loss(format!("secret {}: {e}", row.name)))?;
            secrets.insert(row.name.clone(), value.expose().to_string());
        }
        Ok(Some(SecretsUpdate {
            secrets,
            version: snapshot.version.max(0) as u64,
        }))
    }
}
