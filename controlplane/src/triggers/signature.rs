//! Webhook signatures: HMAC-SHA256 over the raw request body, sent as
//! `X-Kortix-Signature: sha256=<hex>` or GitHub's `X-Hub-Signature-256: sha256=<hex>`.

use aws_lc_rs::hmac;
use http::HeaderMap;

pub const KORTIX_SIGNATURE_HEADER: &str = "x-kortix-signature";
pub const GITHUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";

const PREFIX: &str = "sha256=";
/// Hex digits of a full SHA-256 tag; anything longer is not a signature.
const MAX_HEX_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature: send X-Kortix-Signature or X-Hub-Signature-256")]
    Missing,
    #[error("malformed signature: expected sha256=<hex>")]
    Malformed,
    #[error("signature does not match the body")]
    Mismatch,
}

/// The signature header's value. Kortix's own header wins when both are present, so a
/// proxy that adds GitHub's header cannot shadow it.
pub fn from_headers(headers: &HeaderMap) -> Result<&str, SignatureError> {
    let value = headers
        .get(KORTIX_SIGNATURE_HEADER)
        .or_else(|| headers.get(GITHUB_SIGNATURE_HEADER))
        .ok_or(SignatureError::Missing)?;
    value.to_str().map_err(|_| SignatureError::Malformed)
}

/// Checks `sha256=<hex>` against the body in constant time. A truncated tag is a mismatch,
/// never a prefix match.
pub fn verify(secret: &[u8], body: &[u8], header_value: &str) -> Result<(), SignatureError> {
    let value = header_value.trim();
    let hex_tag = value
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .map(|_| &value[PREFIX.len()..])
        .ok_or(SignatureError::Malformed)?;
    if hex_tag.len() > MAX_HEX_LEN {
        return Err(SignatureError::Mismatch);
    }
    let tag = hex::decode(hex_tag).map_err(|_| SignatureError::Malformed)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, body, &tag).map_err(|_| SignatureError::Mismatch)
}

/// `sha256=<hex>` for a body: what a sender puts in the signature header.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("{PREFIX}{}", hex::encode(hmac::sign(&key, body).as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn github_documented_example() {
        // The example in GitHub's "Validating webhook deliveries" documentation.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(b"It's a Secret to Everybody", b"Hello, World!"), sig);
        verify(b"It's a Secret to Everybody", b"Hello, World!", sig).unwrap();
    }

    #[test]
    fn rejects_wrong_truncated_and_malformed() {
        let good = sign(b"k", b"body");
        assert_eq!(verify(b"k", b"body", &good), Ok(()));
        assert_eq!(
            verify(b"other", b"body", &good),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"k", b"body!", &good), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(b"k", b"body", &good[..good.len() - 2]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", b"body", "sha256="),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", b"body", &format!("{good}00")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", b"body", &good[PREFIX.len()..]),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"k", b"body", "sha1=abcd"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"k", b"body", "sha256=xyz"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"k", b"body", "sha256=abc"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(verify(b"k", b"body", "é"), Err(SignatureError::Malformed));
        assert_eq!(
            verify(
                b"k",
                b"body",
                &good.to_uppercase().replacen("SHA256", "sha256", 1)
            ),
            Ok(())
        );
    }

    #[test]
    fn header_precedence() {
        let mut headers = HeaderMap::new();
        assert_eq!(from_headers(&headers), Err(SignatureError::Missing));
        headers.insert(
            GITHUB_SIGNATURE_HEADER,
            HeaderValue::from_static("sha256=aa"),
        );
        assert_eq!(from_headers(&headers), Ok("sha256=aa"));
        headers.insert(
            KORTIX_SIGNATURE_HEADER,
            HeaderValue::from_static("sha256=bb"),
        );
        assert_eq!(from_headers(&headers), Ok("sha256=bb"));
    }
}
