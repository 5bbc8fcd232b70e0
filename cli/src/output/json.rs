//! The `--json` shapes: hand-written serde structs built from the protobuf messages, so the
//! JSON stays stable when the wire format grows. Timestamps are RFC 3339 strings; values the
//! server left unset (empty string, 0 time) are `null`; enums are lower-case words.

use kortix_proto::v1::{
    AccessGrant, Account, ChangeRequest, ChangeRequestDetail, ChangeRequestState, CommitRecord,
    DiffResponse, FileChange, Firing, Gap, LogLine, LogStream, Member, OpencodeEvent, Project,
    ProjectInfo, Record, SavedWork, SecretInfo, Session, SessionStatus, StateChange, TokenInfo,
    Trigger, record,
};
use serde::Serialize;
use serde_json::Value;

use super::time::{rfc3339_ms, rfc3339_s};

/// `None` for proto3's empty-string "unset".
pub fn opt(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

pub fn session_status(value: i32) -> &'static str {
    match SessionStatus::try_from(value) {
        Ok(SessionStatus::Unspecified) => "unspecified",
        Ok(SessionStatus::Provisioning) => "provisioning",
        Ok(SessionStatus::Running) => "running",
        Ok(SessionStatus::Stopping) => "stopping",
        Ok(SessionStatus::Stopped) => "stopped",
        Ok(SessionStatus::Hibernated) => "hibernated",
        Ok(SessionStatus::Failed) => "failed",
        Ok(SessionStatus::Resuming) => "resuming",
        Err(_) => "unknown",
    }
}

pub fn cr_state(value: i32) -> &'static str {
    match ChangeRequestState::try_from(value) {
        Ok(ChangeRequestState::Unspecified) => "unspecified",
        Ok(ChangeRequestState::Open) => "open",
        Ok(ChangeRequestState::Closed) => "closed",
        Ok(ChangeRequestState::Merged) => "merged",
        Err(_) => "unknown",
    }
}

pub fn log_stream(value: i32) -> &'static str {
    match LogStream::try_from(value) {
        Ok(LogStream::Unspecified) => "unspecified",
        Ok(LogStream::Stdout) => "stdout",
        Ok(LogStream::Stderr) => "stderr",
        Ok(LogStream::Agent) => "agent",
        Ok(LogStream::Build) => "build",
        Err(_) => "unknown",
    }
}

// ---- accounts and tokens ----

#[derive(Debug, Serialize, PartialEq)]
pub struct AccountJson {
    pub id: String,
    pub name: String,
    pub server_admin: bool,
    pub created_at: Option<String>,
}

impl From<&Account> for AccountJson {
    fn from(a: &Account) -> Self {
        AccountJson {
            id: a.id.clone(),
            name: a.name.clone(),
            server_admin: a.server_admin,
            created_at: rfc3339_ms(a.created_unix_ms),
        }
    }
}

