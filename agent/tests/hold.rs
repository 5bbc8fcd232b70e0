//! Hold mode of the real binary: up without a session's variables, no enrollment, a clean
//! exit on SIGTERM; refused beside a session's bootstrap.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn agent(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kortix-agent"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn holds_until_sigterm_then_exits_cleanly() {
    let mut child = agent(&[("KORTIX_AGENT_HOLD", "1")]).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let holding = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the agent says it holds");
    assert!(holding.contains("holding"), "{holding}");
    // Without a session's variables the daemon would have exited at once with a usage error.
    assert!(child.try_wait().unwrap().is_none(), "it stays up");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        !rest.iter().any(|l| l.contains("enroll")),
        "hold mode never enrolls: {rest:?}"
    );
}

#[test]
fn refuses_to_hold_beside_a_session_bootstrap() {
    let out = agent(&[
        ("KORTIX_AGENT_HOLD", "1"),
        ("KORTIX_BOOTSTRAP_TOKEN", "kbt_x"),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KORTIX_BOOTSTRAP_TOKEN"), "{stderr}");
}
