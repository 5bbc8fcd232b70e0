//! Read-modify-write: apply an edited [`Manifest`] to the original file text
//! while touching only what changed, so a dashboard edit produces a small
//! diff and keeps the owner's comments, formatting, unknown tables and even
//! the entries the parser rejected.
//!
//! Granularity: scalar fields of `[project]`, `[env]`, `[opencode]` and
//! `[sandbox]` are replaced one by one; entries of `[[sandbox.templates]]`,
//! `[[triggers]]`, `[[connectors]]` and `[[apps]]` are matched by slug and
//! kept verbatim when unchanged, replaced whole (in canonical form, keeping
//! the comment above the header) when changed, dropped when deleted, and
//! appended when new.

use toml_edit::{DocumentMut, Item, Key, Table, value};

use crate::fields::Slugged;
use crate::{Manifest, ManifestError, SUPPORTED_VERSION, parse, write};

/// Writes `manifest` over `original` (see the module docs). The result
/// always parses back to `manifest`'s configuration: if the surgical edit
/// could not guarantee that (an exotic original layout), the whole file is
/// rewritten with [`write`] instead.
///
/// Errs when `original` itself is rejected (not TOML, or a future
/// `kortix_version`): editing a file this platform cannot read would be a
/// guess.
pub fn write_over(original: &str, manifest: &Manifest) -> Result<String, ManifestError> {
    let old = parse(original)?;
    let mut doc: DocumentMut = original.parse().map_err(|e: toml_edit::TomlError| {
        ManifestError::Toml(crate::error::toml_syntax(original, e.message(), e.span()))
    })?;
    let fresh = crate::write::document(manifest);
    let root = doc.as_table_mut();
    // New tables go after everything, not after whichever table happens to
    // precede them in key order.
    let next = max_position(root).map_or(0, |p| p + 1);

    let (op, np) = (&old.project, &manifest.project);
    set_fields(
        root,
        next,
        "project",
        fresh.get("project"),
        &[
            ("name", op.name != np.name),
            ("description", op.description != np.description),
        ],
    );
    let (oe, ne) = (&old.env, &manifest.env);
    set_fields(
        root,
        next,
        "env",
        fresh.get("env"),
        &[
            ("required", oe.required != ne.required),
            ("optional", oe.optional != ne.optional),
        ],
    );
    set_fields(
        root,
        next,
        "opencode",
        fresh.get("opencode"),
        &[("config_dir", old.opencode != manifest.opencode)],
    );
    let fresh_sandbox = fresh.get("sandbox").and_then(Item::as_table);
    set_fields(
        root,
        next,
        "sandbox",
        fresh.get("sandbox"),
        &[("default", old.sandbox.default != manifest.sandbox.default)],
    );
    if old.sandbox.templates != manifest.sandbox.templates {
        let sandbox = root
            .entry("sandbox")
            .or_insert_with(|| Item::Table(implicit_table()));
        match sandbox {
            Item::Table(sandbox) => merge_entries(
                sandbox,
                (&old, next),
                "templates",
                "sandbox.templates",
                &old.sandbox.templates,
                &manifest.sandbox.templates,
                fresh_sandbox.and_then(|t| t.get("templates")),
            ),
            // An inline `sandbox = { … }`: rewrite it canonically.
            other => {
                *other = fresh
                    .get("sandbox")
                    .cloned()
                    .unwrap_or_else(|| Item::Table(implicit_table()));
            }
        }
    }
    if old.triggers != manifest.triggers {
        let (o, n) = (&old.triggers, &manifest.triggers);
        merge_entries(
            root,
            (&old, next),
            "triggers",
            "triggers",
            o,
            n,
            fresh.get("triggers"),
        );
    }
    if old.connectors != manifest.connectors {
        let (o, n) = (&old.connectors, &manifest.connectors);
        merge_entries(
            root,
            (&old, next),
            "connectors",
            "connectors",
            o,
            n,
            fresh.get("connectors"),
        );
    }
    if old.apps != manifest.apps {
        let (o, n) = (&old.apps, &manifest.apps);
        merge_entries(root, (&old, next), "apps", "apps", o, n, fresh.get("apps"));
    }
    version_first(root);

    let text = doc.to_string();
    match parse(&text) {
        Ok(back) if back.config_eq(manifest) => Ok(text),
        _ => Ok(write(manifest)),
    }
}

fn implicit_table() -> Table {
    let mut t = Table::new();
    t.set_implicit(true);
    t
}

