//! `kortix-agent git-credential [--socket PATH] get|store|erase`: git's credential helper.
//! It asks the daemon over its unix socket; it never stores anything.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use super::protocol::{Attributes, MAX_INPUT_BYTES};

pub const SOCKET_ENV: &str = "KORTIX_CREDENTIAL_SOCKET";

/// Runs the helper; returns the process exit code.
pub fn run(
    args: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let mut socket: Option<PathBuf> = std::env::var_os(SOCKET_ENV).map(PathBuf::from);
    let mut action = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--socket" => socket = it.next().map(PathBuf::from),
            a if action.is_none() => action = Some(a.to_owned()),
            _ => {}
        }
    }
    let input = match read_input(stdin) {
        Ok(i) => i,
        Err(e) => {
            let _ = writeln!(stderr, "kortix-agent git-credential: {e}");
            return 1;
        }
    };
    match action.as_deref() {
        // Tokens are minted per request; there is nothing to store or erase.
        Some("store" | "erase") => 0,
        Some("get") => {
            let Some(socket) = socket else {
                let _ = writeln!(
                    stderr,
                    "kortix-agent git-credential: no daemon socket (--socket or {SOCKET_ENV})"
                );
                return 1;
            };
            match ask(&socket, &input) {
                Ok(answer) => {
                    if stdout
                        .write_all(&answer.to_bytes())
                        .and_then(|_| stdout.flush())
                        .is_err()
                    {
                        return 1;
                    }
                    0
                }
                Err(e) => {
                    let _ = writeln!(
                        stderr,
                        "kortix-agent git-credential: {}: {e}",
                        socket.display()
                    );
                    1
                }
            }
        }
        _ => {
            let _ = writeln!(
                stderr,
                "usage: kortix-agent git-credential [--socket PATH] get|store|erase"
            );
            2
        }
    }
}

fn read_input(stdin: &mut dyn Read) -> std::io::Result<Attributes> {
    let mut buf = Vec::new();
    stdin
        .take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    Attributes::parse(&buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn ask(socket: &std::path::Path, request: &Attributes) -> std::io::Result<Attributes> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(40)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(&request.to_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut buf = Vec::new();
    (&mut stream)
        .take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    Attributes::parse(&buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
