//! The human view of `sessions attach`: timeline entries as terminal lines.
//!
//! Styles are always written; `anstream` drops them unless stdout is a terminal (and honours
//! `NO_COLOR`). On a terminal a long command is cut to the screen's width; anywhere else it is
//! shown in full, wrapped, so logs and pipes keep every character of what the agent ran.

use kortix_timeline::{Entry, Item, Output, Tone, ToolInput, cut_chars};

use crate::output::{BOLD, CYAN, DIM, GREEN, RED, YELLOW, paint, short_sha, time};

/// Where full commands wrap when output is not a terminal.
const WRAP: usize = 100;
/// Longest one-line summary of a tool's non-command input.
const INPUT_CHARS: usize = 200;

pub struct View {
    pub timestamps: bool,
    /// The terminal's width; `None` when stdout is not a terminal.
    pub width: Option<usize>,
}

impl View {
    /// The lines one entry prints as (none for an entry with nothing to say).
    pub fn lines(&self, entry: &Entry) -> Vec<String> {
        let body = self.body(&entry.item);
        if !self.timestamps {
            return body;
        }
        let stamp = entry
            .ts
            .as_deref()
            .and_then(time::local_clock)
            .unwrap_or_else(|| "--:--:--".to_owned());
        let blank = " ".repeat(stamp.len());
        body.into_iter()
            .enumerate()
            .map(|(i, line)| {
                let gutter = if i == 0 { &stamp } else { &blank };
                format!("{} {line}", paint(DIM, gutter))
            })
            .collect()
    }

    fn body(&self, item: &Item) -> Vec<String> {
        match item {
            Item::Prompt { text } => text
                .lines()
                .enumerate()
                .map(|(i, line)| {
                    let mark = if i == 0 { "> " } else { "  " };
                    paint(BOLD, &format!("{mark}{line}"))
                })
                .collect(),
            Item::Text { line } => vec![line.clone()],
            Item::Reasoning { line } => vec![paint(DIM, line)],
            Item::ToolCall { tool, input, .. } => match input {
                ToolInput::Command(command) => self.command(command),
                ToolInput::Path(path) => vec![format!("{} {tool} {path}", paint(CYAN, "→"))],
                ToolInput::Text(text) => vec![format!(
                    "{} {tool} {}",
                    paint(CYAN, "→"),
                    cut_chars(text, INPUT_CHARS)
                )],
            },
            Item::ToolResult {
                tool,
                ok,
                exit,
                output,
                ..
            } => {
                let mut lines = Vec::new();
                if !ok {
                    let code = exit.map(|c| format!(" (exit {c})")).unwrap_or_default();
                    lines.push(paint(RED, &format!("  ✗ {tool} failed{code}")));
                }
                lines.extend(excerpt(output));
                lines
            }
            Item::FileEdit {
                path,
                added,
                removed,
            } => {
                let counts = match (added, removed) {
                    (Some(a), Some(r)) => format!(" {}", paint(DIM, &format!("(+{a} -{r})"))),
                    _ => String::new(),
                };
                vec![format!("{} {path}{counts}", paint(CYAN, "✎"))]
            }
            Item::Commit {
                sha,
                subject,
                files_changed,
                insertions,
                deletions,
                pushed,
            } => vec![paint(
                GREEN,
                &format!(
                    "● commit {} {subject} (+{insertions} -{deletions}, {files_changed} file{}){}",
                    short_sha(sha),
                    if *files_changed == 1 { "" } else { "s" },
                    if *pushed { ", pushed" } else { "" }
                ),
            )],
            Item::State { text, tone, .. } => {
                let style = match tone {
                    Tone::Info => DIM,
                    Tone::Good => GREEN,
                    Tone::Warn => YELLOW,
                    Tone::Error => RED,
                };
                vec![paint(style, &format!("— {text}"))]
            }
            Item::Idle => vec![paint(DIM, "— waiting for a prompt")],
            Item::Error { message } => message
                .lines()
                .map(|line| paint(RED, &format!("✗ {line}")))
                .collect(),
            Item::Log { stream, line } => {
                let who = if stream == "agent" {
                    "agent"
                } else {
                    "opencode"
                };
                vec![paint(DIM, &format!("  {who}: {line}"))]
            }
            Item::Gap {
                from_seq,
                to_seq,
                reason,
            } => {
                let why = reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                vec![paint(
                    RED,
                    &format!("! records {from_seq}..{to_seq} lost{why}"),
                )]
            }
            Item::Raw { kind, summary } => vec![paint(DIM, &format!("  [{kind}] {summary}"))],
        }
    }

