//! Change requests: the only path to the default branch.
//!
//! [`ChangeRequests`] owns the state machine `open → closed → open …`, `open → merged`
//! (final): [`check_transition`] says what each state allows, and every move is a conditional
//! update in the store, so two callers racing on one change request never both move it.
//! Repository work (diffs, previews, merges) is the synchronous gix code of
//! [`crate::changes`], run on the blocking pool; the store keeps numbers, states and the diff
//! captured at merge time.

use crate::auth::Caller;
use crate::changes::{self, ChangesError, FileChange, MergeError, MergeSignature};
use crate::error::{DomainError, DomainResult, check_len};
use crate::git::Repos;
use crate::store::{
    ChangeRequest, CrListQuery, CrState, MergedChangeRequest, NewChangeRequest, Project, Store,
};

const MAX_TITLE: usize = 512;
const MAX_BODY: usize = 64 * 1024;
const MAX_BRANCH: usize = 255;
const MAX_SESSION_ID: usize = 64;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// What can be done to a change request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Merge,
    PreviewMerge,
    Close,
    Reopen,
}

/// Whether a change request in `state` allows `action`, and if not, why.
pub fn check_transition(number: i64, state: CrState, action: Action) -> DomainResult<()> {
    use Action::*;
    use CrState::*;
    let refused = |why: String| Err(DomainError::Precondition(why));
    match (state, action) {
        (Open, Merge | PreviewMerge | Close) | (Closed, PreviewMerge | Reopen) => Ok(()),
        (Merged, Merge | PreviewMerge) => {
            refused(format!("change request #{number} is already merged"))
        }
        (Closed, Merge) => refused(format!(
            "change request #{number} is closed; reopen it first"
        )),
        (Closed | Merged, Close) => refused(format!(
            "change request #{number} is {}, only open ones can be closed",
            state.as_str()
        )),
        (Open | Merged, Reopen) => refused(format!(
            "change request #{number} is {}; only closed ones can be reopened",
            state.as_str()
        )),
    }
}

/// Where a change request comes from: exactly one of a session (its branch) or a branch.
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    pub project: String,
    pub session_id: String,
    pub branch: String,
    pub title: String,
    pub body: String,
}

#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Empty: every project of the caller (no paging across projects).
    pub project: String,
    pub state: Option<CrState>,
    pub page_size: u32,
    /// The number of the last change request of the previous page.
    pub page_token: String,
}

pub struct Page {
    pub change_requests: Vec<ChangeRequest>,
    pub next_page_token: String,
}

/// A change request with its three-dot diff stats and mergeability.
pub struct Detail {
    pub change_request: ChangeRequest,
    pub merge_base: Option<gix::ObjectId>,
    pub files: Vec<FileChange>,
    pub ahead_behind: changes::AheadBehind,
    pub mergeable: bool,
    pub conflicting_paths: Vec<String>,
}

pub struct Diff {
    pub diff: String,
    pub files: Vec<FileChange>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct ChangeRequests {
    store: Store,
    repos: Repos,
}

impl ChangeRequests {
    pub fn new(store: Store, repos: Repos) -> Self {
        Self { store, repos }
    }

