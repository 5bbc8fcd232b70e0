//! Console pages in a real browser for the console benchmark: Debian's Chromium driven
//! through chromedriver (WebDriver, fantoccini). The chromedriver launcher is a copy of the
//! ~30 lines in `tests/tests/console.rs` (tests/ and bench/ are separate crates and the
//! launcher is too small to be worth a shared crate); here a missing browser is an error.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fantoccini::wd::WindowHandle;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page gets to load, sign in, or show a record before the bench gives up.
pub const PAGE: Duration = Duration::from_secs(30);

/// The flags the console test uses, plus the ones that keep pages that are not in front
/// running at full speed (see the benchmark's doc comment).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];
pub const NO_THROTTLING: &[&str] = &[
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
];

/// chromedriver on a free port; killed when dropped.
pub struct Driver {
    child: tokio::process::Child,
    url: String,
}

/// CPU time (user + system) used so far by `root` and every process below it (chromedriver,
/// and the browser's processes under it).
pub fn tree_cpu(root: u32) -> Duration {
    let mut parent = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Field 4 (ppid), counted after the command name's last `)`.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.insert(pid, ppid);
        }
    }
    let below = |mut pid: u32| {
        while pid != root {
            match parent.get(&pid) {
                Some(&p) if p != pid && p != 0 => pid = p,
                _ => return false,
            }
        }
        true
    };
    parent
        .keys()
        .filter(|&&pid| below(pid))
        .filter_map(|&pid| kortix_bench::procfs::cpu_time(Some(pid)))
        .sum()
}

impl Driver {
    /// chromedriver (and so the browser) on the CPUs `cpus` (`taskset -c`) when given.
    pub async fn start(cpus: Option<&str>) -> anyhow::Result<Driver> {
        for (what, path) in [("chromium", CHROMIUM), ("chromium-driver", CHROMEDRIVER)] {
            if !Path::new(path).is_file() {
                bail!(
                    "{path} is missing: the browser mode needs Debian's {what} \
                     (apt-get install chromium chromium-driver)"
                );
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut command = match cpus {
            Some(cpus) => {
                let mut c = tokio::process::Command::new("taskset");
                c.args(["-c", cpus, CHROMEDRIVER]);
                c
            }
            None => tokio::process::Command::new(CHROMEDRIVER),
        };
        let child = command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        let client = reqwest::Client::new();
        let started = Instant::now();
        while !client
            .get(&status)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if started.elapsed() > PAGE {
                bail!("chromedriver did not listen on {url} within {PAGE:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Driver { child, url })
    }

    /// CPU time chromedriver and the browser have used so far.
    pub fn cpu(&self) -> Duration {
        self.child.id().map(tree_cpu).unwrap_or_default()
    }

    /// A fresh headless Chromium with the empty profile `profile` and `extra` flags.
    pub async fn browser(&self, profile: &Path, extra: &[&str]) -> anyhow::Result<Client> {
        let mut args: Vec<String> = FLAGS.iter().chain(extra).map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .context("a Chromium session")?;
        // A page that cannot load fails the run in `PAGE`, not WebDriver's default 300 s.
        client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(PAGE),
                Some(PAGE),
                Some(Duration::ZERO),
            ))
            .await?;
        Ok(client)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// What a script returns in the page.
pub async fn js(client: &Client, script: &str) -> anyhow::Result<Value> {
    Ok(client.execute(script, Vec::new()).await?)
}

/// Polls `script` in the current page until it returns `true`.
pub async fn wait_js(client: &Client, what: &str, script: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if js(client, script).await?.as_bool() == Some(true) {
            return Ok(());
        }
        if started.elapsed() > PAGE {
            bail!("waited {PAGE:?} for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Signs in on `base` with the form, as a person would (the cookie is per host).
pub async fn sign_in(client: &Client, base: &str, token: &str) -> anyhow::Result<()> {
    client.goto(base).await?;
    client
        .find(Locator::Css("input[type=password][name=token]"))
        .await
        .context("the sign-in form's token field")?
        .send_keys(token)
        .await?;
    client
        .find(Locator::Css("form[action='/signin'] button[type=submit]"))
        .await
        .context("the sign-in button")?
        .click()
        .await?;
    wait_js(
        client,
        "the projects page after signing in",
        "var h = document.querySelector('main h1'); \
         return !!h && h.innerText.indexOf('Projects') >= 0;",
    )
    .await
}

/// A new top-level browsing context (a window, or a tab of the current one), switched to.
pub async fn open_context(client: &Client, as_tab: bool) -> anyhow::Result<WindowHandle> {
    let handle = client.new_window(as_tab).await?.handle;
    client.switch_to_window(handle.clone()).await?;
    Ok(handle)
}

/// Installs the insertion clock in the session page that is open: a `MutationObserver` on
/// both panes of the live view (log records go to `#logs`, the rest to `#conversation`)
/// that stores, for every inserted entry whose `data-seq` is `s` and whose text carries
/// `kbench#s#`, `performance.timeOrigin + performance.now()` (wall-clock ms, sub-ms) in
/// `window.__kbench[s]`. The observer's callback is the microtask right after the script's
/// `appendChild`, so this is the insertion time, before layout and paint. Returns what the
/// page shows about itself: `[data-live, data-after, visibilityState]`.
pub async fn install_clock(client: &Client) -> anyhow::Result<Value> {
    js(
        client,
        r##"
        var seen = window.__kbench = {};
        var observer = new MutationObserver(function (mutations) {
          var now = performance.timeOrigin + performance.now();
          for (var i = 0; i < mutations.length; i++) {
            var added = mutations[i].addedNodes;
            for (var j = 0; j < added.length; j++) {
              var node = added[j];
              if (node.nodeType !== 1) continue;
              var seq = node.getAttribute("data-seq");
              if (seq && !(seq in seen) && node.textContent.indexOf("kbench#" + seq + "#") >= 0) {
                seen[seq] = now;
              }
            }
          }
        });
        ["conversation", "logs"].forEach(function (id) {
          observer.observe(document.getElementById(id), { childList: true });
        });
        var live = document.getElementById("live");
        return [live.getAttribute("data-live"), live.getAttribute("data-after"),
                document.visibilityState];
        "##,
    )
    .await
}

/// What a page's clock saw: seq → insertion time (unix ms), its visibility, and how far its
/// `timeOrigin + now()` has drifted from `Date.now()` since it loaded (ms; `Date.now()`
/// has 1 ms resolution).
pub struct Seen {
    pub at: std::collections::HashMap<u64, f64>,
    pub visibility: String,
    pub drift_ms: f64,
}

pub async fn collect(client: &Client) -> anyhow::Result<Seen> {
    let v = js(
        client,
        "return [window.__kbench || {}, document.visibilityState, \
         performance.timeOrigin + performance.now() - Date.now()];",
    )
    .await?;
    let at = v[0]
        .as_object()
        .context("the page's clock map")?
        .iter()
        .map(|(k, t)| Ok((k.parse()?, t.as_f64().context("a time")?)))
        .collect::<anyhow::Result<_>>()?;
    Ok(Seen {
        at,
        visibility: v[1].as_str().unwrap_or("?").to_string(),
        drift_ms: v[2].as_f64().unwrap_or(f64::NAN),
    })
}
