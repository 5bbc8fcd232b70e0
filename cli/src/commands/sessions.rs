//! `kortix sessions new|ls|info|stop|resume|rm|attach|chat|prompt-status`.

mod attach;
mod wait;

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use kortix_proto::v1::{
    CommandState, DeleteSessionRequest, GetCommandRequest, GetSessionRequest, ListSessionsRequest,
    ResumeSessionRequest, SendPromptRequest, Session, SessionStatus, StartSessionRequest,
    StopSessionRequest,
};

use crate::Global;
use crate::client::{self, CliError, Client, Context, unary};
use crate::output::json::{
    PromptSentJson, PromptStatusJson, SessionJson, SessionStartedJson, session_status,
};
use crate::output::table::{Cell, Table};
use crate::output::{
    self, BOLD, DIM, or_dash, paint, short_sha, status_style, table, terminal, time,
};

/// How often `sessions new` retries a start whose answer was lost in transit; the idempotency
/// key makes a retry return the session the first attempt created.
const START_ATTEMPTS: u32 = 3;

#[derive(Debug, clap::Args)]
pub struct SessionsArgs {
    #[command(subcommand)]
    command: SessionsCommand,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// Start a session (a sandbox with OpenCode on a new branch named after the session).
    New {
        /// Project name or id.
        #[arg(long, short)]
        project: String,
        /// The first prompt for the agent.
        #[arg(long)]
        prompt: Option<String>,
        /// Sandbox template slug (default: the manifest's [sandbox].default).
        #[arg(long)]
        template: Option<String>,
        /// OpenCode agent name (default: "default").
        #[arg(long)]
        agent: Option<String>,
        /// Continue work on an existing session branch instead of cutting a new one.
        #[arg(long, value_name = "BRANCH")]
        resume: Option<String>,
        /// Return once the session is running; exit 1 if it fails.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 600, requires = "wait")]
        wait_timeout: u64,
    },
    /// List sessions.
    #[command(alias = "list")]
    Ls {
        /// Only this project's sessions (name or id).
        #[arg(long, short)]
        project: Option<String>,
    },
    /// Show a session: status, branch, head commit, timestamps, failure reason, whether it
    /// can be resumed and what its last sandbox saved.
    #[command(alias = "show")]
    Info {
        /// Session id.
        id: String,
    },
    /// Stop a session's sandbox; its branch is kept.
    Stop {
        /// Session id.
        id: String,
        /// Return once the session has ended (its agent pushed, flushed and exited).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 120, requires = "wait")]
        wait_timeout: u64,
    },
    /// Resume a stopped or hibernated session in a new sandbox on the same branch, with its
    /// uncommitted work and OpenCode conversation restored.
    Resume {
        /// Session id.
        id: String,
        /// A prompt to continue with once it runs.
        #[arg(long)]
        prompt: Option<String>,
        /// Return once the session is running again; exit 1 if it fails.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 600, requires = "wait")]
        wait_timeout: u64,
    },
    /// Delete a finished session's record; its branch is kept.
    Rm {
        /// Session id.
        id: String,
    },
    /// Follow a session: its prompts, the assistant's replies, tool calls and their output,
    /// file edits, commits and state changes, live until it ends (Ctrl-C detaches).
    Attach {
        /// Session id.
        id: String,
        /// First record to show, by seq; 0 is the beginning.
        #[arg(long, value_name = "SEQ", conflicts_with = "tail")]
        from: Option<u64>,
        /// Start with the last N records, then follow.
        #[arg(long, value_name = "N")]
        tail: Option<u64>,
        /// Only records from the last DURATION (90s, 30m, 12h, 7d).
        #[arg(long, value_name = "DURATION", value_parser = time::parse_duration)]
        since: Option<Duration>,
        /// Stop after the stored records instead of following live ones.
        #[arg(long)]
        no_follow: bool,
        /// Show every record, OpenCode's bookkeeping events included.
        #[arg(long, short)]
        verbose: bool,
        /// Start each line with the local time of its record.
        #[arg(long, short)]
        timestamps: bool,
    },
    /// Send a prompt to a running session (`-` reads it from stdin); a hibernated session is
    /// resumed with it.
    Chat {
        /// Session id.
        id: String,
        /// The prompt text.
        text: String,
        /// OpenCode agent to address (default: the session's).
        #[arg(long)]
        agent: Option<String>,
    },
    /// Where a prompt sent with `chat` is: queued, sent to the agent, or delivered (acked).
    PromptStatus {
        /// Session id.
        id: String,
        /// The prompt's id, as `chat` printed it.
        prompt_id: String,
    },
}