    pub async fn open(&self, caller: &Caller, req: OpenRequest) -> DomainResult<ChangeRequest> {
        if req.title.len() > MAX_TITLE || req.body.len() > MAX_BODY {
            return Err(DomainError::Invalid(format!(
                "title is limited to {MAX_TITLE} bytes and body to {MAX_BODY}"
            )));
        }
        check_len("the branch", &req.branch, MAX_BRANCH)?;
        check_len("the session id", &req.session_id, MAX_SESSION_ID)?;
        let project = crate::permissions::project(&self.store, caller, &req.project).await?;
        let (head, session_id) = match (req.session_id.is_empty(), req.branch.is_empty()) {
            (false, true) => {
                let not_found =
                    || DomainError::NotFound(format!("session {} not found", req.session_id));
                let s = match self.store.get_session(&req.session_id).await {
                    Err(e) if e.is_not_found() => return Err(not_found()),
                    other => other?,
                };
                if s.project_id != project.id
                    && crate::permissions::project_role(&self.store, caller, &s.project_id)
                        .await
                        .is_err()
                {
                    return Err(not_found());
                }
                if s.project_id != project.id {
                    return Err(DomainError::Invalid(format!(
                        "session {} belongs to another project",
                        s.id
                    )));
                }
                (s.id.clone(), Some(s.id))
            }
            (true, false) => (req.branch.clone(), None),
            _ => {
                return Err(DomainError::Invalid(
                    "give exactly one of --session or --branch".into(),
                ));
            }
        };
        if head == project.default_branch {
            return Err(DomainError::Invalid(format!(
                "{head} is the default branch; a change request lands another branch onto it"
            )));
        }
        crate::git::names::branch_ref(&head).map_err(|e| DomainError::Invalid(e.to_string()))?;
        if let Some(existing) = self
            .store
            .find_open_change_request(&project.id, &head)
            .await?
        {
            return Err(DomainError::AlreadyExists(format!(
                "change request #{} is already open for {head}",
                existing.number
            )));
        }
        let (base, head_b) = (project.default_branch.clone(), head.clone());
        let (base_sha, head_sha, mb, subject) = self
            .with_repo(&project, move |repo| {
                let base_sha = changes::branch_commit(repo, &base)?;
                let head_sha = changes::branch_commit(repo, &head_b)?;
                let mb = changes::merge_base(repo, base_sha, head_sha)?;
                let subject = repo
                    .find_commit(head_sha)
                    .ok()
                    .and_then(|c| c.message().ok().map(|m| m.summary().to_string()))
                    .unwrap_or_default();
                Ok((base_sha, head_sha, mb, subject))
            })
            .await?;
        // Nothing the default branch lacks (level with it, or merged already): no change.
        if mb == Some(head_sha) {
            return Err(DomainError::Precondition(format!(
                "{head} has no commits that {} does not have; there is nothing to review",
                project.default_branch
            )));
        }
        let title = if !req.title.trim().is_empty() {
            req.title.trim().to_string()
        } else if !subject.is_empty() {
            subject
        } else {
            format!("Changes from {head}")
        };
        let cr = self
            .store
            .open_change_request(&NewChangeRequest {
                project_id: project.id.clone(),
                title,
                body: req.body,
                head_branch: head,
                base_branch: project.default_branch.clone(),
                head_sha: head_sha.to_string(),
                base_sha: base_sha.to_string(),
                merge_base: mb.map(|m| m.to_string()).unwrap_or_default(),
                session_id,
                author_account_id: caller.person_id.clone(),
            })
            .await?;
        tracing::info!(project = %project.name, number = cr.number, head = %cr.head_branch, "change request opened");
        Ok(cr)
    }

    pub async fn list(&self, caller: &Caller, req: ListRequest) -> DomainResult<Page> {
        let limit = if req.page_size == 0 {
            DEFAULT_PAGE
        } else {
            req.page_size.min(MAX_PAGE)
        };
        let after_number = if req.page_token.is_empty() {
            None
        } else {
            Some(
                req.page_token
                    .parse::<i64>()
                    .map_err(|_| DomainError::Invalid("invalid page token".into()))?,
            )
        };
        let query = CrListQuery {
            state: req.state,
            after_number,
            limit,
            newest_first: false,
        };
        if req.project.is_empty() {
            // Every project of the caller, each from its first CR; no paging across projects.
            if after_number.is_some() {
                return Err(DomainError::Invalid("paging needs a project".into()));
            }
            let mut rows = Vec::new();
            for (project, _) in
                crate::permissions::check::visible_projects(&self.store, caller).await?
            {
                rows.extend(self.store.list_change_requests(&project.id, &query).await?);
            }
            return Ok(Page {
                change_requests: rows,
                next_page_token: String::new(),
            });
        }
        let project = crate::permissions::project(&self.store, caller, &req.project).await?;
        let rows = self.store.list_change_requests(&project.id, &query).await?;
        let next_page_token = if rows.len() as u32 == limit {
            rows.last()
                .map(|c| c.number.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            change_requests: rows,
            next_page_token,
        })
    }