/// Replaces the listed fields of a plain table where `changed`.
fn set_fields(
    root: &mut Table,
    next: isize,
    key: &str,
    fresh: Option<&Item>,
    fields: &[(&str, bool)],
) {
    if !fields.iter().any(|(_, changed)| *changed) {
        return;
    }
    let fresh = fresh.and_then(Item::as_table);
    match root.get_mut(key) {
        Some(Item::Table(table)) => {
            for (field, changed) in fields {
                if !changed {
                    continue;
                }
                match fresh.and_then(|f| f.get(field)) {
                    Some(item) => {
                        table.insert(field, item.clone());
                        table.set_implicit(false);
                    }
                    None => {
                        table.remove(field);
                    }
                }
            }
        }
        // Absent, inline, or the wrong type: the canonical table replaces it.
        _ => match fresh {
            Some(f) => {
                let mut t = Table::new();
                for (field, _) in fields {
                    if let Some(item) = f.get(field) {
                        t.insert(field, item.clone());
                    }
                }
                if !t.is_empty() {
                    t.set_position(Some(next));
                    root.insert(key, Item::Table(t));
                }
            }
            None => {
                root.remove(key);
            }
        },
    }
}

/// Merges one `[[section]]` by slug (see the module docs).
fn merge_entries<T: Slugged + PartialEq>(
    parent: &mut Table,
    (old, next): (&Manifest, isize),
    key: &str,
    section: &str,
    old_list: &[T],
    new_list: &[T],
    fresh: Option<&Item>,
) {
    let fresh_tables: Vec<&Table> = fresh
        .and_then(Item::as_array_of_tables)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let fresh_for = |slug: &str| {
        fresh_tables
            .iter()
            .find(|t| t.get("slug").and_then(Item::as_str) == Some(slug))
            .map(|t| (*t).clone())
    };
    let Some(Item::ArrayOfTables(aot)) = parent.get_mut(key) else {
        // Absent or an inline array: write the canonical form.
        match fresh {
            Some(item) => {
                let mut item = item.clone();
                if let Some(first) = item.as_array_of_tables_mut().and_then(|a| a.get_mut(0)) {
                    first.set_position(Some(next));
                }
                parent.insert(key, item);
            }
            None => {
                parent.remove(key);
            }
        }
        return;
    };
    let rejected = |i: usize| {
        old.errors
            .iter()
            .any(|e| e.section == section && e.index == Some(i))
    };
    // Deleting a slug deletes every entry spelled with it: a rejected
    // duplicate would otherwise come alive once its first copy is gone.
    let deleted: Vec<&str> = old_list
        .iter()
        .map(Slugged::slug)
        .filter(|s| !new_list.iter().any(|e| e.slug() == *s))
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let mut keep = Vec::with_capacity(aot.len());
    for i in 0..aot.len() {
        let Some(table) = aot.get_mut(i) else {
            keep.push(true);
            continue;
        };
        // Not ours to touch: the owner may still be fixing it.
        if rejected(i) {
            let raw = table.get("slug").and_then(Item::as_str);
            keep.push(!raw.is_some_and(|r| deleted.contains(&r)));
            continue;
        }
        let Some(slug) = table.get("slug").and_then(Item::as_str).map(str::to_owned) else {
            keep.push(true);
            continue;
        };
        let old_entry = old_list.iter().find(|e| e.slug() == slug);
        let new_entry = new_list.iter().find(|e| e.slug() == slug);
        match new_entry {
            None => keep.push(false),
            Some(new_entry) => {
                if old_entry != Some(new_entry)
                    && let Some(mut replacement) = fresh_for(&slug)
                {
                    *replacement.decor_mut() = table.decor().clone();
                    replacement.set_position(table.position());
                    *table = replacement;
                }
                keep.push(true);
            }
        }
        seen.push(slug);
    }
    let mut index = 0;
    aot.retain(|_| {
        let k = keep.get(index).copied().unwrap_or(true);
        index += 1;
        k
    });
    for entry in new_list {
        if !seen.iter().any(|s| s == entry.slug())
            && let Some(t) = fresh_for(entry.slug())
        {
            aot.push(t);
        }
    }
    if aot.is_empty() {
        parent.remove(key);
    }
}

fn max_position(table: &Table) -> Option<isize> {
    let mut max = table.position();
    for (_, item) in table.iter() {
        let inner = match item {
            Item::Table(t) => max_position(t),
            Item::ArrayOfTables(a) => a.iter().filter_map(max_position).max(),
            _ => None,
        };
        max = max.max(inner);
    }
    max
}

/// The round-trip rules want `kortix_version` as the first key, written as
/// the canonical integer.
fn version_first(root: &mut Table) {
    let keys: Vec<String> = root.iter().map(|(k, _)| k.to_owned()).collect();
    let mut entries: Vec<(Key, Item)> = keys.iter().filter_map(|k| root.remove_entry(k)).collect();
    let version = entries
        .iter()
        .position(|(k, _)| k.get() == "kortix_version")
        .map(|i| entries.remove(i));
    let canonical = i64::from(SUPPORTED_VERSION);
    let (key, item) = match version {
        Some((k, item)) if item.as_integer() == Some(canonical) => (k, item),
        Some((k, _)) => (k, value(canonical)),
        None => (Key::new("kortix_version"), value(canonical)),
    };
    root.insert_formatted(&key, item);
    for (k, item) in entries {
        root.insert_formatted(&k, item);
    }
}