/// `accounts create`: `{"account", "token"}`.
#[derive(Debug, Serialize)]
pub struct AccountCreatedJson {
    pub account: AccountJson,
    pub token: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct TokenJson {
    pub id: String,
    pub name: Option<String>,
    pub created_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    pub project: Option<String>,
    pub role: Option<String>,
    pub expires_at: Option<String>,
}

impl From<&TokenInfo> for TokenJson {
    fn from(t: &TokenInfo) -> Self {
        TokenJson {
            id: t.id.clone(),
            name: opt(&t.name),
            created_at: rfc3339_ms(t.created_unix_ms),
            last_used_at: rfc3339_ms(t.last_used_unix_ms),
            revoked_at: rfc3339_ms(t.revoked_unix_ms),
            project: opt(&t.project),
            role: opt(&t.role),
            expires_at: rfc3339_ms(t.expires_unix_ms),
        }
    }
}

/// `tokens create`: the token record plus the secret, shown once.
#[derive(Debug, Serialize)]
pub struct TokenCreatedJson {
    #[serde(flatten)]
    pub info: TokenJson,
    pub token: String,
}

/// `members ls|add|rm`: one membership.
#[derive(Debug, Serialize, PartialEq)]
pub struct MemberJson {
    pub account: String,
    pub person: String,
    pub role: String,
    pub since: Option<String>,
}

impl From<&Member> for MemberJson {
    fn from(m: &Member) -> Self {
        MemberJson {
            account: m.account.clone(),
            person: m.person.clone(),
            role: m.role.clone(),
            since: rfc3339_ms(m.created_unix_ms),
        }
    }
}

/// `audit ls`: one event.
#[derive(Debug, Serialize, PartialEq)]
pub struct AuditEventJson {
    pub id: i64,
    pub at: Option<String>,
    pub account_id: String,
    pub project: String,
    pub actor: String,
    pub actor_name: String,
    pub token_id: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub from: String,
}

impl From<&kortix_proto::v1::AuditEvent> for AuditEventJson {
    fn from(e: &kortix_proto::v1::AuditEvent) -> Self {
        AuditEventJson {
            id: e.id,
            at: rfc3339_ms(e.at_unix_ms),
            account_id: e.account_id.clone(),
            project: e.project.clone(),
            actor: e.actor.clone(),
            actor_name: e.actor_name.clone(),
            token_id: e.token_id.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            detail: e.detail.clone(),
            from: e.from.clone(),
        }
    }
}

/// `access ls|grant|revoke`: one grant.
#[derive(Debug, Serialize, PartialEq)]
pub struct GrantJson {
    pub project: String,
    pub person: String,
    pub role: String,
    pub expires_at: Option<String>,
    pub granted_at: Option<String>,
}

impl From<&AccessGrant> for GrantJson {
    fn from(g: &AccessGrant) -> Self {
        GrantJson {
            project: g.project.clone(),
            person: g.person.clone(),
            role: g.role.clone(),
            expires_at: rfc3339_ms(g.expires_unix_ms),
            granted_at: rfc3339_ms(g.created_unix_ms),
        }
    }
}

// ---- projects and secrets ----

#[derive(Debug, Serialize, PartialEq)]
pub struct ProjectJson {
    pub id: String,
    pub name: String,
    pub default_branch: String,
    pub git_url: String,
    pub created_at: Option<String>,
    pub account_id: Option<String>,
}

impl From<&Project> for ProjectJson {
    fn from(p: &Project) -> Self {
        ProjectJson {
            id: p.id.clone(),
            name: p.name.clone(),
            default_branch: p.default_branch.clone(),
            git_url: p.git_url.clone(),
            created_at: rfc3339_ms(p.created_unix_ms),
            account_id: opt(&p.account_id),
        }
    }
}

/// `projects create`: exactly `{"id","name","default_branch","git_url"}`.
#[derive(Debug, Serialize, PartialEq)]
pub struct ProjectCreatedJson {
    pub id: String,
    pub name: String,
    pub default_branch: String,
    pub git_url: String,
}

impl From<&Project> for ProjectCreatedJson {
    fn from(p: &Project) -> Self {
        ProjectCreatedJson {
            id: p.id.clone(),
            name: p.name.clone(),
            default_branch: p.default_branch.clone(),
            git_url: p.git_url.clone(),
        }
    }
}

/// `projects clone`: exactly `{"project","dir"}` (`dir` absolute).
#[derive(Debug, Serialize, PartialEq)]
pub struct ProjectClonedJson {
    pub project: String,
    pub dir: String,
}

/// `projects info`: the project, its head, and the parsed normalized manifest.
#[derive(Debug, Serialize)]
pub struct ProjectInfoJson {
    #[serde(flatten)]
    pub project: ProjectJson,
    pub head_sha: Option<String>,
    pub manifest: Option<Value>,
    pub manifest_error: Option<String>,
}

impl From<&ProjectInfo> for ProjectInfoJson {
    fn from(info: &ProjectInfo) -> Self {
        let project = info.project.clone().unwrap_or_default();
        // The server sends the manifest as JSON text; pass anything unparsable through as a
        // string rather than dropping it.
        let manifest = opt(&info.manifest_json)
            .map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text)));
        ProjectInfoJson {
            project: ProjectJson::from(&project),
            head_sha: opt(&info.head_sha),
            manifest,
            manifest_error: opt(&info.manifest_error),
        }
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct SecretJson {
    pub name: String,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<&SecretInfo> for SecretJson {
    fn from(s: &SecretInfo) -> Self {
        SecretJson {
            name: s.name.clone(),
            created_at: rfc3339_ms(s.created_unix_ms),
            updated_at: rfc3339_ms(s.updated_unix_ms),
        }
    }
}

/// `secrets set`: exactly `{"name","updated_at"}`.
#[derive(Debug, Serialize, PartialEq)]
pub struct SecretSetJson {
    pub name: String,
    pub updated_at: Option<String>,
}

// ---- sessions ----

#[derive(Debug, Serialize, PartialEq)]
pub struct SessionJson {
    pub id: String,
    pub project: String,
    pub project_id: String,
    pub branch: String,
    pub status: &'static str,
    pub template: Option<String>,
    pub agent: Option<String>,
    pub prompt: Option<String>,
    pub origin: Option<String>,
    pub head_sha: Option<String>,
    pub failure_reason: Option<String>,
    pub end_reason: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub last_heartbeat_at: Option<String>,
    pub last_seq: u64,
    /// Whether `sessions resume` would take it (stopped or hibernated).
    pub resumable: bool,
    /// What its last sandbox saved for a resume; `null` when nothing was.
    pub saved: Option<SavedWorkJson>,
    pub resumes: u32,
}

/// What a session's last sandbox saved: the commit at `refs/kortix/wip/<id>` and the
/// conversation's size, with what was not saved.
#[derive(Debug, Serialize, PartialEq)]
pub struct SavedWorkJson {
    pub wip_ref: Option<String>,
    pub wip_commit: Option<String>,
    pub wip_note: Option<String>,
    pub conversation_bytes: u64,
    pub conversation_note: Option<String>,
    pub saved_at: Option<String>,
}

impl SavedWorkJson {
    pub fn of(session_id: &str, w: &SavedWork) -> Self {
        SavedWorkJson {
            wip_ref: (!w.wip_commit.is_empty()).then(|| format!("refs/kortix/wip/{session_id}")),
            wip_commit: opt(&w.wip_commit),
            wip_note: opt(&w.wip_note),
            conversation_bytes: w.conversation_bytes,
            conversation_note: opt(&w.conversation_note),
            saved_at: rfc3339_ms(w.saved_unix_ms),
        }
    }
}

impl From<&Session> for SessionJson {
    fn from(s: &Session) -> Self {
        SessionJson {
            id: s.id.clone(),
            project: s.project_name.clone(),
            project_id: s.project_id.clone(),
            branch: s.branch.clone(),
            status: session_status(s.status),
            template: opt(&s.template),
            agent: opt(&s.agent),
            prompt: opt(&s.prompt),
            origin: opt(&s.origin),
            head_sha: opt(&s.head_sha),
            failure_reason: opt(&s.failure_reason),
            end_reason: opt(&s.end_reason),
            created_at: rfc3339_ms(s.created_unix_ms),
            started_at: rfc3339_ms(s.started_unix_ms),
            ended_at: rfc3339_ms(s.ended_unix_ms),
            last_heartbeat_at: rfc3339_ms(s.last_heartbeat_unix_ms),
            last_seq: s.last_seq,
            resumable: s.resumable,
            saved: s.saved.as_ref().map(|w| SavedWorkJson::of(&s.id, w)),
            resumes: s.resumes,
        }
    }
}

/// `sessions new`: exactly `{"id","project","branch","status"}`.
#[derive(Debug, Serialize, PartialEq)]
pub struct SessionStartedJson {
    pub id: String,
    pub project: String,
    pub branch: String,
    pub status: &'static str,
}

impl From<&Session> for SessionStartedJson {
    fn from(s: &Session) -> Self {
        SessionStartedJson {
            id: s.id.clone(),
            project: s.project_name.clone(),
            branch: s.branch.clone(),
            status: session_status(s.status),
        }
    }
}

/// `sessions chat`.
#[derive(Debug, Serialize)]
pub struct PromptSentJson {
    pub session: String,
    pub prompt_id: String,
    /// The agent acked the prompt before the control plane answered.
    pub delivered: bool,
    /// Not acked yet: waiting in the session's command queue for the agent.
    pub queued: bool,
}

/// `sessions prompt-status`.
#[derive(Debug, Serialize)]
pub struct PromptStatusJson {
    pub session: String,
    pub prompt_id: String,
    /// `queued`, `sent` (not acked yet) or `delivered`.
    pub state: &'static str,
    /// How many times it was sent to the agent.
    pub sends: u32,
    pub queued_at: Option<String>,
    pub delivered_at: Option<String>,
}

// ---- session records (`sessions attach`) ----

/// One line of `sessions attach --json`: `{"seq","ts","kind","data"}`.
#[derive(Debug, Serialize, PartialEq)]
pub struct RecordJson {
    pub seq: u64,
    pub ts: Option<String>,
    pub kind: &'static str,
    pub data: RecordData,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RecordData {
    Log {
        stream: &'static str,
        line: String,
    },
    Event {
        #[serde(rename = "type")]
        event_type: String,
        /// The OpenCode event parsed as JSON (its raw text when it is not valid JSON).
        data: Value,
    },
    Commit {
        sha: String,
        parents: Vec<String>,
        author: AuthorJson,
        message: String,
        committed_at: Option<String>,
        files_changed: u32,
        insertions: u32,
        deletions: u32,
        pushed: bool,
    },
    State {
        status: &'static str,
        phase: Option<String>,
        reason: Option<String>,
    },
    Gap {
        from_seq: u64,
        to_seq: u64,
        reason: Option<String>,
    },
    /// `approval` and `connector_call`: their fields as they are.
    Other(Value),
}

fn approval_data(a: &kortix_proto::v1::ApprovalRecord) -> Value {
    serde_json::json!({
        "approval_id": a.approval_id, "connector": a.connector, "tool": a.tool,
        "digest": a.digest, "state": a.state, "reason": a.reason, "args_preview": a.args_preview,
    })
}

fn connector_call_data(c: &kortix_proto::v1::ConnectorCallRecord) -> Value {
    serde_json::json!({
        "connector": c.connector, "tool": c.tool, "digest": c.digest, "status": c.status,
        "duration_ms": c.duration_ms, "upstream_status": c.upstream_status,
        "args_preview": c.args_preview, "error": c.error, "approval_id": c.approval_id,
    })
}

#[derive(Debug, Serialize, PartialEq)]
pub struct AuthorJson {
    pub name: String,
    pub email: String,
}

impl RecordJson {
    /// `None` for a record whose body this build does not know (a newer server): it is
    /// skipped rather than shown with a kind outside the documented set.
    pub fn from_record(r: &Record) -> Option<Self> {
        let (kind, data) = match r.body.as_ref()? {
            record::Body::Log(l) => ("log", log_data(l)),
            record::Body::Event(e) => ("event", event_data(e)),
            record::Body::Commit(c) => ("commit", commit_data(c)),
            record::Body::State(s) => ("state", state_data(s)),
            record::Body::Gap(g) => ("gap", gap_data(g)),
            record::Body::Approval(a) => ("approval", RecordData::Other(approval_data(a))),
            record::Body::ConnectorCall(c) => {
                ("connector_call", RecordData::Other(connector_call_data(c)))
            }
        };
        Some(RecordJson {
            seq: r.seq,
            ts: rfc3339_ms(r.ts_unix_ms),
            kind,
            data,
        })
    }
}

fn log_data(l: &LogLine) -> RecordData {
    RecordData::Log {
        stream: log_stream(l.stream),
        line: l.line.clone(),
    }
}

fn event_data(e: &OpencodeEvent) -> RecordData {
    let data = if e.json.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&e.json).unwrap_or_else(|_| Value::String(e.json.clone()))
    };
    RecordData::Event {
        event_type: e.r#type.clone(),
        data,
    }
}

