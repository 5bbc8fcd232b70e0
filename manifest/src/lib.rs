//! `kortix.toml`: parse, validate, normalize, write back, and hash.
//!
//! The manifest at a repo's root is the one file the platform treats as
//! authoritative for a project. This crate turns its text into a normalized
//! [`Manifest`] and back, and computes the content hashes derived from it.
//! It does no I/O beyond reading the string it is given.
//!
//! # Parsing is permissive
//!
//! [`parse`] rejects a manifest outright ([`ManifestError`]) only when it is
//! not TOML or declares a `kortix_version` newer than 1 (or not a version at
//! all). Everything else is reported per entry: a bad trigger, template,
//! connector or app goes into [`Manifest::errors`] while the good ones stay,
//! and questionable-but-usable input goes into [`Manifest::warnings`].
//! Unknown top-level tables are ignored. Parsing never panics.
//!
//! ```
//! let m = kortix_manifest::parse(r#"
//! [[triggers]]
//! slug = "nightly"
//! type = "cron"
//! cron = "0 0 3 * * *"
//! prompt = "Tidy up."
//!
//! [[triggers]]
//! slug = "Bad Slug"
//! type = "cron"
//! "#).unwrap();
//! assert_eq!(m.triggers.len(), 1);
//! assert_eq!(m.errors[0].section, "triggers");
//! assert_eq!(m.errors[0].index, Some(1));
//! ```
//!
//! # Normalized form
//!
//! Canonical field names (aliases resolved), defaults filled in, absent
//! optionals `None`, absent lists empty, triggers / connectors / apps sorted
//! by slug. [`Manifest`]'s `Serialize` output is the JSON document printed by
//! `kortix manifest check --json`.
//!
//! # Writing back
//!
//! [`write`] produces TOML that follows the reference's round-trip rules and
//! parses back to the same manifest (see [`Manifest::config_eq`]).
//! [`write_over`] applies an edited manifest to the original file text,
//! touching only what changed (comments, unknown tables and rejected
//! entries survive).
//!
//! # Hashes
//!
//! [`snapshot_hash`] (sandbox template → snapshot reuse) and
//! [`app_redeploy_hash`] (app config → redeploy); their exact inputs are
//! documented on the functions and in the crate README.

mod apps;
mod coerce;
mod connectors;
mod edit;
mod env;
mod error;
mod fields;
mod hash;
mod image;
mod names;
mod opencode;
mod paths;
mod project;
mod sandbox;
mod schedule;
mod triggers;
mod version;
mod write;

use serde::{Deserialize, Serialize};

pub use apps::{App, AppBuild, AppSource, DEFAULT_ROOT_PATH, SourceType};
pub use connectors::{
    AuthLocation, AuthType, Connector, ConnectorAuth, Credential, Policy, PolicyAction, Provider,
    Transport,
};
pub use edit::write_over;
pub use env::Env;
pub use error::{Diagnostic, EntryError, ManifestError, toml_syntax};
pub use hash::{app_redeploy_hash, snapshot_hash, snapshot_hash_with_context};
pub use image::ImageRef;
pub use names::{
    RESERVED_SECRET_PREFIX, SECRET_NAME_MAX, is_app_env_key, is_env_name, is_secret_name, is_slug,
};
pub use opencode::{DEFAULT_CONFIG_DIR, OpenCode};
pub use paths::repo_relative_problem;
pub use project::Project;
pub use sandbox::{
    MAX_CPU, MAX_DISK_GIB, MAX_MEMORY_GIB, PLATFORM_DEFAULT_TEMPLATE, ResolvedTemplate, Sandbox,
    SandboxTemplate, UnknownTemplate,
};
pub use schedule::{CronSchedule, DEFAULT_TIMEZONE, ScheduleError};
pub use triggers::{DEFAULT_AGENT, Trigger, TriggerKind};
pub use write::write;

/// The only schema version this platform understands.
pub const SUPPORTED_VERSION: u32 = 1;

/// The conventional file name at a project's repo root.
pub const MANIFEST_FILE: &str = "kortix.toml";

