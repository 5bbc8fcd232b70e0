//! Getting the session branch into the workspace with gix over the control plane's git smart
//! HTTP endpoint (clone, or fetch when the workspace already has the repository), with
//! credentials fetched just in time, and preparing the repository for plain `git` (identity,
//! credential helper, CA for HTTPS).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use gix::bstr::ByteSlice;
use gix::credentials::helper::{Action, NextAction};
use gix::credentials::protocol::Outcome;
use gix::sec::identity::Account;

#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error("workspace {path} is not empty and holds no git repository")]
    NotEmpty { path: PathBuf },
    #[error("{step} {url} into {path}: {message}")]
    Git {
        step: &'static str,
        url: String,
        path: PathBuf,
        message: String,
    },
    #[error("configuring {path}: {message}")]
    Config { path: PathBuf, message: String },
}

impl CloneError {
    /// Whether the remote could not be reached at all (connection refused, reset or timed
    /// out, no route): worth another attempt, unlike a refusal or a missing branch.
    pub fn is_unreachable(&self) -> bool {
        let CloneError::Git { message, .. } = self else {
            return false;
        };
        let m = message.to_ascii_lowercase();
        [
            "connection refused",
            "connection reset",
            "timed out",
            "no route to host",
            "network is unreachable",
            "error trying to connect",
            "tcp connect error",
        ]
        .iter()
        .any(|needle| m.contains(needle))
    }
}

/// Answers git's credential question for (protocol, host, path) with (username, password).
pub type CredentialFn =
    Arc<dyn Fn(&str, &str, &str) -> Result<(String, String), String> + Send + Sync>;

pub struct CloneSpec<'a> {
    pub repo_url: &'a str,
    pub branch: &'a str,
    /// Fetched beside the session branch (OpenCode diffs against it); empty for none.
    pub default_branch: &'a str,
    pub workspace: &'a Path,
    /// CA to trust for an `https://` repository URL (the control plane's).
    pub ca_pem: Option<&'a str>,
    pub credentials: CredentialFn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloneOutcome {
    Cloned,
    Fetched,
}

/// Clones `branch` into an empty (or missing) workspace, or fetches if it has the repository.
/// Blocking: run it on a blocking thread.
pub fn clone_or_fetch(spec: &CloneSpec<'_>) -> Result<CloneOutcome, CloneError> {
    let ws = spec.workspace;
    let git_err = |step: &'static str, message: String| CloneError::Git {
        step,
        url: spec.repo_url.to_owned(),
        path: ws.to_owned(),
        message,
    };
    if !cleartext_ok(spec.repo_url) {
        return Err(git_err(
            "refusing to clone",
            "the repository URL is plain http to a non-loopback host, so the session's git \
             token would cross the network in clear text; serve the control plane's public \
             URL over https (or set KORTIX_ALLOW_CLEARTEXT_GIT=1 on a trusted network)"
                .into(),
        ));
    }
    if ws.join(".git").exists() {
        fetch(spec).map_err(|m| git_err("fetching", m))?;
        return Ok(CloneOutcome::Fetched);
    }
    if ws.exists()
        && std::fs::read_dir(ws)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(CloneError::NotEmpty {
            path: ws.to_owned(),
        });
    }
    let interrupt = AtomicBool::new(false);
    let creds = spec.credentials.clone();
    let ca = spec.ca_pem.map(str::to_owned);
    let refspecs = fetch_refspecs(spec.branch, spec.default_branch);
    let mut prepare = gix::prepare_clone(spec.repo_url, ws)
        .map_err(|e| git_err("preparing to clone", e.to_string()))?
        .with_ref_name(Some(spec.branch))
        .map_err(|e| git_err("naming the branch of", e.to_string()))?
        // Every session adds a branch to the project, and any of them may be huge: fetch
        // only the session's branch and the default branch, now and on later fetches.
        .configure_remote(move |mut remote| {
            remote
                .replace_refspecs(
                    refspecs.iter().map(String::as_str),
                    gix::remote::Direction::Fetch,
                )
                .map_err(gix::Error::from_error)?;
            Ok(remote)
        })
        .configure_connection(move |conn| {
            conn.set_credentials(credential_callback(creds.clone()));
            if let Some(ca) = &ca {
                conn.set_transport_options(http_options(ca)?);
            }
            Ok(())
        });
    let (mut checkout, _) = prepare
        .fetch_then_checkout(gix::progress::Discard, &interrupt)
        .map_err(|e| git_err("cloning", error_text(&e)))?;
    checkout
        .main_worktree(gix::progress::Discard, &interrupt)
        .map_err(|e| git_err("checking out", error_text(&e)))?;
    Ok(CloneOutcome::Cloned)
}

