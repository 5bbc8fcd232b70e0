//! OpenCode's own npm packages, installed once per OpenCode version by the control plane and
//! shared read-only into every local sandbox, so that starting a session does no I/O to a
//! package registry.
//!
//! What OpenCode fetches at first start (checked against its source for the pinned release):
//! for every config directory it loads — the global one (`$XDG_CONFIG_HOME/opencode`) and the
//! project's (`OPENCODE_CONFIG_DIR`) — it installs `@opencode-ai/plugin@<its version>` (the SDK
//! that a project's plugins and custom tools import) with npm's Arborist, into that directory,
//! unless the directory already has a `node_modules` whose lockfile names every dependency of
//! its `package.json`. That is ~160 MB per session for 1.18.33 (64 MB in each of the two
//! directories, 31 MB of `~/.npm`). Provider
//! packages of a config (`"npm": "@ai-sdk/…"`) that OpenCode bundles are not fetched; others go
//! to `$XDG_CACHE_HOME/opencode/packages/<spec>`, see [`PACKAGES_DIR`].
//!
//! The control plane installs the set once under `<data-dir>/opencode-packages/<version>`
//! (staged and renamed into place, under a file lock, so concurrent servers on one directory
//! install it once); the agent links it into OpenCode's directories before OpenCode starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::sync::OnceCell;

