//! `kortix cr open|ls|show|diff|merge|close|reopen`: change requests, numbered per project.

mod diffstat;

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use kortix_proto::v1::{
    ChangeRequest, ChangeRequestDetail, ChangeRequestRef, ChangeRequestState,
    ListChangeRequestsRequest, OpenChangeRequestRequest, PageRequest,
};

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::json::{
    ChangeRequestJson, CrDetailJson, CrMergedJson, CrOpenedJson, DiffJson, cr_state,
};
use crate::output::table::{Cell, Table};
use crate::output::{
    self, BOLD, CYAN, DIM, GREEN, RED, or_dash, paint, short_sha, status_style, time,
};

/// Page size for listing, and the most pages read (bounds memory and time).
const PAGE_SIZE: u32 = 100;
const MAX_PAGES: usize = 100;

#[derive(Debug, clap::Args)]
pub struct CrArgs {
    #[command(subcommand)]
    command: CrCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StateFilter {
    Open,
    Closed,
    Merged,
    All,
}

#[derive(Debug, Subcommand)]
enum CrCommand {
    /// Open a CR from a session's branch (or any non-default branch) onto the default branch.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["session", "branch"])))]
    Open {
        /// Project name or id.
        #[arg(long, short)]
        project: String,
        /// The session whose branch to propose.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// The branch to propose.
        #[arg(long, value_name = "BRANCH")]
        branch: Option<String>,
        /// Title [default: the subject of the branch's newest commit].
        #[arg(long)]
        title: Option<String>,
        /// Description shown with the CR.
        #[arg(long)]
        body: Option<String>,
    },
    /// List CRs.
    #[command(alias = "list")]
    Ls {
        /// Project name or id.
        #[arg(long, short)]
        project: Option<String>,
        /// Only CRs in this state (default: all).
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
    },
    /// Show a CR with its diff stats and mergeability.
    Show(CrRef),
    /// Print a CR's unified diff (merge-base...head).
    Diff(CrRef),
    /// Merge a CR (fast-forward when possible, else a merge commit).
    Merge(CrRef),
    /// Close a CR without merging.
    Close(CrRef),
    /// Reopen a closed CR.
    Reopen(CrRef),
}

#[derive(Debug, clap::Args)]
struct CrRef {
    /// CR number (per project).
    number: u64,
    /// Project name or id.
    #[arg(long, short)]
    project: String,
}

impl CrRef {
    fn to_proto(&self) -> ChangeRequestRef {
        ChangeRequestRef {
            project: self.project.clone(),
            number: self.number,
        }
    }
}

pub fn run(global: &Global, args: CrArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        let client = Client::connect(&ctx).await?;
        match args.command {
            CrCommand::Open {
                project,
                session,
                branch,
                title,
                body,
            } => {
                let request = OpenChangeRequestRequest {
                    project,
                    session_id: session.unwrap_or_default(),
                    branch: branch.unwrap_or_default(),
                    title: title.unwrap_or_default(),
                    body: body.unwrap_or_default(),
                };
                open(&ctx, &client, request).await
            }
            CrCommand::Ls { project, state } => list(&ctx, &client, project, state).await,
            CrCommand::Show(r) => show(&ctx, &client, r.to_proto()).await,
            CrCommand::Diff(r) => diff(&ctx, &client, r.to_proto()).await,
            CrCommand::Merge(r) => merge(&ctx, &client, r.to_proto()).await,
            CrCommand::Close(r) => close(&ctx, &client, r.to_proto(), false).await,
            CrCommand::Reopen(r) => close(&ctx, &client, r.to_proto(), true).await,
        }
    })
}

