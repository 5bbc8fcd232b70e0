//! `kortix login` / `kortix logout`: save (or forget) a token for a control plane URL.

use std::process::ExitCode;

use kortix_proto::v1::Empty;
use serde::Serialize;

use crate::Global;
use crate::client::credentials::{self, SavedLogin};
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::json::AccountJson;
use crate::output::terminal;
use crate::output::{self, BOLD, paint};

/// Check a token against the control plane and save it for `--url`. The token is taken from
/// `--token`/`KORTIX_TOKEN`, else read from stdin (prompted for, without echo, on a terminal).
#[derive(Debug, clap::Args)]
pub struct LoginArgs {}

/// Forget the token saved for `--url`.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {}

#[derive(Debug, Serialize)]
struct LoginJson {
    url: String,
    account: AccountJson,
    credentials_file: String,
}

#[derive(Debug, Serialize)]
struct LogoutJson {
    url: String,
    removed: bool,
    credentials_file: String,
}

pub fn run_login(global: &Global, _args: LoginArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move { login(&ctx).await })
}

pub fn run_logout(global: &Global, _args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move { logout(&ctx) })
}

fn credentials_file() -> Result<std::path::PathBuf, CliError> {
    credentials::credentials_path().ok_or_else(|| {
        CliError::Input("cannot find a config directory: set HOME or XDG_CONFIG_HOME".into())
    })
}

async fn login(ctx: &Context) -> Result<ExitCode, CliError> {
    let path = credentials_file()?;
    let token = match ctx
        .token_flag
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        Some(token) => token.to_owned(),
        None => terminal::read_secret(&format!("Token for {}: ", ctx.url), "token")?
            .trim()
            .to_owned(),
    };
    let client = Client::connect_with_token(ctx, Some(&token)).await?;
    // Only a token the server accepts is worth saving.
    let account = client
        .call("WhoAmI", client.accounts().who_am_i(unary(Empty {})))
        .await?;
    let mut creds = credentials::load(&path)?;
    creds.servers.insert(
        credentials::normalize_url(&ctx.url),
        SavedLogin {
            token,
            account: Some(account.name.clone()),
        },
    );
    credentials::save(&path, &creds)?;
    if ctx.json {
        output::print_json(&LoginJson {
            url: ctx.url.clone(),
            account: AccountJson::from(&account),
            credentials_file: path.display().to_string(),
        })?;
    } else {
        output::print_text(&format!(
            "logged in to {} as {}{}; token saved in {}",
            ctx.url,
            paint(BOLD, &account.name),
            if account.server_admin {
                " (server admin)"
            } else {
                ""
            },
            path.display()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn logout(ctx: &Context) -> Result<ExitCode, CliError> {
    let path = credentials_file()?;
    let mut creds = credentials::load(&path)?;
    let removed = creds
        .servers
        .remove(&credentials::normalize_url(&ctx.url))
        .is_some();
    if removed {
        credentials::save(&path, &creds)?;
    }
    if ctx.json {
        output::print_json(&LogoutJson {
            url: ctx.url.clone(),
            removed,
            credentials_file: path.display().to_string(),
        })?;
    } else if removed {
        output::print_text(&format!("forgot the token for {}", ctx.url))?;
    } else {
        output::print_text(&format!("no token was saved for {}", ctx.url))?;
    }
    Ok(ExitCode::SUCCESS)
}
