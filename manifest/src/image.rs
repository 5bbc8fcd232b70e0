//! Docker image references and the "must be pinned" rule for
//! `[[sandbox.templates]] image`.
//!
//! The grammar follows the distribution reference
//! (`[registry[:port]/]path[:tag][@algo:hex]`). The subtle part is the
//! registry port: in `localhost:5000/img` the `:5000` is a port, not a tag,
//! so the tag is only ever looked for after the last `/`.

/// A parsed image reference, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// `host[:port]`, when the first component names a registry.
    pub registry: Option<&'a str>,
    /// The repository path (`library/python`, `python`, `org/team/img`).
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    /// `algorithm:hex`, without the `@`.
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    /// Parses a reference, or says why it is malformed.
    pub fn parse(reference: &'a str) -> Result<Self, String> {
        if reference.is_empty() {
            return Err("image reference is empty".to_owned());
        }
        if reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("image reference {reference:?} contains whitespace"));
        }
        let (name_tag, digest) = match reference.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (reference, None),
        };
        if let Some(d) = digest {
            check_digest(d)?;
        }
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            check_tag(t)?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                check_registry(first)?;
                (Some(first), rest)
            }
            _ => (None, name),
        };
        if repository.is_empty() {
            return Err(format!("image reference {reference:?} has no repository"));
        }
        for component in repository.split('/') {
            if !is_path_component(component) {
                return Err(format!(
                    "image reference {reference:?}: {component:?} is not a valid repository component (lowercase letters, digits, and . _ - separators)"
                ));
            }
        }
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Whether a rebuild from this reference always gets the same image
    /// (as far as the manifest can tell): a digest, or a tag other than
    /// `latest`.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some() || self.tag.is_some_and(|t| !t.eq_ignore_ascii_case("latest"))
    }
}

/// Why `reference` is not acceptable as a template image, or `None`.
pub(crate) fn pinned_problem(reference: &str) -> Option<String> {
    match ImageRef::parse(reference) {
        Err(e) => Some(e),
        Ok(r) if r.is_pinned() => None,
        Ok(r) if r.tag.is_some() => Some(format!(
            "image {reference:?} uses `latest`, which is not a pin: use a version tag or a digest (@sha256:…)"
        )),
        Ok(_) => Some(format!(
            "image {reference:?} is not pinned: add a tag (e.g. python:3.12-slim) or a digest (@sha256:…)"
        )),
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    // [\w][\w.-]{0,127}
    let b = tag.as_bytes();
    let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    if !b.is_empty()
        && b.len() <= 128
        && word(&b[0])
        && b[1..].iter().all(|c| word(c) || *c == b'.' || *c == b'-')
    {
        Ok(())
    } else {
        Err(format!("image tag {tag:?} is not valid"))
    }
}

fn check_digest(digest: &str) -> Result<(), String> {
    let bad = || Err(format!("image digest {digest:?} is not algorithm:hex"));
    let Some((algo, hex)) = digest.split_once(':') else {
        return bad();
    };
    let algo_ok = !algo.is_empty()
        && algo.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let len_ok = match algo {
        "sha256" => hex.len() == 64,
        "sha512" => hex.len() == 128,
        _ => true,
    };
    if algo_ok && hex_ok && len_ok {
        Ok(())
    } else {
        bad()
    }
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!("image registry {registry:?} is not host[:port]"))
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pinned_images_are_accepted() {
        for ok in [
            "python:3.12-slim".to_owned(),
            "library/python:3.12".to_owned(),
            "ghcr.io/org/team/img:v1.2.3".to_owned(),
            "localhost:5000/img:1.0".to_owned(),
            "registry.example.com:443/a/b:2024_01".to_owned(),
            format!("python@{SHA}"),
            format!("localhost:5000/img@{SHA}"),
            format!("python:latest@{SHA}"),
            "my-org/my__img:1".to_owned(),
        ] {
            assert_eq!(pinned_problem(&ok), None, "{ok}");
        }
    }

    #[test]
    fn bare_and_latest_are_rejected() {
        for bad in [
            "python",
            "python:latest",
            "python:LATEST",
            "ghcr.io/org/img",
            "localhost:5000/img",
            "localhost:5000/img:latest",
        ] {
            assert!(pinned_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn registry_port_is_not_a_tag() {
        let r = ImageRef::parse("localhost:5000/img").unwrap();
        assert_eq!(r.registry, Some("localhost:5000"));
        assert_eq!(r.repository, "img");
        assert_eq!(r.tag, None);
        let r = ImageRef::parse("localhost:5000/img:7").unwrap();
        assert_eq!(r.tag, Some("7"));
    }

    #[test]
    fn malformed_references_are_rejected() {
        for bad in [
            "",
            "Python:3",
            "python:",
            "python:3 slim",
            "python@sha256:abc",
            "python@md5",
            "/python:3",
            "a//b:1",
            "bad_host:x/img:1",
            "-a:1",
            "a-:1",
            "img:-x",
        ] {
            assert!(pinned_problem(bad).is_some(), "{bad:?}");
        }
    }
}
