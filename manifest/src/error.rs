//! Why a manifest is rejected outright, and the per-entry diagnostics of one
//! that parses.

use serde::{Deserialize, Serialize};

/// The manifest as a whole is rejected: nothing in it can be trusted.
///
/// Everything short of this is reported per entry in [`crate::Manifest::errors`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The text is not TOML (or its top level is not a table).
    #[error("not valid TOML: {0}")]
    Toml(String),
    /// `kortix_version` names a schema newer than this platform knows.
    /// Misreading future fields silently would be worse than refusing.
    #[error("unsupported kortix_version {found} (this platform supports {supported})", supported = crate::SUPPORTED_VERSION)]
    UnsupportedVersion {
        /// The declared value, as written.
        found: String,
    },
    /// `kortix_version` is present but is not a version at all.
    #[error("invalid kortix_version {found}: expected 1 or \"1\"")]
    InvalidVersion {
        /// The declared value, as written.
        found: String,
    },
}

/// A TOML syntax error as `line L, column C: message` (1-based, columns in characters), so
/// a person can find it: the parsers' messages alone do not say where.
pub fn toml_syntax(text: &str, message: &str, span: Option<std::ops::Range<usize>>) -> String {
    let message = message.trim_end();
    let Some(span) = span else {
        return message.to_owned();
    };
    let (line, column) = line_column(text, span.start);
    format!("line {line}, column {column}: {message}")
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// One problem (or warning) tied to a place in the manifest.
///
/// `section` is the TOML path of the list or table (`"triggers"`,
/// `"sandbox.templates"`, `"env.required"`, `"sandbox"`, …); `index` is the
/// 0-based position in the *declared* array (not the sorted output) and is
/// `null` for table-level problems; `slug` is the entry's slug as written
/// (even if invalid) when it had one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub section: String,
    pub index: Option<usize>,
    pub slug: Option<String>,
    pub message: String,
}

/// The name the issue tracker uses for an entry of `errors`.
pub type EntryError = Diagnostic;

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.section)?;
        if let Some(index) = self.index {
            write!(f, "[{index}]")?;
        }
        if let Some(slug) = &self.slug {
            write!(f, " ({slug})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Collects diagnostics while the sections are parsed.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn error(
        &mut self,
        section: &str,
        index: Option<usize>,
        slug: Option<&str>,
        message: impl Into<String>,
    ) {
        self.errors.push(diag(section, index, slug, message));
    }

    pub fn warn(
        &mut self,
        section: &str,
        index: Option<usize>,
        slug: Option<&str>,
        message: impl Into<String>,
    ) {
        self.warnings.push(diag(section, index, slug, message));
    }
}

fn diag(
    section: &str,
    index: Option<usize>,
    slug: Option<&str>,
    message: impl Into<String>,
) -> Diagnostic {
    Diagnostic {
        section: section.to_owned(),
        index,
        slug: slug.map(str::to_owned),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_line_and_column() {
        let text = "[project]\nname = \"ok\"\nbroken = [1,\n";
        let err = crate::parse(text).expect_err("not TOML");
        let msg = err.to_string();
        assert!(msg.starts_with("not valid TOML: line 3, column "), "{msg}");
    }

    #[test]
    fn columns_count_characters_and_offsets_are_clamped() {
        assert_eq!(line_column("é = ?", 5), (1, 5));
        assert_eq!(line_column("a\nbc", 3), (2, 2));
        assert_eq!(line_column("a", 99), (1, 2));
        // Inside a multi-byte character: the character's own column.
        assert_eq!(line_column("éx", 1), (1, 1));
    }
}
