//! Store rows to wire messages.

use crate::changes::{FileChange, FileStatus};
use crate::store;
use kortix_proto::v1 as pb;

pub fn session_status(s: store::SessionStatus) -> pb::SessionStatus {
    use store::SessionStatus as S;
    match s {
        S::Provisioning => pb::SessionStatus::Provisioning,
        S::Running => pb::SessionStatus::Running,
        S::Stopping => pb::SessionStatus::Stopping,
        S::Stopped => pb::SessionStatus::Stopped,
        S::Hibernated => pb::SessionStatus::Hibernated,
        S::Failed => pb::SessionStatus::Failed,
        S::Resuming => pb::SessionStatus::Resuming,
    }
}

/// A session as the API shows it, with what its last sandbox saved when that is known.
pub fn session(
    s: &store::Session,
    project_name: &str,
    saved: Option<&store::SessionSave>,
) -> pb::Session {
    pb::Session {
        id: s.id.clone(),
        project_id: s.project_id.clone(),
        project_name: project_name.to_string(),
        branch: s.id.clone(),
        status: session_status(s.status) as i32,
        template: s.template.clone(),
        agent: s.agent.clone(),
        prompt: s.prompt.clone(),
        head_sha: s.head_sha.clone(),
        failure_reason: if s.status == store::SessionStatus::Failed {
            s.failure_reason.clone()
        } else {
            String::new()
        },
        end_reason: if s.status.is_terminal() {
            s.failure_reason.clone()
        } else {
            String::new()
        },
        created_unix_ms: s.created_ms,
        started_unix_ms: s.started_ms.unwrap_or(0),
        ended_unix_ms: s.ended_ms.unwrap_or(0),
        last_heartbeat_unix_ms: s.last_heartbeat_ms.unwrap_or(0),
        last_seq: s.acked_seq.max(0) as u64,
        origin: s.origin.clone(),
        launched_by: s.launched_by.clone(),
        resumable: s.status.is_resumable(),
        saved: saved.map(|v| pb::SavedWork {
            wip_commit: v.wip_commit.clone(),
            wip_note: v.wip_note.clone(),
            conversation_bytes: u64::try_from(v.conversation_bytes).unwrap_or(0),
            conversation_note: v.conversation_note.clone(),
            saved_unix_ms: v.saved_ms,
        }),
        resumes: u32::try_from(s.resumes).unwrap_or(u32::MAX),
    }
}

pub fn project(p: &store::Project, git_url: &str) -> pb::Project {
    pb::Project {
        id: p.id.clone(),
        name: p.name.clone(),
        default_branch: p.default_branch.clone(),
        git_url: git_url.to_string(),
        created_unix_ms: p.created_ms,
        account_id: p.account_id.clone(),
    }
}

/// A person, as `WhoAmI` and `CreateAccount` show them (their personal account shares their
/// id and name).
pub fn person(p: &store::Person) -> pb::Account {
    pb::Account {
        id: p.id.clone(),
        name: p.name.clone(),
        created_unix_ms: p.created_ms,
        server_admin: p.server_admin,
    }
}

pub fn member(account: &store::Account, m: &store::Member) -> pb::Member {
    pb::Member {
        account_id: account.id.clone(),
        account: account.name.clone(),
        person_id: m.person_id.clone(),
        person: m.person_name.clone(),
        role: m.role.clone(),
        created_unix_ms: m.created_ms,
    }
}

pub fn grant(project: &store::Project, g: &store::Grant) -> pb::AccessGrant {
    pb::AccessGrant {
        project_id: project.id.clone(),
        project: project.name.clone(),
        person_id: g.person_id.clone(),
        person: g.person_name.clone(),
        role: g.role.clone(),
        expires_unix_ms: g.expires_ms.unwrap_or(0),
        granted_by: g.granted_by.clone(),
        created_unix_ms: g.created_ms,
    }
}

pub fn token(t: &store::ApiToken) -> pb::TokenInfo {
    pb::TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        created_unix_ms: t.created_ms,
        last_used_unix_ms: t.last_used_ms.unwrap_or(0),
        revoked_unix_ms: t.revoked_ms.unwrap_or(0),
        // The project's id; `CreateToken` answers with its name.
        project: t.project_id.clone().unwrap_or_default(),
        role: t.role.clone().unwrap_or_default(),
        expires_unix_ms: t.expires_ms.unwrap_or(0),
    }
}

pub fn secret(s: &store::SecretMeta) -> pb::SecretInfo {
    pb::SecretInfo {
        name: s.name.clone(),
        created_unix_ms: s.created_ms,
        updated_unix_ms: s.updated_ms,
    }
}

pub fn cr_state(s: store::CrState) -> pb::ChangeRequestState {
    match s {
        store::CrState::Open => pb::ChangeRequestState::Open,
        store::CrState::Closed => pb::ChangeRequestState::Closed,
        store::CrState::Merged => pb::ChangeRequestState::Merged,
    }
}

pub fn change_request(c: &store::ChangeRequest) -> pb::ChangeRequest {
    pb::ChangeRequest {
        project_id: c.project_id.clone(),
        number: c.number.max(0) as u64,
        title: c.title.clone(),
        body: c.body.clone(),
        state: cr_state(c.state) as i32,
        head: c.head_branch.clone(),
        base: c.base_branch.clone(),
        head_sha: c.head_sha.clone(),
        base_sha: c.base_sha.clone(),
        merge_commit: c.merge_commit.clone(),
        session_id: c.session_id.clone().unwrap_or_default(),
        created_unix_ms: c.created_ms,
        updated_unix_ms: c.updated_ms,
        merged_unix_ms: c.merged_ms.unwrap_or(0),
        author_account_id: c.author_account_id.clone(),
    }
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
