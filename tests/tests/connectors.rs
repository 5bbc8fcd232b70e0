//! Connections end to end, everything real: the control plane (SQLite and PostgreSQL), the
//! `kortix-agent` binary with its MCP server, pinned OpenCode driven by the scripted model,
//! an HTTP API with an OpenAPI document (axum) and an MCP server over streamable HTTP
//! (rmcp), all on 127.0.0.1.
//!
//! The model lists the connectors, calls a read tool (runs; the upstream saw the credential;
//! the sandbox's environment and the records never hold it), a write tool (waits for
//! approval; approved, the identical call runs once; changed arguments ask again), a blocked
//! tool (not listed; a direct call is refused), an upstream that hangs (a timeout, a clear
//! error, and the session goes on) and a tool of the MCP server.
//!
//! An MCP connector over the older HTTP+SSE transport against the official TypeScript SDK's
//! server (`tests/mcp-sse-server/server.mjs`, run with Node.js): its tools and their risks, a
//! read with the credential, a write approved and run once, a blocked tool, and servers that
//! never name their endpoint or do not listen at all.
//!
//! GraphQL connectors against a real GraphQL server (async-graphql), one with its SDL in the
//! repository and one built by introspection: a query runs, GraphQL errors are tool errors,
//! a mutation waits for approval and runs once approved.

#[path = "connectors/library.rs"]
mod library;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use kortix_proto::v1::record::Body;
use kortix_proto::v1::*;
use kortix_tests::mcp_sdk::McpSseServer;
use kortix_tests::{ScriptedModel, Turn};
use prost::Message;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, InitializeResult,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use support::{TestServer, eventually};

const CREDENTIAL: &str = "s3cret-pets-token-7781";

/// What the pets API saw.
#[derive(Default)]
struct Seen {
    authorizations: Vec<String>,
    added: Vec<Value>,
    deleted: usize,
}

type Shared = Arc<Mutex<Seen>>;

fn openapi(port: u16) -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "pets", "version": "1"},
        "servers": [{"url": format!("http://127.0.0.1:{port}/api")}],
        "paths": {
            "/pets/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": {"operationId": "getPet", "summary": "One pet"},
                "delete": {"operationId": "deletePet", "summary": "Remove a pet"}
            },
            "/pets": {
                "post": {"operationId": "addPet", "summary": "Add a pet",
                         "requestBody": {"required": true, "content": {"application/json":
                             {"schema": {"type": "object", "properties": {"name": {"type": "string"}}}}}}}
            },
            "/slow": {"get": {"operationId": "slowReport", "summary": "Never answers"}}
        }
    })
}

/// The pets API on 127.0.0.1:0; its OpenAPI document at /openapi.json.
async fn pets_api() -> (u16, Shared) {
    let seen: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let note_auth = |seen: &Shared, headers: &HeaderMap| {
        let auth = library::authorization(headers);
        seen.lock().unwrap().authorizations.push(auth);
    };
    let app =
        axum::Router::new()
            .route(
                "/openapi.json",
                axum::routing::get(move || async move { Json(openapi(port)) }),
            )
            .route(
                "/api/pets/{id}",
                axum::routing::get(
                    move |State(seen): State<Shared>,
                          headers: HeaderMap,
                          Path(id): Path<String>| async move {
                        note_auth(&seen, &headers);
                        Json(json!({"id": id, "name": "rex"}))
                    },
                )
                .delete(move |State(seen): State<Shared>| async move {
                    seen.lock().unwrap().deleted += 1;
                    Json(json!({}))
                }),
            )
            .route(
                "/api/pets",
                axum::routing::post(
                    move |State(seen): State<Shared>,
                          headers: HeaderMap,
                          Json(body): Json<Value>| async move {
                        note_auth(&seen, &headers);
                        seen.lock().unwrap().added.push(body.clone());
                        Json(json!({"added": body}))
                    },
                ),
            )
            .route(
                "/api/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "never"
                }),
            )
            .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

/// A real MCP server (rmcp) with a read-only `lookup` tool and a `launch` tool.
#[derive(Clone)]
struct Upstream;

impl ServerHandler for Upstream {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = |v: Value| Arc::new(v.as_object().unwrap().clone());
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "lookup",
                "Looks a word up",
                schema(json!({"type": "object", "properties": {"word": {"type": "string"}}})),
            )
            .annotate(ToolAnnotations::new().read_only(true)),
            Tool::new(
                "launch",
                "Launches something",
                schema(json!({"type": "object"})),
            ),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let word = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("word"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(format!("definition of {word}: a small test word")),
        ])))
    }
}

