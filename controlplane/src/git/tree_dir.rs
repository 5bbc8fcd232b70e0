//! Reading one directory of a branch, recursively, as files: the build context of a
//! snapshot's Dockerfile. Bounded in file count and total size so a project cannot make the
//! control plane hold an unbounded tree in memory.

use gix::bstr::ByteSlice;

use super::{RepoError, Repos, refs};

/// The most bytes a directory read returns, summed over its files.
pub const MAX_DIR_BYTES: u64 = 64 << 20;
/// The most files (and symbolic links) a directory read returns.
pub const MAX_DIR_FILES: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeFileKind {
    Regular {
        executable: bool,
    },
    /// `data` is the link's target.
    Symlink,
}

/// One file under the directory, its path relative to it (`/`-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    pub path: String,
    pub kind: TreeFileKind,
    pub data: Vec<u8>,
}

/// A directory's files and its tree id, which names its contents exactly (every path, mode
/// and byte), so it serves as the content digest of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeDir {
    pub tree_id: String,
    pub files: Vec<TreeFile>,
}

impl Repos {
    /// The files under `dir` (relative; empty for the repository's root) on `branch`.
    /// Submodules are skipped (they have no contents here). `None` when there is no such
    /// directory.
    pub fn read_dir_at_branch(
        &self,
        project_id: &str,
        branch: &str,
        dir: &str,
    ) -> Result<Option<TreeDir>, RepoError> {
        let repo = self.open_repo(project_id)?;
        let head =
            refs::resolve_branch(&repo, branch)?.ok_or_else(|| RepoError::BranchNotFound {
                project_id: project_id.to_owned(),
                branch: branch.to_owned(),
            })?;
        let git_err = |e: &(dyn std::error::Error + 'static)| RepoError::Git {
            project_id: project_id.to_owned(),
            action: "reading a directory",
            message: refs::chain(e),
        };
        let root = repo
            .find_commit(head)
            .and_then(|c| c.tree())
            .map_err(|e| git_err(&e))?;
        let tree = if dir.is_empty() {
            root
        } else {
            let components = super::repos::repo_path_components(dir)?;
            let Some(entry) = root.lookup_entry(components).map_err(|e| git_err(&e))? else {
                return Ok(None);
            };
            if !entry.mode().is_tree() {
                return Ok(None);
            }
            repo.find_tree(entry.object_id()).map_err(|e| git_err(&e))?
        };
        let too_large = |reason: String| RepoError::DirTooLarge {
            project_id: project_id.to_owned(),
            branch: branch.to_owned(),
            path: dir.to_owned(),
            reason,
        };
        let entries = tree
            .traverse()
            .breadthfirst
            .files()
            .map_err(|e| git_err(&e))?;
        let mut files = Vec::new();
        let mut total = 0u64;
        for entry in entries {
            let kind = if entry.mode.is_blob() {
                TreeFileKind::Regular {
                    executable: entry.mode.is_executable(),
                }
            } else if entry.mode.is_link() {
                TreeFileKind::Symlink
            } else {
                continue;
            };
            if files.len() == MAX_DIR_FILES {
                return Err(too_large(format!("more than {MAX_DIR_FILES} files")));
            }
            let size = repo.find_header(entry.oid).map_err(|e| git_err(&e))?.size();
            total += size;
            if total > MAX_DIR_BYTES {
                return Err(too_large(format!("more than {MAX_DIR_BYTES} bytes")));
            }
            let mut blob = repo.find_blob(entry.oid).map_err(|e| git_err(&e))?;
            let path = entry
                .filepath
                .to_str()
                .map_err(|_| RepoError::InvalidPath {
                    path: entry.filepath.to_str_lossy().into_owned(),
                    reason: "it is not UTF-8".into(),
                })?;
            files.push(TreeFile {
                path: path.to_owned(),
                kind,
                data: blob.take_data(),
            });
        }
        Ok(Some(TreeDir {
            tree_id: tree.id.to_string(),
            files,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kortix_tests::git::GitEnv;

    #[test]
    fn a_directory_reads_as_its_files_with_modes_and_tree_id() {
        let dir = tempfile::tempdir().unwrap();
        let repos = Repos::in_data_dir(dir.path()).unwrap();
        let env = GitEnv::new();
        let work = env.work_repo(dir.path(), "work");
        env.commit_file(&work, "kortix.toml", "kortix_version = 1\n", "manifest");
        env.commit_file(&work, ".kortix/Dockerfile", "FROM base\n", "df");
        env.commit_file(&work, ".kortix/files/run.sh", "#!/bin/sh\n", "script");
        env.ok(
            &work,
            &["update-index", "--chmod=+x", ".kortix/files/run.sh"],
        );
        env.ok(&work, &["commit", "-qm", "exec"]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(repos.import("p", work.to_str().unwrap(), None))
            .unwrap();

        let ctx = repos
            .read_dir_at_branch("p", "main", ".kortix")
            .unwrap()
            .unwrap();
        assert_eq!(ctx.tree_id, env.ok(&work, &["rev-parse", "HEAD:.kortix"]));
        let mut files: Vec<_> = ctx
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.kind.clone(), f.data.as_slice()))
            .collect();
        files.sort_by_key(|f| f.0);
        assert_eq!(
            files,
            [
                (
                    "Dockerfile",
                    TreeFileKind::Regular { executable: false },
                    &b"FROM base\n"[..]
                ),
                (
                    "files/run.sh",
                    TreeFileKind::Regular { executable: true },
                    &b"#!/bin/sh\n"[..]
                ),
            ]
        );
        let root = repos.read_dir_at_branch("p", "main", "").unwrap().unwrap();
        let paths: Vec<&str> = root.files.iter().map(|f| f.path.as_str()).collect();
        for path in ["kortix.toml", ".kortix/Dockerfile", ".kortix/files/run.sh"] {
            assert!(paths.contains(&path), "{path} in {paths:?}");
        }
        assert_eq!(root.tree_id, env.ok(&work, &["rev-parse", "HEAD^{tree}"]));
        assert_eq!(repos.read_dir_at_branch("p", "main", "nope").unwrap(), None);
        assert_eq!(
            repos
                .read_dir_at_branch("p", "main", "kortix.toml")
                .unwrap(),
            None
        );
        assert!(matches!(
            repos.read_dir_at_branch("p", "main", "../x"),
            Err(RepoError::InvalidPath { .. })
        ));
        assert!(matches!(
            repos.read_dir_at_branch("p", "nope", ""),
            Err(RepoError::BranchNotFound { .. })
        ));
    }
}
