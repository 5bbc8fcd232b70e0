//! `kortix audit ls`: an account's audit log, newest first.

use std::process::ExitCode;

use clap::Subcommand;
use kortix_proto::v1::ListAuditRequest;

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::json::AuditEventJson;
use crate::output::table::Table;
use crate::output::{self, time};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// List privileged actions in an account, newest first (account owners and admins).
    #[command(alias = "list")]
    Ls {
        /// Account name or id [default: your personal account].
        #[arg(long, value_name = "ACCOUNT")]
        account: Option<String>,
        /// Only this project's events.
        #[arg(long, short = 'p', value_name = "PROJECT")]
        project: Option<String>,
        /// Events to show (at most 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Only events older than this id (the last id of the previous page).
        #[arg(long, value_name = "ID")]
        before: Option<i64>,
    },
}

pub fn run(global: &Global, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        let client = Client::connect(&ctx).await?;
        match args.command {
            AuditCommand::Ls {
                account,
                project,
                limit,
                before,
            } => {
                let request = ListAuditRequest {
                    account: account.unwrap_or_default(),
                    project: project.unwrap_or_default(),
                    before_id: before.unwrap_or(0),
                    limit,
                };
                list(&ctx, &client, request).await
            }
        }
    })
}

async fn list(
    ctx: &Context,
    client: &Client,
    request: ListAuditRequest,
) -> Result<ExitCode, CliError> {
    let events = client
        .call("ListAudit", client.audit().list_audit(unary(request)))
        .await?
        .events;
    if ctx.json {
        output::print_json(&events.iter().map(AuditEventJson::from).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "ID", "WHEN", "WHO", "ACTION", "PROJECT", "TARGET", "DETAIL", "FROM",
    ]);
    for e in &events {
        table.row(vec![
            e.id.to_string().into(),
            time::human_ms(e.at_unix_ms).into(),
            e.actor_name.as_str().into(),
            e.action.as_str().into(),
            e.project.as_str().into(),
            e.target.as_str().into(),
            e.detail.as_str().into(),
            e.from.as_str().into(),
        ]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}
