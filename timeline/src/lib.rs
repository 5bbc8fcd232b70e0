//! A session's records read as a timeline people can follow.
//!
//! Feed records (the `{"seq","ts","kind","data"}` shape of `kortix sessions attach --json`)
//! in order to a [`Timeline`]; it answers with [`Entry`]s: the prompt, the assistant's text
//! line by line, tool calls with their input and a bounded excerpt of their output, file
//! edits with line counts, commits, state changes in words, errors, agent logs. Noise
//! (OpenCode's plugin, catalog and watcher events, session bookkeeping, repeats) is left out
//! unless [`Options::verbose`], which shows every record. Rendering is the caller's: the CLI
//! prints entries to a terminal, the web console to HTML.

mod bounded;
mod item;
mod opencode;
mod record;
mod state;

pub use item::{Entry, Item, Output, Tone, ToolInput, cut_chars};
pub use record::{Record, RecordError};

use record::text;
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Every record: noise as [`Item::Raw`], repeats included.
    pub verbose: bool,
    /// Lines of a tool's output kept in [`Output::excerpt`].
    pub excerpt_lines: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            verbose: false,
            excerpt_lines: 10,
        }
    }
}

/// Longest summary of a raw record.
const RAW_SUMMARY_CHARS: usize = 200;

/// Agent log lines a reader does not need (timings are for engineers; OpenCode's own server
/// banner and warnings are about a port nobody else can reach).
fn quiet_log(stream: &str, line: &str, stopping: bool) -> bool {
    match stream {
        // While stopping, OpenCode going away is the stop at work; the state says so.
        "agent" => {
            line.starts_with("timing: ")
                || (stopping
                    && (line.starts_with("opencode stopped")
                        || line.starts_with("opencode event stream ended")))
        }
        _ => {
            line.contains("OPENCODE_SERVER_PASSWORD")
                || line.starts_with("opencode server listening")
        }
    }
}

/// An interpretation in progress. Cloning it forks the interpretation: the clone reads the
/// records after the fork exactly as the original would, which is what lets a reader resume
/// from a saved copy instead of from the first record.
#[derive(Debug, Clone)]
pub struct Timeline {
    options: Options,
    opencode: opencode::Reader,
    states: state::StateReader,
    last_seq: Option<(u64, Option<String>)>,
}

impl Timeline {
    pub fn new(options: Options) -> Self {
        Timeline {
            opencode: opencode::Reader::new(options.excerpt_lines),
            states: state::StateReader::default(),
            options,
            last_seq: None,
        }
    }

    /// The entries `record` completes (often none: a text delta waits for its line's end).
    pub fn push(&mut self, record: &Record) -> Vec<Entry> {
        self.last_seq = Some((record.seq, record.ts.clone()));
        let verbose = self.options.verbose;
        let mut items = match record.kind.as_str() {
            "event" => self.opencode.read(record.str("type"), &record.data["data"]),
            "log" => {
                let stream = record.str("stream");
                let line = record.str("line");
                let quiet = quiet_log(stream, line, self.states.stopping());
                let item = Item::Log {
                    stream: stream.to_owned(),
                    line: line.to_owned(),
                };
                if quiet { Vec::new() } else { vec![item] }
            }
            "state" => {
                let item = self.states.read(
                    record.str("status"),
                    record.str("phase"),
                    record.str("reason"),
                    verbose,
                );
                item.into_iter().collect()
            }
            "commit" => vec![commit(&record.data)],
            "gap" => vec![Item::Gap {
                from_seq: record.data["from_seq"].as_u64().unwrap_or(record.seq),
                to_seq: record.data["to_seq"].as_u64().unwrap_or(record.seq),
                reason: record.data["reason"].as_str().map(str::to_owned),
            }],
            // Connector calls and approvals read as one line each.
            "connector_call" => vec![Item::Raw {
                kind: "connector_call".into(),
                summary: connector_call(record),
            }],
            "approval" => vec![Item::Raw {
                kind: "approval".into(),
                summary: approval(record),
            }],
            // Kinds this build does not know are shown as they are, never dropped.
            kind => vec![raw(kind, record)],
        };
        // Verbose: every record shows, as what it means or else as it is.
        if items.is_empty() && verbose {
            items.push(raw(&record.kind, record));
        }
        items
            .into_iter()
            .map(|item| Entry {
                seq: record.seq,
                ts: record.ts.clone(),
                item,
            })
            .collect()
    }

