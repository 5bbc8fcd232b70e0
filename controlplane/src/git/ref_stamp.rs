//! A cheap test of whether a branch may have moved, without opening the repository.
//!
//! Every ref update — git's own, gix's transactions, `git pack-refs` — writes a lock file
//! and renames it over the ref (the loose file, or `packed-refs`), so the file's identity
//! (inode, change time, size) changes with every update, on this replica or any other
//! writing the same repository directory. Two `stat` calls are microseconds; opening the
//! repository with gix and resolving the ref is a trip to the blocking pool, whose tail on
//! a loaded machine was milliseconds per call (BENCHMARKS.md, "Connectors").
//!
//! A stamp is only ever a reason to *skip* a read: equal stamps mean "nothing was renamed
//! over these files". Anything unexpected (an unreadable file, an invalid branch name)
//! gives no stamp, and the caller reads the ref as before.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One file's identity, or that it is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileStamp {
    Absent,
    Present {
        dev: u64,
        ino: u64,
        len: u64,
        ctime: (i64, i64),
        mtime: (i64, i64),
    },
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        match std::fs::symlink_metadata(path) {
            Ok(m) => Some(FileStamp::Present {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                ctime: (m.ctime(), m.ctime_nsec()),
                mtime: (m.mtime(), m.mtime_nsec()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(FileStamp::Absent),
            Err(_) => None,
        }
    }
}

/// Where a branch's head can be: its loose ref file and `packed-refs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefStamp {
    loose: FileStamp,
    packed: FileStamp,
}

impl RefStamp {
    /// The stamp of `branch` in the bare repository at `repo`, or `None` when it cannot be
    /// told (then nothing may be skipped).
    pub fn of_branch(repo: &Path, branch: &str) -> Option<RefStamp> {
        let full = super::names::branch_ref(branch).ok()?;
        Some(RefStamp {
            loose: FileStamp::of(&repo.join(full))?,
            packed: FileStamp::of(&repo.join("packed-refs"))?,
        })
    }
}

/// Runs the `git` program in `dir` with `input` on its stdin; its trimmed stdout. Tests
/// move refs with it the way another process (or replica) would.
#[cfg(test)]
pub(crate) fn git_out(dir: &Path, args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A commit of `tree` whose parent is `main`'s head, made with the `git` program (the
/// branch does not move).
#[cfg(test)]
pub(crate) fn commit_on_main(dir: &Path, tree: &str) -> String {
    let args = [
        "-c",
        "user.name=T",
        "-c",
        "user.email=t@example.com",
        "commit-tree",
        tree,
        "-p",
        "main",
        "-m",
        "moved",
    ];
    git_out(dir, &args, b"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::{Author, Expected, Repos, update_ref};

    #[test]
    fn every_kind_of_ref_update_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let repos = Repos::open(dir.path().join("repos")).unwrap();
        let path = repos.path("p1").unwrap();
        let none = RefStamp::of_branch(&path, "main").unwrap();
        assert_eq!(none, RefStamp::of_branch(&path, "main").unwrap());

        let author = Author {
            name: "T".into(),
            email: "t@example.com".into(),
        };
        let first = repos
            .create_empty("p1", "main", "kortix_version = 1\n", &author)
            .unwrap();
        let created = RefStamp::of_branch(&path, "main").unwrap();
        assert_ne!(created, none, "the branch appeared");
        assert_eq!(created, RefStamp::of_branch(&path, "main").unwrap());

        // A ref moved by the control plane (compare-and-swap through gix).
        let git = |args: &[&str]| git_out(&path, args, b"");
        let tree = git(&["rev-parse", "main^{tree}"]);
        let second = commit_on_main(&path, &tree);
        let second = gix::ObjectId::from_hex(second.as_bytes()).unwrap();
        let repo = repos.open_repo("p1").unwrap();
        update_ref(
            &repo,
            "refs/heads/main",
            Expected::MustEqual(first),
            second,
            "a",
        )
        .unwrap();
        let moved = RefStamp::of_branch(&path, "main").unwrap();
        assert_ne!(moved, created, "a commit on the branch");

        // Moved back to the same commit: same size and content, new file.
        update_ref(
            &repo,
            "refs/heads/main",
            Expected::MustEqual(second),
            first,
            "reset",
        )
        .unwrap();
        let reset = RefStamp::of_branch(&path, "main").unwrap();
        assert_ne!(reset, moved);
        assert_ne!(
            reset, created,
            "same target as when created, still a new stamp"
        );

        // git's own pack-refs moves the loose ref into packed-refs.
        git(&["pack-refs", "--all"]);
        assert_ne!(RefStamp::of_branch(&path, "main").unwrap(), reset);

        assert_eq!(RefStamp::of_branch(&path, "../../etc"), None);
    }
}
