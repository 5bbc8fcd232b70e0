//! The web console's live view under load: a record's latency from the agent to each of 20
//! open console pages, and what those pages cost the agent (its ack latency with the pages
//! open against without them, in the same run).
//!
//! ```sh
//! # pages are HTTP clients reading the session's event stream (the default)
//! cargo bench --workspace --bench console
//! # pages are real Chromium pages; the time is the record's insertion into their DOM
//! PAGES_KIND=browser cargo bench --workspace --bench console
//! ```
//!
//! Environment: `PAGES_KIND` `sse` (default) or `browser`; `RECORDS` per phase (default
//! 2000); `PACE_MS` between records (default 5); `PAGES` (default 20). Browser mode only:
//! `PAGE_HOSTS` `distinct` (default) or `one`; `BROWSER_TABS=1` (tabs of one window instead
//! of windows); `BROWSER_THROTTLING=1` (leave out the flags that stop Chromium throttling
//! pages that are not in front); `BROWSER_CPUS` and `SERVER_CPUS` (`taskset -c` lists) pin
//! chromedriver and Chromium, and this process (control plane, agent), to separate CPUs, as
//! if the browser ran on the viewer's machine. Needs `/usr/bin/chromium` and `/usr/bin/chromedriver`
//! (Debian's `chromium`, `chromium-driver`); without them the bench says so and fails.
//!
//! One control plane (SQLite, external sandboxes), one simulated agent over the real mTLS
//! protocol streaming `RECORDS` log records at one per `PACE_MS` in each of three phases:
//! no pages, `PAGES` pages following the session, no pages again (the ack baseline is both
//! page-less phases, so drift over the run falls on both sides). Each record's text carries
//! a marker `kbench#<seq>#` and the bench keeps its send time (`Instant`, and wall-clock
//! `SystemTime` in ms with fraction) keyed by seq.
//!
//! `sse`: a page is an HTTP client reading `/projects/…/sessions/…/events` (the Server-Sent
//! Events the console's script appends to the DOM); the latency is send → event read.
//!
//! `browser`: chromedriver and one headless Chromium (empty profile; the console test's
//! flags) started after phase 1 and closed before phase 3. Each page is its own window,
//! signed in through the form, on the session's page (`#logs`, where log records go). A
//! `MutationObserver` installed over WebDriver on both panes of the live view stores
//! `performance.timeOrigin + performance.now()` for every inserted entry whose text carries
//! its record's marker, keyed by seq; after the phase the bench reads every page's map and
//! the latency is DOM insertion − send time (wall clock on both sides, same machine), over
//! pages × records. A record any page lacks fails the run. Before the timed records, one
//! warm-up record must reach every page (so every page's event stream is connected).
//!
//! Two browser details decide whether the numbers mean anything:
//! - Connections: the console is plain HTTP/1.1 on loopback, and Chromium opens at most 6
//!   connections per host; every page holds one `EventSource` open, so with 6 pages open on
//!   one host the 7th does not even load (`PAGE_HOSTS=one` shows it: the run fails at page
//!   7). By default page *i* is therefore opened on its own host `p<i>.localhost`
//!   (Chromium resolves `*.localhost` to loopback itself), which is what 20 pages on an
//!   HTTP/2 (TLS) deployment get from multiplexing.
//! - Throttling: Chromium deprioritises pages it considers in the background (timer
//!   budgets, a lower renderer priority, occluded windows). Record delivery is no timer, but a backgrounded renderer competes at lower
//!   priority for the same two cores. So each page is a separate window
//!   (`new_window(false)`, none behind another) and Chromium gets
//!   `--disable-background-timer-throttling --disable-renderer-backgrounding
//!   --disable-backgrounding-occluded-windows`. The bench prints how many pages reported
//!   `visibilityState` `visible`: in headless Chromium 156 all 20 do, tabs included, yet 20
//!   tabs with the default throttling (`BROWSER_TABS=1 BROWSER_THROTTLING=1`) showed the
//!   records far later (p90 2.7 s against 0.3 s, on a loaded machine, 2026-12-03), so
//!   visibility alone does not tell whether a page is throttled.
//!
//! The ack ratio in browser mode also counts the browser's CPU (about 1 to 1.3 cores for 20
//! pages at 200 records/s) against the control plane, on the same machine; in production the
//! browsers run elsewhere. The bench prints both processes' CPU over the phase.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use kortix_bench::api::Api;
use kortix_bench::provision::{Cluster, LiveAgent};
use kortix_bench::sim_agent::log_record;
use kortix_bench::stats::{Latency, Summary};
use kortix_proto::v1::control_frame::Frame as Out;

