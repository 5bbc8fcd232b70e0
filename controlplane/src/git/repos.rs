//! The bare repositories of projects: `<root>/<project-id>.git`, one per project.
//!
//! Everything here reads and writes with gix, without a checkout; only importing runs the
//! `git` program (see [`super::import`]). Repositories are built in a staging directory
//! beside their final place and renamed into it, so a failed create or import leaves nothing
//! behind and a half-built repository is never served.

use std::{
    io,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use gix::{ObjectId, bstr::ByteSlice};

use super::{
    command::CommandError,
    import,
    names::{self, NameError},
    refs::{self, Expected, RefError},
};

/// The largest file [`Repos::read_file_at_branch`] returns.
pub const MAX_READ_FILE: u64 = 1 << 20;

/// How long an import may take by default.
pub const DEFAULT_IMPORT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Where the manifest lives in a project's repository.
pub const MANIFEST_PATH: &str = "kortix.toml";

/// Name and email of whoever a commit is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

/// A branch and the commit it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    pub name: String,
    pub head: ObjectId,
}

/// The outcome of [`Repos::import`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRepo {
    pub default_branch: String,
    pub head: ObjectId,
}

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Ref(#[from] RefError),
    #[error("project {project_id} has no repository")]
    NotFound { project_id: String },
    #[error("project {project_id} already has a repository")]
    AlreadyExists { project_id: String },
    #[error("branch {branch:?} does not exist in project {project_id}")]
    BranchNotFound { project_id: String, branch: String },
    #[error("branch {branch:?} already exists in project {project_id}")]
    BranchExists { project_id: String, branch: String },
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("{path:?} on branch {branch:?} of project {project_id} is not a file")]
    NotAFile {
        project_id: String,
        branch: String,
        path: String,
    },
    #[error(
        "{path:?} on branch {branch:?} of project {project_id} is {size} bytes, more than the {limit} allowed"
    )]
    FileTooLarge {
        project_id: String,
        branch: String,
        path: String,
        size: u64,
        limit: u64,
    },
    #[error("{path:?} on branch {branch:?} of project {project_id} is too large: {reason}")]
    DirTooLarge {
        project_id: String,
        branch: String,
        path: String,
        reason: String,
    },
    #[error("invalid author: {0}")]
    InvalidAuthor(String),
    #[error("cannot import {source_desc}: {reason}")]
    Import { source_desc: String, reason: String },
    #[error("importing {source_desc}: {error}")]
    ImportCommand {
        source_desc: String,
        #[source]
        error: CommandError,
    },
    #[error("{action} in the repository of project {project_id}: {message}")]
    Git {
        project_id: String,
        action: &'static str,
        message: String,
    },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl RepoError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_owned();
        move |source| RepoError::Io {
            action,
            path,
            source,
        }
    }
}

/// The store of bare repositories under one root directory.
#[derive(Debug, Clone)]
pub struct Repos {
    root: PathBuf,
    import_timeout: Duration,
}

