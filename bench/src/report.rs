//! Results as Markdown tables, ready to paste into BENCHMARKS.md.

use std::fmt::Write as _;

/// A two-column (`metric | value`) Markdown table with a heading and optional notes.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub title: String,
    rows: Vec<(String, String)>,
    notes: Vec<String>,
}

impl Report {
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    pub fn row(&mut self, metric: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.rows.push((metric.into(), value.into()));
        self
    }

    pub fn note(&mut self, note: impl Into<String>) -> &mut Self {
        self.notes.push(note.into());
        self
    }

    pub fn rows(&self) -> &[(String, String)] {
        &self.rows
    }

    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### {}\n", self.title);
        out.push_str("| metric | value |\n|---|---|\n");
        for (metric, value) in &self.rows {
            let _ = writeln!(out, "| {} | {} |", cell(metric), cell(value));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

/// Escapes what would break a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `goal met` / `goal missed` next to a measured value.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_markdown_table() {
        let mut r = Report::new("Fleet");
        r.row("agents", "10,000")
            .row("odd | cell", "a\nb")
            .note("measured on loopback");
        let md = r.to_markdown();
        assert_eq!(
            md,
            "### Fleet\n\n| metric | value |\n|---|---|\n| agents | 10,000 |\n\
             | odd \\| cell | a b |\n\n- measured on loopback\n"
        );
        assert_eq!(verdict(true), "met");
    }
}
