//! Helpers for tests that drive the real `git` program.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// A private HOME for git in tests, so no machine or user config leaks in.
pub struct GitEnv {
    pub home: tempfile::TempDir,
}

impl GitEnv {
    pub fn new() -> Self {
        GitEnv {
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new("git");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GIT_") {
                cmd.env_remove(&key);
            }
        }
        cmd.current_dir(dir)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_COMMITTER_NAME", "Test Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.com")
            .env("LC_ALL", "C")
            .args(["-c", "credential.helper=", "-c", "init.defaultBranch=main"]);
        cmd
    }

    /// Runs git and returns its output, successful or not.
    pub fn run(&self, dir: &Path, args: &[&str]) -> Output {
        self.command(dir).args(args).output().unwrap()
    }

    /// Runs git, panics with its stderr on failure, returns trimmed stdout.
    pub fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.run(dir, args);
        assert!(
            out.status.success(),
            "git {args:?} in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A non-bare repository at `dir/name` with branch `main` holding one commit.
    pub fn work_repo(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        self.ok(dir, &["init", "-q", "-b", "main", path.to_str().unwrap()]);
        self.commit_file(&path, "README.md", "hello\n", "first");
        path
    }

    pub fn commit_file(&self, repo: &Path, file: &str, content: &str, message: &str) -> String {
        let full = repo.join(file);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&full, content).unwrap();
        self.ok(repo, &["add", file]);
        self.ok(repo, &["commit", "-q", "-m", message]);
        self.ok(repo, &["rev-parse", "HEAD"])
    }
}
