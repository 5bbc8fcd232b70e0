//! Compare-and-swap updates of refs in a bare repository.
//!
//! Every ref the control plane writes (session branches, the default branch on merge) goes
//! through [`update_ref`], so two writers racing on one ref never both win: the loser gets
//! [`RefError::Moved`] with the value it lost to and can re-read and retry.

use std::{fmt, path::PathBuf, time::Duration};

use gix::{
    ObjectId,
    lock::acquire::Fail,
    refs::{
        Target,
        file::transaction::prepare::{MustNotExist, ReferenceOutOfDate},
        transaction::{Change, PreviousValue, RefEdit},
    },
};

use super::names::{self, NameError};

/// How long a writer waits for another writer's lock on the same ref before giving up. Locks
/// are held only for the few file operations of one update, so this is generous.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The identity written into ref logs for updates made by the control plane.
const REFLOG_NAME: &str = "Kortix";
const REFLOG_EMAIL: &str = "kortix@localhost";

/// What the ref must hold before the update for it to happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Create only: the ref must not exist yet.
    MustNotExist,
    /// The ref must exist and point exactly at this object.
    MustEqual(ObjectId),
    /// No condition: set the ref whatever it holds.
    Any,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::MustNotExist => f.write_str("no ref"),
            Expected::MustEqual(id) => write!(f, "{id}"),
            Expected::Any => f.write_str("any value"),
        }
    }
}

/// Why a ref could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error(transparent)]
    Name(#[from] NameError),
    /// The compare-and-swap failed: someone else moved (or created, or deleted) the ref.
    #[error("ref {name} moved: expected {expected}, found {}", display_actual(.actual))]
    Moved {
        name: String,
        expected: Expected,
        /// What the ref holds now; `None` when it does not exist.
        actual: Option<ObjectId>,
    },
    #[error("could not {action} ref {name} in {repo}: {message}")]
    Git {
        action: &'static str,
        name: String,
        repo: PathBuf,
        message: String,
    },
}

fn display_actual(actual: &Option<ObjectId>) -> String {
    actual.map_or_else(|| "no ref".to_owned(), |id| id.to_string())
}

/// Sets the full ref `name` (which must start with `refs/`) to `new` if and only if it
/// currently satisfies `expected`, atomically with respect to every other writer of the ref
/// (git included), and records `log_message` in the ref log when the repository keeps one.
pub fn update_ref(
    repo: &gix::Repository,
    name: &str,
    expected: Expected,
    new: ObjectId,
    log_message: &str,
) -> Result<(), RefError> {
    names::full_ref(name)?;
    let git_error = |message: String| RefError::Git {
        action: "update",
        name: name.to_owned(),
        repo: repo.path().to_owned(),
        message,
    };
    let full_name: gix::refs::FullName = name
        .try_into()
        .map_err(|e: gix::validate::reference::name::Error| git_error(e.to_string()))?;
    let previous = match expected {
        Expected::MustNotExist => PreviousValue::MustNotExist,
        Expected::MustEqual(id) => PreviousValue::MustExistAndMatch(Target::Object(id)),
        Expected::Any => PreviousValue::Any,
    };
    // Ref-log messages must be a single line.
    let log_message = log_message.replace(['\n', '\r'], " ");
    let edit = RefEdit::update(full_name, new, previous, log_message);

    let committer = gix::actor::Signature {
        name: REFLOG_NAME.into(),
        email: REFLOG_EMAIL.into(),
        time: gix::date::Time::now_utc(),
    };
    let mut time_buf = gix::date::parse::TimeBuf::default();
    let wait = Fail::AfterDurationWithBackoff(LOCK_WAIT);
    let outcome = repo
        .refs
        .transaction()
        .prepare(Some(edit), wait, wait)
        .and_then(|tx| tx.commit(committer.to_ref(&mut time_buf)));
    let err = match outcome {
        Ok(edits) => {
            // gix lets a create succeed as a no-op when the ref already holds `new`; we
            // promise create-only, so an edit that found a previous value lost the race.
            let existed = edits.iter().find_map(|edit| match &edit.change {
                Change::Update {
                    expected: PreviousValue::MustExistAndMatch(previous),
                    ..
                } if edit.name.as_bstr() == name.as_bytes() => Some(previous.clone()),
                _ => None,
            });
            return match (expected, existed) {
                (Expected::MustNotExist, Some(previous)) => Err(RefError::Moved {
                    name: name.to_owned(),
                    expected,
                    actual: target_id(repo, &previous),
                }),
                _ => Ok(()),
            };
        }
        Err(err) => err,
    };

    let lost_to = err
        .downcast_any_ref::<ReferenceOutOfDate>()
        .map(|e| &e.actual)
        .or_else(|| err.downcast_any_ref::<MustNotExist>().map(|e| &e.actual));
    if let Some(actual) = lost_to {
        return Err(RefError::Moved {
            name: name.to_owned(),
            expected,
            actual: target_id(repo, actual),
        });
    }
    // Other failures (a missing ref under MustEqual, a lock we never got) are judged against
    // what the ref holds now, so the caller still learns the ref moved when that is the cause.
    let actual = read_ref(repo, name)
        .map_err(|read_err| git_error(format!("{err}; then reading it failed: {read_err}")))?;
    let satisfied = match expected {
        Expected::MustNotExist => actual.is_none(),
        Expected::MustEqual(id) => actual == Some(id),
        Expected::Any => true,
    };
    if satisfied {
        Err(git_error(chain(&err)))
    } else {
        Err(RefError::Moved {
            name: name.to_owned(),
            expected,
            actual,
        })
    }
}

