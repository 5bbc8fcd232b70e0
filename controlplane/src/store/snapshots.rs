//! Snapshot rows: one per (project, snapshot hash). The row is also the single-flight lock of
//! its build: moving it from `pending` (or from a `building` claim that has gone stale) to
//! `building` is a conditional update that exactly one caller wins, on any replica.

use super::{DbContext, Error, Result, Store, with_pool};
use crate::store::SessionStatus;

const MAX_LIST: i64 = 1000;
const MAX_REASON_BYTES: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotStatus {
    Pending,
    Building,
    Active,
    Failed,
}

impl SnapshotStatus {
    pub const ALL: [SnapshotStatus; 4] = [
        SnapshotStatus::Pending,
        SnapshotStatus::Building,
        SnapshotStatus::Active,
        SnapshotStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotStatus::Pending => "pending",
            SnapshotStatus::Building => "building",
            SnapshotStatus::Active => "active",
            SnapshotStatus::Failed => "failed",
        }
    }

    /// Active and failed snapshots are settled: nobody is building them.
    pub fn is_settled(self) -> bool {
        matches!(self, SnapshotStatus::Active | SnapshotStatus::Failed)
    }
}

impl std::fmt::Display for SnapshotStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown snapshot status {0:?}")]
pub struct UnknownSnapshotStatus(String);