/// The remote-tracking refspecs of a session's clone: its branch and the default branch.
fn fetch_refspecs(branch: &str, default_branch: &str) -> Vec<String> {
    let mut specs = vec![format!("+refs/heads/{branch}:refs/remotes/origin/{branch}")];
    if !default_branch.is_empty() && default_branch != branch {
        specs.push(format!(
            "+refs/heads/{default_branch}:refs/remotes/origin/{default_branch}"
        ));
    }
    specs
}

/// Credentials go over plain http only to this machine (the quickstart's loopback control
/// plane) or where the operator said the network is trusted.
fn cleartext_ok(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return true;
    };
    if std::env::var_os("KORTIX_ALLOW_CLEARTEXT_GIT").is_some_and(|v| v == "1") {
        return true;
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn fetch(spec: &CloneSpec<'_>) -> Result<(), String> {
    let repo = gix::open(spec.workspace).map_err(|e| e.to_string())?;
    let remote = repo.find_remote("origin").map_err(|e| e.to_string())?;
    let mut conn = remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| error_text(&e))?;
    conn.set_credentials(credential_callback(spec.credentials.clone()));
    if let Some(ca) = spec.ca_pem {
        conn.set_transport_options(http_options(ca).map_err(|e| e.to_string())?);
    }
    let interrupt = AtomicBool::new(false);
    conn.prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| error_text(&e))?
        .receive(gix::progress::Discard, &interrupt)
        .map_err(|e| error_text(&e))?;
    Ok(())
}

fn error_text(e: &dyn std::error::Error) -> String {
    crate::enroll::error_chain(e)
}

/// gix's credential hook: `get` asks `creds`; store/erase are no-ops (nothing is kept).
fn credential_callback(
    creds: CredentialFn,
) -> impl FnMut(Action) -> gix::Result<Option<Outcome>> + 'static {
    move |action| match action {
        Action::Get(ctx) => {
            let mut protocol = ctx.protocol.clone().unwrap_or_default();
            let mut host = ctx.host.clone().unwrap_or_default();
            let mut path = ctx
                .path
                .as_ref()
                .map(|p| p.to_str_lossy().into_owned())
                .unwrap_or_default();
            // gix may hand over only the URL; split it the way git's helpers receive it.
            if (protocol.is_empty() || host.is_empty())
                && let Some(t) = ctx
                    .url
                    .as_ref()
                    .and_then(|u| crate::credentials::RepoTarget::from_url(&u.to_str_lossy()))
            {
                protocol = t.protocol;
                host = t.host;
                if path.is_empty() {
                    path = t.path;
                }
            }
            match creds(&protocol, &host, &path) {
                Ok((username, password)) => {
                    let mut next = ctx.clone();
                    next.username = Some(username.clone());
                    next.password = Some(password.clone());
                    Ok(Some(Outcome {
                        identity: Account {
                            username,
                            password,
                            oauth_refresh_token: None,
                        },
                        next: NextAction::from(next),
                    }))
                }
                Err(message) => Err(gix::Error::from_error(std::io::Error::other(format!(
                    "git credentials unavailable: {message}"
                )))),
            }
        }
        Action::Store(_) | Action::Erase(_) => Ok(None),
    }
}

/// HTTP transport options trusting only the control plane's CA.
fn http_options(ca_pem: &str) -> gix::Result<Box<dyn std::any::Any>> {
    use gix::protocol::transport::client::blocking_io::http;
    let tls = crate::tls::client_config(ca_pem, &[b"h2", b"http/1.1"])
        .map_err(|e| gix::Error::from_error(std::io::Error::other(e.to_string())))?;
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| {
            Ok(builder.tls_backend_preconfigured(tls.clone()))
        })),
        configure_request: None,
    };
    let options = http::Options {
        backend: Some(Arc::new(Mutex::new(backend))),
        ..Default::default()
    };
    Ok(Box::new(options))
}

