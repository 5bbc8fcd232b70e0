//! `kortix projects create|ls|info|clone`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use kortix_proto::v1::{CreateProjectRequest, GetProjectRequest, ListProjectsRequest};

use crate::Global;
use crate::client::{
    self, CliError, Client, Context, LONG_TIMEOUT, UNARY_TIMEOUT, unary, unary_within,
};
use crate::commands::git_credential::helper_command;
use crate::output::json::{ProjectClonedJson, ProjectCreatedJson, ProjectInfoJson, ProjectJson};
use crate::output::table::Table;
use crate::output::{
    self, BOLD, DIM, GREEN, RED, or_dash, paint, short_sha, table, terminal, time,
};

#[derive(Debug, clap::Args)]
pub struct ProjectsArgs {
    #[command(subcommand)]
    command: ProjectsCommand,
}

#[derive(Debug, Subcommand)]
enum ProjectsCommand {
    /// Create a project (a fresh repo, or one importing an existing repo's history).
    Create {
        /// Project name (unique).
        name: String,
        /// Local path or clone URL whose full history is imported.
        #[arg(long, value_name = "PATH_OR_URL")]
        import: Option<String>,
        /// Default branch (default: `main`, or the imported repo's HEAD branch).
        #[arg(long, value_name = "BRANCH")]
        default_branch: Option<String>,
        /// The account that owns it (you must be its owner or admin) [default: your
        /// personal account].
        #[arg(long, value_name = "ACCOUNT")]
        account: Option<String>,
    },
    /// List projects.
    #[command(alias = "list")]
    Ls,
    /// Show a project (by name or id), its head and manifest.
    Info {
        /// Project name or id.
        project: String,
    },
    /// Clone a project's repository; `git pull` and `git push` in the clone then
    /// authenticate through `kortix git-credential`, with no token typed.
    Clone {
        /// Project name or id.
        project: String,
        /// Where to clone it [default: the project's name].
        dir: Option<PathBuf>,
    },
}

pub fn run(global: &Global, args: ProjectsArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        let client = Client::connect(&ctx).await?;
        match args.command {
            ProjectsCommand::Create {
                name,
                import,
                default_branch,
                account,
            } => create(&ctx, &client, name, import, default_branch, account).await,
            ProjectsCommand::Ls => list(&ctx, &client).await,
            ProjectsCommand::Info { project } => info(&ctx, &client, project).await,
            ProjectsCommand::Clone { project, dir } => clone(&ctx, &client, project, dir).await,
        }
    })
}

