//! `kortix channels slack connect | link` and `kortix channels ls`: drive a project from
//! Slack. The signing secret and bot token go in on stdin; nothing prints them.

use std::process::ExitCode;

use clap::Subcommand;
use kortix_proto::v1::{ConnectSlackRequest, LinkSlackUserRequest, ListChannelsRequest};
use serde::Serialize;

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::table::Table;
use crate::output::{self, BOLD, paint, terminal, time};

#[derive(Debug, clap::Args)]
pub struct ChannelsArgs {
    #[command(subcommand)]
    command: ChannelsCommand,
}

#[derive(Debug, Subcommand)]
enum ChannelsCommand {
    /// Slack apps.
    Slack {
        #[command(subcommand)]
        command: SlackCommand,
    },
    /// Channel bindings and their live threads → sessions.
    #[command(alias = "list")]
    Ls {
        /// Project name or id.
        #[arg(long, short)]
        project: String,
    },
}

#[derive(Debug, Subcommand)]
enum SlackCommand {
    /// Bind the project to a Slack app: reads the signing secret and the bot token from stdin
    /// (two lines; prompted for without echo on a terminal) and prints the URLs to enter in
    /// the app's settings.
    Connect {
        /// Project name or id.
        #[arg(long, short)]
        project: String,
    },
    /// Link your Slack user to your Kortix account with the code `/kortix link` gave you in
    /// Slack (valid once, for ten minutes); you can then approve connector calls from Slack.
    Link {
        /// The code, like ABCDE-FGHJK.
        code: String,
    },
}

/// `channels slack link --json`.
#[derive(Debug, Serialize)]
struct LinkedJson {
    project: String,
    slack_user: String,
}

/// `channels slack connect --json`.
#[derive(Debug, Serialize)]
struct ConnectedJson {
    project: String,
    request_url: String,
    interactivity_url: String,
}

/// One element of `channels ls --json`.
#[derive(Debug, Serialize)]
struct BindingJson {
    kind: String,
    project: String,
    request_url: String,
    interactivity_url: String,
    connected_by: String,
    created_at: Option<String>,
    updated_at: Option<String>,
    threads: Vec<ThreadJson>,
}

#[derive(Debug, Serialize)]
struct ThreadJson {
    channel: String,
    thread_ts: String,
    session_id: String,
    session_status: String,
    asked_by: String,
    created_at: Option<String>,
}

pub fn run(global: &Global, args: ChannelsArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        match args.command {
            ChannelsCommand::Slack {
                command: SlackCommand::Connect { project },
            } => {
                // Read the credentials before connecting so bad input fails without a round trip.
                let values = terminal::read_secret_lines(&[
                    ("Slack signing secret: ", "signing secret"),
                    ("Slack bot token (xoxb-…): ", "bot token"),
                ])?;
                let [signing_secret, bot_token]: [String; 2] = values
                    .try_into()
                    .map_err(|_| CliError::Input("expected two values".into()))?;
                let client = Client::connect(&ctx).await?;
                connect(&ctx, &client, project, signing_secret, bot_token).await
            }
            ChannelsCommand::Slack {
                command: SlackCommand::Link { code },
            } => {
                let client = Client::connect(&ctx).await?;
                link(&ctx, &client, code).await
            }
            ChannelsCommand::Ls { project } => {
                let client = Client::connect(&ctx).await?;
                list(&ctx, &client, project).await
            }
        }
    })
}

async fn connect(
    ctx: &Context,
    client: &Client,
    project: String,
    signing_secret: String,
    bot_token: String,
) -> Result<ExitCode, CliError> {
    let answer = client
        .call(
            "ConnectSlack",
            client.channels().connect_slack(unary(ConnectSlackRequest {
                project,
                signing_secret,
                bot_token,
            })),
        )
        .await?;
    if ctx.json {
        output::print_json(&ConnectedJson {
            project: answer.project,
            request_url: answer.request_url,
            interactivity_url: answer.interactivity_url,
        })?;
    } else {
        output::print_text(&format!(
            "bound project {} to Slack\n  Events API request URL: {}\n  Interactivity and slash command URL: {}",
            paint(BOLD, &answer.project),
            answer.request_url,
            answer.interactivity_url
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn link(ctx: &Context, client: &Client, code: String) -> Result<ExitCode, CliError> {
    let linked = client
        .call(
            "LinkSlackUser",
            client
                .channels()
                .link_slack_user(unary(LinkSlackUserRequest { code })),
        )
        .await?;
    if ctx.json {
        output::print_json(&LinkedJson {
            project: linked.project,
            slack_user: linked.slack_user,
        })?;
    } else {
        output::print_text(&format!(
            "linked Slack user {} to you in project {}",
            linked.slack_user,
            paint(BOLD, &linked.project)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(ctx: &Context, client: &Client, project: String) -> Result<ExitCode, CliError> {
    let bindings = client
        .call(
            "ListChannels",
            client.channels().list_channels(unary(ListChannelsRequest {
                project: project.clone(),
            })),
        )
        .await?
        .bindings;
    if ctx.json {
        let json: Vec<BindingJson> = bindings
            .into_iter()
            .map(|b| BindingJson {
                kind: b.kind,
                project: b.project,
                request_url: b.request_url,
                interactivity_url: b.interactivity_url,
                connected_by: b.connected_by,
                created_at: time::rfc3339_ms(b.created_unix_ms),
                updated_at: time::rfc3339_ms(b.updated_unix_ms),
                threads: b
                    .threads
                    .into_iter()
                    .map(|t| ThreadJson {
                        channel: t.channel,
                        thread_ts: t.thread_ts,
                        session_id: t.session_id,
                        session_status: t.session_status,
                        asked_by: t.asked_by,
                        created_at: time::rfc3339_ms(t.created_unix_ms),
                    })
                    .collect(),
            })
            .collect();
        output::print_json(&json)?;
        return Ok(ExitCode::SUCCESS);
    }
    if bindings.is_empty() {
        output::note(&format!("project {project} is not bound to a channel"));
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = String::new();
    for b in &bindings {
        text.push_str(&format!(
            "{} · {} · request URL {} · connected {}\n",
            paint(BOLD, &b.kind),
            b.project,
            b.request_url,
            time::human_ms(b.updated_unix_ms)
        ));
        if b.threads.is_empty() {
            text.push_str("  no live threads\n");
            continue;
        }
        let mut table = Table::new(&["CHANNEL", "THREAD", "SESSION", "STATUS", "ASKED BY"]);
        for t in &b.threads {
            table.row(vec![
                t.channel.as_str().into(),
                t.thread_ts.as_str().into(),
                t.session_id.as_str().into(),
                t.session_status.as_str().into(),
                t.asked_by.as_str().into(),
            ]);
        }
        text.push_str(&table.render());
    }
    output::print_text(text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}
