//! `[project]`: human-facing metadata the platform does not act on.

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::coerce::type_name;
use crate::error::Diagnostics;

/// Optional name and description, kept so the dashboard can show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub name: Option<String>,
    pub description: Option<String>,
}

pub(crate) fn parse(value: Option<&Value>, diags: &mut Diagnostics) -> Project {
    let table = match value {
        None => return Project::default(),
        Some(Value::Table(t)) => t,
        Some(other) => {
            diags.error(
                "project",
                None,
                None,
                format!("[project] must be a table, found {}", type_name(other)),
            );
            return Project::default();
        }
    };
    let mut field = |key: &str| match table.get(key) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            diags.error(
                "project",
                None,
                None,
                format!("`{key}` must be a string, found {}", type_name(other)),
            );
            None
        }
    };
    // Other keys are the owner's business: [project] is a convention.
    Project {
        name: field("name"),
        description: field("description"),
    }
}
