//! Benchmarks of the real `kortix-agent` binary:
//! `cargo bench -p kortix-agent --bench agent` (all three), or name one:
//! `cargo bench -p kortix-agent --bench agent -- rss|enroll|crypto`.
//!
//! The OpenCode stand-in is benchmark input: a small HTTP server speaking the endpoints the
//! agent uses (`/global/health`, `/event`, `/session`, `prompt_async`) that prints 10,000
//! stdout lines per second, so the agent's streaming path is measured without a model.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kortix_proto::v1::{Bootstrap, SessionStatus, Stop, control_frame, record::Body};
use support::TestGateway;

const FAKE_OPENCODE: &str = r#"#!/usr/bin/env python3
import http.server, json, sys, threading, time
port = int(sys.argv[sys.argv.index("--port") + 1])
rate, seconds = 10000, float(__import__("os").environ.get("BENCH_SECONDS", "10"))
def spam():
    n, start = 0, time.time()
    while time.time() - start < seconds:
        target = int((time.time() - start) * rate)
        out = []
        while n < target:
            out.append("line %d: the quick brown fox jumps over the lazy dog\n" % n)
            n += 1
        if out:
            sys.stdout.write("".join(out)); sys.stdout.flush()
        time.sleep(0.005)
    sys.stderr.write("spam done %d\n" % n); sys.stderr.flush()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, body=b""):
        self.send_response(code); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path == "/global/health": return self.reply(200, b'{"healthy":true,"version":"bench"}')
        if self.path.startswith("/session/"): return self.reply(200, b'{"id":"ses_bench"}')
        if self.path == "/event":
            self.send_response(200); self.send_header("content-type", "text/event-stream"); self.end_headers()
            self.wfile.write(b'data: {"type":"server.connected","properties":{}}\n\n'); self.wfile.flush()
            while True:
                time.sleep(1); self.wfile.write(b'data: {"type":"server.heartbeat","properties":{}}\n\n'); self.wfile.flush()
        self.reply(404)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/session": return self.reply(200, b'{"id":"ses_bench"}')
        if self.path.endswith("/prompt_async"):
            threading.Thread(target=spam, daemon=True).start(); return self.reply(204)
        self.reply(404)
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