impl Repos {
    /// Repositories under `root`, which is created if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, RepoError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(RepoError::io("creating", &root))?;
        // Canonical, so the paths handed to git http-backend and hooks are stable.
        let root = root
            .canonicalize()
            .map_err(RepoError::io("resolving", &root))?;
        Ok(Repos {
            root,
            import_timeout: DEFAULT_IMPORT_TIMEOUT,
        })
    }

    /// Repositories of a data directory: `<data-dir>/repos`.
    pub fn in_data_dir(data_dir: &Path) -> Result<Self, RepoError> {
        Self::open(data_dir.join("repos"))
    }

    /// Bounds how long [`Self::import`] may run.
    pub fn with_import_timeout(mut self, timeout: Duration) -> Self {
        self.import_timeout = timeout;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the repository of `project_id` lives (whether or not it exists).
    pub fn path(&self, project_id: &str) -> Result<PathBuf, RepoError> {
        names::project_id(project_id)?;
        Ok(self.root.join(format!("{project_id}.git")))
    }

    pub fn exists(&self, project_id: &str) -> Result<bool, RepoError> {
        Ok(self.path(project_id)?.join("HEAD").is_file())
    }

    /// Opens the repository of `project_id` with gix.
    pub fn open_repo(&self, project_id: &str) -> Result<gix::Repository, RepoError> {
        let path = self.path(project_id)?;
        if !path.join("HEAD").is_file() {
            return Err(RepoError::NotFound {
                project_id: project_id.to_owned(),
            });
        }
        open_bare(&path).map_err(|message| RepoError::Git {
            project_id: project_id.to_owned(),
            action: "opening",
            message,
        })
    }

    /// Creates the repository of a new project: one commit on `default_branch` holding only
    /// `kortix.toml`, with `HEAD` pointing at that branch. Returns the commit.
    pub fn create_empty(
        &self,
        project_id: &str,
        default_branch: &str,
        manifest_toml: &str,
        author: &Author,
    ) -> Result<ObjectId, RepoError> {
        let branch_ref = names::branch_ref(default_branch)?;
        let signature = signature(author)?;
        let staging = self.staging(project_id)?;
        let git_err = |action: &'static str| {
            move |e: gix::Error| RepoError::Git {
                project_id: project_id.to_owned(),
                action,
                message: refs::chain(&e),
            }
        };
        let repo = gix::init_bare(staging.path()).map_err(git_err("initializing"))?;
        let blob = repo
            .write_blob(manifest_toml.as_bytes())
            .map_err(git_err("writing the manifest"))?
            .detach();
        let tree = gix::objs::Tree {
            entries: vec![gix::objs::tree::Entry {
                mode: gix::objs::tree::EntryKind::Blob.into(),
                filename: MANIFEST_PATH.into(),
                oid: blob,
            }],
        };
        let tree = repo
            .write_object(&tree)
            .map_err(git_err("writing the tree"))?
            .detach();
        let commit = gix::objs::Commit {
            tree,
            parents: Default::default(),
            author: signature.clone(),
            committer: signature,
            encoding: None,
            message: "Create project\n".into(),
            extra_headers: Vec::new(),
        };
        let commit = repo
            .write_object(&commit)
            .map_err(git_err("writing the commit"))?
            .detach();
        refs::update_ref(
            &repo,
            &branch_ref,
            Expected::MustNotExist,
            commit,
            "kortix: create project",
        )?;
        set_head(&repo, &branch_ref).map_err(|message| RepoError::Git {
            project_id: project_id.to_owned(),
            action: "pointing HEAD at the default branch",
            message,
        })?;
        drop(repo);
        staging.publish()?;
        Ok(commit)
    }

    /// Copies the full history, branches and tags of `source` (a local path to a bare or
    /// non-bare repository, or a `file://`, `http://` or `https://` clone URL) into a new
    /// repository for `project_id`. The default branch is `default_branch` when given, else the
    /// branch the source's `HEAD` names; it must exist.
    pub async fn import(
        &self,
        project_id: &str,
        source: &str,
        default_branch: Option<&str>,
    ) -> Result<ImportedRepo, RepoError> {
        if let Some(branch) = default_branch {
            names::branch_ref(branch)?;
        }
        let staging = self.staging(project_id)?;
        let imported = import::clone_into(
            project_id,
            source,
            default_branch,
            staging.path(),
            self.import_timeout,
        )
        .await?;
        staging.publish()?;
        Ok(imported)
    }

    /// The bytes of the file at `path` (relative, `/`-separated) on `branch`, or `None` when
    /// the branch has no such file. Files over [`MAX_READ_FILE`] are refused.
    pub fn read_file_at_branch(
        &self,
        project_id: &str,
        branch: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let components = repo_path_components(path)?;
        let repo = self.open_repo(project_id)?;
        let head = self.require_branch(&repo, project_id, branch)?;
        let git_err = |e: gix::Error| RepoError::Git {
            project_id: project_id.to_owned(),
            action: "reading a file",
            message: refs::chain(&e),
        };
        let tree = repo
            .find_commit(head)
            .and_then(|c| c.tree())
            .map_err(git_err)?;
        let Some(entry) = tree.lookup_entry(components).map_err(git_err)? else {
            return Ok(None);
        };
        if !entry.mode().is_blob() {
            return Err(RepoError::NotAFile {
                project_id: project_id.to_owned(),
                branch: branch.to_owned(),
                path: path.to_owned(),
            });
        }
        let id = entry.object_id();
        let size = repo.find_header(id).map_err(git_err)?.size();
        if size > MAX_READ_FILE {
            return Err(RepoError::FileTooLarge {
                project_id: project_id.to_owned(),
                branch: branch.to_owned(),
                path: path.to_owned(),
                size,
                limit: MAX_READ_FILE,
            });
        }
        let mut blob = repo.find_blob(id).map_err(git_err)?;
        Ok(Some(blob.take_data()))
    }

    /// Creates branch `new_branch` at the head of `from_branch`; refuses when `new_branch`
    /// exists already. Returns the commit both now point at.
    pub fn cut_branch(
        &self,
        project_id: &str,
        from_branch: &str,
        new_branch: &str,
    ) -> Result<ObjectId, RepoError> {
        let new_ref = names::branch_ref(new_branch)?;
        let repo = self.open_repo(project_id)?;
        let head = self.require_branch(&repo, project_id, from_branch)?;
        let message = format!("kortix: branch {new_branch} from {from_branch}");
        match refs::update_ref(&repo, &new_ref, Expected::MustNotExist, head, &message) {
            Ok(()) => Ok(head),
            Err(RefError::Moved { .. }) => Err(RepoError::BranchExists {
                project_id: project_id.to_owned(),
                branch: new_branch.to_owned(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The commit `branch` points at, or `None` when there is no such branch.
    pub fn branch_head(
        &self,
        project_id: &str,
        branch: &str,
    ) -> Result<Option<ObjectId>, RepoError> {
        let repo = self.open_repo(project_id)?;
        Ok(refs::resolve_branch(&repo, branch)?)
    }

    /// The commit a full ref name (`refs/kortix/wip/<session>`) points at, or `None`.
    pub fn ref_target(&self, project_id: &str, name: &str) -> Result<Option<ObjectId>, RepoError> {
        let repo = self.open_repo(project_id)?;
        Ok(refs::read_ref(&repo, name)?)
    }

    /// The branch `HEAD` names, which is the project's default branch.
    pub fn head_branch(&self, project_id: &str) -> Result<Option<String>, RepoError> {
        let repo = self.open_repo(project_id)?;
        let name = repo.head_name().map_err(|e| RepoError::Git {
            project_id: project_id.to_owned(),
            action: "reading HEAD",
            message: refs::chain(&e),
        })?;
        Ok(name.and_then(|n| {
            n.as_bstr()
                .strip_prefix(b"refs/heads/")
                .and_then(|b| b.to_str().ok())
                .map(str::to_owned)
        }))
    }

    /// Points `HEAD` at `branch`, which must exist: the default branch changed.
    pub fn set_head_branch(&self, project_id: &str, branch: &str) -> Result<(), RepoError> {
        let branch_ref = names::branch_ref(branch)?;
        let repo = self.open_repo(project_id)?;
        self.require_branch(&repo, project_id, branch)?;
        set_head(&repo, &branch_ref).map_err(|message| RepoError::Git {
            project_id: project_id.to_owned(),
            action: "pointing HEAD at a branch",
            message,
        })
    }

    /// All branches, sorted by name.
    pub fn list_branches(&self, project_id: &str) -> Result<Vec<Branch>, RepoError> {
        let repo = self.open_repo(project_id)?;
        list_branches(&repo).map_err(|message| RepoError::Git {
            project_id: project_id.to_owned(),
            action: "listing branches",
            message,
        })
    }

    /// Removes the repository of `project_id`. Returns whether there was one.
    pub fn delete_repo(&self, project_id: &str) -> Result<bool, RepoError> {
        let path = self.path(project_id)?;
        if !path.exists() {
            return Ok(false);
        }
        // Renamed away first, so nobody sees (or serves) a half-deleted repository.
        let trash = self.root.join(format!(
            ".trash-{project_id}-{}.git",
            uuid::Uuid::new_v4().simple()
        ));
        match std::fs::rename(&path, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(RepoError::io("moving aside", &path)(e)),
        }
        std::fs::remove_dir_all(&trash).map_err(RepoError::io("removing", &trash))?;
        Ok(true)
    }

    fn require_branch(
        &self,
        repo: &gix::Repository,
        project_id: &str,
        branch: &str,
    ) -> Result<ObjectId, RepoError> {
        refs::resolve_branch(repo, branch)?.ok_or_else(|| RepoError::BranchNotFound {
            project_id: project_id.to_owned(),
            branch: branch.to_owned(),
        })
    }

    fn staging(&self, project_id: &str) -> Result<Staging, RepoError> {
        let target = self.path(project_id)?;
        if target.exists() {
            return Err(RepoError::AlreadyExists {
                project_id: project_id.to_owned(),
            });
        }
        let path = self.root.join(format!(
            ".staging-{project_id}-{}.git",
            uuid::Uuid::new_v4().simple()
        ));
        Ok(Staging {
            path,
            target,
            project_id: project_id.to_owned(),
            published: false,
        })
    }
}

/// A repository being built; removed on drop unless published.
struct Staging {
    path: PathBuf,
    target: PathBuf,
    project_id: String,
    published: bool,
}

impl Staging {
    fn path(&self) -> &Path {
        &self.path
    }

    fn publish(mut self) -> Result<(), RepoError> {
        // rename(2) refuses to replace a non-empty directory, so a racing create of the same
        // project loses here rather than overwriting the winner.
        if self.target.exists() {
            return Err(RepoError::AlreadyExists {
                project_id: self.project_id.clone(),
            });
        }
        match std::fs::rename(&self.path, &self.target) {
            Ok(()) => {
                self.published = true;
                Ok(())
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
                Err(RepoError::AlreadyExists {
                    project_id: self.project_id.clone(),
                })
            }
            Err(e) => Err(RepoError::io("publishing", &self.target)(e)),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

pub(crate) fn open_bare(path: &Path) -> Result<gix::Repository, String> {
    // Isolated from the machine's git config: the repositories' own config is all that counts.
    let options = gix::open::Options::isolated();
    gix::open_opts(path, options).map_err(|e| refs::chain(&e))
}

pub(crate) fn set_head(repo: &gix::Repository, branch_ref: &str) -> Result<(), String> {
    use gix::refs::{
        Target,
        transaction::{PreviousValue, RefEdit},
    };
    let target: gix::refs::FullName = branch_ref.try_into().map_err(|e| format!("{e}"))?;
    let head: gix::refs::FullName = "HEAD".try_into().map_err(|e| format!("{e}"))?;
    repo.edit_references_as(
        Some(RefEdit::update(
            head,
            Target::Symbolic(target),
            PreviousValue::Any,
            "",
        )),
        None,
    )
    .map(|_| ())
    .map_err(|e| refs::chain(&e))
}

pub(crate) fn list_branches(repo: &gix::Repository) -> Result<Vec<Branch>, String> {
    let platform = repo.references().map_err(|e| refs::chain(&e))?;
    let mut direct = Vec::new();
    let mut symbolic = Vec::new();
    for reference in platform.local_branches().map_err(|e| refs::chain(&e))? {
        let reference = reference.map_err(|e| refs::chain(&e))?;
        let full = reference.name().as_bstr().to_string();
        let Some(name) = full.strip_prefix("refs/heads/").map(str::to_owned) else {
            continue;
        };
        match reference.target().try_id() {
            Some(id) => direct.push(Branch {
                name,
                head: id.to_owned(),
            }),
            None => symbolic.push((name, full)),
        }
    }
    // Symbolic branches are rare; they are resolved once the iterator releases packed refs.
    for (name, full) in symbolic {
        if let Some(head) = refs::read_ref(repo, &full).map_err(|e| e.to_string())? {
            direct.push(Branch { name, head });
        }
    }
    direct.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(direct)
}

fn signature(author: &Author) -> Result<gix::actor::Signature, RepoError> {
    for (what, value) in [("name", &author.name), ("email", &author.email)] {
        if value.trim().is_empty() {
            return Err(RepoError::InvalidAuthor(format!("the {what} is empty")));
        }
        if value.len() > 256
            || value
                .chars()
                .any(|c| c.is_control() || c == '<' || c == '>')
        {
            return Err(RepoError::InvalidAuthor(format!(
                "the {what} {value:?} is too long or contains '<', '>' or control characters"
            )));
        }
    }
    Ok(gix::actor::Signature {
        name: author.name.trim().into(),
        email: author.email.trim().into(),
        time: gix::date::Time::now_utc(),
    })
}

/// Splits a repository-relative path into components, refusing anything that is not a plain
/// relative path (absolute, `..`, `.`, empty components).
pub(super) fn repo_path_components(path: &str) -> Result<Vec<&str>, RepoError> {
    let refuse = |reason: &str| RepoError::InvalidPath {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if path.is_empty() {
        return Err(refuse("it is empty"));
    }
    if path.len() > 4096 {
        return Err(refuse("it is longer than 4096 bytes"));
    }
    if path.contains('\0') {
        return Err(refuse("it contains a NUL byte"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts {
        match Path::new(part).components().next() {
            _ if part.is_empty() => return Err(refuse("it has an empty component or leading '/'")),
            Some(Component::Normal(_)) if *part != "." && *part != ".." => {}
            _ => return Err(refuse("it must be relative, without '.' or '..'")),
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests;
