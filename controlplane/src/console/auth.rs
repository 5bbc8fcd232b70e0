//! Signing in to the console. The sign-in form takes an API token (a password field); the
//! token goes into an HttpOnly, SameSite=Strict cookie (`Secure` over https) that scripts
//! cannot read, and every request resolves it through the same [`Authenticator`] as the
//! API, so a revoked or expired token signs the browser out at once.
//!
//! CSRF: every state-changing form carries a token derived from the cookie (SHA-256 of a
//! label and the bearer token): a page of another origin can neither read the cookie nor
//! the page, so it cannot produce it; it needs no server-side state, so it works on every
//! replica. The sign-in form itself carries a random nonce also set as a cookie (double
//! submit). A request whose `Origin` names another host is refused as well.
//!
//! [`Authenticator`]: crate::auth::Authenticator

use aws_lc_rs::{constant_time, digest, rand::SecureRandom as _};
use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Console;
use super::error::{ConsoleError, ConsoleResult};
use super::layout::{self, Chrome, csrf_field, esc};
use crate::auth::{AuthError, Caller, Principal};
use crate::error::DomainError;
use crate::permissions::{self, Action};

/// The signed-in browser's token.
const SESSION_COOKIE: &str = "kortix_console";
/// The sign-in form's nonce.
const SIGNIN_COOKIE: &str = "kortix_signin";
/// Longest token accepted from the sign-in form or a cookie.
const MAX_TOKEN: usize = 512;

/// Where a request came from: the peer address the public listener accepted its connection
/// from (axum's `ConnectInfo`, which the listener serves with). It goes into the audit log
/// like a gRPC caller's; a router served without it (no listener) leaves it empty.
pub struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// A person signed in through the console.
pub struct SignedIn {
    principal: Principal,
    /// The token every form of this person's pages carries.
    pub csrf: String,
    /// The peer address of a posted action (empty for pages, which change nothing).
    from: String,
}

impl SignedIn {
    /// The person doing `action`, with what the table decides without the store checked.
    pub fn caller(&self, action: Action) -> ConsoleResult<Caller> {
        let mut caller = self.principal.caller(action).ok_or_else(|| {
            DomainError::PermissionDenied("a session's git token cannot use the console".into())
        })?;
        permissions::upfront(&caller)?;
        caller.from.clone_from(&self.from);
        Ok(caller)
    }

    pub fn chrome(&self) -> Chrome<'_> {
        Chrome { csrf: &self.csrf }
    }
}

fn csrf_of(token: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"kortix-console-csrf\0");
    ctx.update(token.as_bytes());
    hex::encode(ctx.finish())
}

fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// The value of cookie `name`, if the request has it.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A request whose `Origin` is another host is cross-site, whatever its cookies say.
fn check_origin(headers: &HeaderMap) -> ConsoleResult<()> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) if o == h => Ok(()),
        _ => Err(ConsoleError::Forbidden(
            "refused: the request came from another site".into(),
        )),
    }
}

impl Console {
    /// The signed-in person, from the request's cookie.
    pub async fn signed_in(&self, headers: &HeaderMap) -> ConsoleResult<SignedIn> {
        let token = cookie(headers, SESSION_COOKIE)
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN)
            .ok_or(ConsoleError::SignedOut)?;
        match self.inner.authenticator.authenticate(token).await {
            Ok(principal @ Principal::Person { .. }) => Ok(SignedIn {
                principal,
                csrf: csrf_of(token),
                from: String::new(),
            }),
            Ok(Principal::SessionGit { .. }) => Err(ConsoleError::SignedOut),
            Err(AuthError::Store(e)) => Err(DomainError::from(e).into()),
            Err(_) => Err(ConsoleError::SignedOut),
        }
    }

    /// The signed-in person posting a form with `csrf`, from this site; what they do is
    /// audited as coming from `peer`.
    pub async fn posted(
        &self,
        headers: &HeaderMap,
        peer: &Peer,
        csrf: &str,
    ) -> ConsoleResult<SignedIn> {
        check_origin(headers)?;
        let mut me = self.signed_in(headers).await?;
        me.from = peer.0.map(|a| a.to_string()).unwrap_or_default();
        if !same(csrf, &me.csrf) {
            return Err(ConsoleError::Forbidden(
                "refused: the form's CSRF token is missing or wrong; reload the page".into(),
            ));
        }
        Ok(me)
    }

    fn cookie(&self, name: &str, value: &str, max_age: Option<u32>) -> HeaderValue {
        let secure = if self.inner.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        let age = max_age.map_or_else(String::new, |s| format!("; Max-Age={s}"));
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{age}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("kortix_console=; Max-Age=0"))
    }
}

