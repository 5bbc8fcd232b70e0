//! One test (at least) per rule of the kortix.toml reference
//! (shared/spec/kortix-toml-reference.txt), grouped by section in the
//! reference's order. Each would fail if its rule were removed.

use kortix_manifest::{
    AuthLocation, AuthType, Credential, Diagnostic, Manifest, ManifestError, PolicyAction,
    Provider, ResolvedTemplate, SourceType, Transport, TriggerKind, parse, write,
};

fn p(text: &str) -> Manifest {
    parse(text).unwrap_or_else(|e| panic!("rejected: {e}\n{text}"))
}

fn errors_in<'a>(m: &'a Manifest, section: &str) -> Vec<&'a Diagnostic> {
    m.errors.iter().filter(|e| e.section == section).collect()
}

fn warnings_in<'a>(m: &'a Manifest, section: &str) -> Vec<&'a Diagnostic> {
    m.warnings.iter().filter(|e| e.section == section).collect()
}

fn assert_error(m: &Manifest, section: &str, index: Option<usize>, needle: &str) {
    assert!(
        m.errors
            .iter()
            .any(|e| e.section == section && e.index == index && e.message.contains(needle)),
        "expected an error in {section}[{index:?}] containing {needle:?}, got {:#?}",
        m.errors
    );
}

const CRON: &str = "type = \"cron\"\ncron = \"0 0 9 * * 1-5\"\nprompt = \"go\"";

fn trigger(extra: &str) -> Manifest {
    p(&format!("[[triggers]]\nslug = \"t\"\n{extra}"))
}

// ---------------------------------------------------------------- version

#[test]
fn version_absent_is_v1() {
    assert_eq!(p("").kortix_version, 1);
}

#[test]
fn version_integer_one_is_v1() {
    assert_eq!(p("kortix_version = 1").kortix_version, 1);
}

#[test]
fn version_string_one_is_v1() {
    assert_eq!(p("kortix_version = \"1\"").kortix_version, 1);
}

#[test]
fn version_higher_is_rejected_outright() {
    for v in ["2", "\"2\"", "1000"] {
        let err = parse(&format!(
            "kortix_version = {v}\n[[triggers]]\nslug=\"a\"\n{CRON}"
        ))
        .unwrap_err();
        assert!(
            matches!(err, ManifestError::UnsupportedVersion { .. }),
            "{v}: {err}"
        );
        assert!(
            err.to_string().contains("unsupported kortix_version"),
            "{err}"
        );
    }
}

#[test]
fn version_garbage_is_rejected_with_a_clear_error() {
    for v in ["\"one\"", "0", "1.5", "true", "[]"] {
        let err = parse(&format!("kortix_version = {v}")).unwrap_err();
        assert!(
            matches!(err, ManifestError::InvalidVersion { .. }),
            "{v}: {err}"
        );
        assert!(err.to_string().contains("kortix_version"), "{err}");
    }
}

#[test]
fn invalid_toml_is_rejected_outright() {
    for text in [
        "this is not toml",
        "[[triggers]\n",
        "a = 1\na = 2",
        "x = \"unterminated",
    ] {
        assert!(
            matches!(parse(text), Err(ManifestError::Toml(_))),
            "{text:?}"
        );
    }
    assert!(matches!(
        kortix_manifest::parse_bytes(b"a = \"\xff\""),
        Err(ManifestError::Toml(_))
    ));
}

#[test]
fn write_back_puts_kortix_version_first() {
    let m = p("[project]\nname = \"x\"\nkortix_version = 1");
    let text = write(&m);
    assert!(text.starts_with("kortix_version = 1\n"), "{text}");
    // Even a manifest that never declared it gets it, first.
    assert!(write(&p("[project]\nname=\"x\"")).starts_with("kortix_version = 1\n"));
}

// --------------------------------------------------------------- general

#[test]
fn unknown_top_level_tables_are_ignored() {
    let m = p("[my_metadata]\nowner = \"me\"\n[[whatever]]\nx = 1\nloose = 3\n");
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

#[test]
fn bad_entries_go_to_errors_while_good_ones_stay() {
    let m = p(&format!(
        "[[triggers]]\nslug = \"good\"\n{CRON}\n\
         [[triggers]]\nslug = \"bad\"\ntype = \"sometimes\"\nprompt = \"x\"\n\
         [[apps]]\nslug = \"site\"\nsource = {{ type = \"git\" }}\n\
         [[apps]]\nslug = \"broken\"\n"
    ));
    assert_eq!(m.triggers.len(), 1);
    assert_eq!(m.triggers[0].slug, "good");
    assert_eq!(m.apps.len(), 1);
    assert_eq!(
        m.errors[0],
        Diagnostic {
            section: "triggers".into(),
            index: Some(1),
            slug: Some("bad".into()),
            message: m.errors[0].message.clone(),
        }
    );
    assert_error(&m, "apps", Some(1), "source");
}

#[test]
fn entry_that_is_not_a_table_is_an_error() {
    let m = p("triggers = [1]");
    assert_error(&m, "triggers", Some(0), "must be a table");
    let m = p("triggers = \"x\"");
    assert_error(&m, "triggers", None, "array of tables");
}

// --------------------------------------------------------------- project

#[test]
fn project_metadata_is_kept_and_optional() {
    let m = p("[project]\nname = \"my-project\"\ndescription = \"d\"");
    assert_eq!(m.project.name.as_deref(), Some("my-project"));
    assert_eq!(m.project.description.as_deref(), Some("d"));
    let m = p("");
    assert_eq!(m.project.name, None);
    assert_eq!(
        m.to_json()["project"]["description"],
        serde_json::Value::Null
    );
}

// ------------------------------------------------------------------- env

#[test]
fn env_lists_parse_and_default_to_empty() {
    let m = p("[env]\nrequired = [\"DATABASE_URL\"]\noptional = [\"A\", \"_B2\"]");
    assert_eq!(m.env.required, ["DATABASE_URL"]);
    assert_eq!(m.env.optional, ["A", "_B2"]);
    let m = p("");
    assert!(m.env.required.is_empty() && m.env.optional.is_empty());
    assert_eq!(m.to_json()["env"]["required"], serde_json::json!([]));
}

#[test]
fn env_names_must_be_upper_snake() {
    let m = p("[env]\nrequired = [\"GOOD\", \"lower\", \"1X\", \"A-B\", 5]");
    assert_eq!(m.env.required, ["GOOD"]);
    assert_error(&m, "env.required", Some(1), "^[A-Z_][A-Z0-9_]*$");
    assert_error(&m, "env.required", Some(2), "^[A-Z_][A-Z0-9_]*$");
    assert_error(&m, "env.required", Some(3), "^[A-Z_][A-Z0-9_]*$");
    assert_error(&m, "env.required", Some(4), "must be a string");
    assert_eq!(
        errors_in(&m, "env.required")[0].slug.as_deref(),
        Some("lower")
    );
}

#[test]
fn env_names_longer_than_64_parse_with_a_warning() {
    let long = "A".repeat(65);
    let m = p(&format!(
        "[env]\noptional = [\"{long}\", \"{}\"]",
        "B".repeat(64)
    ));
    assert_eq!(m.env.optional.len(), 2, "no length cap at parse time");
    assert!(m.errors.is_empty());
    let w = warnings_in(&m, "env.optional");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].index, Some(0));
    assert!(w[0].message.contains("64"));
}

