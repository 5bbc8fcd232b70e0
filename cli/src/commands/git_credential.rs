//! `kortix git-credential get|store|erase`: git's credential-helper protocol for people.
//!
//! Configured as `!<absolute path of kortix> --url URL git-credential` (what `projects clone`
//! sets), git asks it for credentials; it answers with the caller's token (the same one every
//! other command uses: `--token`/`KORTIX_TOKEN`, the saved login, the local admin token) but
//! only for the control plane's own git URLs, so the token never goes to another host. `store`
//! and `erase` do nothing: tokens are managed with `kortix login`, not by git.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use crate::Global;
use crate::client::{CliError, credentials};

/// Largest credential request read from git.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// The user name sent with the token (the control plane reads only the password).
const USERNAME: &str = "kortix";

#[derive(Debug, clap::Args)]
pub struct GitCredentialArgs {
    /// What git asks: `get` answers with the token; `store` and `erase` are accepted and
    /// ignored.
    #[arg(value_enum)]
    operation: Operation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Operation {
    Get,
    Store,
    Erase,
}

pub fn run(global: &Global, args: GitCredentialArgs) -> anyhow::Result<ExitCode> {
    let mut input = String::new();
    std::io::stdin()
        .lock()
        .take(MAX_REQUEST_BYTES)
        .read_to_string(&mut input)
        .map_err(|e| anyhow::anyhow!("reading git's credential request: {e}"))?;
    if args.operation != Operation::Get {
        return Ok(ExitCode::SUCCESS);
    }
    let request = parse_request(&input);
    if !for_control_plane(&request, &global.url) {
        // Not ours: say nothing, so git asks its other helpers or the user.
        return Ok(ExitCode::SUCCESS);
    }
    let token = credentials::resolve_token(
        global.token.as_deref(),
        &global.url,
        global.data_dir.as_deref(),
    )
    .map_err(|e: CliError| anyhow::anyhow!(e))?;
    let Some((token, _)) = token else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut out = std::io::stdout().lock();
    write!(out, "username={USERNAME}\npassword={token}\n")
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::anyhow!("answering git: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// git's `key=value` lines up to the first blank line.
fn parse_request(input: &str) -> BTreeMap<String, String> {
    input
        .as_bytes()
        .lines()
        .map_while(Result::ok)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| {
            line.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Whether git asks about the control plane at `url`: same scheme and host (with port).
fn for_control_plane(request: &BTreeMap<String, String>, url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let asked_scheme = request.get("protocol").map(String::as_str).unwrap_or("");
    let asked_host = request.get("host").map(String::as_str).unwrap_or("");
    !authority.is_empty()
        && asked_scheme.eq_ignore_ascii_case(scheme)
        && asked_host.eq_ignore_ascii_case(authority)
}

/// The `credential.helper` value that runs this very binary against `url` (git's `!command`
/// form, run by a shell, so the path is quoted).
pub fn helper_command(exe: &Path, url: &str, data_dir: Option<&Path>) -> String {
    let mut command = format!(
        "!{} --url {}",
        shell_quote(&exe.display().to_string()),
        shell_quote(url)
    );
    if let Some(dir) = data_dir {
        command.push_str(&format!(
            " --data-dir {}",
            shell_quote(&dir.display().to_string())
        ));
    }
    command.push_str(" git-credential");
    command
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_git_requests() {
        let req =
            parse_request("protocol=http\nhost=127.0.0.1:8008\npath=git/app.git\n\nignored=1\n");
        assert_eq!(req.get("host").map(String::as_str), Some("127.0.0.1:8008"));
        assert_eq!(req.get("path").map(String::as_str), Some("git/app.git"));
        assert!(!req.contains_key("ignored"));
    }

    #[test]
    fn answers_only_for_the_control_plane() {
        let req =
            |proto: &str, host: &str| parse_request(&format!("protocol={proto}\nhost={host}\n"));
        let url = "http://127.0.0.1:8008";
        assert!(for_control_plane(&req("http", "127.0.0.1:8008"), url));
        assert!(for_control_plane(
            &req("https", "Kortix.Example.com"),
            "https://kortix.example.com/"
        ));
        assert!(!for_control_plane(&req("http", "127.0.0.1:9999"), url));
        assert!(!for_control_plane(&req("https", "127.0.0.1:8008"), url));
        assert!(!for_control_plane(&req("http", "github.com"), url));
        assert!(!for_control_plane(&BTreeMap::new(), url));
    }

    #[test]
    fn helper_runs_this_binary_by_absolute_path() {
        let cmd = helper_command(
            Path::new("/opt/my tools/kortix"),
            "http://127.0.0.1:8008",
            Some(Path::new("/home/o'neil/.kortix")),
        );
        assert_eq!(
            cmd,
            r"!'/opt/my tools/kortix' --url 'http://127.0.0.1:8008' --data-dir '/home/o'\''neil/.kortix' git-credential"
        );
    }
}
