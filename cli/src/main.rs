//! The `kortix` command. This file only parses arguments and dispatches;
//! each command group lives in `commands/`.

mod client;
mod commands;
mod logging;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Create accounts (admin) and show the current one.
    Accounts(commands::accounts::AccountsArgs),
    /// Manage the calling account's bearer tokens.
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
    /// Start, follow, prompt and stop agent sessions.
    Sessions(commands::sessions::SessionsArgs),
    /// Change requests: review and merge session branches.
    Cr(commands::cr::CrArgs),
    /// List and fire the manifest's triggers.
    Triggers(commands::triggers::TriggersArgs),
    /// Run the control plane in the foreground.
    Server(commands::server::ServerArgs),
    /// Quickstart: install the pinned OpenCode if needed and run the control plane.
    Up(commands::up::UpArgs),
}

fn main() -> ExitCode {
    // clap exits with 2 on usage errors by itself.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Manifest(args) => commands::manifest::run(&cli.global, args),
        Command::Accounts(args) => commands::accounts::run(&cli.global, args),
        Command::Tokens(args) => commands::tokens::run(&cli.global, args),
        Command::Login(args) => commands::login::run_login(&cli.global, args),
        Command::Logout(args) => commands::login::run_logout(&cli.global, args),
        Command::Projects(args) => commands::projects::run(&cli.global, args),
        Command::GitCredential(args) => commands::git_credential::run(&cli.global, args),
        Command::Secrets(args) => commands::secrets::run(&cli.global, args),
        Command::Sessions(args) => commands::sessions::run(&cli.global, args),
        Command::Cr(args) => commands::cr::run(&cli.global, args),
        Command::Triggers(args) => commands::triggers::run(&cli.global, args),
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