pub fn run(global: &Global, args: SessionsArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::from_global(global);
    client::run_async(async move {
        let client = Client::connect(&ctx).await?;
        match args.command {
            SessionsCommand::New {
                project,
                prompt,
                template,
                agent,
                resume,
                wait,
                wait_timeout,
            } => {
                let request = StartSessionRequest {
                    project,
                    prompt: prompt.unwrap_or_default(),
                    template: template.unwrap_or_default(),
                    agent: agent.unwrap_or_default(),
                    idempotency_key: uuid::Uuid::new_v4().to_string(),
                    resume_branch: resume.unwrap_or_default(),
                };
                let wait = wait.then(|| Duration::from_secs(wait_timeout));
                new(&ctx, &client, request, wait).await
            }
            SessionsCommand::Ls { project } => list(&ctx, &client, project).await,
            SessionsCommand::Info { id } => info(&ctx, &client, id).await,
            SessionsCommand::Stop {
                id,
                wait,
                wait_timeout,
            } => {
                let wait = wait.then(|| Duration::from_secs(wait_timeout));
                stop(&ctx, &client, id, wait).await
            }
            SessionsCommand::Resume {
                id,
                prompt,
                wait,
                wait_timeout,
            } => {
                let wait = wait.then(|| Duration::from_secs(wait_timeout));
                resume(&ctx, &client, id, prompt.unwrap_or_default(), wait).await
            }
            SessionsCommand::Rm { id } => remove(&ctx, &client, id).await,
            SessionsCommand::Attach {
                id,
                from,
                tail,
                since,
                no_follow,
                verbose,
                timestamps,
            } => {
                attach::run(
                    &ctx,
                    &client,
                    attach::Options {
                        id,
                        from,
                        follow: !no_follow,
                        verbose,
                        timestamps,
                        tail,
                        since,
                    },
                )
                .await
            }
            SessionsCommand::Chat { id, text, agent } => chat(&ctx, &client, id, text, agent).await,
            SessionsCommand::PromptStatus { id, prompt_id } => {
                prompt_status(&ctx, &client, id, prompt_id).await
            }
        }
    })
}

async fn new(
    ctx: &Context,
    client: &Client,
    request: StartSessionRequest,
    wait: Option<Duration>,
) -> Result<ExitCode, CliError> {
    let session = start(client, request).await?;
    let headline = |s: &Session| format!("on project {} (branch {})", s.project_name, s.branch);
    report_start(ctx, client, session, wait, Started::New, headline).await
}

/// What `new` and `resume` report about.
#[derive(Clone, Copy)]
enum Started {
    New,
    Resumed,
}

/// Waits for a started or resumed session when asked, prints it (`headline` says where it
/// runs) and exits 0 unless a wait ended anywhere but `running`.
async fn report_start(
    ctx: &Context,
    client: &Client,
    mut session: Session,
    wait: Option<Duration>,
    how: Started,
    headline: impl Fn(&Session) -> String,
) -> Result<ExitCode, CliError> {
    if let Some(limit) = wait {
        session = wait::until(ctx, client, &session.id, wait::Until::Started, limit).await?;
    }
    let status = SessionStatus::try_from(session.status).unwrap_or(SessionStatus::Unspecified);
    if ctx.json {
        match how {
            Started::New => output::print_json(&SessionStartedJson::from(&session))?,
            Started::Resumed => output::print_json(&SessionJson::from(&session))?,
        }
    } else {
        output::print_text(&format!(
            "session {} {}: {}\n{}",
            paint(BOLD, &session.id),
            headline(&session),
            paint(
                status_style(session_status(session.status)),
                session_status(session.status)
            ),
            paint(
                DIM,
                &format!("follow it with: kortix sessions attach {}", session.id)
            ),
        ))?;
    }
    match (wait, status) {
        (None, _) | (Some(_), SessionStatus::Running) => Ok(ExitCode::SUCCESS),
        (Some(_), _) => Err(CliError::Refused(format!(
            "session {} did not {}: {}{}",
            session.id,
            match how {
                Started::New => "start",
                Started::Resumed => "resume",
            },
            session_status(session.status),
            if session.failure_reason.is_empty() {
                String::new()
            } else {
                format!(": {}", session.failure_reason)
            }
        ))),
    }
}

