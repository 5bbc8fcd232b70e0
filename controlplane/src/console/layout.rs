//! HTML escaping, the frame around every page and the headers every response carries.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{Html, Response};

/// Scripts only from this origin, no inline code, no framing, forms only back here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `text` safe inside HTML text and double-quoted attributes. Carriage returns become
/// entities: Server-Sent Events cannot carry them raw.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// `segment` for a URL path.
pub fn url_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The first eight characters of an id, as people quote it.
pub fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// A Unix time in milliseconds as UTC, to the second.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

/// The signed-in part of the header: who may sign out (with the form's CSRF token).
pub struct Chrome<'a> {
    pub csrf: &'a str,
}

/// A whole page: `body` is already HTML.
pub fn page(title: &str, chrome: Option<&Chrome<'_>>, body: &str) -> Html<String> {
    let signout = chrome.map_or_else(String::new, |c| {
        format!(
            "<form method=\"post\" action=\"/signout\" class=\"signout\">{}<button type=\"submit\">Sign out</button></form>",
            csrf_field(c.csrf)
        )
    });
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Kortix</title><link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/console.js\" defer></script></head>\
         <body><header class=\"top\"><a class=\"brand\" href=\"/\">Kortix</a>{signout}</header>\
         <main>{body}</main></body></html>\n",
        esc(title)
    ))
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"_csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A form of one button posting to `action`.
pub fn button_form(action: &str, csrf: &str, label: &str, class: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\">{}<button type=\"submit\" class=\"{}\">{}</button></form>",
        esc(action),
        csrf_field(csrf),
        esc(class),
        esc(label)
    )
}

/// CSP, no sniffing, no referrer to other sites, no caching of pages that show a person's
/// data. The referrer policy is `same-origin`, not `no-referrer`: under `no-referrer` browsers
/// send `Origin: null` with the console's own form posts, which the origin check refuses.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_carriage_returns() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>\r\n"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;&#13;\n"
        );
    }

    #[test]
    fn url_segments_are_percent_encoded() {
        assert_eq!(url_segment("web app/ü"), "web%20app%2F%C3%BC");
        assert_eq!(url_segment("a-b_c.d~"), "a-b_c.d~");
    }
}