    pub async fn detail(
        &self,
        caller: &Caller,
        project: &str,
        number: u64,
    ) -> DomainResult<Detail> {
        let (project, cr) = self.get(caller, project, number).await?;
        let cr = self.refreshed(&project, cr).await?;
        let (head, base, merged) = (
            oid(&cr.head_sha)?,
            oid(&cr.base_sha)?,
            cr.state == CrState::Merged,
        );
        let stored_mb = cr.merge_base.clone();
        let (base_b, head_b) = (cr.base_branch.clone(), cr.head_branch.clone());
        let (merge_base, files, ahead_behind, mergeable, conflicting_paths) = self
            .with_repo(&project, move |repo| {
                let mb = if stored_mb.is_empty() {
                    changes::merge_base(repo, base, head)?
                } else {
                    Some(oid(&stored_mb)?)
                };
                let files = match mb {
                    Some(mb) => changes::diff_files(repo, mb, head)?,
                    None => Vec::new(),
                };
                let ab = changes::ahead_behind(repo, base, head)?;
                let (mergeable, conflicts) = if merged {
                    (false, Vec::new())
                } else {
                    match changes::preview_merge(repo, &base_b, &head_b) {
                        Ok(p) => (p.mergeable, p.conflicting_paths),
                        Err(_) => (false, Vec::new()),
                    }
                };
                Ok((mb, files, ab, mergeable, conflicts))
            })
            .await?;
        Ok(Detail {
            change_request: cr,
            merge_base,
            files,
            ahead_behind,
            mergeable,
            conflicting_paths,
        })
    }

    /// The three-dot unified diff; for a merged change request, the one captured at merge.
    pub async fn diff(&self, caller: &Caller, project: &str, number: u64) -> DomainResult<Diff> {
        let (project, cr) = self.get(caller, project, number).await?;
        let cr = self.refreshed(&project, cr).await?;
        let (head, base) = (oid(&cr.head_sha)?, oid(&cr.base_sha)?);
        let captured = if cr.state == CrState::Merged {
            self.store.merged_diff(&project.id, cr.number).await?
        } else {
            None
        };
        let stored_mb = cr.merge_base.clone();
        self.with_repo(&project, move |repo| {
            let mb = if stored_mb.is_empty() {
                changes::three_dot_base(repo, base, head)?
            } else {
                oid(&stored_mb)?
            };
            let files = changes::diff_files(repo, mb, head)?;
            let diff = match captured {
                Some(diff) => diff,
                None => changes::unified_diff(repo, mb, head)?,
            };
            Ok(Diff { diff, files })
        })
        .await
    }

    pub async fn preview_merge(
        &self,
        caller: &Caller,
        project: &str,
        number: u64,
    ) -> DomainResult<changes::MergePreview> {
        let (project, cr) = self.get(caller, project, number).await?;
        check_transition(cr.number, cr.state, Action::PreviewMerge)?;
        let (base, head) = (cr.base_branch.clone(), cr.head_branch.clone());
        self.with_repo(&project, move |repo| {
            Ok(changes::preview_merge(repo, &base, &head)?)
        })
        .await
    }

