//! Getting an app's source into a build directory: a shallow git checkout (the project's own
//! repository by default, else an `https://` clone URL) or an `https://` tarball, downloaded
//! within a size and time bound and extracted safely.
//!
//! Extraction writes only directories and regular files whose paths are relative and free
//! of `..`; links and device entries are skipped (and said so in the log), so nothing in an
//! archive can make the control plane write outside the build directory. A tarball whose
//! entries all sit under one top-level directory (as GitHub's archives do) is taken from
//! inside that directory.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use kortix_manifest::{App, SourceType};

use crate::git::Repos;
use crate::git::command::{CommandError, run_git};
use crate::store::Project;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Git(#[from] CommandError),
    #[error(
        "the git source {0:?} must be an https:// clone URL (or left out for the project's own repository)"
    )]
    RepoUrl(String),
    #[error("the project's repository: {0}")]
    Repo(String),
    #[error("downloading {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("the tarball {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("extracting the tarball: {0}")]
    Extract(String),
    #[error("root_path {path:?} {problem}")]
    RootPath { path: String, problem: String },
    #[error("preparing the source directory: {0}")]
    Io(#[from] std::io::Error),
}

/// Limits of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub timeout: Duration,
    pub max_tarball_bytes: u64,
    /// The most bytes a tarball may extract to.
    pub max_extracted_bytes: u64,
}

/// A fetched source.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// `root_path` inside the checkout or archive: where the build runs.
    pub base: PathBuf,
    /// The commit checked out, or the tarball's URL.
    pub revision: String,
}

/// Fetches `app`'s source into the empty directory `dest`; progress goes to `log`.
pub async fn fetch(
    repos: &Repos,
    project: &Project,
    app: &App,
    dest: &Path,
    limits: FetchLimits,
    log: &(dyn Fn(String) + Send + Sync),
) -> Result<Fetched, SourceError> {
    let source = &app.source;
    let (top, revision) = match source.kind {
        SourceType::Git => {
            let (url, config) = match &source.repo {
                None => {
                    let path = repos
                        .path(&project.id)
                        .map_err(|e| SourceError::Repo(e.to_string()))?;
                    (
                        format!("file://{}", path.display()),
                        ["protocol.allow=never", "protocol.file.allow=always"],
                    )
                }
                Some(url) if is_https(url) => (
                    url.clone(),
                    ["protocol.allow=never", "protocol.https.allow=always"],
                ),
                Some(url) => return Err(SourceError::RepoUrl(url.clone())),
            };
            let branch = source.branch.clone().or_else(|| {
                source
                    .repo
                    .is_none()
                    .then(|| project.default_branch.clone())
            });
            let shown = match &source.repo {
                None => format!("project {}", project.name),
                Some(url) => crate::git::command::redact_urls(url),
            };
            log(format!(
                "==> cloning {shown}{}",
                branch
                    .as_deref()
                    .map(|b| format!(" at {b}"))
                    .unwrap_or_default()
            ));
            let checkout = dest.join("checkout");
            let mut args: Vec<String> = Vec::new();
            for c in config {
                args.push("-c".into());
                args.push(c.into());
            }
            args.extend(
                [
                    "clone",
                    "--quiet",
                    "--depth",
                    "1",
                    "--single-branch",
                    "--no-tags",
                ]
                .map(String::from),
            );
            if let Some(b) = &branch {
                args.push("--branch".into());
                args.push(b.clone());
            }
            args.push("--".into());
            args.push(url);
            args.push(checkout.display().to_string());
            run_git(&args, Some(dest), limits.timeout, "clone").await?;
            let head = run_git(
                ["rev-parse", "HEAD"],
                Some(&checkout),
                Duration::from_secs(30),
                "rev-parse HEAD",
            )
            .await?;
            let revision = String::from_utf8_lossy(&head.stdout).trim().to_string();
            log(format!("==> checked out {revision}"));
            (checkout, revision)
        }
        SourceType::Tar => {
            let url = source.url.clone().unwrap_or_default();
            if !is_https(&url) {
                return Err(SourceError::Download {
                    url,
                    reason: "only https:// URLs are fetched".into(),
                });
            }
            log(format!(
                "==> downloading {}",
                crate::git::command::redact_urls(&url)
            ));
            let bytes = download(&url, limits).await?;
            log(format!("==> downloaded {} bytes, extracting", bytes.len()));
            let into = dest.join("archive");
            let max = limits.max_extracted_bytes;
            let into_clone = into.clone();
            let (top, skipped) =
                tokio::task::spawn_blocking(move || extract(&bytes, &into_clone, max))
                    .await
                    .map_err(|e| SourceError::Extract(e.to_string()))??;
            for line in skipped {
                log(line);
            }
            (top, url)
        }
    };
    let base = root_dir(&top, &source.root_path)?;
    Ok(Fetched { base, revision })
}

