//! `kortix server` writing its logs to a pipe (a file, a collector) writes no colour codes.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

#[test]
fn logs_to_a_pipe_carry_no_ansi_codes() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = Command::new(env!("CARGO_BIN_EXE_kortix"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
        ])
        .args(["--isolation", "none", "--data-dir"])
        .arg(data.path())
        .env_remove("RUST_LOG")
        .env_remove("KORTIX_LOG_FORMAT")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kortix server");
    let stderr = server.stderr.take().expect("stderr");
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("log line");
        let listening = line.contains("control plane listening");
        lines.push(line);
        if listening || lines.len() > 50 {
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        lines.iter().any(|l| l.contains("control plane listening")),
        "{lines:#?}"
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "escape codes in {line:?}");
    }
}
