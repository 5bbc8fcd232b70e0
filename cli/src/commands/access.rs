//! `kortix access ls|grant|revoke`: who may do what on one project.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use kortix_proto::v1::{AccessGrant, GrantAccessRequest, ListAccessRequest, RevokeAccessRequest};

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::json::GrantJson;
use crate::output::table::Table;
use crate::output::{self, BOLD, paint, time};

#[derive(Debug, clap::Args)]
pub struct AccessArgs {
    #[command(subcommand)]
    command: AccessCommand,
}

/// Project roles, least to most.
const PROJECT_ROLES: [&str; 3] = ["viewer", "editor", "manager"];

#[derive(Debug, Subcommand)]
enum AccessCommand {
    /// List a project's grants (account owners and admins manage every project of their
    /// account without one).
    #[command(alias = "list")]
    Ls {
        /// Project name or id.
        #[arg(long)]
        project: String,
    },
    /// Grant a person a role on a project (managers); replaces their earlier grant.
    Grant {
        /// The person's name; may be outside the project's account.
        name: String,
        /// Project name or id.
        #[arg(long)]
        project: String,
        /// viewer: see and clone; editor: also run sessions, open CRs, push branches;
        /// manager: also merge, secrets, access.
        #[arg(long, value_parser = PROJECT_ROLES)]
        role: String,
        /// Let the grant lapse after this long (e.g. 30m, 12h, 7d) [default: never].
        #[arg(long, value_name = "DURATION", value_parser = time::parse_duration)]
        expires: Option<Duration>,
    },
    /// Remove a person's grant on a project.
    Revoke {
        /// The person's name.
        name: String,
        /// Project name or id.
        #[arg(long)]
        project: String,
    },
}

pub fn run(global: &Global, args: AccessArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        let client = Client::connect(&ctx).await?;
        match args.command {
            AccessCommand::Ls { project } => list(&ctx, &client, project).await,
            AccessCommand::Grant {
                name,
                project,
                role,
                expires,
            } => {
                let expires_in_seconds = match expires {
                    None => 0,
                    Some(d) => i64::try_from(d.as_secs().max(1)).map_err(|_| {
                        CliError::Input(format!("--expires {}s is too long", d.as_secs()))
                    })?,
                };
                let request = GrantAccessRequest {
                    project,
                    person: name,
                    role,
                    expires_in_seconds,
                };
                let grant = client
                    .call("GrantAccess", client.access().grant_access(unary(request)))
                    .await?;
                print_one(&ctx, &grant, true)
            }
            AccessCommand::Revoke { name, project } => {
                let request = RevokeAccessRequest {
                    project,
                    person: name,
                };
                let grant = client
                    .call(
                        "RevokeAccess",
                        client.access().revoke_access(unary(request)),
                    )
                    .await?;
                print_one(&ctx, &grant, false)
            }
        }
    })
}

async fn list(ctx: &Context, client: &Client, project: String) -> Result<ExitCode, CliError> {
    let grants = client
        .call(
            "ListAccess",
            client
                .access()
                .list_access(unary(ListAccessRequest { project })),
        )
        .await?
        .grants;
    if ctx.json {
        output::print_json(&grants.iter().map(GrantJson::from).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    if grants.is_empty() {
        output::note("no grants (account owners and admins manage the project without one)");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["PERSON", "ROLE", "EXPIRES", "GRANTED"]);
    for g in &grants {
        table.row(vec![
            g.person.as_str().into(),
            g.role.as_str().into(),
            expiry(g).into(),
            time::human_ms(g.created_unix_ms).into(),
        ]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}

fn expiry(g: &AccessGrant) -> String {
    if g.expires_unix_ms == 0 {
        "never".to_owned()
    } else {
        time::human_ms(g.expires_unix_ms)
    }
}

fn print_one(ctx: &Context, g: &AccessGrant, granted: bool) -> Result<ExitCode, CliError> {
    if ctx.json {
        output::print_json(&GrantJson::from(g))?;
    } else if granted {
        output::print_text(&format!(
            "{} is {} on project {} (expires: {})",
            paint(BOLD, &g.person),
            g.role,
            g.project,
            expiry(g)
        ))?;
    } else {
        output::print_text(&format!(
            "revoked {}'s {} grant on project {}",
            paint(BOLD, &g.person),
            g.role,
            g.project
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
