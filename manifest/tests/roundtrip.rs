//! Property: writing a normalized manifest and parsing it back is the
//! identity (and produces no errors).

use std::collections::BTreeMap;

use kortix_manifest::{
    App, AppBuild, AppSource, AuthLocation, AuthType, Connector, ConnectorAuth, Credential, Env,
    Manifest, OpenCode, Policy, PolicyAction, Project, Provider, Sandbox, SandboxTemplate,
    SourceType, Transport, Trigger, TriggerKind, parse, write,
};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;

fn slug() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_-]{0,12}"
}

/// Any text, biased towards what breaks TOML quoting.
fn text() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            4 => any::<char>(),
            1 => Just('\n'),
            1 => Just('\r'),
            1 => Just('"'),
            1 => Just('\''),
            1 => Just('\\'),
            1 => Just(' '),
            1 => Just('\t'),
        ],
        0..30,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

/// Text that is not blank (blank values fall back to defaults).
fn label() -> impl Strategy<Value = String> {
    text().prop_filter("non-blank", |s| !s.trim().is_empty())
}

fn env_name() -> impl Strategy<Value = String> {
    "[A-Z_][A-Z0-9_]{0,12}"
}

fn secret_name() -> impl Strategy<Value = String> {
    "[A-Z_][A-Z0-9_]{0,12}"
}

fn repo_path() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.][a-zA-Z0-9_./ -]{0,20}".prop_filter("repo-relative", |p| {
        kortix_manifest::repo_relative_problem(p).is_none()
    })
}

fn url() -> impl Strategy<Value = String> {
    (
        "https?://[a-z0-9.-]{1,12}(:[0-9]{1,4})?",
        "(/[a-zA-Z0-9._~-]{0,8}){0,3}",
    )
        .prop_map(|(a, b)| format!("{a}{b}"))
}

fn image() -> impl Strategy<Value = String> {
    (
        option::of("(localhost:5000|ghcr\\.io|registry\\.example\\.com)"),
        "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}",
        prop_oneof![
            "[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"
                .prop_filter("not latest", |t| !t.eq_ignore_ascii_case("latest"))
                .prop_map(|t| format!(":{t}")),
            "[0-9a-f]{64}".prop_map(|h| format!("@sha256:{h}")),
        ],
    )
        .prop_map(|(reg, repo, pin)| match reg {
            Some(r) => format!("{r}/{repo}{pin}"),
            None => format!("{repo}{pin}"),
        })
}

fn env() -> impl Strategy<Value = Env> {
    (btree_set(env_name(), 0..4), btree_set(env_name(), 0..4)).prop_map(|(r, o)| Env {
        required: r.into_iter().rev().collect(),
        optional: o.into_iter().collect(),
    })
}

fn template(slug: String) -> impl Strategy<Value = SandboxTemplate> {
    (
        label(),
        prop_oneof![
            repo_path().prop_map(|d| (Some(d), None)),
            image().prop_map(|i| (None, Some(i))),
        ],
        option::of(1u32..=32),
        option::of(1u32..=128),
        option::of(1u32..=500),
    )
        .prop_map(
            move |(name, (dockerfile, image), cpu, memory, disk)| SandboxTemplate {
                slug: slug.clone(),
                name,
                dockerfile,
                image,
                cpu,
                memory,
                disk,
            },
        )
}

fn sandbox() -> impl Strategy<Value = Sandbox> {
    btree_set(slug().prop_filter("reserved", |s| s != "default"), 0..3)
        .prop_flat_map(|slugs| {
            let templates: Vec<_> = slugs.iter().cloned().map(template).collect();
            let mut defaults = vec![Just(None).boxed(), Just(Some("default".to_owned())).boxed()];
            defaults.extend(slugs.iter().map(|s| Just(Some(s.clone())).boxed()));
            (templates, proptest::strategy::Union::new(defaults))
        })
        .prop_map(|(templates, default)| Sandbox { default, templates })
}

const CRONS: &[&str] = &[
    "0 0 9 * * 1-5",
    "*/10 * * * * *",
    "0 30 2 1 * *",
    "0 0 0 * 1,6 0",
];
const ZONES: &[&str] = &[
    "UTC",
    "America/Los_Angeles",
    "Europe/Berlin",
    "Asia/Kolkata",
];

fn trigger(slug: String) -> impl Strategy<Value = Trigger> {
    (
        label(),
        any::<bool>(),
        label(),
        any::<bool>(),
        prop::sample::select(CRONS),
        prop::sample::select(ZONES),
        option::of(secret_name()),
        label(),
    )
        .prop_map(
            move |(name, is_cron, agent, enabled, cron, tz, secret, prompt)| Trigger {
                slug: slug.clone(),
                name,
                kind: if is_cron {
                    TriggerKind::Cron
                } else {
                    TriggerKind::Webhook
                },
                agent,
                enabled,
                cron: is_cron.then(|| cron.to_owned()),
                timezone: is_cron.then(|| tz.to_owned()),
                secret_env: if is_cron { None } else { secret },
                prompt,
            },
        )
}

fn auth() -> impl Strategy<Value = ConnectorAuth> {
    (
        prop::sample::select(AuthType::ALL),
        prop::sample::select(AuthLocation::ALL),
        option::of(label()),
        option::of(text()),
        option::of(secret_name()),
    )
        .prop_map(|(kind, location, name, prefix, secret)| ConnectorAuth {
            name: if kind == AuthType::Custom {
                Some(name.unwrap_or_else(|| "X-Key".to_owned()))
            } else {
                name
            },
            kind,
            location,
            prefix,
            secret,
        })
}

