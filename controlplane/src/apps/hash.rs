//! What a deployment is built from and the hash that decides redeploys.
//!
//! The hash is the manifest library's [`kortix_manifest::app_redeploy_hash`]: it covers
//! source, build, env, domains, framework and enabled, and leaves out slug and name, so
//! renaming an app never redeploys it. A deployment records the entry it was built from
//! (as JSON), so a rollback serves exactly what was built, domains included.

use kortix_manifest::App;

use crate::error::{DomainError, DomainResult};

/// The redeploy hash of an app's manifest entry.
pub fn of(app: &App) -> String {
    app.redeploy_hash()
}

/// The entry as a deployment records it.
pub fn config_json(app: &App) -> String {
    // Serializing a plain struct of strings, maps and vectors cannot fail.
    serde_json::to_string(app).unwrap_or_default()
}

/// The entry a deployment recorded.
pub fn parse_config(json: &str) -> DomainResult<App> {
    serde_json::from_str(json)
        .map_err(|e| DomainError::Internal(format!("a deployment's recorded config: {e}")))
}

/// Domains as they are matched against `Host` headers: lower case, no trailing dot, no port.
pub fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A recorded config's domains, normalized, without duplicates.
pub fn domains(app: &App) -> Vec<String> {
    let mut out: Vec<String> = app
        .domains
        .iter()
        .map(|d| normalize_domain(d))
        .filter(|d| !d.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(toml_entry: &str) -> App {
        let manifest =
            kortix_manifest::parse(&format!("kortix_version = 1\n{toml_entry}")).unwrap();
        assert!(manifest.errors.is_empty(), "{:?}", manifest.errors);
        manifest.apps[0].clone()
    }

    const BASE: &str = r#"
[[apps]]
slug = "site"
name = "Site"
domains = ["Site.Example.com."]
[apps.source]
type = "git"
[apps.build]
command = "sh build.sh"
out_dir = "dist"
[apps.env]
GREETING = "hello"
"#;

    #[test]
    fn renaming_keeps_the_hash_and_env_changes_it() {
        let base = of(&app(BASE));
        assert_eq!(base, of(&app(&BASE.replace("\"Site\"", "\"Renamed\""))));
        assert_eq!(
            base,
            of(&app(&BASE.replace("slug = \"site\"", "slug = \"other\"")))
        );
        assert_ne!(base, of(&app(&BASE.replace("\"hello\"", "\"hi\""))));
        assert_ne!(base, of(&app(&BASE.replace("dist", "out"))));
        assert_ne!(
            base,
            of(&app(&BASE.replace(
                "name = \"Site\"",
                "name = \"Site\"\nenabled = false"
            )))
        );
    }

    #[test]
    fn configs_round_trip_and_domains_normalize() {
        let a = app(BASE);
        let back = parse_config(&config_json(&a)).unwrap();
        assert_eq!(back, a);
        assert_eq!(domains(&a), ["site.example.com"]);
        assert!(parse_config("{").is_err());
    }
}