/// The package OpenCode installs into every config directory, at its own version.
pub const PLUGIN_PACKAGE: &str = "@opencode-ai/plugin";
/// Inside an installed set: an npm prefix holding [`PLUGIN_PACKAGE`] (its `package.json`,
/// `package-lock.json` and `node_modules`), shaped as OpenCode leaves a config directory.
pub const CONFIG_DIR: &str = "config";
/// Inside an installed set: provider packages in OpenCode's cache layout
/// (`packages/<spec>/node_modules/<name>`).
pub const PACKAGES_DIR: &str = "packages";
/// Bounds one npm run: its own network timeout and retries, and the whole install.
const NPM_FETCH_TIMEOUT_MS: u32 = 60_000;
const NPM_FETCH_RETRIES: u32 = 2;
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);
/// Provider packages OpenCode 1.18.33 ships inside its binary: a config naming one of these
/// exactly (without a version) makes OpenCode fetch nothing for it.
pub const BUNDLED_PROVIDERS: &[&str] = &[
    "@ai-sdk/amazon-bedrock",
    "@ai-sdk/amazon-bedrock/mantle",
    "@ai-sdk/anthropic",
    "@ai-sdk/azure",
    "@ai-sdk/google",
    "@ai-sdk/google-vertex",
    "@ai-sdk/google-vertex/anthropic",
    "@ai-sdk/openai",
    "@ai-sdk/openai-compatible",
    "@openrouter/ai-sdk-provider",
    "@ai-sdk/xai",
    "@ai-sdk/mistral",
    "@ai-sdk/groq",
    "@ai-sdk/deepinfra",
    "@ai-sdk/cerebras",
    "@ai-sdk/cohere",
    "@ai-sdk/gateway",
    "@ai-sdk/togetherai",
    "@ai-sdk/perplexity",
    "@ai-sdk/vercel",
    "@ai-sdk/alibaba",
    "gitlab-ai-provider",
    "@ai-sdk/github-copilot",
    "venice-ai-sdk-provider",
];
/// At most this many provider packages of one config are installed.
const MAX_PROVIDER_SPECS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum PackagesError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{bin} --version` {message}")]
    Version { bin: String, message: String },
    #[error("npm install of {spec} into {dir} failed ({status}): {stderr}")]
    Npm {
        spec: String,
        dir: String,
        status: String,
        stderr: String,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PackagesError {
    let context = context.into();
    move |source| PackagesError::Io { context, source }
}

/// The installed set for one OpenCode binary, resolved once per control plane.
pub struct OpencodePackages {
    root: PathBuf,
    opencode_bin: PathBuf,
    npm: PathBuf,
    installed: OnceCell<Option<PathBuf>>,
    /// Provider specs whose install failed, not tried again by this process (every session
    /// start would otherwise wait for the same failing npm run).
    failed: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl OpencodePackages {
    /// `root` holds one directory per OpenCode version; `opencode_bin` is the OpenCode the
    /// sandboxes run (its `--version` names the set).
    pub fn new(root: PathBuf, opencode_bin: PathBuf) -> Self {
        Self {
            root,
            opencode_bin,
            npm: PathBuf::from("npm"),
            installed: OnceCell::new(),
            failed: Default::default(),
        }
    }

    /// Uses this npm instead of the one on `PATH`.
    pub fn with_npm(mut self, npm: PathBuf) -> Self {
        self.npm = npm;
        self
    }

    /// The installed set, installing it on the first call (concurrent callers wait for the
    /// same install). `None` when it cannot be had — no npm, no registry — which is logged
    /// once: sandboxes then fetch the packages themselves, as OpenCode does by default.
    pub async fn get(&self) -> Option<PathBuf> {
        self.installed
            .get_or_init(|| async {
                let root = self.root.clone();
                let bin = self.opencode_bin.clone();
                let npm = self.npm.clone();
                let started = std::time::Instant::now();
                let result =
                    tokio::task::spawn_blocking(move || ensure_installed(&root, &bin, &npm))
                        .await
                        .unwrap_or_else(|e| {
                            Err(PackagesError::Io {
                                context: "the install task".into(),
                                source: std::io::Error::other(e.to_string()),
                            })
                        });
                match result {
                    Ok(dir) => {
                        tracing::info!(dir = %dir.display(), ms = started.elapsed().as_millis() as u64, "OpenCode's packages ready for sandboxes");
                        Some(dir)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "OpenCode's packages are not installed: each sandbox's OpenCode fetches them from the registry itself");
                        None
                    }
                }
            })
            .await
            .clone()
    }
}

impl OpencodePackages {
    /// [`Self::get`], plus the provider packages `specs` (installed into the set's
    /// `packages/` on first use, one npm run each; see [`provider_specs`]).
    pub async fn get_with(&self, specs: &[String]) -> Option<PathBuf> {
        let dir = self.get().await?;
        for spec in specs.iter().take(MAX_PROVIDER_SPECS) {
            if provider_installed(&dir, spec) || self.failed_before(spec) {
                continue;
            }
            let (set, wanted, npm) = (dir.clone(), spec.clone(), self.npm.clone());
            let result =
                tokio::task::spawn_blocking(move || install_provider(&set, &wanted, &npm)).await;
            match result {
                Ok(Ok(())) => {
                    tracing::info!(spec, "OpenCode provider package installed for sandboxes")
                }
                Ok(Err(e)) => {
                    tracing::warn!(spec, error = %e, "OpenCode provider package not installed: sandboxes fetch it themselves");
                    self.failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(spec.clone());
                }
                Err(e) => {
                    tracing::warn!(spec, error = %e, "installing an OpenCode provider package")
                }
            }
        }
        Some(dir)
    }

    fn failed_before(&self, spec: &str) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(spec)
    }
}

/// The npm packages an OpenCode config (JSON with comments) names for its providers
/// (`provider.<id>.npm`, and a model's own `provider.npm`) that OpenCode does not bundle and
/// that are plain registry specs (`name` or `@scope/name`, either with `@version`).
pub fn provider_specs(config: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&strip_jsonc(config)) else {
        return Vec::new();
    };
    let mut specs = Vec::new();
    for provider in value["provider"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        specs.extend(provider["npm"].as_str().map(str::to_owned));
        for model in provider["models"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            specs.extend(model["provider"]["npm"].as_str().map(str::to_owned));
        }
    }
    specs.retain(|s| !BUNDLED_PROVIDERS.contains(&s.as_str()) && package_name(s).is_some());
    specs.sort();
    specs.dedup();
    specs
}

/// The package name of a registry spec (`@scope/name@1` → `@scope/name`), or `None` for
/// anything else (paths, URLs, git specs, names that could climb out of a directory).
pub fn package_name(spec: &str) -> Option<&str> {
    if spec.is_empty() || spec.len() > 256 || spec.contains("..") {
        return None;
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"@/._-~^".contains(&b);
    if !spec.bytes().all(allowed) {
        return None;
    }
    let end = match spec.strip_prefix('@') {
        Some(rest) => rest.find('@').map_or(spec.len(), |i| i + 1),
        None => spec.find('@').unwrap_or(spec.len()),
    };
    let name = &spec[..end];
    let version = &spec[end..];
    let shaped = if name.starts_with('@') {
        name.matches('/').count() == 1 && !name.ends_with('/') && !name.contains("@/")
    } else {
        !name.contains('/')
    };
    let version_ok = !version.contains('/');
    (shaped && version_ok && !name.starts_with('.') && name.len() > 1).then_some(name)
}

/// Whether `spec` is where OpenCode looks for it: `packages/<spec>/node_modules/<name>`.
fn provider_installed(set: &Path, spec: &str) -> bool {
    installed_in(&set.join(PACKAGES_DIR).join(spec), spec)
}

fn installed_in(prefix: &Path, spec: &str) -> bool {
    package_name(spec).is_some_and(|name| {
        prefix
            .join("node_modules")
            .join(name)
            .join("package.json")
            .is_file()
    })
}

/// An exclusive lock on `path` (created if missing), held until the guard drops: one
/// installer at a time across processes sharing the directory.
fn lock_exclusive(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, PackagesError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
        PackagesError::Io {
            context: format!("locking {}", path.display()),
            source: e.into(),
        }
    })
}

fn install_provider(set: &Path, spec: &str, npm: &Path) -> Result<(), PackagesError> {
    let packages = set.join(PACKAGES_DIR);
    let lock_path = packages.join(".install.lock");
    let _lock = lock_exclusive(&lock_path)?;
    if provider_installed(set, spec) {
        return Ok(());
    }
    let staging = packages.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = npm_install(npm, &staging, spec).and_then(|()| {
        if !installed_in(&staging, spec) {
            return Err(PackagesError::Npm {
                spec: spec.to_string(),
                dir: staging.display().to_string(),
                status: "exit status 0".into(),
                stderr: "npm succeeded but the package is not in node_modules".into(),
            });
        }
        let target = packages.join(spec);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        let _ = std::fs::remove_dir_all(&target);
        std::fs::rename(&staging, &target).map_err(io(format!(
            "moving {} to {}",
            staging.display(),
            target.display()
        )))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Removes `//` and `/* */` comments outside strings and trailing commas, which OpenCode's
