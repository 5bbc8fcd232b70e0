//! Uncommitted work across sandboxes. When a session winds down, the working tree's
//! uncommitted state (tracked changes and untracked files git does not ignore) becomes one
//! commit whose parent is `HEAD`, built in a temporary index so the person's index and working
//! tree are left as they were, and pushed to `refs/kortix/wip/<session>` with the session's
//! credentials. The session branch never moves. When the session is resumed in a new sandbox,
//! that commit is fetched and put back into the working tree as uncommitted changes.
//!
//! A save with nothing uncommitted deletes the ref only when this sandbox restored it (the
//! work it held was committed or discarded here); a WIP ref this sandbox could not restore is
//! left alone, so nothing saved is ever thrown away by a later save.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

use crate::process::Reaper;

/// A changed file larger than this is left out of a save: build output or a dataset the
/// agent made, not work a person wants back, and a push of it could use up the whole
/// stop grace period.
pub const MAX_SAVED_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// All of a save's changed files together at most; past it the largest are left out first.
pub const MAX_SAVED_BYTES: u64 = 64 * 1024 * 1024;

/// The side ref a session's uncommitted work is pushed to.
pub fn wip_ref(session_id: &str) -> String {
    format!("refs/kortix/wip/{session_id}")
}

/// Where git runs: the workspace, its CA for an https remote, a deadline for all of it.
pub struct Git<'a> {
    pub reaper: &'a Reaper,
    pub workspace: &'a Path,
    pub ca_file: Option<&'a Path>,
    pub deadline: Instant,
}

/// What a save did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Saved {
    /// The commit now at the WIP ref; `None` when nothing was saved.
    pub commit: Option<String>,
    /// For people: "3 files saved to refs/kortix/wip/s1", "nothing uncommitted", or why not.
    pub note: String,
}