#[test]
fn env_kortix_prefix_parses_with_a_warning() {
    let m = p("[env]\nrequired = [\"KORTIX_FOO\"]");
    assert_eq!(m.env.required, ["KORTIX_FOO"]);
    assert!(m.errors.is_empty());
    assert!(
        warnings_in(&m, "env.required")[0]
            .message
            .contains("reserved")
    );
}

// ------------------------------------------------------- sandbox.templates

fn tpl(body: &str) -> Manifest {
    p(&format!("[[sandbox.templates]]\n{body}"))
}

#[test]
fn templates_are_optional_and_the_platform_default_applies() {
    let m = p("");
    assert!(m.sandbox.templates.is_empty());
    assert_eq!(
        m.resolve_template(None),
        Ok(ResolvedTemplate::PlatformDefault)
    );
}

#[test]
fn template_slug_is_required() {
    let m = tpl("image = \"python:3.12\"");
    assert!(m.sandbox.templates.is_empty());
    assert_error(&m, "sandbox.templates", Some(0), "slug");
}

#[test]
fn template_slug_must_be_unique() {
    let m = p(
        "[[sandbox.templates]]\nslug = \"a\"\nimage = \"python:3.12\"\n\
               [[sandbox.templates]]\nslug = \"a\"\nimage = \"node:22\"",
    );
    assert_eq!(m.sandbox.templates.len(), 1);
    assert_eq!(m.sandbox.templates[0].image.as_deref(), Some("python:3.12"));
    assert_error(&m, "sandbox.templates", Some(1), "duplicate slug");
}

#[test]
fn template_slug_default_is_reserved() {
    let m = tpl("slug = \"default\"\nimage = \"python:3.12\"");
    assert!(m.sandbox.templates.is_empty());
    assert_error(&m, "sandbox.templates", Some(0), "reserved");
}

#[test]
fn template_name_defaults_to_slug() {
    let m = tpl("slug = \"ml\"\nimage = \"python:3.12\"");
    assert_eq!(m.sandbox.templates[0].name, "ml");
    let m = tpl("slug = \"ml\"\nname = \"ML Development\"\nimage = \"python:3.12\"");
    assert_eq!(m.sandbox.templates[0].name, "ML Development");
}

#[test]
fn template_needs_exactly_one_of_image_and_dockerfile() {
    let m = tpl("slug = \"a\"");
    assert_error(
        &m,
        "sandbox.templates",
        Some(0),
        "one of `image` or `dockerfile`",
    );
    let m = tpl("slug = \"a\"\nimage = \"python:3.12\"\ndockerfile = \"Dockerfile\"");
    assert_error(&m, "sandbox.templates", Some(0), "not both");
    let m = tpl("slug = \"a\"\ndockerfile = \".kortix/Dockerfile\"");
    assert_eq!(
        m.sandbox.templates[0].dockerfile.as_deref(),
        Some(".kortix/Dockerfile")
    );
    assert_eq!(m.sandbox.templates[0].image, None);
}

#[test]
fn template_dockerfile_absolute_path_is_rejected() {
    for path in ["/etc/Dockerfile", "C:\\Dockerfile", "\\\\host\\share"] {
        let m = tpl(&format!("slug = \"a\"\ndockerfile = '{path}'"));
        assert!(m.sandbox.templates.is_empty(), "{path}");
        assert_error(&m, "sandbox.templates", Some(0), "absolute");
    }
}

#[test]
fn template_dockerfile_dotdot_is_rejected() {
    for path in ["../Dockerfile", "a/../../Dockerfile", "a\\..\\b"] {
        let m = tpl(&format!("slug = \"a\"\ndockerfile = '{path}'"));
        assert!(m.sandbox.templates.is_empty(), "{path}");
        assert_error(&m, "sandbox.templates", Some(0), "..");
    }
}

#[test]
fn template_image_must_be_tag_or_digest_pinned() {
    let digest = format!("python@sha256:{}", "a".repeat(64));
    for ok in [
        "python:3.12-slim",
        "localhost:5000/img:1.0",
        "ghcr.io/a/b:v1",
        &digest,
    ] {
        let m = tpl(&format!("slug = \"a\"\nimage = \"{ok}\""));
        assert_eq!(m.sandbox.templates.len(), 1, "{ok}: {:?}", m.errors);
    }
    for bad in [
        "python",
        "python:latest",
        "localhost:5000/img",
        "ghcr.io/a/b",
    ] {
        let m = tpl(&format!("slug = \"a\"\nimage = \"{bad}\""));
        assert!(m.sandbox.templates.is_empty(), "{bad}");
        assert_error(&m, "sandbox.templates", Some(0), "pin");
    }
}

#[test]
fn template_hardware_is_optional() {
    let m = tpl("slug = \"a\"\nimage = \"python:3.12\"");
    let t = &m.sandbox.templates[0];
    assert_eq!((t.cpu, t.memory, t.disk), (None, None, None));
    assert_eq!(
        m.to_json()["sandbox"]["templates"][0]["disk"],
        serde_json::Value::Null
    );
}

#[test]
fn template_hardware_is_coerced_to_whole_numbers() {
    let m =
        tpl("slug = \"a\"\nimage = \"python:3.12\"\ncpu = 2.7\nmemory = \"16\"\ndisk = \"50.5\"");
    let t = &m.sandbox.templates[0];
    assert_eq!((t.cpu, t.memory, t.disk), (Some(2), Some(16), Some(50)));
    let m = tpl("slug = \"a\"\nimage = \"python:3.12\"\ncpu = \"lots\"");
    assert_error(&m, "sandbox.templates", Some(0), "whole number");
    let m = tpl("slug = \"a\"\nimage = \"python:3.12\"\nmemory = true");
    assert_error(&m, "sandbox.templates", Some(0), "whole number");
}