    /// Roughly the bytes this interpretation holds: what keeping a copy of it costs (a
    /// reader of many sessions bounds its saved copies by this).
    pub fn footprint(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.opencode.footprint()
            + self.states.footprint()
            + self
                .last_seq
                .as_ref()
                .and_then(|(_, ts)| ts.as_ref())
                .map_or(0, String::len)
    }

    /// What is still held back (a reply's unfinished last line), when the records end.
    pub fn finish(&mut self) -> Vec<Entry> {
        let mut items = Vec::new();
        self.opencode.flush_all(&mut items);
        let (seq, ts) = self.last_seq.clone().unwrap_or((0, None));
        items
            .into_iter()
            .map(|item| Entry {
                seq,
                ts: ts.clone(),
                item,
            })
            .collect()
    }
}

fn commit(data: &Value) -> Item {
    let message = text(&data["message"]);
    Item::Commit {
        sha: text(&data["sha"]).to_owned(),
        subject: message
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_owned(),
        files_changed: data["files_changed"].as_u64().unwrap_or(0),
        insertions: data["insertions"].as_u64().unwrap_or(0),
        deletions: data["deletions"].as_u64().unwrap_or(0),
        pushed: data["pushed"].as_bool().unwrap_or(false),
    }
}

fn connector_call(record: &Record) -> String {
    let d = &record.data;
    let mut line = format!(
        "{}.{} → {} ({} ms)",
        text(&d["connector"]),
        text(&d["tool"]),
        text(&d["status"]),
        d["duration_ms"].as_u64().unwrap_or(0)
    );
    let error = text(&d["error"]);
    if !error.is_empty() {
        line.push_str(": ");
        line.push_str(error);
    }
    cut_chars(&line, RAW_SUMMARY_CHARS)
}

fn approval(record: &Record) -> String {
    let d = &record.data;
    cut_chars(
        &format!(
            "{}.{} {} (approval {}) {}",
            text(&d["connector"]),
            text(&d["tool"]),
            text(&d["state"]),
            text(&d["approval_id"]),
            text(&d["args_preview"])
        ),
        RAW_SUMMARY_CHARS,
    )
}