/// JSONC reader accepts.
fn strip_jsonc(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if in_string {
            out.push(c);
            if c == '\\' {
                out.extend(next);
                i += 1;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
            out.push(' ');
            continue;
        } else if c == ',' {
            let mut j = i + 1;
            let mut closes = false;
            while j < chars.len() {
                match chars[j] {
                    w if w.is_whitespace() => j += 1,
                    '/' if chars.get(j + 1) == Some(&'/') => {
                        while j < chars.len() && chars[j] != '\n' {
                            j += 1;
                        }
                    }
                    '/' if chars.get(j + 1) == Some(&'*') => {
                        j += 2;
                        while j < chars.len()
                            && !(chars[j] == '*' && chars.get(j + 1) == Some(&'/'))
                        {
                            j += 1;
                        }
                        j += 2;
                    }
                    '}' | ']' => {
                        closes = true;
                        break;
                    }
                    _ => break,
                }
            }
            if !closes {
                out.push(c);
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// The OpenCode version `bin` reports.
pub fn opencode_version(bin: &Path) -> Result<String, PackagesError> {
    let home = tempfile_dir()?;
    let mut child = Command::new(bin)
        .arg("--version")
        // A throwaway HOME: the version check must not leave OpenCode state anywhere.
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| PackagesError::Version {
            bin: bin.display().to_string(),
            message: format!("cannot run: {e}"),
        })?;
    let output = wait_bounded(&mut child, VERSION_TIMEOUT);
    let _ = std::fs::remove_dir_all(&home);
    let output = output.map_err(|message| PackagesError::Version {
        bin: bin.display().to_string(),
        message,
    })?;
    let version = output.trim().to_string();
    if !is_version(&version) {
        return Err(PackagesError::Version {
            bin: bin.display().to_string(),
            message: format!("printed {:?}, not a version", truncate(&version, 80)),
        });
    }
    Ok(version)
}

/// `<root>/<version>` with [`PLUGIN_PACKAGE`] installed, installing it when missing.
pub fn ensure_installed(
    root: &Path,
    opencode_bin: &Path,
    npm: &Path,
) -> Result<PathBuf, PackagesError> {
    let version = opencode_version(opencode_bin)?;
    std::fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
    let dir = root.join(&version);
    if is_complete(&dir) {
        return Ok(dir);
    }
    let lock_path = root.join(format!("{version}.lock"));
    let _lock = lock_exclusive(&lock_path)?;
    if is_complete(&dir) {
        return Ok(dir);
    }
    let staging = root.join(format!(".staging-{version}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = install_into(&staging, &version, npm).and_then(|()| {
        // A leftover incomplete directory (a crash between rename and nothing else can
        // leave one only by hand) is replaced.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
        }
        std::fs::rename(&staging, &dir).map_err(io(format!(
            "moving {} to {}",
            staging.display(),
            dir.display()
        )))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.map(|()| dir)
}

/// Whether `dir` is an installed set (it only ever appears complete, by rename).
fn is_complete(dir: &Path) -> bool {
    dir.join(CONFIG_DIR)
        .join("node_modules")
        .join(PLUGIN_PACKAGE)
        .join("package.json")
        .is_file()
        && dir.join(CONFIG_DIR).join("package-lock.json").is_file()
}

fn install_into(staging: &Path, version: &str, npm: &Path) -> Result<(), PackagesError> {
    let config = staging.join(CONFIG_DIR);
    std::fs::create_dir_all(staging.join(PACKAGES_DIR))
        .map_err(io(format!("creating {}", staging.display())))?;
    let spec = format!("{PLUGIN_PACKAGE}@{version}");
    npm_install(npm, &config, &spec)?;
    if !is_complete(staging) {
        return Err(PackagesError::Npm {
            spec,
            dir: config.display().to_string(),
            status: "exit status 0".into(),
            stderr: "npm succeeded but left no package-lock.json or package".into(),
        });
    }
    Ok(())
}

/// `npm install SPEC` into the prefix `dir` (its `package.json` and lockfile written),
/// without install scripts, with bounded network retries.
fn npm_install(npm: &Path, dir: &Path, spec: &str) -> Result<(), PackagesError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let output = Command::new(npm)
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--save-exact",
            "--loglevel=error",
            &format!("--fetch-timeout={NPM_FETCH_TIMEOUT_MS}"),
            &format!("--fetch-retries={NPM_FETCH_RETRIES}"),
            "--prefix",
        ])
        .arg(dir)
        .arg(spec)
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!(
            "running {} (is Node.js installed?)",
            npm.display()
        )))?;
    if !output.status.success() {
        return Err(PackagesError::Npm {
            spec: spec.to_string(),
            dir: dir.display().to_string(),
            status: output.status.to_string(),
            stderr: truncate(String::from_utf8_lossy(&output.stderr).trim(), 2000),
        });
    }
    Ok(())
}

