//! Token formats. Every Kortix token is a kind prefix plus 32 random bytes in unpadded
//! base64url, so a token's purpose is visible at a glance (and to secret scanners) and a
//! malformed one is rejected before any lookup. Only the SHA-256 of a token is stored.

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::AuthError;

/// Random bytes in every token.
const TOKEN_BYTES: usize = 32;
/// Unpadded base64 of 32 bytes.
const TOKEN_BODY_LEN: usize = 43;
/// Longest authorization value considered at all.
pub const MAX_AUTHORIZATION_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A person's API token (`kxp_`).
    Person,
    /// A session's short-lived git token (`kxg_`).
    SessionGit,
    /// A session agent's one-time enrollment token (`kxb_`).
    Bootstrap,
    /// A session agent's single-use renewal secret (`kxr_`): re-enrollment after the agent
    /// restarted inside its live sandbox.
    Renewal,
}

impl TokenKind {
    pub const ALL: [TokenKind; 4] = [
        TokenKind::Person,
        TokenKind::SessionGit,
        TokenKind::Bootstrap,
        TokenKind::Renewal,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Person => "kxp_",
            TokenKind::SessionGit => "kxg_",
            TokenKind::Bootstrap => "kxb_",
            TokenKind::Renewal => "kxr_",
        }
    }

    /// The kind a well-formed token belongs to.
    pub fn of(token: &str) -> Result<TokenKind, AuthError> {
        let kind = TokenKind::ALL
            .into_iter()
            .find(|k| token.starts_with(k.prefix()))
            .ok_or(AuthError::Malformed(
                "unknown token prefix (expected kxp_, kxg_, kxb_ or kxr_)",
            ))?;
        let body = &token[kind.prefix().len()..];
        if body.len() != TOKEN_BODY_LEN {
            return Err(AuthError::Malformed("wrong token length"));
        }
        if !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AuthError::Malformed(
                "token has characters outside base64url",
            ));
        }
        Ok(kind)
    }
}

impl std::fmt::Display for TokenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenKind::Person => "personal API token",
            TokenKind::SessionGit => "session git token",
            TokenKind::Bootstrap => "bootstrap token",
            TokenKind::Renewal => "agent renewal secret",
        })
    }
}

/// A fresh token of the given kind.
pub fn generate_token(kind: TokenKind) -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    // aws-lc's RNG only fails if the OS has no entropy source, where nothing can go on.
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random number generator failed");
    let mut token = String::with_capacity(kind.prefix().len() + TOKEN_BODY_LEN);
    token.push_str(kind.prefix());
    URL_SAFE_NO_PAD.encode_string(bytes, &mut token);
    token
}

/// What the store keeps of a token: lowercase hex SHA-256 of the whole token text.
pub fn hash_token(token: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

/// Checks that `token` is a well-formed token of kind `kind`.
pub fn check_token_format(token: &str, kind: TokenKind) -> Result<(), AuthError> {
    let found = TokenKind::of(token)?;
    if found != kind {
        return Err(AuthError::WrongKind {
            expected: kind,
            found,
        });
    }
    Ok(())
}

/// The token of an `authorization: Bearer <token>` value. The scheme is case-insensitive;
/// the token must be a well-formed Kortix token of any kind.
pub fn parse_bearer(value: &str) -> Result<&str, AuthError> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(AuthError::Malformed("authorization value too long"));
    }
    let (scheme, rest) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::Malformed("expected \"Bearer <token>\""))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("expected the Bearer scheme"));
    }
    let token = rest.trim_start();
    TokenKind::of(token)?;
    Ok(token)
}

/// The token carried by an HTTP `authorization` header on the git endpoint: either
/// `Bearer <token>` or `Basic base64(user:token)` as git sends it (the user is ignored).
pub fn parse_git_authorization(value: &str) -> Result<String, AuthError> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(AuthError::Malformed("authorization value too long"));
    }
    let (scheme, rest) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::Malformed("expected \"Basic …\" or \"Bearer …\""))?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return parse_bearer(value).map(str::to_string);
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::Malformed("expected the Basic or Bearer scheme"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| AuthError::Malformed("Basic credentials are not base64"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| AuthError::Malformed("Basic credentials are not UTF-8"))?;
    let (_user, token) = decoded
        .split_once(':')
        .ok_or(AuthError::Malformed("Basic credentials lack a password"))?;
    TokenKind::of(token)?;
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        for kind in TokenKind::ALL {
            let a = generate_token(kind);
            let b = generate_token(kind);
            assert_ne!(a, b);
            assert_eq!(a.len(), 4 + TOKEN_BODY_LEN);
            assert!(a.starts_with(kind.prefix()));
            assert_eq!(TokenKind::of(&a).unwrap(), kind);
            check_token_format(&a, kind).unwrap();
        }
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let t = generate_token(TokenKind::Person);
        assert_eq!(hash_token(&t).len(), 64);
        assert_ne!(
            hash_token(&t),
            hash_token(&generate_token(TokenKind::Person))
        );
    }

    #[test]
    fn wrong_kind_is_refused() {
        let git = generate_token(TokenKind::SessionGit);
        assert!(matches!(
            check_token_format(&git, TokenKind::Bootstrap),
            Err(AuthError::WrongKind {
                expected: TokenKind::Bootstrap,
                found: TokenKind::SessionGit
            })
        ));
    }

    #[test]
    fn parses_bearer_values() {
        let t = generate_token(TokenKind::Person);
        assert_eq!(parse_bearer(&format!("Bearer {t}")).unwrap(), t);
        assert_eq!(parse_bearer(&format!("bearer   {t} ")).unwrap(), t);
        let g = generate_token(TokenKind::SessionGit);
        assert_eq!(parse_bearer(&format!("BEARER {g}")).unwrap(), g);
    }

    #[test]
    fn rejects_malformed_bearer_values() {
        let t = generate_token(TokenKind::Person);
        let body = &t[4..];
        let cases = [
            String::new(),
            "Bearer".to_string(),
            t.clone(),
            format!("Basic {t}"),
            format!("Bearer xyz_{body}"),
            format!("Bearer {}", &t[..t.len() - 1]),
            format!("Bearer {t}A"),
            format!("Bearer kxp_{}+", &body[..42]),
            format!("Bearer kxp_{}=", &body[..42]),
            format!("Bearer {t} extra"),
            format!("Bearer {}", "a".repeat(300)),
            format!("Bearer {t}{}", " ".repeat(300)),
        ];
        for case in cases {
            assert!(
                matches!(parse_bearer(&case), Err(AuthError::Malformed(_))),
                "accepted {case:?}"
            );
        }
    }

    #[test]
    fn parses_git_basic_credentials() {
        let g = generate_token(TokenKind::SessionGit);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-token:{g}"));
        assert_eq!(
            parse_git_authorization(&format!("Basic {basic}")).unwrap(),
            g
        );
        assert_eq!(parse_git_authorization(&format!("Bearer {g}")).unwrap(), g);
        let bad = base64::engine::general_purpose::STANDARD.encode("user:password");
        assert!(parse_git_authorization(&format!("Basic {bad}")).is_err());
        assert!(parse_git_authorization("Basic !!!").is_err());
        assert!(parse_git_authorization("Digest abc").is_err());
    }
}
