//! The runtime layer of `image/Dockerfile`, exercised without a container engine:
//! `image/assemble-rootfs.sh` builds it into a directory, and a control plane with
//! `--isolation namespaces --sandbox-root <that directory>` boots a real session on it — the
//! image's own `kortix-agent` as PID 1, its git and its OpenCode.
//!
//! Needs `target/<profile>/kortix-agent` built, a Debian-based host (the script copies the
//! image's Debian packages from the host's dpkg database) and user namespaces.

mod isolated;
mod support;

use isolated::*;
use kortix_tests::{ScriptedModel, Turn};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const REPORT: &str = r#"{
echo "pid1_exe=$(readlink /proc/1/exe)"
echo "pid1_cmdline=$(tr '\0' ' ' < /proc/1/cmdline)"
echo "opencode=$(readlink -f /proc/$PPID/exe)"
echo "opencode_on_path=$(readlink -f "$(command -v opencode)")"
echo "opencode_version=$(cat /opt/opencode/VERSION)"
echo "git=$(command -v git)"
echo "git_version=$(git --version)"
echo "os=$(. /etc/os-release && echo "$ID-$VERSION_ID")"
echo "ca_bundle=$(test -s /etc/ssl/certs/ca-certificates.crt && echo present || echo missing)"
echo "pwd=$(pwd)"
echo "home=$HOME"
} > /workspace/image.txt 2>&1
git add image.txt && git commit -q -m 'Image report' && git push -q origin HEAD"#;

fn assemble(out: &std::path::Path) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../image/assemble-rootfs.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("--agent")
        .arg(agent_bin())
        .arg("--opencode")
        .arg(opencode_prefix())
        .arg(out)
        .output()
        .expect("run image/assemble-rootfs.sh");
    assert!(
        output.status.success(),
        "assemble-rootfs.sh failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_boots_and_runs_on_the_assembled_image_root() {
    require_namespaces();
    let image = tempfile::tempdir().unwrap();
    let root = image.path().join("rootfs");
    tokio::task::block_in_place(|| assemble(&root));
    for path in [
        "usr/local/bin/kortix-agent",
        "opt/opencode/bin/opencode",
        "usr/bin/git",
        "workspace",
    ] {
        assert!(
            root.join(path).exists(),
            "the assembled layer has no /{path}"
        );
    }

    let model = ScriptedModel::start(Vec::new()).unwrap();
    let (ts, token, work) = setup(&model, Some(root.clone())).await;
    model.push([Turn::bash(REPORT), Turn::text("Reported.")]);
    let session = start(&ts, &token, "Report what the image looks like.").await;
    wait_status(
        &ts,
        &token,
        &session.id,
        kortix_proto::v1::SessionStatus::Running,
        Duration::from_secs(90),
    )
    .await;
    let records = follow_until(&ts, &token, &session.id, Duration::from_secs(90), |seen| {
        pushed_commit(seen).is_some()
    })
    .await;
    assert_eq!(
        pushed_commit(&records).unwrap().message.trim(),
        "Image report"
    );
    let text = file_on_branch(&ts, &token, work.path(), &session.id, "image.txt");
    eprintln!("the session's report:\n{text}");
    let report = parse_report(&text);
    let get = |k: &str| {
        report
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {k} in:\n{text}"))
    };

    // The image's own programs at the image's paths: its agent as PID 1, its OpenCode, its
    // Debian git (not the host's), its CA bundle.
    assert_eq!(get("pid1_exe"), "/usr/local/bin/kortix-agent", "{text}");
    assert!(get("pid1_cmdline").starts_with("kortix-agent"), "{text}");
    assert_eq!(get("opencode"), "/opt/opencode/bin/opencode", "{text}");
    assert_eq!(
        get("opencode_on_path"),
        "/opt/opencode/bin/opencode",
        "{text}"
    );
    assert_eq!(
        get("opencode_version"),
        kortix_tests::OPENCODE_VERSION,
        "{text}"
    );
    assert_eq!(get("git"), "/usr/bin/git", "{text}");
    // The version of the Debian package the layer was assembled from ("1:2.39.5-0+deb12u3").
    let package = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "git"])
        .output()
        .unwrap();
    let package = String::from_utf8_lossy(&package.stdout).into_owned();
    let upstream = package.split_once(':').map_or(package.as_str(), |(_, v)| v);
    let upstream = upstream.split('-').next().unwrap();
    assert_eq!(
        get("git_version"),
        format!("git version {upstream}"),
        "{text}"
    );
    assert!(get("os").starts_with("debian-"), "{text}");
    assert_eq!(get("ca_bundle"), "present", "{text}");
    assert_eq!(get("pwd"), "/workspace", "{text}");
    assert_eq!(get("home"), "/root", "{text}");
    // The layer itself is untouched: sessions get their workspace and HOME bound over it.
    assert_eq!(
        std::fs::read_dir(root.join("workspace")).unwrap().count(),
        0
    );
    assert!(host_workspace(&ts, &session.id).join("image.txt").is_file());

    stop(&ts, &token, &session.id).await;
    ts.stop().await;
}
