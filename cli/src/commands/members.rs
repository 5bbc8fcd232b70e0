//! `kortix members ls|add|rm`: people in an account and their roles.

use std::process::ExitCode;

use clap::Subcommand;
use kortix_proto::v1::{AddMemberRequest, ListMembersRequest, Member, RemoveMemberRequest};

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::json::MemberJson;
use crate::output::table::{Cell, Table};
use crate::output::{self, BOLD, GREEN, paint, time};

#[derive(Debug, clap::Args)]
pub struct MembersArgs {
    #[command(subcommand)]
    command: MembersCommand,
}

/// Account roles, least to most.
const ACCOUNT_ROLES: [&str; 3] = ["member", "admin", "owner"];

#[derive(Debug, Subcommand)]
enum MembersCommand {
    /// List an account's members and their roles.
    #[command(alias = "list")]
    Ls {
        /// Account name or id [default: your personal account].
        #[arg(long, value_name = "ACCOUNT")]
        account: Option<String>,
    },
    /// Add a person to an account, or change their role (owners and admins; only an owner
    /// makes or unmakes owners).
    Add {
        /// The person's name, as created by `kortix accounts create`.
        name: String,
        /// owner: everything; admin: members, tokens, audit, project creation; member: no
        /// project access by itself.
        #[arg(long, value_parser = ACCOUNT_ROLES)]
        role: String,
        /// Account name or id [default: your personal account].
        #[arg(long, value_name = "ACCOUNT")]
        account: Option<String>,
    },
    /// Remove a person from an account (anyone may leave; the last owner cannot).
    Rm {
        /// The person's name.
        name: String,
        /// Account name or id [default: your personal account].
        #[arg(long, value_name = "ACCOUNT")]
        account: Option<String>,
    },
}

pub fn run(global: &Global, args: MembersArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        let client = Client::connect(&ctx).await?;
        match args.command {
            MembersCommand::Ls { account } => list(&ctx, &client, account).await,
            MembersCommand::Add {
                name,
                role,
                account,
            } => {
                let request = AddMemberRequest {
                    account: account.unwrap_or_default(),
                    person: name,
                    role,
                };
                let member = client
                    .call("AddMember", client.members().add_member(unary(request)))
                    .await?;
                print_one(&ctx, &member, "is now")
            }
            MembersCommand::Rm { name, account } => {
                let request = RemoveMemberRequest {
                    account: account.unwrap_or_default(),
                    person: name,
                };
                let member = client
                    .call(
                        "RemoveMember",
                        client.members().remove_member(unary(request)),
                    )
                    .await?;
                print_one(&ctx, &member, "was")
            }
        }
    })
}

async fn list(
    ctx: &Context,
    client: &Client,
    account: Option<String>,
) -> Result<ExitCode, CliError> {
    let request = ListMembersRequest {
        account: account.unwrap_or_default(),
    };
    let members = client
        .call("ListMembers", client.members().list_members(unary(request)))
        .await?
        .members;
    if ctx.json {
        output::print_json(&members.iter().map(MemberJson::from).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["PERSON", "ROLE", "ACCOUNT", "SINCE"]);
    for m in &members {
        table.row(vec![
            m.person.as_str().into(),
            role_cell(&m.role),
            m.account.as_str().into(),
            time::human_ms(m.created_unix_ms).into(),
        ]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}

fn role_cell(role: &str) -> Cell {
    if role == "owner" {
        Cell::styled(role, GREEN)
    } else {
        role.into()
    }
}

fn print_one(ctx: &Context, m: &Member, verb: &str) -> Result<ExitCode, CliError> {
    if ctx.json {
        output::print_json(&MemberJson::from(m))?;
    } else if verb == "was" {
        output::print_text(&format!(
            "removed {} ({}) from account {}",
            paint(BOLD, &m.person),
            m.role,
            m.account
        ))?;
    } else {
        output::print_text(&format!(
            "{} {verb} {} of account {}",
            paint(BOLD, &m.person),
            m.role,
            m.account
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
