//! Times merging a session branch into the default branch of a large repository: our gix
//! implementation (`changes::preview_merge` + `changes::merge`) against git's own
//! `merge-tree --write-tree` + `commit-tree` + `update-ref`.
//!
//! The repository (~10k commits, 5k files on `main`; a `session` branch forked 1000 commits
//! back that changes 50 files, so a true merge is needed) is generated once with
//! `git fast-import` and reused from the cache directory.
//!
//! ```text
//! cargo run --release -p kortix-controlplane --example bench_merge -- [CACHE_DIR] [REPS]
//! ```

use std::{
    error::Error,
    fmt::Write as _,
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use kortix_controlplane::changes::{MergeKind, MergeSignature, merge, preview_merge};

const DIRS: usize = 50;
const FILES_PER_DIR: usize = 100;
const LINES_PER_FILE: usize = 20;
const COMMITS: usize = 10_000;
const FORK_AT: usize = 9_000;
/// Directories `main` keeps editing; the session only edits the others, so the merge is clean.
const MAIN_DIRS: usize = 40;
const SESSION_FILES: usize = 50;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cache = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kortix-bench-merge"));
    let reps: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(15);
    let bench = Bench::new(cache)?;
    bench.ensure_repo()?;

    let main0 = bench.git(&["rev-parse", "refs/heads/main"])?;
    let session = bench.git(&["rev-parse", "refs/heads/session"])?;
    println!(
        "repo {}: {} commits on main, {} files, session {} commits behind with {} changed files",
        bench.repo.display(),
        bench.git(&["rev-list", "--count", "main"])?,
        bench
            .git(&["ls-tree", "-r", "--name-only", "main"])?
            .lines()
            .count(),
        bench.git(&["rev-list", "--count", "session..main"])?,
        SESSION_FILES,
    );

    // Wall time, and CPU time (ours in-process, git's summed over its child processes), which
    // is less disturbed by other load on the machine.
    let (mut gix_preview, mut gix_merge, mut gix_total, mut git_total) =
        (vec![], vec![], vec![], vec![]);
    let (mut gix_merge_cpu, mut git_cpu) = (vec![], vec![]);
    let mut expected_tree: Option<String> = None;
    for rep in 0..reps {
        // Alternate the order so neither side always runs with the warmer cache.
        for gix_first in [rep % 2 == 0, rep % 2 != 0] {
            bench.reset(&main0)?;
            if gix_first {
                let (preview, merged, merged_cpu) = bench.run_gix(rep)?;
                gix_preview.push(preview);
                gix_merge.push(merged);
                gix_total.push(preview + merged);
                gix_merge_cpu.push(merged_cpu);
            } else {
                let (wall, cpu) = bench.run_git(rep, &main0, &session)?;
                git_total.push(wall);
                git_cpu.push(cpu);
            }
            let tree = bench.git(&["rev-parse", "main^{tree}"])?;
            let parents = bench.git(&["rev-list", "--parents", "-n", "1", "main"])?;
            if !parents.ends_with(&format!("{main0} {session}")) {
                return Err(format!("unexpected merge parents: {parents}").into());
            }
            match &expected_tree {
                None => expected_tree = Some(tree),
                Some(expected) if *expected == tree => {}
                Some(expected) => return Err(format!("trees differ: {expected} vs {tree}").into()),
            }
        }
    }
    bench.reset(&main0)?;

    let (p, m, g, t) = (
        median(&mut gix_preview),
        median(&mut gix_merge),
        median(&mut gix_total),
        median(&mut git_total),
    );
    let (mc, tc) = (median(&mut gix_merge_cpu), median(&mut git_cpu));
    println!("{reps} repetitions each, medians (wall / cpu):");
    println!(
        "  gix preview_merge                           {:>8.2} ms",
        ms(p)
    );
    println!(
        "  gix merge (incl. diff capture, ref CAS)     {:>8.2} ms / {:>8.2} ms",
        ms(m),
        ms(mc)
    );
    println!(
        "  gix preview_merge + merge                   {:>8.2} ms",
        ms(g)
    );
    println!(
        "  git merge-tree + commit-tree + update-ref   {:>8.2} ms / {:>8.2} ms",
        ms(t),
        ms(tc)
    );
    println!(
        "  ratio gix merge / git                       {:>8.2}x    / {:>8.2}x",
        ms(m) / ms(t),
        ms(mc) / ms(tc)
    );
    println!(
        "  ratio gix preview_merge + merge / git       {:>8.2}x",
        ms(g) / ms(t)
    );
    Ok(())
}