    /// `$ command`: cut to one screen line on a terminal, otherwise in full, wrapped.
    fn command(&self, command: &str) -> Vec<String> {
        if let Some(width) = self.width {
            let first = command.lines().next().unwrap_or_default();
            // "$ " before it and the "…" a cut adds.
            let room = width.saturating_sub(3).max(10);
            let mut shown = cut_chars(first, room);
            let more_lines = command.trim_end().len() > first.len();
            if more_lines && shown.chars().count() <= room {
                shown.push('…');
            }
            return vec![paint(CYAN, &format!("$ {shown}"))];
        }
        let mut lines = Vec::new();
        for (i, line) in command.lines().enumerate() {
            for (j, piece) in wrap(line, WRAP - 2).into_iter().enumerate() {
                let mark = if i == 0 && j == 0 { "$ " } else { "  " };
                lines.push(paint(CYAN, &format!("{mark}{piece}")));
            }
        }
        lines
    }
}

/// The output excerpt, indented under its call.
fn excerpt(output: &Output) -> Vec<String> {
    let mut lines = Vec::new();
    if output.excerpt.is_empty() {
        if output.omitted > 0 {
            lines.push(paint(DIM, &format!("  │ ({} lines)", output.omitted)));
        }
        return lines;
    }
    if output.omitted > 0 {
        lines.push(paint(
            DIM,
            &format!("  │ … {} earlier lines", output.omitted),
        ));
    }
    lines.extend(
        output
            .excerpt
            .iter()
            .map(|line| paint(DIM, &format!("  │ {line}"))),
    );
    lines
}

