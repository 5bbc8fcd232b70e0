//! Change requests: numbered per project from 1. A number is taken from the project's
//! counter row inside the transaction that inserts the CR, so concurrent opens (on any
//! replica) get distinct, gap-free numbers without retries.

use super::{
    BeginWrite, DbContext, Error, Result, Store, clamp_limit, is_unique_violation, with_pool,
};
use crate::clock::now_ms;

const MAX_LIST: u32 = 500;
const MAX_TITLE_BYTES: usize = 1024;
const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrState {
    Open,
    Closed,
    Merged,
}

impl CrState {
    pub fn as_str(self) -> &'static str {
        match self {
            CrState::Open => "open",
            CrState::Closed => "closed",
            CrState::Merged => "merged",
        }
    }
}

impl std::fmt::Display for CrState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown change request state {0:?}")]
pub struct UnknownCrState(String);

impl std::str::FromStr for CrState {
    type Err = UnknownCrState;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownCrState> {
        match s {
            "open" => Ok(CrState::Open),
            "closed" => Ok(CrState::Closed),
            "merged" => Ok(CrState::Merged),
            other => Err(UnknownCrState(other.to_string())),
        }
    }
}

impl TryFrom<String> for CrState {
    type Error = UnknownCrState;
    fn try_from(s: String) -> std::result::Result<Self, UnknownCrState> {
        s.parse()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ChangeRequest {
    pub project_id: String,
    pub number: i64,
    pub title: String,
    pub body: String,
    #[sqlx(try_from = "String")]
    pub state: CrState,
    pub head_branch: String,
    pub base_branch: String,
    pub head_sha: String,
    pub base_sha: String,
    pub merge_base: String,
    /// Empty until merged.
    pub merge_commit: String,
    pub session_id: Option<String>,
    pub author_account_id: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub merged_ms: Option<i64>,
}

// `merged_diff` is left out of ordinary reads: it can be large. See `merged_diff`.
macro_rules! columns {
    () => {
        "project_id, number, title, body, state, head_branch, base_branch, head_sha, base_sha,
         merge_base, merge_commit, session_id, author_account_id, created_ms, updated_ms, merged_ms"
    };
}

#[derive(Debug, Clone, Default)]
pub struct NewChangeRequest {
    pub project_id: String,
    pub title: String,
    pub body: String,
    pub head_branch: String,
    pub base_branch: String,
    pub head_sha: String,
    pub base_sha: String,
    pub merge_base: String,
    pub session_id: Option<String>,
    pub author_account_id: String,
}

/// What a merge records.
#[derive(Debug, Clone, Default)]
pub struct MergedChangeRequest {
    pub head_sha: String,
    pub base_sha: String,
    pub merge_base: String,
    pub merge_commit: String,
    /// The three-dot diff as it was at merge time, served after the branch moves on.
    pub merged_diff: String,
}

/// A page of a project's CRs.
#[derive(Debug, Clone, Default)]
pub struct CrListQuery {
    pub state: Option<CrState>,
    /// Cursor: only numbers after this one (in the chosen order).
    pub after_number: Option<i64>,
    pub limit: u32,
    pub newest_first: bool,
}

impl Store {
    /// Opens a CR with the project's next number. A second open CR for the same head branch
    /// is [`Error::AlreadyExists`].
    pub async fn open_change_request(&self, new: &NewChangeRequest) -> Result<ChangeRequest> {
        if new.title.len() > MAX_TITLE_BYTES || new.body.len() > MAX_BODY_BYTES {
            return Err(Error::Invalid {
                what: "change request",
                reason: format!(
                    "title at most {MAX_TITLE_BYTES} bytes, body at most {MAX_BODY_BYTES} bytes"
                ),
            });
        }
        if new.head_branch.is_empty() || new.base_branch.is_empty() {
            return Err(Error::Invalid {
                what: "change request",
                reason: "head and base branches are required".to_string(),
            });
        }
        let now = now_ms();
        let opened = with_pool!(self, |pool| {
            async {
                let mut tx = pool.begin_write().await?;
                let Some(number) = sqlx::query_scalar::<_, i64>(
                    "UPDATE projects SET cr_counter = cr_counter + 1 WHERE id = $1
                     RETURNING cr_counter",
                )
                .bind(&new.project_id)
                .fetch_optional(&mut *tx)
                .await?
                else {
                    return Ok(None);
                };
                let cr = sqlx::query_as::<_, ChangeRequest>(concat!(
                    "INSERT INTO change_requests (project_id, number, title, body, state,
                         head_branch, base_branch, head_sha, base_sha, merge_base, session_id,
                         author_account_id, created_ms, updated_ms)
                     VALUES ($1, $2, $3, $4, 'open', $5, $6, $7, $8, $9, $10, $11, $12, $12)
                     RETURNING ",
                    columns!()
                ))
                .bind(&new.project_id)
                .bind(number)
                .bind(&new.title)
                .bind(&new.body)
                .bind(&new.head_branch)
                .bind(&new.base_branch)
                .bind(&new.head_sha)
                .bind(&new.base_sha)
                .bind(&new.merge_base)
                .bind(new.session_id.as_deref())
                .bind(&new.author_account_id)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(cr))
            }
            .await
        });
        match opened {
            Ok(Some(cr)) => Ok(cr),
            Ok(None) => Err(Error::NotFound(format!("project {}", new.project_id))),
            Err(e) if is_unique_violation(&e) => Err(Error::AlreadyExists(format!(
                "an open change request for branch '{}'",
                new.head_branch
            ))),
            Err(e) => {
                Err(e).ctx(|| format!("opening a change request in project {}", new.project_id))
            }
        }
    }

