//! The agent's stdout and stderr, copied line by line into `agent.log` in its sandbox
//! directory, up to a size cap (the agent's records carry the real stream).

use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

/// Each sandbox's `agent.log` stops growing here.
const AGENT_LOG_CAP: u64 = 16 * 1024 * 1024;

pub(super) struct CappedLog {
    file: tokio::fs::File,
    written: u64,
    capped: bool,
}

impl CappedLog {
    pub(super) async fn open(path: &Path) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let written = file.metadata().await?.len();
        Ok(Self {
            file,
            written,
            capped: false,
        })
    }

    async fn write_line(&mut self, line: &str) {
        if self.capped {
            return;
        }
        if self.written + line.len() as u64 + 1 > AGENT_LOG_CAP {
            self.capped = true;
            let _ = self
                .file
                .write_all(b"[kortix] agent.log reached its size cap; further output dropped\n")
                .await;
            return;
        }
        self.written += line.len() as u64 + 1;
        let _ = self.file.write_all(line.as_bytes()).await;
        let _ = self.file.write_all(b"\n").await;
    }
}

pub(super) async fn copy_lines(
    stream: impl AsyncRead + Unpin,
    log: Arc<tokio::sync::Mutex<CappedLog>>,
    session_id: String,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(session = %session_id, "agent: {line}");
        log.lock().await.write_line(&line).await;
    }
}
