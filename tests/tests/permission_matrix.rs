//! The permission matrix: every people-facing RPC of `kortix.v1` (listed from the generated
//! descriptors, so a new RPC cannot be missed) × every kind of caller, through the real
//! server, checked against the permission table. Each cell is allowed, PERMISSION_DENIED
//! naming the missing role, NOT_FOUND for a project or account the caller may not see, or
//! UNAUTHENTICATED. Plus the git endpoint: clone needs viewer, a branch push editor.

mod support;

use std::collections::BTreeSet;

use kortix_controlplane::channels::slack::links;
use kortix_controlplane::permissions::{self, AccountRole, Action, Need, ProjectRole};
use kortix_controlplane::store::{Approval, NewSession, Store, StoreOptions};
use kortix_proto::v1::*;
use prost::Message;
use support::{TestServer, git};
use tonic::{Code, Status};

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// A person with no role anywhere near the project.
    Stranger,
    /// A member of the project's account without a grant.
    Member,
    Viewer,
    Editor,
    Manager,
    /// Admin of the project's account.
    Admin,
    /// Owner of the project's account.
    Owner,
    ServerAdmin,
    /// A manager whose grant has expired.
    ExpiredGrant,
    /// The owner's revoked token.
    RevokedToken,
    /// The owner's token narrowed to viewer on the project.
    NarrowedViewer,
}

const EVERYONE: [Who; 11] = [
    Who::Stranger,
    Who::Member,
    Who::Viewer,
    Who::Editor,
    Who::Manager,
    Who::Admin,
    Who::Owner,
    Who::ServerAdmin,
    Who::ExpiredGrant,
    Who::RevokedToken,
    Who::NarrowedViewer,
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Allowed,
    /// NOT_FOUND for the project or account itself.
    Hidden,
    /// PERMISSION_DENIED whose message contains this.
    Denied(String),
    Unauthenticated,
}

fn project_role(who: Who) -> Option<ProjectRole> {
    match who {
        Who::Viewer | Who::NarrowedViewer => Some(ProjectRole::Viewer),
        Who::Editor => Some(ProjectRole::Editor),
        Who::Manager | Who::Admin | Who::Owner => Some(ProjectRole::Manager),
        _ => None,
    }
}

fn account_role(who: Who) -> Option<AccountRole> {
    match who {
        Who::Member => Some(AccountRole::Member),
        Who::Admin => Some(AccountRole::Admin),
        Who::Owner => Some(AccountRole::Owner),
        _ => None,
    }
}

/// What the permission table says `who` gets for an RPC that is `action`.
fn expected(action: Action, who: Who) -> Outcome {
    let need = action.need();
    if who == Who::RevokedToken {
        return Outcome::Unauthenticated;
    }
    if who == Who::NarrowedViewer {
        let unnarrowed = matches!(need, Need::ServerAdmin | Need::Account(_))
            || action == Action::ManageOwnTokens;
        if unnarrowed {
            return Outcome::Denied("not narrowed".into());
        }
    }
    match need {
        Need::Person => Outcome::Allowed,
        Need::ServerAdmin if who == Who::ServerAdmin => Outcome::Allowed,
        Need::ServerAdmin => Outcome::Denied("server admin".into()),
        Need::Account(least) => match account_role(who) {
            None => Outcome::Hidden,
            Some(held) if held < least => Outcome::Denied(format!("account role {least}")),
            Some(_) => Outcome::Allowed,
        },
        Need::Project(least) => match project_role(who) {
            None => Outcome::Hidden,
            Some(held) if held < least => Outcome::Denied(format!("project role {least}")),
            Some(_) => Outcome::Allowed,
        },
    }
}

fn observed(result: Result<(), Status>, session_id: &str) -> Outcome {
    let Err(status) = result else {
        return Outcome::Allowed;
    };
    match status.code() {
        Code::Unauthenticated => Outcome::Unauthenticated,
        Code::PermissionDenied => Outcome::Denied(status.message().to_string()),
        // A Slack link code for a project the caller cannot see is as if it did not exist.
        Code::NotFound if status.message().starts_with("no such Slack link code") => {
            Outcome::Hidden
        }
        Code::NotFound
            if [
                "project 'web' not found".to_string(),
                "account 'alice' not found".to_string(),
                format!("session {session_id} not found"),
                format!("approval {} not found", approval_id(session_id)),
            ]
            .contains(&status.message().to_string()) =>
        {
            Outcome::Hidden
        }
        // Past the permission check: whatever the call itself made of the request.
        _ => Outcome::Allowed,
    }
}

