//! Watches the session branch and turns each new commit into a `CommitRecord`, and each
//! commit that later reaches the remote into an update with `pushed = true`.
//!
//! Polling the two refs (`refs/heads/<branch>`, `refs/remotes/origin/<branch>`) is enough:
//! `git push` updates the remote-tracking ref, and a one-second poll costs two small reads.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gix::ObjectId;
use kortix_proto::v1::CommitRecord;
use tokio::task::JoinHandle;

use crate::records::RecordSink;

/// Most commits examined per poll; a bigger jump (an imported history) is summarised.
const MAX_WALK: usize = 10_000;
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Unpushed commits remembered for their later `pushed` update.
const MAX_UNPUSHED: usize = 100_000;

#[derive(Debug, thiserror::Error)]
#[error("commit watcher for {workspace} ({context}): {message}")]
pub struct CommitError {
    pub workspace: PathBuf,
    pub context: &'static str,
    pub message: String,
}

pub struct CommitWatcher {
    workspace: PathBuf,
    branch: String,
    head: Option<ObjectId>,
    remote: Option<ObjectId>,
    /// Emitted (or inherited) commits not yet on the remote, kept for the `pushed` update.
    unpushed: HashMap<ObjectId, CommitRecord>,
}

impl CommitWatcher {
    /// Takes the branch as it is now as the baseline: commits already there are not emitted,
    /// but local ones the remote lacks are remembered so their push is reported.
    pub fn new(workspace: &Path, branch: &str) -> Result<Self, CommitError> {
        let mut w = CommitWatcher {
            workspace: workspace.to_owned(),
            branch: branch.to_owned(),
            head: None,
            remote: None,
            unpushed: HashMap::new(),
        };
        let repo = w.open()?;
        let (head, remote) = w.tips(&repo)?;
        if let Some(head) = head {
            for id in w.walk(&repo, head, remote.into_iter().collect())? {
                let record = w.describe(&repo, id, false)?;
                w.unpushed.insert(id, record);
            }
        }
        w.head = head;
        w.remote = remote;
        Ok(w)
    }

    pub fn head(&self) -> Option<String> {
        self.head.map(|h| h.to_string())
    }

    /// Whether the local branch has commits the remote lacks.
    pub fn has_unpushed(&self) -> bool {
        !self.unpushed.is_empty()
    }

