//! The call path, for a session's agent: what the session may see, and one call — resolve
//! the connector and tool, apply the policy (blocked, approval, run), attach the credential,
//! call the upstream within the timeout and size cap, log the call, answer.

use std::time::Instant;

use kortix_manifest::{Connector, Credential, PolicyAction, Transport};
use kortix_proto::v1::{
    ApprovalRecord, CallConnectorResponse, ConnectorCallRecord, ConnectorTool, SessionConnector,
};
use serde_json::Value;

use super::credentials::{self, Owner};
use super::mcp_client::McpUpstream;
use super::tools::{Catalog, Target, Tool};
use super::upstream::{self, AppliedAuth, UpstreamError};
use super::{Connectors, digest, graphql, policy};
use crate::clock::now_ms;
use crate::error::{DomainError, DomainResult, check_len};
use crate::store::AgentSession;

/// Largest arguments accepted (JSON text).
pub const MAX_ARGS_BYTES: usize = 256 * 1024;
const MAX_NAME: usize = 256;

/// What became of a call, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Error,
    Denied,
    PendingApproval,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Denied => "denied",
            Status::PendingApproval => "pending_approval",
        }
    }
}

/// One call, as far as it got.
pub(super) struct Outcome {
    pub status: Status,
    pub text: String,
    pub upstream_status: u16,
    pub error: String,
    pub approval: Option<ApprovalRecord>,
}

impl Outcome {
    fn ok(text: String, upstream_status: u16) -> Outcome {
        Outcome {
            status: Status::Ok,
            text,
            upstream_status,
            error: String::new(),
            approval: None,
        }
    }

    /// The upstream did not answer usably (or the arguments did not make a request).
    fn unanswered(c: &Connector, tool: &Tool, e: &UpstreamError) -> Outcome {
        Outcome {
            upstream_status: e.status(),
            ..Outcome::failed(
                Status::Error,
                format!("{}.{} failed: {e}", c.slug, tool.name),
            )
        }
    }

    fn failed(status: Status, why: impl Into<String>) -> Outcome {
        let why = why.into();
        Outcome {
            status,
            text: why.clone(),
            upstream_status: 0,
            error: why,
            approval: None,
        }
    }
}

/// The session, its project and whose credentials its calls use.
struct Caller {
    session: AgentSession,
}

impl Caller {
    /// The person who started the session (`per_user` credentials), if a person did.
    async fn person(&self, store: &crate::store::Store) -> DomainResult<Option<String>> {
        let by = &self.session.launched_by;
        if let Some(id) = by.strip_prefix("person:") {
            return Ok(Some(id.to_owned()));
        }
        if let Some(token) = by.strip_prefix("token:") {
            return Ok(store.token_person(token).await?);
        }
        Ok(None)
    }

    fn unattended(&self) -> bool {
        self.session.launched_by.starts_with("trigger:")
            || self.session.origin.starts_with("trigger:")
    }
}

impl Connectors {
    async fn session_caller(&self, session_id: &str) -> DomainResult<Caller> {
        let session = self.inner.store.agent_session(session_id).await?;
        if session.status.is_terminal() {
            return Err(DomainError::Precondition(format!(
                "session {session_id} is {}; connectors serve live sessions",
                session.status
            )));
        }
        Ok(Caller { session })
    }

    async fn owner(&self, who: &Caller, c: &Connector) -> DomainResult<Option<Owner>> {
        Ok(match c.credential {
            Credential::Shared => Some(Owner::Shared),
            Credential::PerUser => who.person(&self.inner.store).await?.map(Owner::Person),
        })
    }

    /// The credential on the wire for this session's calls of `c`, or why there is none.
    async fn auth_for(&self, who: &Caller, c: &Connector) -> DomainResult<AppliedAuth> {
        if !credentials::needs_credential(c) {
            return Ok(AppliedAuth::default());
        }
        let owner = self.owner(who, c).await?;
        let value = self
            .inner
            .credentials
            .value_for(&who.session.project.id, c, owner.as_ref())
            .await?;
        Ok(credentials::apply(c, value.as_ref()))
    }

    /// The connectors of the session's project and the tools it may call (blocked ones are
    /// not listed).
    pub async fn session_connectors(
        &self,
        session_id: &str,
    ) -> DomainResult<Vec<SessionConnector>> {
        let who = self.session_caller(session_id).await?;
        let (manifest, head) = self.manifest(&who.session.project).await?;
        let mut out = Vec::new();
        for c in &manifest.connectors {
            let auth = self.auth_for(&who, c).await;
            let catalog = match &auth {
                Ok(auth) => {
                    self.inner
                        .catalogs
                        .get(&who.session.project, &head, c, auth)
                        .await
                }
                // Tools of an unauthenticated spec may still be listable.
                Err(_) => {
                    self.inner
                        .catalogs
                        .get(&who.session.project, &head, c, &AppliedAuth::default())
                        .await
                }
            };
            let unavailable = catalog
                .unavailable
                .clone()
                .or_else(|| auth.as_ref().err().map(ToString::to_string))
                .unwrap_or_default();
            out.push(SessionConnector {
                slug: c.slug.clone(),
                name: c.name.clone(),
                provider: c.provider.as_str().into(),
                unavailable,
                tools: tool_views(c, &catalog)
                    .into_iter()
                    .filter(|t| t.policy != PolicyAction::Block.as_str())
                    .collect(),
            });
        }
        Ok(out)
    }

