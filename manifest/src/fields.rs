//! Reading one `[[section]]` entry: typed field access that records
//! problems instead of failing, alias handling, unknown-key warnings, and the
//! driver that turns an array of tables into good entries plus diagnostics.

use std::collections::{BTreeSet, HashMap};

use toml::{Table, Value};

use crate::coerce::{self, type_name};
use crate::error::Diagnostics;
use crate::names;

/// One entry's fields. Every accessor marks the key as known, so whatever
/// is left at the end is reported as an unknown (probably misspelt) key.
pub(crate) struct Fields<'a> {
    table: &'a Table,
    used: BTreeSet<&'a str>,
    /// Problems that make the entry bad; non-empty means it is rejected.
    pub problems: Vec<String>,
    /// Warnings that leave the entry in place.
    pub notes: Vec<String>,
}

impl<'a> Fields<'a> {
    pub fn new(table: &'a Table) -> Self {
        Fields {
            table,
            used: BTreeSet::new(),
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(message.into());
    }

    pub fn note(&mut self, message: impl Into<String>) {
        self.notes.push(message.into());
    }

    pub fn take(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.table.get_key_value(key)?;
        self.used.insert(k.as_str());
        Some(v)
    }

    /// The canonical key wins over its alias; both at once is almost always
    /// a half-finished rename, so say so.
    pub fn take_aliased(&mut self, canonical: &str, alias: &str) -> Option<&'a Value> {
        let c = self.take(canonical);
        let a = self.take(alias);
        if c.is_some() && a.is_some() {
            self.note(format!(
                "both `{canonical}` and its alias `{alias}` are set; using `{canonical}`"
            ));
        }
        c.or(a)
    }

    /// Marks a key known but not used by this kind of entry.
    pub fn ignore(&mut self, key: &str, why: &str) {
        if self.take(key).is_some() {
            self.note(format!("`{key}` is ignored {why}"));
        }
    }

    pub fn string(&mut self, label: &str, value: Option<&Value>) -> Option<String> {
        match value? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(format!(
                    "`{label}` must be a string, found {}",
                    type_name(other)
                ));
                None
            }
        }
    }

    pub fn required_string(&mut self, label: &str, value: Option<&Value>) -> Option<String> {
        if value.is_none() {
            self.problem(format!("missing required field `{label}`"));
            return None;
        }
        self.string(label, value)
    }

    pub fn opt_str(&mut self, key: &str) -> Option<String> {
        let v = self.take(key);
        self.string(key, v)
    }

    pub fn req_str(&mut self, key: &str) -> Option<String> {
        let v = self.take(key);
        self.required_string(key, v)
    }

    /// A required, non-blank string.
    pub fn req_nonblank(&mut self, key: &str) -> Option<String> {
        let s = self.req_str(key)?;
        if s.trim().is_empty() {
            self.problem(format!("`{key}` must not be empty"));
            return None;
        }
        Some(s)
    }

    /// An optional string where blank means "not set" (so the default
    /// applies instead of an unusable empty value).
    pub fn opt_nonblank(&mut self, key: &str) -> Option<String> {
        self.opt_str(key).filter(|s| !s.trim().is_empty())
    }

    pub fn flag(&mut self, key: &str, default: bool) -> bool {
        match self.take(key) {
            None => default,
            Some(v) => coerce::boolean(v).unwrap_or_else(|e| {
                self.problem(format!("`{key}`: {e}"));
                default
            }),
        }
    }

    /// The entry's slug under the shared slug grammar.
    pub fn slug(&mut self) -> Option<String> {
        let slug = self.req_str("slug")?;
        if !names::is_slug(&slug) {
            self.problem(format!(
                "slug {slug:?} must match ^[a-z0-9][a-z0-9_-]{{0,127}}$"
            ));
            return None;
        }
        Some(slug)
    }

    /// `name`, defaulting to the slug.
    pub fn name_or(&mut self, slug: &str) -> String {
        self.opt_nonblank("name").unwrap_or_else(|| slug.to_owned())
    }

    pub fn unknown_keys(&self) -> Vec<&'a str> {
        self.table
            .keys()
            .map(String::as_str)
            .filter(|k| !self.used.contains(k))
            .collect()
    }

    /// Reads a sub-table (`[connectors.auth]`, `[apps.source]`, …) with its
    /// own unknown-key tracking; its problems and notes count for this entry,
    /// prefixed with `label`.
    pub fn nested<T>(
        &mut self,
        label: &str,
        table: &'a Table,
        parse: impl FnOnce(&mut Fields<'a>) -> T,
    ) -> T {
        let mut inner = Fields::new(table);
        let out = parse(&mut inner);
        inner.note_unknown_keys();
        self.problems
            .extend(inner.problems.into_iter().map(|p| format!("{label}: {p}")));
        self.notes
            .extend(inner.notes.into_iter().map(|n| format!("{label}: {n}")));
        out
    }

    /// A sub-table that must be a table when present.
    pub fn table(&mut self, key: &str) -> Option<&'a Table> {
        match self.take(key)? {
            Value::Table(t) => Some(t),
            other => {
                self.problem(format!(
                    "`{key}` must be a table, found {}",
                    type_name(other)
                ));
                None
            }
        }
    }

    /// Adds a note for every key nobody asked about.
    pub fn note_unknown_keys(&mut self) {
        for key in self.unknown_keys() {
            self.note(format!("unknown key `{key}` is ignored"));
        }
    }
}

/// Anything stored in a slug-keyed section.
pub(crate) trait Slugged {
    fn slug(&self) -> &str;
}

/// Parses an array of tables permissively: a bad entry becomes one error
/// (all its problems joined) and the good ones are returned in declared
/// order. A duplicate slug rejects the later entry so the first keeps its
/// place.
pub(crate) fn parse_entries<'a, T: Slugged>(
    value: Option<&'a Value>,
    section: &str,
    diags: &mut Diagnostics,
    mut parse_one: impl FnMut(&mut Fields<'a>) -> Option<T>,
) -> Vec<T> {
    let items = match value {
        None => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            diags.error(
                section,
                None,
                None,
                format!(
                    "must be an array of tables ([[{section}]]), found {}",
                    type_name(other)
                ),
            );
            return Vec::new();
        }
    };
    let mut out: Vec<T> = Vec::new();
    let mut first_index: HashMap<String, usize> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        let Value::Table(table) = item else {
            diags.error(
                section,
                Some(index),
                None,
                format!("entry must be a table, found {}", type_name(item)),
            );
            continue;
        };
        let raw_slug = table.get("slug").and_then(Value::as_str);
        let mut fields = Fields::new(table);
        let entry = parse_one(&mut fields);
        fields.note_unknown_keys();
        for note in &fields.notes {
            diags.warn(section, Some(index), raw_slug, note.clone());
        }
        let entry = match entry {
            Some(entry) if fields.problems.is_empty() => entry,
            _ => {
                let message = if fields.problems.is_empty() {
                    "invalid entry".to_owned()
                } else {
                    fields.problems.join("; ")
                };
                diags.error(section, Some(index), raw_slug, message);
                continue;
            }
        };
        if let Some(first) = first_index.get(entry.slug()) {
            diags.error(
                section,
                Some(index),
                raw_slug,
                format!(
                    "duplicate slug {:?} (already declared at index {first})",
                    entry.slug()
                ),
            );
            continue;
        }
        first_index.insert(entry.slug().to_owned(), index);
        out.push(entry);
    }
    out
}
