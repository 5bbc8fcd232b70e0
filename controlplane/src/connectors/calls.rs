//! The log of connector calls: one row per call whatever became of it (written off the call
//! path by [`super::call_log`]), counted in the metrics. The same facts go into the session's records through the agent (the response's
//! `call_record`), so the stream and the log agree.

use kortix_proto::v1::ConnectorCallRecord;

use super::Connectors;
use super::broker::now;
use crate::auth::Caller;
use crate::error::{DomainResult, check_len};
use crate::metrics::{OutcomeLabel, metrics};
use crate::store::ConnectorCallRow;

impl Connectors {
    /// Logs a call: counted now, its row queued for the call log's writer. A failed write is
    /// logged and does not undo or fail the call: the call already happened upstream.
    pub(super) async fn log_call(
        &self,
        project_id: &str,
        session_id: &str,
        r: &ConnectorCallRecord,
    ) {
        metrics()
            .connector_calls
            .get_or_create(&OutcomeLabel {
                outcome: r.status.clone(),
            })
            .inc();
        let row = ConnectorCallRow {
            id: 0,
            call_id: String::new(),
            at_ms: now(),
            project_id: project_id.to_owned(),
            session_id: session_id.to_owned(),
            connector: r.connector.clone(),
            tool: r.tool.clone(),
            digest: r.digest.clone(),
            status: r.status.clone(),
            duration_ms: i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
            upstream_status: i64::from(r.upstream_status),
            args_preview: r.args_preview.clone(),
            error: r.error.clone(),
        };
        self.inner.call_log.append(row).await;
    }

    /// Writes the queued rows of the call log and stops queueing (at shutdown).
    pub async fn close_call_log(self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        self.inner.call_log.close().await;
    }

    /// The project's calls, newest first, optionally of one session.
    pub async fn calls(
        &self,
        caller: &Caller,
        project: &str,
        session_id: &str,
        limit: u32,
    ) -> DomainResult<Vec<ConnectorCallRow>> {
        check_len("the session id", session_id, 64)?;
        let project = crate::permissions::project(&self.inner.store, caller, project).await?;
        self.inner.call_log.flush().await;
        Ok(self
            .inner
            .store
            .list_connector_calls(&project.id, session_id, limit)
            .await?)
    }
}
