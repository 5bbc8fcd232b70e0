//! The real `git` program against the real router on 127.0.0.1.

use std::{process::Output, sync::Arc};

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::git::{Author, hook::DEFAULT_BRANCH_REFUSED};
use kortix_tests::git::GitEnv;

const PEOPLE: &str = "people-token";
const SESSION: &str = "session-token";
const READER: &str = "read-token";

/// Maps fixed tokens to scopes: repo `demo` is project `p-demo`; `other` exists but none of
/// the tokens may see it.
struct TestAuthorizer;

impl GitAuthorizer for TestAuthorizer {
    fn authorize(
        &self,
        repo_name: &str,
        basic: Option<(String, String)>,
    ) -> BoxFuture<'_, Result<GitAccess, GitDenied>> {
        let repo_name = repo_name.to_owned();
        Box::pin(async move {
            let (_, token) = basic.ok_or(GitDenied::Unauthenticated)?;
            let push = match token.as_str() {
                PEOPLE => PushScope::NonDefaultRefs,
                SESSION => PushScope::OnlyBranch("sess-1".into()),
                READER => PushScope::None,
                _ => return Err(GitDenied::Unauthenticated),
            };
            if repo_name != "demo" {
                return Err(GitDenied::NotFound);
            }
            Ok(GitAccess {
                project_id: "p-demo".into(),
                default_branch: "main".into(),
                push,
                credential: None,
            })
        })
    }
}

