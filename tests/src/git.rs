//! The one git test environment: the real `git` program with nothing of the machine's or the
//! user's configuration, a private `HOME`, fixed identities and a `main` default branch.
//!
//! Used by the control plane's unit tests (bare repositories, smart HTTP, triggers, change
//! requests) and the cross-crate tests alike, so every test drives git the same way.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Identity of commits made by tests.
pub const AUTHOR_NAME: &str = "Test Author";
pub const AUTHOR_EMAIL: &str = "author@example.com";
pub const COMMITTER_NAME: &str = "Test Committer";
pub const COMMITTER_EMAIL: &str = "committer@example.com";

/// A private `HOME` for git (removed on drop); optionally fixed commit dates, so the same
/// operations give the same object ids every run.
pub struct GitEnv {
    home: tempfile::TempDir,
    fixed_dates: bool,
}

impl Default for GitEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl GitEnv {
    pub fn new() -> Self {
        GitEnv {
            home: tempfile::tempdir().expect("a temp dir for git's HOME"),
            fixed_dates: false,
        }
    }

    /// Commits dated 2023-11-14 22:13:20 UTC, whatever the clock says.
    pub fn with_fixed_dates(mut self) -> Self {
        self.fixed_dates = true;
        self
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// `git` in `dir`, isolated: no `GIT_*` variable of the caller's environment, no system or
    /// global configuration (so no credential helper but one a repository configures itself),
    /// no terminal prompts.
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
            .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
            .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
            .env("GIT_COMMITTER_NAME", COMMITTER_NAME)
            .env("GIT_COMMITTER_EMAIL", COMMITTER_EMAIL)
            .env("LC_ALL", "C")
            .args(["-c", "init.defaultBranch=main"]);
        if self.fixed_dates {
            cmd.env("GIT_AUTHOR_DATE", "1700000000 +0000")
                .env("GIT_COMMITTER_DATE", "1700000000 +0000");
        }
        cmd
    }

    /// Runs git and returns its output, successful or not.
    pub fn run(&self, dir: &Path, args: &[&str]) -> Output {
        self.run_with(dir, args, None, &[])
    }

    /// Runs git with `stdin` as its input and `env` added to its environment.
    pub fn run_with(
        &self,
        dir: &Path,
        args: &[&str],
        stdin: Option<&[u8]>,
        env: &[(&str, &Path)],
    ) -> Output {
        let mut cmd = self.command(dir);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().expect("git runs");
        let mut input = child.stdin.take().expect("git's stdin");
        if let Some(bytes) = stdin {
            input.write_all(bytes).expect("writing git's stdin");
        }
        drop(input);
        child.wait_with_output().expect("waiting for git")
    }

    /// Runs git, panics with its stderr on failure, returns trimmed stdout.
    pub fn ok(&self, dir: &Path, args: &[&str]) -> String {
        ok_output(dir, args, self.run(dir, args))
    }

    /// [`GitEnv::ok`] with input on stdin.
    pub fn ok_with_stdin(&self, dir: &Path, args: &[&str], stdin: &[u8]) -> String {
        ok_output(dir, args, self.run_with(dir, args, Some(stdin), &[]))
    }

    /// A non-bare repository at `dir/name` with branch `main` holding one commit.
    pub fn work_repo(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        self.ok(dir, &["init", "-q", "-b", "main", &path.to_string_lossy()]);
        self.commit_file(&path, "README.md", "hello\n", "first");
        path
    }

    /// Writes `file` in the work tree `repo`, commits it, and returns the commit.
    pub fn commit_file(&self, repo: &Path, file: &str, content: &str, message: &str) -> String {
        let full = repo.join(file);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).expect("creating the file's directory");
        }
        std::fs::write(&full, content).expect("writing the file");
        self.ok(repo, &["add", file]);
        self.ok(repo, &["commit", "-q", "-m", message]);
        self.ok(repo, &["rev-parse", "HEAD"])
    }
}

fn ok_output(dir: &Path, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_isolated_and_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let env = GitEnv::new().with_fixed_dates();
        let a = env.work_repo(dir.path(), "a");
        let b = env.work_repo(dir.path(), "b");
        assert_eq!(
            env.ok(&a, &["rev-parse", "HEAD"]),
            env.ok(&b, &["rev-parse", "HEAD"]),
            "same content, identity and date: same commit"
        );
        assert_eq!(
            env.ok(&a, &["log", "-1", "--format=%an <%ae> / %cn"]),
            format!("{AUTHOR_NAME} <{AUTHOR_EMAIL}> / {COMMITTER_NAME}")
        );
        assert_eq!(env.ok(&a, &["symbolic-ref", "--short", "HEAD"]), "main");
        let blob = env.ok_with_stdin(&a, &["hash-object", "--stdin"], b"x");
        assert_eq!(
            blob, "c1b0730e0133447badcfd47fd144e254807b06e1",
            "sha1 of 'blob 1\\0x'"
        );
        assert!(!env.run(&a, &["rev-parse", "no-such-rev"]).status.success());
    }
}
