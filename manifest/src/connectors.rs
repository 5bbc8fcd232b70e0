//! `[[connectors]]`: external tools the agent can call. Definitions live in
//! git; credentials never do.

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::coerce::type_name;
use crate::error::Diagnostics;
use crate::fields::{Fields, Slugged, parse_entries};
use crate::names::{self, RESERVED_SECRET_PREFIX};
use crate::paths::{is_http_url, looks_like_url, repo_relative_problem};

const SECTION: &str = "connectors";

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub(crate) fn from_text(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }

            fn names() -> Vec<&'static str> {
                Self::ALL.iter().map(|v| v.as_str()).collect()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Where a connector's tools come from.
    Provider { Pipedream = "pipedream", Mcp = "mcp", Openapi = "openapi", Graphql = "graphql", Http = "http" }
);
string_enum!(
    /// Whose credential a call uses.
    Credential { Shared = "shared", PerUser = "per_user" }
);
string_enum!(
    /// MCP transport.
    Transport { Http = "http", Sse = "sse" }
);
string_enum!(
    /// `[connectors.auth] type`.
    AuthType { Bearer = "bearer", Basic = "basic", Custom = "custom", None = "none" }
);
string_enum!(
    /// `[connectors.auth] in`.
    AuthLocation { Header = "header", Query = "query" }
);
string_enum!(
    /// What a policy does to matching tool calls.
    PolicyAction { AlwaysRun = "always_run", RequireApproval = "require_approval", Block = "block" }
);

/// One normalized connector. Flat like its JSON form: provider-specific
/// fields that do not apply to `provider` are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connector {
    pub slug: String,
    pub name: String,
    pub provider: Provider,
    pub enabled: bool,
    pub credential: Credential,
    /// pipedream: the Pipedream app slug.
    pub app: Option<String>,
    /// pipedream: defaults to the connector slug.
    pub account: Option<String>,
    /// mcp: server URL.
    pub url: Option<String>,
    /// mcp: defaults to `http`.
    pub transport: Option<Transport>,
    /// openapi (required), graphql and http (optional): URL or repo-relative path.
    pub spec: Option<String>,
    /// graphql: endpoint URL.
    pub endpoint: Option<String>,
    /// http: base URL (alias `baseUrl`).
    pub base_url: Option<String>,
    pub auth: Option<ConnectorAuth>,
    pub policies: Vec<Policy>,
}

impl Slugged for Connector {
    fn slug(&self) -> &str {
        &self.slug
    }
}

/// `[connectors.auth]`, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorAuth {
    #[serde(rename = "type")]
    pub kind: AuthType,
    #[serde(rename = "in")]
    pub location: AuthLocation,
    /// Header or query parameter name (required for `custom`).
    pub name: Option<String>,
    pub prefix: Option<String>,
    /// Name of the project secret holding the credential.
    pub secret: Option<String>,
}

/// `[[connectors.policies]]`: a gate on tool names matching a glob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(rename = "match")]
    pub pattern: String,
    pub action: PolicyAction,
}

pub(crate) fn parse(value: Option<&Value>, diags: &mut Diagnostics) -> Vec<Connector> {
    let mut connectors = parse_entries(value, SECTION, diags, connector);
    connectors.sort_by(|a, b| a.slug.cmp(&b.slug));
    connectors
}

fn choice<T: Copy>(
    f: &mut Fields<'_>,
    label: &str,
    value: Option<&Value>,
    parse: impl Fn(&str) -> Option<T>,
    names: &[&str],
) -> Option<T> {
    let s = f.string(label, value)?;
    let parsed = parse(&s);
    if parsed.is_none() {
        f.problem(format!(
            "`{label}` must be one of {}, found {s:?}",
            names.join(" | ")
        ));
    }
    parsed
}

fn connector(f: &mut Fields<'_>) -> Option<Connector> {
    let slug = f.slug();
    let name = slug.as_deref().map(|s| f.name_or(s));
    let provider_raw = f.take("provider");
    if provider_raw.is_none() {
        f.problem(format!(
            "missing required field `provider` ({})",
            Provider::names().join(" | ")
        ));
    }
    let provider = choice(
        f,
        "provider",
        provider_raw,
        Provider::from_text,
        &Provider::names(),
    );
    let enabled = f.flag("enabled", true);
    let credential_raw = f.take("credential");
    let credential = match credential_raw {
        None => provider.map(|p| match p {
            // Pipedream accounts are personal by nature; API keys usually aren't.
            Provider::Pipedream => Credential::PerUser,
            _ => Credential::Shared,
        }),
        Some(v) => choice(
            f,
            "credential",
            Some(v),
            Credential::from_text,
            &Credential::names(),
        ),
    };

    let app_raw = f.take("app");
    let account_raw = f.take("account");
    let url_raw = f.take("url");
    let transport_raw = f.take("transport");
    let spec_raw = f.take("spec");
    let endpoint_raw = f.take("endpoint");
    let base_url_raw = f.take_aliased("base_url", "baseUrl");
    let mut c = Connector {
        slug: String::new(),
        name: String::new(),
        provider: provider.unwrap_or(Provider::Http),
        enabled,
        credential: credential.unwrap_or(Credential::Shared),
        app: None,
        account: None,
        url: None,
        transport: None,
        spec: None,
        endpoint: None,
        base_url: None,
        auth: None,
        policies: Vec::new(),
    };
    let ignored = |f: &mut Fields<'_>, key: &str, raw: Option<&Value>, p: Provider| {
        if raw.is_some() {
            f.note(format!("`{key}` is ignored for provider = \"{p}\""));
        }
    };
    if let Some(p) = provider {
        let uses = |key: &str| match p {
            Provider::Pipedream => matches!(key, "app" | "account"),
            Provider::Mcp => matches!(key, "url" | "transport"),
            Provider::Openapi => key == "spec",
            Provider::Graphql => matches!(key, "endpoint" | "spec"),
            Provider::Http => matches!(key, "base_url" | "spec"),
        };
        for (key, raw) in [
            ("app", app_raw),
            ("account", account_raw),
            ("url", url_raw),
            ("transport", transport_raw),
            ("spec", spec_raw),
            ("endpoint", endpoint_raw),
            ("base_url", base_url_raw),
        ] {
            if !uses(key) {
                ignored(f, key, raw, p);
            }
        }
        match p {
            Provider::Pipedream => {
                c.app = nonblank(f, "app", app_raw, true);
                let account = nonblank(f, "account", account_raw, false);
                c.account = Some(account.unwrap_or_else(|| slug.clone().unwrap_or_default()));
            }
            Provider::Mcp => {
                c.url = http_url(f, "url", url_raw, true);
                c.transport = Some(match transport_raw {
                    None => Transport::Http,
                    Some(v) => choice(
                        f,
                        "transport",
                        Some(v),
                        Transport::from_text,
                        &Transport::names(),
                    )
                    .unwrap_or(Transport::Http),
                });
            }
            Provider::Openapi => c.spec = spec(f, spec_raw, true),
            Provider::Graphql => {
                c.endpoint = http_url(f, "endpoint", endpoint_raw, true);
                c.spec = spec(f, spec_raw, false);
            }
            Provider::Http => {
                c.base_url = http_url(f, "base_url", base_url_raw, true);
                c.spec = spec(f, spec_raw, false);
            }
        }
    }

    if let Some(table) = f.table("auth") {
        if provider == Some(Provider::Pipedream) {
            f.problem("[connectors.auth] is not allowed with provider = \"pipedream\" (Pipedream holds the credentials)");
        }
        c.auth = f.nested("auth", table, auth);
    }
    c.policies = policies(f);

    c.slug = slug?;
    c.name = name?;
    provider?;
    credential?;
    Some(c)
}

