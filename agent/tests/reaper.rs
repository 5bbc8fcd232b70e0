//! Orphan reaping as a child subreaper (its own test binary: reaping every child of the
//! process would interfere with other tests' children).

use std::process::Command;
use std::time::Duration;

use kortix_agent::process::{self, ReapMode, Reaper};

fn zombies_of(pid: u32) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(after) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut fields = after.1.split_whitespace();
        let state = fields.next();
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == pid && state == Some("Z") {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn subreaper_reaps_orphans_and_still_reports_own_children() {
    assert!(
        !process::become_reaper().unwrap(),
        "tests do not run as PID 1"
    );
    let reaper = Reaper::start(ReapMode::AllChildren).unwrap();
    // The shell exits at once; its background sleeps are orphaned and re-parented to us.
    let out = reaper
        .output(
            Command::new("sh").args(["-c", "sleep 0.3 & sleep 0.3 & echo started"]),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(out.exit.success());
    assert_eq!(out.stdout.trim(), "started");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reaper.orphans_reaped() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "orphans not reaped: {}",
            reaper.orphans_reaped()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(zombies_of(std::process::id()), 0);

    // While held, only registered children are waited for (gix waits for its own).
    let hold = reaper.own_children_only();
    let mut std_child = Command::new("true").spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        std_child.wait().unwrap().success(),
        "the reaper must not steal a held child's status"
    );
    drop(hold);
}
