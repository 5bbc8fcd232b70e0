//! The `AgentGateway.Connect` stream: `Hello`, then the control plane's `Bootstrap`, then
//! record batches and heartbeats out, acks, prompts and stop in. Reconnects forever with
//! capped, jittered backoff while the sandbox lives, resending from the acked seq.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kortix_proto::v1::{
    AgentFrame, Bootstrap, CommandAck, CommandRef, ControlFrame, Heartbeat, Hello, Prompt,
    RecordBatch, SessionStatus, StateReport, Stop, agent_frame, control_frame,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::{Backoff, random_u64};
use crate::command_log::CommandLog;
use crate::enroll::{AGENT_VERSION, Gateway, error_chain};
use crate::opencode::Liveness;
use crate::records::{BATCH_WINDOW, MAX_BATCH_RECORDS, RecordSink};

/// What the control plane asks of the daemon.
#[derive(Debug)]
pub enum ControlEvent {
    Bootstrap(Box<Bootstrap>),
    Prompt(Prompt),
    Stop(Stop),
    /// The control plane will never take this agent again (its session has ended, its
    /// certificate is revoked or expired): the connection task has ended, and the daemon
    /// must wind the session down on its own.
    Refused(String),
}

const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// A frame the stream does not take within this long means the stream is stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Connection {
    pub gateway: Gateway,
    pub sink: RecordSink,
    pub liveness: Arc<Liveness>,
    pub heartbeat_interval: Duration,
    pub state: watch::Receiver<StateReport>,
    pub events: mpsc::Sender<ControlEvent>,
    /// The commands already applied: a resent one is acked again, not applied again.
    pub commands: CommandLog,
}

/// Asks the connection task to deliver the final state and close the stream.
pub struct ConnectionHandle {
    close: mpsc::Sender<(Instant, oneshot::Sender<bool>)>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectionHandle {
    /// Whether the connection task has ended (the control plane refused this agent for good).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Delivers the current (final) state report, half-closes the stream and waits for the
    /// control plane to end it, until `deadline`. Returns whether that completed.
    pub async fn close(self, deadline: Instant) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.close.send((deadline, reply)).await.is_err() {
            return false;
        }
        let done = tokio::time::timeout_at(deadline + Duration::from_millis(200), rx)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or(false);
        self.task.abort();
        done
    }
}

enum StreamEnd {
    /// Closed on request after the final report.
    Closed,
    Lost(String),
    /// Refused for good; reconnecting cannot help.
    Refused(String),
}

/// Whether the control plane's answer means this agent is done for, not that the control
/// plane is unwell: its session ended, or its certificate was revoked. (Store outages and
/// shutdowns come as UNAVAILABLE and are retried.)
fn refusal(status: &tonic::Status) -> Option<String> {
    use tonic::Code;
    match status.code() {
        Code::FailedPrecondition | Code::Unauthenticated | Code::PermissionDenied => {
            Some(status.message().to_owned())
        }
        _ => None,
    }
}

/// A Connect failure: a refusal for good, or a loss to retry.
fn connect_failed(status: &tonic::Status) -> StreamEnd {
    match refusal(status) {
        Some(reason) => StreamEnd::Refused(reason),
        None => StreamEnd::Lost(format!("Connect: {}", error_chain(status))),
    }
}

impl Connection {
    pub fn spawn(self) -> ConnectionHandle {
        let (close, close_rx) = mpsc::channel(1);
        let task = tokio::spawn(self.run(close_rx));
        ConnectionHandle { close, task }
    }

