//! Writing a normalized manifest back to TOML, following the reference's
//! round-trip rules: `kortix_version` first, canonical field names only,
//! and trigger fields in the order slug, name, type, agent, enabled,
//! type-specific fields, prompt. `parse(&write(m))` yields `m` again (minus
//! the entries `m` had already rejected into `errors`).

use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

use crate::Manifest;
use crate::apps::App;
use crate::connectors::Connector;
use crate::sandbox::SandboxTemplate;
use crate::triggers::Trigger;

/// Serializes `manifest` to TOML text.
pub fn write(manifest: &Manifest) -> String {
    document(manifest).to_string()
}

/// The document [`write`] prints. Built in memory, so no table carries a
/// source position (which lets `edit` graft its tables into another file).
pub(crate) fn document(manifest: &Manifest) -> DocumentMut {
    let mut doc = DocumentMut::new();
    doc.insert("kortix_version", value(i64::from(manifest.kortix_version)));

    let p = &manifest.project;
    if p.name.is_some() || p.description.is_some() {
        let mut t = Table::new();
        opt(&mut t, "name", p.name.as_deref());
        opt(&mut t, "description", p.description.as_deref());
        doc.insert("project", Item::Table(t));
    }

    let e = &manifest.env;
    if !e.required.is_empty() || !e.optional.is_empty() {
        let mut t = Table::new();
        if !e.required.is_empty() {
            t.insert("required", value(strings(&e.required)));
        }
        if !e.optional.is_empty() {
            t.insert("optional", value(strings(&e.optional)));
        }
        doc.insert("env", Item::Table(t));
    }

    let s = &manifest.sandbox;
    if s.default.is_some() || !s.templates.is_empty() {
        let mut t = Table::new();
        match &s.default {
            Some(d) => {
                t.insert("default", value(d.as_str()));
            }
            // No `[sandbox]` header when it would be empty.
            None => t.set_implicit(true),
        }
        if !s.templates.is_empty() {
            t.insert(
                "templates",
                Item::ArrayOfTables(each(&s.templates, template)),
            );
        }
        doc.insert("sandbox", Item::Table(t));
    }

    let mut t = Table::new();
    t.insert("config_dir", value(manifest.opencode.config_dir.as_str()));
    doc.insert("opencode", Item::Table(t));

    if !manifest.triggers.is_empty() {
        doc.insert(
            "triggers",
            Item::ArrayOfTables(each(&manifest.triggers, trigger)),
        );
    }
    if !manifest.connectors.is_empty() {
        doc.insert(
            "connectors",
            Item::ArrayOfTables(each(&manifest.connectors, connector)),
        );
    }
    if !manifest.apps.is_empty() {
        doc.insert("apps", Item::ArrayOfTables(each(&manifest.apps, app)));
    }
    doc
}

fn each<T>(items: &[T], f: impl Fn(&T) -> Table) -> ArrayOfTables {
    let mut aot = ArrayOfTables::new();
    for item in items {
        aot.push(f(item));
    }
    aot
}

fn strings(items: &[String]) -> Array {
    items.iter().map(String::as_str).collect()
}

fn opt(t: &mut Table, key: &str, v: Option<&str>) {
    if let Some(v) = v {
        t.insert(key, value(v));
    }
}

fn opt_int(t: &mut Table, key: &str, v: Option<u32>) {
    if let Some(v) = v {
        t.insert(key, value(i64::from(v)));
    }
}

fn template(tpl: &SandboxTemplate) -> Table {
    let mut t = Table::new();
    t.insert("slug", value(tpl.slug.as_str()));
    t.insert("name", value(tpl.name.as_str()));
    opt(&mut t, "dockerfile", tpl.dockerfile.as_deref());
    opt(&mut t, "image", tpl.image.as_deref());
    opt_int(&mut t, "cpu", tpl.cpu);
    opt_int(&mut t, "memory", tpl.memory);
    opt_int(&mut t, "disk", tpl.disk);
    t
}

fn trigger(tr: &Trigger) -> Table {
    let mut t = Table::new();
    t.insert("slug", value(tr.slug.as_str()));
    t.insert("name", value(tr.name.as_str()));
    t.insert("type", value(tr.kind.as_str()));
    t.insert("agent", value(tr.agent.as_str()));
    t.insert("enabled", value(tr.enabled));
    opt(&mut t, "cron", tr.cron.as_deref());
    opt(&mut t, "timezone", tr.timezone.as_deref());
    opt(&mut t, "secret_env", tr.secret_env.as_deref());
    t.insert("prompt", value(tr.prompt.as_str()));
    t
}

fn connector(c: &Connector) -> Table {
    let mut t = Table::new();
    t.insert("slug", value(c.slug.as_str()));
    t.insert("name", value(c.name.as_str()));
    t.insert("provider", value(c.provider.as_str()));
    t.insert("enabled", value(c.enabled));
    t.insert("credential", value(c.credential.as_str()));
    opt(&mut t, "app", c.app.as_deref());
    opt(&mut t, "account", c.account.as_deref());
    opt(&mut t, "url", c.url.as_deref());
    opt(&mut t, "transport", c.transport.map(|x| x.as_str()));
    opt(&mut t, "endpoint", c.endpoint.as_deref());
    opt(&mut t, "base_url", c.base_url.as_deref());
    opt(&mut t, "spec", c.spec.as_deref());
    if let Some(a) = &c.auth {
        let mut at = Table::new();
        at.insert("type", value(a.kind.as_str()));
        at.insert("in", value(a.location.as_str()));
        opt(&mut at, "name", a.name.as_deref());
        opt(&mut at, "prefix", a.prefix.as_deref());
        opt(&mut at, "secret", a.secret.as_deref());
        t.insert("auth", Item::Table(at));
    }
    if !c.policies.is_empty() {
        let policies = each(&c.policies, |p| {
            let mut pt = Table::new();
            pt.insert("match", value(p.pattern.as_str()));
            pt.insert("action", value(p.action.as_str()));
            pt
        });
        t.insert("policies", Item::ArrayOfTables(policies));
    }
    t
}

fn app(a: &App) -> Table {
    let mut t = Table::new();
    t.insert("slug", value(a.slug.as_str()));
    t.insert("name", value(a.name.as_str()));
    t.insert("enabled", value(a.enabled));
    opt(&mut t, "framework", a.framework.as_deref());
    if !a.domains.is_empty() {
        t.insert("domains", value(strings(&a.domains)));
    }
    let mut st = Table::new();
    st.insert("type", value(a.source.kind.as_str()));
    opt(&mut st, "repo", a.source.repo.as_deref());
    opt(&mut st, "branch", a.source.branch.as_deref());
    st.insert("root_path", value(a.source.root_path.as_str()));
    opt(&mut st, "url", a.source.url.as_deref());
    t.insert("source", Item::Table(st));
    if let Some(b) = &a.build {
        let mut bt = Table::new();
        opt(&mut bt, "command", b.command.as_deref());
        opt(&mut bt, "out_dir", b.out_dir.as_deref());
        t.insert("build", Item::Table(bt));
    }
    if !a.env.is_empty() {
        let mut et = Table::new();
        for (k, v) in &a.env {
            et.insert(k, value(v.as_str()));
        }
        t.insert("env", Item::Table(et));
    }
    t
}
