//! Aligned columns for lists and aligned `label: value` blocks for single objects.

use anstyle::Style;

use super::{BOLD, paint};

/// One cell: the text that is measured, and the style it is painted with.
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    style: Style,
}

impl Cell {
    pub fn styled(text: impl Into<String>, style: Style) -> Self {
        Cell {
            text: text.into(),
            style,
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell {
            text,
            style: Style::new(),
        }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::from(text.to_owned())
    }
}

/// A table with a bold header row; columns separated by two spaces, last column unpadded.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(width(&cell.text));
            }
        }
        let mut out = String::new();
        let header: Vec<Cell> = self
            .headers
            .iter()
            .map(|h| Cell::styled(*h, BOLD))
            .collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i);
                let text = cell.map_or("", |c| c.text.as_str());
                let style = cell.map_or(Style::new(), |c| c.style);
                line.push_str(&paint(style, text));
                if i + 1 < columns {
                    line.push_str(&" ".repeat(w - width(text) + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `label: value` lines with the values aligned.
pub fn details(rows: &[(&str, String)]) -> String {
    let label_width = rows.iter().map(|(l, _)| width(l)).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        let pad = " ".repeat(label_width - width(label));
        out.push_str(&format!(
            "{}{pad}  {value}\n",
            paint(BOLD, &format!("{label}:"))
        ));
    }
    out
}

fn width(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn columns_line_up() {
        let mut t = Table::new(&["ID", "NAME", "STATUS"]);
        t.row(vec!["a".into(), "longer-name".into(), "running".into()]);
        t.row(vec!["bbbb".into(), "x".into(), "failed".into()]);
        assert_eq!(
            strip(&t.render()),
            "ID    NAME         STATUS\n\
             a     longer-name  running\n\
             bbbb  x            failed\n"
        );
    }

    #[test]
    fn short_rows_and_unicode_are_fine() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["é".into()]);
        assert_eq!(strip(&t.render()), "A  B\né\n");
    }

    #[test]
    fn details_align_values() {
        let text = strip(&details(&[("id", "1".into()), ("status", "ok".into())]));
        assert_eq!(text, "id:      1\nstatus:  ok\n");
    }
}
