//! One `opencode serve` process: spawn in its own process group, pump its output into
//! records, keep the tail of stderr for failure reports, stop it politely then firmly.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kortix_proto::v1::LogStream;
use nix::sys::signal::Signal;
use tokio::io::AsyncBufReadExt;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use super::Liveness;
use crate::process::{self, Exit, Reaper};
use crate::records::{MAX_LINE_BYTES, RecordSink};

/// Lines of stderr kept for the failure reason.
pub const STDERR_TAIL_LINES: usize = 20;
const TAIL_LINE_CHARS: usize = 400;

pub struct OpencodeProcess {
    pub child: process::Child,
    pub port: u16,
    tail: Arc<Mutex<VecDeque<String>>>,
    pumps: Vec<JoinHandle<()>>,
}

pub struct Launch<'a> {
    pub bin: &'a Path,
    pub workspace: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub port: u16,
}

impl OpencodeProcess {
    pub fn spawn(
        reaper: &Reaper,
        launch: Launch<'_>,
        sink: &RecordSink,
        liveness: &Arc<Liveness>,
    ) -> std::io::Result<Self> {
        let mut cmd = Command::new(launch.bin);
        cmd.args([
            "serve",
            "--hostname",
            "127.0.0.1",
            "--port",
            &launch.port.to_string(),
        ])
        .current_dir(launch.workspace)
        .env_clear()
        .envs(launch.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a stop reaches every tool process OpenCode started.
        .process_group(0);
        let mut child = reaper.spawn(&mut cmd)?;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(
                out,
                LogStream::Stdout,
                sink.clone(),
                liveness.clone(),
                None,
            )));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(
                err,
                LogStream::Stderr,
                sink.clone(),
                liveness.clone(),
                Some(tail.clone()),
            )));
        }
        Ok(OpencodeProcess {
            child,
            port: launch.port,
            tail,
            pumps,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid
    }

    /// Waits (briefly) for the output pumps to drain, so the tail includes the last words.
    pub async fn drain_output(&mut self) {
        for pump in self.pumps.drain(..) {
            let abort = pump.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), pump)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    pub fn stderr_tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// SIGTERM to the group, up to `grace` to exit, then SIGKILL. Also used after a crash to
    /// clear any tool processes the dead server left behind in its group.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        let pid = self.child.pid;
        if let Some(exit) = self.child.try_exit() {
            process::signal_group(pid, Signal::SIGKILL);
            self.drain_output().await;
            return exit;
        }
        process::signal_group(pid, Signal::SIGTERM);
        let exit = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                process::signal_group(pid, Signal::SIGKILL);
                self.child.wait().await
            }
        };
        process::signal_group(pid, Signal::SIGKILL);
        self.drain_output().await;
        exit
    }
}

async fn pump(
    pipe: pipe::Receiver,
    stream: LogStream,
    sink: RecordSink,
    liveness: Arc<Liveness>,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, pipe);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match read_line_capped(&mut reader, &mut line, MAX_LINE_BYTES).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => return,
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        liveness.touch();
        if let Some(tail) = &tail {
            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == STDERR_TAIL_LINES {
                t.pop_front();
            }
            t.push_back(text.chars().take(TAIL_LINE_CHARS).collect());
        }
        sink.log(stream, text);
    }
}

/// Reads one line, keeping at most `cap` bytes of it (the rest is consumed and dropped), so a
/// child printing without newlines cannot grow the buffer without bound.
async fn read_line_capped<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        total += n;
        reader.consume(n);
        if done {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_capped() {
        let data = format!("{}\nshort\n", "x".repeat(100));
        let mut r = tokio::io::BufReader::with_capacity(16, data.as_bytes());
        let mut line = Vec::new();
        assert_eq!(read_line_capped(&mut r, &mut line, 10).await.unwrap(), 101);
        assert_eq!(line, b"xxxxxxxxxx");
        line.clear();
        read_line_capped(&mut r, &mut line, 10).await.unwrap();
        assert_eq!(line, b"short\n");
        line.clear();
        assert_eq!(read_line_capped(&mut r, &mut line, 10).await.unwrap(), 0);
    }
}
