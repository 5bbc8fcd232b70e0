//! Validation of the names that become paths or refs inside the repository store.
//!
//! Project ids become directory names and branch names become ref files, so both are checked
//! before they touch the filesystem: a bad name must be an error, never an escape from the
//! repository root.

use gix::bstr::ByteSlice;

/// The longest branch name we accept; git itself has no limit, but ref files live on
/// filesystems whose path components are bounded.
pub const MAX_BRANCH_LEN: usize = 200;

/// The longest project id we accept as a repository directory name.
pub const MAX_PROJECT_ID_LEN: usize = 128;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid branch name {name:?}: {reason}")]
    Branch { name: String, reason: String },
    #[error("invalid reference name {name:?}: {reason}")]
    Ref { name: String, reason: String },
    #[error("invalid project id {id:?}: {reason}")]
    ProjectId { id: String, reason: String },
}

/// Checks a short branch name (`main`, `feature/x`) by git's `check-ref-format --branch` rules
/// and returns its full ref name (`refs/heads/main`).
pub fn branch_ref(branch: &str) -> Result<String, NameError> {
    let refuse = |reason: &str| NameError::Branch {
        name: branch.to_owned(),
        reason: reason.to_owned(),
    };
    if branch.is_empty() {
        return Err(refuse("it is empty"));
    }
    if branch.len() > MAX_BRANCH_LEN {
        return Err(refuse(&format!("longer than {MAX_BRANCH_LEN} bytes")));
    }
    // git refuses these for branches even though they are valid ref components.
    if branch.starts_with('-') {
        return Err(refuse("it starts with '-'"));
    }
    if branch == "HEAD" || branch == "@" {
        return Err(refuse("'HEAD' and '@' are reserved"));
    }
    if branch.starts_with("refs/") {
        return Err(refuse("give the short branch name, without 'refs/'"));
    }
    let full = format!("refs/heads/{branch}");
    gix::validate::reference::branch_name(full.as_bytes().as_bstr())
        .map_err(|e| refuse(&e.to_string()))?;
    check_components(&full).map_err(|reason| refuse(&reason))?;
    Ok(full)
}

/// Checks a full ref name (`refs/heads/x`, `refs/tags/v1`). Only names under `refs/` are
/// accepted so that callers can never rewrite `HEAD` or files beside the refs.
pub fn full_ref(name: &str) -> Result<(), NameError> {
    let refuse = |reason: &str| NameError::Ref {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if !name.starts_with("refs/") {
        return Err(refuse("it must start with 'refs/'"));
    }
    if name.len() > MAX_BRANCH_LEN + "refs/heads/".len() {
        return Err(refuse("it is too long"));
    }
    gix::validate::reference::name(name.as_bytes().as_bstr())
        .map_err(|e| refuse(&e.to_string()))?;
    check_components(name).map_err(|reason| refuse(&reason))
}

/// Per-component rules of `git check-ref-format` that are cheap to state once more here, so
/// the result does not depend on the exact coverage of the validator in a given gix release.
fn check_components(full: &str) -> Result<(), String> {
    for component in full.split('/') {
        if component.is_empty() {
            return Err("it has an empty path component".into());
        }
        if component.starts_with('.') {
            return Err(format!("component {component:?} starts with '.'"));
        }
        if component.ends_with(".lock") {
            return Err(format!("component {component:?} ends with '.lock'"));
        }
    }
    if full
        .bytes()
        .any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b))
    {
        return Err("it contains a control character, space or one of ~^:?*[\\".into());
    }
    Ok(())
}

/// Checks that a project id is a single safe path component: ASCII letters, digits, `-` and
/// `_`, not starting with `-`.
pub fn project_id(id: &str) -> Result<(), NameError> {
    let refuse = |reason: &str| NameError::ProjectId {
        id: id.to_owned(),
        reason: reason.to_owned(),
    };
    if id.is_empty() {
        return Err(refuse("it is empty"));
    }
    if id.len() > MAX_PROJECT_ID_LEN {
        return Err(refuse(&format!("longer than {MAX_PROJECT_ID_LEN} bytes")));
    }
    if id.starts_with('-') {
        return Err(refuse("it starts with '-'"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(refuse(
            "only ASCII letters, digits, '-' and '_' are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_branches() {
        assert_eq!(branch_ref("main").unwrap(), "refs/heads/main");
        assert_eq!(branch_ref("feature/x-1").unwrap(), "refs/heads/feature/x-1");
        assert_eq!(
            branch_ref("01J9ZK3V2Q8XW").unwrap(),
            "refs/heads/01J9ZK3V2Q8XW"
        );
    }

    #[test]
    fn refuses_bad_branches() {
        for bad in [
            "",
            "-x",
            "HEAD",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            ".a",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            "a/",
            "/a",
            "a//b",
            "a@{1}",
            "@",
            "a.",
            "refs/heads/x",
            "../../etc",
            "a\nb",
            "a\u{7f}",
        ] {
            assert!(branch_ref(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(branch_ref(&"x".repeat(MAX_BRANCH_LEN + 1)).is_err());
    }

    #[test]
    fn full_refs_must_live_under_refs() {
        assert!(full_ref("refs/heads/main").is_ok());
        assert!(full_ref("refs/tags/v1.0").is_ok());
        assert!(full_ref("HEAD").is_err());
        assert!(full_ref("config").is_err());
        assert!(full_ref("refs/heads/../../config").is_err());
    }

    #[test]
    fn project_ids_are_single_components() {
        assert!(project_id("0193a7c2-aaaa-7bbb-8ccc-1234567890ab").is_ok());
        assert!(project_id("proj_1").is_ok());
        for bad in ["", "..", "a/b", "a.git", "-a", "a b", "ü"] {
            assert!(project_id(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