#[test]
fn template_hardware_below_one_falls_back_to_provider_default() {
    let m = tpl("slug = \"a\"\nimage = \"python:3.12\"\ncpu = 0\nmemory = -4\ndisk = 0.5");
    let t = &m.sandbox.templates[0];
    assert_eq!((t.cpu, t.memory, t.disk), (None, None, None));
    assert!(m.errors.is_empty());
}

#[test]
fn template_hardware_above_ceiling_is_clamped() {
    let m = tpl(
        "slug = \"a\"\nimage = \"python:3.12\"\ncpu = 64\nmemory = 1000\ndisk = 99999999999999",
    );
    let t = &m.sandbox.templates[0];
    assert_eq!((t.cpu, t.memory, t.disk), (Some(32), Some(128), Some(500)));
    assert!(m.errors.is_empty());
    assert_eq!(warnings_in(&m, "sandbox.templates").len(), 3);
    let m = tpl("slug = \"a\"\nimage = \"python:3.12\"\ncpu = 32\nmemory = 128\ndisk = 500");
    let t = &m.sandbox.templates[0];
    assert_eq!((t.cpu, t.memory, t.disk), (Some(32), Some(128), Some(500)));
}

#[test]
fn template_gpu_is_not_supported() {
    let m = tpl("slug = \"a\"\nimage = \"python:3.12\"\ngpu = 1");
    assert_error(&m, "sandbox.templates", Some(0), "GPU");
}

#[test]
fn sandbox_default_must_name_a_template_or_default() {
    let m = p(
        "[sandbox]\ndefault = \"dev\"\n[[sandbox.templates]]\nslug = \"dev\"\ndockerfile = \".kortix/Dockerfile\"",
    );
    assert_eq!(m.sandbox.default.as_deref(), Some("dev"));
    assert!(m.errors.is_empty());
    let m = p("[sandbox]\ndefault = \"default\"");
    assert_eq!(m.sandbox.default.as_deref(), Some("default"));
    assert!(m.errors.is_empty());
    let m = p("[sandbox]\ndefault = \"nope\"");
    assert_eq!(m.sandbox.default, None);
    assert_error(&m, "sandbox", None, "does not name a template");
}

#[test]
fn sandbox_default_is_what_sessions_boot_without_a_slug() {
    let m = p(
        "[sandbox]\ndefault = \"dev\"\n[[sandbox.templates]]\nslug = \"dev\"\ndockerfile = \"Dockerfile\"\n\
               [[sandbox.templates]]\nslug = \"ml\"\nimage = \"python:3.12\"",
    );
    let dev = m.template("dev").unwrap();
    let ml = m.template("ml").unwrap();
    assert_eq!(
        m.resolve_template(None),
        Ok(ResolvedTemplate::Template(dev))
    );
    assert_eq!(
        m.resolve_template(Some("ml")),
        Ok(ResolvedTemplate::Template(ml))
    );
    assert_eq!(
        m.resolve_template(Some("default")),
        Ok(ResolvedTemplate::PlatformDefault)
    );
    let err = m.resolve_template(Some("gpu")).unwrap_err();
    assert_eq!(err.slug, "gpu");
    assert!(err.to_string().contains("dev, ml"), "{err}");
    let m = p(
        "[sandbox]\ndefault = \"default\"\n[[sandbox.templates]]\nslug = \"dev\"\ndockerfile = \"Dockerfile\"",
    );
    assert_eq!(
        m.resolve_template(None),
        Ok(ResolvedTemplate::PlatformDefault)
    );
}

#[test]
fn sandbox_legacy_singular_keys_are_rejected() {
    let m = p(
        "[sandbox]\nimage = \"python:3.12\"\nbuild = \"x\"\n[[sandbox.templates]]\nslug = \"a\"\nimage = \"python:3.12\"",
    );
    let errs = errors_in(&m, "sandbox");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs.iter()
            .all(|e| e.index.is_none() && e.message.contains("not allowed"))
    );
    // Permissive: the templates still parse.
    assert_eq!(m.sandbox.templates.len(), 1);
}

// ------------------------------------------------------------ snapshot hash

mod snapshot_hash {
    use kortix_manifest::{SandboxTemplate, snapshot_hash, snapshot_hash_with_context};

    fn t(cpu: Option<u32>, memory: Option<u32>, disk: Option<u32>) -> SandboxTemplate {
        SandboxTemplate {
            slug: "ml".into(),
            name: "ML".into(),
            dockerfile: Some(".kortix/Dockerfile.ml".into()),
            image: None,
            cpu,
            memory,
            disk,
        }
    }

    const DF: &[u8] = b"FROM python:3.12-slim\n";

    #[test]
    fn any_spec_change_changes_the_hash() {
        let base = snapshot_hash(&t(None, None, None), Some(DF), "rt1");
        let variants = [
            t(Some(4), None, None),
            t(Some(5), None, None),
            t(None, Some(4), None),
            t(None, None, Some(4)),
            t(Some(4), Some(16), None),
            t(Some(4), Some(16), Some(50)),
        ];
        let mut seen = std::collections::HashSet::new();
        seen.insert(base.clone());
        for v in &variants {
            assert!(seen.insert(snapshot_hash(v, Some(DF), "rt1")), "{v:?}");
        }
    }

    #[test]
    fn nothing_but_content_changes_it() {
        let a = t(Some(4), Some(16), None);
        let h = snapshot_hash(&a, Some(DF), "rt1");
        let mut renamed = a.clone();
        renamed.slug = "other".into();
        renamed.name = "Other".into();
        renamed.dockerfile = Some("elsewhere/Dockerfile".into());
        assert_eq!(snapshot_hash(&renamed, Some(DF), "rt1"), h);
        assert_ne!(snapshot_hash(&a, Some(b"FROM node:22\n"), "rt1"), h);
        assert_ne!(snapshot_hash(&a, Some(DF), "rt2"), h);
        assert_ne!(
            snapshot_hash(&a, None, "rt1"),
            h,
            "unread Dockerfile never matches"
        );
        let image = SandboxTemplate {
            dockerfile: None,
            image: Some("python:3.12".into()),
            ..a.clone()
        };
        let image2 = SandboxTemplate {
            image: Some("python:3.13".into()),
            ..image.clone()
        };
        assert_ne!(
            snapshot_hash(&image, None, "rt1"),
            snapshot_hash(&image2, None, "rt1")
        );
        // The hash is deterministic and hex SHA-256.
        assert_eq!(h, snapshot_hash(&a, Some(DF), "rt1"));
        assert_eq!(h.len(), 64);
    }

    /// The documented encoding, computed independently of the crate.
    fn documented(fields: &[(&str, &[u8])]) -> String {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for (name, bytes) in fields {
            ctx.update(name.as_bytes());
            ctx.update(&[0]);
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        }
        hex::encode(ctx.finish().as_ref())
    }