/// A one-line summary of any record: its type (for events) and its data, cut short.
fn raw(kind: &str, record: &Record) -> Item {
    let summary = match kind {
        "event" => {
            let props = &record.data["data"]["properties"];
            let detail = if props.as_object().is_some_and(|o| !o.is_empty()) {
                format!(" {props}")
            } else {
                String::new()
            };
            cut_chars(
                &format!("{}{detail}", record.str("type")),
                RAW_SUMMARY_CHARS,
            )
        }
        "log" => cut_chars(
            &format!("{}: {}", record.str("stream"), record.str("line")),
            RAW_SUMMARY_CHARS,
        ),
        _ => cut_chars(&record.data.to_string(), RAW_SUMMARY_CHARS),
    };
    Item::Raw {
        kind: kind.to_owned(),
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_logs() {
        assert!(quiet_log("agent", "timing: enrolled at 58 ms", false));
        assert!(quiet_log(
            "agent",
            "opencode stopped (killed by SIGTERM)",
            true
        ));
        assert!(!quiet_log(
            "agent",
            "opencode stopped (exit status 1)",
            false
        ));
        assert!(quiet_log(
            "agent",
            "opencode event stream ended after 9 events",
            true
        ));
        assert!(quiet_log(
            "stdout",
            "Warning: OPENCODE_SERVER_PASSWORD is not set",
            false
        ));
        assert!(quiet_log(
            "stdout",
            "opencode server listening on http://127.0.0.1:1",
            false
        ));
        assert!(!quiet_log("stderr", "Error: provider refused", false));
        assert!(!quiet_log("agent", "pushed unpushed commits on s1", true));
    }

    #[test]
    fn connector_calls_and_approvals_read_as_one_line() {
        let mut t = Timeline::new(Options::default());
        let call = t.push(&Record {
            seq: 1,
            ts: None,
            kind: "connector_call".into(),
            data: serde_json::json!({"connector": "pets", "tool": "slow", "status": "error",
                                     "duration_ms": 3001, "error": "timed out"}),
        });
        assert!(
            matches!(&call[..], [Entry { item: Item::Raw { summary, .. }, .. }]
                if summary == "pets.slow → error (3001 ms): timed out"),
            "{call:?}"
        );
        let asked = t.push(&Record {
            seq: 2,
            ts: None,
            kind: "approval".into(),
            data: serde_json::json!({"connector": "pets", "tool": "add", "state": "pending",
                                     "approval_id": "a1", "args_preview": "{}"}),
        });
        assert!(
            matches!(&asked[..], [Entry { item: Item::Raw { summary, .. }, .. }]
                if summary == "pets.add pending (approval a1) {}"),
            "{asked:?}"
        );
    }

    #[test]
    fn unknown_kinds_pass_through_and_verbose_shows_noise() {
        let record = |kind: &str, data: serde_json::Value| Record {
            seq: 1,
            ts: None,
            kind: kind.into(),
            data,
        };
        let mut quiet = Timeline::new(Options::default());
        let unknown = quiet.push(&record("deployment", serde_json::json!({"tool": "deploy"})));
        assert!(
            matches!(&unknown[..], [Entry { item: Item::Raw { kind, .. }, .. }] if kind == "deployment")
        );
        let noise = record(
            "event",
            serde_json::json!({"type": "plugin.added", "data": {"type": "plugin.added", "properties": {"id": "x"}}}),
        );
        assert!(quiet.push(&noise).is_empty());
        let mut verbose = Timeline::new(Options {
            verbose: true,
            ..Options::default()
        });
        assert!(matches!(
            &verbose.push(&noise)[..],
            [Entry { item: Item::Raw { summary, .. }, .. }] if summary == r#"plugin.added {"id":"x"}"#
        ));
    }

    /// A session cut at awkward places: a reply's line half-written across deltas, a tool
    /// call announced but not finished, a state repeat, and a last line with no newline.
    fn awkward_session() -> Vec<Record> {
        let ev = |ty: &str, props: serde_json::Value| {
            (
                "event",
                serde_json::json!({"type": ty, "data": {"type": ty, "properties": props}}),
            )
        };
        let tool = |status: &str, extra: serde_json::Value| {
            let mut state = serde_json::json!({"status": status, "input": {"command": "make"}});
            if let (Some(s), Some(e)) = (state.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            ev(
                "message.part.updated",
                serde_json::json!({"part": {"id": "t", "callID": "c", "type": "tool",
                                            "tool": "bash", "state": state}}),
            )
        };
        let delta = |s: &str| {
            ev(
                "message.part.delta",
                serde_json::json!({"field": "text", "partID": "p", "messageID": "m", "delta": s}),
            )
        };
        let bodies = vec![
            (
                "state",
                serde_json::json!({"status": "running", "phase": "running"}),
            ),
            ev(
                "message.updated",
                serde_json::json!({"info": {"id": "u", "role": "user"}}),
            ),
            ev(
                "message.part.updated",
                serde_json::json!({"part": {"id": "q", "messageID": "u", "type": "text",
                                            "text": "Build it"}}),
            ),
            ev(
                "message.updated",
                serde_json::json!({"info": {"id": "m", "role": "assistant"}}),
            ),
            delta("Hal"),
            delta("f a line\nand the "),
            tool("running", serde_json::json!({})),
            (
                "log",
                serde_json::json!({"stream": "stderr", "line": "warning"}),
            ),
            (
                "state",
                serde_json::json!({"status": "running", "phase": "running"}),
            ),
            tool(
                "completed",
                serde_json::json!({"output": "ok\n", "metadata": {"exit": 0}}),
            ),
            delta("rest\nno newline yet"),
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, (kind, data))| Record {
                seq: i as u64 + 1,
                ts: None,
                kind: kind.into(),
                data,
            })
            .collect()
    }

    #[test]
    fn a_fork_reads_the_rest_exactly_as_the_original() {
        let records = awkward_session();
        let mut whole = Timeline::new(Options::default());
        let mut expected: Vec<Vec<Entry>> = records.iter().map(|r| whole.push(r)).collect();
        expected.push(whole.finish());
        for cut in 0..=records.len() {
            let mut original = Timeline::new(Options::default());
            for r in &records[..cut] {
                original.push(r);
            }
            let mut fork = original.clone();
            let mut got: Vec<Vec<Entry>> = records[cut..].iter().map(|r| fork.push(r)).collect();
            got.push(fork.finish());
            assert_eq!(got, expected[cut..], "forked after {cut} records");
            assert!(fork.footprint() > 0);
        }
    }
}
