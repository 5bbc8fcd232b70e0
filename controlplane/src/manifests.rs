//! The one reader of `kortix.toml` on a project's default branch, parsed once per head.
//!
//! Sessions (template, OpenCode config dir), triggers (the sweeper asks for every project
//! every second) and the API (`projects info`) all read the manifest through [`Manifests`].
//! Reading and parsing the file is costly, so the parsed result is kept until the head
//! moves. Reading the head itself (gix opening the repository on the blocking pool) is
//! skipped too while the branch's [`RefStamp`] is unchanged: the connector broker asks on
//! every tool call, and that hop was the tail of its added latency.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gix::ObjectId;
use kortix_manifest::{Manifest, Trigger};

use crate::error::{DomainError, DomainResult};
use crate::git::ref_stamp::RefStamp;
use crate::git::{RepoError, Repos, repos::MANIFEST_PATH};

/// What the default branch says, at one head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultBranchManifest {
    pub branch: String,
    /// The branch's head; `None` when the branch (or the repository) is missing.
    pub head: Option<ObjectId>,
    pub state: ManifestState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestState {
    Parsed(Box<Manifest>),
    /// There is no `kortix.toml`: the defaults apply.
    Absent,
    /// There is nothing usable: why (rejected, too large, not a file, no branch, no repository).
    Unusable(String),
}

impl DefaultBranchManifest {
    pub fn manifest(&self) -> Option<&Manifest> {
        match &self.state {
            ManifestState::Parsed(m) => Some(m),
            ManifestState::Absent | ManifestState::Unusable(_) => None,
        }
    }

    /// Why there is no manifest to show, if there is none.
    pub fn problem(&self) -> Option<String> {
        match &self.state {
            ManifestState::Parsed(_) => None,
            ManifestState::Absent => Some(format!("no {MANIFEST_PATH} on {}", self.branch)),
            ManifestState::Unusable(why) => Some(why.clone()),
        }
    }

    /// What a session runs with: the manifest, or the defaults when there is none. An
    /// unusable one refuses the session rather than silently running with defaults.
    pub fn for_session(&self) -> Result<Manifest, String> {
        match &self.state {
            ManifestState::Parsed(m) => Ok(m.as_ref().clone()),
            ManifestState::Absent => Ok(Manifest::default()),
            ManifestState::Unusable(why) => Err(why.clone()),
        }
    }

    pub fn triggers(&self) -> &[Trigger] {
        self.manifest().map_or(&[], |m| m.triggers.as_slice())
    }

    pub fn trigger(&self, slug: &str) -> Option<&Trigger> {
        self.manifest().and_then(|m| m.trigger(slug))
    }

    /// Problems with `[[triggers]]` entries (and with the manifest as a whole), as
    /// "slug: message".
    pub fn trigger_errors(&self) -> Vec<String> {
        let mut out: Vec<String> = self.problem().into_iter().collect();
        if let Some(m) = self.manifest() {
            for d in m.errors.iter().filter(|d| d.section == "triggers") {
                let who = d
                    .slug
                    .clone()
                    .or_else(|| d.index.map(|i| format!("triggers[{i}]")))
                    .unwrap_or_else(|| "triggers".to_owned());
                out.push(format!("{who}: {}", d.message));
            }
        }
        out
    }
}

/// How long an unchanged stamp is trusted before the head is read anyway: a backstop for
/// shared storage whose `stat` may answer from a cache (NFS attribute caching), where
/// opening the file revalidates.
const TRUST_STAMP: Duration = Duration::from_secs(2);

/// Parsed manifests by project id, each valid for one head of one branch.
pub struct Manifests {
    repos: Repos,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Clone)]
struct Entry {
    manifest: Arc<DefaultBranchManifest>,
    /// The branch's stamp taken before `manifest` was read, so a move during the read
    /// shows as a different stamp next time.
    stamp: Option<RefStamp>,
    read_at: Instant,
}

