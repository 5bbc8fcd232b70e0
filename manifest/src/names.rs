//! Identifier grammars shared by several sections. Hand-written rather than
//! regexes: they are tiny, allocation-free, and cannot fail to compile.

/// The longest name the Secrets Manager accepts.
pub const SECRET_NAME_MAX: usize = 64;

/// The prefix the Secrets Manager reserves for the platform.
pub const RESERVED_SECRET_PREFIX: &str = "KORTIX_";

/// `^[a-z0-9][a-z0-9_-]{0,127}$` — trigger, connector, app and template slugs.
pub fn is_slug(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// `^[A-Z_][A-Z0-9_]*$` — `[env]` names. No length cap at parse time.
pub fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_uppercase() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// `^[A-Z_][A-Z0-9_]{0,63}$` — a name the Secrets Manager can hold.
pub fn is_secret_name(s: &str) -> bool {
    is_env_name(s) && s.len() <= SECRET_NAME_MAX
}

/// `^[A-Za-z_][A-Za-z0-9_]*$` — `[apps.env]` keys (mixed case allowed).
pub fn is_app_env_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(is_slug("a"));
        assert!(is_slug("0daily_digest-2"));
        assert!(is_slug(&"a".repeat(128)));
        assert!(!is_slug(&"a".repeat(129)));
        assert!(!is_slug(""));
        assert!(!is_slug("-a"));
        assert!(!is_slug("_a"));
        assert!(!is_slug("Daily"));
        assert!(!is_slug("a b"));
        assert!(!is_slug("a.b"));
        assert!(!is_slug("é"));
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("DATABASE_URL"));
        assert!(is_env_name("_X1"));
        assert!(is_env_name(&"A".repeat(200)));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("database_url"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }

    #[test]
    fn secret_names_are_capped_at_64() {
        assert!(is_secret_name(&"A".repeat(64)));
        assert!(!is_secret_name(&"A".repeat(65)));
        assert!(!is_secret_name("lower"));
    }

    #[test]
    fn app_env_keys_allow_mixed_case() {
        assert!(is_app_env_key("NEXT_PUBLIC_API_URL"));
        assert!(is_app_env_key("camelCase_1"));
        assert!(is_app_env_key("_x"));
        assert!(!is_app_env_key("1x"));
        assert!(!is_app_env_key("a-b"));
        assert!(!is_app_env_key(""));
    }
}
