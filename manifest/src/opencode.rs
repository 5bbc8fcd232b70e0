//! `[opencode]`: where the agent points `OPENCODE_CONFIG_DIR`.

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::coerce::type_name;
use crate::error::Diagnostics;
use crate::paths::repo_relative_problem;

/// The default `config_dir`, used whenever the manifest's is missing or unusable.
pub const DEFAULT_CONFIG_DIR: &str = ".kortix/opencode";

/// OpenCode settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenCode {
    /// Repo-relative directory holding OpenCode's agents, skills, commands…
    pub config_dir: String,
}

impl Default for OpenCode {
    fn default() -> Self {
        OpenCode {
            config_dir: DEFAULT_CONFIG_DIR.to_owned(),
        }
    }
}

/// A bad `config_dir` falls back to the default instead of failing: a
/// session must still boot. The fallback is recorded as a warning (never an
/// error) so `kortix manifest check` can still point at the typo.
pub(crate) fn parse(value: Option<&Value>, diags: &mut Diagnostics) -> OpenCode {
    let mut fallback = |message: String| {
        diags.warn(
            "opencode",
            None,
            None,
            format!("{message}; using {DEFAULT_CONFIG_DIR:?}"),
        );
        OpenCode::default()
    };
    let table = match value {
        None => return OpenCode::default(),
        Some(Value::Table(t)) => t,
        Some(other) => {
            return fallback(format!(
                "[opencode] must be a table, found {}",
                type_name(other)
            ));
        }
    };
    match table.get("config_dir") {
        None => OpenCode::default(),
        Some(Value::String(dir)) => match repo_relative_problem(dir) {
            None => OpenCode {
                config_dir: dir.clone(),
            },
            Some(problem) => fallback(format!("config_dir {dir:?} {problem}")),
        },
        Some(other) => fallback(format!(
            "config_dir must be a string, found {}",
            type_name(other)
        )),
    }
}
