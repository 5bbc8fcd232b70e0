//! Kortix's side: a session started with the prompt, followed to `running` (WatchSession)
//! and to its first commit on the session branch in the control plane's repository; then
//! stopped, its end awaited before the next run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kortix_proto::v1::session_service_client::SessionServiceClient;
use kortix_proto::v1::snapshot_service_client::SnapshotServiceClient;
use kortix_proto::v1::{
    AttachRequest, SessionStatus, StartSessionRequest, StopSessionRequest, WatchSessionRequest,
};
use kortix_tests::ScriptedModel;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::timing::{RUN_DEADLINE, Run, read_ref, ref_moves, script, wait_calls};

pub type Sessions = SessionServiceClient<InterceptedService<Channel, Bearer>>;
pub type SnapshotsApi = SnapshotServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// One control plane under test: its session API and the project's bare repository.
pub struct Target {
    pub sessions: Sessions,
    pub snapshots: SnapshotsApi,
    pub repo: PathBuf,
}

impl Target {
    pub async fn connect(url: &str, token: &str, repo: PathBuf) -> Result<Target> {
        let channel = Channel::from_shared(url.to_string())?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect()
            .await?;
        let bearer = Bearer(format!("Bearer {token}").parse()?);
        Ok(Target {
            sessions: SessionServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            snapshots: SnapshotServiceClient::with_interceptor(channel, bearer),
            repo,
        })
    }

    /// A session of `app` with the run's prompt: `running`, then its commit.
    pub async fn run(&self, model: &ScriptedModel, tag: &str, round: usize) -> Result<Run> {
        let file = format!("{tag}-{round}.txt");
        let calls = script(model, &file, "HEAD");
        let main = read_ref(&self.repo, "main").context("the project's main branch")?;
        let started = Instant::now();
        let (id, ready) = self
            .start_until_running(&format!("Create {file} and commit it."), started)
            .await?;
        let commit = ref_moves(&self.repo, &id, Some(&main), started).await?;
        wait_calls(model, calls).await?;
        self.stop_and_wait(&id).await?;
        if std::env::var("KORTIX_BENCH_TRACE").is_ok_and(|v| v == "1") {
            self.print_trace(&id).await?;
        }
        Ok(Run {
            ready,
            healthy: None,
            commit,
            rss_kib: None,
        })
    }

    /// Starts a session and follows it to `running`: its id and the time from `started`.
    pub async fn start_until_running(
        &self,
        prompt: &str,
        started: Instant,
    ) -> Result<(String, Duration)> {
        let mut client = self.sessions.clone();
        let session = client
            .start_session(StartSessionRequest {
                project: "app".into(),
                prompt: prompt.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut watch = client
            .watch_session(WatchSessionRequest {
                id: session.id.clone(),
            })
            .await?
            .into_inner();
        let ready = tokio::time::timeout(RUN_DEADLINE, async {
            while let Some(s) = watch.next().await {
                let s = s?;
                if s.status == SessionStatus::Running as i32 {
                    return Ok(started.elapsed());
                }
                if s.status == SessionStatus::Failed as i32 {
                    bail!("session {} failed: {}", s.id, s.failure_reason);
                }
            }
            bail!("the session's watch ended before it was running")
        })
        .await
        .with_context(|| format!("waiting for session {} to run", session.id))??;
        Ok((session.id, ready))
    }

    /// Prints the session's agent lines and state changes with their time from the first
    /// record (`KORTIX_BENCH_TRACE=1`): where a start's time went.
    async fn print_trace(&self, id: &str) -> Result<()> {
        use kortix_proto::v1::record::Body;
        let mut records = self
            .sessions
            .clone()
            .attach(AttachRequest {
                session_id: id.into(),
                from_seq: 0,
                follow: false,
            })
            .await?
            .into_inner();
        let mut first = None;
        while let Some(r) = records.next().await {
            let r = r?;
            let t0 = *first.get_or_insert(r.ts_unix_ms);
            let what = match r.body {
                Some(Body::Log(l)) => format!("log[{}] {}", l.stream, l.line),
                Some(Body::State(s)) => format!("state {} {} {}", s.status, s.phase, s.reason),
                _ => continue,
            };
            eprintln!(
                "  trace {id} {} +{} ms {what}",
                r.ts_unix_ms,
                r.ts_unix_ms - t0
            );
        }
        Ok(())
    }

    /// Stops a session and waits until it has ended.
    pub async fn stop_and_wait(&self, id: &str) -> Result<()> {
        let mut client = self.sessions.clone();
        let mut watch = client
            .watch_session(WatchSessionRequest { id: id.into() })
            .await?
            .into_inner();
        client
            .stop_session(StopSessionRequest { id: id.into() })
            .await?;
        tokio::time::timeout(RUN_DEADLINE, async {
            while let Some(s) = watch.next().await {
                let status = s?.status;
                if [
                    SessionStatus::Stopped,
                    SessionStatus::Failed,
                    SessionStatus::Hibernated,
                ]
                .iter()
                .any(|e| *e as i32 == status)
                {
                    return Ok(());
                }
            }
            Ok::<_, anyhow::Error>(())
        })
        .await
        .with_context(|| format!("waiting for session {id} to end"))??;
        Ok(())
    }
}
