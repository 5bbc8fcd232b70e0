//! The reference's full example parses cleanly and means what it says.

use kortix_manifest::{TriggerKind, parse, write};

const FULL: &str = include_str!("fixtures/full-example.toml");

#[test]
fn full_example_parses_with_no_errors() {
    let m = parse(FULL).expect("the reference example must parse");
    assert!(m.errors.is_empty(), "{:#?}", m.errors);
    assert!(m.warnings.is_empty(), "{:#?}", m.warnings);
    assert_eq!(m.kortix_version, 1);
    assert_eq!(m.project.name.as_deref(), Some("my-project"));
    assert_eq!(m.env.required, ["DATABASE_URL"]);
    assert_eq!(m.env.optional.len(), 3);
    let ml = m.template("ml").expect("ml template");
    assert_eq!(ml.name, "ML Development");
    assert_eq!(ml.dockerfile.as_deref(), Some(".kortix/Dockerfile.ml"));
    assert_eq!((ml.cpu, ml.memory, ml.disk), (Some(4), Some(16), None));
    assert_eq!(m.opencode_config_dir(), ".kortix/opencode");
    let slugs: Vec<_> = m.triggers.iter().map(|t| t.slug.as_str()).collect();
    assert_eq!(slugs, ["daily-digest", "slack-hook"]);
    let digest = &m.triggers[0];
    assert_eq!(digest.kind, TriggerKind::Cron);
    assert_eq!(digest.cron.as_deref(), Some("0 0 9 * * 1-5"));
    assert_eq!(digest.timezone.as_deref(), Some("America/Los_Angeles"));
    assert!(digest.prompt.contains("{{ cron.fired_at }}"));
    let hook = &m.triggers[1];
    assert_eq!(hook.kind, TriggerKind::Webhook);
    assert_eq!(hook.secret_env.as_deref(), Some("WEBHOOK_SLACK_SECRET"));
}

#[test]
fn full_example_json_has_the_cli_shape() {
    let m = parse(FULL).unwrap();
    let json = m.to_json();
    let text = serde_json::to_string(&m).unwrap();
    assert!(
        text.starts_with(r#"{"kortix_version":1,"project":{"name":"my-project","#),
        "{text}"
    );
    let order = [
        "\"env\":",
        "\"sandbox\":",
        "\"opencode\":",
        "\"triggers\":",
        "\"connectors\":",
        "\"apps\":",
        "\"errors\":",
        "\"warnings\":",
    ];
    let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(json.as_object().unwrap().len(), 10);
    assert_eq!(
        json["sandbox"]["templates"][0],
        serde_json::json!({"slug": "ml", "name": "ML Development",
            "dockerfile": ".kortix/Dockerfile.ml", "image": null,
            "cpu": 4, "memory": 16, "disk": null})
    );
    assert_eq!(json["sandbox"]["default"], serde_json::Value::Null);
    assert_eq!(json["triggers"][1]["cron"], serde_json::Value::Null);
    assert_eq!(json["connectors"], serde_json::json!([]));
    assert_eq!(json["errors"], serde_json::json!([]));
    // And the JSON reads back into the same manifest.
    let back: kortix_manifest::Manifest = serde_json::from_value(json).unwrap();
    assert_eq!(back, m);
}

#[test]
fn full_example_round_trips() {
    let m = parse(FULL).unwrap();
    assert_eq!(parse(&write(&m)).unwrap(), m);
}