    #[test]
    fn a_template_without_spec_hashes_as_before_specs_existed() {
        // The spec-less input is exactly (domain, source, runtime): absent
        // spec fields are omitted, not encoded as null, so projects that
        // declare no spec keep their snapshot.
        let pre_spec = documented(&[
            ("domain", b"kortix-snapshot-v1"),
            ("dockerfile", DF),
            ("runtime", b"rt1"),
        ]);
        assert_eq!(
            snapshot_hash(&t(None, None, None), Some(DF), "rt1"),
            pre_spec
        );
        let with_spec = documented(&[
            ("domain", b"kortix-snapshot-v1"),
            ("dockerfile", DF),
            ("runtime", b"rt1"),
            ("cpu", b"4"),
            ("disk", b"50"),
        ]);
        assert_eq!(
            snapshot_hash(&t(Some(4), None, Some(50)), Some(DF), "rt1"),
            with_spec
        );
        let image = SandboxTemplate {
            dockerfile: None,
            image: Some("python:3.12".into()),
            ..t(None, None, None)
        };
        assert_eq!(
            snapshot_hash(&image, None, "rt1"),
            documented(&[
                ("domain", b"kortix-snapshot-v1"),
                ("image", b"python:3.12"),
                ("runtime", b"rt1")
            ])
        );
    }

    #[test]
    fn the_build_context_follows_the_dockerfile() {
        let df = t(Some(2), None, None);
        assert_eq!(
            snapshot_hash_with_context(&df, Some(DF), Some("tree1"), "rt1"),
            documented(&[
                ("domain", b"kortix-snapshot-v1"),
                ("dockerfile", DF),
                ("context", b"tree1"),
                ("runtime", b"rt1"),
                ("cpu", b"2"),
            ])
        );
        assert_ne!(
            snapshot_hash_with_context(&df, Some(DF), Some("tree2"), "rt1"),
            snapshot_hash_with_context(&df, Some(DF), Some("tree1"), "rt1")
        );
        assert_eq!(
            snapshot_hash_with_context(&df, Some(DF), None, "rt1"),
            snapshot_hash(&df, Some(DF), "rt1")
        );
        // An image template has no context: a digest passed anyway changes nothing.
        let image = SandboxTemplate {
            dockerfile: None,
            image: Some("python:3.12".into()),
            ..t(None, None, None)
        };
        assert_eq!(
            snapshot_hash_with_context(&image, None, Some("tree1"), "rt1"),
            snapshot_hash(&image, None, "rt1")
        );
    }
}

// --------------------------------------------------------------- opencode

#[test]
fn opencode_config_dir_defaults() {
    assert_eq!(p("").opencode_config_dir(), ".kortix/opencode");
    assert_eq!(p("[opencode]").opencode_config_dir(), ".kortix/opencode");
}

#[test]
fn opencode_config_dir_is_read() {
    assert_eq!(
        p("[opencode]\nconfig_dir = \"tools/oc\"").opencode_config_dir(),
        "tools/oc"
    );
}

#[test]
fn opencode_bad_config_dir_silently_falls_back() {
    for bad in [
        "\"/abs\"",
        "\"../up\"",
        "\"a/../../b\"",
        "\"\"",
        "\"  \"",
        "42",
    ] {
        let m = p(&format!("[opencode]\nconfig_dir = {bad}"));
        assert_eq!(m.opencode_config_dir(), ".kortix/opencode", "{bad}");
        assert!(m.errors.is_empty(), "{bad}: not an error");
    }
}

// --------------------------------------------------------------- triggers

#[test]
fn triggers_are_sorted_by_slug() {
    let m = p(&format!(
        "[[triggers]]\nslug = \"b\"\n{CRON}\n[[triggers]]\nslug = \"a\"\n{CRON}\n[[triggers]]\nslug = \"c\"\n{CRON}"
    ));
    let slugs: Vec<_> = m.triggers.iter().map(|t| t.slug.as_str()).collect();
    assert_eq!(slugs, ["a", "b", "c"]);
}

#[test]
fn trigger_slug_grammar() {
    for ok in ["a", "daily-digest", "0_x", &"a".repeat(128)] {
        let m = p(&format!("[[triggers]]\nslug = \"{ok}\"\n{CRON}"));
        assert_eq!(m.triggers.len(), 1, "{ok}");
    }
    for bad in ["", "Daily", "-x", "_x", "a b", "a.b", &"a".repeat(129)] {
        let m = p(&format!("[[triggers]]\nslug = \"{bad}\"\n{CRON}"));
        assert!(m.triggers.is_empty(), "{bad}");
        assert_error(&m, "triggers", Some(0), "slug");
    }
    let m = p(&format!("[[triggers]]\n{CRON}"));
    assert_error(&m, "triggers", Some(0), "missing required field `slug`");
}

#[test]
fn trigger_slugs_are_unique_among_triggers() {
    let m = p(&format!(
        "[[triggers]]\nslug = \"a\"\n{CRON}\n[[triggers]]\nslug = \"a\"\n{CRON}"
    ));
    assert_eq!(m.triggers.len(), 1);
    assert_error(&m, "triggers", Some(1), "duplicate slug");
}

#[test]
fn slug_uniqueness_is_per_section() {
    let m = p(&format!(
        "[[triggers]]\nslug = \"x\"\n{CRON}\n[[apps]]\nslug = \"x\"\n[apps.source]\ntype = \"git\"\n\
         [[connectors]]\nslug = \"x\"\nprovider = \"pipedream\"\napp = \"slack\""
    ));
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    assert_eq!(
        (m.triggers.len(), m.apps.len(), m.connectors.len()),
        (1, 1, 1)
    );
}

#[test]
fn trigger_type_is_required_and_cron_or_webhook() {
    let m = trigger("prompt = \"x\"");
    assert_error(&m, "triggers", Some(0), "`type`");
    let m = trigger("type = \"hourly\"\nprompt = \"x\"");
    assert_error(&m, "triggers", Some(0), "\"cron\" or \"webhook\"");
    assert_eq!(trigger(CRON).triggers[0].kind, TriggerKind::Cron);
    assert_eq!(
        trigger("type = \"webhook\"\nprompt = \"x\"").triggers[0].kind,
        TriggerKind::Webhook
    );
}

#[test]
fn trigger_prompt_is_required_alias_prompt_template() {
    let m = trigger("type = \"webhook\"");
    assert_error(&m, "triggers", Some(0), "`prompt`");
    let m = trigger("type = \"webhook\"\nprompt_template = \"hello {{ body.text }}\"");
    assert_eq!(m.triggers[0].prompt, "hello {{ body.text }}");
    let m = trigger("type = \"webhook\"\nprompt = \"   \"");
    assert_error(&m, "triggers", Some(0), "empty");
}

