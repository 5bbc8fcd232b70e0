//! `kortix tokens create|ls|revoke`: the calling account's bearer tokens.

use std::process::ExitCode;

use clap::Subcommand;
use kortix_proto::v1::{CreateTokenRequest, Empty, RevokeTokenRequest, TokenInfo};

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::json::{TokenCreatedJson, TokenJson};
use crate::output::table::{Cell, Table};
use crate::output::{self, BOLD, DIM, GREEN, RED, YELLOW, or_dash, paint, time};

#[derive(Debug, clap::Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Create a token for yourself, optionally narrowed to one project and role; it is shown
    /// once.
    Create {
        /// A label to recognise the token by.
        #[arg(long)]
        name: Option<String>,
        /// Narrow the token to this project (name or id).
        #[arg(long)]
        project: Option<String>,
        /// The most the token may do on --project, no higher than your role there
        /// [default: your role].
        #[arg(long, value_parser = ["viewer", "editor", "manager"], requires = "project")]
        role: Option<String>,
        /// Let the token lapse after this long (e.g. 12h, 30d) [default: never].
        #[arg(long, value_name = "DURATION", value_parser = time::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List your tokens (never their values).
    #[command(alias = "list")]
    Ls,
    /// Revoke a token by id.
    Revoke {
        /// Token id (from `kortix tokens ls`).
        id: String,
    },
}

pub fn run(global: &Global, args: TokensArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        let client = Client::connect(&ctx).await?;
        match args.command {
            TokensCommand::Create {
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
                let request = CreateTokenRequest {
                    name: name.unwrap_or_default(),
                    project: project.unwrap_or_default(),
                    role: role.unwrap_or_default(),
                    expires_in_seconds,
                };
                create(&ctx, &client, request).await
            }
            TokensCommand::Ls => list(&ctx, &client).await,
            TokensCommand::Revoke { id } => revoke(&ctx, &client, id).await,
        }
    })
}

async fn create(
    ctx: &Context,
    client: &Client,
    request: CreateTokenRequest,
) -> Result<ExitCode, CliError> {
    let created = client
        .call(
            "CreateToken",
            client.accounts().create_token(unary(request)),
        )
        .await?;
    let info = created.info.unwrap_or_default();
    if ctx.json {
        output::print_json(&TokenCreatedJson {
            info: TokenJson::from(&info),
            token: created.token,
        })?;
    } else {
        output::print_text(&format!(
            "created token {}{}\n{} {}\n{}",
            info.id,
            if info.name.is_empty() {
                String::new()
            } else {
                format!(" ({})", info.name)
            },
            paint(BOLD, "token:"),
            created.token,
            paint(YELLOW, "This token is shown once; store it now."),
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(ctx: &Context, client: &Client) -> Result<ExitCode, CliError> {
    let tokens = client
        .call("ListTokens", client.accounts().list_tokens(unary(Empty {})))
        .await?
        .tokens;
    if ctx.json {
        output::print_json(&tokens.iter().map(TokenJson::from).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    if tokens.is_empty() {
        output::note("no tokens");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["ID", "NAME", "STATE", "CREATED", "LAST USED"]);
    for t in &tokens {
        table.row(vec![
            t.id.as_str().into(),
            or_dash(&t.name).into(),
            token_state(t),
            time::human_ms(t.created_unix_ms).into(),
            time::human_ms(t.last_used_unix_ms).into(),
        ]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}

fn token_state(t: &TokenInfo) -> Cell {
    if t.revoked_unix_ms != 0 {
        Cell::styled(
            format!("revoked {}", time::human_ms(t.revoked_unix_ms)),
            RED,
        )
    } else {
        Cell::styled("active", GREEN)
    }
}

async fn revoke(ctx: &Context, client: &Client, id: String) -> Result<ExitCode, CliError> {
    let info = client
        .call(
            "RevokeToken",
            client
                .accounts()
                .revoke_token(unary(RevokeTokenRequest { id })),
        )
        .await?;
    if ctx.json {
        output::print_json(&TokenJson::from(&info))?;
    } else {
        output::print_text(&format!(
            "revoked token {}{}",
            info.id,
            if info.name.is_empty() {
                String::new()
            } else {
                paint(DIM, &format!(" ({})", info.name))
            }
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
