//! What a person sees of a session: the items records are interpreted into.

use serde::Serialize;

/// One item, stamped with the record that completed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub seq: u64,
    /// RFC 3339, as on the record.
    pub ts: Option<String>,
    pub item: Item,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// A person's prompt: the session's first or a chat message.
    Prompt {
        text: String,
    },
    /// One line of the assistant's reply, coalesced from the streamed deltas.
    Text {
        line: String,
    },
    /// One line of the model's reasoning, when it shares it.
    Reasoning {
        line: String,
    },
    /// A tool call began; `input` is what it was asked to do.
    ToolCall {
        call_id: String,
        tool: String,
        input: ToolInput,
    },
    /// A tool call ended.
    ToolResult {
        call_id: String,
        tool: String,
        ok: bool,
        /// The process exit code, for tools that run one.
        exit: Option<i64>,
        output: Output,
    },
    /// A file written or edited by a tool, with the lines it added and removed when the
    /// tool said (an overwrite of an existing file does not).
    FileEdit {
        path: String,
        added: Option<u64>,
        removed: Option<u64>,
    },
    Commit {
        sha: String,
        subject: String,
        files_changed: u64,
        insertions: u64,
        deletions: u64,
        pushed: bool,
    },
    /// The session's state changed (`phase` says how far the agent got).
    State {
        status: String,
        phase: Option<String>,
        /// What happened, in words (the phase's meaning, the reason given).
        text: String,
        tone: Tone,
    },
    /// The assistant finished and waits for the next prompt.
    Idle,
    Error {
        message: String,
    },
    /// A log line: the agent's own (`agent`) or OpenCode's output (`stdout`, `stderr`).
    Log {
        stream: String,
        line: String,
    },
    /// Records that never reached the store.
    Gap {
        from_seq: u64,
        to_seq: u64,
        reason: Option<String>,
    },
    /// A record shown as it is: noise in verbose mode, kinds this build does not know.
    Raw {
        kind: String,
        summary: String,
    },
}

/// How an item should catch the eye.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tone {
    Info,
    Good,
    Warn,
    Error,
}

/// What a tool was asked to do, in the form a person recognises.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "text", rename_all = "snake_case")]
pub enum ToolInput {
    /// A shell command, in full.
    Command(String),
    /// The file a tool reads or writes.
    Path(String),
    /// Anything else, summarised.
    Text(String),
}

impl ToolInput {
    pub fn text(&self) -> &str {
        match self {
            ToolInput::Command(t) | ToolInput::Path(t) | ToolInput::Text(t) => t,
        }
    }
}

/// A tool's output: a bounded excerpt for the live view, the whole text for renderers that
/// show more.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    /// The last lines, each cut to [`Output::LINE_CHARS`].
    pub excerpt: Vec<String>,
    /// Lines before the excerpt that it leaves out.
    pub omitted: usize,
    pub full: String,
}

impl Output {
    pub const LINE_CHARS: usize = 240;

    /// The last `lines` lines of `full` (trailing blank lines dropped).
    pub fn new(full: String, lines: usize) -> Output {
        let all: Vec<&str> = full.trim_end().lines().collect();
        let keep = all.len().min(lines);
        let omitted = all.len() - keep;
        let excerpt = all[omitted..]
            .iter()
            .map(|l| cut_chars(l.trim_end(), Self::LINE_CHARS))
            .collect();
        Output {
            excerpt,
            omitted,
            full,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.excerpt.is_empty()
    }
}

/// `text` cut to `max` characters, marked with `…` when cut.
pub fn cut_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((at, _)) => {
            let mut s = text[..at].to_owned();
            s.push('…');
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_the_last_lines() {
        let out = Output::new("a\nb\nc\nd\n\n".into(), 2);
        assert_eq!(out.excerpt, ["c", "d"]);
        assert_eq!(out.omitted, 2);
        let short = Output::new("only".into(), 5);
        assert_eq!((short.excerpt.len(), short.omitted), (1, 0));
        assert!(Output::new(String::new(), 5).is_empty());
    }

    #[test]
    fn long_lines_are_cut_on_characters() {
        assert_eq!(cut_chars("ééé", 2), "éé…");
        assert_eq!(cut_chars("ab", 2), "ab");
        let out = Output::new("x".repeat(1000), 1);
        assert_eq!(out.excerpt[0].chars().count(), Output::LINE_CHARS + 1);
    }
}
