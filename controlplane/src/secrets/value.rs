//! A decrypted secret value: wiped from memory on drop and never printed.

use zeroize::Zeroizing;

#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The plaintext. Call sites are where secrets leave the control plane; keep them few.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let v = SecretValue::new("hunter2".into());
        assert_eq!(format!("{v:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&v)), "Some(<redacted>)");
        assert_eq!(v.expose(), "hunter2");
    }
}
