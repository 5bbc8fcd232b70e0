//! Deployment content on disk: `<data-dir>/apps/<project-id>/<slug>/<deployment-id>/`, copied
//! from a build's output directory, and the safe resolution of a request path inside it.
//!
//! The copy keeps only directories and regular files (never a symlink, which could point
//! anywhere on the host at serving time), bounded in bytes and files, and lands under a
//! temporary name renamed into place, so a deployment directory is complete or absent.
//! Request paths are resolved component by component: `..`, backslashes, NUL bytes and
//! anything that turns out not to be a plain file or directory inside the deployment
//! directory are refused.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a build's output could not become a deployment.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("the output directory {0:?} does not exist or is not a directory")]
    NoOutput(String),
    #[error("the output directory {path:?} {problem}")]
    BadOutDir { path: String, problem: String },
    #[error("the build's output is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the build's output has more than {limit} files")]
    TooManyFiles { limit: u64 },
    #[error("copying the build's output: {0}")]
    Io(#[from] io::Error),
}

/// What was copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
    /// Symlinks and special files left out.
    pub skipped: u64,
}

/// The directory of one deployment.
pub fn deployment_dir(root: &Path, project_id: &str, slug: &str, deployment_id: &str) -> PathBuf {
    root.join(project_id).join(slug).join(deployment_id)
}

/// The output directory `out_dir` (relative to the build's `base`) as a real directory
/// inside `base`.
pub fn output_dir(base: &Path, out_dir: &str) -> Result<PathBuf, ContentError> {
    if out_dir != "."
        && let Some(problem) = kortix_manifest::repo_relative_problem(out_dir)
    {
        return Err(ContentError::BadOutDir {
            path: out_dir.into(),
            problem: problem.into(),
        });
    }
    let base = std::fs::canonicalize(base)?;
    let dir = match std::fs::canonicalize(base.join(out_dir)) {
        Ok(dir) => dir,
        Err(_) => return Err(ContentError::NoOutput(out_dir.into())),
    };
    if !dir.starts_with(&base) {
        return Err(ContentError::BadOutDir {
            path: out_dir.into(),
            problem: "leads outside the source (through a symlink)".into(),
        });
    }
    if !dir.is_dir() {
        return Err(ContentError::NoOutput(out_dir.into()));
    }
    Ok(dir)
}

/// Copies `from` into the new directory `to` (which must not exist), within the limits.
/// Blocking: call it on the blocking pool.
pub fn copy_output(
    from: &Path,
    to: &Path,
    max_bytes: u64,
    max_files: u64,
    mut skipped_line: impl FnMut(&str),
) -> Result<Copied, ContentError> {
    let parent = to.parent().unwrap_or(to);
    std::fs::create_dir_all(parent)?;
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    let mut copied = Copied::default();
    let result = copy_tree(
        from,
        &staging,
        Path::new(""),
        max_bytes,
        max_files,
        &mut copied,
        &mut skipped_line,
    )
    .and_then(|()| std::fs::rename(&staging, to).map_err(ContentError::from));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.map(|()| copied)
}

fn copy_tree(
    from: &Path,
    to: &Path,
    rel: &Path,
    max_bytes: u64,
    max_files: u64,
    copied: &mut Copied,
    skipped_line: &mut impl FnMut(&str),
) -> Result<(), ContentError> {
    std::fs::create_dir(to)?;
    let mut entries: Vec<_> = std::fs::read_dir(from)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        // The entry itself, never what a symlink points at.
        let kind = entry.file_type()?;
        let name = entry.file_name();
        let rel_path = rel.join(&name);
        if kind.is_dir() {
            copy_tree(
                &entry.path(),
                &to.join(&name),
                &rel_path,
                max_bytes,
                max_files,
                copied,
                skipped_line,
            )?;
        } else if kind.is_file() {
            copied.files += 1;
            if copied.files > max_files {
                return Err(ContentError::TooManyFiles { limit: max_files });
            }
            let size = entry.metadata()?.len();
            copied.bytes += size;
            if copied.bytes > max_bytes {
                return Err(ContentError::TooLarge { limit: max_bytes });
            }
            std::fs::copy(entry.path(), to.join(&name))?;
        } else {
            copied.skipped += 1;
            skipped_line(&format!(
                "skipped {} (not a regular file or directory)",
                rel_path.display()
            ));
        }
    }
    Ok(())
}

/// What a request path names inside a deployment directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    File(PathBuf),
    /// A directory asked for without its trailing slash: redirect so relative links work.
    AddSlash,
    NotFound,
}

