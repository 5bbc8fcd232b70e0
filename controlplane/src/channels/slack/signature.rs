//! Slack's request signing: `X-Slack-Signature: v0=<hex HMAC-SHA256 of
//! "v0:<X-Slack-Request-Timestamp>:<raw body>">` under the app's signing secret, and a
//! timestamp no more than five minutes from now (a captured request cannot be replayed later).

use aws_lc_rs::hmac;
use http::HeaderMap;

pub const SIGNATURE_HEADER: &str = "x-slack-signature";
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// How far a request's timestamp may be from now, either way.
pub const MAX_SKEW_SECS: i64 = 5 * 60;

const VERSION: &str = "v0";
/// Hex digits of a full SHA-256 tag.
const HEX_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Slack-Signature or X-Slack-Request-Timestamp")]
    Missing,
    #[error("malformed X-Slack-Request-Timestamp: expected Unix seconds")]
    BadTimestamp,
    #[error("stale request: X-Slack-Request-Timestamp is more than 5 minutes from now")]
    Stale,
    #[error("malformed X-Slack-Signature: expected v0=<64 hex digits>")]
    Malformed,
    #[error("X-Slack-Signature does not match the request")]
    Mismatch,
}

/// Checks a request's headers and raw body against the signing secret at `now_secs`.
pub fn verify_request(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let header = |name| {
        headers
            .get(name)
            .ok_or(SignatureError::Missing)
            .and_then(|v| v.to_str().map_err(|_| SignatureError::Malformed))
    };
    let timestamp = header(TIMESTAMP_HEADER)?;
    let signature = header(SIGNATURE_HEADER)?;
    verify(secret, timestamp, body, signature, now_secs)
}

/// Checks `signature` for `timestamp` and `body`: freshness first, then the tag in constant
/// time.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now_secs: i64,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now_secs - ts).abs() > MAX_SKEW_SECS {
        return Err(SignatureError::Stale);
    }
    let hex_tag = signature
        .trim()
        .strip_prefix("v0=")
        .ok_or(SignatureError::Malformed)?;
    if hex_tag.len() != HEX_LEN {
        return Err(SignatureError::Malformed);
    }
    let tag = hex::decode(hex_tag).map_err(|_| SignatureError::Malformed)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &base_string(timestamp.trim(), body), &tag)
        .map_err(|_| SignatureError::Mismatch)
}

/// `v0=<hex>` for a request: what Slack sends (and what tests sign with).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &base_string(timestamp, body));
    format!("{VERSION}={}", hex::encode(tag.as_ref()))
}

fn base_string(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut base = Vec::with_capacity(VERSION.len() + timestamp.len() + 2 + body.len());
    base.extend_from_slice(VERSION.as_bytes());
    base.push(b':');
    base.extend_from_slice(timestamp.as_bytes());
    base.push(b':');
    base.extend_from_slice(body);
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    // The worked example of Slack's "Verifying requests from Slack" documentation.
    const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const DOC_TIMESTAMP: &str = "1531420618";
    const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const DOC_SIGNATURE: &str =
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const DOC_NOW: i64 = 1_531_420_618;

    #[test]
    fn slack_documented_example() {
        assert_eq!(
            sign(DOC_SECRET.as_bytes(), DOC_TIMESTAMP, DOC_BODY.as_bytes()),
            DOC_SIGNATURE
        );
        verify(
            DOC_SECRET.as_bytes(),
            DOC_TIMESTAMP,
            DOC_BODY.as_bytes(),
            DOC_SIGNATURE,
            DOC_NOW,
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from_static(DOC_TIMESTAMP));
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_static(DOC_SIGNATURE));
        verify_request(
            DOC_SECRET.as_bytes(),
            &headers,
            DOC_BODY.as_bytes(),
            DOC_NOW + 60,
        )
        .unwrap();
    }

    #[test]
    fn refuses_stale_tampered_and_malformed() {
        let (s, ts, b) = (DOC_SECRET.as_bytes(), DOC_TIMESTAMP, DOC_BODY.as_bytes());
        let check = |sig: &str, now: i64| verify(s, ts, b, sig, now);
        assert_eq!(
            check(DOC_SIGNATURE, DOC_NOW + MAX_SKEW_SECS),
            Ok(()),
            "exactly five minutes is still fresh"
        );
        assert_eq!(
            check(DOC_SIGNATURE, DOC_NOW + MAX_SKEW_SECS + 1),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            check(DOC_SIGNATURE, DOC_NOW - MAX_SKEW_SECS - 1),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(s, ts, b"tampered", DOC_SIGNATURE, DOC_NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other secret", ts, b, DOC_SIGNATURE, DOC_NOW),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it breaks the signature.
        assert_eq!(
            verify(s, "1531420619", b, DOC_SIGNATURE, DOC_NOW),
            Err(SignatureError::Mismatch)
        );
        let truncated = &DOC_SIGNATURE[..DOC_SIGNATURE.len() - 2];
        assert_eq!(check(truncated, DOC_NOW), Err(SignatureError::Malformed));
        assert_eq!(
            check(&DOC_SIGNATURE.replace("v0=", "v1="), DOC_NOW),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(&format!("v0={}", "z".repeat(64)), DOC_NOW),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(s, "soon", b, DOC_SIGNATURE, DOC_NOW),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify_request(s, &HeaderMap::new(), b, DOC_NOW),
            Err(SignatureError::Missing)
        );
    }
}