    fn err(&self, context: &'static str) -> impl FnOnce(String) -> CommitError + '_ {
        move |message| CommitError {
            workspace: self.workspace.clone(),
            context,
            message,
        }
    }

    fn open(&self) -> Result<gix::Repository, CommitError> {
        gix::open(&self.workspace).map_err(|e| self.err("opening the repository")(e.to_string()))
    }

    fn tips(
        &self,
        repo: &gix::Repository,
    ) -> Result<(Option<ObjectId>, Option<ObjectId>), CommitError> {
        let resolve = |name: String| -> Result<Option<ObjectId>, CommitError> {
            match repo.try_find_reference(name.as_str()) {
                Ok(Some(mut r)) => r
                    .peel_to_id()
                    .map(|id| Some(id.detach()))
                    .map_err(|e| self.err("resolving a ref")(format!("{name}: {e}"))),
                Ok(None) => Ok(None),
                Err(e) => Err(self.err("reading a ref")(format!("{name}: {e}"))),
            }
        };
        Ok((
            resolve(format!("refs/heads/{}", self.branch))?,
            resolve(format!("refs/remotes/origin/{}", self.branch))?,
        ))
    }

    /// Commits reachable from `tip` but not from `hidden`, oldest first.
    fn walk(
        &self,
        repo: &gix::Repository,
        tip: ObjectId,
        hidden: Vec<ObjectId>,
    ) -> Result<Vec<ObjectId>, CommitError> {
        let walk = repo
            .rev_walk([tip])
            .with_hidden(hidden)
            .all()
            .map_err(|e| self.err("walking history")(e.to_string()))?;
        let mut ids = Vec::new();
        for info in walk {
            let info = info.map_err(|e| self.err("walking history")(e.to_string()))?;
            ids.push(info.id);
            if ids.len() >= MAX_WALK {
                break;
            }
        }
        ids.reverse();
        Ok(ids)
    }

    fn describe(
        &self,
        repo: &gix::Repository,
        id: ObjectId,
        pushed: bool,
    ) -> Result<CommitRecord, CommitError> {
        let e = |m: String| self.err("reading a commit")(format!("{id}: {m}"));
        let commit = repo.find_commit(id).map_err(|x| e(x.to_string()))?;
        let author = commit.author().map_err(|x| e(x.to_string()))?;
        let committed = commit.time().map_err(|x| e(x.to_string()))?.seconds;
        let mut message = commit.message_raw_sloppy().to_string();
        if message.len() > MAX_MESSAGE_BYTES {
            let mut cut = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let parents: Vec<ObjectId> = commit.parent_ids().map(|p| p.detach()).collect();
        let tree = commit.tree().map_err(|x| e(x.to_string()))?;
        let base = match parents.first() {
            Some(p) => repo
                .find_commit(*p)
                .map_err(|x| e(x.to_string()))?
                .tree()
                .map_err(|x| e(x.to_string()))?,
            None => repo.empty_tree(),
        };
        let (files, insertions, deletions) = diff_stats(repo, &base, &tree).map_err(e)?;
        Ok(CommitRecord {
            sha: id.to_string(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            author_name: author.name.to_string(),
            author_email: author.email.to_string(),
            message,
            files_changed: files,
            insertions,
            deletions,
            pushed,
            committed_unix_s: committed,
        })
    }

    /// Looks at the refs once; returns the records to emit (new commits, then push updates).
    pub fn poll(&mut self) -> Result<Vec<CommitRecord>, CommitError> {
        let repo = self.open()?;
        let (head, remote) = self.tips(&repo)?;
        let mut out = Vec::new();
        let newly_pushed: Vec<ObjectId> = match remote {
            Some(r) if Some(r) != self.remote => {
                self.walk(&repo, r, self.remote.into_iter().collect())?
            }
            _ => Vec::new(),
        };
        let pushed_set: HashSet<ObjectId> = newly_pushed.iter().copied().collect();
        if let Some(h) = head
            && Some(h) != self.head
        {
            let hidden: Vec<ObjectId> = self.head.into_iter().chain(self.remote).collect();
            for id in self.walk(&repo, h, hidden)? {
                let pushed = pushed_set.contains(&id);
                let record = self.describe(&repo, id, pushed)?;
                if !pushed && self.unpushed.len() < MAX_UNPUSHED {
                    self.unpushed.insert(id, record.clone());
                }
                out.push(record);
            }
        }
        for id in &newly_pushed {
            if let Some(mut record) = self.unpushed.remove(id) {
                record.pushed = true;
                out.push(record);
            }
        }
        // History rewritten under us (reset, rebase): forget commits no longer on the branch.
        if head != self.head && !self.unpushed.is_empty() {
            if let Some(h) = head {
                let reachable: HashSet<ObjectId> = self
                    .walk(&repo, h, remote.into_iter().collect())?
                    .into_iter()
                    .collect();
                self.unpushed.retain(|id, _| reachable.contains(id));
            } else {
                self.unpushed.clear();
            }
        }
        self.head = head;
        self.remote = remote;
        Ok(out)
    }
}

/// Files changed and lines added/removed from `old` to `new`, like `git diff --shortstat`
/// without rename detection. Binary files count as changed with no lines.
fn diff_stats(
    repo: &gix::Repository,
    old: &gix::Tree<'_>,
    new: &gix::Tree<'_>,
) -> Result<(u32, u32, u32), String> {
    let mut cache = repo
        .diff_resource_cache_for_tree_diff()
        .map_err(|e| e.to_string())?;
    let (mut files, mut added, mut removed) = (0u32, 0u32, 0u32);
    let mut changes = old.changes().map_err(|e| e.to_string())?;
    changes.options(|o| {
        o.track_rewrites(None);
    });
    changes
        .for_each_to_obtain_tree(new, |change| {
            if !change.entry_mode().is_tree() {
                files = files.saturating_add(1);
                if let Some(counts) = change
                    .diff(&mut cache)
                    .ok()
                    .and_then(|mut p| p.line_counts().ok())
                    .flatten()
                {
                    added = added.saturating_add(counts.insertions);
                    removed = removed.saturating_add(counts.removals);
                }
                cache.clear_resource_cache_keep_allocation();
            }
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .map_err(|e| e.to_string())?;
    Ok((files, added, removed))
}

/// Runs a [`CommitWatcher`] on a timer, emitting its records; [`WatcherHandle::poll_now`]
/// forces a look (used at stop, after the final push).
#[derive(Clone)]
pub struct WatcherHandle {
    watcher: Arc<Mutex<CommitWatcher>>,
    sink: RecordSink,
}

impl WatcherHandle {
    pub fn new(watcher: CommitWatcher, sink: RecordSink) -> Self {
        WatcherHandle {
            watcher: Arc::new(Mutex::new(watcher)),
            sink,
        }
    }

    pub fn spawn(&self, interval: Duration) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_error = String::new();
            loop {
                tick.tick().await;
                if let Err(e) = this.poll_now().await {
                    // Report a persistent problem once, not every second.
                    let text = e.to_string();
                    if text != last_error {
                        this.sink.agent(text.clone());
                        last_error = text;
                    }
                } else {
                    last_error.clear();
                }
            }
        })
    }

    pub async fn poll_now(&self) -> Result<(), CommitError> {
        let watcher = self.watcher.clone();
        let records = tokio::task::spawn_blocking(move || {
            watcher.lock().unwrap_or_else(|p| p.into_inner()).poll()
        })
        .await
        .map_err(|e| CommitError {
            workspace: PathBuf::new(),
            context: "poll task",
            message: e.to_string(),
        })??;
        for r in records {
            self.sink.commit(r);
        }
        Ok(())
    }

    pub fn head(&self) -> Option<String> {
        self.watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .head()
    }

    pub fn has_unpushed(&self) -> bool {
        self.watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .has_unpushed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        kortix_tests::git::GitEnv::new().ok(dir, args)
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().join("remote.git");
        let ws = tmp.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        git(
            tmp.path(),
            &["init", "-q", "--bare", remote.to_str().unwrap()],
        );
        git(&ws, &["init", "-q"]);
        std::fs::write(ws.join("README"), "one\ntwo\n").unwrap();
        git(&ws, &["add", "."]);
        git(&ws, &["commit", "-q", "-m", "base"]);
        git(&ws, &["checkout", "-q", "-b", "s1"]);
        git(&ws, &["remote", "add", "origin", remote.to_str().unwrap()]);
        git(&ws, &["push", "-q", "origin", "s1"]);
        (tmp, ws)
    }

    #[test]
    fn emits_commits_with_stats_then_pushed_updates() {
        let (_tmp, ws) = setup();
        let mut w = CommitWatcher::new(&ws, "s1").unwrap();
        assert!(w.poll().unwrap().is_empty(), "baseline is not re-emitted");

        std::fs::write(ws.join("README"), "one\nTWO\nthree\n").unwrap();
        std::fs::write(ws.join("new.txt"), "a\nb\n").unwrap();
        std::fs::write(ws.join("blob.bin"), [0u8, 1, 2, 0, 255]).unwrap();
        git(&ws, &["add", "."]);
        git(&ws, &["commit", "-q", "-m", "change things\n\nbody"]);
        let sha = git(&ws, &["rev-parse", "HEAD"]);
        let parent = git(&ws, &["rev-parse", "HEAD~1"]);

        let recs = w.poll().unwrap();
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.sha, sha);
        assert_eq!(r.parents, vec![parent]);
        assert_eq!(
            (r.author_name.as_str(), r.author_email.as_str()),
            (
                kortix_tests::git::AUTHOR_NAME,
                kortix_tests::git::AUTHOR_EMAIL
            )
        );
        assert_eq!(r.message, "change things\n\nbody\n");
        // git diff --shortstat: 3 files changed, 4 insertions(+), 1 deletion(-)
        assert_eq!((r.files_changed, r.insertions, r.deletions), (3, 4, 1));
        assert!(!r.pushed);
        assert!(r.committed_unix_s > 1_600_000_000);
        assert!(w.has_unpushed());

        git(&ws, &["push", "-q", "origin", "s1"]);
        let recs = w.poll().unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].sha, sha);
        assert!(recs[0].pushed);
        assert!(!w.has_unpushed());
        assert!(w.poll().unwrap().is_empty());
    }

    #[test]
    fn commit_and_push_between_polls_is_one_pushed_record_and_restart_remembers_unpushed() {
        let (_tmp, ws) = setup();
        let mut w = CommitWatcher::new(&ws, "s1").unwrap();
        std::fs::write(ws.join("a.txt"), "x\n").unwrap();
        git(&ws, &["add", "."]);
        git(&ws, &["commit", "-q", "-m", "first"]);
        std::fs::write(ws.join("a.txt"), "y\n").unwrap();
        git(&ws, &["commit", "-q", "-am", "second"]);
        git(&ws, &["push", "-q", "origin", "s1"]);
        let recs = w.poll().unwrap();
        assert_eq!(
            recs.iter().map(|r| r.message.trim()).collect::<Vec<_>>(),
            ["first", "second"]
        );
        assert!(recs.iter().all(|r| r.pushed));
        assert_eq!(
            (recs[1].files_changed, recs[1].insertions, recs[1].deletions),
            (1, 1, 1)
        );

        std::fs::write(ws.join("a.txt"), "z\n").unwrap();
        git(&ws, &["commit", "-q", "-am", "third"]);
        // A restarted agent: the unpushed commit is known, and its push is reported.
        let mut w = CommitWatcher::new(&ws, "s1").unwrap();
        assert!(w.has_unpushed());
        assert!(w.poll().unwrap().is_empty());
        git(&ws, &["push", "-q", "origin", "s1"]);
        let recs = w.poll().unwrap();
        assert_eq!(recs.len(), 1);
        assert!(recs[0].pushed && recs[0].message.trim() == "third");
    }
}