/// `line` in pieces of at most `width` characters, broken after a space where one is near.
fn wrap(line: &str, width: usize) -> Vec<String> {
    let width = width.max(10);
    let mut pieces = Vec::new();
    let mut rest = line;
    while rest.chars().count() > width {
        let hard = rest
            .char_indices()
            .nth(width)
            .map_or(rest.len(), |(i, _)| i);
        // Prefer breaking after the last space in the second half of the piece.
        let cut = rest[..hard]
            .rfind(' ')
            .filter(|&i| i >= hard / 2)
            .map_or(hard, |i| i + 1);
        pieces.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    pieces.push(rest.to_owned());
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use kortix_timeline::{Options, Record, Timeline};
    use std::path::PathBuf;

    fn plain(view: &View, item: Item) -> Vec<String> {
        let entry = Entry {
            seq: 1,
            ts: Some("2025-01-02T03:04:05.000Z".into()),
            item,
        };
        view.lines(&entry)
            .iter()
            .map(|l| anstream::adapter::strip_str(l).to_string())
            .collect()
    }

    const PIPE: View = View {
        timestamps: false,
        width: None,
    };

    #[test]
    fn commands_are_whole_off_a_terminal_and_cut_on_one() {
        let long = format!("echo {}", "word ".repeat(40));
        let item = || Item::ToolCall {
            call_id: "c".into(),
            tool: "bash".into(),
            input: ToolInput::Command(long.clone()),
        };
        let wrapped = plain(&PIPE, item());
        assert!(wrapped.len() > 1, "{wrapped:?}");
        assert!(wrapped.iter().all(|l| l.chars().count() <= WRAP));
        let joined: String = wrapped
            .iter()
            .map(|l| l.get(2..).unwrap_or_default())
            .collect();
        assert_eq!(joined, long, "every character shown");
        let terminal = View {
            timestamps: false,
            width: Some(40),
        };
        let cut = plain(&terminal, item());
        assert_eq!(cut.len(), 1);
        assert!(
            cut[0].ends_with('…') && cut[0].chars().count() <= 40,
            "{cut:?}"
        );
        let multi = Item::ToolCall {
            call_id: "c".into(),
            tool: "bash".into(),
            input: ToolInput::Command("cd x\nmake".into()),
        };
        assert_eq!(plain(&terminal, multi.clone()), ["$ cd x…"]);
        assert_eq!(plain(&PIPE, multi), ["$ cd x", "  make"]);
    }

    #[test]
    fn errors_are_red_and_timestamps_lead() {
        let view = View {
            timestamps: true,
            width: None,
        };
        let entry = Entry {
            seq: 1,
            ts: None,
            item: Item::Error {
                message: "bad key".into(),
            },
        };
        let lines = view.lines(&entry);
        assert!(lines[0].contains(&format!("{RED}✗ bad key")), "{lines:?}");
        assert!(
            anstream::adapter::strip_str(&lines[0])
                .to_string()
                .starts_with("--:--:-- ✗")
        );
        let stamped = plain(&view, Item::Idle);
        assert!(
            stamped[0].len() > 9 && stamped[0].as_bytes()[2] == b':',
            "{stamped:?}"
        );
    }

    #[test]
    fn wrap_breaks_at_spaces_and_never_loses_text() {
        assert_eq!(wrap("short", 20), ["short"]);
        let text = "aaaa bbbb cccc dddd eeee ffff";
        let pieces = wrap(text, 12);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| p.chars().count() <= 12), "{pieces:?}");
        assert_eq!(wrap(&"x".repeat(25), 10).len(), 3);
    }

    fn golden_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/attach-scripted-session.txt")
    }

    /// The human view of a real session (`timeline/tests/fixtures/scripted-session.jsonl`,
    /// captured by `tests/tests/attach_view.rs`), line by line. `KORTIX_UPDATE_GOLDEN=1`
    /// rewrites the golden file after a deliberate change.
    #[test]
    fn golden_view_of_a_real_session() {
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../timeline/tests/fixtures/scripted-session.jsonl");
        let records = std::fs::read_to_string(&fixture).expect("fixture");
        let mut timeline = Timeline::new(Options::default());
        let mut out = String::new();
        let mut print = |entries: Vec<Entry>| {
            for entry in entries {
                for line in PIPE.lines(&entry) {
                    out.push_str(&anstream::adapter::strip_str(&line).to_string());
                    out.push('\n');
                }
            }
        };
        for line in records.lines() {
            print(timeline.push(&Record::from_json_line(line).expect("record")));
        }
        print(timeline.finish());
        if std::env::var_os("KORTIX_UPDATE_GOLDEN").is_some() {
            std::fs::write(golden_path(), &out).expect("write golden");
        }
        let golden = std::fs::read_to_string(golden_path()).expect("golden file");
        let (got, want): (Vec<&str>, Vec<&str>) = (out.lines().collect(), golden.lines().collect());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "line {} differs; whole view:\n{out}", i + 1);
        }
        assert_eq!(got.len(), want.len(), "whole view:\n{out}");
        // What the view is for, spelled out.
        assert!(out.contains("> Create hello.txt, commit it and push it.\n"));
        assert!(
            out.contains("\nCreated hello.txt.\nCommitted and pushed it to the session branch.\n")
        );
        assert!(out.contains("$ git add hello.txt && git commit -q -m 'Add hello.txt'"));
        assert!(out.contains("  │ pushed\n  │ Add hello.txt\n"));
        assert!(
            out.contains("● commit ") && out.contains(" Add hello.txt (+1 -0, 1 file), pushed\n")
        );
        assert!(!out.contains("plugin.added") && !out.contains("SIGTERM"));
    }
}