    /// One call by the session's agent. Failures of the call itself (unknown tool, blocked,
    /// upstream down) are answers with a status, logged like every call; only failures to
    /// serve the agent at all (no such session, store down) are errors.
    pub async fn call(
        &self,
        session_id: &str,
        connector: &str,
        tool: &str,
        args_json: &str,
    ) -> DomainResult<CallConnectorResponse> {
        check_len("the connector name", connector, MAX_NAME)?;
        check_len("the tool name", tool, MAX_NAME)?;
        check_len("the arguments", args_json, MAX_ARGS_BYTES)?;
        let who = self.session_caller(session_id).await?;
        let started = Instant::now();
        let args: Value = match args_json.trim() {
            "" => Value::Object(Default::default()),
            text => serde_json::from_str(text).map_err(|e| {
                DomainError::Invalid(format!(
                    "the arguments of {connector}.{tool} are not JSON: {e}"
                ))
            })?,
        };
        if !args.is_object() {
            return Err(DomainError::Invalid(format!(
                "the arguments of {connector}.{tool} must be a JSON object"
            )));
        }
        let digest = digest::call_digest(connector, tool, &args);
        let preview = digest::preview(&args);
        let outcome = self
            .decide_and_run(&who, connector, tool, &args, &digest, &preview)
            .await?;
        let duration_ms = started.elapsed().as_millis() as u64;
        let record = ConnectorCallRecord {
            connector: connector.to_owned(),
            tool: tool.to_owned(),
            digest,
            status: outcome.status.as_str().into(),
            duration_ms,
            upstream_status: u32::from(outcome.upstream_status),
            args_preview: preview,
            error: outcome.error.clone(),
            approval_id: outcome
                .approval
                .as_ref()
                .map(|a| a.approval_id.clone())
                .unwrap_or_default(),
        };
        self.log_call(&who.session.project.id, session_id, &record)
            .await;
        Ok(CallConnectorResponse {
            status: outcome.status.as_str().into(),
            text: outcome.text,
            call_record: Some(record),
            approval_record: outcome.approval,
        })
    }

    async fn decide_and_run(
        &self,
        who: &Caller,
        slug: &str,
        tool_name: &str,
        args: &Value,
        digest: &str,
        preview: &str,
    ) -> DomainResult<Outcome> {
        let (manifest, head) = self.manifest(&who.session.project).await?;
        let Some(c) = manifest.connectors.iter().find(|c| c.slug == slug) else {
            return Ok(Outcome::failed(
                Status::Error,
                format!("there is no connector {slug:?}; list them with the `connectors` tool"),
            ));
        };
        let auth = match self.auth_for(who, c).await {
            Ok(a) => a,
            Err(e) if matches!(e, DomainError::Precondition(_)) => {
                return Ok(Outcome::failed(Status::Error, e.to_string()));
            }
            Err(e) => return Err(e),
        };
        let catalog = self
            .inner
            .catalogs
            .get(&who.session.project, &head, c, &auth)
            .await;
        if let Some(why) = &catalog.unavailable {
            return Ok(Outcome::failed(
                Status::Error,
                format!("connector {slug} is unavailable: {why}"),
            ));
        }
        let Some(tool) = catalog.tool(tool_name) else {
            return Ok(Outcome::failed(
                Status::Error,
                format!("connector {slug} has no tool {tool_name:?}; see the `connectors` tool"),
            ));
        };
        match policy::effective(&c.policies, &tool.name, tool.risk) {
            PolicyAction::Block => {
                return Ok(Outcome::failed(
                    Status::Denied,
                    format!(
                        "{slug}.{tool_name} is blocked by the project's policy; it cannot be called"
                    ),
                ));
            }
            PolicyAction::RequireApproval => {
                let ttl = who
                    .unattended()
                    .then_some(self.inner.settings.unattended_approval_ttl);
                let gate = self
                    .gate(
                        &who.session.project.id,
                        &who.session.id,
                        slug,
                        tool_name,
                        digest,
                        preview,
                        ttl,
                    )
                    .await?;
                if let Some(waiting) = gate.waiting {
                    return Ok(waiting);
                }
                let mut out = self.run(c, &catalog, tool, args, &auth).await;
                out.approval = Some(gate.used);
                return Ok(out);
            }
            PolicyAction::AlwaysRun => {}
        }
        Ok(self.run(c, &catalog, tool, args, &auth).await)
    }

