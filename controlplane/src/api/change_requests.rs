//! `ChangeRequestService`: the only path to the default branch.
//!
//! Repository work (diffs, previews, merges) is synchronous gix code and runs on the blocking
//! pool; the store keeps numbers, states and the diff captured at merge time.

use super::{authn::caller, convert, projects::platform_author, store_status};
use crate::changes::{self, FileChange, FileStatus, MergeError, MergeSignature};
use crate::git::Repos;
use crate::store::{
    self, CrListQuery, CrState, MergedChangeRequest, NewChangeRequest, Project, Store,
};
use kortix_proto::v1 as pb;
use kortix_proto::v1::change_request_service_server::ChangeRequestService;
use tonic::{Request, Response, Status};

const MAX_TITLE: usize = 512;
const MAX_BODY: usize = 64 * 1024;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub struct ChangeRequests {
    store: Store,
    repos: Repos,
}

impl ChangeRequests {
    pub fn new(store: Store, repos: Repos) -> Self {
        Self { store, repos }
    }

    async fn project(&self, account_id: &str, project: &str) -> Result<Project, Status> {
        self.store
            .get_project(account_id, project)
            .await
            .map_err(store_status)
    }

    async fn get(
        &self,
        account_id: &str,
        r: &pb::ChangeRequestRef,
    ) -> Result<(Project, store::ChangeRequest), Status> {
        let project = self.project(account_id, &r.project).await?;
        let number = i64::try_from(r.number)
            .map_err(|_| Status::invalid_argument("CR number out of range"))?;
        let cr = self
            .store
            .get_change_request(&project.id, number)
            .await
            .map_err(store_status)?;
        Ok((project, cr))
    }

    /// Runs repository work for `project` on the blocking pool.
    async fn with_repo<T: Send + 'static>(
        &self,
        project: &Project,
        work: impl FnOnce(&gix::Repository) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let repos = self.repos.clone();
        let id = project.id.clone();
        tokio::task::spawn_blocking(move || {
            let repo = repos
                .open_repo(&id)
                .map_err(|e| Status::internal(e.to_string()))?;
            work(&repo)
        })
        .await
        .map_err(|e| Status::internal(format!("repository task: {e}")))?
    }

    /// An open or closed CR follows its branches: refresh the shas it shows.
    async fn refreshed(
        &self,
        project: &Project,
        cr: store::ChangeRequest,
    ) -> Result<store::ChangeRequest, Status> {
        if cr.state == CrState::Merged {
            return Ok(cr);
        }
        let (base, head) = (cr.base_branch.clone(), cr.head_branch.clone());
        let tips = self
            .with_repo(project, move |repo| {
                let base_sha = changes::branch_commit(repo, &base).map_err(changes_status)?;
                let head_sha = changes::branch_commit(repo, &head).map_err(changes_status)?;
                let mb = changes::merge_base(repo, base_sha, head_sha).map_err(changes_status)?;
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
                .await
                .map_err(store_status)?;
        }
        Ok(store::ChangeRequest {
            base_sha: tips.0,
            head_sha: tips.1,
            merge_base: tips.2,
            ..cr
        })
    }
}

