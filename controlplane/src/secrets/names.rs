//! What a secret may be called and how big it may be.

use super::SecretsError;

/// Largest secret value accepted.
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;
const MAX_NAME_LEN: usize = 64;

/// Variables the sandbox's own processes (the agent, OpenCode, the shell and git they run)
/// depend on: a secret by one of these names would silently replace them.
pub const RESERVED_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "OLDPWD",
    "TMPDIR",
    "TMP",
    "TEMP",
    "IFS",
    "ENV",
    "BASH_ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "NODE_OPTIONS",
    "NODE_PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Prefixes reserved the same way: the platform's own variables, the dynamic linker's, git's
/// (`GIT_DIR`, `GIT_WORK_TREE`, `GIT_SSL_NO_VERIFY`, `GIT_ASKPASS`, `GIT_CONFIG_*`, …),
/// OpenCode's and the XDG base directories (where OpenCode keeps its configuration).
pub const RESERVED_PREFIXES: &[&str] = &["KORTIX_", "LD_", "DYLD_", "GIT_", "OPENCODE_", "XDG_"];

/// Secret names become environment variables: `^[A-Z_][A-Z0-9_]{0,63}$`, and none of
/// [`RESERVED_NAMES`] or [`RESERVED_PREFIXES`].
pub fn validate_secret_name(name: &str) -> Result<(), SecretsError> {
    let invalid = |reason: &str| SecretsError::InvalidName {
        name: crate::store::quoted(name),
        reason: reason.to_string(),
    };
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return Err(invalid("must not be empty"));
    };
    if bytes.len() > MAX_NAME_LEN {
        return Err(invalid("must be at most 64 characters"));
    }
    if !(first.is_ascii_uppercase() || *first == b'_') {
        return Err(invalid("must start with A-Z or '_'"));
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
    {
        return Err(invalid("may contain only A-Z, 0-9 and '_'"));
    }
    if name.starts_with("KORTIX_") {
        return Err(invalid("KORTIX_ is reserved for the platform"));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(invalid(
            "reserved: the sandbox's own environment needs this variable",
        ));
    }
    if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return Err(invalid(&format!(
            "names starting with {prefix} are reserved: they steer the sandbox's own programs"
        )));
    }
    Ok(())
}

pub fn validate_secret_value(name: &str, value: &str) -> Result<(), SecretsError> {
    if value.len() > MAX_SECRET_VALUE_BYTES {
        return Err(SecretsError::TooLarge {
            name: name.to_string(),
            size: value.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_environment_style_names() {
        for ok in [
            "A",
            "_",
            "API_KEY",
            "_PRIVATE",
            "X1",
            "KORTIX",
            "KORTIXX_A",
            &"A".repeat(64),
        ] {
            validate_secret_name(ok).unwrap();
        }
    }

    #[test]
    fn rejects_other_names() {
        for bad in [
            "",
            "1A",
            "api_key",
            "A-B",
            "A B",
            "Ä",
            "A.B",
            &"A".repeat(65),
        ] {
            assert!(
                matches!(
                    validate_secret_name(bad),
                    Err(SecretsError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn kortix_prefix_is_reserved() {
        let err = validate_secret_name("KORTIX_TOKEN").unwrap_err();
        assert!(
            err.to_string()
                .contains("KORTIX_ is reserved for the platform"),
            "{err}"
        );
        assert!(validate_secret_name("KORTIX_").is_err());
    }

    #[test]
    fn environment_the_sandbox_depends_on_is_reserved() {
        for reserved in [
            "PATH",
            "HOME",
            "USER",
            "SHELL",
            "PWD",
            "TMPDIR",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "DYLD_INSERT_LIBRARIES",
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_SSL_NO_VERIFY",
            "GIT_ASKPASS",
            "GIT_CONFIG_GLOBAL",
            "OPENCODE_CONFIG_DIR",
            "NODE_OPTIONS",
            "BASH_ENV",
            "XDG_CONFIG_HOME",
        ] {
            let err = validate_secret_name(reserved).unwrap_err().to_string();
            assert!(err.contains("reserved"), "{reserved}: {err}");
        }
        // Look-alikes stay usable.
        for ok in [
            "GITHUB_TOKEN",
            "GITLAB_TOKEN",
            "PATHS",
            "HOME_URL",
            "LDAP_PASSWORD",
        ] {
            validate_secret_name(ok).unwrap();
        }
    }

    #[test]
    fn errors_quote_at_most_a_short_name() {
        let err = validate_secret_name(&"A".repeat(100_000))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200, "{} bytes", err.len());
        assert!(err.contains("(100000 bytes)"), "{err}");
    }

    #[test]
    fn caps_value_size() {
        validate_secret_value("A", &"x".repeat(MAX_SECRET_VALUE_BYTES)).unwrap();
        assert!(matches!(
            validate_secret_value("A", &"x".repeat(MAX_SECRET_VALUE_BYTES + 1)),
            Err(SecretsError::TooLarge { .. })
        ));
    }
}