// The control plane on loopback with external sandboxes, as the git benchmarks start it.
#[allow(dead_code)]
mod support;

// chromedriver, Chromium and the pages' insertion clock.
mod browser;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Wall-clock now in unix milliseconds, with the fraction.
fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// A record's send time: monotonic for the bench's own readers, wall clock for the browser.
type Sent = Arc<Mutex<HashMap<u64, (Instant, f64)>>>;

/// Streams `count` records from `first` at one per `pace`; the agent's ack latency of each.
async fn stream(
    agent: &mut LiveAgent,
    first: u64,
    count: u64,
    pace: Duration,
    sent: &Sent,
) -> anyhow::Result<Latency> {
    let mut acks = Latency::new();
    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in first..first + count {
        tick.tick().await;
        let record = log_record(seq, format!("record {seq} kbench#{seq}#"));
        let at = Instant::now();
        sent.lock().expect("sent lock").insert(seq, (at, unix_ms()));
        agent.tx.send_records(vec![record]).await?;
        // Each ack read before the next send: the control plane's frames to the agent are a
        // bounded queue, and an agent that never reads them stalls its own stream.
        loop {
            match agent.rx.next().await? {
                Some(Out::Ack(a)) if a.seq >= seq => break,
                Some(_) => {}
                None => bail!("the agent's stream ended while waiting for ack {seq}"),
            }
        }
        acks.record(at.elapsed());
    }
    Ok(acks)
}

/// One console page's event stream from `after`, until the event of seq `last`: the lag of
/// every record from its send time.
async fn page(
    url: String,
    token: String,
    after: u64,
    last: u64,
    sent: Sent,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<Latency> {
    let client = reqwest::Client::new();
    let mut res = client
        .get(format!("{url}?after={after}"))
        .header("cookie", format!("kortix_console={token}"))
        .send()
        .await?
        .error_for_status()?;
    let _ = ready.send(()).await;
    let mut lags = Latency::new();
    let mut buf = String::new();
    let mut expect = after + 1;
    while let Some(chunk) = res.chunk().await? {
        let now = Instant::now();
        buf.push_str(std::str::from_utf8(&chunk).context("the event stream is UTF-8")?);
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(id) = event.lines().find_map(|l| l.strip_prefix("id: ")) else {
                continue;
            };
            let seq: u64 = id.trim().parse()?;
            if seq != expect {
                bail!("page expected seq {expect}, got {seq}");
            }
            expect += 1;
            if let Some((at, _)) = sent.lock().expect("sent lock").get(&seq) {
                lags.record(now - *at);
            }
            if seq == last {
                return Ok(lags);
            }
        }
    }
    bail!("the event stream ended at seq {}", expect - 1)
}