fn commit_data(c: &CommitRecord) -> RecordData {
    RecordData::Commit {
        sha: c.sha.clone(),
        parents: c.parents.clone(),
        author: AuthorJson {
            name: c.author_name.clone(),
            email: c.author_email.clone(),
        },
        message: c.message.clone(),
        committed_at: rfc3339_s(c.committed_unix_s),
        files_changed: c.files_changed,
        insertions: c.insertions,
        deletions: c.deletions,
        pushed: c.pushed,
    }
}

fn state_data(s: &StateChange) -> RecordData {
    RecordData::State {
        status: session_status(s.status),
        phase: opt(&s.phase),
        reason: opt(&s.reason),
    }
}

fn gap_data(g: &Gap) -> RecordData {
    RecordData::Gap {
        from_seq: g.from_seq,
        to_seq: g.to_seq,
        reason: opt(&g.reason),
    }
}

// ---- change requests ----

#[derive(Debug, Serialize, PartialEq)]
pub struct ChangeRequestJson {
    pub number: u64,
    pub project_id: String,
    pub title: String,
    pub body: Option<String>,
    pub state: &'static str,
    pub head: String,
    pub base: String,
    pub head_sha: Option<String>,
    pub base_sha: Option<String>,
    pub merge_commit: Option<String>,
    pub session_id: Option<String>,
    pub author_account_id: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub merged_at: Option<String>,
}