#[test]
fn trigger_name_defaults_to_slug() {
    assert_eq!(trigger(CRON).triggers[0].name, "t");
    assert_eq!(
        trigger(&format!("{CRON}\nname = \"Nice\"")).triggers[0].name,
        "Nice"
    );
}

#[test]
fn trigger_agent_defaults_and_alias_agent_name() {
    assert_eq!(trigger(CRON).triggers[0].agent, "default");
    assert_eq!(
        trigger(&format!("{CRON}\nagent = \"kortix\"")).triggers[0].agent,
        "kortix"
    );
    assert_eq!(
        trigger(&format!("{CRON}\nagent_name = \"build\"")).triggers[0].agent,
        "build"
    );
}

#[test]
fn trigger_enabled_defaults_true_and_accepts_strings() {
    assert!(trigger(CRON).triggers[0].enabled);
    for (s, want) in [
        ("\"true\"", true),
        ("\"false\"", false),
        ("\"yes\"", true),
        ("\"no\"", false),
        ("\"on\"", true),
        ("\"off\"", false),
        ("\"1\"", true),
        ("\"0\"", false),
        ("false", false),
    ] {
        let m = trigger(&format!("{CRON}\nenabled = {s}"));
        assert_eq!(m.triggers[0].enabled, want, "{s}");
    }
    let m = trigger(&format!("{CRON}\nenabled = \"sometimes\""));
    assert_error(&m, "triggers", Some(0), "enabled");
}

#[test]
fn trigger_cron_is_six_field_croner_alias_schedule() {
    let m = trigger("type = \"cron\"\nprompt = \"x\"\nschedule = \"*/30 * * * * *\"");
    assert_eq!(m.triggers[0].cron.as_deref(), Some("*/30 * * * * *"));
    for bad in [
        "0 9 * * 1-5",
        "0 0 9 * * 1-5 2030",
        "@daily",
        "0 0 99 * * *",
        "x x x x x x",
    ] {
        let m = trigger(&format!(
            "type = \"cron\"\nprompt = \"x\"\ncron = \"{bad}\""
        ));
        assert!(m.triggers.is_empty(), "{bad}");
        assert_error(&m, "triggers", Some(0), "cron");
    }
    let m = trigger("type = \"cron\"\nprompt = \"x\"");
    assert_error(&m, "triggers", Some(0), "`cron`");
}

#[test]
fn trigger_timezone_is_iana_and_defaults_to_utc() {
    assert_eq!(trigger(CRON).triggers[0].timezone.as_deref(), Some("UTC"));
    let m = trigger(&format!("{CRON}\ntimezone = \"America/Los_Angeles\""));
    assert_eq!(
        m.triggers[0].timezone.as_deref(),
        Some("America/Los_Angeles")
    );
    let m = trigger(&format!("{CRON}\ntimezone = \"Moon/Base\""));
    assert_error(&m, "triggers", Some(0), "IANA");
}

#[test]
fn trigger_cron_evaluates_seconds_first_in_its_timezone() {
    use chrono::{TimeZone, Utc};
    let m = trigger(&format!("{CRON}\ntimezone = \"Europe/Berlin\""));
    let t = &m.triggers[0];
    // 2025-01-06 is a Monday; Berlin is UTC+1 in winter.
    let after = Utc.with_ymd_and_hms(2025, 1, 6, 0, 0, 0).unwrap();
    assert_eq!(
        t.next_after(after),
        Some(Utc.with_ymd_and_hms(2025, 1, 6, 8, 0, 0).unwrap())
    );
    let hook = trigger("type = \"webhook\"\nprompt = \"x\"");
    assert_eq!(hook.triggers[0].next_after(after), None);
}

#[test]
fn trigger_secret_env_alias_secret_env_camel() {
    let m = trigger("type = \"webhook\"\nprompt = \"x\"\nsecretEnv = \"WEBHOOK_SECRET\"");
    assert_eq!(m.triggers[0].secret_env.as_deref(), Some("WEBHOOK_SECRET"));
    let m = trigger("type = \"webhook\"\nprompt = \"x\"\nsecret_env = \"not a name\"");
    assert_error(&m, "triggers", Some(0), "secret_env");
}

#[test]
fn webhook_secret_should_be_declared_in_env() {
    // Round-trip rule: declare a webhook's secret in [env].optional so it
    // shows up in the Secrets Manager.
    let hook = "[[triggers]]\nslug = \"h\"\ntype = \"webhook\"\nprompt = \"x\"\nsecret_env = \"HOOK_SECRET\"";
    let m = p(hook);
    assert_eq!(m.triggers.len(), 1);
    assert!(
        warnings_in(&m, "triggers")[0]
            .message
            .contains("[env].optional")
    );
    let m = p(&format!("[env]\noptional = [\"HOOK_SECRET\"]\n{hook}"));
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

#[test]
fn trigger_type_specific_fields_are_null_for_the_other_type() {
    let m = trigger("type = \"webhook\"\nprompt = \"x\"\nsecret_env = \"S\"");
    let t = &m.triggers[0];
    assert_eq!((t.cron.as_deref(), t.timezone.as_deref()), (None, None));
    let m = trigger(CRON);
    assert_eq!(m.triggers[0].secret_env, None);
}

#[test]
fn trigger_output_uses_canonical_names_only() {
    let m = trigger(
        "type = \"cron\"\nprompt_template = \"p\"\nagent_name = \"a\"\nschedule = \"0 * * * * *\"",
    );
    assert_eq!(
        serde_json::to_string(&m.triggers[0]).unwrap(),
        r#"{"slug":"t","name":"t","type":"cron","agent":"a","enabled":true,"cron":"0 * * * * *","timezone":"UTC","secret_env":null,"prompt":"p"}"#
    );
    let text = write(&m);
    for alias in ["prompt_template", "agent_name", "schedule", "secretEnv"] {
        assert!(!text.contains(alias), "{text}");
    }
    let m = trigger("type = \"webhook\"\nprompt = \"p\"\nsecretEnv = \"S\"");
    assert!(write(&m).contains("secret_env = \"S\""));
}

#[test]
fn trigger_write_back_field_order() {
    let m = p(
        "[[triggers]]\nprompt = \"last\"\nschedule = \"0 * * * * *\"\ntimezone = \"UTC\"\nenabled = \"no\"\n\
         agent_name = \"x\"\ntype = \"cron\"\nname = \"N\"\nslug = \"s\"\n\
         [[triggers]]\nsecretEnv = \"S\"\nprompt = \"p\"\ntype = \"webhook\"\nslug = \"w\"",
    );
    let text = write(&m);
    let keys: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("[[triggers]]"))
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
        .collect();
    assert_eq!(
        keys,
        [
            "slug",
            "name",
            "type",
            "agent",
            "enabled",
            "cron",
            "timezone",
            "prompt", //
            "slug",
            "name",
            "type",
            "agent",
            "enabled",
            "secret_env",
            "prompt"
        ],
        "{text}"
    );
}

