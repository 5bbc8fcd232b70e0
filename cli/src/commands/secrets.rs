//! `kortix secrets set|ls|unset`: project secrets. Values are write-only: nothing prints them.

use std::process::ExitCode;

use clap::Subcommand;
use kortix_proto::v1::{DeleteSecretRequest, ListSecretsRequest, SetSecretRequest};

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::json::{SecretJson, SecretSetJson};
use crate::output::table::Table;
use crate::output::{self, BOLD, paint, terminal, time};

#[derive(Debug, clap::Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    command: SecretsCommand,
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Set a secret. Without --value the value is read from stdin (one trailing newline is
    /// removed); on a terminal it is prompted for without echo.
    Set {
        /// Secret name (the environment variable the agent sees).
        name: String,
        /// Project name or id.
        #[arg(long, short)]
        project: String,
        /// The value (visible in shell history and `ps`; prefer stdin).
        #[arg(long)]
        value: Option<String>,
    },
    /// List secret names (never values).
    #[command(alias = "list")]
    Ls {
        /// Project name or id.
        #[arg(long, short)]
        project: String,
    },
    /// Delete a secret.
    #[command(alias = "rm")]
    Unset {
        /// Secret name.
        name: String,
        /// Project name or id.
        #[arg(long, short)]
        project: String,
    },
}

pub fn run(global: &Global, args: SecretsArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        match args.command {
            SecretsCommand::Set {
                name,
                project,
                value,
            } => {
                // Read the value before connecting so a bad value fails without a round trip.
                let value = match value {
                    Some(v) if v.is_empty() => {
                        return Err(CliError::Input("refusing an empty secret value".into()));
                    }
                    Some(v) => v,
                    None => terminal::read_secret(&format!("Value for {name}: "), "secret value")?,
                };
                let client = Client::connect(&ctx).await?;
                set(&ctx, &client, project, name, value).await
            }
            SecretsCommand::Ls { project } => {
                let client = Client::connect(&ctx).await?;
                list(&ctx, &client, project).await
            }
            SecretsCommand::Unset { name, project } => {
                let client = Client::connect(&ctx).await?;
                unset(&ctx, &client, project, name).await
            }
        }
    })
}

async fn set(
    ctx: &Context,
    client: &Client,
    project: String,
    name: String,
    value: String,
) -> Result<ExitCode, CliError> {
    let request = SetSecretRequest {
        project: project.clone(),
        name,
        value,
    };
    let info = client
        .call("SetSecret", client.secrets().set_secret(unary(request)))
        .await?;
    if ctx.json {
        let json = SecretJson::from(&info);
        output::print_json(&SecretSetJson {
            name: json.name,
            updated_at: json.updated_at,
        })?;
    } else {
        output::print_text(&format!(
            "set secret {} in project {project}",
            paint(BOLD, &info.name)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(ctx: &Context, client: &Client, project: String) -> Result<ExitCode, CliError> {
    let secrets = client
        .call(
            "ListSecrets",
            client.secrets().list_secrets(unary(ListSecretsRequest {
                project: project.clone(),
            })),
        )
        .await?
        .secrets;
    if ctx.json {
        output::print_json(&secrets.iter().map(SecretJson::from).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    if secrets.is_empty() {
        output::note(&format!("no secrets in project {project}"));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["NAME", "CREATED", "UPDATED"]);
    for s in &secrets {
        table.row(vec![
            s.name.as_str().into(),
            time::human_ms(s.created_unix_ms).into(),
            time::human_ms(s.updated_unix_ms).into(),
        ]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}

async fn unset(
    ctx: &Context,
    client: &Client,
    project: String,
    name: String,
) -> Result<ExitCode, CliError> {
    let request = DeleteSecretRequest {
        project: project.clone(),
        name,
    };
    let info = client
        .call(
            "DeleteSecret",
            client.secrets().delete_secret(unary(request)),
        )
        .await?;
    if ctx.json {
        output::print_json(&SecretJson::from(&info))?;
    } else {
        output::print_text(&format!(
            "removed secret {} from project {project}",
            paint(BOLD, &info.name)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
