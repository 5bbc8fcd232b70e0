//! Removes secret values from everything the agent streams.

use std::collections::BTreeMap;

/// Values shorter than this are not redacted: they would shred ordinary text.
pub const MIN_SECRET_LEN: usize = 4;

/// Replaces each secret value (and its JSON-escaped form, for event JSON) with `[REDACTED:NAME]`.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// (needle, replacement), longest needle first so a secret that contains another is
    /// replaced whole.
    needles: Vec<(String, String)>,
}

impl Redactor {
    pub fn new(secrets: &BTreeMap<String, String>) -> Self {
        Self::from_pairs(secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// From (name, value) pairs; a name may appear with several values.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut needles = Vec::new();
        for (name, value) in pairs {
            if value.len() < MIN_SECRET_LEN {
                continue;
            }
            let replacement = format!("[REDACTED:{name}]");
            needles.push((value.to_owned(), replacement.clone()));
            // Inside JSON text a value with quotes, backslashes or control characters appears
            // escaped; redact that spelling too.
            let escaped = serde_json::to_string(value).unwrap_or_default();
            let escaped = escaped.trim_matches('"');
            if escaped != value && escaped.len() >= MIN_SECRET_LEN {
                needles.push((escaped.to_owned(), replacement));
            }
        }
        needles.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        needles.dedup_by(|a, b| a.0 == b.0);
        Redactor { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Length in bytes of the longest text redacted: a cut that keeps this many bytes past
    /// the cut point before redacting cannot split a secret into an unredacted prefix.
    pub fn longest(&self) -> usize {
        self.needles.first().map_or(0, |(n, _)| n.len())
    }

    /// Redacts in place; returns whether anything was replaced.
    pub fn redact(&self, text: &mut String) -> bool {
        let mut changed = false;
        for (needle, replacement) in &self.needles {
            if text.contains(needle.as_str()) {
                *text = text.replace(needle.as_str(), replacement);
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn redacts_values_longest_first_and_skips_short_ones() {
        let r = Redactor::new(&secrets(&[
            ("TOKEN", "abcd1234"),
            ("PREFIX", "abcd"),
            ("PIN", "123"),
        ]));
        let mut s = "t=abcd1234 p=abcd pin=123".to_owned();
        assert!(r.redact(&mut s));
        assert_eq!(s, "t=[REDACTED:TOKEN] p=[REDACTED:PREFIX] pin=123");
    }

    #[test]
    fn redacts_json_escaped_spelling() {
        let r = Redactor::new(&secrets(&[("PW", "p\"w\\x")]));
        let json = serde_json::json!({ "out": "pw is p\"w\\x" }).to_string();
        let mut s = json.clone();
        assert!(r.redact(&mut s));
        assert!(!s.contains("p\\\"w\\\\x"), "{s}");
        assert!(s.contains("[REDACTED:PW]"));
        let mut untouched = "nothing here".to_owned();
        assert!(!r.redact(&mut untouched));
    }
}
