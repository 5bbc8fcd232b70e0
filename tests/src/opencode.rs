//! The pinned OpenCode release, installed from npm by the tests themselves (once per cache
//! directory, under a file lock so parallel test processes install it once: [`npm`]), and
//! its config.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{HarnessError, io_context, npm};

pub const OPENCODE_VERSION: &str = "1.18.33";

/// Path of the `opencode` binary of [`OPENCODE_VERSION`], installing it if needed.
///
/// The cache is `$KORTIX_TEST_CACHE`, else `<cargo target dir>/opencode-cache`.
pub fn opencode_bin() -> Result<PathBuf, HarnessError> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        npm::install_locked(
            &format!("opencode-{OPENCODE_VERSION}"),
            "opencode-ai",
            OPENCODE_VERSION,
            find_binary,
        )
        .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(HarnessError::Install)
}

/// Where control planes under test install OpenCode's packages for their sandboxes
/// (`ServerConfig::opencode_packages`): shared by every test, beside the pinned OpenCode, so
/// they are installed once per cache like OpenCode itself.
pub fn opencode_packages_dir() -> PathBuf {
    npm::cache_dir().join("opencode-packages")
}

/// The platform package's binary (the `opencode-ai` wrapper needs a postinstall step that npm
/// may not run); the first candidate that reports the pinned version wins.
fn find_binary(prefix: &Path) -> Option<PathBuf> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => other,
    };
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let modules = prefix.join("node_modules");
    let candidates = [
        modules.join(format!("opencode-{os}-{arch}/bin/opencode")),
        modules.join(format!("opencode-{os}-{arch}-baseline/bin/opencode")),
        modules.join(format!("opencode-{os}-{arch}-musl/bin/opencode")),
        modules.join(format!("opencode-{os}-{arch}-baseline-musl/bin/opencode")),
        modules.join("opencode-ai/bin/opencode.exe"),
    ];
    candidates.into_iter().find(|bin| {
        bin.is_file()
            && Command::new(bin)
                .arg("--version")
                .env("HOME", std::env::temp_dir())
                .output()
                .is_ok_and(|o| {
                    o.status.success()
                        && String::from_utf8_lossy(&o.stdout).trim() == OPENCODE_VERSION
                })
    })
}

/// Writes `<dir>/opencode.json` pointing OpenCode at the scripted model on `model_port`
/// (loopback only, no sharing, no autoupdate, edits and bash allowed).
pub fn opencode_config(dir: &Path, model_port: u16) -> Result<PathBuf, HarnessError> {
    std::fs::create_dir_all(dir).map_err(io_context(format!("creating {}", dir.display())))?;
    let config = serde_json::json!({
        "model": "scripted/scripted",
        "provider": { "scripted": {
            "npm": "@ai-sdk/openai-compatible",
            "name": "Scripted",
            "options": { "baseURL": format!("http://127.0.0.1:{model_port}/v1"), "apiKey": "unused" },
            "models": { "scripted": { "name": "Scripted" } }
        } },
        "permission": { "edit": "allow", "bash": "allow" },
        "autoupdate": false,
        "share": "disabled"
    });
    let path = dir.join("opencode.json");
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    std::fs::write(&path, text).map_err(io_context(format!("writing {}", path.display())))?;
    Ok(path)
}

/// A private HOME for one test's OpenCode, so tests share no state.
pub struct OpencodeHome {
    pub home: PathBuf,
}

impl OpencodeHome {
    pub fn new(dir: &Path) -> Result<Self, HarnessError> {
        let home = dir.join("home");
        std::fs::create_dir_all(&home)
            .map_err(io_context(format!("creating {}", home.display())))?;
        Ok(OpencodeHome { home })
    }

    /// Environment for OpenCode: the private HOME (and XDG dirs under it), PATH, and a git
    /// identity that never reads the developer's global config.
    pub fn env(&self) -> Vec<(String, String)> {
        let h = self.home.display().to_string();
        vec![
            ("HOME".into(), h.clone()),
            ("XDG_CONFIG_HOME".into(), format!("{h}/.config")),
            ("XDG_DATA_HOME".into(), format!("{h}/.local/share")),
            ("XDG_CACHE_HOME".into(), format!("{h}/.cache")),
            ("XDG_STATE_HOME".into(), format!("{h}/.local/state")),
            (
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            ),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ]
    }
}