struct Server {
    _data: tempfile::TempDir,
    repos: Repos,
    addr: SocketAddr,
    env: Arc<GitEnv>,
    work: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(GitHttpLimits::default()).await
    }

    async fn start_with(limits: GitHttpLimits) -> Self {
        let data = tempfile::tempdir().unwrap();
        let repos = Repos::in_data_dir(data.path()).unwrap();
        let author = Author {
            name: "Kortix".into(),
            email: "kortix@example.com".into(),
        };
        repos
            .create_empty("p-demo", "main", "kortix_version = 1\n", &author)
            .unwrap();
        repos.cut_branch("p-demo", "main", "sess-1").unwrap();
        repos
            .create_empty("p-other", "main", "kortix_version = 1\n", &author)
            .unwrap();
        let state = GitHttpState::new(
            Arc::new(TestAuthorizer),
            repos.clone(),
            data.path().join("hooks"),
            limits,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server {
            _data: data,
            repos,
            addr,
            env: Arc::new(GitEnv::new()),
            work: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self, token: &str, repo: &str) -> String {
        format!("http://kortix:{token}@{}/git/{repo}.git", self.addr)
    }

    /// Runs git off the runtime's threads (it talks to the server on this runtime).
    async fn git(&self, dir: &Path, args: &[&str]) -> Output {
        let env = self.env.clone();
        let dir = dir.to_owned();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            env.run(&dir, &args)
        })
        .await
        .unwrap()
    }

    async fn git_ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.git(dir, args).await;
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    async fn clone(&self, token: &str, name: &str) -> PathBuf {
        let dest = self.work.path().join(name);
        self.git_ok(
            self.work.path(),
            &[
                "clone",
                "-q",
                &self.url(token, "demo"),
                dest.to_str().unwrap(),
            ],
        )
        .await;
        dest
    }

    async fn commit(&self, dir: &Path, file: &str, content: &str) -> String {
        std::fs::write(dir.join(file), content).unwrap();
        self.git_ok(dir, &["add", file]).await;
        self.git_ok(dir, &["commit", "-q", "-m", &format!("change {file}")])
            .await;
        self.git_ok(dir, &["rev-parse", "HEAD"]).await
    }

    fn head(&self, branch: &str) -> Option<String> {
        self.repos
            .branch_head("p-demo", branch)
            .unwrap()
            .map(|id| id.to_string())
    }

    /// A raw HTTP/1.1 request; returns the status code and the whole response text.
    async fn raw(&self, method: &str, path: &str, auth: Option<(&str, &str)>) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        if let Some((user, password)) = auth {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
        }
        if method == "POST" {
            request.push_str("Content-Length: 0\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap();
        (status, response)
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Bytes that do not compress, so a pack of them is as large as they are.
fn noise(len: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from(b'!' + ((x >> 33) % 90) as u8)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_and_fetch_need_a_token_and_work_with_one() {
    let server = Server::start().await;
    let dir = server.clone(READER, "reader").await;
    assert_eq!(
        std::fs::read_to_string(dir.join("kortix.toml")).unwrap(),
        "kortix_version = 1\n"
    );
    assert_eq!(
        server.git_ok(&dir, &["rev-parse", "HEAD"]).await,
        server.head("main").unwrap()
    );

    // A commit pushed by someone else is fetched; with many local commits the client's
    // negotiation is large enough that git gzips it, which the backend must inflate.
    let other = server.clone(PEOPLE, "other").await;
    server.commit(&other, "new.txt", "new\n").await;
    server
        .git_ok(&other, &["push", "-q", "origin", "HEAD:refs/heads/later"])
        .await;
    for i in 0..60 {
        server.commit(&dir, "local.txt", &format!("{i}\n")).await;
    }
    let env = server.env.clone();
    let fetch_dir = dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        env.command(&fetch_dir)
            .env("GIT_TRACE_CURL", "1")
            .env("GIT_TRACE_CURL_NO_DATA", "1")
            .args(["-c", "protocol.version=2", "fetch", "origin"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Content-Encoding: gzip"),
        "the fetch request was expected to be gzipped: {}",
        stderr(&out)
    );
    assert_eq!(
        server
            .git_ok(&dir, &["rev-parse", "refs/remotes/origin/later"])
            .await,
        server.head("later").unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_push_new_branches_but_never_the_default_branch() {
    let server = Server::start().await;
    let dir = server.clone(PEOPLE, "people").await;
    let main_before = server.head("main").unwrap();
    let head = server.commit(&dir, "a.txt", "a\n").await;

    server
        .git_ok(&dir, &["push", "-q", "origin", "HEAD:refs/heads/feature"])
        .await;
    assert_eq!(server.head("feature").as_deref(), Some(head.as_str()));
    server
        .git_ok(&dir, &["push", "-q", "origin", "HEAD:refs/tags/v1"])
        .await;

    let out = server.git(&dir, &["push", "origin", "HEAD:main"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("remote: {DEFAULT_BRANCH_REFUSED}")),
        "{}",
        stderr(&out)
    );
    let out = server.git(&dir, &["push", "origin", ":main"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(DEFAULT_BRANCH_REFUSED),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.head("main"), Some(main_before));

    // Deleting a non-default branch is fine.
    server
        .git_ok(&dir, &["push", "-q", "origin", ":feature"])
        .await;
    assert_eq!(server.head("feature"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_pushes_only_its_own_branch() {
    let server = Server::start().await;
    let dir = server.clone(SESSION, "session").await;
    server.git_ok(&dir, &["checkout", "-q", "sess-1"]).await;
    let head = server.commit(&dir, "work.txt", "work\n").await;
    server
        .git_ok(&dir, &["push", "-q", "origin", "sess-1"])
        .await;
    assert_eq!(server.head("sess-1").as_deref(), Some(head.as_str()));

    let out = server.git(&dir, &["push", "origin", "HEAD:sess-2"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("remote: this token may push only to branch sess-1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.head("sess-2"), None);
    let out = server.git(&dir, &["push", "origin", "HEAD:main"]).await;
    assert!(
        stderr(&out).contains(DEFAULT_BRANCH_REFUSED),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_with_one_forbidden_ref_changes_nothing() {
    let server = Server::start().await;
    let dir = server.clone(PEOPLE, "people").await;
    let main_before = server.head("main");
    server.commit(&dir, "a.txt", "a\n").await;
    for atomic in [&["--atomic"][..], &[][..]] {
        let mut args = vec!["push"];
        args.extend_from_slice(atomic);
        args.extend([
            "origin",
            "HEAD:refs/heads/feature2",
            "HEAD:refs/tags/t2",
            "HEAD:main",
        ]);
        let out = server.git(&dir, &args).await;
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains(DEFAULT_BRANCH_REFUSED),
            "{}",
            stderr(&out)
        );
        assert_eq!(server.head("feature2"), None, "{args:?}");
        assert_eq!(server.head("main"), main_before);
        let tags = server
            .git_ok(&dir, &["ls-remote", "--tags", "origin"])
            .await;
        assert!(tags.is_empty(), "{tags}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_missing_or_wrong_credentials_unknown_repos_and_read_only_pushes() {
    let server = Server::start().await;

    let (status, response) = server
        .raw(
            "GET",
            "/git/demo.git/info/refs?service=git-upload-pack",
            None,
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        response.contains("www-authenticate: Basic realm=\"kortix\""),
        "{response}"
    );
    let (status, _) = server
        .raw(
            "GET",
            "/git/demo.git/info/refs?service=git-upload-pack",
            Some(("kortix", "wrong")),
        )
        .await;
    assert_eq!(status, 401);
    let (status, response) = server
        .raw(
            "GET",
            "/git/demo.git/info/refs?service=git-upload-pack",
            Some(("kortix", PEOPLE)),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        response.contains("application/x-git-upload-pack-advertisement"),
        "{response}"
    );
    for repo in ["nope", "other"] {
        let path = format!("/git/{repo}.git/info/refs?service=git-upload-pack");
        let (status, _) = server.raw("GET", &path, Some(("kortix", PEOPLE))).await;
        assert_eq!(status, 404, "{repo}");
    }
    // Dumb HTTP and unknown endpoints are not served.
    for path in [
        "/git/demo.git/info/refs",
        "/git/demo.git/HEAD",
        "/git/demo.git/objects/info/packs",
        "/git/demo.git/config",
    ] {
        let (status, _) = server.raw("GET", path, Some(("kortix", PEOPLE))).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = server
        .raw(
            "GET",
            "/git/demo.git/info/refs?service=git-receive-pack",
            Some(("kortix", READER)),
        )
        .await;
    assert_eq!(status, 403);

    let work = server.work.path();
    let dest = work.join("x");
    let out = server
        .git(
            work,
            &[
                "clone",
                &server.url("wrong", "demo"),
                dest.to_str().unwrap(),
            ],
        )
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Authentication failed"),
        "{}",
        stderr(&out)
    );
    let anonymous = format!("http://{}/git/demo.git", server.addr);
    let out = server
        .git(work, &["clone", &anonymous, dest.to_str().unwrap()])
        .await;
    assert!(!out.status.success());
    let out = server
        .git(
            work,
            &["clone", &server.url(PEOPLE, "nope"), dest.to_str().unwrap()],
        )
        .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    let dir = server.clone(READER, "reader").await;
    server.commit(&dir, "r.txt", "r\n").await;
    let out = server
        .git(&dir, &["push", "origin", "HEAD:refs/heads/r"])
        .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("may not push"), "{}", stderr(&out));
    assert_eq!(server.head("r"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pushes_stream_and_oversized_ones_are_cut_off() {
    let server = Server::start_with(GitHttpLimits {
        max_push_body: 3 << 20,
        ..GitHttpLimits::default()
    })
    .await;
    let dir = server.clone(PEOPLE, "people").await;
    // Over git's 1 MiB post buffer: sent chunked, without Content-Length.
    let head = server.commit(&dir, "big1.txt", &noise(2 << 20, 1)).await;
    server
        .git_ok(&dir, &["push", "-q", "origin", "HEAD:refs/heads/big"])
        .await;
    assert_eq!(server.head("big").as_deref(), Some(head.as_str()));

    server.commit(&dir, "big2.txt", &noise(4 << 20, 2)).await;
    let out = server
        .git(&dir, &["push", "origin", "HEAD:refs/heads/bigger"])
        .await;
    assert!(!out.status.success(), "the push over the cap must fail");
    assert_eq!(server.head("bigger"), None);
    assert_eq!(server.head("big").as_deref(), Some(head.as_str()));
}

#[test]
fn routes_only_smart_endpoints() {
    assert_eq!(
        route(&Method::GET, "info/refs", "service=git-upload-pack"),
        Some(Service::UploadPack)
    );
    assert_eq!(
        route(&Method::GET, "info/refs", "x=1&service=git-receive-pack"),
        Some(Service::ReceivePack)
    );
    assert_eq!(route(&Method::GET, "info/refs", ""), None);
    assert_eq!(
        route(&Method::POST, "git-upload-pack", ""),
        Some(Service::UploadPack)
    );
    assert_eq!(route(&Method::GET, "git-upload-pack", ""), None);
    assert_eq!(route(&Method::POST, "../x/git-upload-pack", ""), None);
    assert_eq!(route(&Method::GET, "HEAD", ""), None);
}

#[test]
fn parses_basic_credentials() {
    let mut headers = HeaderMap::new();
    assert_eq!(basic_credentials(&headers), None);
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic a29ydGl4OnRvazplbg=="),
    );
    assert_eq!(
        basic_credentials(&headers),
        Some(("kortix".into(), "tok:en".into()))
    );
    headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
    assert_eq!(basic_credentials(&headers), None);
    headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
    assert_eq!(basic_credentials(&headers), None);
    assert_eq!(remote_user("ada lovelace\n"), "adalovelace");
    assert_eq!(remote_user("\u{1}"), "kortix");
}

/// Opens a push whose body never finishes (a pkt-line cut short): holds a backend until the
/// server gives up on it.
async fn stalled_push(server: &Server) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("kortix:{PEOPLE}"));
    let request = format!(
        "POST /git/demo.git/git-receive-pack HTTP/1.1\r\nHost: test\r\n\
         Authorization: Basic {encoded}\r\n\
         Content-Type: application/x-git-receive-pack-request\r\n\
         Transfer-Encoding: chunked\r\n\r\n7\r\n0063abc\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Polls `GET info/refs` until it answers `want`, failing after a deadline.
async fn wait_for_status(server: &Server, want: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = server
            .raw(
                "GET",
                "/git/demo.git/info/refs?service=git-upload-pack",
                Some(("kortix", PEOPLE)),
            )
            .await;
        if status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {status}, waiting for {want}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_or_vanished_clients_release_their_backend() {
    let server = Server::start_with(GitHttpLimits {
        max_concurrent: 1,
        idle_timeout: Duration::from_millis(500),
        ..GitHttpLimits::default()
    })
    .await;

    // A client that goes silent holds the only slot until the idle timeout kills its backend,
    // even though its connection stays open.
    let silent = stalled_push(&server).await;
    wait_for_status(&server, 503).await;
    wait_for_status(&server, 200).await;
    drop(silent);

    // A client that disconnects releases the slot as well.
    let server = Server::start_with(GitHttpLimits {
        max_concurrent: 1,
        ..GitHttpLimits::default()
    })
    .await;
    let gone = stalled_push(&server).await;
    wait_for_status(&server, 503).await;
    drop(gone);
    wait_for_status(&server, 200).await;
}
