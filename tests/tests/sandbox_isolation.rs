//! Isolated local sandboxes, observed from inside a real session: the control plane starts
//! the real agent in new user, mount, PID, IPC and UTS namespaces, OpenCode's bash tool (driven
//! by a scripted model) writes what it sees into `/workspace`, commits and pushes it, and the
//! test reads the report from the session branch.
//!
//! Needs `target/<profile>/kortix-agent` built and a kernel that allows user namespaces.

mod isolated;
mod support;

use isolated::*;
use kortix_proto::v1::*;
use kortix_tests::{ScriptedModel, Turn};
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What OpenCode's bash tool runs inside the session: `key=value` lines into
/// `/workspace/isolation.txt`, then commit and push.
fn report_script(data_dir: &Path, other_workspace: &Path, marker: &str) -> String {
    let data = data_dir.display();
    let sandboxes = data_dir.join("sandboxes");
    let sandboxes = sandboxes.display();
    let other = other_workspace.display();
    format!(
        r#"r=/workspace/isolation.txt
{{
echo "shell_pid=$$"
echo "pid1_cmdline=$(tr '\0' ' ' < /proc/1/cmdline)"
echo "pid1_exe=$(readlink /proc/1/exe)"
echo "pid1_ppid=$(awk '/^PPid:/ {{print $2}}' /proc/1/status)"
echo "processes=$(ls /proc | grep -c '^[0-9][0-9]*$')"
echo "cmdlines=$(for p in /proc/[0-9]*; do tr '\0\n' '  ' < $p/cmdline 2>/dev/null; printf '|'; done)"
echo "hostname=$(cat /proc/sys/kernel/hostname)"
echo "pwd=$(pwd)"
echo "home=$HOME"
echo "root_entries=$(ls -A / | tr '\n' ' ')"
echo "data_dir=$(test -e '{data}' && echo visible || echo absent)"
echo "sandboxes_dir=$(test -e '{sandboxes}' && echo visible || echo absent)"
echo "other_workspace=$(test -e '{other}' && echo visible || echo absent)"
touch '/tmp/control-{marker}'
echo "found=$(find / -path /proc -prune -o \( -name '{marker}' -o -name 'control-{marker}' \) -print 2>/dev/null | tr '\n' ' ')"
for ns in user mnt pid ipc uts net; do echo "ns_$ns=$(readlink /proc/self/ns/$ns)"; done
sh -c 'sleep 2 & echo $! > /tmp/orphan.pid'
o=$(cat /tmp/orphan.pid)
echo "orphan_ppid=$(awk '/^PPid:/ {{print $2}}' /proc/$o/status)"
i=0; while [ -e /proc/$o ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo "orphan_gone=$(test -e /proc/$o && awk '/^State:/ {{print $2}}' /proc/$o/status || echo yes)"
}} > $r 2>&1
git add isolation.txt && git commit -q -m 'Isolation report' && git push -q origin HEAD"#
    )
}

/// The agent of `session` as the host sees it: the process named `kortix-agent` whose
/// environment carries the session id.
fn host_agent_pid(session: &str) -> Option<i32> {
    let wanted = format!("KORTIX_SESSION_ID={session}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        if cmdline != b"kortix-agent\0" {
            return None;
        }
        let environ = std::fs::read(e.path().join("environ")).ok()?;
        environ
            .split(|b| *b == 0)
            .any(|v| v == wanted.as_bytes())
            .then_some(pid)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_session_is_pid_1_in_its_own_namespaces_and_sees_only_its_workspace() {
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let (ts, token, work) = setup(&model, None).await;
    phase("project ready");
    let data_dir = ts.data_dir();

    // Two sessions boot side by side; the other one gets a file only the host puts there.
    let other = start(&ts, &token, "").await;
    let session = start(&ts, &token, "").await;
    wait_status(
        &ts,
        &token,
        &other.id,
        SessionStatus::Running,
        Duration::from_secs(90),
    )
    .await;
    phase("the other session runs");
    let marker = format!("kortix-marker-{}.txt", std::process::id());
    let other_ws = host_workspace(&ts, &other.id);
    std::fs::write(other_ws.join(&marker), "another session's file\n").unwrap();
    wait_status(
        &ts,
        &token,
        &session.id,
        SessionStatus::Running,
        Duration::from_secs(90),
    )
    .await;
    model.push([
        Turn::bash(report_script(&data_dir, &other_ws, &marker)),
        Turn::text("Reported."),
    ]);
    ts.sessions(&token)
        .send_prompt(SendPromptRequest {
            session_id: session.id.clone(),
            text: "Report what the sandbox looks like.".into(),
            agent: "build".into(),
        })
        .await
        .unwrap();
    phase("the session runs");
    // From the host: the agent is PID 1 of its own PID namespace.
    let host_pid = host_agent_pid(&session.id).expect("the session's agent runs");
    let nspid = std::fs::read_to_string(format!("/proc/{host_pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:").map(str::to_string))
        .unwrap();
    let nspid: Vec<&str> = nspid.split_whitespace().collect();
    assert_eq!(nspid.last(), Some(&"1"), "NSpid of the agent: {nspid:?}");

    let records = follow_until(&ts, &token, &session.id, Duration::from_secs(90), |seen| {
        pushed_commit(seen).is_some()
    })
    .await;
    phase("the report is pushed");
    let commit = pushed_commit(&records).unwrap();
    assert_eq!(commit.message.trim(), "Isolation report");
    let text = file_on_branch(&ts, &token, work.path(), &session.id, "isolation.txt");
    eprintln!("the session's report:\n{text}");
    let report = parse_report(&text);
    let get = |k: &str| {
        report
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {k} in:\n{text}"))
    };

    // PID 1 of its own PID namespace, with nothing of the host's processes in view, and a
    // real reaper: an orphan is re-parented to it and reaped.
    assert!(get("pid1_cmdline").starts_with("kortix-agent"), "{text}");
    assert_eq!(get("pid1_exe"), "/opt/kortix/bin/kortix-agent", "{text}");
    assert_eq!(get("pid1_ppid"), "0", "{text}");
    let test_exe = std::env::current_exe().unwrap();
    let test_name = test_exe.file_name().unwrap().to_str().unwrap();
    assert!(
        !get("cmdlines").contains(test_name),
        "the control plane is visible:\n{text}"
    );
    assert!(get("processes").parse::<u32>().unwrap() < 50, "{text}");
    assert_eq!(get("orphan_ppid"), "1", "{text}");
    assert_eq!(
        get("orphan_gone"),
        "yes",
        "the orphan was not reaped:\n{text}"
    );

    // Its own UTS, user, mount and IPC namespaces, and the host's network.
    assert_eq!(
        get("hostname"),
        kortix_controlplane::sandbox::namespaces::hostname_for(&session.id),
        "{text}"
    );
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(get("hostname"), host_name.trim());
    for ns in ["user", "mnt", "pid", "ipc", "uts", "net"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let host = host.display().to_string();
        let inside = get(&format!("ns_{ns}"));
        if ns == "net" {
            assert_eq!(
                inside, host,
                "the sandbox shares the host's network namespace"
            );
        } else {
            assert_ne!(inside, host, "{ns} namespace is the host's");
        }
    }

    // Its workspace at /workspace, a private HOME, and nothing of the data directory or of
    // the other session.
    assert_eq!(get("pwd"), "/workspace", "{text}");
    assert_eq!(get("home"), "/root", "{text}");
    let allowed: BTreeSet<&str> = [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "opt",
        "proc",
        "root",
        "run",
        "sbin",
        "tmp",
        "usr",
        "var",
        "workspace",
    ]
    .into();
    for entry in get("root_entries").split_whitespace() {
        assert!(
            allowed.contains(entry),
            "unexpected /{entry} in the sandbox:\n{text}"
        );
    }
    assert_eq!(get("data_dir"), "absent", "{text}");
    assert_eq!(get("sandboxes_dir"), "absent", "{text}");
    assert_eq!(get("other_workspace"), "absent", "{text}");
    // The same search finds a file the session made itself, and not the other session's.
    assert_eq!(
        get("found"),
        format!("/tmp/control-{marker}"),
        "another session's file is visible:\n{text}"
    );
    assert!(get("shell_pid").parse::<u32>().unwrap() < 1000, "{text}");
    // What the session wrote at /workspace is the session's workspace on the host.
    assert_eq!(
        std::fs::read_to_string(host_workspace(&ts, &session.id).join("isolation.txt")).unwrap(),
        text
    );

    phase("checked");
    stop(&ts, &token, &session.id).await;
    phase("stopped");
    stop(&ts, &token, &other.id).await;
    phase("the other stopped");
    assert!(
        host_agent_pid(&session.id).is_none(),
        "the agent outlived its session"
    );
    ts.stop().await;
}

/// `kortix server` where user namespaces cannot be created (a user namespace whose
/// `user.max_user_namespaces` is 0): its log up to "control plane listening".
fn server_log_without_user_namespaces(isolation: &str) -> String {
    let kortix = agent_bin().with_file_name("kortix");
    assert!(
        kortix.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first",
        kortix.display()
    );
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new("unshare")
        .args([
            "-Ur",
            "sh",
            "-c",
            "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$0\" \"$@\"",
        ])
        .arg(&kortix)
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--isolation",
            isolation,
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run unshare");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    while !log.contains("control plane listening") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(rx);
    let _ = reader.join();
    assert!(
        log.contains("control plane listening"),
        "kortix server did not start:\n{log}"
    );
    log
}

#[test]
fn without_user_namespaces_auto_falls_back_with_a_warning_and_namespaces_refuses() {
    let log = server_log_without_user_namespaces("auto");
    assert!(
        log.contains(
            "namespace isolation is unavailable, so local sandboxes run as plain child processes"
        ),
        "{log}"
    );
    assert!(
        log.contains("user.max_user_namespaces"),
        "the warning names the reason:\n{log}"
    );

    let log = server_log_without_user_namespaces("namespaces");
    assert!(
        log.contains(
            "local sandboxes cannot boot: namespace isolation is required but unavailable"
        ),
        "{log}"
    );
}