fn git(dir: &Path, args: &[&str]) {
    kortix_tests::git::GitEnv::new().ok(dir, args);
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn agent_rss_and_boot_while_opencode_prints_10k_lines_per_second() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let bare = root.join("origin.git");
    git(root, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    let seed = root.join("seed");
    std::fs::create_dir_all(seed.join(".kortix/opencode")).unwrap();
    git(&seed, &["init", "-q"]);
    std::fs::write(seed.join(".kortix/opencode/opencode.json"), "{}\n").unwrap();
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "seed"]);
    git(&seed, &["push", "-q", bare.to_str().unwrap(), "main:bench"]);
    let fake = root.join("fake-opencode");
    std::fs::write(&fake, FAKE_OPENCODE).unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let bootstrap = Bootstrap {
        session_id: "bench".into(),
        repo_url: format!("file://{}", bare.display()),
        branch: "bench".into(),
        default_branch: "main".into(),
        opencode_config_dir: ".kortix/opencode".into(),
        initial_prompt: "go".into(),
        git_author_name: "A".into(),
        git_author_email: "a@e".into(),
        ..Bootstrap::default()
    };
    let gw = TestGateway::start(
        "bench",
        bootstrap,
        BTreeMap::new(),
        Duration::from_secs(3600),
    )
    .await;
    let bin = std::env::var("KORTIX_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_kortix-agent")));
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut agent = Command::new(&bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", root)
        .env("BENCH_SECONDS", seconds.to_string())
        .env("KORTIX_CONTROL_PLANE", &gw.url)
        .env("KORTIX_SESSION_ID", "bench")
        .env("KORTIX_BOOTSTRAP_TOKEN", &gw.token)
        .env("KORTIX_CA_CERT", &gw.ca_pem)
        .env("KORTIX_WORKSPACE", root.join("workspace"))
        .env("KORTIX_OPENCODE_BIN", &fake)
        .env("KORTIX_SPOOL_DIR", root.join("state"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = agent.id();
    let stderr = agent.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    gw.wait(Duration::from_secs(60), "running", |s| {
        s.reports
            .iter()
            .any(|r| r.status == SessionStatus::Running as i32)
    })
    .await;
    let start = Instant::now();
    let mut max_rss = 0;
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        if let Some(r) = rss_kib(pid) {
            max_rss = max_rss.max(r);
            samples.push(r);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The stand-in says how many lines it printed once done; every one must arrive.
    let printed = |s: &support::GwState| {
        s.records.values().find_map(|r| match &r.body {
            Some(Body::Log(l)) => l
                .line
                .strip_prefix("spam done ")
                .and_then(|n| n.parse::<u64>().ok()),
            _ => None,
        })
    };
    let lines = |s: &support::GwState| {
        s.records
            .values()
            .filter(|r| matches!(&r.body, Some(Body::Log(l)) if l.line.starts_with("line ")))
            .count() as u64
    };
    gw.wait(Duration::from_secs(60), "all lines stored", |s| {
        printed(s).is_some_and(|n| lines(s) >= n)
    })
    .await;
    let expected = gw.with(|s| printed(s).unwrap_or(0));
    assert!(
        expected >= seconds * 9_900,
        "the stand-in printed only {expected} lines"
    );
    let elapsed = start.elapsed();
    gw.send(control_frame::Frame::Stop(Stop {
        reason: "bench done".into(),
        grace_ms: 10_000,
        hibernate: false,
        command: None,
    }));
    let status = tokio::task::spawn_blocking(move || agent.wait())
        .await
        .unwrap()
        .unwrap();
    let lines = log.join().unwrap();
    let timing = lines
        .iter()
        .filter(|l| l.contains("timing:"))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    let (records, acked, dups) = gw.with(|s| (s.records.len(), s.acked, s.duplicates));
    samples.sort_unstable();
    let median = samples.get(samples.len() / 2).copied().unwrap_or(0);
    println!("agent binary: {}", bin.display());
    println!("{timing}");
    println!(
        "streamed {expected} lines in {:.1}s: {records} records stored, acked {acked}, {dups} duplicates; agent RSS max {} KiB, median {} KiB",
        elapsed.as_secs_f64(),
        max_rss,
        median
    );
    assert!(
        status.success(),
        "agent exit {status}: {}",
        lines.join("\n")
    );
}

async fn enroll_latency() {
    let gw = TestGateway::start(
        "lat",
        Bootstrap::default(),
        BTreeMap::new(),
        Duration::from_secs(3600),
    )
    .await;
    for i in 0..3 {
        let t = Instant::now();
        let id = kortix_agent::enroll::enroll(&gw.url, &gw.ca_pem, &gw.token)
            .await
            .unwrap();
        let enrolled = t.elapsed();
        let (gateway, _keeper) = kortix_agent::enroll::Gateway::new(&gw.url, id).unwrap();
        let t2 = Instant::now();
        let _ = gateway
            .client()
            .git_credential(kortix_proto::v1::GitCredentialRequest::default())
            .await
            .unwrap();
        println!(
            "enroll #{i}: {} us; first mTLS call {} us",
            enrolled.as_micros(),
            t2.elapsed().as_micros()
        );
    }
}

fn crypto_first_use_cost() {
    for i in 0..2 {
        let t = Instant::now();
        let key = rcgen::KeyPair::generate().unwrap();
        let k = t.elapsed();
        let t = Instant::now();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        println!(
            "#{i}: keygen {} us, csr {} us ({} bytes)",
            k.as_micros(),
            t.elapsed().as_micros(),
            csr.der().len()
        );
    }
    let t = Instant::now();
    let _ = kortix_agent::tls::client_config(
        &rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem(),
        &[],
    );
    println!("client config {} us", t.elapsed().as_micros());
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // `cargo bench` passes `--bench`; any other argument names the benchmarks to run.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    if runs("rss") {
        runtime.block_on(agent_rss_and_boot_while_opencode_prints_10k_lines_per_second());
    }
    if runs("enroll") {
        runtime.block_on(enroll_latency());
    }
    if runs("crypto") {
        crypto_first_use_cost();
    }
}