impl Git<'_> {
    async fn run(&self, args: &[&str], env: &[(&str, &Path)]) -> Result<String, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no time left for git {}", args.join(" ")));
        }
        let mut cmd = Command::new("git");
        cmd.args(args)
            .current_dir(self.workspace)
            .env("GIT_TERMINAL_PROMPT", "0");
        if let Some(ca) = self.ca_file {
            cmd.env("GIT_SSL_CAINFO", ca);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        match self.reaper.output(&mut cmd, left).await {
            Ok(out) if out.exit.success() => Ok(out.stdout.trim().to_owned()),
            Ok(out) => Err(format!(
                "git {} exited {}: {}",
                args.first().copied().unwrap_or(""),
                out.exit,
                out.stderr.trim()
            )),
            Err(e) => Err(format!("git {}: {e}", args.first().copied().unwrap_or(""))),
        }
    }

    /// Saves the uncommitted work to the WIP ref. `restored`: the WIP commit this sandbox
    /// put back at its start, if any (a save with nothing uncommitted then deletes the ref).
    pub async fn save(&self, session_id: &str, index: &Path, restored: Option<&str>) -> Saved {
        match self.try_save(session_id, index, restored).await {
            Ok(saved) => saved,
            Err(why) => Saved {
                commit: None,
                note: format!("uncommitted work not saved: {why}"),
            },
        }
    }

    async fn try_save(
        &self,
        session_id: &str,
        index: &Path,
        restored: Option<&str>,
    ) -> Result<Saved, String> {
        let name = wip_ref(session_id);
        let head = self
            .run(&["rev-parse", "--verify", "HEAD^{commit}"], &[])
            .await?;
        let _ = std::fs::remove_file(index);
        let env = [("GIT_INDEX_FILE", index)];
        let mut left_out = Vec::new();
        let tree = async {
            self.run(&["read-tree", "HEAD"], &env).await?;
            let changed = self.changed_files(&env).await?;
            left_out = too_large(changed.clone(), MAX_SAVED_FILE_BYTES, MAX_SAVED_BYTES);
            let mut unsaved: Vec<&str> = left_out.iter().map(|(path, _)| path.as_str()).collect();
            for (path, _) in &changed {
                if self.only_opencode_schema_added(path).await {
                    unsaved.push(path);
                }
            }
            // Left out before `add`, so a huge file is never even hashed into the objects.
            let excludes: Vec<String> = unsaved
                .iter()
                .map(|path| format!(":(exclude,literal){path}"))
                .collect();
            let mut add = vec!["add", "-A", "--", "."];
            add.extend(excludes.iter().map(String::as_str));
            self.run(&add, &env).await?;
            self.run(&["write-tree"], &env).await
        }
        .await;
        let _ = std::fs::remove_file(index);
        let tree = tree?;
        let head_tree = self.run(&["rev-parse", "HEAD^{tree}"], &[]).await?;
        let left_out_note = left_out_note(&left_out);
        if tree == head_tree {
            if !left_out.is_empty() {
                return Ok(Saved {
                    commit: None,
                    note: format!("nothing saved{left_out_note}"),
                });
            }
            if restored.is_some() {
                let deleted = self
                    .run(&["push", "origin", &format!(":{name}")], &[])
                    .await;
                return Ok(Saved {
                    commit: None,
                    note: match deleted {
                        Ok(_) => format!(
                            "nothing uncommitted; the restored work is gone from the working tree, so {name} was deleted"
                        ),
                        Err(e) => format!("nothing uncommitted; {name} could not be deleted: {e}"),
                    },
                });
            }
            return Ok(Saved {
                commit: None,
                note: "nothing uncommitted".into(),
            });
        }
        let changed = self
            .run(&["diff-tree", "-r", "--name-only", &head, &tree], &[])
            .await?
            .lines()
            .count();
        let message = format!(
            "kortix: uncommitted work of session {session_id}\n\nSaved when its sandbox ended; \
             `kortix sessions resume {session_id}` puts it back as uncommitted changes."
        );
        let commit = self
            .run(&["commit-tree", &tree, "-p", &head, "-m", &message], &[])
            .await?;
        self.run(&["push", "origin", &format!("+{commit}:{name}")], &[])
            .await?;
        Ok(Saved {
            note: format!(
                "{changed} file{} saved to {name}{left_out_note}",
                if changed == 1 { "" } else { "s" }
            ),
            commit: Some(commit),
        })
    }

    /// The changed files (modified or not yet tracked, not ignored) with their sizes. `env`
    /// points git at the save's index, which holds `HEAD`'s tree.
    async fn changed_files(&self, env: &[(&str, &Path)]) -> Result<Vec<(String, u64)>, String> {
        let changed = self
            .run(
                &[
                    "ls-files",
                    "-z",
                    "--modified",
                    "--others",
                    "--exclude-standard",
                ],
                env,
            )
            .await?;
        // A path can be listed twice (e.g. unmerged); it is one file.
        let paths: std::collections::BTreeSet<&str> = changed
            .split('\0')
            .filter(|path| !path.is_empty())
            .collect();
        let sized: Vec<(String, u64)> = paths
            .into_iter()
            .map(|path| {
                // A deleted file costs nothing; a symlink is stored as its target's name.
                let size = std::fs::symlink_metadata(self.workspace.join(path))
                    .map(|m| m.len())
                    .unwrap_or(0);
                (path.to_owned(), size)
            })
            .collect();
        Ok(sized)
    }

    /// Whether `path` is an OpenCode config file whose only change is the `$schema` key
    /// OpenCode writes into every config it loads: saving it would make every WIP commit
    /// carry a change nobody made. Comments (JSONC) or any other difference: it is saved.
    async fn only_opencode_schema_added(&self, path: &str) -> bool {
        let name = Path::new(path).file_name().and_then(|n| n.to_str());
        if !matches!(name, Some("opencode.json" | "opencode.jsonc")) {
            return false;
        }
        let Ok(now) = std::fs::read(self.workspace.join(path)) else {
            return false;
        };
        let Ok(before) = self.run(&["show", &format!("HEAD:{path}")], &[]).await else {
            return false;
        };
        same_but_schema(before.as_bytes(), &now)
    }

    /// Fetches the WIP ref and puts `expected` back into the working tree as uncommitted
    /// changes (nothing staged, new files untracked). Returns what it restored.
    pub async fn restore(&self, session_id: &str, expected: &str) -> Result<String, String> {
        let name = wip_ref(session_id);
        self.run(
            &["fetch", "--no-tags", "origin", &format!("+{name}:{name}")],
            &[],
        )
        .await
        .map_err(|e| format!("fetching {name}: {e}"))?;
        let got = self
            .run(
                &["rev-parse", "--verify", &format!("{name}^{{commit}}")],
                &[],
            )
            .await?;
        if got != expected {
            return Err(format!(
                "{name} is at {got}, not at the saved {expected}; left as it is"
            ));
        }
        let parent = self.run(&["rev-parse", &format!("{got}^")], &[]).await?;
        let head = self.run(&["rev-parse", "HEAD"], &[]).await?;
        let changed = self
            .run(&["diff-tree", "-r", "--name-only", &parent, &got], &[])
            .await?
            .lines()
            .count();
        if parent == head {
            self.run(&["read-tree", "--reset", "-u", &got], &[]).await?;
        } else if let Err(e) = self.run(&["cherry-pick", "--no-commit", &got], &[]).await {
            // Leave the fresh clone as it was; the saved work stays at the ref.
            let _ = self.run(&["reset", "-q", "--hard", "HEAD"], &[]).await;
            return Err(format!(
                "it was saved on {parent} but the branch is at {head}, and it does not apply there ({e}); it stays at {name}"
            ));
        }
        self.run(&["reset", "-q"], &[]).await?;
        Ok(format!(
            "restored {changed} uncommitted file{} from {name} ({})",
            if changed == 1 { "" } else { "s" },
            &got[..got.len().min(12)]
        ))
    }
}