    /// Merges onto the base branch (fast-forward when possible, else a merge commit), moving
    /// it by compare-and-swap; a conflict changes nothing and names the paths.
    pub async fn merge(
        &self,
        caller: &Caller,
        project: &str,
        number: u64,
    ) -> DomainResult<ChangeRequest> {
        let (project, cr) = self.get(caller, project, number).await?;
        check_transition(cr.number, cr.state, Action::Merge)?;
        let (base, head) = (cr.base_branch.clone(), cr.head_branch.clone());
        let message = format!("Change request #{}: {}\n\n{}", cr.number, cr.title, cr.body);
        let author = crate::projects::platform_author();
        let signature = MergeSignature::now(author.name, author.email);
        let (before, mb, outcome) = self
            .with_repo(&project, move |repo| {
                let before = changes::branch_commit(repo, &base)?;
                let head_sha = changes::branch_commit(repo, &head)?;
                let mb = changes::merge_base(repo, before, head_sha)?;
                let outcome =
                    changes::merge_with_retry(repo, &base, &head, message.trim_end(), &signature)
                        .inspect_err(|e| {
                            crate::metrics::metrics().merge(match e {
                                MergeError::Conflict { .. } => "conflict",
                                MergeError::BaseMoved { .. } => "base_moved",
                                MergeError::NothingToMerge { .. } => "nothing_to_merge",
                                MergeError::Repo(_) => "error",
                            })
                        })
                        .map_err(merge_error)?;
                Ok((before, mb, outcome))
            })
            .await?;
        crate::metrics::metrics().merge("merged");
        let record = MergedChangeRequest {
            head_sha: outcome.merged_head_sha.to_string(),
            base_sha: before.to_string(),
            merge_base: mb.map(|m| m.to_string()).unwrap_or_default(),
            merge_commit: outcome.new_base_sha.to_string(),
            merged_diff: outcome.diff_at_merge,
        };
        let moved = self
            .store
            .mark_change_request_merged(&project.id, cr.number, &record)
            .await?;
        if !moved {
            tracing::warn!(project = %project.name, number = cr.number, "CR changed state while merging");
        }
        tracing::info!(project = %project.name, number = cr.number, merge_commit = %record.merge_commit, "change request merged");
        crate::audit::record(
            &self.store,
            caller,
            crate::audit::Event::in_project(
                "change_request.merge",
                &project,
                &format!("#{}", cr.number),
            )
            .with_detail(&record.merge_commit),
        )
        .await;
        Ok(self
            .store
            .get_change_request(&project.id, cr.number)
            .await?)
    }

    pub async fn close(
        &self,
        caller: &Caller,
        project: &str,
        number: u64,
    ) -> DomainResult<ChangeRequest> {
        self.move_state(caller, project, number, Action::Close)
            .await
    }

    pub async fn reopen(
        &self,
        caller: &Caller,
        project: &str,
        number: u64,
    ) -> DomainResult<ChangeRequest> {
        self.move_state(caller, project, number, Action::Reopen)
            .await
    }

    /// Close or reopen: checked against the state read, then moved only if the store still
    /// has it there (a racing caller's move wins and this one is refused).
    async fn move_state(
        &self,
        caller: &Caller,
        project: &str,
        number: u64,
        action: Action,
    ) -> DomainResult<ChangeRequest> {
        let (project, cr) = self.get(caller, project, number).await?;
        check_transition(cr.number, cr.state, action)?;
        let moved = match action {
            Action::Close => {
                self.store
                    .close_change_request(&project.id, cr.number)
                    .await?
            }
            Action::Reopen => {
                self.store
                    .reopen_change_request(&project.id, cr.number)
                    .await?
            }
            Action::Merge | Action::PreviewMerge => unreachable!("merges move by merge()"),
        };
        let now = self
            .store
            .get_change_request(&project.id, cr.number)
            .await?;
        if !moved {
            return Err(check_transition(now.number, now.state, action)
                .err()
                .unwrap_or_else(|| {
                    DomainError::Aborted(format!(
                        "change request #{} changed state meanwhile; try again",
                        now.number
                    ))
                }));
        }
        Ok(now)
    }

    async fn get(
        &self,
        caller: &Caller,
        project: &str,
        number: u64,
    ) -> DomainResult<(Project, ChangeRequest)> {
        let project = crate::permissions::project(&self.store, caller, project).await?;
        let number = i64::try_from(number)
            .map_err(|_| DomainError::Invalid("CR number out of range".into()))?;
        let cr = self.store.get_change_request(&project.id, number).await?;
        Ok((project, cr))
    }

