//! `kortix connectors ls|tools|credential set|calls` and `kortix approvals ls|approve|deny`.
//! Credentials are write-only: read from stdin (or prompted for without echo), never printed.

use std::process::ExitCode;

use clap::Subcommand;
use kortix_proto::v1::{
    ApprovalInfo, ConnectorInfo, DecideApprovalRequest, ListApprovalsRequest,
    ListConnectorCallsRequest, ListConnectorToolsRequest, ListConnectorsRequest,
    SetConnectorCredentialRequest,
};
use serde_json::{Value, json};

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::table::Table;
use crate::output::time::{human_ms, rfc3339_ms};
use crate::output::{self, terminal};

#[derive(Debug, clap::Args)]
pub struct ConnectorsArgs {
    #[command(subcommand)]
    command: ConnectorsCommand,
}

#[derive(Debug, Subcommand)]
enum ConnectorsCommand {
    /// The project's connectors: provider, enabled, credential state and tool count.
    #[command(alias = "list")]
    Ls {
        /// Project name or id.
        #[arg(long, short)]
        project: String,
    },
    /// A connector's tools with their effective policy and risk.
    Tools {
        /// The connector's slug.
        slug: String,
        /// Project name or id.
        #[arg(long, short)]
        project: String,
    },
    /// Credentials: `credential set SLUG --project P [--mine]`, the value from stdin.
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
    },
    /// The log of connector calls.
    Calls {
        /// Project name or id.
        #[arg(long, short)]
        project: String,
        /// Only this session's calls.
        #[arg(long)]
        session: Option<String>,
        /// At most this many (newest first).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
enum CredentialCommand {
    /// Store the connector's shared credential, or with --mine your own (per_user). The
    /// value is read from stdin (one trailing newline removed); on a terminal it is prompted
    /// for without echo.
    Set {
        /// The connector's slug.
        slug: String,
        /// Project name or id.
        #[arg(long, short)]
        project: String,
        /// Your own credential (connectors with credential = "per_user").
        #[arg(long)]
        mine: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(Debug, Subcommand)]
enum ApprovalsCommand {
    /// Approvals of the project's connector calls, newest first.
    #[command(alias = "list")]
    Ls {
        /// Project name or id.
        #[arg(long, short)]
        project: String,
        /// pending, approved, denied or used.
        #[arg(long)]
        state: Option<String>,
    },
    /// Approve a pending call: the session is told, and its identical call runs once.
    Approve {
        /// The approval's id (from `approvals ls`).
        id: String,
    },
    /// Deny a pending call: the session is told why.
    Deny {
        /// The approval's id (from `approvals ls`).
        id: String,
        /// Why, told to the session.
        #[arg(long)]
        reason: Option<String>,
    },
}

pub fn run(global: &Global, args: ConnectorsArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        match args.command {
            ConnectorsCommand::Ls { project } => {
                let client = Client::connect(&ctx).await?;
                let list = client
                    .call(
                        "ListConnectors",
                        client
                            .connectors()
                            .list_connectors(unary(ListConnectorsRequest {
                                project: project.clone(),
                            })),
                    )
                    .await?
                    .connectors;
                if ctx.json {
                    output::print_json(&list.iter().map(connector_json).collect::<Vec<_>>())?;
                } else if list.is_empty() {
                    output::note(&format!("no connectors in project {project}'s kortix.toml"));
                } else {
                    let mut t =
                        Table::new(&["SLUG", "PROVIDER", "ENABLED", "CREDENTIAL", "TOOLS", "NOTE"]);
                    for c in &list {
                        t.row(vec![
                            c.slug.as_str().into(),
                            c.provider.as_str().into(),
                            c.enabled.to_string().into(),
                            format!("{} ({})", c.credential_state, c.credential).into(),
                            c.tool_count.to_string().into(),
                            if c.unavailable.is_empty() {
                                String::new().into()
                            } else {
                                format!("unavailable: {}", c.unavailable).into()
                            },
                        ]);
                    }
                    output::print_text(&t.render())?;
                }
                Ok(ExitCode::SUCCESS)
            }
            ConnectorsCommand::Tools { slug, project } => {
                let client = Client::connect(&ctx).await?;
                let tools = client
                    .call(
                        "ListConnectorTools",
                        client.connectors().list_connector_tools(unary(
                            ListConnectorToolsRequest {
                                project,
                                connector: slug,
                            },
                        )),
                    )
                    .await?
                    .tools;
                if ctx.json {
                    let rows: Vec<Value> = tools
                        .iter()
                        .map(|t| {
                            json!({"name": t.name, "description": t.description, "risk": t.risk,
                                   "policy": t.policy,
                                   "input_schema": serde_json::from_str::<Value>(&t.input_schema_json).unwrap_or(Value::Null)})
                        })
                        .collect();
                    output::print_json(&rows)?;
                } else {
                    let mut t = Table::new(&["TOOL", "RISK", "POLICY", "DESCRIPTION"]);
                    for tool in &tools {
                        t.row(vec![
                            tool.name.as_str().into(),
                            tool.risk.as_str().into(),
                            tool.policy.as_str().into(),
                            tool.description.as_str().into(),
                        ]);
                    }
                    output::print_text(&t.render())?;
                }
                Ok(ExitCode::SUCCESS)
            }
            ConnectorsCommand::Credential {
                command:
                    CredentialCommand::Set {
                        slug,
                        project,
                        mine,
                    },
            } => {
                let value =
                    terminal::read_secret(&format!("Credential for {slug}: "), "credential")?;
                let client = Client::connect(&ctx).await?;
                let info = client
                    .call(
                        "SetConnectorCredential",
                        client.connectors().set_connector_credential(unary(
                            SetConnectorCredentialRequest {
                                project: project.clone(),
                                connector: slug.clone(),
                                value,
                                mine,
                            },
                        )),
                    )
                    .await?;
                if ctx.json {
                    output::print_json(&connector_json(&info))?;
                } else {
                    output::print_text(&format!(
                        "set {} credential of connector {slug} in project {project}",
                        if mine { "your" } else { "the shared" }
                    ))?;
                }
                Ok(ExitCode::SUCCESS)
            }
            ConnectorsCommand::Calls {
                project,
                session,
                limit,
            } => {
                let client = Client::connect(&ctx).await?;
                let calls = client
                    .call(
                        "ListConnectorCalls",
                        client.connectors().list_connector_calls(unary(
                            ListConnectorCallsRequest {
                                project,
                                session_id: session.unwrap_or_default(),
                                limit,
                            },
                        )),
                    )
                    .await?
                    .calls;
                if ctx.json {
                    let rows: Vec<Value> = calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "time": rfc3339_ms(c.at_unix_ms), "session": c.session_id,
                                   "connector": c.connector, "tool": c.tool, "status": c.status,
                                   "duration_ms": c.duration_ms, "upstream_status": c.upstream_status,
                                   "digest": c.digest, "args_preview": c.args_preview, "error": c.error})
                        })
                        .collect();
                    output::print_json(&rows)?;
                } else {
                    let mut t = Table::new(&["TIME", "SESSION", "TOOL", "STATUS", "MS", "DIGEST"]);
                    for c in &calls {
                        t.row(vec![
                            human_ms(c.at_unix_ms).into(),
                            c.session_id.as_str().into(),
                            format!("{}.{}", c.connector, c.tool).into(),
                            c.status.as_str().into(),
                            c.duration_ms.to_string().into(),
                            c.digest.get(..12).unwrap_or(&c.digest).to_owned().into(),
                        ]);
                    }
                    output::print_text(&t.render())?;
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

pub fn run_approvals(global: &Global, args: ApprovalsArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        let client = Client::connect(&ctx).await?;
        let one = |a: ApprovalInfo, verb: &str| -> Result<ExitCode, CliError> {
            if ctx.json {
                output::print_json(&approval_json(&a))?;
            } else {
                output::print_text(&format!(
                    "{verb} {}.{} (approval {}) of session {}",
                    a.connector, a.tool, a.id, a.session_id
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        };
        match args.command {
            ApprovalsCommand::Ls { project, state } => {
                let list = client
                    .call(
                        "ListApprovals",
                        client
                            .approvals()
                            .list_approvals(unary(ListApprovalsRequest {
                                project,
                                state: state.unwrap_or_default(),
                            })),
                    )
                    .await?
                    .approvals;
                if ctx.json {
                    output::print_json(&list.iter().map(approval_json).collect::<Vec<_>>())?;
                } else {
                    let mut t =
                        Table::new(&["ID", "STATE", "SESSION", "TOOL", "ARGS", "REQUESTED"]);
                    for a in &list {
                        t.row(vec![
                            a.id.as_str().into(),
                            a.state.as_str().into(),
                            a.session_id.as_str().into(),
                            format!("{}.{}", a.connector, a.tool).into(),
                            a.args_preview.as_str().into(),
                            human_ms(a.requested_unix_ms).into(),
                        ]);
                    }
                    output::print_text(&t.render())?;
                }
                Ok(ExitCode::SUCCESS)
            }
            ApprovalsCommand::Approve { id } => {
                let a = client
                    .call(
                        "ApproveCall",
                        client
                            .approvals()
                            .approve_call(unary(DecideApprovalRequest {
                                id,
                                reason: String::new(),
                            })),
                    )
                    .await?;
                one(a, "approved")
            }
            ApprovalsCommand::Deny { id, reason } => {
                let a = client
                    .call(
                        "DenyCall",
                        client.approvals().deny_call(unary(DecideApprovalRequest {
                            id,
                            reason: reason.unwrap_or_default(),
                        })),
                    )
                    .await?;
                one(a, "denied")
            }
        }
    })
}

fn connector_json(c: &ConnectorInfo) -> Value {
    json!({
        "slug": c.slug, "name": c.name, "provider": c.provider, "enabled": c.enabled,
        "credential": c.credential, "credential_state": c.credential_state,
        "tool_count": c.tool_count,
        "unavailable": if c.unavailable.is_empty() { Value::Null } else { Value::String(c.unavailable.clone()) },
    })
}

fn approval_json(a: &ApprovalInfo) -> Value {
    json!({
        "id": a.id, "project": a.project, "session": a.session_id, "connector": a.connector,
        "tool": a.tool, "digest": a.digest, "state": a.state, "reason": a.reason,
        "args_preview": a.args_preview, "requested_at": rfc3339_ms(a.requested_unix_ms),
        "decided_at": if a.decided_unix_ms > 0 { rfc3339_ms(a.decided_unix_ms) } else { None },
        "decided_by": a.decided_by,
        "expires_at": if a.expires_unix_ms > 0 { rfc3339_ms(a.expires_unix_ms) } else { None },
    })
}