    /// Calls the upstream; every failure is an answer the model can read.
    async fn run(
        &self,
        c: &Connector,
        catalog: &Catalog,
        tool: &Tool,
        args: &Value,
        auth: &AppliedAuth,
    ) -> Outcome {
        let settings = &self.inner.settings;
        let cap = settings.max_response_bytes;
        let client = &self.inner.client;
        let http = |built: Result<(reqwest::RequestBuilder, String), UpstreamError>| async move {
            let (req, url) = built?;
            upstream::send(auth.apply(req), &url, settings.call_timeout, cap).await
        };
        let result = match &tool.target {
            Target::Http(op) => {
                http(upstream::http_request(client, &catalog.base_url, op, args)).await
            }
            Target::HttpGeneric => {
                http(upstream::generic_request(client, &catalog.base_url, args)).await
            }
            Target::Graphql(op) => {
                let answer = match graphql::call::variables(op, args) {
                    Ok(vars) => {
                        graphql::call::post(
                            client,
                            &catalog.base_url,
                            &op.document,
                            vars,
                            auth,
                            settings.call_timeout,
                            cap,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                return graphql_outcome(c, tool, answer, cap);
            }
            Target::Mcp(name) => {
                let mcp = McpUpstream {
                    client,
                    url: &catalog.base_url,
                    transport: c.transport.unwrap_or(Transport::Http),
                    auth,
                    timeout: settings.call_timeout,
                    cap,
                };
                return match mcp.call_tool(name, args).await {
                    Ok(a) => Outcome {
                        status: if a.is_error {
                            Status::Error
                        } else {
                            Status::Ok
                        },
                        error: if a.is_error {
                            super::tools::cut(&a.text, 512)
                        } else {
                            String::new()
                        },
                        text: with_note(a.text, a.truncated, cap),
                        upstream_status: 200,
                        approval: None,
                    },
                    Err(e) => Outcome {
                        upstream_status: e.status(),
                        ..Outcome::failed(Status::Error, format!("{}.{}: {e}", c.slug, tool.name))
                    },
                };
            }
        };
        match result {
            Ok(a) if (200..300).contains(&a.status) => {
                Outcome::ok(with_note(a.body, a.truncated, cap), a.status)
            }
            Ok(a) => Outcome {
                status: Status::Error,
                error: format!("upstream answered HTTP {}", a.status),
                text: format!(
                    "{}.{} failed: the upstream answered HTTP {}:\n{}",
                    c.slug,
                    tool.name,
                    a.status,
                    with_note(a.body, a.truncated, cap)
                ),
                upstream_status: a.status,
                approval: None,
            },
            Err(e) => Outcome::unanswered(c, tool, &e),
        }
    }
}

/// A GraphQL answer as the model reads it: `errors` (or a non-2xx status) make it an error.
fn graphql_outcome(
    c: &Connector,
    tool: &Tool,
    answer: Result<graphql::call::GraphqlAnswer, UpstreamError>,
    cap: usize,
) -> Outcome {
    match answer {
        Ok(a) if a.errors.is_none() && (200..300).contains(&a.status) => {
            Outcome::ok(with_note(a.text, a.truncated, cap), a.status)
        }
        Ok(a) => {
            let errors = a
                .errors
                .unwrap_or_else(|| format!("the endpoint answered HTTP {}", a.status));
            Outcome {
                status: Status::Error,
                error: super::tools::cut(&errors, 512),
                text: format!(
                    "{}.{} failed with GraphQL errors: {errors}\n{}",
                    c.slug,
                    tool.name,
                    with_note(a.text, a.truncated, cap)
                ),
                upstream_status: a.status,
                approval: None,
            }
        }
        Err(e) => Outcome::unanswered(c, tool, &e),
    }
}

/// The answer, with a note when it was cut.
fn with_note(mut text: String, truncated: bool, cap: usize) -> String {
    if truncated {
        text.push_str(&format!(
            "\n[truncated: the answer was longer than {cap} bytes; only the first {cap} are shown]"
        ));
    }
    text
}

/// A connector's tools as shown to people and agents, with their effective policy.
pub(super) fn tool_views(c: &Connector, catalog: &Catalog) -> Vec<ConnectorTool> {
    catalog
        .tools
        .iter()
        .map(|t| ConnectorTool {
            name: t.name.clone(),
            description: t.description.clone(),
            input_schema_json: t.input_schema.to_string(),
            risk: t.risk.as_str().into(),
            policy: policy::effective(&c.policies, &t.name, t.risk)
                .as_str()
                .into(),
        })
        .collect()
}

pub(super) fn now() -> i64 {
    now_ms()
}