/// The sign-in page (signed out at `/`), with a fresh nonce.
pub fn sign_in_page(console: &Console, status: StatusCode, problem: Option<&str>) -> Response {
    let mut nonce = [0u8; 24];
    let nonce = match aws_lc_rs::rand::SystemRandom::new().fill(&mut nonce) {
        Ok(()) => hex::encode(nonce),
        Err(_) => {
            return ConsoleError::Domain(DomainError::Internal(
                "the system random generator failed".into(),
            ))
            .into_response();
        }
    };
    let problem = problem.map_or_else(String::new, |p| {
        format!("<p class=\"notice error\">{}</p>", esc(p))
    });
    let body = format!(
        "<section class=\"signin\"><h1>Sign in</h1>{problem}\
         <form method=\"post\" action=\"/signin\">{}\
         <label for=\"token\">API token</label>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\">Use a token from <code>kortix tokens create</code>. It is kept in an \
         HttpOnly cookie of this browser and never shown again.</p></section>",
        csrf_field(&nonce)
    );
    let mut res = (status, layout::page("Sign in", None, &body)).into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        console.cookie(SIGNIN_COOKIE, &nonce, Some(3600)),
    );
    res
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default, rename = "_csrf")]
    csrf: String,
}

pub async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if let Err(e) = check_origin(&headers) {
        return e.into_response();
    }
    let nonce = cookie(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if !same(&form.csrf, nonce) {
        return sign_in_page(
            &console,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired; please try again."),
        );
    }
    let token = form.token.trim();
    let well_formed = !token.is_empty()
        && token.len() <= MAX_TOKEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    let refused = |why: &str| sign_in_page(&console, StatusCode::UNAUTHORIZED, Some(why));
    if !well_formed {
        return refused("That is not an API token.");
    }
    match console.inner.authenticator.authenticate(token).await {
        Ok(Principal::Person { .. }) => {}
        Ok(Principal::SessionGit { .. }) => {
            return refused("A session's git token cannot sign in; use an API token.");
        }
        Err(AuthError::Store(e)) => return ConsoleError::Domain(e.into()).into_response(),
        Err(_) => return refused("That token is invalid, revoked or expired."),
    }
    let mut res = Redirect::to("/").into_response();
    let h = res.headers_mut();
    h.append(
        header::SET_COOKIE,
        console.cookie(SESSION_COOKIE, token, None),
    );
    h.append(
        header::SET_COOKIE,
        console.cookie(SIGNIN_COOKIE, "", Some(0)),
    );
    res
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default, rename = "_csrf")]
    pub csrf: String,
}

pub async fn sign_out(
    State(console): State<Console>,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> ConsoleResult<Response> {
    console.posted(&headers, &peer, &form.csrf).await?;
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        console.cookie(SESSION_COOKIE, "", Some(0)),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("kortix_console_x=1; kortix_console=tok; other=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_bearer_token() {
        assert_eq!(csrf_of("a"), csrf_of("a"));
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert!(same(&csrf_of("a"), &csrf_of("a")));
        assert!(!same("", ""));
    }

    #[test]
    fn other_origins_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.test"),
        );
        assert!(check_origin(&h).is_err());
    }
}
