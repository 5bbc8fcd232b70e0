//! Arbitrary bytes into the manifest parser: it must never panic, whatever
//! it accepts must survive write-then-parse unchanged, and `write_over`
//! must land exactly on an edited configuration.

#![no_main]

use kortix_manifest::{Manifest, parse, write, write_over};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = kortix_manifest::parse_bytes(data) else {
        return;
    };
    let _ = manifest.to_json();

    let written = write(&manifest);
    let back = match parse(&written) {
        Ok(back) => back,
        Err(e) => panic!("written manifest rejected: {e}\n--- written ---\n{written}"),
    };
    assert!(
        back.errors.is_empty(),
        "written manifest has errors: {:#?}\n--- written ---\n{written}",
        back.errors
    );
    assert!(
        back.config_eq(&manifest),
        "round trip changed the manifest\n--- written ---\n{written}\n--- first ---\n{manifest:#?}\n--- second ---\n{back:#?}"
    );
    // Writing is a fixed point after one normalization.
    assert_eq!(write(&back), written);

    // Read-modify-write over the original text, unchanged and edited.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_write_over(text, &manifest);
    check_write_over(text, &edited(&manifest));
});

fn check_write_over(original: &str, target: &Manifest) {
    let out = match write_over(original, target) {
        Ok(out) => out,
        Err(e) => panic!("write_over refused an accepted original: {e}"),
    };
    let back = match parse(&out) {
        Ok(back) => back,
        Err(e) => panic!("write_over output rejected: {e}\n--- out ---\n{out}"),
    };
    assert!(
        back.config_eq(target),
        "write_over missed the edit\n--- out ---\n{out}"
    );
}

/// A deterministic edit touching every kind of change: a field, a removal,
/// an addition.
fn edited(m: &Manifest) -> Manifest {
    let mut m = m.clone();
    if let Some(t) = m.triggers.first_mut() {
        t.enabled = !t.enabled;
    }
    m.apps.pop();
    if let Some(c) = m.connectors.first_mut() {
        c.name.push('!');
    }
    if let Some(t) = m.sandbox.templates.first_mut() {
        t.cpu = Some(t.cpu.map_or(1, |c| c % 32 + 1));
    }
    m.env.optional.retain(|n| !n.starts_with('A'));
    if !m.env.required.iter().any(|n| n == "FUZZ_ADDED") {
        m.env.required.push("FUZZ_ADDED".to_owned());
    }
    m.project.description = Some("edited".to_owned());
    m.opencode.config_dir = "edited/dir".to_owned();
    m
}