/// A parsed, normalized `kortix.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`SUPPORTED_VERSION`] once parsed.
    pub kortix_version: u32,
    pub project: Project,
    pub env: Env,
    pub sandbox: Sandbox,
    pub opencode: OpenCode,
    /// Sorted by slug.
    pub triggers: Vec<Trigger>,
    /// Sorted by slug.
    pub connectors: Vec<Connector>,
    /// Sorted by slug.
    pub apps: Vec<App>,
    /// Rejected entries and table-level problems. Non-empty does not make
    /// the manifest unusable: everything not listed here is in effect.
    pub errors: Vec<Diagnostic>,
    /// Accepted-but-suspicious input (env names that can never get a value,
    /// clamped hardware, ignored or unknown keys, a config_dir fallback…).
    pub warnings: Vec<Diagnostic>,
}

impl Default for Manifest {
    /// The manifest of a repo whose `kortix.toml` is empty.
    fn default() -> Self {
        Manifest {
            kortix_version: SUPPORTED_VERSION,
            project: Project::default(),
            env: Env::default(),
            sandbox: Sandbox::default(),
            opencode: OpenCode::default(),
            triggers: Vec::new(),
            connectors: Vec::new(),
            apps: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Parses and normalizes manifest text.
///
/// Errs only when the manifest is rejected as a whole (not TOML, or an
/// unsupported / invalid `kortix_version`); per-entry problems land in
/// [`Manifest::errors`].
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ManifestError::Toml(error::toml_syntax(text, e.message(), e.span()))
    })?;
    let kortix_version = version::decode(table.get("kortix_version"))?;
    let mut diags = error::Diagnostics::default();
    let project = project::parse(table.get("project"), &mut diags);
    let env = env::parse(table.get("env"), &mut diags);
    let sandbox = sandbox::parse(table.get("sandbox"), &mut diags);
    let opencode = opencode::parse(table.get("opencode"), &mut diags);
    let triggers = triggers::parse(table.get("triggers"), &env, &mut diags);
    let connectors = connectors::parse(table.get("connectors"), &mut diags);
    let apps = apps::parse(table.get("apps"), &mut diags);
    Ok(Manifest {
        kortix_version,
        project,
        env,
        sandbox,
        opencode,
        triggers,
        connectors,
        apps,
        errors: diags.errors,
        warnings: diags.warnings,
    })
}

/// [`parse`] for raw bytes (a file as read from disk or git): non-UTF-8
/// input is not TOML.
pub fn parse_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| ManifestError::Toml(format!("not UTF-8 ({e})")))?;
    parse(text)
}

impl std::str::FromStr for Manifest {
    type Err = ManifestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl Manifest {
    /// The template with this slug, if defined.
    pub fn template(&self, slug: &str) -> Option<&SandboxTemplate> {
        self.sandbox.template(slug)
    }

    /// The template a session boots: `requested` if given (`"default"`
    /// meaning the platform image), else `[sandbox].default`, else the
    /// platform default.
    pub fn resolve_template(
        &self,
        requested: Option<&str>,
    ) -> Result<ResolvedTemplate<'_>, UnknownTemplate> {
        self.sandbox.resolve(requested)
    }

    /// The repo-relative directory for `OPENCODE_CONFIG_DIR`.
    pub fn opencode_config_dir(&self) -> &str {
        &self.opencode.config_dir
    }

    pub fn trigger(&self, slug: &str) -> Option<&Trigger> {
        self.triggers.iter().find(|t| t.slug == slug)
    }

    pub fn connector(&self, slug: &str) -> Option<&Connector> {
        self.connectors.iter().find(|c| c.slug == slug)
    }

    pub fn app(&self, slug: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.slug == slug)
    }

    /// Whether two manifests configure the same thing, ignoring their
    /// diagnostics. This is the sense in which `parse(write(m))` is `m`:
    /// rejected entries are not written, so their errors do not come back.
    pub fn config_eq(&self, other: &Manifest) -> bool {
        self.kortix_version == other.kortix_version
            && self.project == other.project
            && self.env == other.env
            && self.sandbox == other.sandbox
            && self.opencode == other.opencode
            && self.triggers == other.triggers
            && self.connectors == other.connectors
            && self.apps == other.apps
    }

    /// The normalized JSON document (`kortix manifest check --json`).
    pub fn to_json(&self) -> serde_json::Value {
        // Every field is a plain string/number/bool/list/map, so this
        // cannot fail; fall back to null rather than panic regardless.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// [`write`] as a method.
    pub fn to_toml(&self) -> String {
        write(self)
    }
}
