//! The agent's `Connect` stream.
//!
//! The agent says Hello; the control plane answers with the Bootstrap (always the first
//! frame), including the highest seq it has made durable so the agent resends only what is
//! missing. Record batches go to the record pipeline (group commit across sessions) without
//! waiting, up to [`MAX_INFLIGHT_BATCHES`] per stream; a per-stream acker answers each with
//! the session's contiguous durable seq, in order, once its commit is done. Duplicates from
//! resends are ignored by (session, seq). Heartbeats are answered at once and stored in
//! batches (see `sessions::heartbeats`).

use super::Gateway;
use crate::ca::SessionIdentity;
use crate::clock::now_ms;
use crate::error::DomainError;
use crate::sessions::record_pipeline::Durable;
use crate::sessions::records;
use crate::store::{Session, SessionStatus};
use kortix_proto::v1::{
    Ack, AgentFrame, Bootstrap, ControlFrame, HeartbeatAck, Hello, Record, RecordBatch,
    StateReport, agent_frame::Frame as In, control_frame::Frame as Out, record::Body,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

/// The agent must say Hello this soon after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames queued towards one agent (acks, heartbeat acks, prompts).
const OUTBOUND_QUEUE: usize = 256;
/// Record batches of one stream submitted and not yet acked. More waits (and so stops
/// reading the stream) until the oldest is durable.
pub const MAX_INFLIGHT_BATCHES: usize = 16;

/// Longest command id an agent may ack (ids are UUIDs).
const MAX_COMMAND_ID: usize = 128;

/// A submitted batch, waiting for its group commit.
struct Inflight {
    durable: Durable,
    /// The decoded records, kept for the live tail while somebody watches the session.
    records: Option<Vec<Record>>,
    /// The newest commit the batch reports, recorded as the session's head once durable.
    head: Option<String>,
    count: usize,
    received: Instant,
}

impl Gateway {
    pub(super) async fn do_connect(
        &self,
        who: SessionIdentity,
        mut inbound: Streaming<AgentFrame>,
    ) -> Result<tokio_stream::wrappers::ReceiverStream<Result<ControlFrame, Status>>, Status> {
        let session = self.live_session(&who.session_id).await?;
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 30 s")),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => return Err(Status::cancelled("stream closed before Hello")),
            Ok(Ok(Some(AgentFrame {
                frame: Some(In::Hello(hello)),
            }))) => hello,
            Ok(Ok(Some(_))) => {
                return Err(Status::invalid_argument("the first frame must be Hello"));
            }
        };
        if hello.protocol_version == 0 {
            return Err(Status::invalid_argument(
                "Hello.protocol_version is required",
            ));
        }
        let bootstrap = self.bootstrap(&session, &hello).await?;
        let (conn_id, mut control) = self
            .sessions
            .hub()
            .connect_agent(&session.id, hello.acks_commands);
        let (out, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
        out.send(Ok(ControlFrame {
            frame: Some(Out::Bootstrap(bootstrap)),
        }))
        .await
        .map_err(|_| Status::cancelled("agent went away"))?;
        // Other replicas learn that this stream holds the session now (a stale stream of
        // this agent elsewhere is let go when that replica next has a frame for it).
        if self.sessions.store().has_wake_channel()
            && let Err(e) = self
                .sessions
                .store()
                .set_agent_conn(&session.id, &self.sessions.agent_conn_key(conn_id))
                .await
        {
            tracing::warn!(session = %session.id, error = %e, "recording which stream holds the agent");
        }
        // The agent holds a certificate from its newest Enroll/Reenroll (or renewed from
        // one): the secret a Reenroll replaced is no longer needed as a fallback.
        if let Err(e) = self
            .sessions
            .store()
            .confirm_renewal_secret(&session.id)
            .await
        {
            tracing::warn!(session = %session.id, error = %e, "retiring the previous renewal secret");
        }
        // Commands not acked yet (queued while no replica held this agent, or sent to a
        // stream of it that is gone) go out now.
        {
            let (sessions, id) = (self.sessions.clone(), session.id.clone());
            tokio::spawn(async move { sessions.deliver_queued(&id).await });
        }
        tracing::info!(
            session = %session.id,
            agent_version = %hello.agent_version,
            last_assigned_seq = hello.last_assigned_seq,
            "agent connected"
        );

        let this = self.clone();
        let id: Arc<str> = session.id.clone().into();
        let closed = self.sessions.hub().closed();
        let (inflight, inflight_rx) = mpsc::channel(MAX_INFLIGHT_BATCHES);
        tokio::spawn(
            self.clone()
                .ack_durable(id.clone(), inflight_rx, out.clone()),
        );
        tokio::spawn(async move {
            tokio::pin!(closed);
            let result = loop {
                tokio::select! {
                    // The agent reconnects (to another replica, or this one after restart).
                    _ = &mut closed => break Err(Status::unavailable("control plane shutting down; reconnect")),
                    // The acker ended the stream (a batch could not be stored).
                    _ = inflight.closed() => break Ok(()),
                    frame = control.recv() => match frame {
                        Some(frame) => {
                            if out.send(Ok(frame)).await.is_err() {
                                break Ok(());
                            }
                        }
                        // A newer stream for the same session replaced this one.
                        None => break Err(Status::aborted("replaced by a newer connection from this session")),
                    },
                    msg = inbound.message() => match msg {
                        Ok(Some(frame)) => {
                            if let Err(status) = this.handle(&id, frame, &out, &inflight).await {
                                break Err(status);
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(status) => {
                            tracing::info!(session = %id, %status, "agent stream broke");
                            break Ok(());
                        }
                    },
                }
            };
            if let Err(status) = result {
                // Replaced streams and shutdown are routine; the agent reconnects.
                tracing::info!(session = %id, %status, "closing agent stream");
                let _ = out.send(Err(status)).await;
            }
            this.sessions.hub().disconnect_agent(&id, conn_id);
            if this.sessions.store().has_wake_channel() {
                let key = this.sessions.agent_conn_key(conn_id);
                if let Err(e) = this.sessions.store().clear_agent_conn(&id, &key).await {
                    tracing::debug!(session = %id, error = %e, "forgetting the agent stream");
                }
            }
            tracing::info!(session = %id, "agent disconnected");
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(out_rx))
    }

    async fn bootstrap(&self, session: &Session, _hello: &Hello) -> Result<Bootstrap, Status> {
        let project = self
            .sessions
            .store()
            .find_project(&session.project_id)
            .await
            .map_err(DomainError::from)?;
        let manifest = self
            .sessions
            .manifest(&project)
            .await
            .map_err(Status::from)?;
        let config = self.sessions.config();
        Ok(Bootstrap {
            session_id: session.id.clone(),
            project_id: project.id.clone(),
            repo_url: crate::git::clone_url(&config.public_url, &project.name),
            branch: session.id.clone(),
            default_branch: project.default_branch.clone(),
            opencode_config_dir: manifest.opencode_config_dir().to_string(),
            initial_prompt: if session.prompt_delivered {
                String::new()
            } else {
                session.prompt.clone()
            },
            agent: session.agent.clone(),
            git_author_name: "Kortix Agent".to_string(),
            git_author_email: format!("session-{}@agents.kortix.invalid", session.id),
            acked_seq: session.acked_seq.max(0) as u64,
            protocol_version: kortix_proto::PROTOCOL_VERSION,
            idle_timeout_ms: config.idle_timeout.as_millis() as u64,
            start_deadline_ms: config.start_deadline.as_millis() as u64,
            resume: self
                .sessions
                .resume_info(session)
                .await
                .map_err(Status::from)?,
        })
    }

    async fn handle(
        &self,
        id: &Arc<str>,
        frame: AgentFrame,
        out: &mpsc::Sender<Result<ControlFrame, Status>>,
        inflight: &mpsc::Sender<Inflight>,
    ) -> Result<(), Status> {
        match frame.frame {
            Some(In::Records(RecordBatch { records: batch })) => {
                let rows = records::to_rows(&batch)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                if rows.is_empty() {
                    return Ok(());
                }
                let received = Instant::now();
                let head = batch.iter().rev().find_map(|r| match &r.body {
                    Some(Body::Commit(c)) => Some(c.sha.clone()),
                    _ => None,
                });
                let count = rows.len();
                let durable = self
                    .sessions
                    .pipeline()
                    .submit(id.clone(), rows)
                    .await
                    .map_err(Status::from)?;
                let records = self.sessions.hub().is_watched(id).then_some(batch);
                inflight
                    .send(Inflight {
                        durable,
                        records,
                        head,
                        count,
                        received,
                    })
                    .await
                    .map_err(|_| Status::cancelled("agent stream closed"))
            }
            Some(In::Heartbeat(hb)) => {
                let idle_ms = hb.idle_ms.min(i64::MAX as u64) as i64;
                self.sessions.heartbeats().record(id, idle_ms, now_ms());
                crate::metrics::metrics().heartbeats.inc();
                send(out, Out::HeartbeatAck(HeartbeatAck { nonce: hb.nonce })).await
            }
            Some(In::State(report)) => {
                self.on_state(id, report).await;
                Ok(())
            }
            Some(In::CommandAck(ack)) => {
                if ack.command_id.len() > MAX_COMMAND_ID {
                    return Err(Status::invalid_argument(format!(
                        "CommandAck.command_id is longer than {MAX_COMMAND_ID} bytes"
                    )));
                }
                self.sessions.command_acked(id, &ack.command_id).await;
                Ok(())
            }
            Some(In::Hello(_)) => Err(Status::invalid_argument(
                "Hello may only be the first frame",
            )),
            // A newer agent's frame type this control plane does not know yet.
            None => Ok(()),
        }
    }

    /// Answers one stream's batches in submission order, each once its commit is durable:
    /// publishes the records to the session's viewers, then acks. A batch that could not be
    /// stored ends the stream (UNAVAILABLE: the agent keeps its records and resends them).
    async fn ack_durable(
        self,
        id: Arc<str>,
        mut inflight: mpsc::Receiver<Inflight>,
        out: mpsc::Sender<Result<ControlFrame, Status>>,
    ) {
        let mut acked_sent = 0u64;
        while let Some(batch) = inflight.recv().await {
            let acked = match batch.durable.await {
                Ok(Ok(acked)) => acked.max(0) as u64,
                Ok(Err(e)) => {
                    let status = Status::from(e);
                    tracing::warn!(session = %id, %status, "record batch not stored; ending the agent stream");
                    let _ = out.send(Err(status)).await;
                    return;
                }
                Err(_) => {
                    let _ = out
                        .send(Err(Status::unavailable(
                            "record pipeline stopped; reconnect",
                        )))
                        .await;
                    return;
                }
            };
            let hub = self.sessions.hub();
            hub.publish(&id, acked, batch.records.as_deref().unwrap_or_default());
            if let Some(head) = batch.head
                && let Err(e) = self.sessions.store().set_session_head(&id, &head).await
            {
                tracing::warn!(session = %id, error = %e, "recording head");
            }
            crate::metrics::metrics().observe_ack(batch.count, batch.received.elapsed());
            acked_sent = acked_sent.max(acked);
            // A closed stream still gets its batches stored; nobody is left to ack.
            let _ = send(&out, Out::Ack(Ack { seq: acked_sent })).await;
        }
    }

    async fn on_state(&self, id: &str, report: StateReport) {
        let status = kortix_proto::v1::SessionStatus::try_from(report.status)
            .unwrap_or(kortix_proto::v1::SessionStatus::Unspecified);
        use kortix_proto::v1::SessionStatus as P;
        let store = self.sessions.store();
        if !report.head_sha.is_empty() {
            let _ = store.set_session_head(id, &report.head_sha).await;
        }
        match (status, report.r#final) {
            (P::Running, false) => {
                match store
                    .transition_session(id, &SessionStatus::BOOTING, SessionStatus::Running, None)
                    .await
                {
                    Ok(true) => tracing::info!(session = %id, "session running"),
                    Ok(false) => {}
                    Err(e) => tracing::error!(session = %id, error = %e, "marking running"),
                }
                if let Err(e) = store.mark_prompt_delivered(id).await {
                    tracing::warn!(session = %id, error = %e, "marking prompt delivered");
                }
                self.sessions.hub().bump(id);
            }
            (P::Failed, _) => {
                let reason = if report.reason.is_empty() {
                    "agent reported failure"
                } else {
                    &report.reason
                };
                self.sessions.fail(id, reason).await;
            }
            (P::Stopped | P::Hibernated, true) => {
                let to = if status == P::Hibernated {
                    SessionStatus::Hibernated
                } else {
                    SessionStatus::Stopped
                };
                self.sessions.agent_finished(id, to, &report.reason).await;
            }
            _ => {}
        }
    }
}

async fn send(out: &mpsc::Sender<Result<ControlFrame, Status>>, frame: Out) -> Result<(), Status> {
    out.send(Ok(ControlFrame { frame: Some(frame) }))
        .await
        .map_err(|_| Status::cancelled("agent went away"))
}