/// The files left out of a save: each one larger than `file_cap`, then the largest of the
/// rest until what is kept fits in `total_cap`. Largest first.
fn too_large(mut files: Vec<(String, u64)>, file_cap: u64, total_cap: u64) -> Vec<(String, u64)> {
    files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut total: u64 = files.iter().map(|(_, size)| size).sum();
    let mut left_out = Vec::new();
    for (path, size) in files {
        if size > file_cap || total > total_cap {
            total -= size;
            left_out.push((path, size));
        }
    }
    left_out
}

/// Whether two JSON documents are the same object once a top-level `$schema` is dropped
/// from both.
fn same_but_schema(a: &[u8], b: &[u8]) -> bool {
    let without_schema = |bytes: &[u8]| {
        let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        value.as_object_mut()?.remove("$schema");
        Some(value)
    };
    match (without_schema(a), without_schema(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// "; left out 2 files too large to save: data.bin (40 MiB), …" or nothing.
fn left_out_note(left_out: &[(String, u64)]) -> String {
    const NAMED: usize = 5;
    if left_out.is_empty() {
        return String::new();
    }
    let mut named: Vec<String> = left_out
        .iter()
        .take(NAMED)
        .map(|(path, size)| format!("{path} ({} MiB)", size.div_ceil(1024 * 1024)))
        .collect();
    if left_out.len() > NAMED {
        named.push(format!("and {} more", left_out.len() - NAMED));
    }
    format!(
        "; left out {} file{} too large to save: {}",
        left_out.len(),
        if left_out.len() == 1 { "" } else { "s" },
        named.join(", ")
    )
}

/// The temporary index a save builds its tree in (outside the working tree).
pub fn index_path(run_dir: &Path) -> PathBuf {
    run_dir.join("wip-index")
}

/// The time a save may take: what is left before the deadline, at most `cap`.
pub fn budget(deadline: Instant, cap: Duration) -> Instant {
    let left = deadline.saturating_duration_since(Instant::now());
    Instant::now() + left.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ReapMode;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A clone of `remote`'s session branch in `root/name`.
    fn clone_of(root: &Path, remote: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        git(
            root,
            &[
                "clone",
                "-q",
                "-b",
                "s1",
                remote.to_str().unwrap(),
                dir.to_str().unwrap(),
            ],
        );
        dir
    }

    /// A bare "remote" and a clone of it with one commit, user identity set.
    fn repos(root: &Path) -> (PathBuf, PathBuf) {
        let remote = root.join("remote.git");
        let work = root.join("work");
        git(
            root,
            &["init", "-q", "--bare", "-b", "s1", remote.to_str().unwrap()],
        );
        git(root, &["init", "-q", "-b", "s1", work.to_str().unwrap()]);
        git(&work, &["config", "user.name", "agent"]);
        git(&work, &["config", "user.email", "agent@example.invalid"]);
        git(
            &work,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        std::fs::write(work.join("a.txt"), "one\n").unwrap();
        std::fs::write(work.join(".gitignore"), "*.log\n").unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        git(&work, &["push", "-q", "origin", "s1"]);
        (remote, work)
    }

    #[tokio::test]
    async fn saves_without_touching_the_index_and_restores_uncommitted() {
        let root = tempfile::tempdir().unwrap();
        let (remote, work) = repos(root.path());
        let reaper = Reaper::start(ReapMode::OwnChildren).unwrap();
        let index = root.path().join("wip-index");
        let g = Git {
            reaper: &reaper,
            workspace: &work,
            ca_file: None,
            deadline: Instant::now() + Duration::from_secs(30),
        };
        let nothing = g.save("s1", &index, None).await;
        assert_eq!(
            nothing,
            Saved {
                commit: None,
                note: "nothing uncommitted".into()
            }
        );

        std::fs::write(work.join("a.txt"), "one\ntwo\n").unwrap();
        std::fs::write(work.join("new.txt"), "new\n").unwrap();
        std::fs::write(work.join("noise.log"), "ignored\n").unwrap();
        git(&work, &["add", "new.txt"]);
        let status_before = git(&work, &["status", "--porcelain"]);
        let head = git(&work, &["rev-parse", "HEAD"]);
        let saved = g.save("s1", &index, None).await;
        let commit = saved.commit.clone().expect(&saved.note);
        assert_eq!(saved.note, "2 files saved to refs/kortix/wip/s1");
        // Nothing the person sees moved: same status, same branch head, no temporary index.
        assert_eq!(git(&work, &["status", "--porcelain"]), status_before);
        assert_eq!(git(&work, &["rev-parse", "HEAD"]), head);
        assert!(!index.exists());
        assert_eq!(git(&remote, &["rev-parse", "refs/kortix/wip/s1"]), commit);
        assert_eq!(git(&remote, &["rev-parse", "s1"]), head);
        assert_eq!(git(&remote, &["rev-parse", &format!("{commit}^")]), head);
        let files = git(&remote, &["ls-tree", "-r", "--name-only", &commit]);
        assert!(
            files.contains("new.txt") && !files.contains("noise.log"),
            "{files}"
        );

        // A new sandbox: a fresh clone of the branch gets the work back, uncommitted.
        let fresh = clone_of(root.path(), &remote, "fresh");
        let g2 = Git {
            workspace: &fresh,
            ..g
        };
        let note = g2.restore("s1", &commit).await.unwrap();
        assert!(note.starts_with("restored 2 uncommitted files"), "{note}");
        assert_eq!(
            std::fs::read_to_string(fresh.join("a.txt")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(
            std::fs::read_to_string(fresh.join("new.txt")).unwrap(),
            "new\n"
        );
        assert_eq!(
            git(&fresh, &["status", "--porcelain"]),
            " M a.txt\n?? new.txt".trim()
        );
        assert_eq!(git(&fresh, &["rev-parse", "HEAD"]), head);

        // A saved commit that is not the one expected is left alone.
        let err = g2.restore("s1", &head).await.unwrap_err();
        assert!(err.contains("not at the saved"), "{err}");

        // Committing the restored work and saving again deletes the ref.
        git(&fresh, &["add", "-A"]);
        git(&fresh, &["commit", "-q", "-m", "done"]);
        let cleared = g2.save("s1", &index, Some(&commit)).await;
        assert_eq!(cleared.commit, None);
        assert!(cleared.note.contains("was deleted"), "{}", cleared.note);
        let refs = git(&remote, &["for-each-ref", "refs/kortix/"]);
        assert!(refs.is_empty(), "{refs}");
    }

    #[test]
    fn too_large_leaves_out_big_files_then_the_largest_until_the_rest_fits() {
        let files = |list: &[(&str, u64)]| -> Vec<(String, u64)> {
            list.iter().map(|(p, s)| (p.to_string(), *s)).collect()
        };
        assert!(too_large(files(&[("a", 5), ("b", 5)]), 10, 10).is_empty());
        assert_eq!(
            too_large(files(&[("a", 5), ("huge", 11), ("b", 5)]), 10, 100),
            files(&[("huge", 11)])
        );
        // 9 + 8 + 2 + 1 = 20 > 12: leave out 9 (11 left), and then everything fits.
        assert_eq!(
            too_large(files(&[("x", 1), ("big", 9), ("mid", 8), ("y", 2)]), 10, 12),
            files(&[("big", 9)])
        );
        assert_eq!(left_out_note(&[]), "");
        assert_eq!(
            left_out_note(&files(&[("data.bin", 40 * 1024 * 1024)])),
            "; left out 1 file too large to save: data.bin (40 MiB)"
        );
    }

    #[test]
    fn a_config_that_only_gained_opencodes_schema_is_the_same() {
        let before = br#"{"model": "m", "agent": {"a": {"x": 1}}}"#;
        let after = b"{\n  \"$schema\": \"https://opencode.ai/config.json\",\n  \"agent\": {\"a\": {\"x\": 1}},\n  \"model\": \"m\"\n}";
        assert!(same_but_schema(before, after));
        assert!(!same_but_schema(br#"{"model": "other"}"#, after));
        assert!(!same_but_schema(b"// comment\n{}", br#"{"$schema": "s"}"#));
        assert!(
            !same_but_schema(b"[]", b"[]"),
            "not an object: not OpenCode's config"
        );
    }

    fn git_in<'a>(reaper: &'a Reaper, workspace: &'a Path) -> Git<'a> {
        Git {
            reaper,
            workspace,
            ca_file: None,
            deadline: Instant::now() + Duration::from_secs(30),
        }
    }

    #[tokio::test]
    async fn a_file_too_large_is_left_out_and_named_and_the_rest_is_saved() {
        let root = tempfile::tempdir().unwrap();
        let (remote, work) = repos(root.path());
        let reaper = Reaper::start(ReapMode::OwnChildren).unwrap();
        let index = root.path().join("wip-index");
        let g = git_in(&reaper, &work);
        // OpenCode's own `$schema` in a committed config is not work: not saved.
        std::fs::create_dir_all(work.join(".kortix/opencode")).unwrap();
        std::fs::write(
            work.join(".kortix/opencode/opencode.json"),
            r#"{"model": "m"}"#,
        )
        .unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "config"]);
        std::fs::write(
            work.join(".kortix/opencode/opencode.json"),
            "{\n  \"$schema\": \"https://opencode.ai/config.json\",\n  \"model\": \"m\"\n}",
        )
        .unwrap();
        std::fs::write(work.join("a.txt"), "one\nedited\n").unwrap();
        let big = std::fs::File::create(work.join("weights.bin")).unwrap();
        big.set_len(MAX_SAVED_FILE_BYTES + 1).unwrap();
        let saved = g.save("s1", &index, None).await;
        let commit = saved.commit.clone().expect(&saved.note);
        assert_eq!(
            saved.note,
            "1 file saved to refs/kortix/wip/s1; left out 1 file too large to save: weights.bin (17 MiB)"
        );
        let files = git(&remote, &["ls-tree", "-r", "--name-only", &commit]);
        assert!(!files.contains("weights.bin"), "{files}");
        // Only the large file changed: nothing is saved, and the note says why.
        git(&work, &["checkout", "--", "a.txt"]);
        let nothing = g.save("s1", &index, None).await;
        assert_eq!(nothing.commit, None);
        assert!(
            nothing.note.starts_with("nothing saved; left out 1 file"),
            "{}",
            nothing.note
        );
    }

    #[tokio::test]
    async fn work_saved_before_the_branch_moved_is_put_back_on_its_new_head() {
        let root = tempfile::tempdir().unwrap();
        let (remote, work) = repos(root.path());
        let reaper = Reaper::start(ReapMode::OwnChildren).unwrap();
        let index = root.path().join("wip-index");
        std::fs::write(work.join("a.txt"), "one\nsaved\n").unwrap();
        let saved = git_in(&reaper, &work).save("s1", &index, None).await;
        let commit = saved.commit.expect(&saved.note);
        // Someone pushes to the session branch after the save: a file the save did not touch.
        let other = clone_of(root.path(), &remote, "other");
        std::fs::write(other.join("b.txt"), "theirs\n").unwrap();
        git(&other, &["add", "-A"]);
        git(&other, &["commit", "-q", "-m", "theirs"]);
        git(&other, &["push", "-q", "origin", "s1"]);
        let fresh = clone_of(root.path(), &remote, "fresh");
        let note = git_in(&reaper, &fresh)
            .restore("s1", &commit)
            .await
            .unwrap();
        assert!(note.starts_with("restored 1 uncommitted file"), "{note}");
        assert_eq!(
            std::fs::read_to_string(fresh.join("a.txt")).unwrap(),
            "one\nsaved\n"
        );
        assert_eq!(git(&fresh, &["status", "--porcelain"]), "M a.txt");

        // Work that no longer applies to the new head stays at the ref; the clone is clean.
        std::fs::write(other.join("a.txt"), "rewritten\n").unwrap();
        git(&other, &["commit", "-q", "-am", "rewrite"]);
        git(&other, &["push", "-q", "origin", "s1"]);
        let later = clone_of(root.path(), &remote, "later");
        let err = git_in(&reaper, &later)
            .restore("s1", &commit)
            .await
            .unwrap_err();
        assert!(err.contains("does not apply there"), "{err}");
        assert_eq!(git(&later, &["status", "--porcelain"]), "");
        assert_eq!(
            git(&remote, &["rev-parse", "refs/kortix/wip/s1"]),
            commit,
            "the saved work stays at its ref"
        );
    }
}