impl TryFrom<String> for SnapshotStatus {
    type Error = UnknownSnapshotStatus;
    fn try_from(s: String) -> std::result::Result<Self, UnknownSnapshotStatus> {
        SnapshotStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(UnknownSnapshotStatus(s))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Snapshot {
    pub project_id: String,
    pub hash: String,
    /// `kortix-snap-<project8>-<hash12>`: the image's name at the provider.
    pub name: String,
    pub template: String,
    #[sqlx(try_from = "String")]
    pub status: SnapshotStatus,
    pub failure_reason: String,
    pub size_bytes: Option<i64>,
    /// Who holds the build claim (a replica's build id), empty when nobody does.
    pub builder: String,
    pub claimed_ms: Option<i64>,
    /// How many builds were started for this row (a retry after a failure is another).
    pub builds: i64,
    pub created_ms: i64,
    pub built_ms: Option<i64>,
    pub last_used_ms: i64,
}

macro_rules! columns {
    () => {
        "project_id, hash, name, template, status, failure_reason, size_bytes, builder,
         claimed_ms, builds, created_ms, built_ms, last_used_ms"
    };
}

/// What identifies a snapshot row when it is first needed.
#[derive(Debug, Clone)]
pub struct NewSnapshot<'a> {
    pub project_id: &'a str,
    pub hash: &'a str,
    pub name: &'a str,
    pub template: &'a str,
}

fn truncate(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    // Keep the end: a build's last lines say why it failed.
    let mut start = reason.len() - MAX_REASON_BYTES;
    while !reason.is_char_boundary(start) {
        start += 1;
    }
    &reason[start..]
}

impl Store {
    /// Returns the row of `(project, hash)`, inserting it as `pending` when it is new.
    pub async fn ensure_snapshot(&self, new: &NewSnapshot<'_>, now: i64) -> Result<Snapshot> {
        if new.hash.is_empty() || new.hash.len() > 128 || new.name.len() > 256 {
            return Err(Error::Invalid {
                what: "snapshot",
                reason: "hash and name are required (hash at most 128 bytes, name 256)".into(),
            });
        }
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO snapshots (project_id, hash, name, template, status, created_ms,
                                        last_used_ms)
                 SELECT $1, $2, $3, $4, 'pending', $5, $5
                 WHERE EXISTS (SELECT 1 FROM projects WHERE id = $1)
                 ON CONFLICT (project_id, hash) DO NOTHING",
            )
            .bind(new.project_id)
            .bind(new.hash)
            .bind(new.name)
            .bind(new.template)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("recording snapshot {}", new.name))?;
        self.get_snapshot(new.project_id, new.hash)
            .await?
            .ok_or_else(|| Error::NotFound(format!("project {}", new.project_id)))
    }

    pub async fn get_snapshot(&self, project_id: &str, hash: &str) -> Result<Option<Snapshot>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Snapshot>(concat!(
                "SELECT ",
                columns!(),
                " FROM snapshots WHERE project_id = $1 AND hash = $2"
            ))
            .bind(project_id)
            .bind(hash)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading snapshot {hash} of project {project_id}"))
    }

    /// A project's snapshots, newest first.
    pub async fn list_snapshots(&self, project_id: &str) -> Result<Vec<Snapshot>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Snapshot>(concat!(
                "SELECT ",
                columns!(),
                " FROM snapshots WHERE project_id = $1
                  ORDER BY created_ms DESC, hash LIMIT $2"
            ))
            .bind(project_id)
            .bind(MAX_LIST)
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing snapshots of project {project_id}"))
    }

    /// Claims the build of a snapshot for `builder`: moves it from `pending`, or from a
    /// `building` claim not renewed since `stale_before`, to `building`. Exactly one of any
    /// number of concurrent callers (on any replica) gets `true`.
    pub async fn claim_snapshot_build(
        &self,
        project_id: &str,
        hash: &str,
        builder: &str,
        now: i64,
        stale_before: i64,
    ) -> Result<bool> {
        let moved = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE snapshots
                    SET status = 'building', builder = $3, claimed_ms = $4, builds = builds + 1,
                        failure_reason = ''
                  WHERE project_id = $1 AND hash = $2
                    AND (status = 'pending'
                         OR (status = 'building' AND (claimed_ms IS NULL OR claimed_ms < $5)))",
            )
            .bind(project_id)
            .bind(hash)
            .bind(builder)
            .bind(now)
            .bind(stale_before)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("claiming the build of snapshot {hash}"))?;
        Ok(moved == 1)
    }

    /// Keeps a build claim fresh; `false` when the claim is no longer this builder's.
    pub async fn renew_snapshot_claim(
        &self,
        project_id: &str,
        hash: &str,
        builder: &str,
        now: i64,
    ) -> Result<bool> {
        let moved = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE snapshots SET claimed_ms = $4
                  WHERE project_id = $1 AND hash = $2 AND status = 'building' AND builder = $3",
            )
            .bind(project_id)
            .bind(hash)
            .bind(builder)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("renewing the build claim of snapshot {hash}"))?;
        Ok(moved == 1)
    }

    /// Ends a build this builder holds: `active` with the image's size, or `failed` with the
    /// reason (its last 8 KiB). `false` when the claim was lost meanwhile.
    pub async fn finish_snapshot_build(
        &self,
        project_id: &str,
        hash: &str,
        builder: &str,
        outcome: std::result::Result<i64, &str>,
        now: i64,
    ) -> Result<bool> {
        let (status, size, reason) = match outcome {
            Ok(size) => (SnapshotStatus::Active, Some(size), ""),
            Err(reason) => (SnapshotStatus::Failed, None, truncate(reason)),
        };
        let moved = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE snapshots
                    SET status = $4, size_bytes = $5, failure_reason = $6, built_ms = $7,
                        builder = '', claimed_ms = NULL
                  WHERE project_id = $1 AND hash = $2 AND status = 'building' AND builder = $3",
            )
            .bind(project_id)
            .bind(hash)
            .bind(builder)
            .bind(status.as_str())
            .bind(size)
            .bind(reason)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("finishing the build of snapshot {hash}"))?;
        Ok(moved == 1)
    }

    /// Makes a failed (or, with `also_active`, an active) snapshot `pending` again, for a
    /// build someone asked for. Returns whether it moved.
    pub async fn reset_snapshot(
        &self,
        project_id: &str,
        hash: &str,
        also_active: bool,
    ) -> Result<bool> {
        let moved = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE snapshots SET status = 'pending', failure_reason = ''
                  WHERE project_id = $1 AND hash = $2
                    AND (status = 'failed' OR ($3 AND status = 'active'))",
            )
            .bind(project_id)
            .bind(hash)
            .bind(also_active)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("resetting snapshot {hash}"))?;
        Ok(moved == 1)
    }

    pub async fn touch_snapshot(&self, project_id: &str, hash: &str, now: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE snapshots SET last_used_ms = $3
                  WHERE project_id = $1 AND hash = $2 AND last_used_ms < $3",
            )
            .bind(project_id)
            .bind(hash)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("marking snapshot {hash} used"))?;
        Ok(())
    }

    /// Records which snapshot a session boots from.
    pub async fn set_session_snapshot(&self, session_id: &str, name: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE sessions SET snapshot = $2 WHERE id = $1")
                .bind(session_id)
                .bind(name)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .ctx(|| format!("recording the snapshot of session {session_id}"))?;
        Ok(())
    }

    /// Snapshots no live session uses and nobody used since `unused_since`, settled (not
    /// being built), of one project or of all: the candidates for pruning.
    pub async fn prunable_snapshots(
        &self,
        project_id: Option<&str>,
        unused_since: i64,
    ) -> Result<Vec<Snapshot>> {
        let [a, b, c, d] = SessionStatus::ACTIVE.map(SessionStatus::as_str);
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Snapshot>(concat!(
                "SELECT ",
                columns!(),
                " FROM snapshots s
                  WHERE ($1 = '' OR s.project_id = $1)
                    AND s.status IN ('active', 'failed')
                    AND s.last_used_ms < $2
                    AND NOT EXISTS (SELECT 1 FROM sessions x
                                     WHERE x.snapshot = s.name AND x.status IN ($3, $4, $5, $6))
                  ORDER BY s.last_used_ms LIMIT $7"
            ))
            .bind(project_id.unwrap_or(""))
            .bind(unused_since)
            .bind(a)
            .bind(b)
            .bind(c)
            .bind(d)
            .bind(MAX_LIST)
            .fetch_all(pool)
            .await
        })
        .ctx(|| "listing prunable snapshots".to_string())
    }

    /// Deletes a snapshot's row unless a live session uses it or it was used since
    /// `unused_since` (both re-checked here, so a session that started after the listing
    /// keeps its snapshot). Returns whether it was deleted.
    pub async fn delete_unused_snapshot(
        &self,
        project_id: &str,
        hash: &str,
        unused_since: i64,
    ) -> Result<bool> {
        let [a, b, c, d] = SessionStatus::ACTIVE.map(SessionStatus::as_str);
        let deleted = with_pool!(self, |pool| {
            sqlx::query(
                "DELETE FROM snapshots
                  WHERE project_id = $1 AND hash = $2
                    AND status IN ('active', 'failed')
                    AND last_used_ms < $3
                    AND NOT EXISTS (SELECT 1 FROM sessions x
                                     WHERE x.snapshot = snapshots.name
                                       AND x.status IN ($4, $5, $6, $7))",
            )
            .bind(project_id)
            .bind(hash)
            .bind(unused_since)
            .bind(a)
            .bind(b)
            .bind(c)
            .bind(d)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("deleting snapshot {hash}"))?;
        Ok(deleted == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn long_reasons_keep_their_end_on_a_char_boundary() {
        let reason = format!("{}é{}", "a".repeat(9000), "the error");
        let kept = truncate(&reason);
        assert!(kept.len() <= super::MAX_REASON_BYTES);
        assert!(kept.ends_with("the error"));
        assert_eq!(truncate("short"), "short");
    }
}