struct Bench {
    dir: PathBuf,
    repo: PathBuf,
    /// git isolated from the machine's configuration, with fixed dates (the shared test one).
    env: kortix_tests::git::GitEnv,
}

impl Bench {
    fn new(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let repo = dir.join("repo.git");
        Ok(Bench {
            dir,
            repo,
            env: kortix_tests::git::GitEnv::new().with_fixed_dates(),
        })
    }

    fn command(&self) -> Command {
        self.env.command(&self.repo)
    }

    fn git(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command()
            .args(args)
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            return Err(format!("git {args:?} failed with {}", out.status).into());
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    /// Builds the repository unless a previous run left it complete.
    fn ensure_repo(&self) -> Result<()> {
        let ready = self.dir.join("ready");
        if ready.exists() {
            return Ok(());
        }
        if self.repo.exists() {
            std::fs::remove_dir_all(&self.repo)?;
        }
        let started = Instant::now();
        let status = self
            .env
            .command(&self.dir)
            .args(["init", "--bare", "-q", "-b", "main"])
            .arg(&self.repo)
            .status()?;
        if !status.success() {
            return Err("git init failed".into());
        }
        let stream = fast_import_stream();
        let mut child = self
            .command()
            .args(["fast-import", "--quiet"])
            .stdin(Stdio::piped())
            .spawn()?;
        child.stdin.take().ok_or("no stdin")?.write_all(&stream)?;
        if !child.wait()?.success() {
            return Err("git fast-import failed".into());
        }
        // A served repository is packed and has a commit-graph; give both tools that.
        self.git(&["gc", "-q"])?;
        self.git(&["commit-graph", "write", "--reachable"])?;
        std::fs::write(&ready, b"")?;
        println!("built {} in {:.1?}", self.repo.display(), started.elapsed());
        Ok(())
    }

    /// Puts `main` back and deletes the loose objects earlier merges wrote, so every run
    /// writes its objects afresh into a fully packed repository.
    fn reset(&self, main0: &str) -> Result<()> {
        self.git(&["update-ref", "refs/heads/main", main0])?;
        for entry in std::fs::read_dir(self.repo.join("objects"))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    /// Wall time of the preview, wall time of the merge, CPU time of the merge.
    fn run_gix(&self, rep: usize) -> Result<(Duration, Duration, Duration)> {
        let signature = MergeSignature {
            name: "Kortix".into(),
            email: "kortix@localhost".into(),
            time: gix::date::Time::new(1_700_000_000, 0),
        };
        let started = Instant::now();
        let repo = gix::open(&self.repo)?;
        let preview = preview_merge(&repo, "main", "session")?;
        if !preview.mergeable || preview.fast_forward {
            return Err(format!("expected a clean true merge, got {preview:?}").into());
        }
        let previewed = started.elapsed();
        let cpu_started = process_cpu_time();
        let outcome = merge(&repo, "main", "session", &format!("rep {rep}"), &signature)?;
        let total = started.elapsed();
        let cpu = process_cpu_time().saturating_sub(cpu_started);
        if outcome.kind != MergeKind::MergeCommit {
            return Err(format!("expected a merge commit, got {:?}", outcome.kind).into());
        }
        Ok((previewed, total - previewed, cpu))
    }

    /// Wall time and the CPU time of the git processes.
    fn run_git(&self, rep: usize, main0: &str, session: &str) -> Result<(Duration, Duration)> {
        let cpu_started = children_cpu_time();
        let started = Instant::now();
        let out = self.git(&["merge-tree", "--write-tree", "main", "session"])?;
        let tree = out.lines().next().ok_or("merge-tree printed nothing")?;
        let message = format!("Merge branch 'session' into main\n\nrep {rep}\n");
        let commit = self.git(&[
            "commit-tree",
            tree,
            "-p",
            main0,
            "-p",
            session,
            "-m",
            &message,
        ])?;
        self.git(&[
            "update-ref",
            "-m",
            "merge session",
            "refs/heads/main",
            &commit,
            main0,
        ])?;
        Ok((
            started.elapsed(),
            children_cpu_time().saturating_sub(cpu_started),
        ))
    }
}

/// The whole history as a `git fast-import` stream: one commit adding every file, then
/// commits that each rewrite one line in two files of the first `MAIN_DIRS` directories.
fn fast_import_stream() -> Vec<u8> {
    let files = DIRS * FILES_PER_DIR;
    let mut versions = vec![[0u32; LINES_PER_FILE]; files];
    let mut out = Vec::with_capacity(32 << 20);
    let path = |f: usize| {
        format!(
            "dir{:02}/file{:03}.txt",
            f / FILES_PER_DIR,
            f % FILES_PER_DIR
        )
    };
    let content = |f: usize, v: &[u32; LINES_PER_FILE]| {
        let mut s = String::new();
        for (l, version) in v.iter().enumerate() {
            let _ = writeln!(
                s,
                "file {f} line {l} version {version} with some padding text"
            );
        }
        s
    };
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let commit_header = |out: &mut Vec<u8>,
                         branch: &str,
                         mark: usize,
                         from: Option<usize>,
                         msg: &str| {
        let _ = write!(
            out,
            "commit refs/heads/{branch}\nmark :{mark}\ncommitter Bench <bench@example.com> {} +0000\ndata {}\n{msg}\n",
            1_600_000_000 + mark,
            msg.len()
        );
        if let Some(from) = from {
            let _ = writeln!(out, "from :{from}");
        }
    };
    let modify = |out: &mut Vec<u8>, f: usize, text: &str| {
        let _ = write!(
            out,
            "M 100644 inline {}\ndata {}\n{text}\n",
            path(f),
            text.len()
        );
    };

    commit_header(&mut out, "main", 1, None, "initial import");
    for (f, v) in versions.iter().enumerate() {
        modify(&mut out, f, &content(f, v));
    }
    for c in 2..=COMMITS {
        commit_header(&mut out, "main", c, Some(c - 1), &format!("change {c}"));
        for _ in 0..2 {
            let f = (next() as usize) % (MAIN_DIRS * FILES_PER_DIR);
            let l = (next() as usize) % LINES_PER_FILE;
            versions[f][l] = c as u32;
            modify(&mut out, f, &content(f, &versions[f]));
        }
        if c == FORK_AT {
            let _ = writeln!(out, "reset refs/heads/session\nfrom :{c}\n");
        }
    }
    // The session's work happens in the directories main leaves alone after the fork.
    commit_header(&mut out, "session", COMMITS + 1, None, "session work");
    let first = MAIN_DIRS * FILES_PER_DIR;
    for i in 0..SESSION_FILES {
        let f = first + i * ((files - first) / SESSION_FILES);
        let mut v = versions[f];
        v[LINES_PER_FILE / 2] = (COMMITS + 1) as u32;
        modify(&mut out, f, &content(f, &v));
    }
    out
}

fn process_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// User plus system time of all waited-for child processes so far.
fn children_cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::new(t.tv_sec().max(0) as u64, t.tv_usec().max(0) as u32 * 1000)
    };
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| tv(u.user_time()) + tv(u.system_time()))
        .unwrap_or_default()
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