impl From<&ChangeRequest> for ChangeRequestJson {
    fn from(c: &ChangeRequest) -> Self {
        ChangeRequestJson {
            number: c.number,
            project_id: c.project_id.clone(),
            title: c.title.clone(),
            body: opt(&c.body),
            state: cr_state(c.state),
            head: c.head.clone(),
            base: c.base.clone(),
            head_sha: opt(&c.head_sha),
            base_sha: opt(&c.base_sha),
            merge_commit: opt(&c.merge_commit),
            session_id: opt(&c.session_id),
            author_account_id: opt(&c.author_account_id),
            created_at: rfc3339_ms(c.created_unix_ms),
            updated_at: rfc3339_ms(c.updated_unix_ms),
            merged_at: rfc3339_ms(c.merged_unix_ms),
        }
    }
}

/// `cr open`: exactly `{"number","state","head","base","title"}`.
#[derive(Debug, Serialize, PartialEq)]
pub struct CrOpenedJson {
    pub number: u64,
    pub state: &'static str,
    pub head: String,
    pub base: String,
    pub title: String,
}

impl From<&ChangeRequest> for CrOpenedJson {
    fn from(c: &ChangeRequest) -> Self {
        CrOpenedJson {
            number: c.number,
            state: cr_state(c.state),
            head: c.head.clone(),
            base: c.base.clone(),
            title: c.title.clone(),
        }
    }
}

/// `cr merge`: exactly `{"number","state","merge_commit"}`.
#[derive(Debug, Serialize, PartialEq)]
pub struct CrMergedJson {
    pub number: u64,
    pub state: &'static str,
    pub merge_commit: Option<String>,
}

