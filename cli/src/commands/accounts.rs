//! `kortix accounts create|whoami`.

use std::process::ExitCode;

use clap::Subcommand;
use kortix_proto::v1::{CreateAccountRequest, Empty};

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::json::{AccountCreatedJson, AccountJson};
use crate::output::{self, BOLD, YELLOW, paint, table, time};

#[derive(Debug, clap::Args)]
pub struct AccountsArgs {
    #[command(subcommand)]
    command: AccountsCommand,
}

#[derive(Debug, Subcommand)]
enum AccountsCommand {
    /// Create a person with a personal account they own, and print their first token, shown
    /// once (server admin token only).
    Create {
        /// The person's name (also their personal account's).
        name: String,
    },
    /// Show the person the current token belongs to.
    Whoami,
}

pub fn run(global: &Global, args: AccountsArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        match args.command {
            AccountsCommand::Create { name } => create(&ctx, name).await,
            AccountsCommand::Whoami => whoami(&ctx).await,
        }
    })
}

async fn create(ctx: &Context, name: String) -> Result<ExitCode, CliError> {
    let client = Client::connect(ctx).await?;
    let created = client
        .call(
            "CreateAccount",
            client
                .accounts()
                .create_account(unary(CreateAccountRequest { name })),
        )
        .await?;
    let account = created.account.unwrap_or_default();
    if ctx.json {
        output::print_json(&AccountCreatedJson {
            account: AccountJson::from(&account),
            token: created.token,
        })?;
    } else {
        output::print_text(&format!(
            "created {} ({}) with a personal account they own\n{} {}\n{}",
            paint(BOLD, &account.name),
            account.id,
            paint(BOLD, "token:"),
            created.token,
            paint(
                YELLOW,
                "This token is shown once; store it now (e.g. `kortix login`)."
            ),
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn whoami(ctx: &Context) -> Result<ExitCode, CliError> {
    let client = Client::connect(ctx).await?;
    let account = client
        .call("WhoAmI", client.accounts().who_am_i(unary(Empty {})))
        .await?;
    if ctx.json {
        output::print_json(&AccountJson::from(&account))?;
    } else {
        output::print_text(&table::details(&[
            ("person", account.name.clone()),
            ("id", account.id.clone()),
            (
                "server admin",
                if account.server_admin { "yes" } else { "no" }.to_owned(),
            ),
            ("created", time::human_ms(account.created_unix_ms)),
        ]))?;
    }
    Ok(ExitCode::SUCCESS)
}
