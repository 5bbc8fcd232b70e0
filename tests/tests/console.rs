//! The web console in a real browser: Debian's Chromium driven through chromedriver
//! (WebDriver) against a real control plane, the real agent, pinned OpenCode and the scripted
//! model. One control plane and one chromedriver serve every scenario, in order: sign in,
//! start a session from the page, watch the assistant's text and the bash tool's output
//! arrive live, reload mid-stream and find every item exactly once, chat, open the change
//! request from the session, a viewer who sees it but has no merge button (and whose posted
//! merge is refused with 403), the owner's merge, and the pages at phone width. Screenshots of
//! every page go to `target/console-screenshots/`. A second scenario, on its own control plane
//! with a short idle timeout, resumes a hibernated session with its page's Resume button.
//!
//! Chromium missing: skipped loudly on a developer's machine, a failure under `CI=true`.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use kortix_proto::v1::{GrantAccessRequest, SessionStatus};
use kortix_tests::{ScriptedModel, Turn};
use serde_json::{Value, json};
use support::{TestServer, eventually};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the agent and OpenCode get to start and answer.
const AGENT: Duration = Duration::from_secs(180);
/// How long a page gets to show what the server has.
const PAGE: Duration = Duration::from_secs(30);

/// chromedriver on a free port; killed when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Option<Driver> {
        for (what, path) in [("chromium", CHROMIUM), ("chromium-driver", CHROMEDRIVER)] {
            if !std::path::Path::new(path).is_file() {
                kortix_tests::require::unavailable(
                    what,
                    &format!(
                        "{path} is missing: apt-get install chromium chromium-driver (scripts/test does)"
                    ),
                );
                return None;
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        eventually("chromedriver to listen", PAGE, || {
            let status = status.clone();
            async move {
                tokio::task::spawn_blocking(move || reqwest::blocking::get(&status).ok())
                    .await
                    .ok()
                    .flatten()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        Some(Driver { child, url })
    }

    /// A fresh headless Chromium with an empty profile.
    async fn browser(&self, profile: &std::path::Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn screenshots_dir() -> PathBuf {
    // target/<profile>/deps/console-<hash> → target/console-screenshots
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary is under target/<profile>/deps")
        .to_path_buf();
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    let path = screenshots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// What a script returns in the page.
async fn js(client: &Client, script: &str) -> Value {
    client
        .execute(script, Vec::new())
        .await
        .expect("script runs")
}

/// The visible text of the element `selector` (empty when absent).
async fn text_of(client: &Client, selector: &str) -> String {
    let script = format!(
        "var e = document.querySelector({}); return e ? e.innerText : '';",
        json!(selector)
    );
    js(client, &script)
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until the element `selector` shows `needle`.
async fn wait_text(client: &Client, selector: &str, needle: &str, within: Duration) {
    let what = format!("{selector} to show {needle:?}");
    eventually(&what, within, || async {
        text_of(client, selector)
            .await
            .contains(needle)
            .then_some(())
    })
    .await;
}

/// Every item of the conversation pane as (seq, HTML), in page order.
async fn conversation(client: &Client) -> Vec<(u64, String)> {
    let items = js(
        client,
        "return Array.from(document.querySelectorAll('#conversation > [data-seq]'))\
         .map(function (e) { return [Number(e.getAttribute('data-seq')), e.outerHTML]; });",
    )
    .await;
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|pair| {
            (
                pair[0].as_u64().expect("a seq"),
                pair[1].as_str().expect("HTML").to_string(),
            )
        })
        .collect()
}

async fn sign_in(client: &Client, base: &str, token: &str) {
    client.goto(base).await.expect("open the console");
    type_into(client, "input[type=password][name=token]", token).await;
    client
        .find(Locator::Css("form[action='/signin'] button[type=submit]"))
        .await
        .expect("the sign-in button")
        .click()
        .await
        .expect("sign in");
    wait_text(client, "main h1", "Projects", PAGE).await;
}

/// Types `text` into the field `selector`.
async fn type_into(client: &Client, selector: &str, text: &str) {
    client
        .find(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("typing into {selector}: {e}"));
}

/// Submits the form posting to a path ending in `action_suffix`.
async fn press(client: &Client, action_suffix: &str) {
    let selector = format!("form[action$='{action_suffix}'] button[type=submit]");
    client
        .find(Locator::Css(&selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .expect("press the button");
}

async fn has(client: &Client, selector: &str) -> bool {
    !client
        .find_all(Locator::Css(selector))
        .await
        .expect("query the page")
        .is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let ts = TestServer::start_with(support::use_real_agent).await;
    let alice = ts.account("alice").await;
    let _work = support::app_with_model_config(&ts, &alice, model.port(), |_| {}).await;
    let bob = ts.account("bob").await;
    ts.access(&alice)
        .grant_access(GrantAccessRequest {
            project: "app".into(),
            person: "bob".into(),
            role: "viewer".into(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap();
    let base = ts.url();
    let profiles = tempfile::tempdir().unwrap();

    // Signed out, `/` is a sign-in form behind a strict CSP.
    let (status, html) = support::http_get(&base, "/").await;
    assert_eq!(status, 200);
    assert!(html.contains("type=\"password\""), "{html}");
    let http = reqwest::Client::new();
    let head = http.get(format!("{base}/")).send().await.unwrap();
    let csp = head.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    let owner = driver.browser(&profiles.path().join("alice")).await;
    owner.goto(&base).await.unwrap();
    screenshot(&owner, "01-sign-in").await;
    sign_in(&owner, &base, &alice).await;
    assert!(text_of(&owner, "main").await.contains("app"));
    screenshot(&owner, "02-projects").await;

    // Start a session from the project page; its steps take a while, so the page is
    // reloaded while the agent is still working.
    model.push([
        Turn::bash("echo alpha-$((40+2))"),
        Turn::bash("sleep 3 && echo beta-$((50+1))"),
        Turn::bash(
            "echo from the console > console.txt && git add console.txt && git commit -q -m 'Add console.txt' && git push -q origin HEAD",
        ),
        Turn::text("All steps are done."),
    ]);
    owner.goto(&format!("{base}/projects/app")).await.unwrap();
    screenshot(&owner, "03-project").await;
    type_into(&owner, "textarea#prompt", "Run the three steps.").await;
    press(&owner, "/projects/app/sessions").await;
    let session_url = eventually("the session page", PAGE, || async {
        let url = owner.current_url().await.ok()?;
        url.path().contains("/sessions/").then(|| url.to_string())
    })
    .await;
    wait_text(&owner, "#conversation", "Run the three steps.", AGENT).await;
    wait_text(&owner, "#conversation", "alpha-42", AGENT).await;
    screenshot(&owner, "04-session-live").await;
    owner.refresh().await.unwrap();
    wait_text(&owner, "#conversation", "beta-51", AGENT).await;
    wait_text(&owner, "#conversation", "All steps are done.", AGENT).await;
    wait_text(&owner, "#conversation", "Add console.txt", AGENT).await;
    let text = text_of(&owner, "#conversation").await;
    for once in [
        "alpha-42",
        "beta-51",
        "All steps are done.",
        "Run the three steps.",
    ] {
        assert_eq!(text.matches(once).count(), 1, "{once:?} once in:\n{text}");
    }
    // What arrived live after the reload is exactly what the server renders afresh.
    let live = conversation(&owner).await;
    let newest = live.iter().map(|(seq, _)| *seq).max().unwrap();
    assert!(live.windows(2).all(|w| w[0].0 <= w[1].0), "in seq order");
    owner.refresh().await.unwrap();
    wait_text(&owner, "#conversation", "All steps are done.", PAGE).await;
    let fresh: Vec<_> = conversation(&owner)
        .await
        .into_iter()
        .filter(|(seq, _)| *seq <= newest)
        .collect();
    assert_eq!(
        live, fresh,
        "live items after a reload = the page rendered afresh"
    );
    assert!(
        !text_of(&owner, "#logs").await.is_empty(),
        "agent logs on their tab"
    );

    // A page in the background lets its live connection go (a browser holds six per host
    // over HTTP/1.1) and, shown again, picks up what arrived meanwhile, exactly once.
    let session_id = session_url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let visibility = |state: &str| {
        format!(
            r#"Object.defineProperty(document, "visibilityState", {{configurable: true, get: () => "{state}"}});
               document.getElementById("live").setAttribute("data-hidden-grace-ms", "0");
               document.dispatchEvent(new Event("visibilitychange"));"#
        )
    };
    js(&owner, &visibility("hidden")).await;
    eventually("the hidden page to let its stream go", PAGE, || async {
        (js(
            &owner,
            r#"return document.getElementById("live").getAttribute("data-connected")"#,
        )
        .await
            == json!("false"))
        .then_some(())
    })
    .await;
    model.push([Turn::text("Answered while hidden.")]);
    let calls = model.calls();
    ts.sessions(&alice)
        .send_prompt(kortix_proto::v1::SendPromptRequest {
            session_id: session_id.clone(),
            text: "A question while the page is hidden".into(),
            agent: String::new(),
        })
        .await
        .unwrap();
    assert!(
        tokio::task::block_in_place(|| model.wait_for_calls(calls + 1, AGENT)),
        "the hidden-time prompt reached the model"
    );
    assert!(
        !text_of(&owner, "#conversation")
            .await
            .contains("A question while the page is hidden"),
        "a disconnected page shows nothing new"
    );
    js(&owner, &visibility("visible")).await;
    wait_text(&owner, "#conversation", "Answered while hidden.", AGENT).await;
    let text = text_of(&owner, "#conversation").await;
    for once in [
        "A question while the page is hidden",
        "Answered while hidden.",
        "All steps are done.",
    ] {
        assert_eq!(text.matches(once).count(), 1, "{once:?} once in:\n{text}");
    }

    // Chat.
    model.push([Turn::text("Chat reply arrived.")]);
    type_into(&owner, "form#chat textarea", "Anything else?").await;
    press(&owner, "/prompt").await;
    wait_text(&owner, "#conversation", "Anything else?", AGENT).await;
    wait_text(&owner, "#conversation", "Chat reply arrived.", AGENT).await;
    screenshot(&owner, "05-session").await;

    // Open the change request from the session.
    press(&owner, "/change-request").await;
    wait_text(&owner, "main h1", "Add console.txt", PAGE).await;
    let cr_url = owner.current_url().await.unwrap().to_string();
    assert!(text_of(&owner, ".files").await.contains("console.txt"));
    assert!(
        text_of(&owner, "pre.diff")
            .await
            .contains("+from the console")
    );
    assert!(has(&owner, "form[action$='/merge']").await);
    screenshot(&owner, "06-change-request").await;

    // A viewer sees it all but has no merge button, and a merge posted anyway is refused.
    let viewer = driver.browser(&profiles.path().join("bob")).await;
    sign_in(&viewer, &base, &bob).await;
    viewer.goto(&cr_url).await.unwrap();
    wait_text(&viewer, "main h1", "Add console.txt", PAGE).await;
    assert!(
        text_of(&viewer, "pre.diff")
            .await
            .contains("+from the console")
    );
    assert!(
        !has(&viewer, "form[action$='/merge']").await,
        "no merge button"
    );
    assert!(
        !has(&viewer, "form[action$='/close']").await,
        "no close button"
    );
    screenshot(&viewer, "07-change-request-viewer").await;
    let cookie = viewer.get_named_cookie("kortix_console").await.unwrap();
    let csrf = viewer
        .find(Locator::Css("input[name=_csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .expect("the sign-out form's CSRF token");
    let refused = http
        .post(format!("{cr_url}/merge"))
        .header("cookie", format!("kortix_console={}", cookie.value()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "a viewer's merge is refused");
    let no_csrf = http
        .post(format!("{cr_url}/merge"))
        .header("cookie", format!("kortix_console={}", cookie.value()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_csrf=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403, "a forged CSRF token is refused");
    viewer.close().await.unwrap();

    // The owner merges.
    press(&owner, "/merge").await;
    wait_text(&owner, "#cr-state", "merged", PAGE).await;
    assert!(!has(&owner, "form[action$='/merge']").await);
    screenshot(&owner, "08-merged").await;

    // Phone width: nothing wider than the screen but the diff's own scroller.
    owner.set_window_size(390, 844).await.unwrap();
    for (url, name) in [
        (&session_url, "09-session-phone"),
        (&cr_url, "10-change-request-phone"),
    ] {
        owner.goto(url).await.unwrap();
        wait_text(&owner, "main", "Add console.txt", PAGE).await;
        let fits = js(
            &owner,
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
        )
        .await;
        assert_eq!(fits, Value::Bool(true), "{name} fits a phone's width");
        screenshot(&owner, name).await;
    }
    owner.goto(&format!("{base}/projects/app")).await.unwrap();
    screenshot(&owner, "11-project-phone").await;
    owner.close().await.unwrap();
    ts.stop().await;
}

/// A hibernated session's page says what its last sandbox saved and offers Resume; pressing
/// it (with a prompt) brings the session back in a new sandbox: the badge goes to resuming,
/// then running, and the answer to the prompt, given with the restored conversation, shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resume_button_brings_a_hibernated_session_back() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let model = ScriptedModel::start(Vec::new()).unwrap();
    let ts = TestServer::start_with(support::use_real_agent_idling(Duration::from_secs(3))).await;
    let alice = ts.account("alice").await;
    let _work = support::app_with_model_config(&ts, &alice, model.port(), |_| {}).await;
    model.push([
        Turn::bash("echo 'work in progress' > draft.txt"),
        Turn::text("Drafted draft.txt; the codeword is OSPREY-9."),
    ]);
    let session = ts
        .start_session(&alice, "app", "Start a draft, do not commit it.")
        .await;
    let id = session.id;
    let hibernated = ts
        .wait_status(&alice, &id, SessionStatus::Hibernated, AGENT)
        .await;
    let saved = hibernated.saved.expect("a save");
    assert!(!saved.wip_commit.is_empty(), "{saved:?}");

    // The page says it is resumable and what was saved.
    let base = ts.url();
    let profiles = tempfile::tempdir().unwrap();
    let owner = driver.browser(&profiles.path().join("alice")).await;
    sign_in(&owner, &base, &alice).await;
    owner
        .goto(&format!("{base}/projects/app/sessions/{id}"))
        .await
        .unwrap();
    wait_text(&owner, "#status", "hibernated", PAGE).await;
    let shown = text_of(&owner, "#saved").await;
    for needle in [
        "Resumable.".to_string(),
        format!("uncommitted work {}", &saved.wip_commit[..8]),
        format!("refs/kortix/wip/{id}"),
        format!("conversation of {} bytes", saved.conversation_bytes),
    ] {
        assert!(shown.contains(&needle), "{needle:?} in {shown:?}");
    }
    screenshot(&owner, "12-session-hibernated").await;

    // Resume with a prompt: the page comes back resuming, then shows it running and the
    // answer, which the model gave with the earlier conversation before the prompt.
    model.push([Turn::text("Back again; the codeword was OSPREY-9.")]);
    type_into(&owner, "input#resume-text", "What was the codeword?").await;
    press(&owner, "/resume").await;
    eventually("the page to show the session resuming", PAGE, || async {
        let status = text_of(&owner, "#status").await;
        ["resuming", "running"]
            .contains(&status.as_str())
            .then_some(())
    })
    .await;
    assert!(
        !has(&owner, "form[action$='/resume']").await,
        "no Resume button while it resumes"
    );
    wait_text(&owner, "#status", "running", AGENT).await;
    wait_text(
        &owner,
        "#conversation",
        "Back again; the codeword was OSPREY-9.",
        AGENT,
    )
    .await;
    let heard = model.last_request_text();
    assert!(
        heard.contains("What was the codeword?") && heard.contains("OSPREY-9"),
        "{heard}"
    );
    assert_eq!(ts.session(&alice, &id).await.resumes, 1);
    screenshot(&owner, "13-session-resumed").await;
    owner.close().await.unwrap();
    ts.stop().await;
}

/// The console's forms over plain HTTP (no browser): sign in through the form, then decide
/// connector approvals from the project page. An owner approves one and denies another with
/// a reason; the page then lists both decisions, the API reports them, and the audit log
/// names the browser's address (127.0.0.1) as where they came from. A viewer sees no buttons
/// and a decision posted anyway is refused with 403; bad ids, verbs and CSRF tokens are
/// clear refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_decided_from_the_project_page_and_audited_with_the_peer() {
    use kortix_controlplane::store::Approval;
    use kortix_proto::v1::{CreateProjectRequest, ListApprovalsRequest, ListAuditRequest};

    let ts = TestServer::start().await;
    let alice = ts.account("alice").await;
    let bob = ts.account("bob").await;
    let project = ts
        .projects(&alice)
        .create_project(CreateProjectRequest {
            name: "app".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    ts.access(&alice)
        .grant_access(GrantAccessRequest {
            project: "app".into(),
            person: "bob".into(),
            role: "viewer".into(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap();
    // Pending approvals as the connector gate writes them for `require_approval` calls
    // (`connectors.rs` makes them through a real session; here only the deciding is tested,
    // so they are written to the store directly).
    let store = ts.running().sessions.store();
    for (id, tool) in [
        ("appr-1", "addPet"),
        ("appr-2", "renamePet"),
        ("appr-3", "feedPet"),
    ] {
        store
            .insert_approval(&Approval {
                id: id.into(),
                project_id: project.id.clone(),
                session_id: "no-such-session".into(),
                connector: "pets".into(),
                tool: tool.into(),
                digest: format!("digest-{id}"),
                state: "pending".into(),
                reason: String::new(),
                args_preview: format!("{{\"tool\":\"{tool}\"}}"),
                requested_ms: 1_700_000_000_000,
                decided_ms: 0,
                decided_by: String::new(),
                expires_ms: 0,
            })
            .await
            .unwrap();
    }
    let base = ts.url();
    let owner = Browserless::sign_in(&base, &alice).await;
    let page = owner.get("/projects/app").await;
    for id in ["appr-1", "appr-2", "appr-3"] {
        assert!(
            page.contains(&format!("action=\"/projects/app/approvals/{id}/approve\""))
                && page.contains(&format!("action=\"/projects/app/approvals/{id}/deny\"")),
            "{id} has Approve and Deny:\n{page}"
        );
    }
    let csrf = csrf_in(&page);

    // Approve one, deny another with a reason: each goes back to the project page.
    let approved = owner
        .post(
            "/projects/app/approvals/appr-1/approve",
            &[("_csrf", &csrf)],
        )
        .await;
    assert_eq!(approved.status(), 303);
    assert_eq!(
        approved.headers()["location"],
        "/projects/app#approval-appr-1"
    );
    let denied = owner
        .post(
            "/projects/app/approvals/appr-2/deny",
            &[("_csrf", &csrf), ("reason", "not <today>")],
        )
        .await;
    assert_eq!(denied.status(), 303);
    let page = owner.get("/projects/app").await;
    assert!(
        page.contains("approval-approved\">approved</span>"),
        "the decision shows:\n{page}"
    );
    assert!(
        page.contains("approval-denied\">denied</span>: not &lt;today&gt;"),
        "the denial and its reason show:\n{page}"
    );
    assert!(
        !page.contains("/approvals/appr-1/approve"),
        "decided: no buttons"
    );
    let state_of = |list: &[kortix_proto::v1::ApprovalInfo], id: &str| {
        let a = list.iter().find(|a| a.id == id).expect("listed");
        (a.state.clone(), a.reason.clone())
    };
    let list = ts
        .approvals(&alice)
        .list_approvals(ListApprovalsRequest {
            project: "app".into(),
            state: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .approvals;
    assert_eq!(
        state_of(&list, "appr-1"),
        ("approved".into(), String::new())
    );
    assert_eq!(
        state_of(&list, "appr-2"),
        ("denied".into(), "not <today>".into())
    );

    // Deciding twice, an unknown approval, an unknown verb, a forged token: refused.
    let again = owner
        .post("/projects/app/approvals/appr-1/deny", &[("_csrf", &csrf)])
        .await;
    assert_eq!(again.status(), 409);
    let unknown = owner
        .post("/projects/app/approvals/nope/approve", &[("_csrf", &csrf)])
        .await;
    assert_eq!(unknown.status(), 404);
    let long_id = "x".repeat(500);
    let too_long = owner
        .post(
            &format!("/projects/app/approvals/{long_id}/approve"),
            &[("_csrf", &csrf)],
        )
        .await;
    assert_eq!(too_long.status(), 400);
    let verb = owner
        .post("/projects/app/approvals/appr-3/ignore", &[("_csrf", &csrf)])
        .await;
    assert_eq!(verb.status(), 404);
    let forged = owner
        .post(
            "/projects/app/approvals/appr-3/approve",
            &[("_csrf", "forged")],
        )
        .await;
    assert_eq!(forged.status(), 403);

    // The audit log has both decisions, from the console's peer address.
    let events = ts
        .audit(&alice)
        .list_audit(ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    for (action, target) in [
        ("connector.approve", "appr-1"),
        ("connector.deny", "appr-2"),
    ] {
        let event = events
            .iter()
            .find(|e| e.action == action && e.target == target)
            .unwrap_or_else(|| panic!("{action} {target} audited: {events:?}"));
        assert!(
            event.from.starts_with("127.0.0.1:"),
            "{action} from the browser's address: {event:?}"
        );
    }

    // A viewer sees the pending approval but no buttons, and a posted decision is refused.
    let viewer = Browserless::sign_in(&base, &bob).await;
    let page = viewer.get("/projects/app").await;
    assert!(page.contains("feedPet"), "{page}");
    assert!(
        !page.contains("/approve\""),
        "no Approve for a viewer:\n{page}"
    );
    assert!(!page.contains("/deny\""), "no Deny for a viewer:\n{page}");
    let refused = viewer
        .post(
            "/projects/app/approvals/appr-3/approve",
            &[("_csrf", &csrf_in(&page))],
        )
        .await;
    assert_eq!(refused.status(), 403, "a viewer's approval is refused");
    let list = ts
        .approvals(&alice)
        .list_approvals(ListApprovalsRequest {
            project: "app".into(),
            state: "pending".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .approvals;
    assert_eq!(state_of(&list, "appr-3").0, "pending");
    ts.stop().await;
}

/// A signed-in console client over plain HTTP: the cookie the sign-in form set.
struct Browserless {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Browserless {
    /// Signs in through the form: its nonce cookie and field, then the token.
    async fn sign_in(base: &str, token: &str) -> Browserless {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let form = http.get(format!("{base}/")).send().await.unwrap();
        let nonce = set_cookie(&form, "kortix_signin");
        let html = form.text().await.unwrap();
        let signed = http
            .post(format!("{base}/signin"))
            .header("cookie", format!("kortix_signin={nonce}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[
                ("_csrf", csrf_in(&html).as_str()),
                ("token", token),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(signed.status(), 303, "signed in");
        let cookie = set_cookie(&signed, "kortix_console");
        Browserless {
            http,
            base: base.to_string(),
            cookie,
        }
    }

    async fn get(&self, path: &str) -> String {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", format!("kortix_console={}", self.cookie))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "GET {path}");
        res.text().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("cookie", format!("kortix_console={}", self.cookie))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(form))
            .send()
            .await
            .unwrap()
    }
}

fn form_body(fields: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(fields).expect("a form encodes")
}

/// The value a response sets cookie `name` to.
fn set_cookie(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("the response sets {name}"))
        .to_string()
}

/// The first form's CSRF token in a page.
fn csrf_in(html: &str) -> String {
    let marker = "name=\"_csrf\" value=\"";
    let start = html.find(marker).expect("a CSRF field") + marker.len();
    html[start..]
        .split('"')
        .next()
        .expect("a value")
        .to_string()
}
