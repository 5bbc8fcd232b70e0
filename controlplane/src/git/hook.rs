//! The `pre-receive` hook that enforces push scopes.
//!
//! Enforcing in a hook (rather than by parsing the push in the proxy) means git itself reports
//! the reason to the pusher as `remote: ...` lines and rejects the whole push atomically: a
//! refused push changes no ref. The hook reads its rules from environment variables that the
//! HTTP handler sets per request; unknown or missing values refuse everything.

use std::{
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::Path,
};

use super::access::PushScope;

/// Names the push scope: `any-non-default` (any ref but the default branch and `refs/kortix/`)
/// or `branch:<name>` (that branch and the session's work-in-progress ref
/// `refs/kortix/wip/<name>`); anything else refuses.
pub const ENV_PUSH_SCOPE: &str = "KORTIX_PUSH_SCOPE";
/// The default branch's short name, which no push may touch.
pub const ENV_DEFAULT_BRANCH: &str = "KORTIX_DEFAULT_BRANCH";

pub const DEFAULT_BRANCH_REFUSED: &str = "pushes to the default branch are refused: open a change request (kortix cr open) to land work there";

const PRE_RECEIVE: &str = r#"#!/bin/sh
# Written by the Kortix control plane (rewritten on every start; edits are lost).
# Reads "<old> <new> <ref>" lines; any refused ref fails the whole push.
scope="${KORTIX_PUSH_SCOPE:-}"
default_branch="${KORTIX_DEFAULT_BRANCH:-}"
if [ -z "$default_branch" ]; then
    echo "push refused: the server did not name the default branch" >&2
    exit 1
fi
status=0
while read -r old new ref; do
    if [ "$ref" = "refs/heads/$default_branch" ]; then
        printf '%s\n' "__DEFAULT_REFUSED__ (refusing $ref)" >&2
        status=1
        continue
    fi
    case "$scope" in
        any-non-default)
            case "$ref" in
                refs/kortix/*)
                    printf '%s\n' "refs/kortix/ is written only by sessions' agents; refusing $ref" >&2
                    status=1
                    ;;
            esac
            ;;
        branch:?*)
            allowed="${scope#branch:}"
            if [ "$ref" != "refs/heads/$allowed" ] && [ "$ref" != "refs/kortix/wip/$allowed" ]; then
                printf '%s\n' "this token may push only to branch $allowed (refs/heads/$allowed) and its work in progress (refs/kortix/wip/$allowed); refusing $ref" >&2
                status=1
            fi
            ;;
        *)
            printf '%s\n' "this token may not push; refusing $ref" >&2
            status=1
            ;;
    esac
done
exit $status
"#;

/// Writes the hooks into `dir` (created if needed), replacing older versions atomically.
pub fn install_hooks(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let script = PRE_RECEIVE.replace("__DEFAULT_REFUSED__", DEFAULT_BRANCH_REFUSED);
    let target = dir.join("pre-receive");
    let temp = dir.join(format!(".pre-receive.{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(script.as_bytes())?;
        file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// The environment the hook reads for a request with `scope` on a repo whose default branch
/// is `default_branch`.
pub fn hook_env(scope: &PushScope, default_branch: &str) -> [(&'static str, String); 2] {
    let scope = match scope {
        PushScope::NonDefaultRefs => "any-non-default".to_owned(),
        PushScope::OnlyBranch(branch) => format!("branch:{branch}"),
        PushScope::None => "none".to_owned(),
    };
    [
        (ENV_PUSH_SCOPE, scope),
        (ENV_DEFAULT_BRANCH, default_branch.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    const ZERO: &str = "0000000000000000000000000000000000000000";
    const A: &str = "1111111111111111111111111111111111111111";

    fn run(dir: &Path, scope: &PushScope, default: &str, refs: &[&str]) -> (bool, String) {
        let mut child = Command::new(dir.join("pre-receive"))
            .envs(hook_env(scope, default))
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let input: String = refs.iter().map(|r| format!("{ZERO} {A} {r}\n")).collect();
        // The hook may refuse before reading its input; a broken pipe is then expected.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn enforces_scopes() {
        let dir = tempfile::tempdir().unwrap();
        install_hooks(dir.path()).unwrap();
        // Installing twice replaces the script in place.
        install_hooks(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("pre-receive"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let people = PushScope::NonDefaultRefs;
        let session = PushScope::OnlyBranch("sess-1".into());
        assert!(
            run(
                dir.path(),
                &people,
                "main",
                &["refs/heads/x", "refs/tags/v1"]
            )
            .0
        );
        // A session's saved work is its agent's to write, not people's.
        let (ok, err) = run(dir.path(), &people, "main", &["refs/kortix/wip/sess-1"]);
        assert!(!ok && err.contains("only by sessions"), "{err}");
        let (ok, err) = run(
            dir.path(),
            &people,
            "main",
            &["refs/heads/x", "refs/heads/main"],
        );
        assert!(!ok);
        assert!(err.contains(DEFAULT_BRANCH_REFUSED), "{err}");
        assert!(run(dir.path(), &session, "main", &["refs/heads/sess-1"]).0);
        // A session saves its uncommitted work beside its branch, and only its own.
        assert!(
            run(
                dir.path(),
                &session,
                "main",
                &["refs/heads/sess-1", "refs/kortix/wip/sess-1"]
            )
            .0
        );
        for other in [
            "refs/kortix/wip/sess-2",
            "refs/kortix/wip/sess-1/x",
            "refs/kortix/sess-1",
        ] {
            let (ok, err) = run(dir.path(), &session, "main", &[other]);
            assert!(
                !ok && err.contains("only to branch sess-1"),
                "{other}: {err}"
            );
        }
        let (ok, err) = run(dir.path(), &session, "main", &["refs/heads/sess-2"]);
        assert!(!ok);
        assert!(err.contains("only to branch sess-1"), "{err}");
        let (ok, err) = run(dir.path(), &session, "main", &["refs/heads/main"]);
        assert!(!ok && err.contains(DEFAULT_BRANCH_REFUSED), "{err}");
        let (ok, _) = run(dir.path(), &PushScope::None, "main", &["refs/heads/x"]);
        assert!(!ok);
        let (ok, err) = run(dir.path(), &people, "", &["refs/heads/x"]);
        assert!(!ok && err.contains("default branch"), "{err}");
    }
}