fn nonblank(f: &mut Fields<'_>, key: &str, raw: Option<&Value>, required: bool) -> Option<String> {
    let s = if required {
        f.required_string(key, raw)?
    } else {
        f.string(key, raw)?
    };
    if s.trim().is_empty() {
        if required {
            f.problem(format!("`{key}` must not be empty"));
        }
        return None;
    }
    Some(s)
}

fn http_url(f: &mut Fields<'_>, key: &str, raw: Option<&Value>, required: bool) -> Option<String> {
    let s = nonblank(f, key, raw, required)?;
    if !is_http_url(&s) {
        f.problem(format!("`{key}` {s:?} must be an http:// or https:// URL"));
        return None;
    }
    Some(s)
}

/// A spec is a URL or a repo-relative path; either way it must not reach
/// outside the repo on disk.
fn spec(f: &mut Fields<'_>, raw: Option<&Value>, required: bool) -> Option<String> {
    let s = nonblank(f, "spec", raw, required)?;
    if looks_like_url(&s) {
        if !is_http_url(&s) {
            f.problem(format!(
                "`spec` {s:?} must be an http(s) URL or a repo-relative path"
            ));
            return None;
        }
    } else if let Some(problem) = repo_relative_problem(&s) {
        f.problem(format!("`spec` {s:?} {problem}"));
        return None;
    }
    Some(s)
}

fn auth(f: &mut Fields<'_>) -> Option<ConnectorAuth> {
    let kind = match f.take("type") {
        None => Some(AuthType::None),
        Some(v) => choice(f, "type", Some(v), AuthType::from_text, &AuthType::names()),
    };
    let location = match f.take("in") {
        None => Some(AuthLocation::Header),
        Some(v) => choice(
            f,
            "in",
            Some(v),
            AuthLocation::from_text,
            &AuthLocation::names(),
        ),
    };
    let name = f.opt_nonblank("name");
    if kind == Some(AuthType::Custom) && name.is_none() {
        f.problem("`name` is required when type = \"custom\"");
    }
    let prefix = f.opt_str("prefix");
    let secret = f.opt_str("secret");
    match &secret {
        Some(s) if !names::is_secret_name(s) => {
            f.problem(format!("`secret` {s:?} must match ^[A-Z_][A-Z0-9_]{{0,63}}$"));
        }
        Some(s) if s.starts_with(RESERVED_SECRET_PREFIX) => f.note(format!(
            "`secret` {s:?} uses the reserved {RESERVED_SECRET_PREFIX}* prefix; it can never have a value"
        )),
        _ => {}
    }
    Some(ConnectorAuth {
        kind: kind?,
        location: location?,
        name,
        prefix,
        secret,
    })
}

/// A bad policy rejects the whole connector: silently dropping a `block`
/// gate would hand the agent a tool the owner meant to fence off.
fn policies(f: &mut Fields<'_>) -> Vec<Policy> {
    let items = match f.take("policies") {
        None => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            f.problem(format!(
                "`policies` must be an array of tables ([[connectors.policies]]), found {}",
                type_name(other)
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Table(table) = item else {
            f.problem(format!(
                "policies[{i}] must be a table, found {}",
                type_name(item)
            ));
            continue;
        };
        let policy = f.nested(&format!("policies[{i}]"), table, |p| {
            let pattern = p.req_nonblank("match");
            let action_raw = p.take("action");
            if action_raw.is_none() {
                p.problem(format!(
                    "missing required field `action` ({})",
                    PolicyAction::names().join(" | ")
                ));
            }
            let action = choice(
                p,
                "action",
                action_raw,
                PolicyAction::from_text,
                &PolicyAction::names(),
            );
            Some(Policy {
                pattern: pattern?,
                action: action?,
            })
        });
        out.extend(policy);
    }
    out
}