impl Manifests {
    pub fn new(repos: Repos) -> Self {
        Manifests {
            repos,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The manifest on `branch` of the project, re-read only when the branch moved.
    pub async fn get(
        &self,
        project_id: &str,
        branch: &str,
    ) -> DomainResult<Arc<DefaultBranchManifest>> {
        let stamp = self
            .repos
            .path(project_id)
            .ok()
            .and_then(|repo| RefStamp::of_branch(&repo, branch));
        let cached = self.lock().get(project_id).cloned();
        if let Some(entry) = &cached
            && stamp.is_some()
            && entry.stamp == stamp
            && entry.manifest.branch == branch
            && entry.read_at.elapsed() < TRUST_STAMP
        {
            return Ok(entry.manifest.clone());
        }
        let cached = cached.map(|e| e.manifest);
        let repos = self.repos.clone();
        let read_at = Instant::now();
        let (id, branch_name) = (project_id.to_owned(), branch.to_owned());
        // gix reads are blocking file I/O.
        let loaded = tokio::task::spawn_blocking(move || load(&repos, &id, &branch_name, cached))
            .await
            .map_err(|e| DomainError::Internal(format!("reading {MANIFEST_PATH}: {e}")))?
            .map_err(|e| {
                DomainError::Internal(format!(
                    "reading {MANIFEST_PATH} of project {project_id}: {e}"
                ))
            })?;
        self.lock().insert(
            project_id.to_owned(),
            Entry {
                manifest: loaded.clone(),
                stamp,
                read_at,
            },
        );
        Ok(loaded)
    }

    /// Forgets projects not in `keep` (deleted ones), so the cache stays as large as the
    /// set of projects.
    pub fn retain(&self, keep: &HashSet<&str>) {
        self.lock().retain(|id, _| keep.contains(id.as_str()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn load(
    repos: &Repos,
    project_id: &str,
    branch: &str,
    cached: Option<Arc<DefaultBranchManifest>>,
) -> Result<Arc<DefaultBranchManifest>, RepoError> {
    let at = |head: Option<ObjectId>, state| {
        Arc::new(DefaultBranchManifest {
            branch: branch.to_owned(),
            head,
            state,
        })
    };
    let no_branch = || ManifestState::Unusable(format!("default branch {branch} does not exist"));
    let head = match repos.branch_head(project_id, branch) {
        Ok(head) => head,
        Err(RepoError::NotFound { .. }) => {
            return Ok(at(
                None,
                ManifestState::Unusable(format!("project {project_id} has no repository")),
            ));
        }
        Err(e) => return Err(e),
    };
    if let Some(cached) = cached.filter(|c| c.head == head && c.branch == branch) {
        return Ok(cached);
    }
    let Some(head) = head else {
        return Ok(at(None, no_branch()));
    };
    // The branch may move between reading its head and reading the file; the result is
    // then filed under the older head and re-read on the next call, never kept stale.
    let state = match repos.read_file_at_branch(project_id, branch, MANIFEST_PATH) {
        Ok(Some(bytes)) => match kortix_manifest::parse_bytes(&bytes) {
            Ok(manifest) => ManifestState::Parsed(Box::new(manifest)),
            Err(e) => {
                ManifestState::Unusable(format!("{MANIFEST_PATH} on {branch} is rejected: {e}"))
            }
        },
        Ok(None) => ManifestState::Absent,
        Err(RepoError::FileTooLarge { size, limit, .. }) => ManifestState::Unusable(format!(
            "{MANIFEST_PATH} on {branch} is {size} bytes, over the {limit}-byte limit"
        )),
        Err(RepoError::NotAFile { .. }) => {
            ManifestState::Unusable(format!("{MANIFEST_PATH} on {branch} is not a file"))
        }
        Err(RepoError::BranchNotFound { .. }) => return Ok(at(None, no_branch())),
        Err(e) => return Err(e),
    };
    Ok(at(Some(head), state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::Author;
    use crate::git::ref_stamp::{commit_on_main, git_out};

    fn author() -> Author {
        Author {
            name: "Test".into(),
            email: "test@example.com".into(),
        }
    }

    #[tokio::test]
    async fn reads_once_per_head_and_says_why_nothing_is_usable() {
        let dir = tempfile::tempdir().unwrap();
        let repos = Repos::open(dir.path().join("repos")).unwrap();
        let manifests = Manifests::new(repos.clone());

        let missing = manifests.get("p1", "main").await.unwrap();
        assert_eq!(
            missing.problem().as_deref(),
            Some("project p1 has no repository")
        );
        assert!(missing.for_session().is_err());

        repos
            .create_empty("p1", "main", "kortix_version = 1\n", &author())
            .unwrap();
        let first = manifests.get("p1", "main").await.unwrap();
        assert!(first.manifest().is_some(), "{first:?}");
        assert_eq!(first.problem(), None);
        let again = manifests.get("p1", "main").await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "same head: the cached parse");

        // Another process (git itself, another replica) moves the branch: the next read
        // sees it at once, not after the stamp's trust runs out.
        let path = repos.path("p1").unwrap();
        let git = |args: &[&str], input: &[u8]| git_out(&path, args, input);
        let blob = git(
            &["hash-object", "-w", "--stdin"],
            b"kortix_version = 1\n[project]\nname = \"moved\"\n",
        );
        let tree = git(
            &["mktree"],
            format!("100644 blob {blob}\tkortix.toml\n").as_bytes(),
        );
        let moved = commit_on_main(&path, &tree);
        git(&["update-ref", "refs/heads/main", &moved], b"");
        let after = manifests.get("p1", "main").await.unwrap();
        assert_eq!(after.head.map(|h| h.to_string()), Some(moved));
        assert!(!Arc::ptr_eq(&first, &after));
        assert_ne!(after.manifest(), first.manifest(), "the new kortix.toml");

        let other_branch = manifests.get("p1", "trunk").await.unwrap();
        assert_eq!(other_branch.head, None);
        assert_eq!(
            other_branch.problem().as_deref(),
            Some("default branch trunk does not exist")
        );

        repos
            .create_empty("p2", "main", "kortix_version = 7\n", &author())
            .unwrap();
        let rejected = manifests.get("p2", "main").await.unwrap();
        let why = rejected.for_session().unwrap_err();
        assert!(
            why.starts_with("kortix.toml on main is rejected: "),
            "{why}"
        );
        assert_eq!(rejected.trigger_errors(), vec![why]);
    }
}
