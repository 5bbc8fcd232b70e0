//! `kortix snapshots ls|build|prune`: the images sessions boot from (`--sandbox docker`).

use std::process::ExitCode;

use clap::Subcommand;
use kortix_proto::v1::{
    BuildSnapshotRequest, ListSnapshotsRequest, PruneSnapshotsRequest, SnapshotInfo,
    build_snapshot_event::Event,
};
use serde::Serialize;

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::table::Table;
use crate::output::{self, BOLD, paint, time};

#[derive(Debug, clap::Args)]
pub struct SnapshotsArgs {
    #[command(subcommand)]
    command: SnapshotsCommand,
}

#[derive(Debug, Subcommand)]
enum SnapshotsCommand {
    /// List the project's snapshots.
    #[command(alias = "list")]
    Ls {
        /// Project name or id.
        #[arg(long, short)]
        project: String,
    },
    /// Build (or find) the snapshot of a template now; build lines stream to stderr. A failed
    /// snapshot is built again.
    Build {
        /// Project name or id.
        #[arg(long, short)]
        project: String,
        /// Template slug [default: the project's default template].
        #[arg(long)]
        template: Option<String>,
        /// Return once the snapshot is built (or failed) rather than once its build started.
        #[arg(long)]
        wait: bool,
    },
    /// Remove snapshots no live session uses and none used within --unused-for.
    Prune {
        /// Project name or id [default: every project; the server admin token only].
        #[arg(long, short)]
        project: Option<String>,
        /// How long a snapshot must have gone unused: 90s, 30m, 12h, 7d.
        #[arg(long, default_value = "7d", value_parser = time::parse_duration)]
        unused_for: std::time::Duration,
    },
}

/// One snapshot as `--json` prints it.
#[derive(Debug, Serialize, PartialEq)]
pub struct SnapshotJson {
    pub name: String,
    pub hash: String,
    pub template: String,
    pub status: String,
    pub size_bytes: Option<i64>,
    pub created_at: Option<String>,
    pub last_used_at: Option<String>,
    pub failure_reason: Option<String>,
}

impl From<&SnapshotInfo> for SnapshotJson {
    fn from(s: &SnapshotInfo) -> Self {
        SnapshotJson {
            name: s.name.clone(),
            hash: s.hash.clone(),
            template: s.template.clone(),
            status: s.status.clone(),
            size_bytes: (s.size_bytes > 0).then_some(s.size_bytes),
            created_at: time::rfc3339_ms(s.created_unix_ms),
            last_used_at: time::rfc3339_ms(s.last_used_unix_ms),
            failure_reason: (!s.failure_reason.is_empty()).then(|| s.failure_reason.clone()),
        }
    }
}

#[derive(Debug, Serialize)]
struct PrunedJson {
    removed: Vec<String>,
}

pub fn run(global: &Global, args: SnapshotsArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        let client = Client::connect(&ctx).await?;
        match args.command {
            SnapshotsCommand::Ls { project } => list(&ctx, &client, project).await,
            SnapshotsCommand::Build {
                project,
                template,
                wait,
            } => build(&ctx, &client, project, template.unwrap_or_default(), wait).await,
            SnapshotsCommand::Prune {
                project,
                unused_for,
            } => prune(&ctx, &client, project.unwrap_or_default(), unused_for).await,
        }
    })
}

async fn list(ctx: &Context, client: &Client, project: String) -> Result<ExitCode, CliError> {
    let snapshots = client
        .call(
            "ListSnapshots",
            client
                .snapshots()
                .list_snapshots(unary(ListSnapshotsRequest {
                    project: project.clone(),
                })),
        )
        .await?
        .snapshots;
    if ctx.json {
        output::print_json(&snapshots.iter().map(SnapshotJson::from).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    if snapshots.is_empty() {
        output::note(&format!("no snapshots in project {project}"));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["NAME", "TEMPLATE", "STATUS", "SIZE", "CREATED", "LAST USED"]);
    for s in &snapshots {
        table.row(vec![
            s.name.as_str().into(),
            s.template.as_str().into(),
            s.status.as_str().into(),
            if s.size_bytes > 0 {
                format!("{} MB", s.size_bytes / 1_000_000).into()
            } else {
                "-".into()
            },
            time::human_ms(s.created_unix_ms).into(),
            time::human_ms(s.last_used_unix_ms).into(),
        ]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}

async fn build(
    ctx: &Context,
    client: &Client,
    project: String,
    template: String,
    wait: bool,
) -> Result<ExitCode, CliError> {
    let mut events = client
        .call(
            "BuildSnapshot",
            client
                .snapshots()
                .build_snapshot(unary(BuildSnapshotRequest {
                    project: project.clone(),
                    template,
                })),
        )
        .await?;
    loop {
        let event = match events.message().await {
            Ok(Some(event)) => event,
            Ok(None) => {
                return Err(CliError::rpc(
                    client.url(),
                    tonic::Status::unavailable("the build's stream ended without a snapshot"),
                ));
            }
            Err(status) => return Err(CliError::rpc(client.url(), status)),
        };
        match event.event {
            Some(Event::LogLine(line)) => {
                eprintln!("{line}");
                if !wait {
                    // The build goes on at the control plane; `snapshots ls` follows it.
                    output::note("the build is under way (--wait follows it to the end)");
                    let listed = client
                        .call(
                            "ListSnapshots",
                            client
                                .snapshots()
                                .list_snapshots(unary(ListSnapshotsRequest {
                                    project: project.clone(),
                                })),
                        )
                        .await?
                        .snapshots;
                    if let Some(s) = listed.iter().find(|s| s.status == "building") {
                        return print_snapshot(ctx, s);
                    }
                }
            }
            Some(Event::Snapshot(s)) => return print_snapshot(ctx, &s),
            None => {}
        }
    }
}

fn print_snapshot(ctx: &Context, s: &SnapshotInfo) -> Result<ExitCode, CliError> {
    if ctx.json {
        output::print_json(&SnapshotJson::from(s))?;
    } else {
        output::print_text(&format!(
            "snapshot {} is {}",
            paint(BOLD, &s.name),
            s.status
        ))?;
    }
    Ok(if s.status == "failed" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn prune(
    ctx: &Context,
    client: &Client,
    project: String,
    unused_for: std::time::Duration,
) -> Result<ExitCode, CliError> {
    let removed = client
        .call(
            "PruneSnapshots",
            client
                .snapshots()
                .prune_snapshots(unary(PruneSnapshotsRequest {
                    project,
                    unused_for_secs: unused_for.as_secs(),
                })),
        )
        .await?
        .removed;
    if ctx.json {
        output::print_json(&PrunedJson { removed })?;
    } else if removed.is_empty() {
        output::note("no snapshot to remove");
    } else {
        for name in &removed {
            output::print_text(&format!("removed {name}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