fn is_https(url: &str) -> bool {
    url.starts_with("https://")
        && url.len() > "https://".len()
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `root_path` inside `top`, as a real directory there.
pub fn root_dir(top: &Path, root_path: &str) -> Result<PathBuf, SourceError> {
    let problem = |problem: &str| SourceError::RootPath {
        path: root_path.into(),
        problem: problem.into(),
    };
    if root_path != "."
        && let Some(p) = kortix_manifest::repo_relative_problem(root_path)
    {
        return Err(problem(p));
    }
    let top = std::fs::canonicalize(top)?;
    let dir = std::fs::canonicalize(top.join(root_path))
        .map_err(|_| problem("does not exist in the source"))?;
    if !dir.starts_with(&top) {
        return Err(problem("leads outside the source (through a symlink)"));
    }
    if !dir.is_dir() {
        return Err(problem("is not a directory"));
    }
    Ok(dir)
}

async fn download(url: &str, limits: FetchLimits) -> Result<Vec<u8>, SourceError> {
    let failed = |reason: String| SourceError::Download {
        url: crate::git::command::redact_urls(url),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(limits.timeout)
        .connect_timeout(Duration::from_secs(30))
        // A redirect to plain http (or elsewhere unexpected) is not followed.
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().scheme() != "https" || attempt.previous().len() >= 5 {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("the server answered {}", response.status())));
    }
    let too_large = || SourceError::TooLarge {
        url: crate::git::command::redact_urls(url),
        limit: limits.max_tarball_bytes,
    };
    if response
        .content_length()
        .is_some_and(|n| n > limits.max_tarball_bytes)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
        if bytes.len() as u64 + chunk.len() as u64 > limits.max_tarball_bytes {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Extracts a tar (gzip-compressed or not) into the new directory `into`; returns the
/// directory to build from (the single top-level directory, if that is all there is) and
/// lines about skipped entries. Blocking.
pub fn extract(
    bytes: &[u8],
    into: &Path,
    max_bytes: u64,
) -> Result<(PathBuf, Vec<String>), SourceError> {
    let bad = |m: String| SourceError::Extract(m);
    std::fs::create_dir_all(into)?;
    let reader: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(reader);
    let mut skipped = Vec::new();
    let mut total: u64 = 0;
    let mut tops = std::collections::BTreeSet::new();
    let mut top_files = false;
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let shown = path.display().to_string();
        let mut rel = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                _ => {
                    return Err(bad(format!(
                        "entry {shown:?} is absolute or climbs out with '..'"
                    )));
                }
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        let target = into.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if kind.is_file() {
            total = total.saturating_add(entry.header().size().unwrap_or(0));
            if total > max_bytes {
                return Err(bad(format!("it extracts to more than {max_bytes} bytes")));
            }
            if let Some(parent) = target.parent() {
                // A parent created as a real directory: an earlier entry can never have
                // made it a symlink, because links are not extracted.
                std::fs::create_dir_all(parent)?;
            }
            let mut out = std::fs::File::create(&target)?;
            let copied = std::io::copy(&mut (&mut entry).take(max_bytes + 1), &mut out)?;
            if copied > max_bytes {
                return Err(bad(format!("it extracts to more than {max_bytes} bytes")));
            }
            let mode = entry.header().mode().unwrap_or(0o644);
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                &target,
                std::fs::Permissions::from_mode(if mode & 0o111 != 0 { 0o755 } else { 0o644 }),
            )?;
        } else {
            if !matches!(
                kind,
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
            ) {
                skipped.push(format!(
                    "skipped {shown} (links and special files are not extracted)"
                ));
            }
            continue;
        }
        let mut parts = rel.components();
        let first = parts.next().map(|c| c.as_os_str().to_os_string());
        if parts.next().is_none() && kind.is_file() {
            top_files = true;
        }
        if let Some(first) = first {
            tops.insert(first);
        }
    }
    let top = match (tops.len(), top_files) {
        (1, false) => into.join(tops.iter().next().cloned().unwrap_or_default()),
        _ => into.to_path_buf(),
    };
    Ok((top, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(entries: &[(&str, &[u8])], link: Option<(&str, &str)>) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // `set_path` refuses `..`, which is the point of some tests: write the raw name.
            let name = path.as_bytes();
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        if let Some((path, target)) = link {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, path, target).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn extracts_files_from_a_single_top_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = gzip(&tarball(
            &[("site-abc/index.html", b"hi"), ("site-abc/css/a.css", b"x")],
            Some(("site-abc/evil", "/etc/passwd")),
        ));
        let (top, skipped) = extract(&tar, &tmp.path().join("a"), 1 << 20).unwrap();
        assert_eq!(top, tmp.path().join("a/site-abc"));
        assert_eq!(
            std::fs::read_to_string(top.join("index.html")).unwrap(),
            "hi"
        );
        assert!(!top.join("evil").exists());
        assert_eq!(skipped.len(), 1, "{skipped:?}");
    }

    #[test]
    fn refuses_escapes_and_bombs() {
        let tmp = tempfile::tempdir().unwrap();
        let escape = tarball(&[("../outside.txt", b"x")], None);
        assert!(matches!(
            extract(&escape, &tmp.path().join("b"), 1 << 20),
            Err(SourceError::Extract(m)) if m.contains("climbs out")
        ));
        assert!(!tmp.path().join("outside.txt").exists());
        let absolute = tarball(&[("/tmp/abs.txt", b"x")], None);
        assert!(extract(&absolute, &tmp.path().join("c"), 1 << 20).is_err());
        let big = tarball(&[("a.bin", &[0u8; 4096])], None);
        assert!(extract(&gzip(&big), &tmp.path().join("d"), 1000).is_err());
        assert!(matches!(
            extract(
                b"not a tarball at all, not even close.....",
                &tmp.path().join("e"),
                1000
            ),
            Err(SourceError::Extract(_)) | Ok(_)
        ));
    }

    #[test]
    fn root_paths_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("src/site")).unwrap();
        std::fs::write(tmp.path().join("src/file"), "").unwrap();
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("src/up")).unwrap();
        let top = tmp.path().join("src");
        assert!(root_dir(&top, ".").is_ok());
        assert!(root_dir(&top, "site").is_ok());
        for bad in ["../", "/etc", "up", "file", "missing"] {
            assert!(root_dir(&top, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_https_urls() {
        assert!(is_https("https://example.com/a.tgz"));
        for bad in [
            "http://example.com/a",
            "file:///etc",
            "https://",
            "https://a b",
        ] {
            assert!(!is_https(bad), "{bad}");
        }
    }
}
