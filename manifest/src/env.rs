//! `[env]`: the secrets a project's sessions expect.

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::coerce::type_name;
use crate::error::Diagnostics;
use crate::names::{self, RESERVED_SECRET_PREFIX, SECRET_NAME_MAX};

/// Declared env var names. Advisory: surfaced to the dashboard, not enforced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Env {
    pub required: Vec<String>,
    pub optional: Vec<String>,
}

pub(crate) fn parse(value: Option<&Value>, diags: &mut Diagnostics) -> Env {
    let table = match value {
        None => return Env::default(),
        Some(Value::Table(t)) => t,
        Some(other) => {
            diags.error(
                "env",
                None,
                None,
                format!("[env] must be a table, found {}", type_name(other)),
            );
            return Env::default();
        }
    };
    let env = Env {
        required: names_list(table.get("required"), "env.required", diags),
        optional: names_list(table.get("optional"), "env.optional", diags),
    };
    for name in &env.required {
        if env.optional.contains(name) {
            diags.warn(
                "env",
                None,
                Some(name),
                format!("{name} is listed as both required and optional"),
            );
        }
    }
    env
}

fn names_list(value: Option<&Value>, section: &str, diags: &mut Diagnostics) -> Vec<String> {
    let items = match value {
        None => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            diags.error(
                section,
                None,
                None,
                format!("must be an array of strings, found {}", type_name(other)),
            );
            return Vec::new();
        }
    };
    let mut out: Vec<String> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Value::String(name) = item else {
            diags.error(
                section,
                Some(index),
                None,
                format!("must be a string, found {}", type_name(item)),
            );
            continue;
        };
        if !names::is_env_name(name) {
            diags.error(
                section,
                Some(index),
                Some(name),
                format!("{name:?} must match ^[A-Z_][A-Z0-9_]*$"),
            );
            continue;
        }
        if out.contains(name) {
            diags.warn(
                section,
                Some(index),
                Some(name),
                format!("{name} is listed twice"),
            );
            continue;
        }
        // These parse (the manifest grammar is looser than the Secrets
        // Manager's) but can never be given a value, which is worth a nag.
        if name.len() > SECRET_NAME_MAX {
            diags.warn(
                section,
                Some(index),
                Some(name),
                format!(
                    "{} chars is longer than the Secrets Manager allows ({SECRET_NAME_MAX}); it can never have a value",
                    name.len()
                ),
            );
        }
        if name.starts_with(RESERVED_SECRET_PREFIX) {
            diags.warn(
                section,
                Some(index),
                Some(name),
                format!(
                    "the {RESERVED_SECRET_PREFIX}* prefix is reserved; it can never have a value"
                ),
            );
        }
        out.push(name.clone());
    }
    out
}