/// Resolves the (percent-decoded) request path `rel` (what follows the app's prefix) in
/// `dir`: a file, or a directory's `index.html`.
pub fn resolve(dir: &Path, rel: &str) -> Resolved {
    if rel.contains(['\0', '\\']) {
        return Resolved::NotFound;
    }
    let mut path = dir.to_path_buf();
    for part in rel.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Resolved::NotFound,
            name => {
                if Path::new(name).components().count() != 1
                    || !matches!(
                        Path::new(name).components().next(),
                        Some(Component::Normal(_))
                    )
                {
                    return Resolved::NotFound;
                }
                path.push(name);
            }
        }
        // Content holds no symlinks (see `copy_output`); refuse one anyway.
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return Resolved::NotFound,
            Ok(_) => {}
            Err(_) => return Resolved::NotFound,
        }
    }
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => Resolved::File(path),
        Ok(meta) if meta.is_dir() => {
            if !rel.is_empty() && !rel.ends_with('/') {
                return Resolved::AddSlash;
            }
            let index = path.join("index.html");
            match std::fs::symlink_metadata(&index) {
                Ok(meta) if meta.is_file() => Resolved::File(index),
                _ => Resolved::NotFound,
            }
        }
        _ => Resolved::NotFound,
    }
}

/// The `Content-Type` of a file by its extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "webmanifest" => "application/manifest+json",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

/// Removes deployment directories of an app that are not in `keep`. Blocking.
pub fn prune(app_dir: &Path, keep: &[&str]) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(app_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || keep.contains(&name.as_str()) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(dir: &Path) {
        std::fs::create_dir_all(dir.join("docs")).unwrap();
        std::fs::write(dir.join("index.html"), "home").unwrap();
        std::fs::write(dir.join("docs/index.html"), "docs").unwrap();
        std::fs::write(dir.join("app.js"), "js").unwrap();
    }

    #[test]
    fn copies_files_and_directories_but_never_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        site(&out);
        std::os::unix::fs::symlink("/etc/passwd", out.join("passwd")).unwrap();
        std::os::unix::fs::symlink("/etc", out.join("etc")).unwrap();
        let to = tmp.path().join("deploy/1");
        let mut skipped = Vec::new();
        let copied = copy_output(&out, &to, 1 << 20, 100, |l| skipped.push(l.to_string())).unwrap();
        assert_eq!(
            copied,
            Copied {
                files: 3,
                bytes: 10,
                skipped: 2
            }
        );
        assert_eq!(skipped.len(), 2);
        assert!(!to.join("passwd").exists() && !to.join("etc").exists());
        assert_eq!(
            std::fs::read_to_string(to.join("docs/index.html")).unwrap(),
            "docs"
        );
    }

    #[test]
    fn limits_leave_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        site(&out);
        let to = tmp.path().join("deploy/1");
        assert!(matches!(
            copy_output(&out, &to, 4, 100, |_| {}),
            Err(ContentError::TooLarge { limit: 4 })
        ));
        assert!(matches!(
            copy_output(&out, &to, 1 << 20, 2, |_| {}),
            Err(ContentError::TooManyFiles { limit: 2 })
        ));
        assert!(!to.exists());
        assert_eq!(
            std::fs::read_dir(tmp.path().join("deploy"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn output_dirs_stay_inside_the_source() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("src");
        std::fs::create_dir_all(base.join("dist")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), base.join("up")).unwrap();
        assert!(output_dir(&base, "dist").is_ok());
        assert!(output_dir(&base, ".").is_ok());
        assert!(matches!(
            output_dir(&base, "../x"),
            Err(ContentError::BadOutDir { .. })
        ));
        assert!(matches!(
            output_dir(&base, "/etc"),
            Err(ContentError::BadOutDir { .. })
        ));
        assert!(matches!(
            output_dir(&base, "up"),
            Err(ContentError::BadOutDir { .. })
        ));
        assert!(matches!(
            output_dir(&base, "missing"),
            Err(ContentError::NoOutput(_))
        ));
    }

    #[test]
    fn requests_resolve_inside_the_deployment_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        site(&dir);
        std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
        assert_eq!(resolve(&dir, ""), Resolved::File(dir.join("index.html")));
        assert_eq!(
            resolve(&dir, "docs/"),
            Resolved::File(dir.join("docs/index.html"))
        );
        assert_eq!(resolve(&dir, "docs"), Resolved::AddSlash);
        assert_eq!(resolve(&dir, "app.js"), Resolved::File(dir.join("app.js")));
        for bad in [
            "../d/index.html",
            "docs/../../x",
            "passwd",
            "missing",
            "a\\b",
            "x\0",
        ] {
            assert_eq!(resolve(&dir, bad), Resolved::NotFound, "{bad:?}");
        }
        assert_eq!(
            content_type(Path::new("a/b.HTML")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x.css")), "text/css; charset=utf-8");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
