//! `kortix apps ls|deploy|logs|rollback`: `[[apps]]` deployments (experimental; the server
//! needs `KORTIX_APPS_EXPERIMENTAL=true`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use kortix_proto::v1::{
    AppInfo, DeployAppRequest, DeploymentInfo, GetAppLogsRequest, ListAppsRequest,
    RollbackAppRequest,
};
use serde::Serialize;

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary, unary_within};
use crate::output::table::Table;
use crate::output::{self, BOLD, paint, time};

/// How long `apps deploy --wait` waits for a build (the server's default build timeout,
/// plus fetching and copying).
const DEPLOY_WAIT: Duration = Duration::from_secs(25 * 60);

#[derive(Debug, clap::Args)]
pub struct AppsArgs {
    #[command(subcommand)]
    command: AppsCommand,
}

#[derive(Debug, Subcommand)]
enum AppsCommand {
    /// List the project's apps with the deployment served and the latest one.
    #[command(alias = "list")]
    Ls {
        /// Project name or id.
        #[arg(long, short)]
        project: String,
    },
    /// Deploy an app now from the manifest on the default branch, whatever its hash.
    Deploy {
        /// The app's slug.
        slug: String,
        /// Project name or id.
        #[arg(long, short)]
        project: String,
        /// Return once the build has ended (exit 1 when it failed) rather than once it started.
        #[arg(long)]
        wait: bool,
    },
    /// The build log of the app's latest deployment (or of --deployment).
    Logs {
        /// The app's slug.
        slug: String,
        /// Project name or id.
        #[arg(long, short)]
        project: String,
        /// A deployment id [default: the latest].
        #[arg(long)]
        deployment: Option<String>,
    },
    /// Serve the app's previous successful deployment again.
    Rollback {
        /// The app's slug.
        slug: String,
        /// Project name or id.
        #[arg(long, short)]
        project: String,
    },
}

/// One deployment as `--json` prints it.
#[derive(Debug, Serialize, PartialEq)]
pub struct DeploymentJson {
    pub id: String,
    pub slug: String,
    pub hash: String,
    pub status: String,
    pub reason: String,
    pub active: bool,
    pub source_revision: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: Option<String>,
    pub finished_at: Option<String>,
}

impl From<&DeploymentInfo> for DeploymentJson {
    fn from(d: &DeploymentInfo) -> Self {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        DeploymentJson {
            id: d.id.clone(),
            slug: d.slug.clone(),
            hash: d.hash.clone(),
            status: d.status.clone(),
            reason: d.reason.clone(),
            active: d.active,
            source_revision: some(&d.source_revision),
            failure_reason: some(&d.failure_reason),
            created_at: time::rfc3339_ms(d.created_unix_ms),
            finished_at: time::rfc3339_ms(d.finished_unix_ms),
        }
    }
}

/// One app as `--json` prints it.
#[derive(Debug, Serialize, PartialEq)]
pub struct AppJson {
    pub slug: String,
    pub name: String,
    pub enabled: bool,
    pub in_manifest: bool,
    pub source: Option<String>,
    pub domains: Vec<String>,
    pub hash: Option<String>,
    pub url: String,
    pub active: Option<DeploymentJson>,
    pub latest: Option<DeploymentJson>,
}

impl From<&AppInfo> for AppJson {
    fn from(a: &AppInfo) -> Self {
        AppJson {
            slug: a.slug.clone(),
            name: a.name.clone(),
            enabled: a.enabled,
            in_manifest: a.in_manifest,
            source: (!a.source_type.is_empty()).then(|| a.source_type.clone()),
            domains: a.domains.clone(),
            hash: (!a.hash.is_empty()).then(|| a.hash.clone()),
            url: a.url.clone(),
            active: a.active.as_ref().map(DeploymentJson::from),
            latest: a.latest.as_ref().map(DeploymentJson::from),
        }
    }
}

#[derive(Debug, Serialize)]
struct LogLineJson<'a> {
    deployment: &'a str,
    line: &'a str,
}

pub fn run(global: &Global, args: AppsArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        let client = Client::connect(&ctx).await?;
        match args.command {
            AppsCommand::Ls { project } => list(&ctx, &client, project).await,
            AppsCommand::Deploy {
                slug,
                project,
                wait,
            } => deploy(&ctx, &client, project, slug, wait).await,
            AppsCommand::Logs {
                slug,
                project,
                deployment,
            } => logs(&ctx, &client, project, slug, deployment.unwrap_or_default()).await,
            AppsCommand::Rollback { slug, project } => {
                let d = client
                    .call(
                        "RollbackApp",
                        client
                            .apps()
                            .rollback_app(unary(RollbackAppRequest { project, slug })),
                    )
                    .await?;
                print_deployment(&ctx, &d)
            }
        }
    })
}

async fn list(ctx: &Context, client: &Client, project: String) -> Result<ExitCode, CliError> {
    let apps = client
        .call(
            "ListApps",
            client.apps().list_apps(unary(ListAppsRequest {
                project: project.clone(),
            })),
        )
        .await?
        .apps;
    if ctx.json {
        output::print_json(&apps.iter().map(AppJson::from).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    if apps.is_empty() {
        output::note(&format!("no [[apps]] in project {project}"));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["SLUG", "NAME", "ENABLED", "SERVED", "LATEST", "URL"]);
    for a in &apps {
        table.row(vec![
            a.slug.as_str().into(),
            a.name.as_str().into(),
            if !a.in_manifest {
                "removed".into()
            } else if a.enabled {
                "yes".into()
            } else {
                "no".into()
            },
            a.active
                .as_ref()
                .map_or("-".to_string(), |d| time::human_ms(d.finished_unix_ms))
                .into(),
            a.latest
                .as_ref()
                .map_or("-".to_string(), |d| d.status.clone())
                .into(),
            a.url.as_str().into(),
        ]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}

async fn deploy(
    ctx: &Context,
    client: &Client,
    project: String,
    slug: String,
    wait: bool,
) -> Result<ExitCode, CliError> {
    let request = DeployAppRequest {
        project,
        slug,
        wait,
    };
    let d = if wait {
        client
            .call_within(
                "DeployApp",
                DEPLOY_WAIT,
                client.apps().deploy_app(unary_within(request, DEPLOY_WAIT)),
            )
            .await?
    } else {
        client
            .call("DeployApp", client.apps().deploy_app(unary(request)))
            .await?
    };
    print_deployment(ctx, &d)
}

async fn logs(
    ctx: &Context,
    client: &Client,
    project: String,
    slug: String,
    deployment_id: String,
) -> Result<ExitCode, CliError> {
    let answer = client
        .call(
            "GetAppLogs",
            client.apps().get_app_logs(unary(GetAppLogsRequest {
                project,
                slug,
                deployment_id,
            })),
        )
        .await?;
    let id = answer.deployment.as_ref().map_or("", |d| d.id.as_str());
    for line in &answer.lines {
        if ctx.json {
            output::print_json_line(&LogLineJson {
                deployment: id,
                line,
            })?;
        } else {
            output::print_text(line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_deployment(ctx: &Context, d: &DeploymentInfo) -> Result<ExitCode, CliError> {
    if ctx.json {
        output::print_json(&DeploymentJson::from(d))?;
    } else {
        output::print_text(&format!(
            "deployment {} of {} is {}{}",
            paint(BOLD, &d.id),
            d.slug,
            d.status,
            if d.active { " (served)" } else { "" }
        ))?;
    }
    if d.status == "failed" {
        output::note(&format!("the deployment failed: {}", d.failure_reason));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
