//! A session's records as the console shows them: each wire record becomes a
//! `kortix-timeline` record ([`records::timeline_record`]), the timeline
//! interprets them exactly as for the CLI, and each entry becomes an HTML fragment. Every
//! fragment carries the seq of the record that completed it (`data-seq`) and the pane it
//! belongs to (`data-pane`: the conversation, or the agent's logs).

use std::fmt::Write as _;

use kortix_proto::v1::Record;
use kortix_timeline::{Entry, Item, Options, Output, Timeline, ToolInput};

use super::layout::esc;
use crate::sessions::records;

/// Characters of a tool's full output kept behind "show all"; the rest is cut with a note.
const FULL_OUTPUT_CHARS: usize = 16 * 1024;

/// A fresh interpretation, as every viewer of a session starts one.
pub fn new_timeline() -> Timeline {
    Timeline::new(Options::default())
}

/// The entries `record` completes.
pub fn push(timeline: &mut Timeline, record: &Record) -> Vec<Entry> {
    records::timeline_record(record)
        .map(|r| timeline.push(&r))
        .unwrap_or_default()
}

fn output(out: &Output) -> String {
    if out.is_empty() {
        return String::new();
    }
    let mut html = String::new();
    if out.omitted > 0 {
        let full = kortix_timeline::cut_chars(&out.full, FULL_OUTPUT_CHARS);
        let cut = if full.len() < out.full.len() {
            " (cut)"
        } else {
            ""
        };
        let _ = write!(
            html,
            "<details class=\"more\"><summary>Show all output ({} more lines{cut})</summary><pre>{}</pre></details>",
            out.omitted,
            esc(&full)
        );
    }
    let _ = write!(
        html,
        "<pre class=\"excerpt\">{}</pre>",
        esc(&out.excerpt.join("\n"))
    );
    html
}

/// One entry as an HTML element.
pub fn render(entry: &Entry) -> String {
    let seq = entry.seq;
    let item = |class: &str, inner: String| {
        format!(
            "<div class=\"item {class}\" data-seq=\"{seq}\" data-pane=\"conversation\">{inner}</div>"
        )
    };
    match &entry.item {
        Item::Prompt { text } => item(
            "prompt",
            format!("<div class=\"who\">Prompt</div><p>{}</p>", esc(text)),
        ),
        Item::Text { line } => item("text", esc(line)),
        Item::Reasoning { line } => item("reasoning", esc(line)),
        Item::ToolCall {
            call_id,
            tool,
            input,
        } => {
            let input = match input {
                ToolInput::Command(c) => format!("<pre class=\"command\">$ {}</pre>", esc(c)),
                ToolInput::Path(p) | ToolInput::Text(p) => format!("<code>{}</code>", esc(p)),
            };
            format!(
                "<div class=\"item tool\" data-seq=\"{seq}\" data-pane=\"conversation\" data-call=\"{}\"><span class=\"tool-name\">{}</span> {input}</div>",
                esc(call_id),
                esc(tool)
            )
        }
        Item::ToolResult {
            call_id,
            tool,
            ok,
            exit,
            output: out,
        } => {
            let verdict = match (ok, exit) {
                (true, _) => "done".to_string(),
                (false, Some(code)) => format!("failed (exit {code})"),
                (false, None) => "failed".into(),
            };
            format!(
                "<div class=\"item tool-result {}\" data-seq=\"{seq}\" data-pane=\"conversation\" data-call=\"{}\"><span class=\"tool-name\">{}</span> {verdict}{}</div>",
                if *ok { "ok" } else { "failed" },
                esc(call_id),
                esc(tool),
                output(out)
            )
        }
        Item::FileEdit {
            path,
            added,
            removed,
        } => {
            let counts = match (added, removed) {
                (Some(a), Some(r)) => {
                    format!(" <span class=\"add\">+{a}</span> <span class=\"del\">−{r}</span>")
                }
                _ => String::new(),
            };
            item("edit", format!("Edited <code>{}</code>{counts}", esc(path)))
        }
        Item::Commit {
            sha,
            subject,
            files_changed,
            insertions,
            deletions,
            pushed,
        } => item(
            "commit",
            format!(
                "Commit <code class=\"sha\" title=\"{}\">{}</code> {} <span class=\"muted\">{files_changed} files <span class=\"add\">+{insertions}</span> <span class=\"del\">−{deletions}</span>{}</span>",
                esc(sha),
                esc(&sha.chars().take(10).collect::<String>()),
                esc(subject),
                if *pushed { " · pushed" } else { "" }
            ),
        ),
        Item::State {
            status, text, tone, ..
        } => format!(
            "<div class=\"item state tone-{}\" data-seq=\"{seq}\" data-pane=\"conversation\" data-status=\"{}\">{}</div>",
            tone_class(*tone),
            esc(status),
            esc(text)
        ),
        Item::Idle => item("idle", "Waiting for the next message".into()),
        Item::Error { message } => item("error", esc(message)),
        Item::Log { stream, line } => format!(
            "<div class=\"log\" data-seq=\"{seq}\" data-pane=\"logs\"><span class=\"stream\">{}</span> {}</div>",
            esc(stream),
            esc(line)
        ),
        Item::Gap {
            from_seq,
            to_seq,
            reason,
        } => item(
            "error",
            format!(
                "Records {from_seq}–{to_seq} were lost{}",
                reason
                    .as_deref()
                    .map_or_else(String::new, |r| format!(": {}", esc(r)))
            ),
        ),
        Item::Raw { kind, summary } => item(
            "raw",
            format!(
                "<span class=\"muted\">{}</span> {}",
                esc(kind),
                esc(summary)
            ),
        ),
    }
}