async fn mcp_server() -> u16 {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpService, session::local::LocalSessionManager,
    };
    let service = StreamableHttpService::new(
        || Ok(Upstream),
        LocalSessionManager::default().into(),
        Default::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn manifest(pets: u16, mcp: u16) -> String {
    format!(
        r#"[[connectors]]
slug = "pets"
provider = "openapi"
spec = "http://127.0.0.1:{pets}/openapi.json"
credential = "shared"

  [connectors.auth]
  type = "bearer"

  [[connectors.policies]]
  match = "delete*"
  action = "block"

[[connectors]]
slug = "words"
provider = "mcp"
url = "http://127.0.0.1:{mcp}/mcp"

[[connectors]]
slug = "chat"
provider = "pipedream"
app = "slack"
"#
    )
}

fn call(connector: &str, tool: &str, args: Value) -> Turn {
    Turn::tool(
        "kortix_call",
        json!({"connector": connector, "tool": tool, "args": args}),
    )
}

fn connector_calls(records: &[Record]) -> Vec<ConnectorCallRecord> {
    records
        .iter()
        .filter_map(|r| match &r.body {
            Some(Body::ConnectorCall(c)) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

async fn records_of(ts: &TestServer, token: &str, id: &str) -> Vec<Record> {
    ts.stored_records(token, id, 0).await
}

/// Waits until the session's records hold `n` connector calls; returns them. On timeout it
/// says what there was.
async fn wait_calls(
    ts: &TestServer,
    token: &str,
    id: &str,
    n: usize,
    model: &ScriptedModel,
) -> Vec<ConnectorCallRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let s = ts.session(token, id).await;
        assert_ne!(
            s.status,
            SessionStatus::Failed as i32,
            "session failed: {}",
            s.failure_reason
        );
        let records = records_of(ts, token, id).await;
        let calls = connector_calls(&records);
        if calls.len() >= n {
            return calls;
        }
        if tokio::time::Instant::now() > deadline {
            let tail: Vec<String> = records
                .iter()
                .filter(|r| match &r.body {
                    Some(Body::Event(e)) => !e.r#type.starts_with("message.part.delta"),
                    _ => true,
                })
                .rev()
                .take(60)
                .map(|r| {
                    format!("{} {:?}", r.seq, r.body)
                        .chars()
                        .take(700)
                        .collect()
                })
                .collect();
            panic!(
                "timed out waiting for {n} connector calls; have {:?}; model calls {}, turns left {}, tool results {:?}; last records:\n{}",
                calls
                    .iter()
                    .map(|c| (&c.tool, &c.status, &c.error))
                    .collect::<Vec<_>>(),
                model.calls(),
                model.remaining_turns(),
                tool_results(model),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the session is idle after its last connector call: a prompt that arrives
/// while OpenCode is busy joins the running turn instead of starting the next.
async fn idle_after_last_call(ts: &TestServer, token: &str, id: &str) {
    let asked_at = records_of(ts, token, id)
        .await
        .iter()
        .filter(|r| matches!(r.body, Some(Body::ConnectorCall(_))))
        .map(|r| r.seq)
        .max()
        .unwrap();
    eventually(
        "the session idle after its last connector call",
        Duration::from_secs(120),
        || async {
            records_of(ts, token, id)
                .await
                .iter()
                .any(|r| {
                    r.seq > asked_at
                        && matches!(&r.body, Some(Body::Event(e)) if e.r#type == "session.idle")
                })
                .then_some(())
        },
    )
    .await;
}

/// Waits until the model was sent at least `n` distinct tool results; returns them.
async fn tool_results_at_least(model: &ScriptedModel, n: usize) -> Vec<String> {
    eventually(
        "the model's tool results",
        Duration::from_secs(60),
        || async {
            let results = tool_results(model);
            (results.len() >= n).then_some(results)
        },
    )
    .await
}

/// The project's approvals in `state` ("" for all), newest first.
async fn approvals_in(ts: &TestServer, token: &str, state: &str) -> Vec<ApprovalInfo> {
    ts.approvals(token)
        .list_approvals(ListApprovalsRequest {
            project: "app".into(),
            state: state.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .approvals
}

/// Stops the session, then the control plane.
async fn stop(ts: TestServer, token: &str, id: &str) {
    ts.sessions(token)
        .stop_session(StopSessionRequest { id: id.to_owned() })
        .await
        .unwrap();
    ts.stop().await;
}

/// The text of the tool results the model was sent (OpenAI `tool` messages).
fn tool_results(model: &ScriptedModel) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in model.requests() {
        for m in r.body["messages"].as_array().into_iter().flatten() {
            if m["role"] == "tool" {
                let text = match &m["content"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if !out.contains(&text) {
                    out.push(text);
                }
            }
        }
    }
    out
}

async fn connections_end_to_end(database_url: Option<String>) {
    let (pets_port, seen) = pets_api().await;
    let mcp_port = mcp_server().await;
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let ts = TestServer::start_with(move |c| {
        support::use_real_agent(c);
        c.database_url = database_url;
        c.connectors.call_timeout = Duration::from_secs(3);
    })
    .await;
    let token = ts.account("alice").await;
    let _work = support::app_with_model_config(&ts, &token, model.port(), |config| {
        let root = config.ancestors().nth(3).unwrap();
        std::fs::write(root.join("kortix.toml"), manifest(pets_port, mcp_port)).unwrap();
    })
    .await;

    // What people see: tools, policies, credential state; pipedream as unavailable.
    let connectors = ts
        .connectors(&token)
        .list_connectors(ListConnectorsRequest {
            project: "app".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .connectors;
    let by = |slug: &str| connectors.iter().find(|c| c.slug == slug).unwrap().clone();
    assert_eq!(
        (by("pets").tool_count, by("pets").credential_state.as_str()),
        (4, "missing")
    );
    assert_eq!(by("words").tool_count, 2);
    assert!(
        by("chat").unavailable.contains("Pipedream"),
        "{:?}",
        by("chat")
    );
    let tools = ts
        .connectors(&token)
        .list_connector_tools(ListConnectorToolsRequest {
            project: "app".into(),
            connector: "pets".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tools;
    let policy = |name: &str| {
        let t = tools.iter().find(|t| t.name == name).unwrap();
        (t.risk.clone(), t.policy.clone())
    };
    assert_eq!(policy("getPet"), ("read".into(), "always_run".into()));
    assert_eq!(
        policy("addPet"),
        ("write".into(), "require_approval".into())
    );
    assert_eq!(policy("deletePet"), ("destructive".into(), "block".into()));
    let refused = ts
        .connectors(&token)
        .set_connector_credential(SetConnectorCredentialRequest {
            project: "app".into(),
            connector: "pets".into(),
            value: CREDENTIAL.into(),
            mine: true,
        })
        .await
        .unwrap_err();
    assert!(refused.message().contains("shared"), "{refused:?}");
    let set = ts
        .connectors(&token)
        .set_connector_credential(SetConnectorCredentialRequest {
            project: "app".into(),
            connector: "pets".into(),
            value: CREDENTIAL.into(),
            mine: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.credential_state, "set");

    // The session: list, read, write (waits), then stop and wait.
    let session = ts
        .sessions(&token)
        .start_session(StartSessionRequest {
            project: "app".into(),
            prompt: "Use the pets connector.".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ws = ts.workspace(&session.id);
    let env_dump = ws.join("env.txt");
    model.push([
        Turn::tool("kortix_connectors", json!({})),
        call("pets", "getPet", json!({"id": "7"})),
        call("pets", "addPet", json!({"body": {"name": "fido"}})),
        Turn::bash(format!("env > {}", env_dump.display())),
        Turn::text("The call waits for approval."),
    ]);
    let calls = wait_calls(&ts, &token, &session.id, 2, &model).await;
    assert_eq!(
        (
            calls[0].tool.as_str(),
            calls[0].status.as_str(),
            calls[0].upstream_status
        ),
        ("getPet", "ok", 200)
    );
    assert_eq!(
        (calls[1].tool.as_str(), calls[1].status.as_str()),
        ("addPet", "pending_approval")
    );
    assert_eq!(
        seen.lock().unwrap().authorizations,
        [format!("Bearer {CREDENTIAL}")],
        "the upstream saw the credential, once"
    );
    assert!(
        seen.lock().unwrap().added.is_empty(),
        "not run before approval"
    );
    let listing = tool_results_at_least(&model, 3).await;
    assert!(
        listing[0].contains("getPet") && listing[0].contains("words"),
        "{listing:?}"
    );
    assert!(
        !listing[0].contains("deletePet"),
        "blocked tools are not listed: {}",
        listing[0]
    );
    assert!(listing[1].contains("rex"), "{listing:?}");
    assert!(listing[2].contains("approval"), "{listing:?}");

    // Approve once the model has finished its turn: a prompt that arrives while OpenCode is
    // busy joins the running turn instead of starting the next.
    idle_after_last_call(&ts, &token, &session.id).await;
    let pending = approvals_in(&ts, &token, "pending").await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].digest, calls[1].digest);
    assert_eq!(pending[0].session_id, session.id);

    // Approved: the identical call runs once; new arguments ask again; a blocked tool is
    // refused; a hanging upstream times out; the MCP server's tool answers.
    model.push([
        call("pets", "addPet", json!({"body": {"name": "fido"}})),
        call("pets", "addPet", json!({"body": {"name": "fido"}})),
        call("pets", "addPet", json!({"body": {"name": "other"}})),
        call("pets", "deletePet", json!({"id": "7"})),
        call("pets", "slowReport", json!({})),
        call("words", "lookup", json!({"word": "kortix"})),
        Turn::text("Done."),
    ]);
    let approved = ts
        .approvals(&token)
        .approve_call(DecideApprovalRequest {
            id: pending[0].id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.state, "approved");
    let again = ts
        .approvals(&token)
        .approve_call(DecideApprovalRequest {
            id: pending[0].id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");

    let calls = wait_calls(&ts, &token, &session.id, 8, &model).await;
    let status: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.tool.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(
        status,
        [
            ("getPet", "ok"),
            ("addPet", "pending_approval"),
            ("addPet", "ok"),
            ("addPet", "pending_approval"),
            ("addPet", "pending_approval"),
            ("deletePet", "denied"),
            ("slowReport", "error"),
            ("lookup", "ok"),
        ]
    );
    assert_eq!(calls[2].approval_id, pending[0].id);
    assert_ne!(
        calls[4].digest, calls[2].digest,
        "changed arguments, another digest"
    );
    assert!(
        calls[6].error.contains("did not answer within 3s"),
        "{:?}",
        calls[6]
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.added, [json!({"name": "fido"})], "ran exactly once");
        assert_eq!(
            seen.deleted, 0,
            "the blocked tool never reached the upstream"
        );
    }
    let results = eventually("the closing turn", Duration::from_secs(60), || async {
        let results = tool_results(&model);
        results
            .iter()
            .any(|r| r.contains("definition of kortix"))
            .then_some(results)
    })
    .await;
    assert!(results.iter().any(|r| r.contains("blocked")), "{results:?}");

    // The log: every call, newest first; approvals in their final states.
    let logged = ts
        .connectors(&token)
        .list_connector_calls(ListConnectorCallsRequest {
            project: "app".into(),
            session_id: session.id.clone(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .calls;
    assert_eq!(logged.len(), 8);
    assert_eq!(logged[0].tool, "lookup");
    assert_eq!(logged[7].tool, "getPet");
    let approvals = approvals_in(&ts, &token, "").await;
    // Newest first: the changed call's, the repeat after the approved one ran, the used one.
    let states: Vec<(&str, &str)> = approvals
        .iter()
        .map(|a| (a.state.as_str(), a.args_preview.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("pending", r#"{"body":{"name":"other"}}"#),
            ("pending", r#"{"body":{"name":"fido"}}"#),
            ("used", r#"{"body":{"name":"fido"}}"#),
        ],
        "{approvals:?}"
    );

    // The credential is nowhere in the sandbox: not in OpenCode's environment, not in the
    // records (the MCP server's registration is).
    let env = std::fs::read_to_string(&env_dump).unwrap();
    assert!(
        !env.contains(CREDENTIAL),
        "the sandbox's environment holds the credential"
    );
    assert!(env.contains("OPENCODE_CONFIG_CONTENT"), "{env}");
    let records = records_of(&ts, &token, &session.id).await;
    assert!(
        records
            .iter()
            .any(|r| matches!(r.body, Some(Body::Approval(_))))
    );
    for r in &records {
        let bytes = r.encode_to_vec();
        assert!(
            !bytes
                .windows(CREDENTIAL.len())
                .any(|w| w == CREDENTIAL.as_bytes()),
            "record {} holds the credential",
            r.seq
        );
    }

    stop(ts, &token, &session.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_on_sqlite() {
    connections_end_to_end(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_on_postgres() {
    let Some(db) = kortix_tests::pg::Database::create().await else {
        return;
    };
    connections_end_to_end(Some(db.url.clone())).await;
    db.drop_now().await;
}

const NOTES_CREDENTIAL: &str = "s3cret-notes-token-4410";

fn sse_manifest(notes: &McpSseServer, nothing_listening: u16) -> String {
    format!(
        r#"[[connectors]]
slug = "notes"
provider = "mcp"
transport = "sse"
url = "{sse}"
credential = "shared"

  [connectors.auth]
  type = "bearer"

  [[connectors.policies]]
  match = "purge_*"
  action = "block"

[[connectors]]
slug = "mute"
provider = "mcp"
transport = "sse"
url = "{mute}"

[[connectors]]
slug = "gone"
provider = "mcp"
transport = "sse"
url = "http://127.0.0.1:{nothing_listening}/sse"
"#,
        sse = notes.url("/sse"),
        mute = notes.url("/mute"),
    )
}

/// What the SDK's server saw: the Authorization headers of its MCP requests and the tool
/// calls it ran.
async fn sse_seen(notes: &McpSseServer) -> (Vec<String>, Vec<Value>) {
    let body = reqwest::get(notes.url("/seen"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let seen: Value = serde_json::from_str(&body).unwrap();
    let authorizations = seen["authorizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    (authorizations, seen["calls"].as_array().unwrap().clone())
}

/// An `mcp` connector over the older HTTP+SSE transport against the official TypeScript
/// SDK's server (`SSEServerTransport`): its tools with their risks, a read that runs with the
/// credential, a write that waits for approval and runs once approved, a tool the policy
/// blocks; and two broken servers (a stream that never names its endpoint, nothing
/// listening) give clear errors while the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_sse_against_the_typescript_sdk() {
    if let Some(why) = kortix_tests::mcp_sdk::node_unavailable() {
        kortix_tests::require::unavailable("Node.js and npm", &why);
        return;
    }
    let notes = McpSseServer::start(NOTES_CREDENTIAL).unwrap();
    let nothing_listening = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let ts = TestServer::start_with(|c| {
        support::use_real_agent(c);
        c.connectors.call_timeout = Duration::from_secs(3);
    })
    .await;
    let token = ts.account("alice").await;
    let manifest = sse_manifest(&notes, nothing_listening);
    let _work = support::app_with_model_config(&ts, &token, model.port(), |config| {
        let root = config.ancestors().nth(3).unwrap();
        std::fs::write(root.join("kortix.toml"), manifest).unwrap();
    })
    .await;
    let set = ts
        .connectors(&token)
        .set_connector_credential(SetConnectorCredentialRequest {
            project: "app".into(),
            connector: "notes".into(),
            value: NOTES_CREDENTIAL.into(),
            mine: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.credential_state, "set");

    // The catalog: the SDK server's tools with the risks of their annotations; the broken
    // servers unavailable, each with its reason.
    let connectors = ts
        .connectors(&token)
        .list_connectors(ListConnectorsRequest {
            project: "app".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .connectors;
    let by = |slug: &str| connectors.iter().find(|c| c.slug == slug).unwrap().clone();
    assert_eq!(
        (by("notes").tool_count, by("notes").unavailable.as_str()),
        (3, "")
    );
    assert!(
        by("mute").unavailable.contains("no `endpoint` event"),
        "{:?}",
        by("mute")
    );
    assert!(
        by("gone").unavailable.contains("Connection refused"),
        "{:?}",
        by("gone")
    );
    let tools = ts
        .connectors(&token)
        .list_connector_tools(ListConnectorToolsRequest {
            project: "app".into(),
            connector: "notes".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tools;
    let summary: Vec<(&str, &str, &str)> = tools
        .iter()
        .map(|t| (t.name.as_str(), t.risk.as_str(), t.policy.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("search_notes", "read", "always_run"),
            ("create_note", "write", "require_approval"),
            ("purge_notes", "destructive", "block"),
        ]
    );
    let schema: Value = serde_json::from_str(&tools[0].input_schema_json).unwrap();
    assert_eq!(schema["required"], json!(["query"]), "{schema}");

    // The session: list, read (runs), write (waits), then the broken servers.
    let session = ts
        .sessions(&token)
        .start_session(StartSessionRequest {
            project: "app".into(),
            prompt: "Use the notes connector.".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    model.push([
        Turn::tool("kortix_connectors", json!({})),
        call("notes", "search_notes", json!({"query": "eggs"})),
        call("notes", "create_note", json!({"title": "buy milk"})),
        call("mute", "anything", json!({})),
        call("gone", "anything", json!({})),
        Turn::text("The note waits for approval."),
    ]);
    let calls = wait_calls(&ts, &token, &session.id, 4, &model).await;
    let status: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.tool.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(
        status,
        [
            ("search_notes", "ok"),
            ("create_note", "pending_approval"),
            ("anything", "error"),
            ("anything", "error"),
        ]
    );
    assert!(
        calls[2].error.contains("no `endpoint` event"),
        "{:?}",
        calls[2]
    );
    assert!(
        calls[3].error.contains("Connection refused"),
        "{:?}",
        calls[3]
    );
    let (authorizations, ran) = sse_seen(&notes).await;
    assert!(!authorizations.is_empty());
    assert!(
        authorizations
            .iter()
            .all(|a| *a == format!("Bearer {NOTES_CREDENTIAL}")),
        "every request to the upstream carried the credential: {authorizations:?}"
    );
    assert_eq!(
        ran,
        [json!({"tool": "search_notes", "args": {"query": "eggs"}})],
        "the read ran; the write waits"
    );
    let results = tool_results_at_least(&model, 5).await;
    assert!(
        results[0].contains("search_notes")
            && results[0].contains("create_note")
            && !results[0].contains("purge_notes"),
        "blocked tools are not listed: {}",
        results[0]
    );
    assert!(
        results[1].contains(r#"1 note matches \"eggs\""#)
            || results[1].contains(r#"1 note matches "eggs""#),
        "{results:?}"
    );
    assert!(results[2].contains("approval"), "{results:?}");
    assert!(results[3].contains("no `endpoint` event"), "{results:?}");
    assert!(results[4].contains("Connection refused"), "{results:?}");

    // Approved: the identical call runs, once; the blocked tool never reaches the server.
    idle_after_last_call(&ts, &token, &session.id).await;
    let pending = approvals_in(&ts, &token, "pending").await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].digest, calls[1].digest);
    model.push([
        call("notes", "create_note", json!({"title": "buy milk"})),
        call("notes", "purge_notes", json!({})),
        Turn::text("Created."),
    ]);
    ts.approvals(&token)
        .approve_call(DecideApprovalRequest {
            id: pending[0].id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let calls = wait_calls(&ts, &token, &session.id, 6, &model).await;
    let status: Vec<(&str, &str)> = calls[4..]
        .iter()
        .map(|c| (c.tool.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(status, [("create_note", "ok"), ("purge_notes", "denied")]);
    assert_eq!(calls[4].approval_id, pending[0].id);
    eventually(
        "the created note's result",
        Duration::from_secs(60),
        || async {
            tool_results(&model)
                .iter()
                .any(|r| r.contains("created note") && r.contains("(#1)"))
                .then_some(())
        },
    )
    .await;
    let (_, ran) = sse_seen(&notes).await;
    assert_eq!(
        ran,
        [
            json!({"tool": "search_notes", "args": {"query": "eggs"}}),
            json!({"tool": "create_note", "args": {"title": "buy milk"}}),
        ],
        "the approved call ran once; the blocked one never"
    );

    stop(ts, &token, &session.id).await;
}

fn graphql_manifest(port: u16) -> String {
    format!(
        r#"[[connectors]]
slug = "library"
provider = "graphql"
endpoint = "http://127.0.0.1:{port}/graphql"
spec = "library.graphql"
credential = "shared"

  [connectors.auth]
  type = "bearer"

[[connectors]]
slug = "shelf"
provider = "graphql"
endpoint = "http://127.0.0.1:{port}/graphql"

# Fired by hand; its schedule (1 January, 03:00) never comes up during a test.
[[triggers]]
slug = "nightly"
type = "cron"
cron = "0 0 3 1 1 *"
prompt = "Add tonight's book."
"#
    )
}

/// A control plane whose project "app" has the library's connectors and a trigger; the
/// scripted model, the library's port and what it saw.
async fn library_project(
    adjust: impl FnOnce(&mut kortix_controlplane::config::ServerConfig),
) -> (
    TestServer,
    String,
    ScriptedModel,
    library::Shared,
    tempfile::TempDir,
) {
    let (port, seen) = library::start().await;
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let ts = TestServer::start_with(move |c| {
        support::use_real_agent(c);
        adjust(c);
    })
    .await;
    let token = ts.account("alice").await;
    let work = support::app_with_model_config(&ts, &token, model.port(), |config| {
        let root = config.ancestors().nth(3).unwrap();
        std::fs::write(root.join("kortix.toml"), graphql_manifest(port)).unwrap();
        std::fs::write(root.join("library.graphql"), library::sdl()).unwrap();
    })
    .await;
    (ts, token, model, seen, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_connectors() {
    let (ts, token, model, seen, _work) = library_project(|_| {}).await;

    // Both ways of learning the schema give the same tools: queries read, mutations write.
    for slug in ["library", "shelf"] {
        let tools = ts
            .connectors(&token)
            .list_connector_tools(ListConnectorToolsRequest {
                project: "app".into(),
                connector: slug.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .tools;
        let summary: Vec<(&str, &str, &str)> = tools
            .iter()
            .map(|t| (t.name.as_str(), t.risk.as_str(), t.policy.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("book", "read", "always_run"),
                ("books", "read", "always_run"),
                ("addBook", "write", "require_approval"),
            ],
            "{slug}"
        );
        let schema: Value = serde_json::from_str(&tools[2].input_schema_json).unwrap();
        assert_eq!(schema["required"], json!(["title"]), "{slug}: {schema}");
        assert_eq!(
            schema["properties"]["genre"]["enum"],
            json!(["FICTION", "HISTORY"])
        );
    }
    ts.connectors(&token)
        .set_connector_credential(SetConnectorCredentialRequest {
            project: "app".into(),
            connector: "library".into(),
            value: CREDENTIAL.into(),
            mine: false,
        })
        .await
        .unwrap();
    let introspections = seen.lock().unwrap().authorizations.len();

    let session = ts
        .sessions(&token)
        .start_session(StartSessionRequest {
            project: "app".into(),
            prompt: "Use the library.".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    model.push([
        call("library", "book", json!({"id": "1"})),
        call("shelf", "books", json!({})),
        call("shelf", "book", json!({"id": "404"})),
        call(
            "library",
            "addBook",
            json!({"title": "Emma", "genre": "FICTION"}),
        ),
        Turn::text("The mutation waits for approval."),
    ]);
    let calls = wait_calls(&ts, &token, &session.id, 4, &model).await;
    let status: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.tool.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(
        status,
        [
            ("book", "ok"),
            ("books", "ok"),
            ("book", "error"),
            ("addBook", "pending_approval"),
        ]
    );
    assert!(calls[2].error.contains("no book 404"), "{:?}", calls[2]);
    assert_eq!(
        seen.lock().unwrap().authorizations[introspections..],
        [format!("Bearer {CREDENTIAL}"), String::new(), String::new()],
        "the SDL connector's calls carry its credential, the other's none"
    );
    assert!(
        seen.lock().unwrap().added.is_empty(),
        "not run before approval"
    );
    let results = tool_results_at_least(&model, 4).await;
    assert!(
        results[0].contains("Dune") && results[0].contains("Frank Herbert"),
        "the selection reaches nested objects: {results:?}"
    );
    assert!(results[1].contains("Dune"), "{results:?}");
    assert!(results[2].contains("no book 404"), "{results:?}");
    assert!(results[3].contains("approval"), "{results:?}");

    // Approved: the identical mutation runs, once.
    idle_after_last_call(&ts, &token, &session.id).await;
    let pending = approvals_in(&ts, &token, "pending").await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    model.push([
        call(
            "library",
            "addBook",
            json!({"title": "Emma", "genre": "FICTION"}),
        ),
        Turn::text("Added."),
    ]);
    ts.approvals(&token)
        .approve_call(DecideApprovalRequest {
            id: pending[0].id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let calls = wait_calls(&ts, &token, &session.id, 5, &model).await;
    assert_eq!(
        (calls[4].tool.as_str(), calls[4].status.as_str()),
        ("addBook", "ok")
    );
    assert_eq!(calls[4].approval_id, pending[0].id);
    assert_eq!(seen.lock().unwrap().added, ["Emma"]);
    eventually("the mutation's result", Duration::from_secs(60), || async {
        tool_results(&model)
            .iter()
            .any(|r| r.contains("Emma") && r.contains("FICTION"))
            .then_some(())
    })
    .await;

    stop(ts, &token, &session.id).await;
}

/// A trigger's session has nobody to ask: its approval expires as denied, the call log says
/// so, the session is told, and the mutation never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattended_approvals_expire_as_denied() {
    let (ts, token, model, seen, _work) = library_project(|c| {
        c.connectors.unattended_approval_ttl = Duration::from_secs(1);
    })
    .await;
    model.push([
        call("shelf", "addBook", json!({"title": "Night"})),
        Turn::text("The book waits for approval."),
        Turn::text("Understood: it was denied."),
    ]);
    let firing = ts
        .triggers(&token)
        .fire_trigger(FireTriggerRequest {
            project: "app".into(),
            slug: "nightly".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(firing.outcome, "started", "{firing:?}");
    let id = firing.session_id;
    let calls = wait_calls(&ts, &token, &id, 1, &model).await;
    assert_eq!(
        (calls[0].tool.as_str(), calls[0].status.as_str()),
        ("addBook", "pending_approval")
    );

    let logged = eventually(
        "the expired approval in the call log",
        Duration::from_secs(90),
        || async {
            let calls = ts
                .connectors(&token)
                .list_connector_calls(ListConnectorCallsRequest {
                    project: "app".into(),
                    session_id: id.clone(),
                    limit: 0,
                })
                .await
                .unwrap()
                .into_inner()
                .calls;
            calls.iter().any(|c| c.status == "denied").then_some(calls)
        },
    )
    .await;
    let summary: Vec<(&str, &str)> = logged
        .iter()
        .map(|c| (c.tool.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(
        summary,
        [("addBook", "denied"), ("addBook", "pending_approval")]
    );
    assert_eq!(logged[0].digest, calls[0].digest);
    assert!(logged[0].error.contains("expired"), "{:?}", logged[0]);
    let approvals = approvals_in(&ts, &token, "").await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0].state, "denied");
    assert!(approvals[0].reason.contains("expired"), "{approvals:?}");

    // The session hears it as a prompt, in the model's next request.
    eventually(
        "the session told of the denial",
        Duration::from_secs(90),
        || async {
            model
                .requests()
                .iter()
                .any(|r| r.body.to_string().contains("nobody approved it in time"))
                .then_some(())
        },
    )
    .await;
    assert!(
        seen.lock().unwrap().added.is_empty(),
        "the mutation never ran"
    );

    stop(ts, &token, &id).await;
}

/// The broker's memory of certificates, sessions and credentials (`store::agent_cache`)
/// never answers with what a write changed: a credential set between two calls is on the
/// very next one, and once the session is stopped (its certificate revoked) the very next
/// call is refused — each after calls that had the old state remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_takes_effect_on_the_next_call() {
    use kortix_bench::sim_agent;
    use kortix_controlplane::sandbox::external::BootstrapFile;

    let (pets_port, seen) = pets_api().await;
    let ts = TestServer::start_with(|c| {
        c.sandbox = kortix_controlplane::config::SandboxKind::External;
        c.timings.stop_grace = Duration::from_secs(1);
    })
    .await;
    let token = ts.account("alice").await;
    let _work = support::app_with_model_config(&ts, &token, 1, |config| {
        let root = config.ancestors().nth(3).unwrap();
        let manifest = format!(
            "[[connectors]]\nslug = \"pets\"\nprovider = \"openapi\"\n\
             spec = \"http://127.0.0.1:{pets_port}/openapi.json\"\ncredential = \"shared\"\n\n\
             [connectors.auth]\ntype = \"bearer\"\n"
        );
        std::fs::write(root.join("kortix.toml"), manifest).unwrap();
    })
    .await;
    let set = |value: &'static str| {
        let mut client = ts.connectors(&token);
        async move {
            client
                .set_connector_credential(SetConnectorCredentialRequest {
                    project: "app".into(),
                    connector: "pets".into(),
                    value: value.into(),
                    mine: false,
                })
                .await
                .unwrap();
        }
    };
    set("first-token").await;
    let session = ts.start_session(&token, "app", "").await;
    let bootstrap: BootstrapFile = serde_json::from_slice(
        &std::fs::read(
            ts.data_dir()
                .join("bootstrap")
                .join(format!("{}.json", session.id)),
        )
        .unwrap(),
    )
    .unwrap();
    let agent = sim_agent::enroll(
        &bootstrap.env["KORTIX_CONTROL_PLANE"],
        &bootstrap.env["KORTIX_CA_CERT"],
        &bootstrap.env["KORTIX_BOOTSTRAP_TOKEN"],
    )
    .await
    .unwrap();
    // Connected and running, as a real agent would be; it ignores the stop frame later.
    let conn = agent.connect(0).await.unwrap();
    conn.send(agent_frame::Frame::State(StateReport {
        status: SessionStatus::Running as i32,
        ..Default::default()
    }))
    .await
    .unwrap();
    ts.wait_status(
        &token,
        &session.id,
        SessionStatus::Running,
        Duration::from_secs(30),
    )
    .await;
    let mut gateway = agent.client();
    let get_pet = || CallConnectorRequest {
        connector: "pets".into(),
        tool: "getPet".into(),
        args_json: r#"{"id":"7"}"#.into(),
    };
    let last_seen = || seen.lock().unwrap().authorizations.last().cloned();

    for _ in 0..3 {
        let answer = gateway
            .call_connector(get_pet())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status, "ok", "{answer:?}");
        assert_eq!(last_seen().as_deref(), Some("Bearer first-token"));
    }
    set("second-token").await;
    let answer = gateway
        .call_connector(get_pet())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status, "ok", "{answer:?}");
    assert_eq!(
        last_seen().as_deref(),
        Some("Bearer second-token"),
        "the next call carries the new credential"
    );

    ts.sessions(&token)
        .stop_session(StopSessionRequest {
            id: session.id.clone(),
        })
        .await
        .unwrap();
    ts.wait_status(
        &token,
        &session.id,
        SessionStatus::Stopped,
        Duration::from_secs(30),
    )
    .await;
    let calls_before = seen.lock().unwrap().authorizations.len();
    let refused = gateway.call_connector(get_pet()).await.unwrap_err();
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unauthenticated | tonic::Code::FailedPrecondition
        ),
        "the next call after the stop is refused: {refused:?}"
    );
    assert_eq!(
        seen.lock().unwrap().authorizations.len(),
        calls_before,
        "the refused call never reached the upstream"
    );
    drop(conn);
    ts.stop().await;
}
