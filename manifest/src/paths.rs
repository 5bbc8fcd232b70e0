//! Repo-relative paths and URLs as the manifest allows them.

/// Why a path is not repo-relative, or `None` when it is.
///
/// A path must stay inside the checkout: it may not be empty, absolute
/// (`/x`, `\x`, `C:\x`, `C:/x`), contain a `..` component (either
/// separator), or contain NUL. `.` and `./x` are fine.
pub fn repo_relative_problem(path: &str) -> Option<&'static str> {
    if path.trim().is_empty() {
        return Some("is empty");
    }
    if path.contains('\0') {
        return Some("contains a NUL byte");
    }
    let b = path.as_bytes();
    let windows_drive = b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':';
    if path.starts_with('/') || path.starts_with('\\') || windows_drive {
        return Some("must be repo-relative, not absolute");
    }
    if path.split(['/', '\\']).any(|part| part == "..") {
        return Some("must not contain `..`");
    }
    None
}

/// An `http://` or `https://` URL with a host. Deliberately shallow: the
/// manifest only has to catch typos, the connector runtime does the rest.
pub fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    url_rest_ok(rest)
}

/// Like [`is_http_url`] but HTTPS only.
pub fn is_https_url(s: &str) -> bool {
    url_rest_ok(s.strip_prefix("https://"))
}

fn url_rest_ok(rest: Option<&str>) -> bool {
    let Some(rest) = rest else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    !host.is_empty() && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Whether a value looks like a URL (has a scheme) rather than a path.
pub fn looks_like_url(s: &str) -> bool {
    s.contains("://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_relative_paths() {
        for ok in [".kortix/Dockerfile", "./Dockerfile", ".", "a/b..c/d", "..a"] {
            assert_eq!(repo_relative_problem(ok), None, "{ok}");
        }
        for bad in [
            "", "  ", "/etc/x", "\\x", "C:\\x", "c:/x", "../x", "a/../b", "a/..", "a\\..\\b",
            "a\0b",
        ] {
            assert!(repo_relative_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn urls() {
        assert!(is_http_url("https://api.example.com/v1"));
        assert!(is_http_url("http://localhost:8080"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("https://"));
        assert!(!is_http_url("https:// x"));
        assert!(!is_http_url("example.com"));
        assert!(is_https_url("https://x/y.tar.gz"));
        assert!(!is_https_url("http://x/y.tar.gz"));
    }
}
