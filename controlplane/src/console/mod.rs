//! The web console: server-rendered pages on the public listener at `/` for watching
//! sessions live, reviewing and merging change requests, seeing a project's triggers,
//! secrets (names) and connectors, and deciding its connector approvals.
//!
//! - [`auth`]: sign-in with an API token into an HttpOnly, SameSite=Strict cookie; the
//!   CSRF token every form carries; the signed-in person's callers for the permission table.
//! - [`layout`]: HTML escaping, the page frame and the security headers (a strict CSP).
//! - [`assets`]: the stylesheet and the one hand-written script, compiled into the binary.
//! - [`projects`]: the project list and a project's overview.
//! - [`approvals`]: a project's connector approvals, and Approve / Deny.
//! - [`sessions`]: a session's page and its actions (start, chat, stop, open a CR).
//! - [`page_view`]: what a session's page shows of its records, kept as a checkpoint.
//! - [`live`]: a session's records as Server-Sent Events, resumable by seq.
//! - [`checkpoints`]: a bounded cache of timeline states by session and seq, so pages and
//!   live streams do not re-read a session from its first record.
//! - [`timeline`]: records → `kortix-timeline` entries → HTML fragments.
//! - [`change_requests`]: lists by state, the diff view, merge, close and reopen.
//! - [`error`]: domain errors as pages with the right status.
//!
//! The console calls the domain services with the same [`crate::permissions`] checks as the
//! API: what a role may not do is absent from the page and refused when posted anyway.

mod approvals;
mod assets;
mod auth;
mod change_requests;
mod checkpoints;
mod error;
mod layout;
mod live;
mod page_view;
mod projects;
mod sessions;
mod timeline;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::auth::Authenticator;
use crate::change_requests::ChangeRequests;
use crate::connectors::Connectors;
use crate::projects::Projects;
use crate::secrets::ProjectSecrets;
use crate::sessions::Sessions;
use crate::store::Store;
use crate::triggers::Triggers;

/// Largest form the console accepts (a chat prompt is at most 256 KiB).
const MAX_FORM: usize = 512 * 1024;

/// What the console's pages call; cheap to clone.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    authenticator: Arc<Authenticator>,
    projects: Projects,
    sessions: Sessions,
    change_requests: ChangeRequests,
    triggers: Triggers,
    secrets: ProjectSecrets,
    connectors: Connectors,
    /// Sessions' timeline states at seqs, for live streams to start from.
    checkpoints: checkpoints::Checkpoints,
    /// Sessions' pages as last rendered, for the next render to read on from.
    pages: checkpoints::Checkpoints<page_view::PageView>,
    /// The public URL is https: cookies get `Secure`.
    secure_cookies: bool,
}

/// The domain services the console is built on.
pub struct ConsoleServices {
    pub store: Store,
    pub authenticator: Arc<Authenticator>,
    pub projects: Projects,
    pub sessions: Sessions,
    pub change_requests: ChangeRequests,
    pub triggers: Triggers,
    pub secrets: ProjectSecrets,
    pub connectors: Connectors,
    /// Where people reach the public listener (decides the cookies' `Secure`).
    pub public_url: String,
}

impl Console {
    pub fn new(s: ConsoleServices) -> Self {
        Console {
            inner: Arc::new(Inner {
                secure_cookies: s.public_url.starts_with("https://"),
                store: s.store,
                authenticator: s.authenticator,
                projects: s.projects,
                sessions: s.sessions,
                change_requests: s.change_requests,
                triggers: s.triggers,
                secrets: s.secrets,
                connectors: s.connectors,
                checkpoints: checkpoints::Checkpoints::new(checkpoints::Limits::default()),
                pages: checkpoints::Checkpoints::new(checkpoints::Limits::PAGES),
            }),
        }
    }
}

/// The console's routes, with its security headers on every response.
pub fn router(console: Console) -> Router {
    let session = "/projects/{project}/sessions/{id}";
    let cr = "/projects/{project}/change-requests/{number}";
    Router::new()
        .route("/", get(projects::home))
        .route("/signin", post(auth::sign_in))
        .route("/signout", post(auth::sign_out))
        .route("/assets/console.css", get(assets::stylesheet))
        .route("/assets/console.js", get(assets::script))
        .route("/projects/{project}", get(projects::overview))
        .route("/projects/{project}/sessions", post(sessions::start))
        .route(
            "/projects/{project}/approvals/{id}/{verb}",
            post(approvals::decide),
        )
        .route(session, get(sessions::page))
        .route(&format!("{session}/events"), get(live::events))
        .route(&format!("{session}/{{verb}}"), post(sessions::act))
        .route(
            "/projects/{project}/change-requests",
            get(change_requests::list),
        )
        .route(cr, get(change_requests::page))
        .route(
            &format!("{cr}/{{verb}}"),
            post(change_requests::change_state),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM))
        .layer(axum::middleware::from_fn(layout::security_headers))
        .with_state(console)
}
