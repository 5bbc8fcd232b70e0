//! `kortix_version`: the one field that can reject a whole manifest.

use toml::Value;

use crate::{ManifestError, SUPPORTED_VERSION};

/// Decodes `kortix_version`. TOML has no null, so "absent" is the null case;
/// absent, `1` and `"1"` are all v1 (older manifests predate the field and
/// some writers quoted it).
pub(crate) fn decode(value: Option<&Value>) -> Result<u32, ManifestError> {
    let Some(value) = value else {
        return Ok(SUPPORTED_VERSION);
    };
    let number = match value {
        Value::Integer(n) => Some(*n),
        // Only the canonical decimal spelling: "01" or " 1" would be a
        // guess, and a wrong guess here misreads a whole manifest.
        Value::String(s) if is_plain_decimal(s) => s.parse::<i64>().ok(),
        Value::String(s) if is_signed_decimal(s) => s.parse::<i64>().ok(),
        _ => None,
    };
    match number {
        Some(n) if n == i64::from(SUPPORTED_VERSION) => Ok(SUPPORTED_VERSION),
        Some(n) if n > i64::from(SUPPORTED_VERSION) => Err(ManifestError::UnsupportedVersion {
            found: value.to_string(),
        }),
        // Too many digits to fit still means "a version from the future".
        None if matches!(value, Value::String(s) if is_plain_decimal_unbounded(s)) => {
            Err(ManifestError::UnsupportedVersion {
                found: value.to_string(),
            })
        }
        _ => Err(ManifestError::InvalidVersion {
            found: value.to_string(),
        }),
    }
}

fn is_plain_decimal(s: &str) -> bool {
    is_plain_decimal_unbounded(s) && s.len() <= 18
}

fn is_plain_decimal_unbounded(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

fn is_signed_decimal(s: &str) -> bool {
    s.strip_prefix('-').is_some_and(is_plain_decimal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        let table: toml::Table = format!("v = {s}").parse().expect("test value");
        table["v"].clone()
    }

    #[test]
    fn absent_one_and_string_one_are_v1() {
        assert_eq!(decode(None), Ok(1));
        assert_eq!(decode(Some(&v("1"))), Ok(1));
        assert_eq!(decode(Some(&v("\"1\""))), Ok(1));
    }

    #[test]
    fn higher_versions_are_unsupported() {
        for s in ["2", "\"2\"", "99", "\"123456789012345678901234567890\""] {
            assert!(
                matches!(
                    decode(Some(&v(s))),
                    Err(ManifestError::UnsupportedVersion { .. })
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn garbage_is_invalid() {
        for s in [
            "0", "-1", "\"abc\"", "1.0", "true", "[1]", "\"01\"", "\" 1\"", "\"\"", "{}",
        ] {
            assert!(
                matches!(
                    decode(Some(&v(s))),
                    Err(ManifestError::InvalidVersion { .. })
                ),
                "{s}"
            );
        }
    }
}
