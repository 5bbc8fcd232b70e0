//! `write_over`: read-modify-write that keeps the diff small.

use kortix_manifest::{Manifest, Trigger, TriggerKind, parse, write_over};

const FULL: &str = include_str!("fixtures/full-example.toml");

fn p(text: &str) -> Manifest {
    parse(text).unwrap()
}

#[test]
fn unchanged_manifest_leaves_the_file_byte_identical() {
    assert_eq!(write_over(FULL, &p(FULL)).unwrap(), FULL);
    let everything = include_str!("fixtures/everything.toml");
    let out = write_over(everything, &p(everything)).unwrap();
    // Only the quoted version becomes canonical.
    assert_eq!(
        out,
        everything.replace("kortix_version = \"1\"", "kortix_version = 1")
    );
}

#[test]
fn editing_one_trigger_rewrites_only_that_entry() {
    let mut m = p(FULL);
    m.triggers[1].enabled = false;
    let out = write_over(FULL, &m).unwrap();
    assert!(p(&out).config_eq(&m), "{out}");
    // Comments elsewhere survive, including inside the untouched trigger.
    assert!(out.starts_with("# Pinned schema version."));
    assert!(out.contains("cron = \"0 0 9 * * 1-5\"            # 09:00 Mon–Fri"));
    assert!(out.contains("dockerfile = \".kortix/Dockerfile.ml\"   # repo-relative"));
    // The edited trigger is canonical now, in place.
    assert!(
        out.contains("secret_env = \"WEBHOOK_SLACK_SECRET\"\nprompt"),
        "{out}"
    );
    assert!(out.contains("enabled = false"));
}

#[test]
fn adding_and_removing_entries() {
    let mut m = p(FULL);
    m.triggers.retain(|t| t.slug != "daily-digest");
    m.triggers.push(Trigger {
        slug: "zz-new".into(),
        name: "New".into(),
        kind: TriggerKind::Webhook,
        agent: "default".into(),
        enabled: false,
        cron: None,
        timezone: None,
        secret_env: Some("NEW_SECRET".into()),
        prompt: "hi".into(),
    });
    let out = write_over(FULL, &m).unwrap();
    assert!(p(&out).config_eq(&m), "{out}");
    assert!(!out.contains("daily-digest"));
    assert!(
        out.contains("# unique per project"),
        "template comment kept"
    );
    assert!(out.find("slack-hook").unwrap() < out.find("zz-new").unwrap());
}

#[test]
fn scalar_fields_are_replaced_individually() {
    let text = "kortix_version = 1\n\n[env]\n# who needs what\nrequired = [\"A\"] # keep me\noptional = [\"B\"]\n\n[mine]\nx = 1\n";
    let mut m = p(text);
    m.env.optional.push("C".into());
    m.opencode.config_dir = "oc".into();
    m.sandbox.default = Some("default".into());
    let out = write_over(text, &m).unwrap();
    assert!(p(&out).config_eq(&m), "{out}");
    assert!(
        out.contains("# who needs what\nrequired = [\"A\"] # keep me\n"),
        "{out}"
    );
    assert!(
        out.contains("[mine]\nx = 1"),
        "unknown tables survive: {out}"
    );
    assert!(out.contains("config_dir = \"oc\""));
    assert!(out.contains("[sandbox]\ndefault = \"default\""), "{out}");
}

#[test]
fn rejected_entries_are_left_alone() {
    let text = "[[triggers]]\nslug = \"BAD SLUG\"\ntype = \"cron\"\n\n[[triggers]]\nslug = \"ok\"\ntype = \"webhook\"\nprompt = \"x\"\n";
    let mut m = p(text);
    assert_eq!(m.errors.len(), 1);
    m.triggers[0].prompt = "y".into();
    let out = write_over(text, &m).unwrap();
    assert!(out.contains("slug = \"BAD SLUG\""), "{out}");
    let back = p(&out);
    assert!(back.config_eq(&m));
    assert_eq!(back.errors.len(), 1, "still the owner's to fix");
}

#[test]
fn kortix_version_moves_first() {
    let text = "[project]\nname = \"x\"\n";
    let mut m = p(text);
    m.project.description = Some("d".into());
    let out = write_over(text, &m).unwrap();
    assert!(out.starts_with("kortix_version = 1\n"), "{out}");
    let text = "foo = 1\nkortix_version = \"1\"\n";
    let out = write_over(text, &p(text)).unwrap();
    assert!(out.starts_with("kortix_version = 1\nfoo = 1\n"), "{out}");
}

#[test]
fn templates_merge_by_slug() {
    let text = "[[sandbox.templates]]\n# the dev box\nslug = \"dev\"\ndockerfile = \"Dockerfile\"\n\n[[sandbox.templates]]\nslug = \"ml\"\nimage = \"python:3.12\"\n";
    let mut m = p(text);
    m.sandbox.templates[1].cpu = Some(8);
    let out = write_over(text, &m).unwrap();
    assert!(p(&out).config_eq(&m), "{out}");
    assert!(out.contains("# the dev box"), "{out}");
    assert!(out.contains("cpu = 8"));
}

#[test]
fn rejected_original_is_an_error() {
    assert!(write_over("kortix_version = 2", &Manifest::default()).is_err());
    assert!(write_over("not toml", &Manifest::default()).is_err());
}

#[test]
fn deleting_a_slug_also_deletes_its_rejected_duplicates() {
    // Found by the fuzzer: keeping the rejected copy would revive it.
    let text = "[project]\nname = \"p\" # mine\n\n[[apps]]\nslug = \"a\"\n[apps.source]\ntype = \"git\"\n\n[[apps]]\nslug = \"a\"\n[apps.source]\ntype = \"tar\"\nurl = \"https://x/a.tgz\"\n";
    let mut m = p(text);
    assert_eq!(m.errors.len(), 1);
    m.apps.clear();
    let out = write_over(text, &m).unwrap();
    assert!(!out.contains("[[apps]]"), "{out}");
    assert!(
        out.contains("# mine"),
        "surgical, not a full rewrite: {out}"
    );
}

#[test]
fn new_tables_go_at_the_end() {
    // Found by the fuzzer: a new table landed between an entry and its
    // sub-table.
    let text = "[[apps]]\nslug = \"a\"\n[zzz.source]\nx = 1\n[apps.source]\ntype = \"git\"\n";
    let mut m = p(text);
    m.opencode.config_dir = "oc".into();
    let out = write_over(text, &m).unwrap();
    assert!(out.ends_with("[opencode]\nconfig_dir = \"oc\"\n"), "{out}");
    assert!(out.contains("[zzz.source]\nx = 1\n[apps.source]"), "{out}");
}