/// Waits for `child` at most `limit` (killing it then); its stdout.
fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> Result<String, String> {
    use std::io::Read as _;
    let deadline = std::time::Instant::now() + limit;
    let mut backoff = Duration::from_millis(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    let _ = stdout.read_to_string(&mut out);
                }
                return if status.success() {
                    Ok(out)
                } else {
                    Err(format!("failed ({status})"))
                };
            }
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {} s", limit.as_secs()));
            }
            Ok(None) => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("waiting failed: {e}")),
        }
    }
}

fn tempfile_dir() -> Result<PathBuf, PackagesError> {
    let dir = std::env::temp_dir().join(format!(
        "kortix-opencode-version-{}-{}",
        std::process::id(),
        crate::clock::now_ms()
    ));
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// `1.18.33`, `1.2.0-beta.1`: digits and dots first, then at most a short suffix; never a
/// path component that could climb (`..`, `/`).
fn is_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'+')
        && !v.contains("..")
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A stand-in for npm that lays out what `npm install --prefix DIR SPEC` leaves (the
    /// package in `node_modules`, `package.json`, a lockfile naming it), and counts its runs.
    fn fake_npm(dir: &Path) -> PathBuf {
        let count = dir.join("npm-runs");
        script(
            dir,
            "npm",
            &format!(
                r#"echo "$*" >> '{}'
while [ "$1" != --prefix ]; do shift; done
prefix=$2; spec=$3
case "$spec" in
  @*) rest=${{spec#@}}; name="@${{rest%%@*}}" ;;
  *) name=${{spec%%@*}} ;;
esac
mkdir -p "$prefix/node_modules/$name"
echo '{{}}' > "$prefix/node_modules/$name/package.json"
echo "{{\"dependencies\":{{\"$name\":\"${{spec##*@}}\"}}}}" > "$prefix/package.json"
echo "{{\"packages\":{{\"\":{{\"dependencies\":{{\"$name\":\"1\"}}}}}}}}" > "$prefix/package-lock.json"
"#,
                count.display()
            ),
        )
    }

    #[test]
    fn installs_once_per_version_and_names_the_set_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let opencode = script(dir.path(), "opencode", "echo 9.8.7\n");
        let npm = fake_npm(dir.path());
        let root = dir.path().join("opencode-packages");
        let installed = ensure_installed(&root, &opencode, &npm).unwrap();
        assert_eq!(installed, root.join("9.8.7"));
        let manifest = std::fs::read_to_string(installed.join("config/package.json")).unwrap();
        assert!(
            manifest.contains("\"@opencode-ai/plugin\":\"9.8.7\""),
            "{manifest}"
        );
        assert!(installed.join(PACKAGES_DIR).is_dir());
        assert_eq!(ensure_installed(&root, &opencode, &npm).unwrap(), installed);
        let runs = std::fs::read_to_string(dir.path().join("npm-runs")).unwrap();
        assert_eq!(runs.lines().count(), 1, "installed once");
        let leftovers: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".staging"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_failed_install_leaves_nothing_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let opencode = script(dir.path(), "opencode", "echo 1.0.0\n");
        let npm = script(
            dir.path(),
            "npm",
            "echo 'E404 registry says no' >&2\nexit 1\n",
        );
        let root = dir.path().join("packages");
        let err = ensure_installed(&root, &opencode, &npm)
            .unwrap_err()
            .to_string();
        assert!(err.contains("@opencode-ai/plugin@1.0.0"), "{err}");
        assert!(err.contains("E404 registry says no"), "{err}");
        let names: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn a_binary_that_prints_no_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for body in ["echo ../../etc\n", "echo\n", "exit 3\n"] {
            let opencode = script(dir.path(), "opencode", body);
            let err = opencode_version(&opencode).unwrap_err().to_string();
            assert!(err.contains("--version"), "{err}");
        }
        let err = opencode_version(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot run"), "{err}");
    }

    #[tokio::test]
    async fn provider_packages_are_installed_where_opencode_looks_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let opencode = script(
            dir.path(),
            "opencode",
            "echo 1.18.33
",
        );
        let npm = fake_npm(dir.path());
        let packages = OpencodePackages::new(dir.path().join("root"), opencode).with_npm(npm);
        let specs = vec![
            "@acme/provider@2.1.0".to_string(),
            "plain-provider".to_string(),
        ];
        let set = packages.get_with(&specs).await.unwrap();
        for (spec, name) in [
            ("@acme/provider@2.1.0", "@acme/provider"),
            ("plain-provider", "plain-provider"),
        ] {
            let at = set
                .join("packages")
                .join(spec)
                .join("node_modules")
                .join(name);
            assert!(at.join("package.json").is_file(), "{}", at.display());
        }
        assert_eq!(packages.get_with(&specs).await, Some(set));
        let runs = std::fs::read_to_string(dir.path().join("npm-runs")).unwrap();
        assert_eq!(
            runs.lines().count(),
            3,
            "the plugin and two providers, once each: {runs}"
        );
    }

    #[test]
    fn a_config_names_the_provider_packages_opencode_does_not_bundle() {
        let config = r#"{
          // JSON with comments, as OpenCode reads it
          "provider": {
            "mine": { "npm": "@acme/provider@2", "models": {
              "m": { "provider": { "npm": "other-provider" } } } },
            "bundled": { "npm": "@ai-sdk/openai-compatible", },
            "pinned": { "npm": "@ai-sdk/openai-compatible@1.0.0" },
            /* not registry specs */
            "local": { "npm": "file:///opt/provider" },
            "climb": { "npm": "../../etc" },
            "url": { "npm": "https://example.com/p.tgz" },
          },
        }"#;
        assert_eq!(
            provider_specs(config),
            vec![
                "@acme/provider@2".to_string(),
                "@ai-sdk/openai-compatible@1.0.0".to_string(),
                "other-provider".to_string(),
            ]
        );
        assert!(provider_specs("not json").is_empty());
        assert!(provider_specs(r#"{"url": "http://x//y", "provider": {}}"#).is_empty());
    }

    #[test]
    fn package_names_come_only_from_registry_specs() {
        assert_eq!(package_name("@acme/p@2.0.0"), Some("@acme/p"));
        assert_eq!(package_name("@acme/p"), Some("@acme/p"));
        assert_eq!(package_name("left-pad@^1"), Some("left-pad"));
        for bad in [
            "", "@acme", "@/x", "a/b", "../x", ".hidden", "x y", "@a/b/c", "p@1/2",
        ] {
            assert_eq!(package_name(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn get_is_none_when_the_install_fails() {
        let dir = tempfile::tempdir().unwrap();
        let packages = OpencodePackages::new(dir.path().join("p"), dir.path().join("missing"));
        assert_eq!(packages.get().await, None);
    }
}