// ------------------------------------------------------------- connectors

fn conn(body: &str) -> Manifest {
    p(&format!("[[connectors]]\nslug = \"c\"\n{body}"))
}

#[test]
fn connector_slug_grammar_and_uniqueness() {
    let m = p("[[connectors]]\nslug = \"Bad\"\nprovider = \"pipedream\"\napp = \"x\"");
    assert_error(&m, "connectors", Some(0), "slug");
    let m = p(
        "[[connectors]]\nslug = \"a\"\nprovider = \"pipedream\"\napp = \"x\"\n\
               [[connectors]]\nslug = \"a\"\nprovider = \"pipedream\"\napp = \"y\"",
    );
    assert_eq!(m.connectors.len(), 1);
    assert_error(&m, "connectors", Some(1), "duplicate slug");
}

#[test]
fn connectors_are_sorted_by_slug() {
    let m = p(
        "[[connectors]]\nslug = \"z\"\nprovider = \"pipedream\"\napp = \"x\"\n\
               [[connectors]]\nslug = \"a\"\nprovider = \"pipedream\"\napp = \"y\"",
    );
    assert_eq!(m.connectors[0].slug, "a");
    assert_eq!(m.connectors[1].slug, "z");
}

#[test]
fn connector_provider_is_required_and_known() {
    assert_error(&conn("app = \"x\""), "connectors", Some(0), "`provider`");
    assert_error(
        &conn("provider = \"zapier\""),
        "connectors",
        Some(0),
        "`provider`",
    );
}

#[test]
fn connector_name_and_enabled_defaults() {
    let m = conn("provider = \"pipedream\"\napp = \"slack\"");
    assert_eq!(m.connectors[0].name, "c");
    assert!(m.connectors[0].enabled);
    let m = conn("provider = \"pipedream\"\napp = \"slack\"\nname = \"Slack\"\nenabled = \"off\"");
    assert_eq!(m.connectors[0].name, "Slack");
    assert!(!m.connectors[0].enabled);
}

#[test]
fn connector_credential_defaults_by_provider() {
    let m = conn("provider = \"pipedream\"\napp = \"slack\"");
    assert_eq!(m.connectors[0].credential, Credential::PerUser);
    let m = conn("provider = \"mcp\"\nurl = \"https://mcp.example.com\"");
    assert_eq!(m.connectors[0].credential, Credential::Shared);
    let m = conn("provider = \"pipedream\"\napp = \"slack\"\ncredential = \"shared\"");
    assert_eq!(m.connectors[0].credential, Credential::Shared);
    let m = conn("provider = \"pipedream\"\napp = \"slack\"\ncredential = \"team\"");
    assert_error(&m, "connectors", Some(0), "credential");
}

#[test]
fn connector_pipedream_needs_app_account_defaults_to_slug() {
    assert_error(
        &conn("provider = \"pipedream\""),
        "connectors",
        Some(0),
        "`app`",
    );
    let m = conn("provider = \"pipedream\"\napp = \"slack\"");
    assert_eq!(m.connectors[0].app.as_deref(), Some("slack"));
    assert_eq!(m.connectors[0].account.as_deref(), Some("c"));
    let m = conn("provider = \"pipedream\"\napp = \"slack\"\naccount = \"work\"");
    assert_eq!(m.connectors[0].account.as_deref(), Some("work"));
}

#[test]
fn connector_mcp_needs_url_transport_http_or_sse() {
    assert_error(&conn("provider = \"mcp\""), "connectors", Some(0), "`url`");
    let m = conn("provider = \"mcp\"\nurl = \"https://mcp.example.com/mcp\"");
    assert_eq!(m.connectors[0].transport, Some(Transport::Http));
    let m = conn("provider = \"mcp\"\nurl = \"https://mcp.example.com/sse\"\ntransport = \"sse\"");
    assert_eq!(m.connectors[0].transport, Some(Transport::Sse));
    let m = conn("provider = \"mcp\"\nurl = \"https://x\"\ntransport = \"stdio\"");
    assert_error(&m, "connectors", Some(0), "transport");
    let m = conn("provider = \"mcp\"\nurl = \"not a url\"");
    assert_error(&m, "connectors", Some(0), "url");
}

#[test]
fn connector_openapi_needs_spec_url_or_repo_path() {
    assert_error(
        &conn("provider = \"openapi\""),
        "connectors",
        Some(0),
        "`spec`",
    );
    for ok in ["https://api.example.com/openapi.json", "specs/api.yaml"] {
        let m = conn(&format!("provider = \"openapi\"\nspec = \"{ok}\""));
        assert_eq!(m.connectors[0].spec.as_deref(), Some(ok));
    }
    for bad in ["/etc/api.yaml", "../api.yaml", "ftp://x/api.yaml"] {
        let m = conn(&format!("provider = \"openapi\"\nspec = \"{bad}\""));
        assert!(m.connectors.is_empty(), "{bad}");
    }
}

#[test]
fn connector_graphql_needs_endpoint_spec_optional() {
    assert_error(
        &conn("provider = \"graphql\""),
        "connectors",
        Some(0),
        "`endpoint`",
    );
    let m = conn("provider = \"graphql\"\nendpoint = \"https://api.example.com/graphql\"");
    assert_eq!(
        m.connectors[0].endpoint.as_deref(),
        Some("https://api.example.com/graphql")
    );
    assert_eq!(m.connectors[0].spec, None);
    let m =
        conn("provider = \"graphql\"\nendpoint = \"https://x/graphql\"\nspec = \"schema.graphql\"");
    assert_eq!(m.connectors[0].spec.as_deref(), Some("schema.graphql"));
}

#[test]
fn connector_http_needs_base_url_alias_base_url_camel() {
    assert_error(
        &conn("provider = \"http\""),
        "connectors",
        Some(0),
        "`base_url`",
    );
    let m = conn("provider = \"http\"\nbaseUrl = \"https://api.example.com\"");
    assert_eq!(
        m.connectors[0].base_url.as_deref(),
        Some("https://api.example.com")
    );
    let m = conn(
        "provider = \"http\"\nbase_url = \"https://api.example.com\"\nspec = \"openapi.yaml\"",
    );
    assert_eq!(m.connectors[0].spec.as_deref(), Some("openapi.yaml"));
    assert!(!write(&m).contains("baseUrl"));
}

