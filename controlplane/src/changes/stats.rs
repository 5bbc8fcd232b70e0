//! Per-file change statistics (`git diff --numstat -M` with statuses) between two trees.

use gix::ObjectId;

use super::{
    ancestry::three_dot_base,
    blob,
    diff::{Entry, FileStatus, changed_entries},
    error::ChangesError,
    handle, lines,
};

/// One changed file of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Repository-relative path after the change (git paths are bytes; invalid UTF-8 is
    /// replaced).
    pub path: String,
    /// The source path of a rename or copy.
    pub old_path: Option<String>,
    pub status: FileStatus,
    /// Lines added; 0 for binary files.
    pub insertions: u32,
    /// Lines removed; 0 for binary files.
    pub deletions: u32,
    /// Either side has a NUL byte in its first 8000 bytes (or is too large to line-diff).
    pub binary: bool,
}

/// Sums over a list of [`FileChange`]s, as in `git diff --shortstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffTotals {
    pub files: usize,
    pub insertions: u64,
    pub deletions: u64,
}

impl DiffTotals {
    pub fn of(changes: &[FileChange]) -> Self {
        changes
            .iter()
            .fold(DiffTotals::default(), |t, c| DiffTotals {
                files: t.files + 1,
                insertions: t.insertions + u64::from(c.insertions),
                deletions: t.deletions + u64::from(c.deletions),
            })
    }
}

/// The files that differ from `from` to `to` (commits or trees), ordered by path, with
/// renames detected and line counts per file.
pub fn diff_files(
    repo: &gix::Repository,
    from: ObjectId,
    to: ObjectId,
) -> Result<Vec<FileChange>, ChangesError> {
    file_changes(&handle::cached(repo), from, to)
}

/// The change request view `base...head`: what `head` changed since it forked from `base`.
pub fn three_dot_files(
    repo: &gix::Repository,
    base: ObjectId,
    head: ObjectId,
) -> Result<Vec<FileChange>, ChangesError> {
    let repo = &handle::cached(repo);
    file_changes(repo, three_dot_base(repo, base, head)?, head)
}

fn file_changes(
    repo: &gix::Repository,
    from: ObjectId,
    to: ObjectId,
) -> Result<Vec<FileChange>, ChangesError> {
    let algorithm = lines::algorithm(repo);
    changed_entries(repo, from, to)?
        .into_iter()
        .map(|entry| file_change(repo, algorithm, entry))
        .collect()
}

