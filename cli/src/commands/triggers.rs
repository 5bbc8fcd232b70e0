//! `kortix triggers ls|fire`: the project's manifest triggers, their schedule and firings.

use std::process::ExitCode;

use clap::Subcommand;
use kortix_proto::v1::{FireTriggerRequest, Firing, ListTriggersRequest, Trigger};

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::json::{FiringJson, TriggerJson};
use crate::output::table::{Cell, Table};
use crate::output::{self, BOLD, DIM, GREEN, RED, YELLOW, paint, time};

#[derive(Debug, clap::Args)]
pub struct TriggersArgs {
    #[command(subcommand)]
    command: TriggersCommand,
}

#[derive(Debug, Subcommand)]
enum TriggersCommand {
    /// List triggers with their next fire time and last firing.
    #[command(alias = "list")]
    Ls {
        /// Project name or id.
        #[arg(long, short)]
        project: String,
    },
    /// Fire a trigger now (starts a session).
    Fire {
        /// Trigger slug.
        slug: String,
        /// Project name or id.
        #[arg(long, short)]
        project: String,
    },
}

pub fn run(global: &Global, args: TriggersArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        let client = Client::connect(&ctx).await?;
        match args.command {
            TriggersCommand::Ls { project } => list(&ctx, &client, project).await,
            TriggersCommand::Fire { slug, project } => fire(&ctx, &client, project, slug).await,
        }
    })
}

async fn list(ctx: &Context, client: &Client, project: String) -> Result<ExitCode, CliError> {
    let response = client
        .call(
            "ListTriggers",
            client.triggers().list_triggers(unary(ListTriggersRequest {
                project: project.clone(),
            })),
        )
        .await?;
    // The contract's JSON is the array of triggers; manifest problems go to stderr either way.
    for error in &response.errors {
        output::note(&paint(YELLOW, &format!("warning: trigger {error}")));
    }
    let triggers = response.triggers;
    if ctx.json {
        output::print_json(&triggers.iter().map(TriggerJson::from).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    if triggers.is_empty() {
        output::note(&format!("no triggers in project {project}'s manifest"));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "SLUG",
        "TYPE",
        "ENABLED",
        "SCHEDULE",
        "NEXT FIRE",
        "LAST FIRING",
    ]);
    for t in &triggers {
        table.row(vec![
            t.slug.as_str().into(),
            t.r#type.as_str().into(),
            if t.enabled {
                Cell::styled("yes", GREEN)
            } else {
                Cell::styled("no", DIM)
            },
            schedule(t).into(),
            time::human_with_relative(t.next_fire_unix_ms).into(),
            last_firing(t.last_firing.as_ref()),
        ]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}

/// `0 0 9 * * 1-5 (Europe/Berlin)` for cron, the endpoint path for webhooks.
fn schedule(t: &Trigger) -> String {
    if !t.cron.is_empty() {
        if t.timezone.is_empty() {
            t.cron.clone()
        } else {
            format!("{} ({})", t.cron, t.timezone)
        }
    } else if !t.webhook_path.is_empty() {
        format!("POST {}", t.webhook_path)
    } else {
        "-".to_owned()
    }
}

fn last_firing(f: Option<&Firing>) -> Cell {
    let Some(f) = f else {
        return Cell::from("never");
    };
    let when = time::human_ms(f.fired_unix_ms);
    match f.outcome.as_str() {
        "failed" => Cell::styled(format!("{when} failed: {}", f.error), RED),
        _ if !f.session_id.is_empty() => {
            Cell::from(format!("{when} {} → session {}", f.outcome, f.session_id))
        }
        outcome => Cell::from(format!("{when} {outcome}")),
    }
}

async fn fire(
    ctx: &Context,
    client: &Client,
    project: String,
    slug: String,
) -> Result<ExitCode, CliError> {
    let firing = client
        .call(
            "FireTrigger",
            client
                .triggers()
                .fire_trigger(unary(FireTriggerRequest { project, slug })),
        )
        .await?;
    if ctx.json {
        output::print_json(&FiringJson::from(&firing))?;
    } else if firing.outcome != "failed" {
        output::print_text(&format!(
            "fired {}: {}{}",
            paint(BOLD, &firing.trigger_slug),
            firing.outcome,
            if firing.session_id.is_empty() {
                String::new()
            } else {
                format!(", session {}", paint(BOLD, &firing.session_id))
            }
        ))?;
    }
    if firing.outcome == "failed" {
        return Err(CliError::Refused(format!(
            "trigger {} fired but failed: {}",
            firing.trigger_slug,
            if firing.error.is_empty() {
                "no reason given"
            } else {
                &firing.error
            }
        )));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_text() {
        let cron = Trigger {
            cron: "0 0 9 * * 1-5".into(),
            timezone: "UTC".into(),
            ..Default::default()
        };
        assert_eq!(schedule(&cron), "0 0 9 * * 1-5 (UTC)");
        let hook = Trigger {
            webhook_path: "/hooks/p/deploy".into(),
            ..Default::default()
        };
        assert_eq!(schedule(&hook), "POST /hooks/p/deploy");
        assert_eq!(schedule(&Trigger::default()), "-");
    }
}
