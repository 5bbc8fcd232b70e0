//! One `opencode serve` process: spawn in its own process group, pump its output into
//! records, keep the tail of its output for failure reports, stop it politely then firmly.

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
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::Liveness;
use crate::process::{self, Exit, Reaper};
use crate::records::{MAX_LINE_BYTES, RecordSink};

/// What `opencode serve` prints once its HTTP server is bound ("opencode server listening on
/// http://…").
const LISTENING: &str = "server listening on";

/// Lines of output (stdout and stderr) kept for the failure reason.
pub const TAIL_LINES: usize = 20;
const TAIL_LINE_CHARS: usize = 400;

pub struct OpencodeProcess {
    pub child: process::Child,
    pub port: u16,
    /// Signalled when OpenCode prints that its server listens: the moment to ask its health
    /// endpoint, rather than the next tick of a timer.
    pub listening: Arc<Notify>,
    tail: Arc<Mutex<VecDeque<String>>>,
    pumps: Vec<JoinHandle<()>>,
}

pub struct Launch<'a> {
    pub bin: &'a Path,
    pub workspace: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub port: u16,
}

/// OpenCode must not outlive an agent that died without stopping it (kill -9, a crash): it
/// would hold its port and keep calling the model. The kernel's parent-death signal follows
/// the *thread* that forked, here a runtime worker that lives as long as the agent; OpenCode
/// must never be spawned from a blocking-pool thread, which exits when idle.
#[allow(unsafe_code)]
fn die_with_agent(cmd: &mut Command) {
    let agent = nix::unistd::getpid();
    // SAFETY: between fork and exec the closure makes only async-signal-safe calls (prctl,
    // getppid) and allocates nothing on its success path.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != agent {
                // The agent died before the signal was armed.
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
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
        die_with_agent(&mut cmd);
        let mut child = reaper.spawn(&mut cmd)?;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let listening = Arc::new(Notify::new());
        let mut pumps = Vec::new();
        for (stream, out) in [
            (LogStream::Stdout, child.stdout.take()),
            (LogStream::Stderr, child.stderr.take()),
        ] {
            if let Some(out) = out {
                pumps.push(tokio::spawn(pump(
                    out,
                    stream,
                    sink.clone(),
                    liveness.clone(),
                    Some(tail.clone()),
                    Some(listening.clone()),
                )));
            }
        }
        Ok(OpencodeProcess {
            child,
            port: launch.port,
            listening,
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

    pub fn output_tail(&self) -> Vec<String> {
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
    listening: Option<Arc<Notify>>,
) {
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, pipe);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        // Keep enough past the cap for redaction to see a secret that straddles it whole.
        let keep = MAX_LINE_BYTES + sink.redaction_window();
        let read = match read_line_capped(&mut reader, &mut line, keep).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let kept = line.len();
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        // Bytes of the line as printed, without its line ending.
        let total = if read > kept { read - 1 } else { line.len() };
        let text = String::from_utf8_lossy(&line).into_owned();
        liveness.touch();
        if let Some(listening) = &listening
            && text.contains(LISTENING)
        {
            // Stores a permit when nobody waits yet, so the readiness check cannot miss it.
            listening.notify_one();
        }
        if let Some(tail) = &tail {
            let mut shown = text.clone();
            sink.redactor().redact(&mut shown);
            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(shown.chars().take(TAIL_LINE_CHARS).collect());
        }
        sink.log_cut(stream, text, total);
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
    use crate::records::{Spool, SpoolOptions};
    use kortix_proto::v1::record::Body;
    use tokio::io::AsyncWriteExt;

    /// The parent-death signal fires when the forking thread ends, which is how the kernel
    /// sees the agent die; the child is killed, not orphaned.
    #[test]
    fn opencode_dies_with_the_thread_that_spawned_it() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("60");
            die_with_agent(&mut cmd);
            cmd.spawn().unwrap()
        })
        .join()
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    }

    /// A 31-character secret at every offset around the line cap: no prefix of it survives.
    #[tokio::test]
    async fn a_secret_straddling_the_line_cap_is_redacted_whole() {
        let secret = "sk-live-0123456789abcdefghijklm";
        assert_eq!(secret.len(), 31);
        for offset in [
            MAX_LINE_BYTES - 31,
            MAX_LINE_BYTES - 30,
            MAX_LINE_BYTES - 15,
            MAX_LINE_BYTES - 1,
            MAX_LINE_BYTES,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let sink = RecordSink::new(Spool::open(dir.path(), SpoolOptions::default()).unwrap());
            sink.activate(0).unwrap();
            sink.set_secrets(
                &[("API_KEY".to_string(), secret.to_string())]
                    .into_iter()
                    .collect(),
            );
            let line = format!("{}{secret}{}\n", "x".repeat(offset), "y".repeat(100));
            let (mut tx, rx) = pipe::pipe().unwrap();
            let liveness = Arc::new(Liveness::new());
            let tail = Arc::new(Mutex::new(VecDeque::new()));
            let pumping = tokio::spawn(pump(
                rx,
                LogStream::Stdout,
                sink.clone(),
                liveness,
                Some(tail.clone()),
                None,
            ));
            tx.write_all(line.as_bytes()).await.unwrap();
            drop(tx);
            pumping.await.unwrap();
            let batch = sink.next_batch();
            let Some(Body::Log(log)) = &batch[0].body else {
                panic!("expected a log record: {batch:?}");
            };
            for n in 4..=secret.len() {
                assert!(
                    !log.line.contains(&secret[..n]),
                    "offset {offset}: {n} characters of the secret reached the record"
                );
            }
            assert!(
                log.line.len() <= MAX_LINE_BYTES + 64,
                "offset {offset}: not cut"
            );
            let total = line.len() - 1;
            assert!(
                log.line.ends_with(&format!("…[truncated, {total} bytes]")),
                "offset {offset}"
            );
            let tail = tail.lock().unwrap().iter().cloned().collect::<String>();
            assert!(
                !tail.contains("sk-live-0123"),
                "offset {offset}: the failure tail leaks"
            );
        }
    }

    #[tokio::test]
    async fn the_listening_line_signals_readiness_even_before_anyone_waits() {
        let dir = tempfile::tempdir().unwrap();
        let sink = RecordSink::new(Spool::open(dir.path(), SpoolOptions::default()).unwrap());
        sink.activate(0).unwrap();
        let (mut tx, rx) = pipe::pipe().unwrap();
        let listening = Arc::new(Notify::new());
        let pumping = tokio::spawn(pump(
            rx,
            LogStream::Stdout,
            sink,
            Arc::new(Liveness::new()),
            None,
            Some(listening.clone()),
        ));
        tx.write_all(
            b"Warning: something else\nopencode server listening on http://127.0.0.1:4096\n",
        )
        .await
        .unwrap();
        drop(tx);
        pumping.await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), listening.notified())
            .await
            .expect("the permit was stored");
    }

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