fn changes_status(e: changes::ChangesError) -> Status {
    use changes::ChangesError as E;
    match e {
        E::BranchNotFound { .. } => Status::failed_precondition(e.to_string()),
        E::NoMergeBase { .. } => Status::failed_precondition(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn oid(s: &str) -> Result<gix::ObjectId, Status> {
    gix::ObjectId::from_hex(s.as_bytes())
        .map_err(|e| Status::data_loss(format!("stored sha {s:?}: {e}")))
}

pub fn file_change(c: &FileChange) -> pb::FileChange {
    pb::FileChange {
        path: c.path.clone(),
        old_path: c.old_path.clone().unwrap_or_default(),
        status: match c.status {
            FileStatus::Added => "added",
            FileStatus::Modified => "modified",
            FileStatus::Deleted => "deleted",
            FileStatus::Renamed => "renamed",
            FileStatus::Copied => "copied",
            FileStatus::TypeChanged => "type-changed",
        }
        .to_string(),
        insertions: c.insertions,
        deletions: c.deletions,
        binary: c.binary,
    }
}

#[tonic::async_trait]
impl ChangeRequestService for ChangeRequests {
    async fn open_change_request(
        &self,
        request: Request<pb::OpenChangeRequestRequest>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        if req.title.len() > MAX_TITLE || req.body.len() > MAX_BODY {
            return Err(Status::invalid_argument(format!(
                "title is limited to {MAX_TITLE} bytes and body to {MAX_BODY}"
            )));
        }
        let project = self.project(&who.account_id, &req.project).await?;
        let (head, session_id) = match (req.session_id.is_empty(), req.branch.is_empty()) {
            (false, true) => {
                let s = self
                    .store
                    .get_session_for_account(&who.account_id, &req.session_id)
                    .await
                    .map_err(store_status)?;
                if s.project_id != project.id {
                    return Err(Status::invalid_argument(format!(
                        "session {} belongs to another project",
                        s.id
                    )));
                }
                (s.id.clone(), Some(s.id))
            }
            (true, false) => (req.branch.clone(), None),
            _ => {
                return Err(Status::invalid_argument(
                    "give exactly one of --session or --branch",
                ));
            }
        };
        if head == project.default_branch {
            return Err(Status::invalid_argument(format!(
                "{head} is the default branch; a change request lands another branch onto it"
            )));
        }
        crate::git::names::branch_ref(&head)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(existing) = self
            .store
            .find_open_change_request(&project.id, &head)
            .await
            .map_err(store_status)?
        {
            return Err(Status::already_exists(format!(
                "change request #{} is already open for {head}",
                existing.number
            )));
        }
        let (base, head_b) = (project.default_branch.clone(), head.clone());
        let (base_sha, head_sha, mb, subject) = self
            .with_repo(&project, move |repo| {
                let base_sha = changes::branch_commit(repo, &base).map_err(changes_status)?;
                let head_sha = changes::branch_commit(repo, &head_b).map_err(changes_status)?;
                let mb = changes::merge_base(repo, base_sha, head_sha).map_err(changes_status)?;
                let subject = repo
                    .find_commit(head_sha)
                    .ok()
                    .and_then(|c| c.message().ok().map(|m| m.summary().to_string()))
                    .unwrap_or_default();
                Ok((base_sha, head_sha, mb, subject))
            })
            .await?;
        let title = if !req.title.trim().is_empty() {
            req.title.trim().to_string()
        } else if !subject.is_empty() && mb != Some(head_sha) {
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
                author_account_id: who.account_id,
            })
            .await
            .map_err(store_status)?;
        tracing::info!(project = %project.name, number = cr.number, head = %cr.head_branch, "change request opened");
        Ok(Response::new(convert::change_request(&cr)))
    }

    async fn list_change_requests(
        &self,
        request: Request<pb::ListChangeRequestsRequest>,
    ) -> Result<Response<pb::ListChangeRequestsResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let state = match pb::ChangeRequestState::try_from(req.state).unwrap_or_default() {
            pb::ChangeRequestState::Unspecified => None,
            pb::ChangeRequestState::Open => Some(CrState::Open),
            pb::ChangeRequestState::Closed => Some(CrState::Closed),
            pb::ChangeRequestState::Merged => Some(CrState::Merged),
        };
        let page = req.page.unwrap_or_default();
        let limit = if page.page_size == 0 {
            DEFAULT_PAGE
        } else {
            page.page_size.min(MAX_PAGE)
        };
        let after_number = if page.page_token.is_empty() {
            None
        } else {
            Some(
                page.page_token
                    .parse::<i64>()
                    .map_err(|_| Status::invalid_argument("invalid page token"))?,
            )
        };
        let query = CrListQuery {
            state,
            after_number,
            limit,
            newest_first: false,
        };
        let rows = if req.project.is_empty() {
            // Every project of the caller, each from its first CR; no paging across projects.
            if after_number.is_some() {
                return Err(Status::invalid_argument("paging needs a project"));
            }
            let mut rows = Vec::new();
            for project in self
                .store
                .list_projects(&who.account_id)
                .await
                .map_err(store_status)?
            {
                rows.extend(
                    self.store
                        .list_change_requests(&project.id, &query)
                        .await
                        .map_err(store_status)?,
                );
            }
            return Ok(Response::new(pb::ListChangeRequestsResponse {
                change_requests: rows.iter().map(convert::change_request).collect(),
                next_page_token: String::new(),
            }));
        } else {
            let project = self.project(&who.account_id, &req.project).await?;
            self.store
                .list_change_requests(&project.id, &query)
                .await
                .map_err(store_status)?
        };
        let next_page_token = if rows.len() as u32 == limit {
            rows.last()
                .map(|c| c.number.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListChangeRequestsResponse {
            change_requests: rows.iter().map(convert::change_request).collect(),
            next_page_token,
        }))
    }

    async fn get_change_request(
        &self,
        request: Request<pb::ChangeRequestRef>,
    ) -> Result<Response<pb::ChangeRequestDetail>, Status> {
        let who = caller(&request)?;
        let (project, cr) = self.get(&who.account_id, request.get_ref()).await?;
        let cr = self.refreshed(&project, cr).await?;
        let (head, base, merged) = (
            oid(&cr.head_sha)?,
            oid(&cr.base_sha)?,
            cr.state == CrState::Merged,
        );
        let stored_mb = cr.merge_base.clone();
        let (base_b, head_b) = (cr.base_branch.clone(), cr.head_branch.clone());
        let detail = self
            .with_repo(&project, move |repo| {
                let mb = if stored_mb.is_empty() {
                    changes::merge_base(repo, base, head).map_err(changes_status)?
                } else {
                    Some(oid(&stored_mb)?)
                };
                let files = match mb {
                    Some(mb) => changes::diff_files(repo, mb, head).map_err(changes_status)?,
                    None => Vec::new(),
                };
                let ab = changes::ahead_behind(repo, base, head).map_err(changes_status)?;
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
        let (mb, files, ab, mergeable, conflicting_paths) = detail;
        let totals = changes::DiffTotals::of(&files);
        Ok(Response::new(pb::ChangeRequestDetail {
            change_request: Some(convert::change_request(&cr)),
            merge_base: mb.map(|m| m.to_string()).unwrap_or_default(),
            files: files.iter().map(file_change).collect(),
            insertions: totals.insertions.min(u32::MAX as u64) as u32,
            deletions: totals.deletions.min(u32::MAX as u64) as u32,
            mergeable,
            conflicting_paths,
            commits_ahead: ab.ahead as u32,
            commits_behind: ab.behind as u32,
        }))
    }

    async fn get_diff(
        &self,
        request: Request<pb::ChangeRequestRef>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        let who = caller(&request)?;
        let (project, cr) = self.get(&who.account_id, request.get_ref()).await?;
        let cr = self.refreshed(&project, cr).await?;
        let (head, base) = (oid(&cr.head_sha)?, oid(&cr.base_sha)?);
        let captured = if cr.state == CrState::Merged {
            self.store
                .merged_diff(&project.id, cr.number)
                .await
                .map_err(store_status)?
        } else {
            None
        };
        let stored_mb = cr.merge_base.clone();
        let (diff, files) = self
            .with_repo(&project, move |repo| {
                let mb = if stored_mb.is_empty() {
                    changes::three_dot_base(repo, base, head).map_err(changes_status)?
                } else {
                    oid(&stored_mb)?
                };
                let files = changes::diff_files(repo, mb, head).map_err(changes_status)?;
                let diff = match captured {
                    Some(diff) => diff,
                    None => changes::unified_diff(repo, mb, head).map_err(changes_status)?,
                };
                Ok((diff, files))
            })
            .await?;
        Ok(Response::new(pb::DiffResponse {
            diff,
            files: files.iter().map(file_change).collect(),
        }))
    }

    async fn merge_preview(
        &self,
        request: Request<pb::ChangeRequestRef>,
    ) -> Result<Response<pb::MergePreviewResponse>, Status> {
        let who = caller(&request)?;
        let (project, cr) = self.get(&who.account_id, request.get_ref()).await?;
        if cr.state == CrState::Merged {
            return Err(Status::failed_precondition(format!(
                "change request #{} is already merged",
                cr.number
            )));
        }
        let (base, head) = (cr.base_branch.clone(), cr.head_branch.clone());
        let p = self
            .with_repo(&project, move |repo| {
                changes::preview_merge(repo, &base, &head).map_err(changes_status)
            })
            .await?;
        Ok(Response::new(pb::MergePreviewResponse {
            mergeable: p.mergeable,
            fast_forward: p.fast_forward,
            conflicting_paths: p.conflicting_paths,
            base_sha: p.base_sha.to_string(),
            head_sha: p.head_sha.to_string(),
        }))
    }

    async fn merge_change_request(
        &self,
        request: Request<pb::ChangeRequestRef>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let who = caller(&request)?;
        let (project, cr) = self.get(&who.account_id, request.get_ref()).await?;
        match cr.state {
            CrState::Merged => {
                return Err(Status::failed_precondition(format!(
                    "change request #{} is already merged",
                    cr.number
                )));
            }
            CrState::Closed => {
                return Err(Status::failed_precondition(format!(
                    "change request #{} is closed; reopen it first",
                    cr.number
                )));
            }
            CrState::Open => {}
        }
        let (base, head) = (cr.base_branch.clone(), cr.head_branch.clone());
        let message = format!("Change request #{}: {}\n\n{}", cr.number, cr.title, cr.body);
        let author = platform_author();
        let signature = MergeSignature::now(author.name, author.email);
        let merged = self
            .with_repo(&project, move |repo| {
                let before = changes::branch_commit(repo, &base).map_err(changes_status)?;
                let head_sha = changes::branch_commit(repo, &head).map_err(changes_status)?;
                let mb = changes::merge_base(repo, before, head_sha).map_err(changes_status)?;
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
                        .map_err(|e| match e {
                            MergeError::Conflict { paths } => Status::failed_precondition(format!(
                                "merge refused: conflicts in: {}",
                                paths.join(", ")
                            )),
                            MergeError::BaseMoved { .. } => Status::aborted(e.to_string()),
                            MergeError::NothingToMerge { .. } => {
                                Status::failed_precondition(e.to_string())
                            }
                            MergeError::Repo(inner) => changes_status(inner),
                        })?;
                Ok((before, mb, outcome))
            })
            .await?;
        let (before, mb, outcome) = merged;
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
            .await
            .map_err(store_status)?;
        if !moved {
            tracing::warn!(project = %project.name, number = cr.number, "CR changed state while merging");
        }
        tracing::info!(project = %project.name, number = cr.number, merge_commit = %record.merge_commit, "change request merged");
        let cr = self
            .store
            .get_change_request(&project.id, cr.number)
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::change_request(&cr)))
    }

    async fn close_change_request(
        &self,
        request: Request<pb::ChangeRequestRef>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let who = caller(&request)?;
        let (project, cr) = self.get(&who.account_id, request.get_ref()).await?;
        if !self
            .store
            .close_change_request(&project.id, cr.number)
            .await
            .map_err(store_status)?
        {
            return Err(Status::failed_precondition(format!(
                "change request #{} is {}, only open ones can be closed",
                cr.number,
                cr.state.as_str()
            )));
        }
        let cr = self
            .store
            .get_change_request(&project.id, cr.number)
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::change_request(&cr)))
    }

    async fn reopen_change_request(
        &self,
        request: Request<pb::ChangeRequestRef>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let who = caller(&request)?;
        let (project, cr) = self.get(&who.account_id, request.get_ref()).await?;
        if !self
            .store
            .reopen_change_request(&project.id, cr.number)
            .await
            .map_err(store_status)?
        {
            return Err(Status::failed_precondition(format!(
                "change request #{} is {}; only closed ones can be reopened",
                cr.number,
                cr.state.as_str()
            )));
        }
        let cr = self
            .store
            .get_change_request(&project.id, cr.number)
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::change_request(&cr)))
    }
}
