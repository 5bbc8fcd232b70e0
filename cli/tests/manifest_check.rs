//! `kortix manifest check`: exit codes, JSON shape, human summary.

use std::path::Path;
use std::process::{Command, Output};

fn kortix(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kortix"))
        .args(args)
        .current_dir(cwd)
        .env_remove("KORTIX_URL")
        .env_remove("KORTIX_TOKEN")
        .output()
        .expect("run kortix")
}

fn dir_with(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kortix.toml"), manifest).unwrap();
    dir
}

const GOOD: &str = r#"
kortix_version = 1
[[triggers]]
slug = "b-good"
type = "cron"
cron = "0 0 9 * * 1-5"
prompt = "hi"
[[triggers]]
slug = "a-bad"
type = "cron"
cron = "not a cron"
prompt = "hi"
"#;

#[test]
fn json_prints_the_normalized_manifest_and_exits_0_with_errors() {
    let dir = dir_with(GOOD);
    let out = kortix(&["manifest", "check", "--json"], dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(json["kortix_version"], 1);
    assert_eq!(json["triggers"][0]["slug"], "b-good");
    assert_eq!(json["triggers"][0]["timezone"], "UTC");
    assert_eq!(json["triggers"][0]["agent"], "default");
    assert_eq!(json["opencode"]["config_dir"], ".kortix/opencode");
    assert_eq!(
        json["sandbox"],
        serde_json::json!({"default": null, "templates": []})
    );
    assert_eq!(json["apps"], serde_json::json!([]));
    let err = &json["errors"][0];
    assert_eq!(err["section"], "triggers");
    assert_eq!(err["index"], 1);
    assert_eq!(err["slug"], "a-bad");
    assert!(err["message"].as_str().unwrap().contains("cron"));
    assert!(json["warnings"].is_array());
}

#[test]
fn explicit_path_and_global_json_flag_position() {
    let dir = dir_with(GOOD);
    let file = dir.path().join("kortix.toml");
    let out = kortix(
        &["--json", "manifest", "check", file.to_str().unwrap()],
        Path::new("/"),
    );
    assert_eq!(out.status.code(), Some(0));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
    // A directory means its kortix.toml.
    let out = kortix(
        &["manifest", "check", "--json", dir.path().to_str().unwrap()],
        Path::new("/"),
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn human_output_lists_errors_with_section_index_and_slug() {
    let dir = dir_with(GOOD);
    let out = kortix(&["manifest", "check"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1 error"), "{text}");
    assert!(text.contains("triggers[1] \"a-bad\":"), "{text}");
    assert!(text.contains("b-good"), "{text}");
}

#[test]
fn rejected_manifests_exit_1_naming_file_and_cause() {
    for (text, cause) in [
        ("kortix_version = 2", "unsupported kortix_version"),
        ("kortix_version = \"banana\"", "invalid kortix_version"),
        ("this is [not toml", "not valid TOML"),
    ] {
        let dir = dir_with(text);
        let out = kortix(&["manifest", "check", "--json"], dir.path());
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(out.stdout.is_empty(), "nothing on stdout when rejected");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains("kortix.toml"), "{stderr}");
        assert!(stderr.contains(cause), "{stderr}");
    }
}

#[test]
fn missing_file_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = kortix(&["manifest", "check"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("kortix.toml"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        kortix(&["manifest", "frobnicate"], dir.path())
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        kortix(&["manifest", "check", "--bogus"], dir.path())
            .status
            .code(),
        Some(2)
    );
}