/// Phase 2 with `pages` HTTP clients on the session's event stream.
#[allow(clippy::too_many_arguments)]
async fn sse_phase(
    agent: &mut LiveAgent,
    events: &str,
    token: &str,
    first: u64,
    records: u64,
    pages: u64,
    pace: Duration,
    sent: &Sent,
) -> anyhow::Result<(Latency, Latency)> {
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(pages as usize);
    let last = first + records - 1;
    let viewers: Vec<_> = (0..pages)
        .map(|_| {
            tokio::spawn(page(
                events.to_string(),
                token.to_string(),
                first - 1,
                last,
                sent.clone(),
                ready_tx.clone(),
            ))
        })
        .collect();
    for _ in 0..pages {
        ready_rx.recv().await.context("a page failed to connect")?;
    }
    let with_pages = stream(agent, first, records, pace, sent).await?;
    let mut to_pages = Latency::new();
    for v in viewers {
        to_pages.merge(&v.await??);
    }
    Ok((with_pages, to_pages))
}

/// What the browser phase found besides the latencies.
struct BrowserNotes {
    setup: String,
    /// Average cores used during the timed records: chromedriver + Chromium, and this
    /// process (control plane and simulated agent).
    browser_cores: f64,
    bench_cores: f64,
    visible: usize,
    max_drift_ms: f64,
    negative: u64,
    missing: Vec<String>,
}

/// Phase 2 with `pages` Chromium pages on the session's page. `after` is the last seq
/// before the phase (what each page must show as rendered); the first seq of the phase is
/// a warm-up record every page must show before the timed records start.
#[allow(clippy::too_many_arguments)]
async fn browser_phase(
    driver: &browser::Driver,
    agent: &mut LiveAgent,
    public_url: &str,
    session_path: &str,
    token: &str,
    after: u64,
    records: u64,
    pages: u64,
    pace: Duration,
    sent: &Sent,
) -> anyhow::Result<(Latency, Latency, BrowserNotes)> {
    let distinct = match std::env::var("PAGE_HOSTS").as_deref() {
        Ok("one") => false,
        Ok("distinct") | Err(_) => true,
        Ok(other) => bail!("PAGE_HOSTS is `distinct` or `one`, not {other:?}"),
    };
    let as_tab = env_flag("BROWSER_TABS");
    let throttling = env_flag("BROWSER_THROTTLING");
    let port = public_url
        .rsplit_once(':')
        .map(|(_, p)| p.trim_end_matches('/'))
        .context("the console's port")?;
    let base = |i: u64| {
        if distinct {
            format!("http://p{i}.localhost:{port}")
        } else {
            public_url.trim_end_matches('/').to_string()
        }
    };
    let profile = tempfile::tempdir()?;
    let extra = if throttling {
        &[][..]
    } else {
        browser::NO_THROTTLING
    };
    let client = driver.browser(profile.path(), extra).await?;
    let setup = format!(
        "{pages} {} of one headless Chromium, {}, {}",
        if as_tab { "tabs" } else { "windows" },
        if distinct {
            "one host each (p<i>.localhost)"
        } else {
            "all on one host"
        },
        if throttling {
            "Chromium's default background throttling"
        } else {
            "background throttling off"
        },
    );
    let hint = if distinct {
        ""
    } else {
        " (Chromium opens at most 6 HTTP/1.1 connections per host, and every open page \
         holds one for its event stream)"
    };
    eprintln!("opening {setup}");
    let result = async {
        let mut handles = Vec::new();
        for i in 0..pages {
            let handle = if i == 0 {
                client.window().await?
            } else {
                browser::open_context(&client, as_tab).await?
            };
            if distinct || i == 0 {
                browser::sign_in(&client, &base(i), token)
                    .await
                    .with_context(|| format!("page {i}: signing in on {}", base(i)))?;
            }
            let opened = async {
                client
                    .goto(&format!("{}{session_path}#logs", base(i)))
                    .await?;
                browser::wait_js(
                    &client,
                    "the session page",
                    "return !!document.getElementById('live');",
                )
                .await
            };
            opened
                .await
                .with_context(|| format!("page {i} of {pages}: opening the session page{hint}"))?;
            let shown = browser::install_clock(&client).await?;
            if shown[0] != "true" || shown[1] != after.to_string().as_str() {
                bail!("page {i} is not live after seq {after}: {shown}");
            }
            handles.push(handle);
        }
        // Every page shows the warm-up record: its event stream is connected.
        let warm = after + 1;
        stream(agent, warm, 1, pace, sent).await?;
        for (i, h) in handles.iter().enumerate() {
            client.switch_to_window(h.clone()).await?;
            browser::wait_js(
                &client,
                "the warm-up record",
                &format!("return '{warm}' in window.__kbench;"),
            )
            .await
            .with_context(|| {
                format!("page {i} of {pages} never showed the warm-up record (seq {warm}){hint}")
            })?;
        }

        eprintln!("phase 2: {records} records, {pages} browser pages");
        let first = warm + 1;
        let last = first + records - 1;
        let (browser_cpu, bench_cpu, started) = (
            driver.cpu(),
            kortix_bench::procfs::cpu_time(None).unwrap_or_default(),
            Instant::now(),
        );
        let with_pages = stream(agent, first, records, pace, sent).await?;
        let wall = started.elapsed().as_secs_f64();
        let browser_cores = driver.cpu().saturating_sub(browser_cpu).as_secs_f64() / wall;
        let bench_cores = kortix_bench::procfs::cpu_time(None)
            .unwrap_or_default()
            .saturating_sub(bench_cpu)
            .as_secs_f64()
            / wall;

        // Every page's map, once it has the last record (or the wait runs out: then what
        // it lacks is reported).
        let mut to_pages = Latency::new();
        let mut notes = BrowserNotes {
            setup: setup.clone(),
            browser_cores,
            bench_cores,
            visible: 0,
            max_drift_ms: 0.0,
            negative: 0,
            missing: Vec::new(),
        };
        let sent = sent.lock().expect("sent lock").clone();
        for (i, h) in handles.iter().enumerate() {
            client.switch_to_window(h.clone()).await?;
            let _ = browser::wait_js(
                &client,
                "the last record",
                &format!("return '{last}' in window.__kbench;"),
            )
            .await;
            let seen = browser::collect(&client).await?;
            notes.visible += usize::from(seen.visibility == "visible");
            notes.max_drift_ms = notes.max_drift_ms.max(seen.drift_ms.abs());
            let mut lacking = Vec::new();
            for seq in first..=last {
                match seen.at.get(&seq) {
                    Some(at) => {
                        let lag_ms = at - sent[&seq].1;
                        if lag_ms < 0.0 {
                            notes.negative += 1;
                        }
                        to_pages.record_us((lag_ms.max(0.0) * 1e3) as u64);
                    }
                    None => lacking.push(seq),
                }
            }
            if !lacking.is_empty() {
                notes.missing.push(format!(
                    "page {i}: {} of {records} records missing (first {:?})",
                    lacking.len(),
                    &lacking[..lacking.len().min(5)]
                ));
            }
        }
        Ok((with_pages, to_pages, notes))
    }
    .await;
    let _ = client.close().await;
    result
}

