//! Importing an existing repository with `git clone --bare --no-local`.
//!
//! The `git` program is used rather than gix's clone because it speaks every transport and
//! protocol version the sources may need and copies history byte for byte; it runs isolated
//! from the machine's git configuration, restricted to the file and http(s) transports, and
//! bounded in time.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    command::{CommandError, redact_urls, run_git},
    names,
    refs::{self},
    repos::{ImportedRepo, RepoError, list_branches, open_bare, set_head},
};

/// Where an import reads from, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Url(String),
    LocalPath(PathBuf),
}

impl Source {
    fn parse(source: &str) -> Result<Self, String> {
        let source = source.trim();
        if source.is_empty() {
            return Err("the source is empty".into());
        }
        if source.starts_with('-') {
            return Err("the source must not start with '-'".into());
        }
        if source.chars().any(char::is_control) {
            return Err("the source contains control characters".into());
        }
        if let Some((scheme, _)) = source.split_once("://") {
            return match scheme.to_ascii_lowercase().as_str() {
                "file" | "http" | "https" => Ok(Source::Url(source.to_owned())),
                other => Err(format!(
                    "the {other}:// transport is not supported; use a local path, file://, http:// or https://"
                )),
            };
        }
        let path = Path::new(source);
        let path = path
            .canonicalize()
            .map_err(|e| format!("the path does not exist or cannot be read ({e})"))?;
        if !path.is_dir() {
            return Err("the path is not a directory".into());
        }
        Ok(Source::LocalPath(path))
    }

    fn as_arg(&self) -> &std::ffi::OsStr {
        match self {
            Source::Url(url) => url.as_ref(),
            Source::LocalPath(path) => path.as_os_str(),
        }
    }
}

/// Clones `source` into the (not yet existing) directory `dest` and makes it a project
/// repository: no remote left configured, `HEAD` on the default branch.
pub(crate) async fn clone_into(
    project_id: &str,
    source: &str,
    default_branch: Option<&str>,
    dest: &Path,
    timeout: Duration,
) -> Result<ImportedRepo, RepoError> {
    let source_desc = redact_urls(source.trim());
    let refuse = |reason: String| RepoError::Import {
        source_desc: source_desc.clone(),
        reason,
    };
    let command_failed = |error: CommandError| RepoError::ImportCommand {
        source_desc: source_desc.clone(),
        error: redact(error),
    };
    let parsed = Source::parse(source).map_err(&refuse)?;

    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    for setting in [
        "protocol.allow=never",
        "protocol.file.allow=always",
        "protocol.http.allow=always",
        "protocol.https.allow=always",
        "credential.helper=",
        // An import is a copy of history; hooks and filters of the source never run here.
        "core.hooksPath=/dev/null",
    ] {
        args.push("-c".as_ref());
        args.push(setting.as_ref());
    }
    for arg in ["clone", "--bare", "--no-local", "--quiet", "--"] {
        args.push(arg.as_ref());
    }
    args.push(parsed.as_arg());
    args.push(dest.as_os_str());
    run_git(args, None, timeout, "clone --bare")
        .await
        .map_err(command_failed)?;
    // The source URL may carry credentials; the project repository keeps no remote.
    run_git(
        ["config", "--remove-section", "remote.origin"],
        Some(dest),
        Duration::from_secs(30),
        "config --remove-section remote.origin",
    )
    .await
    .map_err(command_failed)?;

    let dest = dest.to_owned();
    let default_branch = default_branch.map(str::to_owned);
    let project_id = project_id.to_owned();
    let finish = move || finish(&project_id, &dest, default_branch.as_deref());
    match tokio::task::spawn_blocking(finish).await {
        Ok(result) => result.map_err(|reason| match reason {
            Finish::Refused(reason) => refuse(reason),
            Finish::Failed(err) => err,
        }),
        Err(join) => Err(refuse(format!("the import task failed: {join}"))),
    }
}

enum Finish {
    Refused(String),
    Failed(RepoError),
}

fn finish(
    project_id: &str,
    dest: &Path,
    default_branch: Option<&str>,
) -> Result<ImportedRepo, Finish> {
    let git_err = |action: &'static str| {
        move |message: String| {
            Finish::Failed(RepoError::Git {
                project_id: project_id.to_owned(),
                action,
                message,
            })
        }
    };
    let repo = open_bare(dest).map_err(git_err("opening the imported repository"))?;
    let branches = list_branches(&repo).map_err(git_err("listing imported branches"))?;
    if branches.is_empty() {
        return Err(Finish::Refused(
            "the source has no branches (is it an empty repository?)".into(),
        ));
    }
    let branch = match default_branch {
        Some(branch) => branch.to_owned(),
        None => {
            let head = repo
                .head_name()
                .map_err(|e| git_err("reading HEAD")(refs::chain(&e)))?;
            let head = head.map(|n| n.as_bstr().to_string());
            match head.as_deref().and_then(|h| h.strip_prefix("refs/heads/")) {
                Some(branch) => branch.to_owned(),
                None => {
                    return Err(Finish::Refused(
                        "the source's HEAD is not on a branch; name the default branch".into(),
                    ));
                }
            }
        }
    };
    let branch_ref = names::branch_ref(&branch).map_err(|e| Finish::Failed(e.into()))?;
    let Some(head) = branches.iter().find(|b| b.name == branch).map(|b| b.head) else {
        let known: Vec<&str> = branches.iter().take(20).map(|b| b.name.as_str()).collect();
        return Err(Finish::Refused(format!(
            "the source has no branch {branch:?} (it has: {})",
            known.join(", ")
        )));
    };
    set_head(&repo, &branch_ref).map_err(git_err("pointing HEAD at the default branch"))?;
    Ok(ImportedRepo {
        default_branch: branch,
        head,
    })
}

fn redact(error: CommandError) -> CommandError {
    match error {
        CommandError::TimedOut {
            what,
            after,
            stderr,
        } => CommandError::TimedOut {
            what,
            after,
            stderr: redact_urls(&stderr),
        },
        CommandError::Failed {
            what,
            status,
            stderr,
        } => CommandError::Failed {
            what,
            status,
            stderr: redact_urls(&stderr),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert!(matches!(
            Source::parse("https://example.invalid/a.git"),
            Ok(Source::Url(_))
        ));
        assert!(matches!(Source::parse("file:///tmp"), Ok(Source::Url(_))));
        assert!(Source::parse("ssh://host/x").is_err());
        assert!(Source::parse("ext::sh -c touch% /tmp/pwned").is_err());
        assert!(Source::parse("--upload-pack=touch /tmp/x").is_err());
        assert!(Source::parse("").is_err());
        assert!(Source::parse("/definitely/not/here").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Source::parse(dir.path().to_str().unwrap()).unwrap(),
            Source::LocalPath(dir.path().canonicalize().unwrap())
        );
    }
}
