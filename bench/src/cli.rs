//! Command-line arguments of `kortix-loadgen` and their validation.

use crate::target::TargetArgs;

/// Wire limits the control plane enforces on a record batch.
pub const MAX_BATCH_RECORDS: usize = 1024;
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Each record line carries a 16-hex-digit send timestamp and a space, and the record's seq,
/// timestamp and framing take about 18 bytes more.
pub const MIN_RECORD_BYTES: usize = crate::streamer::PREFIX + crate::streamer::RECORD_OVERHEAD;

#[derive(Debug, clap::Parser)]
#[command(
    name = "kortix-loadgen",
    about = "Simulated Kortix agents and viewers over the real protocol (mTLS gateway, public API)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// Many connected agents heartbeating: heartbeat round trip and control-plane memory.
    Fleet(FleetArgs),
    /// Many sessions streaming records: agent → durable → ack throughput and ack latency.
    Records(RecordsArgs),
    /// One session streaming to many attached viewers: delivered records/s and lag.
    Fanout(FanoutArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Simulated agents (one session each).
    #[arg(long, default_value_t = 10_000)]
    pub agents: u64,
    /// Seconds between an agent's heartbeats.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Length of the measurement window, after the ramp and one warm-up interval.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Agents provisioned (StartSession → Enroll → Connect) concurrently during the ramp.
    #[arg(long, default_value_t = 32)]
    pub ramp_concurrency: usize,
    /// Stop the ramp after this many failed agents.
    #[arg(long, default_value_t = 100)]
    pub max_failures: u64,
    /// Stop starting agents after this many seconds and measure the fleet that is up.
    #[arg(long, default_value_t = 900)]
    pub ramp_timeout_secs: u64,
    /// Serial heartbeats of a single agent before the ramp: the unloaded baseline.
    #[arg(long, default_value_t = 200)]
    pub baseline_heartbeats: u64,
    /// Seconds of each in-process store baseline: `Store::record_heartbeat` at the fleet's
    /// heartbeat rate, as the server writes them and in what-if variants; 0 skips them.
    #[arg(long, default_value_t = 15)]
    pub store_baseline_secs: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// Records per batch (≤ 1024).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Approximate encoded size of one record (log line length).
    #[arg(long, default_value_t = 200)]
    pub record_bytes: usize,
    /// Batches in flight (sent, not yet acked) per session.
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// Offered load in records/s over all sessions; 0 sends as fast as acks allow.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds of load before the measurement window opens.
    #[arg(long, default_value_t = 5)]
    pub warmup_secs: u64,
    /// Length of the measurement window.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RecordsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Sessions streaming at once (one simulated agent each).
    #[arg(long, default_value_t = 100)]
    pub sessions: u64,
    /// Seconds of the in-process store baseline (same batches straight into `Store::
    /// insert_records`, no gRPC); 0 skips it.
    #[arg(long, default_value_t = 10)]
    pub baseline_secs: u64,
    /// Database for the store baseline [default: the server's --database-url, else a fresh
    /// SQLite file with the server's options].
    #[arg(long)]
    pub baseline_database_url: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Viewers attached (follow) to the one streaming session, each on its own connection.
    #[arg(long, default_value_t = 100)]
    pub viewers: u64,
    /// Seconds streaming with no viewer first: the ingest baseline of the same run.
    #[arg(long, default_value_t = 10)]
    pub baseline_secs: u64,
}

/// Why arguments were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), Invalid> {
    if ok { Ok(()) } else { Err(Invalid(msg())) }
}

impl FleetArgs {
    pub fn validate(&self) -> Result<(), Invalid> {
        check(self.agents >= 1, || "--agents must be at least 1".into())?;
        check(self.heartbeat_secs >= 1, || {
            "--heartbeat-secs must be at least 1".into()
        })?;
        check(self.duration_secs >= self.heartbeat_secs, || {
            format!(
                "--duration-secs ({}) must cover at least one heartbeat interval ({})",
                self.duration_secs, self.heartbeat_secs
            )
        })?;
        check(self.ramp_concurrency >= 1, || {
            "--ramp-concurrency must be at least 1".into()
        })?;
        check(self.max_failures >= 1, || {
            "--max-failures must be at least 1".into()
        })
    }
}

impl StreamArgs {
    pub fn validate(&self) -> Result<(), Invalid> {
        check((1..=MAX_BATCH_RECORDS).contains(&self.batch), || {
            format!("--batch must be 1..={MAX_BATCH_RECORDS} (the gateway's batch limit)")
        })?;
        check(self.record_bytes >= MIN_RECORD_BYTES, || {
            format!("--record-bytes must be at least {MIN_RECORD_BYTES} (the timestamp prefix)")
        })?;
        // Leave room for framing of each record inside the 4 MiB batch limit.
        check(
            self.batch * (self.record_bytes + 32) <= MAX_BATCH_BYTES,
            || {
                format!(
                    "--batch × --record-bytes = {} bytes exceeds the 4 MiB batch limit",
                    self.batch * self.record_bytes
                )
            },
        )?;
        check(self.window >= 1, || "--window must be at least 1".into())?;
        check(self.duration_secs >= 1, || {
            "--duration-secs must be at least 1".into()
        })
    }
}

impl RecordsArgs {
    pub fn validate(&self) -> Result<(), Invalid> {
        check(self.sessions >= 1, || {
            "--sessions must be at least 1".into()
        })?;
        self.stream.validate()
    }
}

impl FanoutArgs {
    pub fn validate(&self) -> Result<(), Invalid> {
        check(self.viewers >= 1, || "--viewers must be at least 1".into())?;
        self.stream.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kortix-loadgen").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_issue() {
        let Scenario::Fleet(f) = parse(&["fleet"]).unwrap().scenario else {
            panic!("not fleet")
        };
        assert_eq!((f.agents, f.heartbeat_secs), (10_000, 10));
        f.validate().unwrap();
        let Scenario::Records(r) = parse(&["records"]).unwrap().scenario else {
            panic!("not records")
        };
        assert_eq!(r.sessions, 100);
        r.validate().unwrap();
        let Scenario::Fanout(v) = parse(&["fanout", "--viewers", "100", "--rate", "5000"])
            .unwrap()
            .scenario
        else {
            panic!("not fanout")
        };
        assert_eq!((v.viewers, v.stream.rate), (100, 5000));
        v.validate().unwrap();
    }

    #[test]
    fn refuses_bad_arguments() {
        let fleet = |args: &[&str]| match parse(&[&["fleet"], args].concat()).unwrap().scenario {
            Scenario::Fleet(f) => f.validate(),
            _ => unreachable!(),
        };
        assert!(fleet(&["--agents", "0"]).is_err());
        assert!(fleet(&["--heartbeat-secs", "10", "--duration-secs", "5"]).is_err());
        assert!(fleet(&["--ramp-concurrency", "0"]).is_err());
        let records = |args: &[&str]| match parse(&[&["records"], args].concat()).unwrap().scenario
        {
            Scenario::Records(r) => r.validate(),
            _ => unreachable!(),
        };
        assert!(records(&["--batch", "1025"]).is_err());
        assert!(records(&["--batch", "0"]).is_err());
        assert!(records(&["--record-bytes", "8"]).is_err());
        assert!(records(&["--batch", "1024", "--record-bytes", "8192"]).is_err());
        assert!(records(&["--window", "0"]).is_err());
        assert!(records(&["--sessions", "0"]).is_err());
        // --url needs --data-dir (the bootstrap files live there).
        assert!(parse(&["records", "--url", "http://127.0.0.1:8008"]).is_err());
        assert!(parse(&["bogus"]).is_err());
    }
}
