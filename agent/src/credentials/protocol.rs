//! git's credential-helper wire format: `key=value` lines ending at a blank line or EOF.

use std::collections::BTreeMap;

/// Input larger than this is refused (git sends a few short lines).
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
const MAX_LINES: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("credential input exceeds {MAX_INPUT_BYTES} bytes")]
    TooLarge,
    #[error("credential input has more than {MAX_LINES} lines")]
    TooManyLines,
    #[error("credential line {0} is not key=value")]
    BadLine(usize),
    #[error("credential input is not UTF-8")]
    NotUtf8,
}

/// The attributes of one request or answer (later duplicates win, as in git; `wwwauth[]` and
/// other array keys keep their last value, which is all the agent needs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes(pub BTreeMap<String, String>);

impl Attributes {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.0.insert(key.to_owned(), value.into());
    }

    /// Parses up to the first blank line.
    pub fn parse(input: &[u8]) -> Result<Attributes, ProtocolError> {
        if input.len() > MAX_INPUT_BYTES {
            return Err(ProtocolError::TooLarge);
        }
        let text = std::str::from_utf8(input).map_err(|_| ProtocolError::NotUtf8)?;
        let mut map = BTreeMap::new();
        for (i, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                break;
            }
            if i >= MAX_LINES {
                return Err(ProtocolError::TooManyLines);
            }
            let (k, v) = line.split_once('=').ok_or(ProtocolError::BadLine(i + 1))?;
            if k.is_empty() {
                return Err(ProtocolError::BadLine(i + 1));
            }
            map.insert(k.to_owned(), v.to_owned());
        }
        Ok(Attributes(map))
    }

    /// Serializes, skipping values that would break the line format, with the closing blank
    /// line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            if k.contains(['\n', '=', '\0']) || v.contains(['\n', '\0']) {
                continue;
            }
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }
}

/// True when `input` holds a complete request (a blank line was seen).
pub fn is_complete(input: &[u8]) -> bool {
    input.starts_with(b"\n")
        || input.windows(2).any(|w| w == b"\n\n")
        || input.windows(4).any(|w| w == b"\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_git_request() {
        let a = Attributes::parse(b"protocol=https\nhost=cp.example:8443\npath=git/p.git\nwwwauth[]=Basic realm=\"x\"\n\nignored=1\n").unwrap();
        assert_eq!(a.get("protocol"), Some("https"));
        assert_eq!(a.get("host"), Some("cp.example:8443"));
        assert_eq!(a.get("path"), Some("git/p.git"));
        assert_eq!(a.get("wwwauth[]"), Some("Basic realm=\"x\""));
        assert_eq!(a.get("ignored"), None);
        assert_eq!(Attributes::parse(b"").unwrap(), Attributes::default());
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(
            Attributes::parse(b"protocol\n"),
            Err(ProtocolError::BadLine(1))
        );
        assert_eq!(Attributes::parse(b"=x\n"), Err(ProtocolError::BadLine(1)));
        assert_eq!(
            Attributes::parse(&vec![b'a'; MAX_INPUT_BYTES + 1]),
            Err(ProtocolError::TooLarge)
        );
        assert_eq!(
            Attributes::parse(&[0xff, b'=', b'\n']),
            Err(ProtocolError::NotUtf8)
        );
        let many = "a=b\n".repeat(300);
        assert_eq!(
            Attributes::parse(many.as_bytes()),
            Err(ProtocolError::TooManyLines)
        );
    }

    #[test]
    fn serializes_and_drops_line_breaking_values() {
        let mut a = Attributes::default();
        a.set("username", "x-token");
        a.set("password", "p=w");
        a.set("evil", "a\nhost=other");
        assert_eq!(a.to_bytes(), b"password=p=w\nusername=x-token\n\n");
        assert!(is_complete(b"a=b\n\n"));
        assert!(is_complete(b"\n"));
        assert!(!is_complete(b"a=b\n"));
    }
}