/// StartSession, retried with the same idempotency key when the connection failed mid-call.
async fn start(client: &Client, request: StartSessionRequest) -> Result<Session, CliError> {
    let mut attempt = 1;
    loop {
        let result = client
            .call(
                "StartSession",
                client.sessions().start_session(unary(request.clone())),
            )
            .await;
        match result {
            Err(err) if attempt < START_ATTEMPTS && err.is_transient() => {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn list(
    ctx: &Context,
    client: &Client,
    project: Option<String>,
) -> Result<ExitCode, CliError> {
    let request = ListSessionsRequest {
        project: project.unwrap_or_default(),
    };
    let sessions = client
        .call(
            "ListSessions",
            client.sessions().list_sessions(unary(request)),
        )
        .await?
        .sessions;
    if ctx.json {
        output::print_json(&sessions.iter().map(SessionJson::from).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    if sessions.is_empty() {
        output::note("no sessions");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "ID", "PROJECT", "STATUS", "ORIGIN", "HEAD", "SAVED", "CREATED",
    ]);
    for s in &sessions {
        let status = session_status(s.status);
        let status = if s.resumable {
            format!("{status} (resumable)")
        } else {
            status.to_string()
        };
        table.row(vec![
            s.id.as_str().into(),
            s.project_name.as_str().into(),
            Cell::styled(&status, status_style(session_status(s.status))),
            or_dash(&s.origin).into(),
            or_dash(short_sha(&s.head_sha)).into(),
            saved_brief(s).into(),
            time::human_ms(s.created_unix_ms).into(),
        ]);
    }
    output::print_text(&table.render())?;
    Ok(ExitCode::SUCCESS)
}

async fn info(ctx: &Context, client: &Client, id: String) -> Result<ExitCode, CliError> {
    let session = client
        .call(
            "GetSession",
            client
                .sessions()
                .get_session(unary(GetSessionRequest { id })),
        )
        .await?;
    print_session(ctx, &session)?;
    Ok(ExitCode::SUCCESS)
}

fn print_session(ctx: &Context, s: &Session) -> Result<(), CliError> {
    if ctx.json {
        return output::print_json(&SessionJson::from(s));
    }
    let status = session_status(s.status);
    let mut rows = vec![
        ("id", s.id.clone()),
        ("project", s.project_name.clone()),
        ("branch", s.branch.clone()),
        ("status", paint(status_style(status), status)),
    ];
    if !s.failure_reason.is_empty() {
        rows.push(("failure", s.failure_reason.clone()));
    } else if !s.end_reason.is_empty() {
        rows.push(("end reason", s.end_reason.clone()));
    }
    rows.extend([
        ("head", or_dash(&s.head_sha)),
        ("template", or_dash(&s.template)),
        ("agent", or_dash(&s.agent)),
        ("origin", or_dash(&s.origin)),
        ("created at", time::human_ms(s.created_unix_ms)),
        ("started at", time::human_ms(s.started_unix_ms)),
        ("ended at", time::human_ms(s.ended_unix_ms)),
        ("last heartbeat", time::human_ms(s.last_heartbeat_unix_ms)),
        ("records", s.last_seq.to_string()),
    ]);
    if !s.prompt.is_empty() {
        rows.push(("prompt", s.prompt.clone()));
    }
    rows.push((
        "resumable",
        if s.resumable {
            format!("yes: kortix sessions resume {} [--prompt TEXT]", s.id)
        } else {
            "no".to_string()
        },
    ));
    if s.resumes > 0 {
        rows.push(("resumed", format!("{} time(s)", s.resumes)));
    }
    if let Some(w) = &s.saved {
        rows.push((
            "uncommitted work",
            if w.wip_commit.is_empty() {
                or_dash(&w.wip_note)
            } else {
                format!(
                    "{} at refs/kortix/wip/{} ({})",
                    short_sha(&w.wip_commit),
                    s.id,
                    w.wip_note
                )
            },
        ));
        rows.push((
            "conversation",
            if w.conversation_bytes > 0 {
                format!("{} bytes saved", w.conversation_bytes)
            } else {
                or_dash(&w.conversation_note)
            },
        ));
        rows.push(("saved at", time::human_ms(w.saved_unix_ms)));
    }
    output::print_text(&table::details(&rows))
}

/// The SAVED column: what the last sandbox left for a resume.
fn saved_brief(s: &Session) -> String {
    let Some(w) = &s.saved else {
        return "-".to_string();
    };
    let mut parts = Vec::new();
    if !w.wip_commit.is_empty() {
        parts.push(format!("wip {}", short_sha(&w.wip_commit)));
    }
    if w.conversation_bytes > 0 {
        parts.push(format!("chat {} KiB", w.conversation_bytes.div_ceil(1024)));
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(", ")
    }
}

async fn resume(
    ctx: &Context,
    client: &Client,
    id: String,
    prompt: String,
    wait: Option<Duration>,
) -> Result<ExitCode, CliError> {
    let session = client
        .call(
            "ResumeSession",
            client
                .sessions()
                .resume_session(unary(ResumeSessionRequest { id, prompt })),
        )
        .await?;
    let headline = |s: &Session| format!("resuming on branch {}", s.branch);
    report_start(ctx, client, session, wait, Started::Resumed, headline).await
}

async fn stop(
    ctx: &Context,
    client: &Client,
    id: String,
    wait: Option<Duration>,
) -> Result<ExitCode, CliError> {
    let mut session = client
        .call(
            "StopSession",
            client
                .sessions()
                .stop_session(unary(StopSessionRequest { id })),
        )
        .await?;
    if let Some(limit) = wait {
        session = wait::until(ctx, client, &session.id, wait::Until::Ended, limit).await?;
    }
    if ctx.json {
        output::print_json(&SessionJson::from(&session))?;
    } else {
        let status = session_status(session.status);
        output::print_text(&format!(
            "session {}: {} (branch {} kept)",
            paint(BOLD, &session.id),
            paint(status_style(status), status),
            session.branch
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove(ctx: &Context, client: &Client, id: String) -> Result<ExitCode, CliError> {
    let session = client
        .call(
            "DeleteSession",
            client
                .sessions()
                .delete_session(unary(DeleteSessionRequest { id })),
        )
        .await?;
    if ctx.json {
        output::print_json(&SessionJson::from(&session))?;
    } else {
        output::print_text(&format!(
            "deleted session {} (branch {} kept)",
            paint(BOLD, &session.id),
            session.branch
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn chat(
    ctx: &Context,
    client: &Client,
    id: String,
    text: String,
    agent: Option<String>,
) -> Result<ExitCode, CliError> {
    let text = if text == "-" {
        terminal::read_secret("Prompt: ", "prompt")?
    } else {
        text
    };
    if text.trim().is_empty() {
        return Err(CliError::Input("refusing an empty prompt".into()));
    }
    let request = SendPromptRequest {
        session_id: id.clone(),
        text,
        agent: agent.unwrap_or_default(),
    };
    let sent = client
        .call("SendPrompt", client.sessions().send_prompt(unary(request)))
        .await?;
    if ctx.json {
        output::print_json(&PromptSentJson {
            session: id,
            prompt_id: sent.prompt_id,
            delivered: sent.delivered,
            queued: sent.queued,
        })?;
    } else {
        output::print_text(&if sent.prompt_id == "initial" {
            format!(
                "session {} was not running: resuming it with the prompt",
                paint(BOLD, &id)
            )
        } else if sent.delivered {
            format!(
                "prompt {} delivered to session {}",
                sent.prompt_id,
                paint(BOLD, &id)
            )
        } else {
            format!(
                "prompt for session {} queued for the agent (id {}): it is delivered once the agent takes it",
                paint(BOLD, &id),
                sent.prompt_id
            )
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn prompt_status(
    ctx: &Context,
    client: &Client,
    id: String,
    prompt_id: String,
) -> Result<ExitCode, CliError> {
    let request = GetCommandRequest {
        session_id: id.clone(),
        command_id: prompt_id,
    };
    let status = client
        .call("GetCommand", client.sessions().get_command(unary(request)))
        .await?;
    let state = match status.state() {
        CommandState::Queued => "queued",
        CommandState::Sent => "sent",
        CommandState::Delivered => "delivered",
        CommandState::Unspecified => "unknown",
    };
    if ctx.json {
        return output::print_json(&PromptStatusJson {
            session: id,
            prompt_id: status.command_id,
            state,
            sends: status.sends,
            queued_at: time::rfc3339_ms(status.queued_unix_ms),
            delivered_at: (status.delivered_unix_ms > 0)
                .then(|| time::rfc3339_ms(status.delivered_unix_ms))
                .flatten(),
        })
        .map(|()| ExitCode::SUCCESS);
    }
    let sends = match status.sends {
        1 => "sent once".to_string(),
        n => format!("sent {n} times"),
    };
    let line = match status.state() {
        CommandState::Delivered => format!(
            "prompt {} of session {}: delivered {} ({sends})",
            status.command_id,
            paint(BOLD, &id),
            time::human_with_relative(status.delivered_unix_ms)
        ),
        CommandState::Sent => format!(
            "prompt {} of session {}: {sends}, not acked by the agent yet (queued {}); it is sent again when the agent reconnects",
            status.command_id,
            paint(BOLD, &id),
            time::human_with_relative(status.queued_unix_ms)
        ),
        _ => format!(
            "prompt {} of session {}: queued {}, waiting for the agent to connect",
            status.command_id,
            paint(BOLD, &id),
            time::human_with_relative(status.queued_unix_ms)
        ),
    };
    output::print_text(&line)?;
    Ok(ExitCode::SUCCESS)
}