async fn create(
    ctx: &Context,
    client: &Client,
    name: String,
    import: Option<String>,
    default_branch: Option<String>,
    account: Option<String>,
) -> Result<ExitCode, CliError> {
    let import_source = import
        .map(|source| absolute_if_local(&source))
        .unwrap_or_default();
    // Importing copies a whole history and may take minutes; a fresh project is quick.
    let timeout = if import_source.is_empty() {
        UNARY_TIMEOUT
    } else {
        LONG_TIMEOUT
    };
    let spinner = terminal::spinner(
        !ctx.json && !import_source.is_empty(),
        format!("importing {import_source} into project {name}"),
    );
    let request = CreateProjectRequest {
        name,
        import_source,
        default_branch: default_branch.unwrap_or_default(),
        account: account.unwrap_or_default(),
    };
    let result = client
        .call_within(
            "CreateProject",
            timeout,
            client
                .projects()
                .create_project(unary_within(request, timeout)),
        )
        .await;
    spinner.finish_and_clear();
    let project = result?;
    if ctx.json {
        output::print_json(&ProjectCreatedJson::from(&project))?;
    } else {
        output::print_text(&format!(
            "created project {} ({})\n{}",
            paint(BOLD, &project.name),
            project.id,
            table::details(&[
                ("default branch", project.default_branch.clone()),
                ("git url", project.git_url.clone()),
            ])
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The server resolves local paths on its own file system; for the usual local server that is
/// ours, so a relative path must be made absolute here. URLs pass through untouched.
fn absolute_if_local(source: &str) -> String {
    let looks_like_url = source.contains("://") || is_scp_like(source);
    if looks_like_url {
        return source.to_owned();
    }
    match std::path::absolute(source) {
        Ok(path) => path.display().to_string(),
        Err(_) => source.to_owned(),
    }
}

/// `user@host:path` as git understands it (no slash before the colon).
fn is_scp_like(source: &str) -> bool {
    match source.split_once(':') {
        Some((host, _)) => !host.is_empty() && !host.contains('/'),
        None => false,
    }
}

async fn list(ctx: &Context, client: &Client) -> Result<ExitCode, CliError> {
    let projects = client
        .call(
            "ListProjects",
            client
                .projects()
                .list_projects(unary(ListProjectsRequest {})),
        )
        .await?
        .projects;
    if ctx.json {
        output::print_json(&projects.iter().map(ProjectJson::from).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    if projects.is_empty() {
        output::note("no projects (create one with `kortix projects create NAME`)");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["NAME", "ID", "DEFAULT BRANCH", "CREATED", "GIT URL"]);
    for p in &projects {
        table.row(vec![
            p.name.as_str().into(),
            p.id.as_str().into(),
            p.default_branch.as_str().into(),
            time::human_ms(p.created_unix_ms).into(),
            p.git_url.as_str().into(),
        ]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}

async fn info(ctx: &Context, client: &Client, project: String) -> Result<ExitCode, CliError> {
    let info = client
        .call(
            "GetProject",
            client
                .projects()
                .get_project(unary(GetProjectRequest { project })),
        )
        .await?;
    if ctx.json {
        output::print_json(&ProjectInfoJson::from(&info))?;
        return Ok(ExitCode::SUCCESS);
    }
    let p = info.project.clone().unwrap_or_default();
    let manifest = if !info.manifest_error.is_empty() {
        paint(RED, &format!("rejected: {}", info.manifest_error))
    } else if info.manifest_json.is_empty() {
        "-".to_owned()
    } else {
        paint(GREEN, &manifest_summary(&info.manifest_json))
    };
    output::print_text(&table::details(&[
        ("name", p.name.clone()),
        ("id", p.id.clone()),
        ("default branch", p.default_branch.clone()),
        ("head", or_dash(short_sha(&info.head_sha))),
        ("git url", p.git_url.clone()),
        ("created", time::human_ms(p.created_unix_ms)),
        ("manifest", manifest),
    ]))?;
    Ok(ExitCode::SUCCESS)
}

async fn clone(
    ctx: &Context,
    client: &Client,
    project: String,
    dir: Option<PathBuf>,
) -> Result<ExitCode, CliError> {
    let info = client
        .call(
            "GetProject",
            client
                .projects()
                .get_project(unary(GetProjectRequest { project })),
        )
        .await?;
    let p = info.project.unwrap_or_default();
    let dir = dir.unwrap_or_else(|| PathBuf::from(&p.name));
    let dir = std::path::absolute(&dir).map_err(|e| CliError::file(&dir, "resolve", &e))?;
    // git runs the helper through a shell, maybe from another directory and without kortix on
    // PATH: it names this binary by its absolute path.
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Input(format!("cannot tell where this kortix binary is: {e}")))?;
    let helper = helper_command(&exe, &ctx.url, ctx.data_dir.as_deref());
    // The empty value first: helpers from the user's other git configs are neither asked for
    // nor handed this control plane's token.
    git(
        None,
        &[
            "-c",
            "credential.helper=",
            "-c",
            &format!("credential.helper={helper}"),
            "clone",
            &p.git_url,
            &dir.display().to_string(),
        ],
    )
    .await?;
    for value in ["", helper.as_str()] {
        git(
            Some(&dir),
            &["config", "--local", "--add", "credential.helper", value],
        )
        .await?;
    }
    if ctx.json {
        output::print_json(&ProjectClonedJson {
            project: p.name,
            dir: dir.display().to_string(),
        })?;
    } else {
        output::print_text(&format!(
            "cloned project {} into {}\n{}",
            paint(BOLD, &p.name),
            dir.display(),
            paint(
                DIM,
                "git pull and git push there authenticate through `kortix git-credential`"
            )
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `git ARGS` (in `dir`) with its messages on our stderr; never prompts.
async fn git(dir: Option<&std::path::Path>, args: &[&str]) -> Result<(), CliError> {
    let mut cmd = tokio::process::Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    let status = cmd
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| CliError::Input(format!("cannot run git (is it installed?): {e}")))?;
    if status.success() {
        Ok(())
    } else {
        let what = args
            .iter()
            .find(|a| !a.starts_with('-') && !a.contains('='))
            .unwrap_or(&"");
        Err(CliError::Refused(format!("git {what} failed ({status})")))
    }
}

/// "ok: 2 triggers, 1 template (3 errors)" from the normalized manifest JSON.
fn manifest_summary(manifest_json: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(manifest_json) else {
        return "present (unreadable JSON)".to_owned();
    };
    let count = |v: &serde_json::Value| v.as_array().map_or(0, Vec::len);
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut text = format!(
        "ok: {}, {}",
        plural(count(&value["triggers"]), "trigger"),
        plural(count(&value["sandbox"]["templates"]), "template"),
    );
    let errors = count(&value["errors"]);
    if errors > 0 {
        text.push_str(&format!(" ({} in entries)", plural(errors, "error")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pass_through_and_paths_become_absolute() {
        assert_eq!(absolute_if_local("https://h/r.git"), "https://h/r.git");
        assert_eq!(
            absolute_if_local("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(absolute_if_local("/srv/repo"), "/srv/repo");
        let rel = absolute_if_local("some/repo");
        assert!(rel.starts_with('/') && rel.ends_with("some/repo"), "{rel}");
        let dotted = absolute_if_local("./a:b");
        assert!(dotted.starts_with('/'), "{dotted}");
    }

    #[test]
    fn manifest_summary_counts_entries() {
        let json = r#"{"triggers":[{},{}],"sandbox":{"templates":[{}]},"errors":[{}]}"#;
        assert_eq!(
            manifest_summary(json),
            "ok: 2 triggers, 1 template (1 error in entries)"
        );
        assert_eq!(manifest_summary("{}"), "ok: 0 triggers, 0 templates");
    }
}