    async fn run(mut self, mut close_rx: mpsc::Receiver<(Instant, oneshot::Sender<bool>)>) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let mut closing: Option<(Instant, oneshot::Sender<bool>)> = None;
        let mut was_disconnected = false;
        let mut lost_at: Option<Instant> = None;
        loop {
            let url = self.gateway.url();
            let end = self
                .session(
                    &mut close_rx,
                    &mut closing,
                    &mut backoff,
                    &mut was_disconnected,
                    &mut lost_at,
                )
                .await;
            match end {
                StreamEnd::Closed => {
                    if let Some((_, reply)) = closing.take() {
                        let _ = reply.send(true);
                    }
                    return;
                }
                StreamEnd::Refused(reason) => {
                    self.sink.agent(format!(
                        "the control plane refuses this agent ({reason}); not reconnecting"
                    ));
                    if let Some((_, reply)) = closing.take() {
                        let _ = reply.send(false);
                    }
                    let _ = self.events.send(ControlEvent::Refused(reason)).await;
                    return;
                }
                StreamEnd::Lost(reason) => {
                    if let Some(expired) = self.certificate_expired() {
                        let _ = self.events.send(ControlEvent::Refused(expired)).await;
                        if let Some((_, reply)) = closing.take() {
                            let _ = reply.send(false);
                        }
                        return;
                    }
                    let delay = backoff.next_delay();
                    lost_at.get_or_insert_with(Instant::now);
                    // The next attempt goes to the next gateway (another replica), if any.
                    let next = self.gateway.fail_over(&url);
                    let status = self.state.borrow().status();
                    if !was_disconnected
                        || backoff.attempts() <= 3
                        || backoff.attempts().is_multiple_of(10)
                    {
                        self.sink.agent(format!(
                            "control plane stream to {url} lost: {reason}; reconnecting to {next} in {} ms (attempt {})",
                            delay.as_millis(),
                            backoff.attempts()
                        ));
                    }
                    if !was_disconnected {
                        self.sink.state(status, "disconnected", reason);
                        was_disconnected = true;
                    }
                    if let Some((deadline, _)) = &closing
                        && Instant::now() + delay >= *deadline
                    {
                        if let Some((_, reply)) = closing.take() {
                            let _ = reply.send(false);
                        }
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        req = close_rx.recv(), if closing.is_none() => {
                            if let Some(req) = req {
                                closing = Some(req);
                            }
                        }
                    }
                }
            }
        }
    }

    /// One Connect stream from open to end.
    async fn session(
        &mut self,
        close_rx: &mut mpsc::Receiver<(Instant, oneshot::Sender<bool>)>,
        closing: &mut Option<(Instant, oneshot::Sender<bool>)>,
        backoff: &mut Backoff,
        was_disconnected: &mut bool,
        lost_at: &mut Option<Instant>,
    ) -> StreamEnd {
        let (tx, rx) = mpsc::channel::<AgentFrame>(8);
        let hello = AgentFrame {
            frame: Some(agent_frame::Frame::Hello(Hello {
                protocol_version: kortix_proto::PROTOCOL_VERSION,
                agent_version: AGENT_VERSION.to_owned(),
                last_assigned_seq: self.sink.last_assigned(),
                acks_commands: true,
            })),
        };
        if tx.send(hello).await.is_err() {
            return StreamEnd::Lost("outbound stream closed".into());
        }
        let mut client = self.gateway.client();
        let mut inbound =
            match tokio::time::timeout(OPEN_TIMEOUT, client.connect(ReceiverStream::new(rx))).await
            {
                Ok(Ok(resp)) => resp.into_inner(),
                Ok(Err(status)) => return connect_failed(&status),
                Err(_) => {
                    return StreamEnd::Lost(format!(
                        "Connect did not open within {OPEN_TIMEOUT:?}"
                    ));
                }
            };
        let bootstrap = match tokio::time::timeout(OPEN_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(ControlFrame {
                frame: Some(control_frame::Frame::Bootstrap(b)),
            }))) => b,
            Ok(Ok(Some(other))) => {
                return StreamEnd::Lost(format!("expected Bootstrap first, got {other:?}"));
            }
            Ok(Ok(None)) => return StreamEnd::Lost("stream ended before Bootstrap".into()),
            Ok(Err(status)) => return connect_failed(&status),
            Err(_) => return StreamEnd::Lost(format!("no Bootstrap within {OPEN_TIMEOUT:?}")),
        };
        if self.sink.is_active() {
            self.sink.rewind(bootstrap.acked_seq);
        } else if let Err(e) = self.sink.activate(bootstrap.acked_seq) {
            self.sink.agent(format!("record spool: {e}"));
        }
        backoff.reset();
        if *was_disconnected {
            *was_disconnected = false;
            let status = self.state.borrow().status();
            let url = self.gateway.url();
            let after = lost_at.take().map_or(0, |t| t.elapsed().as_millis());
            self.sink.state(status, "reconnected", url.clone());
            self.sink.agent(format!(
                "control plane stream re-established via {url}, {after} ms after it was lost; resending from seq {}",
                bootstrap.acked_seq + 1
            ));
        }
        *lost_at = None;
        if self
            .events
            .send(ControlEvent::Bootstrap(Box::new(bootstrap)))
            .await
            .is_err()
        {
            return StreamEnd::Lost("daemon gone".into());
        }

        let report = self.state.borrow_and_update().clone();
        if let Err(e) = send(&tx, agent_frame::Frame::State(report)).await {
            return StreamEnd::Lost(e);
        }
        let mut heartbeat = tokio::time::interval(self.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush_at: Option<Instant> = Some(Instant::now());
        let mut tx = Some(tx);
        loop {
            let flush_sleep = async {
                match flush_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(frame)) => {
                        if let Some(end) = self.on_frame(frame, tx.as_ref()).await {
                            return end;
                        }
                    }
                    Ok(None) => {
                        return if tx.is_none() { StreamEnd::Closed } else { StreamEnd::Lost("control plane ended the stream".into()) };
                    }
                    Err(status) => {
                        if tx.is_none() {
                            return StreamEnd::Closed;
                        }
                        return StreamEnd::Lost(format!("Connect: {}", error_chain(&status)));
                    }
                },
                _ = self.sink.appended(), if tx.is_some() => {
                    if flush_at.is_none() {
                        flush_at = Some(Instant::now() + BATCH_WINDOW);
                    }
                    if self.sink.unsent() >= MAX_BATCH_RECORDS as u64 {
                        flush_at = Some(Instant::now());
                    }
                }
                _ = flush_sleep, if tx.is_some() => {
                    flush_at = None;
                    if let Some(tx) = &tx {
                        loop {
                            let records = self.sink.next_batch();
                            if records.is_empty() {
                                break;
                            }
                            if let Err(e) = send(tx, agent_frame::Frame::Records(RecordBatch { records })).await {
                                return StreamEnd::Lost(e);
                            }
                        }
                    }
                    self.sink.flush();
                }
                _ = heartbeat.tick(), if tx.is_some() => {
                    let hb = Heartbeat {
                        nonce: random_u64(),
                        idle_ms: self.liveness.quiet().as_millis() as u64,
                        opencode_alive: self.liveness.alive.load(Ordering::Relaxed),
                        opencode_restarts: self.liveness.restarts.load(Ordering::Relaxed),
                    };
                    if let Some(tx) = &tx && let Err(e) = send(tx, agent_frame::Frame::Heartbeat(hb)).await {
                        return StreamEnd::Lost(e);
                    }
                }
                changed = self.state.changed(), if tx.is_some() => {
                    if changed.is_err() {
                        return StreamEnd::Lost("daemon state gone".into());
                    }
                    let report = self.state.borrow_and_update().clone();
                    if let Some(tx) = &tx && let Err(e) = send(tx, agent_frame::Frame::State(report)).await {
                        return StreamEnd::Lost(e);
                    }
                }
                req = close_rx.recv(), if closing.is_none() => {
                    if let Some(req) = req {
                        *closing = Some(req);
                    }
                }
                _ = async {
                    match closing.as_ref() {
                        Some((deadline, _)) => tokio::time::sleep_until(*deadline).await,
                        None => std::future::pending().await,
                    }
                } => {
                    return StreamEnd::Lost("closing deadline passed".into());
                }
            }
            // Once asked to close: send what is left and the final report, then half-close.
            if closing.is_some()
                && let Some(sender) = tx.take()
            {
                loop {
                    let records = self.sink.next_batch();
                    if records.is_empty() {
                        break;
                    }
                    if let Err(e) = send(
                        &sender,
                        agent_frame::Frame::Records(RecordBatch { records }),
                    )
                    .await
                    {
                        return StreamEnd::Lost(e);
                    }
                }
                let report = self.state.borrow_and_update().clone();
                if let Err(e) = send(&sender, agent_frame::Frame::State(report)).await {
                    return StreamEnd::Lost(e);
                }
                // Dropping the sender ends our half of the stream.
            }
        }
    }

    /// A certificate past its end cannot connect again (renewal failed for its whole life).
    fn certificate_expired(&self) -> Option<String> {
        let not_after = self.gateway.identity().not_after_unix_s;
        (not_after > 0 && crate::enroll::unix_now() >= not_after).then(|| {
            format!("this agent's certificate expired at unix {not_after} and could not be renewed")
        })
    }

    async fn forward(&self, event: ControlEvent) -> Option<StreamEnd> {
        self.events
            .send(event)
            .await
            .err()
            .map(|_| StreamEnd::Lost("daemon gone".into()))
    }

    /// Handles one control frame; returns an end when the stream must go. `tx` is the
    /// stream's sending half while it is open (not once it is closing).
    async fn on_frame(
        &mut self,
        frame: ControlFrame,
        tx: Option<&mpsc::Sender<AgentFrame>>,
    ) -> Option<StreamEnd> {
        match frame.frame {
            Some(control_frame::Frame::Ack(ack)) => self.sink.ack(ack.seq),
            Some(control_frame::Frame::Prompt(p)) => {
                let command = p.command.clone();
                return self.apply(command, ControlEvent::Prompt(p), tx).await;
            }
            Some(control_frame::Frame::Stop(s)) => {
                let command = s.command.clone();
                return self.apply(command, ControlEvent::Stop(s), tx).await;
            }
            Some(control_frame::Frame::HeartbeatAck(_)) => {}
            Some(control_frame::Frame::Bootstrap(b)) => {
                // A repeated bootstrap restates what is durable: resend from there.
                self.sink.rewind(b.acked_seq);
            }
            // Unknown oneof arms from a newer control plane are ignored.
            None => {}
        }
        None
    }

    /// Hands a command to the daemon unless it was applied before, then acks it. Recorded
    /// as applied once handed over: an agent that dies before that never had it.
    async fn apply(
        &mut self,
        command: Option<CommandRef>,
        event: ControlEvent,
        tx: Option<&mpsc::Sender<AgentFrame>>,
    ) -> Option<StreamEnd> {
        let Some(command) = command else {
            return self.forward(event).await;
        };
        if self.commands.is_new(&command) {
            if let Some(end) = self.forward(event).await {
                return end.into();
            }
            if let Err(e) = self.commands.applied(&command) {
                self.sink.agent(format!(
                    "{e}: command {} may be applied again after a restart",
                    command.id
                ));
            }
        } else {
            self.sink.agent(format!(
                "command {} (seq {}) was applied before; acking it again",
                command.id, command.seq
            ));
        }
        let tx = tx?;
        let ack = agent_frame::Frame::CommandAck(CommandAck {
            command_id: command.id,
            command_seq: command.seq,
        });
        send(tx, ack).await.err().map(StreamEnd::Lost)
    }
}

async fn send(tx: &mpsc::Sender<AgentFrame>, frame: agent_frame::Frame) -> Result<(), String> {
    match tokio::time::timeout(SEND_TIMEOUT, tx.send(AgentFrame { frame: Some(frame) })).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("outbound stream closed".into()),
        Err(_) => Err(format!(
            "control plane did not take a frame within {SEND_TIMEOUT:?}"
        )),
    }
}

/// A state report for `status`.
pub fn report(
    status: SessionStatus,
    reason: impl Into<String>,
    is_final: bool,
    head_sha: Option<String>,
) -> StateReport {
    StateReport {
        status: status as i32,
        reason: reason.into(),
        r#final: is_final,
        head_sha: head_sha.unwrap_or_default(),
    }
}