fn row(what: &str, s: &Summary) {
    println!("| {what} | {} | {} |", s.count, s.percentiles_ms());
}

async fn run() -> anyhow::Result<()> {
    let records = env_u64("RECORDS", 2000);
    let pages = env_u64("PAGES", 20);
    let pace = Duration::from_millis(env_u64("PACE_MS", 5));
    let in_browser = match std::env::var("PAGES_KIND").as_deref() {
        Ok("browser") => true,
        Ok("sse") | Err(_) => false,
        Ok(other) => bail!("PAGES_KIND is `sse` or `browser`, not {other:?}"),
    };
    // Before anything else, so a machine without Chromium fails at once.
    let driver = if in_browser {
        Some(browser::Driver::start(std::env::var("BROWSER_CPUS").ok().as_deref()).await?)
    } else {
        None
    };
    let work = tempfile::tempdir()?;
    let (server, token) = support::start_server(work.path()).await?;
    let api = Api::connect(&server.public_url, &token).await?;
    let cluster = Cluster::new(api, &server.data_dir, "console").await?;
    let mut agent = cluster.provision_agent("console").await?;
    let (project, session) = (cluster.project.clone(), agent.session_id.clone());
    let session_path = format!("/projects/{project}/sessions/{session}");
    let sent: Sent = Arc::default();

    eprintln!("phase 1: {records} records, no pages");
    let mut baseline = stream(&mut agent, 1, records, pace, &sent).await?;

    let (with_pages, to_pages, notes) = match &driver {
        None => {
            eprintln!("phase 2: {records} records, {pages} event-stream pages");
            let events = format!("{}{session_path}/events", server.public_url);
            let (w, p) = sse_phase(
                &mut agent,
                &events,
                &token,
                records + 1,
                records,
                pages,
                pace,
                &sent,
            )
            .await?;
            (w, p, None)
        }
        Some(driver) => {
            let (w, p, n) = browser_phase(
                driver,
                &mut agent,
                &server.public_url,
                &session_path,
                &token,
                records,
                records,
                pages,
                pace,
                &sent,
            )
            .await?;
            (w, p, Some(n))
        }
    };
    drop(driver);

    eprintln!("phase 3: {records} records, no pages");
    let next = sent
        .lock()
        .expect("sent lock")
        .keys()
        .max()
        .copied()
        .unwrap_or(0)
        + 1;
    baseline.merge(&stream(&mut agent, next, records, pace, &sent).await?);

    let (b, w, p) = (baseline.summary(), with_pages.summary(), to_pages.summary());
    println!(
        "Console live view: {records} log records per phase at one per {} ms, SQLite, one \
         simulated agent; {pages} pages on one session{}",
        pace.as_millis(),
        notes
            .as_ref()
            .map(|n| format!(" ({})", n.setup))
            .unwrap_or_default()
    );
    println!("| measured | samples | p50 / p90 / p99 / max |");
    println!("|---|---|---|");
    if in_browser {
        row(&format!("agent → page DOM insertion ({pages} pages)"), &p);
    } else {
        row(&format!("agent → page event ({pages} pages)"), &p);
    }
    row("agent ack, no pages (baseline)", &b);
    row(&format!("agent ack, {pages} pages open"), &w);
    let ratio = |with: u64, without: u64| with as f64 / without.max(1) as f64;
    println!(
        "ack latency with ÷ without pages: p50 {:.2}x, p99 {:.2}x",
        ratio(w.p50_us, b.p50_us),
        ratio(w.p99_us, b.p99_us)
    );
    drop(agent);
    server.shutdown().await;
    if let Some(n) = notes {
        println!(
            "CPU during the timed records with pages: Chromium + chromedriver {:.2} cores, \
             control plane + agent {:.2} cores",
            n.browser_cores, n.bench_cores
        );
        println!(
            "pages reporting visibilityState visible: {}/{pages}; page clock drift \
             (timeOrigin + now() − Date.now()): max {:.2} ms; insertions before their send \
             time: {}",
            n.visible, n.max_drift_ms, n.negative
        );
        if !n.missing.is_empty() {
            for m in &n.missing {
                println!("MISSING {m}");
            }
            bail!(
                "{} of {pages} pages did not show every record",
                n.missing.len()
            );
        }
        println!(
            "every page showed all {records} records ({} insertions)",
            p.count
        );
    }
    Ok(())
}

/// Pins this process (control plane, agent, pages' readers) to the CPUs `list` (`0,2-3`).
fn pin(list: &str) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        for cpu in a.trim().parse::<usize>()?..=b.trim().parse::<usize>()? {
            set.set(cpu)?;
        }
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Before the runtime's threads start, so they inherit it.
    if let Ok(cpus) = std::env::var("SERVER_CPUS") {
        pin(&cpus).with_context(|| format!("SERVER_CPUS={cpus}"))?;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