/// The object a full ref points at (following symbolic refs), or `None` when it does not exist.
pub fn read_ref(repo: &gix::Repository, name: &str) -> Result<Option<ObjectId>, RefError> {
    names::full_ref(name)?;
    let git_error = |message: String| RefError::Git {
        action: "read",
        name: name.to_owned(),
        repo: repo.path().to_owned(),
        message,
    };
    let reference = repo
        .try_find_reference(name)
        .map_err(|e| git_error(chain(&e)))?;
    match reference {
        None => Ok(None),
        Some(mut reference) => reference
            .follow_to_object()
            .map(|id| Some(id.detach()))
            .map_err(|e| git_error(chain(&e))),
    }
}

/// The commit (or other object) that `refs/heads/<branch>` points at, or `None` when the branch
/// does not exist.
pub fn resolve_branch(repo: &gix::Repository, branch: &str) -> Result<Option<ObjectId>, RefError> {
    read_ref(repo, &names::branch_ref(branch)?)
}

fn target_id(repo: &gix::Repository, target: &Target) -> Option<ObjectId> {
    match target {
        Target::Object(id) => Some(*id),
        Target::Symbolic(name) => read_ref(repo, &name.as_bstr().to_string()).ok().flatten(),
    }
}

/// Renders an error with its causes on one line; gix errors keep the useful part in the chain.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    fn bare_repo() -> (tempfile::TempDir, gix::Repository) {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path().join("r.git")).unwrap();
        (dir, repo)
    }

    fn blob(repo: &gix::Repository, text: &str) -> ObjectId {
        repo.write_blob(text.as_bytes()).unwrap().detach()
    }

    #[test]
    fn create_then_compare_and_swap() {
        let (_dir, repo) = bare_repo();
        let a = blob(&repo, "a");
        let b = blob(&repo, "b");
        assert_eq!(resolve_branch(&repo, "main").unwrap(), None);

        update_ref(
            &repo,
            "refs/heads/main",
            Expected::MustNotExist,
            a,
            "create",
        )
        .unwrap();
        assert_eq!(resolve_branch(&repo, "main").unwrap(), Some(a));

        let err =
            update_ref(&repo, "refs/heads/main", Expected::MustNotExist, b, "again").unwrap_err();
        assert!(
            matches!(err, RefError::Moved { actual: Some(x), expected: Expected::MustNotExist, .. } if x == a),
            "{err:?}"
        );

        // Creating again at the very same value is refused too: create means create.
        let err =
            update_ref(&repo, "refs/heads/main", Expected::MustNotExist, a, "same").unwrap_err();
        assert!(
            matches!(err, RefError::Moved { actual: Some(x), .. } if x == a),
            "{err:?}"
        );

        update_ref(
            &repo,
            "refs/heads/main",
            Expected::MustEqual(a),
            b,
            "advance",
        )
        .unwrap();
        assert_eq!(resolve_branch(&repo, "main").unwrap(), Some(b));

        let err =
            update_ref(&repo, "refs/heads/main", Expected::MustEqual(a), a, "stale").unwrap_err();
        assert!(
            matches!(err, RefError::Moved { actual: Some(x), .. } if x == b),
            "{err:?}"
        );
        assert!(err.to_string().contains("moved"), "{err}");

        update_ref(&repo, "refs/heads/main", Expected::Any, a, "force").unwrap();
        assert_eq!(resolve_branch(&repo, "main").unwrap(), Some(a));
    }

    #[test]
    fn must_equal_on_a_missing_ref_is_moved_to_nothing() {
        let (_dir, repo) = bare_repo();
        let a = blob(&repo, "a");
        let err = update_ref(&repo, "refs/heads/x", Expected::MustEqual(a), a, "m").unwrap_err();
        assert!(
            matches!(err, RefError::Moved { actual: None, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn cas_sees_refs_written_by_git_and_packed_refs() {
        let (_dir, repo) = bare_repo();
        let a = blob(&repo, "a");
        let b = blob(&repo, "b");
        update_ref(
            &repo,
            "refs/heads/main",
            Expected::MustNotExist,
            a,
            "create",
        )
        .unwrap();
        kortix_tests::git::GitEnv::new().ok(repo.path(), &["pack-refs", "--all"]);
        assert!(!repo.path().join("refs/heads/main").exists());
        let err = update_ref(&repo, "refs/heads/main", Expected::MustNotExist, b, "c").unwrap_err();
        assert!(
            matches!(err, RefError::Moved { actual: Some(x), .. } if x == a),
            "{err:?}"
        );
        update_ref(
            &repo,
            "refs/heads/main",
            Expected::MustEqual(a),
            b,
            "advance",
        )
        .unwrap();
        assert_eq!(resolve_branch(&repo, "main").unwrap(), Some(b));
    }

    /// Replicas sharing repository storage update refs from different processes: a
    /// compare-and-swap here racing one by the `git` program (another process, git's own
    /// lock files) never lets both win, round after round.
    #[test]
    fn compare_and_swap_holds_against_another_process() {
        let (_dir, repo) = bare_repo();
        let name = "refs/kortix/race";
        let mut current = blob(&repo, "start");
        update_ref(&repo, name, Expected::MustNotExist, current, "create").unwrap();
        let git = kortix_tests::git::GitEnv::new();
        for round in 0..20 {
            let ours = blob(&repo, &format!("ours {round}"));
            let theirs = blob(&repo, &format!("theirs {round}"));
            let barrier = Arc::new(Barrier::new(2));
            let other = {
                let (barrier, path) = (barrier.clone(), repo.path().to_path_buf());
                let mut cmd = git.command(&path);
                cmd.args([
                    "update-ref",
                    name,
                    &theirs.to_string(),
                    &current.to_string(),
                ]);
                std::thread::spawn(move || {
                    barrier.wait();
                    cmd.output().unwrap().status.success()
                })
            };
            barrier.wait();
            let we_won =
                update_ref(&repo, name, Expected::MustEqual(current), ours, "race").is_ok();
            let they_won = other.join().unwrap();
            assert!(
                we_won != they_won,
                "round {round}: exactly one writer wins ({we_won}, {they_won})"
            );
            let now = read_ref(&repo, name).unwrap().unwrap();
            assert_eq!(now, if we_won { ours } else { theirs }, "round {round}");
            current = now;
        }
    }

    #[test]
    fn refuses_names_outside_refs() {
        let (_dir, repo) = bare_repo();
        let a = blob(&repo, "a");
        for bad in [
            "HEAD",
            "config",
            "refs/heads/../../config",
            "refs/heads/a b",
        ] {
            let err = update_ref(&repo, bad, Expected::Any, a, "x").unwrap_err();
            assert!(matches!(err, RefError::Name(_)), "{bad}: {err:?}");
        }
        assert!(matches!(
            resolve_branch(&repo, "../x"),
            Err(RefError::Name(_))
        ));
    }

    #[test]
    fn concurrent_creates_of_one_value_have_exactly_one_winner() {
        let (dir, repo) = bare_repo();
        let value = blob(&repo, "same");
        let path = dir.path().join("r.git");
        for round in 0..10 {
            let name = format!("refs/heads/b{round}");
            let barrier = Arc::new(Barrier::new(3));
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let (barrier, path, name) = (barrier.clone(), path.clone(), name.clone());
                    std::thread::spawn(move || {
                        let repo = gix::open(&path).unwrap();
                        barrier.wait();
                        update_ref(&repo, &name, Expected::MustNotExist, value, "create")
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(
                results.iter().filter(|r| r.is_ok()).count(),
                1,
                "{results:?}"
            );
        }
    }

    #[test]
    fn concurrent_swaps_have_exactly_one_winner() {
        let (dir, repo) = bare_repo();
        let base = blob(&repo, "base");
        update_ref(
            &repo,
            "refs/heads/main",
            Expected::MustNotExist,
            base,
            "create",
        )
        .unwrap();
        let path = dir.path().join("r.git");
        for round in 0..20 {
            let current = resolve_branch(&repo, "main").unwrap().unwrap();
            let contenders = 4;
            let barrier = Arc::new(Barrier::new(contenders));
            let handles: Vec<_> = (0..contenders)
                .map(|i| {
                    let barrier = barrier.clone();
                    let path = path.clone();
                    std::thread::spawn(move || {
                        // Each contender has its own handle, like separate requests would.
                        let repo = gix::open(&path).unwrap();
                        let new = blob(&repo, &format!("round {round} contender {i}"));
                        barrier.wait();
                        let result = update_ref(
                            &repo,
                            "refs/heads/main",
                            Expected::MustEqual(current),
                            new,
                            "race",
                        );
                        (new, result)
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
            assert_eq!(winners.len(), 1, "round {round}: {results:?}");
            let winner = winners[0].0;
            for (_, result) in results.iter().filter(|(_, r)| r.is_err()) {
                match result {
                    Err(RefError::Moved { actual, .. }) => assert_eq!(*actual, Some(winner)),
                    other => panic!("loser should see Moved, got {other:?}"),
                }
            }
            assert_eq!(resolve_branch(&repo, "main").unwrap(), Some(winner));
        }
    }
}
