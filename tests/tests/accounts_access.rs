//! People, accounts and project access through the real API: members and roles, grants to
//! outside collaborators, expiring grants, the last owner, and what each role is refused.

mod support;

use std::time::Duration;

use kortix_proto::v1::*;
use support::TestServer;
use tonic::Code;

async fn create_project(ts: &TestServer, token: &str, name: &str, account: &str) -> Project {
    ts.projects(token)
        .create_project(CreateProjectRequest {
            name: name.into(),
            account: account.into(),
            ..Default::default()
        })
        .await
        .expect("create project")
        .into_inner()
}

async fn get_project(
    ts: &TestServer,
    token: &str,
    name: &str,
) -> Result<ProjectInfo, tonic::Status> {
    ts.projects(token)
        .get_project(GetProjectRequest {
            project: name.into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_grants_decide_who_sees_what() {
    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    let bob = ts.account("bob").await;
    let carol = ts.account("carol").await;
    create_project(&ts, &alice, "web", "").await;

    // Nobody else sees it, and not seeing it is NOT_FOUND.
    assert_eq!(
        get_project(&ts, &bob, "web").await.unwrap_err().code(),
        Code::NotFound
    );

    // A plain member of alice's account still sees nothing.
    let added = ts
        .members(&alice)
        .add_member(AddMemberRequest {
            person: "bob".into(),
            role: "member".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (added.account.as_str(), added.role.as_str()),
        ("alice", "member")
    );
    assert_eq!(
        get_project(&ts, &bob, "web").await.unwrap_err().code(),
        Code::NotFound
    );
    let listed = ts
        .projects(&bob)
        .list_projects(ListProjectsRequest {})
        .await
        .unwrap()
        .into_inner()
        .projects;
    assert!(listed.is_empty());

    // A member cannot manage members; the refusal names the missing role.
    let err = ts
        .members(&bob)
        .add_member(AddMemberRequest {
            account: "alice".into(),
            person: "carol".into(),
            role: "member".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("account role admin"), "{err:?}");
    let members = ts
        .members(&bob)
        .list_members(ListMembersRequest {
            account: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(
        members
            .iter()
            .map(|m| (m.person.as_str(), m.role.as_str()))
            .collect::<Vec<_>>(),
        [("alice", "owner"), ("bob", "member")]
    );
    // carol is no member: the account reads as missing.
    let err = ts
        .members(&carol)
        .list_members(ListMembersRequest {
            account: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // An outside collaborator with viewer sees the project but may not change secrets.
    let grant = ts
        .access(&alice)
        .grant_access(GrantAccessRequest {
            project: "web".into(),
            person: "carol".into(),
            role: "viewer".into(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (grant.person.as_str(), grant.role.as_str()),
        ("carol", "viewer")
    );
    assert_eq!(
        get_project(&ts, &carol, "web")
            .await
            .unwrap()
            .project
            .unwrap()
            .name,
        "web"
    );
    let err = ts
        .secrets(&carol)
        .set_secret(SetSecretRequest {
            project: "web".into(),
            name: "API_KEY".into(),
            value: "v".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("project role manager") && err.message().contains("you are viewer"),
        "{err:?}"
    );
    // A viewer may not grant either.
    let err = ts
        .access(&carol)
        .grant_access(GrantAccessRequest {
            project: "web".into(),
            person: "bob".into(),
            role: "manager".into(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Promoted to manager, carol can set secrets and list access.
    ts.access(&alice)
        .grant_access(GrantAccessRequest {
            project: "web".into(),
            person: "carol".into(),
            role: "manager".into(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap();
    ts.secrets(&carol)
        .set_secret(SetSecretRequest {
            project: "web".into(),
            name: "API_KEY".into(),
            value: "v".into(),
        })
        .await
        .unwrap();
    let grants = ts
        .access(&carol)
        .list_access(ListAccessRequest {
            project: "web".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(grants.len(), 1);

    // Revoked, carol is back to seeing nothing.
    ts.access(&alice)
        .revoke_access(RevokeAccessRequest {
            project: "web".into(),
            person: "carol".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        get_project(&ts, &carol, "web").await.unwrap_err().code(),
        Code::NotFound
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_grant_expires() {
    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    let bob = ts.account("bob").await;
    create_project(&ts, &alice, "web", "").await;
    let grant = ts
        .access(&alice)
        .grant_access(GrantAccessRequest {
            project: "web".into(),
            person: "bob".into(),
            role: "editor".into(),
            expires_in_seconds: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(grant.expires_unix_ms > 0);
    get_project(&ts, &bob, "web")
        .await
        .expect("bob sees web while the grant lasts");
    support::eventually("the grant to expire", Duration::from_secs(10), || async {
        match get_project(&ts, &bob, "web").await {
            Err(e) if e.code() == Code::NotFound => Some(()),
            _ => None,
        }
    })
    .await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_accounts_keep_an_owner() {
    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    let bob = ts.account("bob").await;
    // The last owner cannot leave.
    let err = ts
        .members(&alice)
        .remove_member(RemoveMemberRequest {
            account: String::new(),
            person: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("at least one owner"), "{err:?}");

    // An admin of alice's account manages every project of it and creates projects there,
    // but may not make owners.
    ts.members(&alice)
        .add_member(AddMemberRequest {
            account: String::new(),
            person: "bob".into(),
            role: "admin".into(),
        })
        .await
        .unwrap();
    create_project(&ts, &bob, "team-web", "alice").await;
    let info = get_project(&ts, &alice, "team-web").await.unwrap();
    assert_eq!(
        info.project.unwrap().account_id,
        alice_id(&ts, &alice).await
    );
    let err = ts
        .members(&bob)
        .add_member(AddMemberRequest {
            account: "alice".into(),
            person: "bob".into(),
            role: "owner".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("account role owner"), "{err:?}");

    // With a second owner the first may leave; bob (admin) can leave too.
    ts.members(&alice)
        .add_member(AddMemberRequest {
            account: String::new(),
            person: "bob".into(),
            role: "owner".into(),
        })
        .await
        .unwrap();
    ts.members(&alice)
        .remove_member(RemoveMemberRequest {
            account: String::new(),
            person: "alice".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        get_project(&ts, &alice, "team-web")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound,
        "alice left her account and its projects"
    );
    get_project(&ts, &bob, "team-web").await.unwrap();
    ts.stop().await;
}

async fn alice_id(ts: &TestServer, token: &str) -> String {
    ts.accounts(token)
        .who_am_i(Empty {})
        .await
        .unwrap()
        .into_inner()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowed_tokens_reach_one_project_at_most_their_creators_role() {
    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    let bob = ts.account("bob").await;
    create_project(&ts, &alice, "web", "").await;
    create_project(&ts, &alice, "api", "").await;
    ts.access(&alice)
        .grant_access(GrantAccessRequest {
            project: "web".into(),
            person: "bob".into(),
            role: "editor".into(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap();
    // Higher than the creator's own role: refused, naming the roles.
    let err = ts
        .accounts(&bob)
        .create_token(CreateTokenRequest {
            name: "ci".into(),
            project: "web".into(),
            role: "manager".into(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("at most editor"), "{err:?}");
    // A role without a project is a usage error.
    let err = ts
        .accounts(&bob)
        .create_token(CreateTokenRequest {
            role: "viewer".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Without --role the token gets the creator's role.
    let created = ts
        .accounts(&bob)
        .create_token(CreateTokenRequest {
            name: "ci".into(),
            project: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let info = created.info.unwrap();
    assert_eq!(
        (info.project.as_str(), info.role.as_str()),
        ("web", "editor")
    );

    // alice's token narrowed to web as viewer: sees web, not api; may not change secrets.
    let ci = ts
        .accounts(&alice)
        .create_token(CreateTokenRequest {
            name: "ci".into(),
            project: "web".into(),
            role: "viewer".into(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    get_project(&ts, &ci, "web").await.unwrap();
    assert_eq!(
        get_project(&ts, &ci, "api").await.unwrap_err().code(),
        Code::NotFound
    );
    let listed = ts
        .projects(&ci)
        .list_projects(ListProjectsRequest {})
        .await
        .unwrap()
        .into_inner()
        .projects;
    assert_eq!(
        listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["web"]
    );
    let err = ts
        .secrets(&ci)
        .delete_secret(DeleteSecretRequest {
            project: "web".into(),
            name: "X".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Nor make tokens of its own.
    let err = ts
        .accounts(&ci)
        .create_token(CreateTokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("not narrowed"), "{err:?}");

    // An expiring token stops working when it expires.
    let short = ts
        .accounts(&alice)
        .create_token(CreateTokenRequest {
            name: "short".into(),
            expires_in_seconds: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    get_project(&ts, &short, "web").await.unwrap();
    support::eventually("the token to expire", Duration::from_secs(10), || async {
        match get_project(&ts, &short, "web").await {
            Err(e) if e.code() == Code::Unauthenticated => Some(()),
            _ => None,
        }
    })
    .await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_tokens_open_attach_stream_ends() {
    use kortix_controlplane::store::{NewSession, Store, StoreOptions};
    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    let web = create_project(&ts, &alice, "web", "").await;
    let store = Store::open_sqlite(&ts.data_dir().join("kortix.db"), StoreOptions::default())
        .await
        .unwrap();
    // A session that never ends by itself: nothing runs it.
    let (session, _) = store
        .create_session(&NewSession {
            project_id: web.id.clone(),
            origin: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let viewer = ts
        .accounts(&alice)
        .create_token(CreateTokenRequest {
            name: "viewer".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut stream = ts
        .sessions(&viewer.token)
        .attach(AttachRequest {
            session_id: session.id.clone(),
            from_seq: 0,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    ts.accounts(&alice)
        .revoke_token(RevokeTokenRequest {
            id: viewer.info.unwrap().id,
        })
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends once its token is revoked");
    let err = ended.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    store.close().await;
    ts.stop().await;
}

/// Privileged actions land in the account's audit log with who, what and from where; only
/// the account's admins and owners read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_actions_are_audited_for_the_accounts_admins() {
    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    let bob = ts.account("bob").await;
    let carol = ts.account("carol").await;
    create_project(&ts, &alice, "web", "").await;
    ts.secrets(&alice)
        .set_secret(SetSecretRequest {
            project: "web".into(),
            name: "API_KEY".into(),
            value: "s3cret-value".into(),
        })
        .await
        .unwrap();
    ts.access(&alice)
        .grant_access(GrantAccessRequest {
            project: "web".into(),
            person: "carol".into(),
            role: "viewer".into(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap();
    ts.members(&alice)
        .add_member(AddMemberRequest {
            person: "bob".into(),
            role: "member".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ci = ts
        .accounts(&alice)
        .create_token(CreateTokenRequest {
            name: "ci".into(),
            project: "web".into(),
            role: "editor".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ci_id = ci.info.unwrap().id;
    ts.accounts(&alice)
        .revoke_token(RevokeTokenRequest { id: ci_id.clone() })
        .await
        .unwrap();

    let log = ts
        .audit(&alice)
        .list_audit(ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(log.account, "alice");
    let actions: Vec<(&str, &str, &str)> = log
        .events
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("token.revoke", "ci", ci_id.as_str()),
            ("token.create", "ci", "project web as editor"),
            ("member.set", "bob", "member"),
            ("access.grant", "carol", "viewer"),
            ("secret.set", "API_KEY", ""),
            ("project.create", "web", ""),
            // By the server admin, in the new person's personal account.
            ("person.create", "alice", ""),
        ]
    );
    assert_ne!(log.events[6].actor_name, "alice");
    for e in &log.events[..6] {
        assert_eq!(e.actor_name, "alice", "{e:?}");
        assert!(e.actor.starts_with("person:"), "{e:?}");
        assert!(e.from.starts_with("127.0.0.1:"), "from where: {e:?}");
        assert!(!e.token_id.is_empty(), "{e:?}");
        assert!(e.at_unix_ms > 0);
    }
    assert!(
        !format!("{log:?}").contains("s3cret-value"),
        "no secret value in the log"
    );

    // One project's events, and paging by id.
    let web = ts
        .audit(&alice)
        .list_audit(ListAuditRequest {
            project: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        web.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["access.grant", "secret.set", "project.create"]
    );
    let page = ts
        .audit(&alice)
        .list_audit(ListAuditRequest {
            before_id: log.events[1].id,
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        page.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["member.set", "access.grant"]
    );

    // A plain member is refused, naming the role; someone outside the account sees nothing.
    let refused = ts
        .audit(&bob)
        .list_audit(ListAuditRequest {
            account: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("admin"), "{}", refused.message());
    let hidden = ts
        .audit(&carol)
        .list_audit(ListAuditRequest {
            account: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    // Bob's own account has its own log: creating him is in it.
    let bobs = ts
        .audit(&bob)
        .list_audit(ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(bobs.len(), 1);
    assert_eq!(
        (bobs[0].action.as_str(), bobs[0].target.as_str()),
        ("person.create", "bob")
    );

    // The CLI shows the same log.
    let out = std::process::Command::new(support::built_binary("kortix"))
        .args(["--json", "audit", "ls", "--limit", "2"])
        .env("KORTIX_URL", ts.url())
        .env("KORTIX_TOKEN", &alice)
        .env("NO_COLOR", "1")
        .output()
        .expect("run kortix");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = json.as_array().expect("a JSON array");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["action"], "token.revoke");
    assert_eq!(listed[0]["actor_name"], "alice");
    ts.stop().await;
}

/// Revoking a token ends a git request that is still running on it: here a fetch whose
/// request body never finishes, which the server would otherwise wait out for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_ends_its_git_request_in_flight() {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    create_project(&ts, &alice, "web", "").await;
    let minted = ts
        .accounts(&alice)
        .create_token(CreateTokenRequest {
            name: "git".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let addr = ts.url().strip_prefix("http://").unwrap().to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x:{}", minted.token));
    let head = format!(
        "POST /git/web.git/git-upload-pack HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Basic {basic}\r\n\
         Content-Type: application/x-git-upload-pack-request\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // The start of a want line, and then nothing: the request is under way.
    conn.write_all(b"4\r\n0032\r\n").await.unwrap();
    conn.flush().await.unwrap();
    // The server has authorized it once its backend runs; give it that long.
    support::eventually(
        "the git backend running",
        Duration::from_secs(20),
        || async {
            let mut probe = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(200), conn.peek(&mut probe)).await {
                // Nothing to read yet, or the CGI head: either way it is running.
                Err(_) | Ok(Ok(1..)) => Some(()),
                Ok(other) => panic!("the request ended before the revocation: {other:?}"),
            }
        },
    )
    .await;

    ts.accounts(&alice)
        .revoke_token(RevokeTokenRequest {
            id: minted.info.unwrap().id,
        })
        .await
        .unwrap();
    // Ended within seconds: the connection closes, or the request is answered with the
    // backend's failure.
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&seen).contains(" 502 ") {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the git request outlived its token: {}",
        String::from_utf8_lossy(&seen)
    );
    ts.stop().await;
}