fn connector(slug: String) -> impl Strategy<Value = Connector> {
    (
        label(),
        prop::sample::select(Provider::ALL),
        any::<bool>(),
        prop::sample::select(Credential::ALL),
        (
            label(),
            label(),
            url(),
            prop::sample::select(Transport::ALL),
        ),
        option::of(prop_oneof![url(), repo_path()]),
        option::of(auth()),
        vec(
            (label(), prop::sample::select(PolicyAction::ALL))
                .prop_map(|(pattern, action)| Policy { pattern, action }),
            0..3,
        ),
    )
        .prop_map(
            move |(
                name,
                provider,
                enabled,
                credential,
                (app, account, u, transport),
                spec,
                auth,
                policies,
            )| {
                let mut c = Connector {
                    slug: slug.clone(),
                    name,
                    provider,
                    enabled,
                    credential,
                    app: None,
                    account: None,
                    url: None,
                    transport: None,
                    spec: None,
                    endpoint: None,
                    base_url: None,
                    auth: if provider == Provider::Pipedream {
                        None
                    } else {
                        auth
                    },
                    policies,
                };
                match provider {
                    Provider::Pipedream => {
                        c.app = Some(app);
                        c.account = Some(account);
                    }
                    Provider::Mcp => {
                        c.url = Some(u);
                        c.transport = Some(transport);
                    }
                    Provider::Openapi => {
                        c.spec = Some(spec.unwrap_or_else(|| "openapi.yaml".into()))
                    }
                    Provider::Graphql => {
                        c.endpoint = Some(u);
                        c.spec = spec;
                    }
                    Provider::Http => {
                        c.base_url = Some(u);
                        c.spec = spec;
                    }
                }
                c
            },
        )
}

fn app(slug: String) -> impl Strategy<Value = App> {
    (
        label(),
        any::<bool>(),
        vec(label(), 0..3),
        option::of(label()),
        any::<bool>(),
        (option::of(label()), option::of(label()), repo_path(), url()),
        option::of((option::of(label()), option::of(label()))),
        btree_map("[A-Za-z_][A-Za-z0-9_]{0,10}", text(), 0..3),
    )
        .prop_map(
            move |(
                name,
                enabled,
                domains,
                framework,
                git,
                (repo, branch, root_path, u),
                build,
                env,
            )| {
                let source = if git {
                    AppSource {
                        kind: SourceType::Git,
                        repo,
                        branch,
                        root_path,
                        url: None,
                    }
                } else {
                    let url = format!("https://{}", u.split_once("://").map_or("x", |x| x.1));
                    AppSource {
                        kind: SourceType::Tar,
                        repo: None,
                        branch: None,
                        root_path,
                        url: Some(url),
                    }
                };
                let build = build.and_then(|(command, out_dir)| {
                    (command.is_some() || out_dir.is_some())
                        .then_some(AppBuild { command, out_dir })
                });
                App {
                    slug: slug.clone(),
                    name,
                    enabled,
                    domains,
                    framework,
                    source,
                    build,
                    env: env.into_iter().collect::<BTreeMap<_, _>>(),
                }
            },
        )
}

fn entries<T: std::fmt::Debug>(
    make: fn(String) -> BoxedStrategy<T>,
) -> impl Strategy<Value = Vec<T>> {
    btree_set(slug(), 0..4).prop_flat_map(move |slugs| {
        // BTreeSet order is slug order, which is what the parser sorts to.
        slugs.into_iter().map(make).collect::<Vec<_>>()
    })
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        (option::of(text()), option::of(text())),
        env(),
        sandbox(),
        repo_path(),
        entries(|s| trigger(s).boxed()),
        entries(|s| connector(s).boxed()),
        entries(|s| app(s).boxed()),
    )
        .prop_map(
            |((name, description), env, sandbox, config_dir, triggers, connectors, apps)| {
                Manifest {
                    kortix_version: 1,
                    project: Project { name, description },
                    env,
                    sandbox,
                    opencode: OpenCode { config_dir },
                    triggers,
                    connectors,
                    apps,
                    errors: Vec::new(),
                    warnings: Vec::new(),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn write_then_parse_is_identity(m in manifest()) {
        let text = write(&m);
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert!(back.errors.is_empty(), "{:#?}\n{}", back.errors, text);
        let mut back = back;
        back.warnings.clear();
        prop_assert_eq!(&back, &m, "{}", text);
        // And writing is stable: the second write is byte-identical.
        prop_assert_eq!(write(&back), text);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
        let _ = parse(&s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Editing any manifest into any other through `write_over` lands on
    /// exactly the edited configuration.
    #[test]
    fn write_over_lands_on_the_edit(a in manifest(), b in manifest()) {
        let original = write(&a);
        let out = kortix_manifest::write_over(&original, &b)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = parse(&out).map_err(|e| TestCaseError::fail(format!("{e}\n{out}")))?;
        prop_assert!(back.errors.is_empty(), "{:#?}\n{}", back.errors, out);
        prop_assert!(back.config_eq(&b), "{}", out);
        // No edit, no change.
        prop_assert_eq!(kortix_manifest::write_over(&original, &a).unwrap(), original);
    }
}