async fn open(
    ctx: &Context,
    client: &Client,
    request: OpenChangeRequestRequest,
) -> Result<ExitCode, CliError> {
    let cr = client
        .call(
            "OpenChangeRequest",
            client.change_requests().open_change_request(unary(request)),
        )
        .await?;
    if ctx.json {
        output::print_json(&CrOpenedJson::from(&cr))?;
    } else {
        output::print_text(&format!(
            "opened CR #{} {} ({} → {})",
            cr.number,
            paint(BOLD, &cr.title),
            cr.head,
            cr.base
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(
    ctx: &Context,
    client: &Client,
    project: Option<String>,
    state: Option<StateFilter>,
) -> Result<ExitCode, CliError> {
    let state = match state {
        None | Some(StateFilter::All) => ChangeRequestState::Unspecified,
        Some(StateFilter::Open) => ChangeRequestState::Open,
        Some(StateFilter::Closed) => ChangeRequestState::Closed,
        Some(StateFilter::Merged) => ChangeRequestState::Merged,
    };
    let mut all = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let request = ListChangeRequestsRequest {
            project: project.clone().unwrap_or_default(),
            state: state as i32,
            page: Some(PageRequest {
                page_size: PAGE_SIZE,
                page_token: token.clone(),
            }),
        };
        let page = client
            .call(
                "ListChangeRequests",
                client
                    .change_requests()
                    .list_change_requests(unary(request)),
            )
            .await?;
        all.extend(page.change_requests);
        if page.next_page_token.is_empty() || page.next_page_token == token {
            break;
        }
        token = page.next_page_token;
    }
    if ctx.json {
        output::print_json(&all.iter().map(ChangeRequestJson::from).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        output::note("no change requests");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["#", "STATE", "TITLE", "BRANCHES", "UPDATED"]);
    for cr in &all {
        let state = cr_state(cr.state);
        table.row(vec![
            cr.number.to_string().into(),
            Cell::styled(state, status_style(state)),
            cr.title.as_str().into(),
            format!("{} → {}", cr.head, cr.base).into(),
            time::human_ms(cr.updated_unix_ms).into(),
        ]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}

async fn show(ctx: &Context, client: &Client, r: ChangeRequestRef) -> Result<ExitCode, CliError> {
    let detail = client
        .call(
            "GetChangeRequest",
            client.change_requests().get_change_request(unary(r)),
        )
        .await?;
    if ctx.json {
        output::print_json(&CrDetailJson::from(&detail))?;
    } else {
        output::print_text(&render_detail(&detail))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn render_detail(d: &ChangeRequestDetail) -> String {
    let cr = d.change_request.clone().unwrap_or_default();
    let state = cr_state(cr.state);
    let mut out = format!(
        "{} {}  [{}]\n",
        paint(BOLD, &format!("#{}", cr.number)),
        paint(BOLD, &cr.title),
        paint(status_style(state), state)
    );
    out.push_str(&format!(
        "{} → {}  ({} → {})\n",
        cr.head,
        cr.base,
        or_dash(short_sha(&cr.head_sha)),
        or_dash(short_sha(&cr.base_sha))
    ));
    let mut facts = vec![format!("created {}", time::human_ms(cr.created_unix_ms))];
    if cr.updated_unix_ms != 0 {
        facts.push(format!("updated {}", time::human_ms(cr.updated_unix_ms)));
    }
    if !cr.session_id.is_empty() {
        facts.push(format!("session {}", cr.session_id));
    }
    out.push_str(&paint(DIM, &facts.join(", ")));
    out.push('\n');
    match ChangeRequestState::try_from(cr.state) {
        Ok(ChangeRequestState::Merged) => out.push_str(&format!(
            "merged {} as {}\n",
            time::human_ms(cr.merged_unix_ms),
            or_dash(short_sha(&cr.merge_commit))
        )),
        Ok(ChangeRequestState::Open) => {
            let ahead = format!(
                "{} commit{} ahead, {} behind",
                d.commits_ahead,
                if d.commits_ahead == 1 { "" } else { "s" },
                d.commits_behind
            );
            if d.mergeable {
                out.push_str(&format!("{} ({ahead})\n", paint(GREEN, "mergeable")));
            } else if d.conflicting_paths.is_empty() {
                out.push_str(&format!("{} ({ahead})\n", paint(RED, "not mergeable")));
            } else {
                out.push_str(&format!(
                    "{} ({ahead})\n",
                    paint(
                        RED,
                        &format!("conflicts in: {}", d.conflicting_paths.join(", "))
                    )
                ));
            }
        }
        _ => {}
    }
    if !cr.body.trim().is_empty() {
        out.push('\n');
        for line in cr.body.trim_end().lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out.push('\n');
    out.push_str(&diffstat::render(&d.files, d.insertions, d.deletions));
    out
}

async fn diff(ctx: &Context, client: &Client, r: ChangeRequestRef) -> Result<ExitCode, CliError> {
    let diff = client
        .call("GetDiff", client.change_requests().get_diff(unary(r)))
        .await?;
    if ctx.json {
        output::print_json(&DiffJson::from(&diff))?;
    } else if !diff.diff.is_empty() {
        let text = colorize_diff(&diff.diff);
        if !output::pager::page(&text)? {
            output::print_text(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Git-style colours (dropped automatically when stdout is not a terminal).
fn colorize_diff(diff: &str) -> String {
    let mut out = String::with_capacity(diff.len() + diff.len() / 8);
    for line in diff.split_inclusive('\n') {
        let (text, newline) = match line.strip_suffix('\n') {
            Some(text) => (text, "\n"),
            None => (line, ""),
        };
        let header = ["diff --git", "index ", "+++", "---"];
        let style = if header.iter().any(|h| text.starts_with(h)) {
            Some(BOLD)
        } else if text.starts_with("@@") {
            Some(CYAN)
        } else if text.starts_with('+') {
            Some(GREEN)
        } else if text.starts_with('-') {
            Some(RED)
        } else {
            None
        };
        match style {
            Some(style) => out.push_str(&paint(style, text)),
            None => out.push_str(text),
        }
        out.push_str(newline);
    }
    out
}

async fn merge(ctx: &Context, client: &Client, r: ChangeRequestRef) -> Result<ExitCode, CliError> {
    let result = client
        .call(
            "MergeChangeRequest",
            client
                .change_requests()
                .merge_change_request(unary(r.clone())),
        )
        .await;
    let cr = match result {
        Ok(cr) => cr,
        Err(err) if err.code() == Some(tonic::Code::FailedPrecondition) => {
            return Err(explain_refusal(client, r, err).await);
        }
        Err(err) => return Err(err),
    };
    if ctx.json {
        output::print_json(&CrMergedJson::from(&cr))?;
    } else {
        output::print_text(&format!(
            "merged CR #{} into {} as {}",
            cr.number,
            cr.base,
            paint(BOLD, short_sha(&cr.merge_commit))
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Turns a refused merge into "merge refused: conflicts in: a, b" when the refusal is a
/// conflict; otherwise keeps the server's reason.
async fn explain_refusal(client: &Client, r: ChangeRequestRef, err: CliError) -> CliError {
    let reason = match &err {
        CliError::Rpc { status, .. } => status.message().to_owned(),
        other => other.to_string(),
    };
    let preview = client
        .call(
            "MergePreview",
            client.change_requests().merge_preview(unary(r)),
        )
        .await;
    match preview {
        Ok(p) if !p.conflicting_paths.is_empty() => CliError::Refused(format!(
            "merge refused: conflicts in: {}",
            p.conflicting_paths.join(", ")
        )),
        // The server may already phrase it as a refusal.
        _ => CliError::Refused(format!(
            "merge refused: {}",
            reason.strip_prefix("merge refused: ").unwrap_or(&reason)
        )),
    }
}

async fn close(
    ctx: &Context,
    client: &Client,
    r: ChangeRequestRef,
    reopen: bool,
) -> Result<ExitCode, CliError> {
    let cr: ChangeRequest = if reopen {
        client
            .call(
                "ReopenChangeRequest",
                client.change_requests().reopen_change_request(unary(r)),
            )
            .await?
    } else {
        client
            .call(
                "CloseChangeRequest",
                client.change_requests().close_change_request(unary(r)),
            )
            .await?
    };
    if ctx.json {
        output::print_json(&ChangeRequestJson::from(&cr))?;
    } else {
        let state = cr_state(cr.state);
        output::print_text(&format!(
            "CR #{} {}: {}",
            cr.number,
            paint(BOLD, &cr.title),
            paint(status_style(state), state)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_colours_wrap_whole_lines_and_keep_text() {
        let diff = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n ctx";
        let out = colorize_diff(diff);
        assert!(out.contains(&paint(RED, "-old")));
        assert!(out.contains(&paint(GREEN, "+new")));
        assert!(out.contains(&paint(BOLD, "--- a/x")));
        assert!(out.ends_with("\n ctx"));
    }

    #[test]
    fn detail_mentions_conflicts() {
        let d = ChangeRequestDetail {
            change_request: Some(ChangeRequest {
                number: 4,
                title: "Fix".into(),
                state: 1,
                head: "s1".into(),
                base: "main".into(),
                ..Default::default()
            }),
            conflicting_paths: vec!["a.txt".into(), "b.txt".into()],
            ..Default::default()
        };
        let text = render_detail(&d);
        assert!(text.contains("conflicts in: a.txt, b.txt"), "{text}");
        assert!(text.contains("s1 → main"), "{text}");
    }
}