/// The Slack link code cell `n` redeems (for project web): `ABCDE-` and `n` in the codes'
/// alphabet.
fn link_code(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut rest = n;
    let tail: String = (0..5)
        .map(|_| {
            let c = ALPHABET[rest % ALPHABET.len()] as char;
            rest /= ALPHABET.len();
            c
        })
        .collect();
    format!("ABCDE-{tail}")
}

/// The pending approval every cell's session has.
fn approval_id(session_id: &str) -> String {
    format!("appr-{session_id}")
}

/// Every people-facing RPC in the generated descriptors, as `/kortix.v1.Service/Method`.
fn descriptor_rpcs() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(kortix_proto::v1::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    let mut out = BTreeSet::new();
    for file in set.file {
        let package = file.package().to_string();
        for service in file.service {
            if service.name() == "AgentGateway" {
                continue;
            }
            for method in &service.method {
                out.insert(format!("/{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    out
}

#[test]
fn every_rpc_has_exactly_one_table_entry() {
    let rpcs = descriptor_rpcs();
    assert!(rpcs.len() > 30, "{rpcs:?}");
    let table: BTreeSet<String> = permissions::RPCS
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    let missing: Vec<_> = rpcs.difference(&table).collect();
    let stale: Vec<_> = table.difference(&rpcs).collect();
    assert!(
        missing.is_empty(),
        "RPCs without a permission entry: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "permission entries without an RPC: {stale:?}"
    );
}

struct Cast {
    tokens: Vec<(Who, String)>,
}

impl Cast {
    fn token(&self, who: Who) -> &str {
        &self.tokens.iter().find(|(w, _)| *w == who).unwrap().1
    }
}

async fn person(ts: &TestServer, name: &str) -> String {
    ts.account(name).await
}

async fn grant(ts: &TestServer, owner: &str, person: &str, role: &str, expires_in_seconds: i64) {
    ts.access(owner)
        .grant_access(GrantAccessRequest {
            project: "web".into(),
            person: person.into(),
            role: role.into(),
            expires_in_seconds,
        })
        .await
        .unwrap();
}

async fn set_member(ts: &TestServer, owner: &str, person: &str, role: &str) {
    ts.members(owner)
        .add_member(AddMemberRequest {
            account: String::new(),
            person: person.into(),
            role: role.into(),
        })
        .await
        .unwrap();
}

async fn cast(ts: &TestServer, store: &Store) -> Cast {
    let owner = person(ts, "alice").await;
    ts.projects(&owner)
        .create_project(CreateProjectRequest {
            name: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let stranger = person(ts, "sam").await;
    let member = person(ts, "mel").await;
    let viewer = person(ts, "vic").await;
    let editor = person(ts, "eve").await;
    let manager = person(ts, "max").await;
    let admin = person(ts, "ada").await;
    let expired = person(ts, "exp").await;
    person(ts, "zed").await;
    set_member(ts, &owner, "mel", "member").await;
    set_member(ts, &owner, "ada", "admin").await;
    set_member(ts, &owner, "zed", "member").await;
    grant(ts, &owner, "vic", "viewer", 0).await;
    grant(ts, &owner, "eve", "editor", 0).await;
    grant(ts, &owner, "max", "manager", 0).await;
    let alice = store.get_person_by_name("alice").await.unwrap();
    let web = store
        .project_access(&alice.id, "web")
        .await
        .unwrap()
        .project;
    let exp = store.get_person_by_name("exp").await.unwrap();
    store
        .grant(&web.id, &exp.id, "manager", Some(1), &alice.id)
        .await
        .unwrap();
    let revoked = ts
        .accounts(&owner)
        .create_token(CreateTokenRequest {
            name: "revoked".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    ts.accounts(&owner)
        .revoke_token(RevokeTokenRequest {
            id: revoked.info.unwrap().id,
        })
        .await
        .unwrap();
    let narrowed = ts
        .accounts(&owner)
        .create_token(CreateTokenRequest {
            name: "ci".into(),
            project: "web".into(),
            role: "viewer".into(),
            expires_in_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    Cast {
        tokens: vec![
            (Who::Stranger, stranger),
            (Who::Member, member),
            (Who::Viewer, viewer),
            (Who::Editor, editor),
            (Who::Manager, manager),
            (Who::Admin, admin),
            (Who::Owner, owner),
            (Who::ServerAdmin, ts.admin_token.clone()),
            (Who::ExpiredGrant, expired),
            (Who::RevokedToken, revoked.token),
            (Who::NarrowedViewer, narrowed),
        ],
    }
}

/// Calls `rpc` as `token` with a request about project `web` (and `session`), built so that
/// an allowed call changes nothing the next cell depends on.
async fn call(
    ts: &TestServer,
    rpc: &str,
    token: &str,
    session: &str,
    n: usize,
) -> Result<(), Status> {
    let web = || "web".to_string();
    let cr = || ChangeRequestRef {
        project: web(),
        number: 999,
    };
    let method = rpc.rsplit('/').next().unwrap();
    let service = rpc.split('/').nth(1).unwrap();
    match (service, method) {
        ("kortix.v1.AccountService", "CreateAccount") => ts
            .accounts(token)
            .create_account(CreateAccountRequest {
                name: format!("new{n}"),
            })
            .await
            .map(drop),
        ("kortix.v1.AccountService", "WhoAmI") => {
            ts.accounts(token).who_am_i(Empty {}).await.map(drop)
        }
        ("kortix.v1.AccountService", "CreateToken") => ts
            .accounts(token)
            .create_token(CreateTokenRequest {
                name: "m".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        ("kortix.v1.AccountService", "ListTokens") => {
            ts.accounts(token).list_tokens(Empty {}).await.map(drop)
        }
        ("kortix.v1.AccountService", "RevokeToken") => ts
            .accounts(token)
            .revoke_token(RevokeTokenRequest { id: "nope".into() })
            .await
            .map(drop),
        ("kortix.v1.MemberService", "ListMembers") => ts
            .members(token)
            .list_members(ListMembersRequest {
                account: "alice".into(),
            })
            .await
            .map(drop),
        ("kortix.v1.MemberService", "AddMember") => ts
            .members(token)
            .add_member(AddMemberRequest {
                account: "alice".into(),
                person: "zed".into(),
                role: "member".into(),
            })
            .await
            .map(drop),
        ("kortix.v1.MemberService", "RemoveMember") => ts
            .members(token)
            .remove_member(RemoveMemberRequest {
                account: "alice".into(),
                person: "zed".into(),
            })
            .await
            .map(drop),
        ("kortix.v1.AccessService", "ListAccess") => ts
            .access(token)
            .list_access(ListAccessRequest { project: web() })
            .await
            .map(drop),
        ("kortix.v1.AccessService", "GrantAccess") => ts
            .access(token)
            .grant_access(GrantAccessRequest {
                project: web(),
                person: "nobody".into(),
                role: "viewer".into(),
                expires_in_seconds: 0,
            })
            .await
            .map(drop),
        ("kortix.v1.AccessService", "RevokeAccess") => ts
            .access(token)
            .revoke_access(RevokeAccessRequest {
                project: web(),
                person: "nobody".into(),
            })
            .await
            .map(drop),
        ("kortix.v1.ProjectService", "CreateProject") => ts
            .projects(token)
            .create_project(CreateProjectRequest {
                name: format!("p{n}"),
                account: "alice".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        ("kortix.v1.ProjectService", "ListProjects") => ts
            .projects(token)
            .list_projects(ListProjectsRequest {})
            .await
            .map(drop),
        ("kortix.v1.ProjectService", "GetProject") => ts
            .projects(token)
            .get_project(GetProjectRequest { project: web() })
            .await
            .map(drop),
        ("kortix.v1.SecretService", "SetSecret") => ts
            .secrets(token)
            .set_secret(SetSecretRequest {
                project: web(),
                name: "MATRIX".into(),
                value: "v".into(),
            })
            .await
            .map(drop),
        ("kortix.v1.SecretService", "ListSecrets") => ts
            .secrets(token)
            .list_secrets(ListSecretsRequest { project: web() })
            .await
            .map(drop),
        ("kortix.v1.SecretService", "DeleteSecret") => ts
            .secrets(token)
            .delete_secret(DeleteSecretRequest {
                project: web(),
                name: "NOPE".into(),
            })
            .await
            .map(drop),
        ("kortix.v1.SessionService", "StartSession") => ts
            .sessions(token)
            .start_session(StartSessionRequest {
                project: web(),
                prompt: "x".into(),
                // Refused after the permission check, so no sandbox boots.
                template: "no-such-template".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        ("kortix.v1.SessionService", "GetSession") => ts
            .sessions(token)
            .get_session(GetSessionRequest { id: session.into() })
            .await
            .map(drop),
        ("kortix.v1.SessionService", "ListSessions") => ts
            .sessions(token)
            .list_sessions(ListSessionsRequest { project: web() })
            .await
            .map(drop),
        ("kortix.v1.SessionService", "StopSession") => ts
            .sessions(token)
            .stop_session(StopSessionRequest { id: session.into() })
            .await
            .map(drop),
        // The cell's session is provisioning: refused after the permission check.
        ("kortix.v1.SessionService", "ResumeSession") => ts
            .sessions(token)
            .resume_session(ResumeSessionRequest {
                id: session.into(),
                prompt: String::new(),
            })
            .await
            .map(drop),
        ("kortix.v1.SessionService", "DeleteSession") => ts
            .sessions(token)
            .delete_session(DeleteSessionRequest { id: session.into() })
            .await
            .map(drop),
        ("kortix.v1.SessionService", "Attach") => ts
            .sessions(token)
            .attach(AttachRequest {
                session_id: session.into(),
                from_seq: 0,
                follow: false,
            })
            .await
            .map(drop),
        ("kortix.v1.SessionService", "SendPrompt") => ts
            .sessions(token)
            .send_prompt(SendPromptRequest {
                session_id: session.into(),
                text: "hi".into(),
                agent: String::new(),
            })
            .await
            .map(drop),
        ("kortix.v1.SessionService", "GetCommand") => ts
            .sessions(token)
            .get_command(GetCommandRequest {
                session_id: session.into(),
                command_id: "no-such-command".into(),
            })
            .await
            .map(drop),
        ("kortix.v1.SessionService", "WatchSession") => ts
            .sessions(token)
            .watch_session(WatchSessionRequest { id: session.into() })
            .await
            .map(drop),
        ("kortix.v1.ChangeRequestService", "OpenChangeRequest") => ts
            .crs(token)
            .open_change_request(OpenChangeRequestRequest {
                project: web(),
                branch: "no-such-branch".into(),
                title: "t".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        ("kortix.v1.ChangeRequestService", "ListChangeRequests") => ts
            .crs(token)
            .list_change_requests(ListChangeRequestsRequest {
                project: web(),
                ..Default::default()
            })
            .await
            .map(drop),
        ("kortix.v1.ChangeRequestService", "GetChangeRequest") => {
            ts.crs(token).get_change_request(cr()).await.map(drop)
        }
        ("kortix.v1.ChangeRequestService", "GetDiff") => {
            ts.crs(token).get_diff(cr()).await.map(drop)
        }
        ("kortix.v1.ChangeRequestService", "MergePreview") => {
            ts.crs(token).merge_preview(cr()).await.map(drop)
        }
        ("kortix.v1.ChangeRequestService", "MergeChangeRequest") => {
            ts.crs(token).merge_change_request(cr()).await.map(drop)
        }
        ("kortix.v1.ChangeRequestService", "CloseChangeRequest") => {
            ts.crs(token).close_change_request(cr()).await.map(drop)
        }
        ("kortix.v1.ChangeRequestService", "ReopenChangeRequest") => {
            ts.crs(token).reopen_change_request(cr()).await.map(drop)
        }
        ("kortix.v1.TriggerService", "ListTriggers") => ts
            .triggers(token)
            .list_triggers(ListTriggersRequest { project: web() })
            .await
            .map(drop),
        ("kortix.v1.TriggerService", "FireTrigger") => ts
            .triggers(token)
            .fire_trigger(FireTriggerRequest {
                project: web(),
                slug: "no-such-trigger".into(),
            })
            .await
            .map(drop),
        ("kortix.v1.TriggerService", "ListFirings") => ts
            .triggers(token)
            .list_firings(ListFiringsRequest {
                project: web(),
                slug: String::new(),
                limit: 1,
            })
            .await
            .map(drop),
        ("kortix.v1.AuditService", "ListAudit") => ts
            .audit(token)
            .list_audit(ListAuditRequest {
                account: "alice".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        // This server's provider boots no images: past the permission check a call is
        // FAILED_PRECONDITION, which the matrix counts as allowed.
        ("kortix.v1.SnapshotService", "ListSnapshots") => ts
            .snapshots(token)
            .list_snapshots(ListSnapshotsRequest { project: web() })
            .await
            .map(drop),
        ("kortix.v1.SnapshotService", "BuildSnapshot") => ts
            .snapshots(token)
            .build_snapshot(BuildSnapshotRequest {
                project: web(),
                template: String::new(),
            })
            .await
            .map(drop),
        ("kortix.v1.SnapshotService", "PruneSnapshots") => ts
            .snapshots(token)
            .prune_snapshots(PruneSnapshotsRequest {
                project: web(),
                unused_for_secs: 3600,
            })
            .await
            .map(drop),
        // Apps are off on this server: past the permission check a call is
        // FAILED_PRECONDITION naming the flag, which the matrix counts as allowed.
        ("kortix.v1.AppService", "ListApps") => ts
            .apps(token)
            .list_apps(ListAppsRequest { project: web() })
            .await
            .map(drop),
        ("kortix.v1.AppService", "GetAppLogs") => ts
            .apps(token)
            .get_app_logs(GetAppLogsRequest {
                project: web(),
                slug: "site".into(),
                deployment_id: String::new(),
            })
            .await
            .map(drop),
        ("kortix.v1.AppService", "DeployApp") => ts
            .apps(token)
            .deploy_app(DeployAppRequest {
                project: web(),
                slug: "site".into(),
                wait: false,
            })
            .await
            .map(drop),
        ("kortix.v1.AppService", "RollbackApp") => ts
            .apps(token)
            .rollback_app(RollbackAppRequest {
                project: web(),
                slug: "site".into(),
            })
            .await
            .map(drop),
        // Project web has no connectors: past the permission check a call is NOT_FOUND for
        // the connector (not the project), which the matrix counts as allowed.
        ("kortix.v1.ConnectorService", "ListConnectors") => ts
            .connectors(token)
            .list_connectors(ListConnectorsRequest { project: web() })
            .await
            .map(drop),
        ("kortix.v1.ConnectorService", "ListConnectorTools") => ts
            .connectors(token)
            .list_connector_tools(ListConnectorToolsRequest {
                project: web(),
                connector: "pets".into(),
            })
            .await
            .map(drop),
        ("kortix.v1.ConnectorService", "SetConnectorCredential") => ts
            .connectors(token)
            .set_connector_credential(SetConnectorCredentialRequest {
                project: web(),
                connector: "pets".into(),
                value: "v".into(),
                mine: true,
            })
            .await
            .map(drop),
        ("kortix.v1.ConnectorService", "ListConnectorCalls") => ts
            .connectors(token)
            .list_connector_calls(ListConnectorCallsRequest {
                project: web(),
                session_id: session.into(),
                limit: 1,
            })
            .await
            .map(drop),
        ("kortix.v1.ApprovalService", "ListApprovals") => ts
            .approvals(token)
            .list_approvals(ListApprovalsRequest {
                project: web(),
                state: "pending".into(),
            })
            .await
            .map(drop),
        ("kortix.v1.ApprovalService", "ApproveCall") => ts
            .approvals(token)
            .approve_call(DecideApprovalRequest {
                id: approval_id(session),
                reason: String::new(),
            })
            .await
            .map(drop),
        ("kortix.v1.ApprovalService", "DenyCall") => ts
            .approvals(token)
            .deny_call(DecideApprovalRequest {
                id: approval_id(session),
                reason: "no".into(),
            })
            .await
            .map(drop),
        ("kortix.v1.ChannelService", "ConnectSlack") => ts
            .channels(token)
            .connect_slack(ConnectSlackRequest {
                project: web(),
                signing_secret: "matrix-signing-secret".into(),
                bot_token: "xoxb-matrix".into(),
            })
            .await
            .map(drop),
        ("kortix.v1.ChannelService", "ListChannels") => ts
            .channels(token)
            .list_channels(ListChannelsRequest { project: web() })
            .await
            .map(drop),
        ("kortix.v1.ChannelService", "LinkSlackUser") => ts
            .channels(token)
            .link_slack_user(LinkSlackUserRequest { code: link_code(n) })
            .await
            .map(drop),
        _ => panic!("the matrix has no request for {rpc}: add one"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_for_every_role() {
    let ts = TestServer::start().await;
    let store = Store::open_sqlite(&ts.data_dir().join("kortix.db"), StoreOptions::default())
        .await
        .expect("second handle on the server's database");
    every_cell(&ts, &store).await;
    store.close().await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_for_every_role_on_postgres() {
    let Some(db) = kortix_tests::pg::Database::create().await else {
        return;
    };
    let url = db.url.clone();
    let ts = TestServer::start_with(move |c| c.database_url = Some(url)).await;
    let store = Store::open(&ts.data_dir(), Some(&db.url))
        .await
        .expect("second handle on the server's database");
    every_cell(&ts, &store).await;
    store.close().await;
    ts.stop().await;
    db.drop_now().await;
}

/// Every RPC as every kind of caller against the table, through `ts` (whose database
/// `store` also opens).
async fn every_cell(ts: &TestServer, store: &Store) {
    let cast = cast(ts, store).await;
    let alice = store.get_person_by_name("alice").await.unwrap();
    let web = store
        .project_access(&alice.id, "web")
        .await
        .unwrap()
        .project;
    let mut failures = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    for rpc in descriptor_rpcs() {
        let action = permissions::rpc_action(&rpc)
            .expect("checked by every_rpc_has_exactly_one_table_entry");
        for who in EVERYONE {
            n += 1;
            // A fresh session and member per cell: an allowed stop, delete or removal must
            // not change what the next cell sees.
            let (session, _) = store
                .create_session(&NewSession {
                    project_id: web.id.clone(),
                    origin: "matrix".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            store
                .insert_approval(&Approval {
                    id: approval_id(&session.id),
                    project_id: web.id.clone(),
                    session_id: session.id.clone(),
                    connector: "pets".into(),
                    tool: "addPet".into(),
                    digest: "d".into(),
                    state: "pending".into(),
                    requested_ms: 1,
                    ..Default::default()
                })
                .await
                .unwrap();
            store
                .put_slack_link_code(
                    &links::code_hash(&link_code(n)),
                    &web.id,
                    &format!("U{n}"),
                    i64::MAX / 2,
                )
                .await
                .unwrap();
            set_member(ts, cast.token(Who::Owner), "zed", "member").await;
            let want = expected(action, who);
            seen.insert(std::mem::discriminant(&want));
            let got = observed(
                call(ts, &rpc, cast.token(who), &session.id, n).await,
                &session.id,
            );
            let ok = match (&want, &got) {
                (Outcome::Denied(part), Outcome::Denied(message)) => {
                    message.contains(part.as_str())
                }
                _ => want == got,
            };
            if !ok {
                failures.push(format!("{rpc} as {who:?}: expected {want:?}, got {got:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(seen.len(), 4, "every kind of outcome is exercised");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clone_needs_viewer_and_push_editor() {
    let ts = TestServer::start().await;
    let store = Store::open_sqlite(&ts.data_dir().join("kortix.db"), StoreOptions::default())
        .await
        .unwrap();
    let cast = cast(&ts, &store).await;
    let work = tempfile::tempdir().unwrap();
    for who in EVERYONE {
        let dir = work.path().join(format!("{who:?}"));
        let url = ts.git_url("web", cast.token(who));
        let clone = git(work.path(), &["clone", "-q", &url, dir.to_str().unwrap()]);
        let want_clone = project_role(who).is_some();
        assert_eq!(
            clone.status.success(),
            want_clone,
            "clone as {who:?}: {}",
            String::from_utf8_lossy(&clone.stderr)
        );
        if !want_clone {
            continue;
        }
        support::git_ok(&dir, &["checkout", "-q", "-b", "topic"]);
        std::fs::write(dir.join("f.txt"), format!("{who:?}")).unwrap();
        support::git_ok(&dir, &["add", "f.txt"]);
        support::git_ok(&dir, &["commit", "-q", "-m", "c"]);
        let push = git(
            &dir,
            &[
                "push",
                "-q",
                "origin",
                &format!("topic:{who:?}").to_lowercase(),
            ],
        );
        let want_push = project_role(who) >= Some(ProjectRole::Editor);
        assert_eq!(
            push.status.success(),
            want_push,
            "push as {who:?}: {}",
            String::from_utf8_lossy(&push.stderr)
        );
        if !want_push {
            assert!(
                String::from_utf8_lossy(&push.stderr).contains("editor"),
                "the refusal names the role: {}",
                String::from_utf8_lossy(&push.stderr)
            );
        }
    }
    store.close().await;
    ts.stop().await;
}
