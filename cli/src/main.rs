//! The `kortix` command. This file only parses arguments and dispatches;
//! each command group lives in `commands/`.

mod client;
mod commands;
mod logging;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// Kortix: projects, sessions and change requests for coding agents.
#[derive(Debug, Parser)]
#[command(name = "kortix", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command accepts, before or after the subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Control plane URL (http://HOST:PORT or https://HOST).
    #[arg(
        long,
        global = true,
        env = "KORTIX_URL",
        default_value = "http://127.0.0.1:8008",
        value_parser = client::parse_url
    )]
    pub url: String,
    /// Bearer token (otherwise the saved login, or the local admin token).
    #[arg(long, global = true, env = "KORTIX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print exactly one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Data directory of the local server (its admin.token is used for loopback URLs when no
    /// other token is known) [default: ~/.kortix].
    #[arg(long, global = true, env = "KORTIX_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// PEM CA certificate to trust for an https:// URL instead of the public roots.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with kortix.toml.
    Manifest(commands::manifest::ManifestArgs),
    /// Create people with their personal accounts (server admin) and show who you are.
    Accounts(commands::accounts::AccountsArgs),
    /// People in an account and their roles (owner, admin, member).
    Members(commands::members::MembersArgs),
    /// Who may do what on one project (manager, editor, viewer).
    Access(commands::access::AccessArgs),
    /// An account's audit log: who did which privileged action, when and from where.
    Audit(commands::audit::AuditArgs),
    /// Manage your bearer tokens.
    Tokens(commands::tokens::TokensArgs),
    /// Save a token for --url (checked against the server first).
    Login(commands::login::LoginArgs),
    /// Forget the token saved for --url.
    Logout(commands::login::LogoutArgs),
    /// Create, list and inspect projects.
    Projects(commands::projects::ProjectsArgs),
    /// git's credential helper for people: answers git with your token for this control
    /// plane's git URLs (`projects clone` sets it up).
    #[command(name = "git-credential")]
    GitCredential(commands::git_credential::GitCredentialArgs),
    /// Set, list and remove project secrets.
    Secrets(commands::secrets::SecretsArgs),
    /// The project's connectors: their tools and policies, credentials, the call log.
    Connectors(commands::connectors::ConnectorsArgs),
    /// Connector calls waiting for a person: list, approve, deny.
    Approvals(commands::connectors::ApprovalsArgs),
    /// [[apps]] (experimental, KORTIX_APPS_EXPERIMENTAL=true): list, deploy, logs, rollback.
    Apps(commands::apps::AppsArgs),
    /// The images sessions boot from (--sandbox docker): list, build, prune.
    Snapshots(commands::snapshots::SnapshotsArgs),
    /// Start, follow, prompt and stop agent sessions.
    Sessions(commands::sessions::SessionsArgs),
    /// Change requests: review and merge session branches.
    Cr(commands::cr::CrArgs),
    /// List and fire the manifest's triggers.
    Triggers(commands::triggers::TriggersArgs),
    /// Drive a project from Slack: bind it to a Slack app, list threads and their sessions.
    Channels(commands::channels::ChannelsArgs),
    /// Run the control plane in the foreground.
    Server(commands::server::ServerArgs),
    /// Quickstart: install the pinned OpenCode if needed and run the control plane.
    Up(commands::up::UpArgs),
}

/// Global flags only client commands use: the control plane's own commands do not list them.
const CLIENT_ONLY: [&str; 4] = ["url", "token", "json", "ca_cert"];

/// The command line, with the client-only global flags hidden from `server` and `up`: they
/// get hidden copies of their own, which global flags do not override.
fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let hidden: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| CLIENT_ONLY.contains(&a.get_id().as_str()))
        .map(|a| a.clone().global(false).hide(true))
        .collect();
    for name in ["server", "up"] {
        cmd = cmd.mut_subcommand(name, |sub| sub.args(hidden.clone()));
    }
    cmd
}

fn main() -> ExitCode {
    // clap exits with 2 on usage errors by itself.
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Manifest(args) => commands::manifest::run(&cli.global, args),
        Command::Accounts(args) => commands::accounts::run(&cli.global, args),
        Command::Members(args) => commands::members::run(&cli.global, args),
        Command::Audit(args) => commands::audit::run(&cli.global, args),
        Command::Access(args) => commands::access::run(&cli.global, args),
        Command::Tokens(args) => commands::tokens::run(&cli.global, args),
        Command::Login(args) => commands::login::run_login(&cli.global, args),
        Command::Logout(args) => commands::login::run_logout(&cli.global, args),
        Command::Projects(args) => commands::projects::run(&cli.global, args),
        Command::GitCredential(args) => commands::git_credential::run(&cli.global, args),
        Command::Secrets(args) => commands::secrets::run(&cli.global, args),
        Command::Connectors(args) => commands::connectors::run(&cli.global, args),
        Command::Approvals(args) => commands::connectors::run_approvals(&cli.global, args),
        Command::Apps(args) => commands::apps::run(&cli.global, args),
        Command::Snapshots(args) => commands::snapshots::run(&cli.global, args),
        Command::Sessions(args) => commands::sessions::run(&cli.global, args),
        Command::Cr(args) => commands::cr::run(&cli.global, args),
        Command::Triggers(args) => commands::triggers::run(&cli.global, args),
        Command::Channels(args) => commands::channels::run(&cli.global, args),
        Command::Server(args) => commands::server::run(&cli.global, args),
        Command::Up(args) => commands::up::run(&cli.global, args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command, as `(command path, argument id)`.
    fn all_args(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in cmd.get_arguments() {
            out.push((path.to_owned(), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            all_args(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn server_commands_do_not_list_client_flags() {
        for name in ["server", "up"] {
            let mut cmd = command();
            cmd.build();
            let help = cmd
                .find_subcommand_mut(name)
                .expect("subcommand")
                .render_long_help()
                .to_string();
            for flag in ["--url", "--token", "--json", "--ca-cert"] {
                assert!(!help.contains(flag), "{name} --help lists {flag}:\n{help}");
            }
            assert!(help.contains("--data-dir"), "{help}");
        }
        let mut cmd = command();
        cmd.build();
        let help = cmd
            .find_subcommand_mut("projects")
            .expect("projects")
            .render_long_help()
            .to_string();
        assert!(help.contains("--url"), "{help}");
    }

    #[test]
    fn every_flag_and_argument_has_help() {
        let mut cmd = command();
        cmd.build();
        let mut args = Vec::new();
        all_args(&cmd, "kortix", &mut args);
        let missing: Vec<String> = args
            .iter()
            .filter(|(_, a)| !matches!(a.get_id().as_str(), "help" | "version"))
            .filter(|(_, a)| a.get_help().is_none())
            .map(|(path, a)| format!("{path} {}", a.get_id()))
            .collect();
        assert!(missing.is_empty(), "without help: {missing:?}");
    }
}
