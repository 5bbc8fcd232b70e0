//! One turn of a session (a prompt and the agent's work on it) summarised for a Slack
//! thread: the recent steps for the progress message, the assistant's answer for the final
//! one. Pure: timeline items in, text out.

use std::collections::VecDeque;

use kortix_timeline::{Item, cut_chars};

/// Steps shown in the progress message.
const STEPS_SHOWN: usize = 8;
/// Longest step line.
const STEP_CHARS: usize = 160;
/// Longest answer kept (Slack's message limit is far above; a thread is not a log).
const ANSWER_CHARS: usize = 3_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Turn {
    steps: VecDeque<String>,
    answer: String,
    answer_cut: bool,
    tools: usize,
    errors: Vec<String>,
}

impl Turn {
    /// Takes one item; true when the progress message should change.
    pub fn push(&mut self, item: &Item) -> bool {
        match item {
            Item::Text { line } => {
                self.add_answer(line);
                if !line.trim().is_empty() {
                    self.step(format!("💬 {}", line.trim()));
                }
                true
            }
            Item::ToolCall { tool, input, .. } => {
                self.tools += 1;
                let input = input.text().lines().next().unwrap_or_default();
                self.step(format!("🔧 {tool} `{}`", input.replace('`', "'")));
                true
            }
            Item::ToolResult {
                tool, ok: false, ..
            } => {
                self.step(format!("⚠️ {tool} failed"));
                true
            }
            Item::FileEdit {
                path,
                added,
                removed,
            } => {
                let counts = match (added, removed) {
                    (Some(a), Some(r)) => format!(" (+{a} −{r})"),
                    _ => String::new(),
                };
                self.step(format!("📝 {path}{counts}"));
                true
            }
            Item::Commit { subject, .. } => {
                self.step(format!("📦 committed: {subject}"));
                true
            }
            Item::Error { message } => {
                self.errors.push(cut_chars(message, STEP_CHARS));
                self.step(format!("❌ {message}"));
                true
            }
            _ => false,
        }
    }

    fn step(&mut self, line: String) {
        if self.steps.len() == STEPS_SHOWN {
            self.steps.pop_front();
        }
        self.steps.push_back(cut_chars(&line, STEP_CHARS));
    }

    fn add_answer(&mut self, line: &str) {
        if self.answer_cut {
            return;
        }
        if self.answer.chars().count() + line.chars().count() > ANSWER_CHARS {
            self.answer_cut = true;
            self.answer.push('…');
            return;
        }
        if !self.answer.is_empty() {
            self.answer.push('\n');
        }
        self.answer.push_str(line);
    }

    /// The progress message: what the agent is doing, the last steps.
    pub fn progress_text(&self, session_id: &str) -> String {
        let mut text = format!("⏳ Working… (session `{session_id}`)");
        if self.tools > 0 {
            text.push_str(&format!(" · {} tool call(s)", self.tools));
        }
        for step in &self.steps {
            text.push('\n');
            text.push_str("> ");
            text.push_str(step);
        }
        text
    }

    /// The assistant's answer in this turn (empty when it said nothing).
    pub fn answer(&self) -> &str {
        self.answer.trim()
    }

    /// Errors the agent reported in this turn.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    pub fn tool_calls(&self) -> usize {
        self.tools
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kortix_timeline::ToolInput;

    #[test]
    fn steps_are_bounded_and_the_answer_collected() {
        let mut turn = Turn::default();
        assert!(!turn.push(&Item::Idle));
        for i in 0..20 {
            assert!(turn.push(&Item::ToolCall {
                call_id: i.to_string(),
                tool: "bash".into(),
                input: ToolInput::Command(format!("echo {i}\nsecond line")),
            }));
        }
        turn.push(&Item::Text {
            line: "Done: wrote hello.txt.".into(),
        });
        turn.push(&Item::Text {
            line: "Pushed it.".into(),
        });
        let progress = turn.progress_text("s1");
        assert!(progress.starts_with("⏳ Working… (session `s1`) · 20 tool call(s)"));
        assert_eq!(progress.lines().count(), 1 + STEPS_SHOWN);
        assert!(progress.contains("> 🔧 bash `echo 19`"), "{progress}");
        assert!(!progress.contains("second line"));
        assert_eq!(turn.answer(), "Done: wrote hello.txt.\nPushed it.");
        assert_eq!(turn.tool_calls(), 20);
    }

    #[test]
    fn long_answers_are_cut_once() {
        let mut turn = Turn::default();
        for _ in 0..100 {
            turn.push(&Item::Text {
                line: "x".repeat(100),
            });
        }
        assert!(turn.answer().chars().count() <= ANSWER_CHARS + 1);
        assert!(turn.answer().ends_with('…'));
        turn.push(&Item::Error {
            message: "model unavailable".into(),
        });
        assert_eq!(turn.errors(), ["model unavailable".to_string()]);
    }
}