fn file_change(
    repo: &gix::Repository,
    algorithm: gix::diff::blob::Algorithm,
    entry: Entry,
) -> Result<FileChange, ChangesError> {
    let old = blob::load(repo, entry.old.as_ref())?;
    let new = blob::load(repo, entry.new.as_ref())?;
    let binary = old.binary || new.binary;
    let unchanged = matches!((&entry.old, &entry.new), (Some(o), Some(n)) if o.id == n.id);
    let (insertions, deletions) = if binary || unchanged {
        (0, 0)
    } else {
        let d = lines::diff(algorithm, &old.data, &new.data);
        (d.diff.count_additions(), d.diff.count_removals())
    };
    let old_path = match entry.status {
        FileStatus::Renamed | FileStatus::Copied => entry.old.as_ref().map(|s| s.path.to_string()),
        _ => None,
    };
    Ok(FileChange {
        path: entry.path().to_string(),
        old_path,
        status: entry.status,
        insertions,
        deletions,
        binary,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Fixture, Op};
    use super::*;

    fn numbered(n: usize) -> String {
        (0..n).map(|i| format!("line number {i}\n")).collect()
    }

    #[test]
    fn renames_binaries_and_counts_match_git() {
        let fx = Fixture::new();
        fx.commit(
            "main",
            &[
                ("src/old.txt", &numbered(20)),
                ("keep.txt", "a\nb\nc\n"),
                ("gone.txt", "x\n"),
            ],
            "root",
        );
        fx.branch("topic", "main");
        let edited = numbered(20).replace("line number 7\n", "line number seven\n");
        fx.rename(
            "topic",
            "src/old.txt",
            "src/new.txt",
            &edited,
            "move with a small edit",
        );
        fx.commit_ops(
            "topic",
            &[
                Op::Write {
                    path: "img.png",
                    data: b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
                    mode: "100644",
                },
                Op::Write {
                    path: "keep.txt",
                    data: b"a\nB\nc\nd\n",
                    mode: "100644",
                },
                Op::Delete("gone.txt"),
            ],
            "more",
        );
        // A change on main after the fork must not show up in the three-dot view.
        fx.commit("main", &[("main-only.txt", "m\n")], "main moves on");
        let repo = fx.open();
        let files = three_dot_files(&repo, fx.sha("main"), fx.sha("topic")).unwrap();

        let by_path = |p: &str| {
            files
                .iter()
                .find(|f| f.path == p)
                .unwrap_or_else(|| panic!("{p} in {files:?}"))
        };
        let renamed = by_path("src/new.txt");
        assert_eq!(renamed.status, FileStatus::Renamed);
        assert_eq!(renamed.old_path.as_deref(), Some("src/old.txt"));
        assert_eq!((renamed.insertions, renamed.deletions), (1, 1));
        let image = by_path("img.png");
        assert!(image.binary);
        assert_eq!(
            (image.status, image.insertions, image.deletions),
            (FileStatus::Added, 0, 0)
        );
        assert_eq!(by_path("gone.txt").status, FileStatus::Deleted);
        assert_eq!(by_path("keep.txt").status, FileStatus::Modified);
        assert!(files.iter().all(|f| f.path != "main-only.txt"));
        assert_eq!(files.len(), 4);

        // Same numbers and statuses as git's own view of `main...topic`.
        let numstat = fx.git(&["diff", "--numstat", "-M", "main...topic"]);
        let name_status = fx.git(&["diff", "--name-status", "-M", "main...topic"]);
        for file in &files {
            let counts = if file.binary {
                "-\t-".to_owned()
            } else {
                format!("{}\t{}", file.insertions, file.deletions)
            };
            let shown = match &file.old_path {
                Some(old) => format!("src/{{{} => {}}}", &old[4..], &file.path[4..]),
                None => file.path.clone(),
            };
            assert!(
                numstat.contains(&format!("{counts}\t{shown}\n")),
                "{file:?} vs\n{numstat}"
            );
            assert!(
                name_status
                    .lines()
                    .any(|l| l.starts_with(file.status.letter()) && l.ends_with(&file.path)),
                "{file:?} vs\n{name_status}"
            );
        }
        assert_eq!(
            DiffTotals::of(&files),
            DiffTotals {
                files: 4,
                insertions: 3,
                deletions: 3
            }
        );
    }

    #[test]
    fn mode_and_type_changes() {
        let fx = Fixture::new();
        fx.commit(
            "main",
            &[("run.sh", "echo hi\n"), ("link", "target\n")],
            "root",
        );
        fx.branch("topic", "main");
        fx.commit_ops(
            "topic",
            &[
                Op::Write {
                    path: "run.sh",
                    data: b"echo hi\n",
                    mode: "100755",
                },
                Op::Write {
                    path: "link",
                    data: b"elsewhere",
                    mode: "120000",
                },
            ],
            "chmod and symlink",
        );
        let repo = fx.open();
        let files = three_dot_files(&repo, fx.sha("main"), fx.sha("topic")).unwrap();
        let statuses: Vec<_> = files
            .iter()
            .map(|f| (f.path.as_str(), f.status, f.insertions, f.deletions))
            .collect();
        assert_eq!(
            statuses,
            [
                ("link", FileStatus::TypeChanged, 1, 1),
                ("run.sh", FileStatus::Modified, 0, 0)
            ]
        );
    }
}
