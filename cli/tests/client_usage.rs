//! Client commands without a server: usage errors exit 2, an unreachable or malformed URL
//! exits 1 quickly with a message naming the cause, bad input is refused before dialing.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn kortix(args: &[&str]) -> Output {
    let home = tempfile::tempdir().expect("tempdir");
    Command::new(env!("CARGO_BIN_EXE_kortix"))
        .args(args)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env_remove("KORTIX_URL")
        .env_remove("KORTIX_TOKEN")
        .env_remove("KORTIX_DATA_DIR")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("run kortix")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A loopback URL where nothing listens: bind port 0, note it, close it.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &["sessions"],
        &["sessions", "bogus"],
        &["cr", "open", "--project", "p"],
        &[
            "cr",
            "open",
            "--project",
            "p",
            "--session",
            "s",
            "--branch",
            "b",
        ],
        &["cr", "merge", "not-a-number", "--project", "p"],
        &["cr", "show", "1"],
        &["cr", "ls", "--state", "bogus"],
        &["secrets", "set", "NAME"],
        &["sessions", "new"],
        &["sessions", "new", "--project", "p", "--wait-timeout", "5"],
        &["sessions", "attach", "s1", "--from", "-1"],
        &["triggers", "fire", "nightly"],
        &["projects", "info"],
        &["accounts", "create"],
        &["tokens", "revoke"],
    ];
    for args in cases {
        let out = kortix(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
}

#[test]
fn help_lists_every_client_command() {
    let out = kortix(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "accounts", "tokens", "login", "logout", "projects", "secrets", "sessions", "cr",
        "triggers",
    ] {
        assert!(help.contains(cmd), "--help lacks {cmd}:\n{help}");
    }
}

#[test]
fn unreachable_server_exits_1_fast_naming_the_url() {
    let url = dead_url();
    let commands: &[&[&str]] = &[
        &["projects", "ls"],
        &["sessions", "info", "s1"],
        &["sessions", "attach", "s1", "--no-follow"],
        &["cr", "ls", "--project", "p"],
        &["triggers", "ls", "--project", "p"],
        &["tokens", "ls"],
    ];
    for args in commands {
        let mut full = vec!["--url", url.as_str(), "--json"];
        full.extend_from_slice(args);
        let started = Instant::now();
        let out = kortix(&full);
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("cannot reach the control plane at {url}")),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            out.stdout.is_empty(),
            "--json must print nothing on failure"
        );
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
}

#[test]
fn url_can_come_from_the_environment() {
    let url = dead_url();
    let home = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_kortix"))
        .args(["projects", "ls"])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env("KORTIX_URL", &url)
        .env_remove("KORTIX_TOKEN")
        .output()
        .expect("run kortix");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&url), "{}", stderr(&out));
}

#[test]
fn malformed_url_is_a_usage_error() {
    for url in ["127.0.0.1:8008", "ftp://h", "http://"] {
        let out = kortix(&["--url", url, "projects", "ls"]);
        assert_eq!(out.status.code(), Some(2), "{url}: {}", stderr(&out));
        assert!(stderr(&out).contains("--url"), "{}", stderr(&out));
    }
}

#[test]
fn ca_cert_requires_https() {
    let out = kortix(&["--ca-cert", "/nonexistent.pem", "projects", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("needs an https:// URL"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn empty_secret_is_refused_before_dialing() {
    let url = dead_url();
    let out = kortix(&["--url", &url, "secrets", "set", "API_KEY", "--project", "p"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refusing an empty secret value"),
        "{}",
        stderr(&out)
    );
    let out = kortix(&[
        "--url", &url, "secrets", "set", "API_KEY", "-p", "p", "--value", "",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refusing an empty secret value"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn logout_without_a_saved_login_is_fine() {
    let out = kortix(&["--url", "http://127.0.0.1:1", "--json", "logout"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["removed"], serde_json::json!(false));
}
