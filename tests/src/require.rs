//! Tests that need something of the machine — PostgreSQL, Linux user namespaces — skip
//! loudly where it is missing on a developer's machine, and fail under `CI=true`: there, a
//! test that passes without checking anything would hide a broken setup.

/// Whether this run is CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// `what` is unavailable for `reason`: fails the test under CI, otherwise says the test is
/// skipped (the caller then returns without checking anything).
#[track_caller]
pub fn unavailable(what: &str, reason: &str) {
    assert!(
        !in_ci(),
        "{what} is required under CI=true but unavailable: {reason}"
    );
    eprintln!("SKIPPED ({what} unavailable): {reason}");
}
