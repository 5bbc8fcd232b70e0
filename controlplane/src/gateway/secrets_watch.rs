//! `WatchSecrets`: the project's complete secret set at start and after every change, only to
//! that project's live session agents. Loading and decrypting is [`ProjectSecrets`]'s.
//!
//! A change wakes the watch at once: on this replica through the hub, on the others through
//! the hub's wake-ups over PostgreSQL (`kortix_wake`; a lost listener connection wakes every
//! watcher to re-check). [`SAFETY_RECHECK`] only covers a wake-up lost some other way.
//!
//! [`ProjectSecrets`]: crate::secrets::ProjectSecrets

use super::Gateway;
use crate::ca::SessionIdentity;
use kortix_proto::v1::SecretsUpdate;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

/// Re-check the version this often even without a wake-up.
const SAFETY_RECHECK: Duration = Duration::from_secs(30);

impl Gateway {
    pub(super) async fn do_watch_secrets(
        &self,
        who: SessionIdentity,
    ) -> Result<tokio_stream::wrappers::ReceiverStream<Result<SecretsUpdate, Status>>, Status> {
        let session = self.live_session(&who.session_id).await?;
        let project_id = session.project_id.clone();
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            let mut wake = this.secrets.watch(&project_id);
            let closed = this.sessions.hub().closed();
            tokio::pin!(closed);
            let mut sent: Option<i64> = None;
            loop {
                match this.secrets.load_if_changed(&project_id, sent).await {
                    Ok(Some(set)) => {
                        sent = Some(set.version);
                        let update = SecretsUpdate {
                            secrets: set
                                .values
                                .iter()
                                .map(|(name, value)| (name.clone(), value.expose().to_string()))
                                .collect(),
                            version: set.version.max(0) as u64,
                        };
                        if tx.send(Ok(update)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
                match this.sessions.store().get_session(&session.id).await {
                    Ok(s) if !s.status.is_terminal() => {}
                    _ => return,
                }
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(SAFETY_RECHECK) => {}
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
}