#[test]
fn connector_fields_of_other_providers_are_null() {
    let m = conn("provider = \"pipedream\"\napp = \"slack\"\nurl = \"https://x\"");
    let c = &m.connectors[0];
    assert_eq!(
        (c.url.as_deref(), c.transport, c.base_url.as_deref()),
        (None, None, None)
    );
    assert!(!warnings_in(&m, "connectors").is_empty());
}

#[test]
fn connector_auth_defaults_and_values() {
    let http = "provider = \"http\"\nbase_url = \"https://api.example.com\"";
    let m = conn(http);
    assert_eq!(m.connectors[0].auth, None);
    let m = conn(&format!("{http}\n[connectors.auth]\nsecret = \"API_KEY\""));
    let a = m.connectors[0].auth.as_ref().unwrap();
    assert_eq!((a.kind, a.location), (AuthType::None, AuthLocation::Header));
    assert_eq!(a.secret.as_deref(), Some("API_KEY"));
    let m = conn(&format!(
        "{http}\n[connectors.auth]\ntype = \"bearer\"\nin = \"query\"\nprefix = \"Token \"\nsecret = \"K\""
    ));
    let a = m.connectors[0].auth.as_ref().unwrap();
    assert_eq!(
        (a.kind, a.location),
        (AuthType::Bearer, AuthLocation::Query)
    );
    assert_eq!(a.prefix.as_deref(), Some("Token "));
    let m = conn(&format!("{http}\n[connectors.auth]\ntype = \"basic\""));
    assert_eq!(m.connectors[0].auth.as_ref().unwrap().kind, AuthType::Basic);
    for bad in ["type = \"oauth\"", "in = \"cookie\""] {
        let m = conn(&format!("{http}\n[connectors.auth]\n{bad}"));
        assert_error(&m, "connectors", Some(0), "auth");
    }
}

#[test]
fn connector_auth_custom_requires_name() {
    let http = "provider = \"http\"\nbase_url = \"https://api.example.com\"";
    let m = conn(&format!("{http}\n[connectors.auth]\ntype = \"custom\""));
    assert_error(&m, "connectors", Some(0), "`name` is required");
    let m = conn(&format!(
        "{http}\n[connectors.auth]\ntype = \"custom\"\nname = \"X-Api-Key\""
    ));
    assert_eq!(
        m.connectors[0].auth.as_ref().unwrap().name.as_deref(),
        Some("X-Api-Key")
    );
}

#[test]
fn connector_auth_secret_must_be_a_secret_name() {
    let http = "provider = \"http\"\nbase_url = \"https://api.example.com\"";
    for bad in ["lower", "A-B", &"A".repeat(65)] {
        let m = conn(&format!(
            "{http}\n[connectors.auth]\ntype = \"bearer\"\nsecret = \"{bad}\""
        ));
        assert_error(&m, "connectors", Some(0), "secret");
    }
}

#[test]
fn connector_auth_not_allowed_with_pipedream() {
    let m = conn("provider = \"pipedream\"\napp = \"slack\"\n[connectors.auth]\ntype = \"bearer\"");
    assert!(m.connectors.is_empty());
    assert_error(&m, "connectors", Some(0), "pipedream");
}

#[test]
fn connector_policies_need_match_and_action() {
    let base = "provider = \"pipedream\"\napp = \"slack\"";
    let m = conn(&format!(
        "{base}\n[[connectors.policies]]\nmatch = \"*\"\naction = \"require_approval\"\n\
         [[connectors.policies]]\nmatch = \"delete_*\"\naction = \"block\"\n\
         [[connectors.policies]]\nmatch = \"read_*\"\naction = \"always_run\""
    ));
    let actions: Vec<_> = m.connectors[0].policies.iter().map(|p| p.action).collect();
    assert_eq!(
        actions,
        [
            PolicyAction::RequireApproval,
            PolicyAction::Block,
            PolicyAction::AlwaysRun
        ]
    );
    assert_eq!(m.connectors[0].policies[1].pattern, "delete_*");
    for bad in [
        "action = \"block\"",
        "match = \"*\"",
        "match = \"*\"\naction = \"maybe\"",
    ] {
        let m = conn(&format!("{base}\n[[connectors.policies]]\n{bad}"));
        assert!(m.connectors.is_empty(), "{bad}");
        assert_error(&m, "connectors", Some(0), "policies[0]");
    }
}

#[test]
fn connector_json_shape() {
    let m = conn("provider = \"mcp\"\nurl = \"https://x\"");
    assert_eq!(
        serde_json::to_string(&m.connectors[0]).unwrap(),
        r#"{"slug":"c","name":"c","provider":"mcp","enabled":true,"credential":"shared","app":null,"account":null,"url":"https://x","transport":"http","spec":null,"endpoint":null,"base_url":null,"auth":null,"policies":[]}"#
    );
    let json = m.to_json();
    assert_eq!(json["connectors"][0]["provider"], "mcp");
    assert_eq!(json["connectors"][0]["policies"], serde_json::json!([]));
    assert_eq!(m.connectors[0].provider, Provider::Mcp);
}

// ------------------------------------------------------------------- apps

fn app(body: &str) -> Manifest {
    p(&format!("[[apps]]\nslug = \"site\"\n{body}"))
}

const GIT: &str = "[apps.source]\ntype = \"git\"";

#[test]
fn app_slug_required_and_unique() {
    let m = p(&format!("[[apps]]\n{GIT}"));
    assert_error(&m, "apps", Some(0), "slug");
    let m = p(&format!(
        "[[apps]]\nslug = \"a\"\n{GIT}\n[[apps]]\nslug = \"a\"\n{GIT}"
    ));
    assert_eq!(m.apps.len(), 1);
    assert_error(&m, "apps", Some(1), "duplicate slug");
    let m = p(&format!("[[apps]]\nslug = \"Not URL safe!\"\n{GIT}"));
    assert_error(&m, "apps", Some(0), "slug");
}

#[test]
fn app_defaults() {
    let m = app(GIT);
    let a = &m.apps[0];
    assert_eq!(a.name, "site");
    assert!(a.enabled);
    assert!(a.domains.is_empty());
    assert_eq!(a.framework, None);
    assert_eq!(a.build, None);
    assert!(a.env.is_empty());
    assert_eq!(a.source.kind, SourceType::Git);
    assert_eq!(a.source.root_path, ".");
    assert_eq!(
        (a.source.repo.as_deref(), a.source.branch.as_deref()),
        (None, None)
    );
    let m = app(&format!(
        "name = \"Site\"\nenabled = false\nframework = \"next\"\n{GIT}"
    ));
    assert_eq!(
        (m.apps[0].name.as_str(), m.apps[0].enabled),
        ("Site", false)
    );
    assert_eq!(m.apps[0].framework.as_deref(), Some("next"));
}