    /// Runs repository work for `project` on the blocking pool.
    async fn with_repo<T: Send + 'static>(
        &self,
        project: &Project,
        work: impl FnOnce(&gix::Repository) -> DomainResult<T> + Send + 'static,
    ) -> DomainResult<T> {
        let repos = self.repos.clone();
        let id = project.id.clone();
        tokio::task::spawn_blocking(move || {
            let repo = repos
                .open_repo(&id)
                .map_err(|e| DomainError::Internal(e.to_string()))?;
            work(&repo)
        })
        .await
        .map_err(|e| DomainError::Internal(format!("repository task: {e}")))?
    }

    /// An open or closed CR follows its branches: refresh the shas it shows.
    async fn refreshed(&self, project: &Project, cr: ChangeRequest) -> DomainResult<ChangeRequest> {
        if cr.state == CrState::Merged {
            return Ok(cr);
        }
        let (base, head) = (cr.base_branch.clone(), cr.head_branch.clone());
        let tips = self
            .with_repo(project, move |repo| {
                let base_sha = changes::branch_commit(repo, &base)?;
                let head_sha = changes::branch_commit(repo, &head)?;
                let mb = changes::merge_base(repo, base_sha, head_sha)?;
                Ok((
                    base_sha.to_string(),
                    head_sha.to_string(),
                    mb.map(|m| m.to_string()).unwrap_or_default(),
                ))
            })
            .await?;
        if (tips.0.as_str(), tips.1.as_str()) == (cr.base_sha.as_str(), cr.head_sha.as_str()) {
            return Ok(cr);
        }
        if cr.state == CrState::Open {
            self.store
                .update_change_request_shas(&project.id, cr.number, &tips.1, &tips.0, &tips.2)
                .await?;
        }
        Ok(ChangeRequest {
            base_sha: tips.0,
            head_sha: tips.1,
            merge_base: tips.2,
            ..cr
        })
    }
}

impl From<ChangesError> for DomainError {
    fn from(e: ChangesError) -> Self {
        match e {
            ChangesError::BranchNotFound { .. } | ChangesError::NoMergeBase { .. } => {
                DomainError::Precondition(e.to_string())
            }
            other => DomainError::Internal(other.to_string()),
        }
    }
}

fn merge_error(e: MergeError) -> DomainError {
    match e {
        MergeError::Conflict { paths } => {
            DomainError::Precondition(format!("merge refused: conflicts in: {}", paths.join(", ")))
        }
        MergeError::BaseMoved { .. } => DomainError::Aborted(e.to_string()),
        MergeError::NothingToMerge { .. } => DomainError::Precondition(e.to_string()),
        MergeError::Repo(inner) => inner.into(),
    }
}

fn oid(s: &str) -> DomainResult<gix::ObjectId> {
    gix::ObjectId::from_hex(s.as_bytes())
        .map_err(|e| DomainError::Internal(format!("stored sha {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine() {
        use Action::*;
        use CrState::*;
        let ok = |s, a| check_transition(7, s, a).is_ok();
        assert!(ok(Open, Merge) && ok(Open, Close) && ok(Open, PreviewMerge));
        assert!(ok(Closed, Reopen) && ok(Closed, PreviewMerge));
        assert!(!ok(Open, Reopen) && !ok(Closed, Close) && !ok(Closed, Merge));
        for action in [Merge, PreviewMerge, Close, Reopen] {
            let err = check_transition(7, Merged, action).unwrap_err();
            assert!(matches!(err, DomainError::Precondition(_)), "{action:?}");
        }
        assert_eq!(
            check_transition(7, Closed, Merge).unwrap_err().to_string(),
            "change request #7 is closed; reopen it first"
        );
        assert_eq!(
            check_transition(7, Merged, Merge).unwrap_err().to_string(),
            "change request #7 is already merged"
        );
    }
}
