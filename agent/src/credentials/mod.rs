//! Git credentials, just in time: the `git-credential` helper mode and the daemon's socket.

pub mod helper;
pub mod protocol;
pub mod server;

pub use server::{CredentialServer, Provider, RepoTarget, serve};

#[cfg(test)]
mod tests {
    use super::*;
    use kortix_proto::v1::{GitCredentialRequest, GitCredentialResponse};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Mutex};

    use crate::records::{RecordSink, Spool, SpoolOptions};

    fn sink(dir: &std::path::Path) -> RecordSink {
        let s = RecordSink::new(Spool::open(&dir.join("spool"), SpoolOptions::default()).unwrap());
        s.activate(0).unwrap();
        s
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn helper_gets_a_token_through_the_socket_only_for_the_repo_host() {
        let tmp = tempfile::tempdir().unwrap();
        let seen: Arc<Mutex<Vec<GitCredentialRequest>>> = Arc::default();
        let seen2 = seen.clone();
        let provider: Provider = Arc::new(move |req| {
            seen2.lock().unwrap().push(req);
            Box::pin(async {
                Ok(GitCredentialResponse {
                    username: "x-kortix".into(),
                    password: "tok-123".into(),
                    expires_unix_s: crate::enroll::unix_now() + 600,
                })
            })
        });
        let target = RepoTarget::from_url("https://cp.example:8443/git/p1.git").unwrap();
        assert_eq!(target.host, "cp.example:8443");
        let server = serve(&tmp.path().join("run"), target, provider, sink(tmp.path())).unwrap();
        let mode = std::fs::metadata(&server.socket)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(tmp.path().join("run"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);

        let socket = server.socket.display().to_string();
        let run_helper = move |input: &'static str, action: &'static str| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let (mut out, mut err) = (Vec::new(), Vec::new());
                let code = helper::run(
                    &["--socket".into(), socket, action.into()],
                    &mut input.as_bytes(),
                    &mut out,
                    &mut err,
                );
                (
                    code,
                    String::from_utf8(out).unwrap(),
                    String::from_utf8(err).unwrap(),
                )
            })
            .join()
            .unwrap()
        };
        let (code, out, err) = run_helper("protocol=https\nhost=cp.example:8443\n\n", "get");
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("username=x-kortix\n") && out.contains("password=tok-123\n"),
            "{out}"
        );
        assert!(out.contains("password_expiry_utc="));
        // Cached: a second get does not call the control plane again.
        let (code, out, _) = run_helper("protocol=https\nhost=cp.example:8443\n\n", "get");
        assert_eq!(code, 0);
        assert!(out.contains("password=tok-123"));
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(seen.lock().unwrap()[0].path, "git/p1.git");
        // Another host never gets the token.
        let (code, out, _) = run_helper("protocol=https\nhost=github.com\n\n", "get");
        assert_eq!((code, out.as_str()), (0, "\n"));
        let (code, out, _) = run_helper("protocol=http\nhost=cp.example:8443\n\n", "get");
        assert_eq!((code, out.as_str()), (0, "\n"));
        // store/erase are accepted and do nothing.
        assert_eq!(
            run_helper(
                "protocol=https\nhost=cp.example:8443\nusername=a\npassword=b\n\n",
                "store"
            )
            .0,
            0
        );
        assert_eq!(run_helper("", "erase").0, 0);
        assert_eq!(run_helper("", "bogus").0, 2);
        assert_eq!(run_helper("garbage line\n", "get").0, 1);
    }

    #[tokio::test]
    async fn peers_of_another_uid_are_refused() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert!(server::peer_allowed(&a, me).is_ok());
        let err = server::peer_allowed(&a, me.wrapping_add(1)).unwrap_err();
        assert!(err.contains("is not the agent's uid"), "{err}");
    }
}
