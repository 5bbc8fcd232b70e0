//! Real bare repositories built with the `git` program, for the tests of this module.

use std::path::{Path, PathBuf};

use gix::ObjectId;
use kortix_tests::git::GitEnv;

/// One change to a branch's tree in [`Fixture::commit_ops`].
pub enum Op<'a> {
    Write {
        path: &'a str,
        data: &'a [u8],
        mode: &'a str,
    },
    Delete(&'a str),
}

/// A bare repository (default branch `main`) in a temp dir, built by git in the shared test
/// environment with fixed commit dates (so object ids are the same every run).
pub struct Fixture {
    dir: tempfile::TempDir,
    env: GitEnv,
    pub bare: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("repo.git");
        let fx = Fixture {
            dir,
            env: GitEnv::new().with_fixed_dates(),
            bare,
        };
        fx.run_in(
            fx.dir.path(),
            &["init", "--bare", "-q", "-b", "main", "repo.git"],
            None,
        );
        fx
    }

    pub fn open(&self) -> gix::Repository {
        gix::open(&self.bare).unwrap()
    }

    fn run_in(&self, cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        self.run_env(cwd, args, stdin, &[])
    }

    fn run_env(
        &self,
        cwd: &Path,
        args: &[&str],
        stdin: Option<&[u8]>,
        env: &[(&str, &Path)],
    ) -> Vec<u8> {
        let out = self.env.run_with(cwd, args, stdin, env);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Runs git in the bare repository and returns its stdout.
    pub fn git(&self, args: &[&str]) -> String {
        String::from_utf8(self.run_in(&self.bare, args, None)).unwrap()
    }

    pub fn sha(&self, rev: &str) -> ObjectId {
        ObjectId::from_hex(
            self.git(&["rev-parse", &format!("{rev}^{{commit}}")])
                .trim()
                .as_bytes(),
        )
        .unwrap()
    }

    pub fn try_sha(&self, branch: &str) -> Option<ObjectId> {
        let out = self.env.run(
            &self.bare,
            &[
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}"),
            ],
        );
        out.status.success().then(|| {
            ObjectId::from_hex(String::from_utf8_lossy(&out.stdout).trim().as_bytes()).unwrap()
        })
    }

    pub fn branch(&self, new: &str, from: &str) {
        self.git(&["branch", new, from]);
    }

    /// Commits text files (mode 100644) on `branch`, creating the branch if needed.
    pub fn commit(&self, branch: &str, files: &[(&str, &str)], message: &str) -> ObjectId {
        let ops: Vec<Op<'_>> = files
            .iter()
            .map(|(path, text)| Op::Write {
                path,
                data: text.as_bytes(),
                mode: "100644",
            })
            .collect();
        self.commit_ops(branch, &ops, message)
    }

    /// Commits a root commit on a new `branch` that shares no history with the others.
    pub fn orphan_commit(&self, branch: &str, files: &[(&str, &str)], message: &str) -> ObjectId {
        assert!(self.try_sha(branch).is_none());
        self.commit(branch, files, message)
    }

    /// Applies `ops` on top of `branch` (or an empty tree) and advances the branch.
    pub fn commit_ops(&self, branch: &str, ops: &[Op<'_>], message: &str) -> ObjectId {
        let index = self.dir.path().join("fixture.index");
        let _ = std::fs::remove_file(&index);
        let env = [("GIT_INDEX_FILE", index.as_path())];
        let parent = self.try_sha(branch);
        if let Some(parent) = parent {
            self.run_env(&self.bare, &["read-tree", &parent.to_string()], None, &env);
        }
        let mut info = String::new();
        for op in ops {
            match op {
                Op::Write { path, data, mode } => {
                    let out =
                        self.run_in(&self.bare, &["hash-object", "-w", "--stdin"], Some(data));
                    let blob = String::from_utf8(out).unwrap();
                    info.push_str(&format!("{mode} {}\t{path}\n", blob.trim()));
                }
                Op::Delete(path) => {
                    info.push_str(&format!(
                        "0 {}\t{path}\n",
                        ObjectId::null(gix::hash::Kind::Sha1)
                    ));
                }
            }
        }
        self.run_env(
            &self.bare,
            &["update-index", "--index-info"],
            Some(info.as_bytes()),
            &env,
        );
        let tree =
            String::from_utf8(self.run_env(&self.bare, &["write-tree"], None, &env)).unwrap();
        let mut args = vec![
            "commit-tree".to_owned(),
            tree.trim().to_owned(),
            "-m".into(),
            message.into(),
        ];
        if let Some(parent) = parent {
            args.push("-p".into());
            args.push(parent.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let commit = String::from_utf8(self.run_in(&self.bare, &args, None)).unwrap();
        let commit = commit.trim().to_owned();
        self.git(&["update-ref", &format!("refs/heads/{branch}"), &commit]);
        ObjectId::from_hex(commit.as_bytes()).unwrap()
    }

    /// Moves `from` to `to` on `branch`, giving it `new_content`.
    pub fn rename(
        &self,
        branch: &str,
        from: &str,
        to: &str,
        new_content: &str,
        message: &str,
    ) -> ObjectId {
        self.commit_ops(
            branch,
            &[
                Op::Delete(from),
                Op::Write {
                    path: to,
                    data: new_content.as_bytes(),
                    mode: "100644",
                },
            ],
            message,
        )
    }
}