    pub async fn get_change_request(&self, project_id: &str, number: i64) -> Result<ChangeRequest> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, ChangeRequest>(concat!(
                "SELECT ",
                columns!(),
                " FROM change_requests WHERE project_id = $1 AND number = $2"
            ))
            .bind(project_id)
            .bind(number)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading change request #{number} of project {project_id}"))?
        .ok_or_else(|| Error::NotFound(format!("change request #{number}")))
    }

    /// The open CR whose head is `head_branch`, if any.
    pub async fn find_open_change_request(
        &self,
        project_id: &str,
        head_branch: &str,
    ) -> Result<Option<ChangeRequest>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, ChangeRequest>(concat!(
                "SELECT ",
                columns!(),
                " FROM change_requests WHERE project_id = $1 AND head_branch = $2 AND state = 'open'"
            ))
            .bind(project_id)
            .bind(head_branch)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("looking for an open change request for '{head_branch}'"))
    }

    /// The diff captured when the CR was merged; `None` for unmerged CRs.
    pub async fn merged_diff(&self, project_id: &str, number: i64) -> Result<Option<String>> {
        with_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT merged_diff FROM change_requests WHERE project_id = $1 AND number = $2",
            )
            .bind(project_id)
            .bind(number)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading the merged diff of change request #{number}"))?
        .ok_or_else(|| Error::NotFound(format!("change request #{number}")))
    }

    /// A page of the project's CRs. Ascending by number unless `newest_first`; the cursor
    /// `after_number` continues after the last number of the previous page.
    pub async fn list_change_requests(
        &self,
        project_id: &str,
        query: &CrListQuery,
    ) -> Result<Vec<ChangeRequest>> {
        let state = query.state.map(CrState::as_str);
        let limit = clamp_limit(query.limit, MAX_LIST);
        with_pool!(self, |pool| {
            if query.newest_first {
                sqlx::query_as::<_, ChangeRequest>(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM change_requests WHERE project_id = $1
                        AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR number < $3)
                      ORDER BY number DESC LIMIT $4"
                ))
                .bind(project_id)
                .bind(state)
                .bind(query.after_number)
                .bind(limit)
                .fetch_all(pool)
                .await
            } else {
                sqlx::query_as::<_, ChangeRequest>(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM change_requests WHERE project_id = $1
                        AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR number > $3)
                      ORDER BY number LIMIT $4"
                ))
                .bind(project_id)
                .bind(state)
                .bind(query.after_number)
                .bind(limit)
                .fetch_all(pool)
                .await
            }
        })
        .ctx(|| format!("listing change requests of project {project_id}"))
    }

    /// Refreshes the recorded shas of an open CR (e.g. after new pushes). False unless open.
    pub async fn update_change_request_shas(
        &self,
        project_id: &str,
        number: i64,
        head_sha: &str,
        base_sha: &str,
        merge_base: &str,
    ) -> Result<bool> {
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE change_requests SET head_sha = $1, base_sha = $2, merge_base = $3,
                        updated_ms = $4
                 WHERE project_id = $5 AND number = $6 AND state = 'open'",
            )
            .bind(head_sha)
            .bind(base_sha)
            .bind(merge_base)
            .bind(now_ms())
            .bind(project_id)
            .bind(number)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("updating change request #{number}"))?;
        Ok(n == 1)
    }

    /// open → closed. False if the CR was not open.
    pub async fn close_change_request(&self, project_id: &str, number: i64) -> Result<bool> {
        self.move_change_request(project_id, number, CrState::Open, CrState::Closed)
            .await
    }

    /// closed → open. False if the CR was not closed. Reopening while another CR for the same
    /// branch is open is [`Error::AlreadyExists`].
    pub async fn reopen_change_request(&self, project_id: &str, number: i64) -> Result<bool> {
        self.move_change_request(project_id, number, CrState::Closed, CrState::Open)
            .await
    }

    async fn move_change_request(
        &self,
        project_id: &str,
        number: i64,
        from: CrState,
        to: CrState,
    ) -> Result<bool> {
        let moved = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE change_requests SET state = $1, updated_ms = $2
                 WHERE project_id = $3 AND number = $4 AND state = $5",
            )
            .bind(to.as_str())
            .bind(now_ms())
            .bind(project_id)
            .bind(number)
            .bind(from.as_str())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        });
        match moved {
            Ok(n) => Ok(n == 1),
            Err(e) if is_unique_violation(&e) => {
                let head = self
                    .get_change_request(project_id, number)
                    .await?
                    .head_branch;
                Err(Error::AlreadyExists(format!(
                    "an open change request for branch '{head}'"
                )))
            }
            Err(e) => Err(e).ctx(|| format!("moving change request #{number} to {to}")),
        }
    }

    /// open → merged, recording the merge. False if the CR was not open (e.g. a concurrent
    /// merge or close won).
    pub async fn mark_change_request_merged(
        &self,
        project_id: &str,
        number: i64,
        merged: &MergedChangeRequest,
    ) -> Result<bool> {
        let now = now_ms();
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE change_requests SET state = 'merged', head_sha = $1, base_sha = $2,
                        merge_base = $3, merge_commit = $4, merged_diff = $5,
                        updated_ms = $6, merged_ms = $6
                 WHERE project_id = $7 AND number = $8 AND state = 'open'",
            )
            .bind(&merged.head_sha)
            .bind(&merged.base_sha)
            .bind(&merged.merge_base)
            .bind(&merged.merge_commit)
            .bind(&merged.merged_diff)
            .bind(now)
            .bind(project_id)
            .bind(number)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("marking change request #{number} merged"))?;
        Ok(n == 1)
    }
}