fn tone_class(tone: kortix_timeline::Tone) -> &'static str {
    match tone {
        kortix_timeline::Tone::Info => "info",
        kortix_timeline::Tone::Good => "good",
        kortix_timeline::Tone::Warn => "warn",
        kortix_timeline::Tone::Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kortix_proto::v1::record::Body;
    use kortix_proto::v1::{CommitRecord, LogLine, LogStream, SessionStatus, StateChange};

    fn rec(seq: u64, body: Body) -> Record {
        Record {
            seq,
            ts_unix_ms: 1_700_000_000_000,
            body: Some(body),
        }
    }

    #[test]
    fn commits_states_and_logs_render_with_their_seq_and_pane() {
        let mut t = new_timeline();
        let commit = rec(
            4,
            Body::Commit(CommitRecord {
                sha: "0123456789abcdef".into(),
                message: "Add <b>\n\nbody".into(),
                files_changed: 1,
                insertions: 2,
                pushed: true,
                ..Default::default()
            }),
        );
        let html: Vec<String> = push(&mut t, &commit).iter().map(render).collect();
        assert_eq!(html.len(), 1);
        assert!(html[0].contains("data-seq=\"4\""), "{}", html[0]);
        assert!(html[0].contains("0123456789") && html[0].contains("Add &lt;b&gt;"));
        assert!(html[0].contains("pushed"));

        let log = rec(
            5,
            Body::Log(LogLine {
                stream: LogStream::Stderr as i32,
                line: "boom".into(),
            }),
        );
        let html: Vec<String> = push(&mut t, &log).iter().map(render).collect();
        assert!(html[0].contains("data-pane=\"logs\"") && html[0].contains("stderr"));

        let failed = rec(
            6,
            Body::State(StateChange {
                status: SessionStatus::Failed as i32,
                phase: String::new(),
                reason: "sandbox exited".into(),
            }),
        );
        let html: Vec<String> = push(&mut t, &failed).iter().map(render).collect();
        assert!(
            html.iter().any(|h| h.contains("data-status=\"failed\"")),
            "{html:?}"
        );
    }

    #[test]
    fn records_without_a_body_are_skipped() {
        let mut t = new_timeline();
        let empty = Record {
            seq: 1,
            ts_unix_ms: 0,
            body: None,
        };
        assert!(push(&mut t, &empty).is_empty());
    }

    #[test]
    fn long_tool_output_shows_an_excerpt_and_the_rest_behind_a_toggle() {
        let full: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let html = output(&Output::new(full, 10));
        assert!(html.contains("30 more lines"), "{html}");
        assert!(html.contains("<pre class=\"excerpt\">line 31\n"), "{html}");
        assert!(html.contains("line 1\n"));
    }
}