/// What the workspace's `.git/config` gets so that OpenCode's plain `git` works.
pub struct RepoSetup<'a> {
    pub branch: &'a str,
    pub author_name: &'a str,
    pub author_email: &'a str,
    /// `credential.helper` value, e.g. `!'/usr/bin/kortix-agent' git-credential --socket '/x/s'`.
    pub credential_helper: &'a str,
    /// CA file for `http.sslCAInfo` (https remotes).
    pub ca_file: Option<&'a Path>,
}

pub fn configure_repo(workspace: &Path, setup: &RepoSetup<'_>) -> Result<(), CloneError> {
    let path = workspace.join(".git/config");
    let err = |message: String| CloneError::Config {
        path: path.clone(),
        message,
    };
    let mut file =
        gix::config::File::from_path_no_includes(path.clone(), gix::config::Source::Local)
            .map_err(|e| err(e.to_string()))?;
    fn set(
        file: &mut gix::config::File,
        section: &str,
        sub: Option<&str>,
        key: &str,
        value: &str,
    ) -> Result<(), String> {
        file.set_raw_value_by(section, sub.map(|s| s.as_bytes().as_bstr()), key, value)
            .map(|_| ())
            .map_err(|e| format!("{section}.{key}: {e}"))
    }
    if !setup.author_name.is_empty() {
        set(&mut file, "user", None, "name", setup.author_name).map_err(err)?;
    }
    if !setup.author_email.is_empty() {
        set(&mut file, "user", None, "email", setup.author_email).map_err(err)?;
    }
    // An empty value first clears helpers from other config files: no global helper may be
    // consulted for (or handed) the session token.
    set(&mut file, "credential", None, "helper", "").map_err(err)?;
    file.section_mut("credential", None)
        .map_err(|e| err(e.to_string()))?
        .push("helper", Some(setup.credential_helper.as_bytes().as_bstr()))
        .map_err(|e| err(e.to_string()))?;
    if let Some(ca) = setup.ca_file {
        set(
            &mut file,
            "http",
            None,
            "sslCAInfo",
            &ca.display().to_string(),
        )
        .map_err(err)?;
    }
    set(&mut file, "branch", Some(setup.branch), "remote", "origin").map_err(err)?;
    set(
        &mut file,
        "branch",
        Some(setup.branch),
        "merge",
        &format!("refs/heads/{}", setup.branch),
    )
    .map_err(err)?;
    set(&mut file, "push", None, "default", "upstream").map_err(err)?;
    let mut out = Vec::new();
    file.write_to(&mut out).map_err(|e| err(e.to_string()))?;
    let tmp = workspace.join(".git/config.kortix-tmp");
    std::fs::write(&tmp, &out).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn cleartext_credentials_only_to_loopback() {
        assert!(cleartext_ok("https://cp.example.com/git/a.git"));
        assert!(cleartext_ok("http://127.0.0.1:8008/git/a.git"));
        assert!(cleartext_ok("http://localhost:8008/git/a.git"));
        assert!(cleartext_ok("http://[::1]:8008/git/a.git"));
        assert!(cleartext_ok("http://x:tok@127.0.0.1/git/a.git"));
        assert!(!cleartext_ok("http://cp.example.com/git/a.git"));
        assert!(!cleartext_ok("http://10.0.0.5:8008/git/a.git"));
        assert!(!cleartext_ok("http://127.0.0.1.evil.com/git/a.git"));
    }

    #[test]
    fn an_unreachable_remote_is_worth_retrying_and_a_refusal_is_not() {
        // A port nothing listens on: connection refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{port}/git/app.git");
        let spec = CloneSpec {
            repo_url: &url,
            branch: "sess-1",
            default_branch: "main",
            workspace: &tmp.path().join("ws"),
            ca_pem: None,
            credentials: Arc::new(|_, _, _| Err("none".into())),
        };
        let err = clone_or_fetch(&spec).unwrap_err();
        assert!(err.is_unreachable(), "{err}");

        let full = tmp.path().join("full");
        std::fs::create_dir_all(&full).unwrap();
        std::fs::write(full.join("x"), "").unwrap();
        let err = clone_or_fetch(&CloneSpec {
            workspace: &full,
            ..spec
        })
        .unwrap_err();
        assert!(!err.is_unreachable(), "{err}");
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        kortix_tests::git::GitEnv::new().ok(dir, args)
    }

    #[test]
    fn clones_branch_configures_git_and_fetches_again() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        git(&src, &["init", "-q"]);
        std::fs::write(src.join("f.txt"), "main\n").unwrap();
        git(&src, &["add", "."]);
        git(&src, &["commit", "-q", "-m", "m"]);
        git(&src, &["checkout", "-q", "-b", "sess-1"]);
        std::fs::write(src.join("f.txt"), "session\n").unwrap();
        git(&src, &["commit", "-q", "-am", "s"]);
        let session_head = git(&src, &["rev-parse", "HEAD"]);
        // Another session's branch, with history of its own: never fetched.
        git(&src, &["checkout", "-q", "--orphan", "other"]);
        std::fs::write(src.join("f.txt"), "unrelated\n").unwrap();
        git(&src, &["commit", "-q", "-am", "other"]);
        let other_head = git(&src, &["rev-parse", "HEAD"]);
        git(&src, &["checkout", "-q", "main"]);
        let main_head = git(&src, &["rev-parse", "HEAD"]);

        let ws = tmp.path().join("ws");
        let url = format!("file://{}", src.display());
        let spec = CloneSpec {
            repo_url: &url,
            branch: "sess-1",
            default_branch: "main",
            workspace: &ws,
            ca_pem: None,
            credentials: Arc::new(|_, _, _| Err("no credentials for file://".into())),
        };
        assert_eq!(clone_or_fetch(&spec).unwrap(), CloneOutcome::Cloned);
        assert_eq!(
            std::fs::read_to_string(ws.join("f.txt")).unwrap(),
            "session\n"
        );
        assert_eq!(git(&ws, &["rev-parse", "HEAD"]), session_head);
        assert_eq!(git(&ws, &["rev-parse", "--abbrev-ref", "HEAD"]), "sess-1");
        assert_eq!(
            git(&ws, &["rev-parse", "refs/remotes/origin/main"]),
            main_head
        );
        let has_object = |sha: &str| {
            Command::new("git")
                .args(["cat-file", "-e", sha])
                .current_dir(&ws)
                .status()
                .unwrap()
                .success()
        };
        assert!(
            !has_object(&other_head),
            "another branch's objects were fetched"
        );

        configure_repo(
            &ws,
            &RepoSetup {
                branch: "sess-1",
                author_name: "Kortix Agent",
                author_email: "agent@kortix.invalid",
                credential_helper: "!'/usr/bin/kortix-agent' git-credential --socket '/run/x.sock'",
                ca_file: Some(Path::new("/tmp/ca.pem")),
            },
        )
        .unwrap();
        let cfg = |key: &str| {
            let out = Command::new("git")
                .args(["config", "--local", "--get-all", key])
                .current_dir(&ws)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
        };
        assert_eq!(cfg("user.name"), "Kortix Agent");
        assert_eq!(cfg("user.email"), "agent@kortix.invalid");
        assert_eq!(
            cfg("credential.helper"),
            "\n!'/usr/bin/kortix-agent' git-credential --socket '/run/x.sock'"
        );
        assert_eq!(cfg("http.sslcainfo"), "/tmp/ca.pem");
        assert_eq!(cfg("branch.sess-1.remote"), "origin");
        assert_eq!(cfg("branch.sess-1.merge"), "refs/heads/sess-1");

        // The branch moves upstream; a restarted agent fetches instead of cloning.
        git(&src, &["checkout", "-q", "sess-1"]);
        std::fs::write(src.join("g.txt"), "more\n").unwrap();
        git(&src, &["add", "."]);
        git(&src, &["commit", "-q", "-m", "more"]);
        let new_head = git(&src, &["rev-parse", "HEAD"]);
        assert_eq!(clone_or_fetch(&spec).unwrap(), CloneOutcome::Fetched);
        assert_eq!(
            git(&ws, &["rev-parse", "refs/remotes/origin/sess-1"]),
            new_head
        );
        assert!(
            !has_object(&other_head),
            "a later fetch took another branch"
        );

        let full = tmp.path().join("full");
        std::fs::create_dir_all(&full).unwrap();
        std::fs::write(full.join("x"), "").unwrap();
        let spec = CloneSpec {
            workspace: &full,
            ..spec
        };
        assert!(matches!(
            clone_or_fetch(&spec),
            Err(CloneError::NotEmpty { .. })
        ));
    }
}
