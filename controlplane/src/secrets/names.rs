//! What a secret may be called and how big it may be.

use super::SecretsError;

/// Largest secret value accepted.
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;
const MAX_NAME_LEN: usize = 64;

/// Secret names become environment variables: `^[A-Z_][A-Z0-9_]{0,63}$`, and `KORTIX_*` is
/// kept for the platform's own variables.
pub fn validate_secret_name(name: &str) -> Result<(), SecretsError> {
    let invalid = |reason| SecretsError::InvalidName {
        name: name.to_string(),
        reason,
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
    fn caps_value_size() {
        validate_secret_value("A", &"x".repeat(MAX_SECRET_VALUE_BYTES)).unwrap();
        assert!(matches!(
            validate_secret_value("A", &"x".repeat(MAX_SECRET_VALUE_BYTES + 1)),
            Err(SecretsError::TooLarge { .. })
        ));
    }
}