#[test]
fn apps_are_sorted_by_slug() {
    let m = p(&format!(
        "[[apps]]\nslug = \"b\"\n{GIT}\n[[apps]]\nslug = \"a\"\n{GIT}"
    ));
    assert_eq!(m.apps[0].slug, "a");
}

#[test]
fn app_domains_must_be_non_empty_strings() {
    let m = app(&format!("domains = [\"marketing.example.com\"]\n{GIT}"));
    assert_eq!(m.apps[0].domains, ["marketing.example.com"]);
    for bad in ["[\"\"]", "[\"ok.com\", 3]", "\"x.com\""] {
        let m = app(&format!("domains = {bad}\n{GIT}"));
        assert!(m.apps.is_empty(), "{bad}");
        assert_error(&m, "apps", Some(0), "domains");
    }
}

#[test]
fn app_source_type_is_required() {
    assert_error(&app(""), "apps", Some(0), "source");
    assert_error(
        &app("[apps.source]\nrepo = \"x\""),
        "apps",
        Some(0),
        "`type`",
    );
    assert_error(
        &app("[apps.source]\ntype = \"zip\""),
        "apps",
        Some(0),
        "\"git\" or \"tar\"",
    );
}

#[test]
fn app_git_source_fields() {
    let m = app(
        "[apps.source]\ntype = \"git\"\nrepo = \"https://github.com/me/site\"\nbranch = \"main\"\nroot_path = \"apps/site\"",
    );
    let s = &m.apps[0].source;
    assert_eq!(s.repo.as_deref(), Some("https://github.com/me/site"));
    assert_eq!(s.branch.as_deref(), Some("main"));
    assert_eq!(s.root_path, "apps/site");
    assert_eq!(s.url, None);
    let m = app("[apps.source]\ntype = \"git\"\nroot_path = \"../outside\"");
    assert_error(&m, "apps", Some(0), "root_path");
}

#[test]
fn app_tar_source_needs_https_url() {
    assert_error(
        &app("[apps.source]\ntype = \"tar\""),
        "apps",
        Some(0),
        "`url`",
    );
    let m = app("[apps.source]\ntype = \"tar\"\nurl = \"https://x.example.com/site.tar.gz\"");
    assert_eq!(
        m.apps[0].source.url.as_deref(),
        Some("https://x.example.com/site.tar.gz")
    );
    assert_eq!(m.apps[0].source.kind, SourceType::Tar);
    let m = app("[apps.source]\ntype = \"tar\"\nurl = \"http://x/site.tar.gz\"");
    assert_error(&m, "apps", Some(0), "https");
}

#[test]
fn app_build_collapses_to_null_when_empty() {
    let m = app(&format!(
        "{GIT}\n[apps.build]\ncommand = \"\"\nout_dir = \"\""
    ));
    assert_eq!(m.apps[0].build, None);
    assert_eq!(m.to_json()["apps"][0]["build"], serde_json::Value::Null);
    let m = app(&format!("{GIT}\n[apps.build]"));
    assert_eq!(m.apps[0].build, None);
    let m = app(&format!(
        "{GIT}\n[apps.build]\ncommand = \"pnpm build\"\nout_dir = \"dist\""
    ));
    let b = m.apps[0].build.as_ref().unwrap();
    assert_eq!(
        (b.command.as_deref(), b.out_dir.as_deref()),
        (Some("pnpm build"), Some("dist"))
    );
    let m = app(&format!("{GIT}\n[apps.build]\nout_dir = \"dist\""));
    assert_eq!(m.apps[0].build.as_ref().unwrap().command, None);
}

#[test]
fn app_env_keys_and_string_values() {
    let m = app(&format!(
        "{GIT}\n[apps.env]\nNEXT_PUBLIC_API_URL = \"https://api.example.com\"\nmixedCase = \"ok\""
    ));
    assert_eq!(
        m.apps[0].env["NEXT_PUBLIC_API_URL"],
        "https://api.example.com"
    );
    assert_eq!(m.apps[0].env["mixedCase"], "ok");
    for bad in [
        "PORT = 3000",
        "DEBUG = true",
        "\"1BAD\" = \"x\"",
        "\"A-B\" = \"x\"",
    ] {
        let m = app(&format!("{GIT}\n[apps.env]\n{bad}"));
        assert!(m.apps.is_empty(), "{bad}");
        assert_error(&m, "apps", Some(0), "env");
    }
}

#[test]
fn app_redeploy_hash_ignores_slug_and_name_only() {
    let base = app(&format!(
        "name = \"Site\"\nframework = \"next\"\ndomains = [\"a.com\", \"b.com\"]\n{GIT}\n\
         [apps.build]\ncommand = \"pnpm build\"\n[apps.env]\nK = \"v\""
    ));
    let a = &base.apps[0];
    let h = a.redeploy_hash();
    assert_eq!(h.len(), 64);
    let mut renamed = a.clone();
    renamed.slug = "other".into();
    renamed.name = "Other".into();
    assert_eq!(renamed.redeploy_hash(), h);
    let mut reordered = a.clone();
    reordered.domains.reverse();
    assert_eq!(reordered.redeploy_hash(), h);
    let edits: [fn(&mut kortix_manifest::App); 8] = [
        |x| x.enabled = false,
        |x| x.domains.push("c.com".into()),
        |x| x.framework = None,
        |x| x.source.branch = Some("dev".into()),
        |x| x.source.root_path = "web".into(),
        |x| x.build = None,
        |x| {
            x.env.insert("K".into(), "w".into());
        },
        |x| {
            x.env.insert("K2".into(), "v".into());
        },
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut e = a.clone();
        edit(&mut e);
        assert_ne!(e.redeploy_hash(), h, "edit {i}");
    }
}

// ------------------------------------------------------------- round trip

#[test]
fn round_trip_is_identity_on_a_rich_manifest() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/everything.toml"
    ))
    .unwrap();
    let m = p(&text);
    assert!(m.errors.is_empty(), "{:#?}", m.errors);
    let written = write(&m);
    let back = p(&written);
    assert!(back.errors.is_empty(), "{:#?}\n{written}", back.errors);
    assert_eq!(back, m, "{written}");
}

#[test]
fn round_trip_drops_rejected_entries_only() {
    let m = p(&format!(
        "[[triggers]]\nslug = \"ok\"\n{CRON}\n[[triggers]]\nslug = \"BAD\"\n{CRON}"
    ));
    let back = p(&write(&m));
    assert!(back.errors.is_empty());
    assert!(back.config_eq(&m));
}
