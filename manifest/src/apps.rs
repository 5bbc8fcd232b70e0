//! `[[apps]]` (experimental): deployable surfaces beside the agent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::coerce::type_name;
use crate::error::Diagnostics;
use crate::fields::{Fields, Slugged, parse_entries};
use crate::names;
use crate::paths::{is_https_url, repo_relative_problem};

const SECTION: &str = "apps";

/// `root_path` when none is given.
pub const DEFAULT_ROOT_PATH: &str = ".";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    Git,
    Tar,
}

impl SourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Git => "git",
            SourceType::Tar => "tar",
        }
    }
}

/// One normalized app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub slug: String,
    pub name: String,
    pub enabled: bool,
    /// Empty means "auto-issue a *.style.dev URL".
    pub domains: Vec<String>,
    pub framework: Option<String>,
    pub source: AppSource,
    /// `None` when both `command` and `out_dir` are empty: no build phase.
    pub build: Option<AppBuild>,
    pub env: BTreeMap<String, String>,
}

impl Slugged for App {
    fn slug(&self) -> &str {
        &self.slug
    }
}

/// `[apps.source]`. Flat like its JSON form: `repo`/`branch` are git-only,
/// `url` is tar-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSource {
    #[serde(rename = "type")]
    pub kind: SourceType,
    /// git: clone URL; `None` means the project's own repo.
    pub repo: Option<String>,
    /// git: `None` means the project's default branch.
    pub branch: Option<String>,
    /// Path inside the source to deploy from.
    pub root_path: String,
    /// tar: HTTPS URL of the tarball.
    pub url: Option<String>,
}

/// `[apps.build]`; at least one field is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppBuild {
    pub command: Option<String>,
    pub out_dir: Option<String>,
}

pub(crate) fn parse(value: Option<&Value>, diags: &mut Diagnostics) -> Vec<App> {
    let mut apps = parse_entries(value, SECTION, diags, app);
    apps.sort_by(|a, b| a.slug.cmp(&b.slug));
    apps
}

fn app(f: &mut Fields<'_>) -> Option<App> {
    let slug = f.slug();
    let name = slug.as_deref().map(|s| f.name_or(s));
    let enabled = f.flag("enabled", true);
    let domains = domains(f);
    let framework = f.opt_nonblank("framework");
    let source = match f.table("source") {
        Some(t) => f.nested("source", t, source),
        None => {
            if !f.problems.iter().any(|p| p.contains("`source`")) {
                f.problem("missing required table [apps.source]");
            }
            None
        }
    };
    let build = match f.table("build") {
        Some(t) => f.nested("build", t, |b| {
            let command = b.opt_str("command").filter(|s| !s.trim().is_empty());
            let out_dir = b.opt_str("out_dir").filter(|s| !s.trim().is_empty());
            (command.is_some() || out_dir.is_some()).then_some(AppBuild { command, out_dir })
        }),
        None => None,
    };
    let env = env(f);
    Some(App {
        slug: slug?,
        name: name?,
        enabled,
        domains,
        framework,
        source: source?,
        build,
        env,
    })
}

fn domains(f: &mut Fields<'_>) -> Vec<String> {
    let items = match f.take("domains") {
        None => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            f.problem(format!(
                "`domains` must be an array of strings, found {}",
                type_name(other)
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(d) if !d.trim().is_empty() => out.push(d.clone()),
            Value::String(_) => f.problem(format!("domains[{i}] must not be empty")),
            other => f.problem(format!(
                "domains[{i}] must be a string, found {}",
                type_name(other)
            )),
        }
    }
    out
}

fn source(f: &mut Fields<'_>) -> Option<AppSource> {
    let kind_raw = f.take("type");
    let kind = match f.required_string("type", kind_raw).as_deref() {
        Some("git") => Some(SourceType::Git),
        Some("tar") => Some(SourceType::Tar),
        Some(other) => {
            f.problem(format!(
                "`type` must be \"git\" or \"tar\", found {other:?}"
            ));
            None
        }
        None => None,
    };
    let root_path = f
        .opt_str("root_path")
        .unwrap_or_else(|| DEFAULT_ROOT_PATH.to_owned());
    if let Some(problem) = repo_relative_problem(&root_path) {
        f.problem(format!("`root_path` {root_path:?} {problem}"));
    }
    let (mut repo, mut branch, mut url) = (None, None, None);
    match kind? {
        SourceType::Git => {
            repo = f.opt_nonblank("repo");
            branch = f.opt_nonblank("branch");
            f.ignore("url", "for type = \"git\"");
        }
        SourceType::Tar => {
            url = f.req_nonblank("url");
            if let Some(u) = &url
                && !is_https_url(u)
            {
                f.problem(format!("`url` {u:?} must be an https:// URL"));
            }
            f.ignore("repo", "for type = \"tar\"");
            f.ignore("branch", "for type = \"tar\"");
        }
    }
    Some(AppSource {
        kind: kind?,
        repo,
        branch,
        root_path,
        url,
    })
}

fn env(f: &mut Fields<'_>) -> BTreeMap<String, String> {
    let Some(table) = f.table("env") else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (key, value) in table {
        if !names::is_app_env_key(key) {
            f.problem(format!(
                "env key {key:?} must match ^[A-Za-z_][A-Za-z0-9_]*$"
            ));
            continue;
        }
        match value {
            Value::String(s) => {
                out.insert(key.clone(), s.clone());
            }
            other => f.problem(format!(
                "env {key} must be a string, found {} (quote it)",
                type_name(other)
            )),
        }
    }
    out
}
