//! Arbitrary bytes into the manifest parser: it must never panic, and
//! whatever it accepts must survive write-then-parse unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = kortix_manifest::parse_bytes(data) else {
        return;
    };
    let _ = manifest.to_json();
    let written = kortix_manifest::write(&manifest);
    let back = match kortix_manifest::parse(&written) {
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
    assert_eq!(kortix_manifest::write(&back), written);
});
