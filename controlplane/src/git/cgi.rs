//! Reading the header block of a CGI response (RFC 3875 §6).

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The most header bytes a CGI program may print before its body.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum CgiError {
    #[error("the CGI program ended before finishing its headers")]
    Truncated,
    #[error("the CGI headers exceed {MAX_HEADER_BYTES} bytes")]
    TooLarge,
    #[error("malformed CGI header line {0:?}")]
    Malformed(String),
    #[error("reading the CGI response: {0}")]
    Io(#[from] std::io::Error),
}

/// A parsed CGI header block and the body bytes read past it.
#[derive(Debug)]
pub struct CgiHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body_start: Vec<u8>,
}

/// Reads from `reader` up to the end of the header block.
pub async fn read_head<R: AsyncRead + Unpin>(reader: &mut R) -> Result<CgiHead, CgiError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (head_end, body_start) = loop {
        if let Some(found) = find_blank_line(&buf) {
            break found;
        }
        if buf.len() > MAX_HEADER_BYTES {
            return Err(CgiError::TooLarge);
        }
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Err(CgiError::Truncated);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > MAX_HEADER_BYTES {
        return Err(CgiError::TooLarge);
    }
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    let text = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| CgiError::Malformed(line.to_owned()))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or_default();
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| CgiError::Malformed(line.to_owned()))?;
            continue;
        }
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| CgiError::Malformed(line.to_owned()))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| CgiError::Malformed(line.to_owned()))?;
        headers.append(name, value);
    }
    Ok(CgiHead {
        status,
        headers,
        body_start: buf[body_start..].to_vec(),
    })
}

/// Where the header block ends and the body begins (after `\n\n` or `\r\n\r\n`).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + pos;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some((nl, nl + 2));
        }
        if rest.starts_with(b"\r\n") {
            return Some((nl, nl + 3));
        }
        i = nl + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_status_headers_and_keeps_the_body() {
        let raw = b"Status: 403 Forbidden\r\nContent-Type: text/plain\r\nExpires: Fri, 01 Jan 1980 00:00:00 GMT\r\n\r\nbody bytes";
        let head = read_head(&mut &raw[..]).await.unwrap();
        assert_eq!(head.status, StatusCode::FORBIDDEN);
        assert_eq!(head.headers["content-type"], "text/plain");
        assert_eq!(head.body_start, b"body bytes");

        let raw = b"Content-Type: application/x-git-upload-pack-advertisement\n\n001e# service";
        let head = read_head(&mut &raw[..]).await.unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.body_start, b"001e# service");
    }

    #[tokio::test]
    async fn refuses_bad_heads() {
        assert!(matches!(
            read_head(&mut &b"Content-Type: x\r\n"[..]).await,
            Err(CgiError::Truncated)
        ));
        assert!(matches!(
            read_head(&mut &b"no colon here\n\n"[..]).await,
            Err(CgiError::Malformed(_))
        ));
        assert!(matches!(
            read_head(&mut &b"Status: abc\n\n"[..]).await,
            Err(CgiError::Malformed(_))
        ));
        let huge = format!("X-A: {}\n", "a".repeat(MAX_HEADER_BYTES + 10));
        assert!(matches!(
            read_head(&mut huge.as_bytes()).await,
            Err(CgiError::TooLarge)
        ));
    }
}