impl From<&ChangeRequest> for CrMergedJson {
    fn from(c: &ChangeRequest) -> Self {
        CrMergedJson {
            number: c.number,
            state: cr_state(c.state),
            merge_commit: opt(&c.merge_commit),
        }
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct FileChangeJson {
    pub path: String,
    pub old_path: Option<String>,
    pub status: String,
    pub insertions: u32,
    pub deletions: u32,
    pub binary: bool,
}

impl From<&FileChange> for FileChangeJson {
    fn from(f: &FileChange) -> Self {
        FileChangeJson {
            path: f.path.clone(),
            old_path: opt(&f.old_path),
            status: f.status.clone(),
            insertions: f.insertions,
            deletions: f.deletions,
            binary: f.binary,
        }
    }
}

/// `cr show`: the CR plus merge base, per-file stats and mergeability.
#[derive(Debug, Serialize)]
pub struct CrDetailJson {
    #[serde(flatten)]
    pub change_request: ChangeRequestJson,
    pub merge_base: Option<String>,
    pub files: Vec<FileChangeJson>,
    pub insertions: u32,
    pub deletions: u32,
    pub mergeable: bool,
    pub conflicting_paths: Vec<String>,
    pub commits_ahead: u32,
    pub commits_behind: u32,
}

impl From<&ChangeRequestDetail> for CrDetailJson {
    fn from(d: &ChangeRequestDetail) -> Self {
        let cr = d.change_request.clone().unwrap_or_default();
        CrDetailJson {
            change_request: ChangeRequestJson::from(&cr),
            merge_base: opt(&d.merge_base),
            files: d.files.iter().map(FileChangeJson::from).collect(),
            insertions: d.insertions,
            deletions: d.deletions,
            mergeable: d.mergeable,
            conflicting_paths: d.conflicting_paths.clone(),
            commits_ahead: d.commits_ahead,
            commits_behind: d.commits_behind,
        }
    }
}

/// `cr diff`: `{"diff","files"}`.
#[derive(Debug, Serialize)]
pub struct DiffJson {
    pub diff: String,
    pub files: Vec<FileChangeJson>,
}

impl From<&DiffResponse> for DiffJson {
    fn from(d: &DiffResponse) -> Self {
        DiffJson {
            diff: d.diff.clone(),
            files: d.files.iter().map(FileChangeJson::from).collect(),
        }
    }
}

// ---- triggers ----

#[derive(Debug, Serialize, PartialEq)]
pub struct FiringJson {
    pub id: String,
    pub trigger: String,
    pub firing_key: String,
    pub fired_at: Option<String>,
    pub scheduled_at: Option<String>,
    pub outcome: String,
    pub session_id: Option<String>,
    pub error: Option<String>,
    pub catch_up: bool,
}

impl From<&Firing> for FiringJson {
    fn from(f: &Firing) -> Self {
        FiringJson {
            id: f.id.clone(),
            trigger: f.trigger_slug.clone(),
            firing_key: f.firing_key.clone(),
            fired_at: rfc3339_ms(f.fired_unix_ms),
            scheduled_at: rfc3339_ms(f.scheduled_unix_ms),
            outcome: f.outcome.clone(),
            session_id: opt(&f.session_id),
            error: opt(&f.error),
            catch_up: f.catch_up,
        }
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct TriggerJson {
    pub slug: String,
    pub name: String,
    #[serde(rename = "type")]
    pub trigger_type: String,
    pub enabled: bool,
    pub agent: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub secret_env: Option<String>,
    pub webhook_path: Option<String>,
    pub next_fire_at: Option<String>,
    pub last_firing: Option<FiringJson>,
}

impl From<&Trigger> for TriggerJson {
    fn from(t: &Trigger) -> Self {
        TriggerJson {
            slug: t.slug.clone(),
            name: t.name.clone(),
            trigger_type: t.r#type.clone(),
            enabled: t.enabled,
            agent: opt(&t.agent),
            cron: opt(&t.cron),
            timezone: opt(&t.timezone),
            secret_env: opt(&t.secret_env),
            webhook_path: opt(&t.webhook_path),
            next_fire_at: rfc3339_ms(t.next_fire_unix_ms),
            last_firing: t.last_firing.as_ref().map(FiringJson::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TS: i64 = 1_700_000_000_123;
    const TS_TEXT: &str = "2023-11-14T22:13:20.123Z";

    fn to_value<T: Serialize>(v: &T) -> Value {
        serde_json::to_value(v).expect("serializes")
    }

    fn record(seq: u64, body: record::Body) -> Record {
        Record {
            seq,
            ts_unix_ms: TS,
            body: Some(body),
        }
    }

    #[test]
    fn status_names_are_lower_case() {
        let cases = [
            (0, "unspecified"),
            (1, "provisioning"),
            (2, "running"),
            (3, "stopping"),
            (4, "stopped"),
            (5, "hibernated"),
            (6, "failed"),
            (99, "unknown"),
        ];
        for (value, name) in cases {
            assert_eq!(session_status(value), name);
        }
        assert_eq!(cr_state(1), "open");
        assert_eq!(cr_state(2), "closed");
        assert_eq!(cr_state(3), "merged");
        assert_eq!(cr_state(-1), "unknown");
        assert_eq!(log_stream(1), "stdout");
        assert_eq!(log_stream(2), "stderr");
        assert_eq!(log_stream(3), "agent");
    }

    #[test]
    fn log_record() {
        let r = record(
            1,
            record::Body::Log(LogLine {
                stream: 2,
                line: "oops".into(),
            }),
        );
        assert_eq!(
            to_value(&RecordJson::from_record(&r).expect("known")),
            json!({"seq": 1, "ts": TS_TEXT, "kind": "log",
                   "data": {"stream": "stderr", "line": "oops"}})
        );
    }

    #[test]
    fn event_record_parses_the_event_json() {
        let r = record(
            2,
            record::Body::Event(OpencodeEvent {
                r#type: "message.updated".into(),
                json: r#"{"properties":{"id":"m1"}}"#.into(),
            }),
        );
        assert_eq!(
            to_value(&RecordJson::from_record(&r).expect("known")),
            json!({"seq": 2, "ts": TS_TEXT, "kind": "event",
                   "data": {"type": "message.updated", "data": {"properties": {"id": "m1"}}}})
        );
    }

    #[test]
    fn event_record_with_bad_json_keeps_the_text() {
        let r = record(
            3,
            record::Body::Event(OpencodeEvent {
                r#type: "x".into(),
                json: "{not json".into(),
            }),
        );
        let v = to_value(&RecordJson::from_record(&r).expect("known"));
        assert_eq!(v["data"]["data"], json!("{not json"));
        let empty = record(3, record::Body::Event(OpencodeEvent::default()));
        let v = to_value(&RecordJson::from_record(&empty).expect("known"));
        assert_eq!(v["data"]["data"], Value::Null);
    }

    #[test]
    fn commit_record() {
        let r = record(
            4,
            record::Body::Commit(CommitRecord {
                sha: "abc".into(),
                parents: vec!["p1".into()],
                author_name: "Agent".into(),
                author_email: "agent@kortix".into(),
                message: "Add x\n\nbody".into(),
                files_changed: 2,
                insertions: 10,
                deletions: 3,
                pushed: true,
                committed_unix_s: 1_700_000_000,
            }),
        );
        assert_eq!(
            to_value(&RecordJson::from_record(&r).expect("known")),
            json!({"seq": 4, "ts": TS_TEXT, "kind": "commit", "data": {
                "sha": "abc", "parents": ["p1"],
                "author": {"name": "Agent", "email": "agent@kortix"},
                "message": "Add x\n\nbody", "committed_at": "2023-11-14T22:13:20Z",
                "files_changed": 2, "insertions": 10, "deletions": 3, "pushed": true}})
        );
    }

    #[test]
    fn state_record_with_unset_fields_as_null() {
        let r = record(
            5,
            record::Body::State(StateChange {
                status: 2,
                phase: "opencode-ready".into(),
                reason: String::new(),
            }),
        );
        assert_eq!(
            to_value(&RecordJson::from_record(&r).expect("known")),
            json!({"seq": 5, "ts": TS_TEXT, "kind": "state",
                   "data": {"status": "running", "phase": "opencode-ready", "reason": null}})
        );
    }

    #[test]
    fn gap_record() {
        let r = record(
            9,
            record::Body::Gap(Gap {
                from_seq: 6,
                to_seq: 8,
                reason: "spool overflow".into(),
            }),
        );
        assert_eq!(
            to_value(&RecordJson::from_record(&r).expect("known")),
            json!({"seq": 9, "ts": TS_TEXT, "kind": "gap",
                   "data": {"from_seq": 6, "to_seq": 8, "reason": "spool overflow"}})
        );
    }

    #[test]
    fn record_without_known_body_is_skipped_and_zero_ts_is_null() {
        let r = Record {
            seq: 7,
            ts_unix_ms: 0,
            body: None,
        };
        assert!(RecordJson::from_record(&r).is_none());
        let r = Record {
            seq: 7,
            ts_unix_ms: 0,
            body: Some(record::Body::Gap(Gap::default())),
        };
        assert_eq!(
            to_value(&RecordJson::from_record(&r).expect("known"))["ts"],
            Value::Null
        );
    }

    #[test]
    fn contract_shapes_have_exactly_the_documented_keys() {
        fn keys(v: Value) -> Vec<String> {
            let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
            k.sort();
            k
        }
        let project = Project {
            id: "p1".into(),
            name: "demo".into(),
            default_branch: "main".into(),
            git_url: "http://h/git/demo.git".into(),
            created_unix_ms: TS,
            account_id: "a1".into(),
        };
        assert_eq!(
            keys(to_value(&ProjectCreatedJson::from(&project))),
            ["default_branch", "git_url", "id", "name"]
        );
        let session = Session {
            id: "s1".into(),
            project_name: "demo".into(),
            branch: "s1".into(),
            status: 1,
            ..Default::default()
        };
        assert_eq!(
            to_value(&SessionStartedJson::from(&session)),
            json!({"id": "s1", "project": "demo", "branch": "s1", "status": "provisioning"})
        );
        let cr = ChangeRequest {
            number: 3,
            title: "T".into(),
            state: 3,
            head: "s1".into(),
            base: "main".into(),
            merge_commit: "m".into(),
            ..Default::default()
        };
        assert_eq!(
            to_value(&CrOpenedJson::from(&cr)),
            json!({"number": 3, "state": "merged", "head": "s1", "base": "main", "title": "T"})
        );
        assert_eq!(
            to_value(&CrMergedJson::from(&cr)),
            json!({"number": 3, "state": "merged", "merge_commit": "m"})
        );
        let created = AccountCreatedJson {
            account: AccountJson::from(&Account {
                id: "a1".into(),
                name: "alice".into(),
                created_unix_ms: TS,
                server_admin: false,
            }),
            token: "kx_1".into(),
        };
        assert_eq!(
            to_value(&created),
            json!({"account": {"id": "a1", "name": "alice", "server_admin": false,
                               "created_at": TS_TEXT}, "token": "kx_1"})
        );
        let member = Member {
            account: "team".into(),
            person: "bob".into(),
            role: "admin".into(),
            created_unix_ms: TS,
            ..Default::default()
        };
        assert_eq!(
            to_value(&MemberJson::from(&member)),
            json!({"account": "team", "person": "bob", "role": "admin", "since": TS_TEXT})
        );
        let grant = AccessGrant {
            project: "web".into(),
            person: "carol".into(),
            role: "viewer".into(),
            created_unix_ms: TS,
            ..Default::default()
        };
        assert_eq!(
            to_value(&GrantJson::from(&grant)),
            json!({"project": "web", "person": "carol", "role": "viewer",
                   "expires_at": null, "granted_at": TS_TEXT})
        );
    }

    #[test]
    fn session_json_maps_every_field() {
        let s = Session {
            id: "s1".into(),
            project_id: "p1".into(),
            project_name: "demo".into(),
            branch: "s1".into(),
            status: 6,
            template: "dev".into(),
            agent: String::new(),
            prompt: "do it".into(),
            head_sha: "abc".into(),
            failure_reason: "image build failed".into(),
            end_reason: "image build failed".into(),
            created_unix_ms: TS,
            started_unix_ms: 0,
            ended_unix_ms: TS,
            last_heartbeat_unix_ms: 0,
            last_seq: 42,
            origin: "trigger:nightly".into(),
            launched_by: "trigger:nightly".into(),
            resumable: false,
            saved: None,
            resumes: 0,
        };
        assert_eq!(
            to_value(&SessionJson::from(&s)),
            json!({"id": "s1", "project": "demo", "project_id": "p1", "branch": "s1",
                   "status": "failed", "template": "dev", "agent": null, "prompt": "do it",
                   "origin": "trigger:nightly", "head_sha": "abc",
                   "failure_reason": "image build failed", "end_reason": "image build failed",
                   "created_at": TS_TEXT,
                   "started_at": null, "ended_at": TS_TEXT, "last_heartbeat_at": null,
                   "last_seq": 42, "resumable": false, "saved": null, "resumes": 0})
        );
        let hibernated = Session {
            status: SessionStatus::Hibernated as i32,
            resumable: true,
            saved: Some(SavedWork {
                wip_commit: "c0ffee".into(),
                wip_note: "2 files saved to refs/kortix/wip/s1".into(),
                conversation_bytes: 1234,
                conversation_note: String::new(),
                saved_unix_ms: TS,
            }),
            resumes: 1,
            ..s
        };
        let v = to_value(&SessionJson::from(&hibernated));
        assert_eq!(
            (&v["status"], &v["resumable"], &v["resumes"]),
            (&json!("hibernated"), &json!(true), &json!(1))
        );
        assert_eq!(
            v["saved"],
            json!({"wip_ref": "refs/kortix/wip/s1", "wip_commit": "c0ffee",
                   "wip_note": "2 files saved to refs/kortix/wip/s1", "conversation_bytes": 1234,
                   "conversation_note": null, "saved_at": TS_TEXT})
        );
    }

    #[test]
    fn project_info_parses_the_manifest() {
        let info = ProjectInfo {
            project: Some(Project {
                id: "p1".into(),
                name: "demo".into(),
                ..Default::default()
            }),
            head_sha: "abc".into(),
            manifest_json: r#"{"kortix_version":1}"#.into(),
            manifest_error: String::new(),
        };
        let v = to_value(&ProjectInfoJson::from(&info));
        assert_eq!(v["name"], json!("demo"));
        assert_eq!(v["manifest"], json!({"kortix_version": 1}));
        assert_eq!(v["manifest_error"], Value::Null);
        let missing = ProjectInfo {
            manifest_error: "no kortix.toml".into(),
            ..Default::default()
        };
        let v = to_value(&ProjectInfoJson::from(&missing));
        assert_eq!(v["manifest"], Value::Null);
        assert_eq!(v["manifest_error"], json!("no kortix.toml"));
    }

    #[test]
    fn token_and_secret_json() {
        let t = TokenInfo {
            id: "t1".into(),
            name: String::new(),
            created_unix_ms: TS,
            last_used_unix_ms: 0,
            revoked_unix_ms: TS,
            project: "web".into(),
            role: "editor".into(),
            expires_unix_ms: 0,
        };
        let created = TokenCreatedJson {
            info: TokenJson::from(&t),
            token: "kx_2".into(),
        };
        assert_eq!(
            to_value(&created),
            json!({"id": "t1", "name": null, "created_at": TS_TEXT, "last_used_at": null,
                   "revoked_at": TS_TEXT, "project": "web", "role": "editor",
                   "expires_at": null, "token": "kx_2"})
        );
        let s = SecretInfo {
            name: "API_KEY".into(),
            created_unix_ms: TS,
            updated_unix_ms: 0,
        };
        assert_eq!(
            to_value(&SecretJson::from(&s)),
            json!({"name": "API_KEY", "created_at": TS_TEXT, "updated_at": null})
        );
    }

    #[test]
    fn cr_detail_and_diff_json() {
        let file = FileChange {
            path: "b.txt".into(),
            old_path: "a.txt".into(),
            status: "renamed".into(),
            insertions: 1,
            deletions: 0,
            binary: false,
        };
        let detail = ChangeRequestDetail {
            change_request: Some(ChangeRequest {
                number: 1,
                state: 1,
                ..Default::default()
            }),
            merge_base: "base".into(),
            files: vec![file.clone()],
            insertions: 1,
            deletions: 0,
            mergeable: false,
            conflicting_paths: vec!["b.txt".into()],
            commits_ahead: 2,
            commits_behind: 1,
        };
        let v = to_value(&CrDetailJson::from(&detail));
        assert_eq!(v["number"], json!(1));
        assert_eq!(v["state"], json!("open"));
        assert_eq!(v["merge_base"], json!("base"));
        assert_eq!(v["conflicting_paths"], json!(["b.txt"]));
        assert_eq!(
            v["files"],
            json!([{"path": "b.txt", "old_path": "a.txt", "status": "renamed",
                    "insertions": 1, "deletions": 0, "binary": false}])
        );
        let diff = DiffResponse {
            diff: "diff --git".into(),
            files: vec![file],
        };
        let v = to_value(&DiffJson::from(&diff));
        assert_eq!(v["diff"], json!("diff --git"));
        assert_eq!(v["files"][0]["path"], json!("b.txt"));
    }

    #[test]
    fn trigger_json_with_last_firing() {
        let t = Trigger {
            slug: "nightly".into(),
            name: "Nightly".into(),
            r#type: "cron".into(),
            enabled: true,
            agent: "default".into(),
            cron: "0 0 2 * * *".into(),
            timezone: "UTC".into(),
            secret_env: String::new(),
            next_fire_unix_ms: TS,
            last_firing: Some(Firing {
                id: "f1".into(),
                trigger_slug: "nightly".into(),
                firing_key: "cron:1".into(),
                fired_unix_ms: TS,
                scheduled_unix_ms: TS,
                outcome: "started".into(),
                session_id: "s1".into(),
                error: String::new(),
                catch_up: false,
            }),
            webhook_path: String::new(),
        };
        assert_eq!(
            to_value(&TriggerJson::from(&t)),
            json!({"slug": "nightly", "name": "Nightly", "type": "cron", "enabled": true,
                   "agent": "default", "cron": "0 0 2 * * *", "timezone": "UTC",
                   "secret_env": null, "webhook_path": null, "next_fire_at": TS_TEXT,
                   "last_firing": {"id": "f1", "trigger": "nightly", "firing_key": "cron:1",
                                   "fired_at": TS_TEXT, "scheduled_at": TS_TEXT,
                                   "outcome": "started", "session_id": "s1", "error": null,
                                   "catch_up": false}})
        );
    }
}
