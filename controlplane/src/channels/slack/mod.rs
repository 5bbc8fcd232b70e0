//! Slack: a project bound to a Slack app, driven from its channels.
//!
//! - [`binding`]: connect (seal and store the signing secret and bot token), open them, list.
//! - [`routes`]: the public HTTP endpoints — `POST /v1/webhooks/slack/{project}` (Events API)
//!   and `…/interactivity` (buttons and the `/kortix` slash command) — verified by
//!   [`signature`], acknowledged at once, the work done afterwards.
//! - [`event`]: Events API envelopes read into messages the bot acts on.
//! - [`threads`]: a thread is a session: mentions and DMs start one, replies steer it, a
//!   reply to an ended one starts a fresh session.
//! - [`follower`]: follows a session's records into its thread: the progress message
//!   (updated at most once a second, summarised by [`progress`]), the final answer and the
//!   reactions. A thread's open turns are stored and one replica at a time follows it
//!   (a lease), so a restart or another replica takes it over.
//! - [`web`]: the Slack Web API client; [`outbox`]: the calls that must be delivered
//!   (final answers, reactions), retried across rate limits and restarts.
//! - [`slash`] and [`interactivity`]: `/kortix help|sessions|stop|link` and block actions.
//! - [`links`]: Slack users linked to Kortix people (self-service, by a one-time code);
//!   [`approvals`]: connector approvals as Approve / Deny buttons, decided as the linked
//!   person.
//!
//! Exactly once: an event is claimed by inserting its `event_id` before anything is done
//! for it, and a thread by inserting its (channel, thread_ts); whoever loses an insert does
//! nothing, so Slack's retries and a second replica never start a second session.

pub mod approvals;
pub mod binding;
pub mod event;
pub mod follower;
pub mod interactivity;
pub mod links;
pub mod outbox;
pub mod progress;
pub mod routes;
pub mod signature;
pub mod slash;
pub mod threads;
pub mod web;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

use crate::connectors::Connectors;
use crate::secrets::MasterKey;
use crate::sessions::Sessions;
use crate::store::Store;

/// Event and command jobs running at once on this replica; beyond that Slack is answered
/// 503 and retries later.
pub const MAX_JOBS: usize = 256;

/// Everything the Slack endpoints, followers and outbox share. Cheap to clone.
#[derive(Clone)]
pub struct Slack {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    key: Arc<MasterKey>,
    sessions: Sessions,
    connectors: Connectors,
    web: web::WebApi,
    public_url: String,
    /// Sessions followed into their threads on this replica.
    followed: Mutex<HashSet<String>>,
    /// This process's name on the threads it follows (their lease).
    owner: String,
    jobs: Arc<Semaphore>,
    /// Wakes the outbox when a call is queued.
    outbox_kick: Notify,
}

impl Slack {
    pub fn new(
        store: Store,
        key: Arc<MasterKey>,
        sessions: Sessions,
        connectors: Connectors,
        web: web::WebApi,
        public_url: String,
    ) -> Self {
        Slack {
            inner: Arc::new(Inner {
                store,
                key,
                sessions,
                connectors,
                web,
                public_url: public_url.trim_end_matches('/').to_string(),
                followed: Mutex::default(),
                owner: crate::store::new_id(),
                jobs: Arc::new(Semaphore::new(MAX_JOBS)),
                outbox_kick: Notify::new(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    pub(crate) fn connectors(&self) -> &Connectors {
        &self.inner.connectors
    }

    /// This process's name on the threads it follows.
    pub(crate) fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub(crate) fn web(&self) -> &web::WebApi {
        &self.inner.web
    }

    /// The Events API request URL of a project.
    pub fn request_url(&self, project_name: &str) -> String {
        format!("{}{}", self.inner.public_url, events_path(project_name))
    }

    /// The interactivity (and slash command) URL of a project.
    pub fn interactivity_url(&self, project_name: &str) -> String {
        format!(
            "{}{}",
            self.inner.public_url,
            interactivity_path(project_name)
        )
    }
}

/// Path of a project's Events API endpoint on the public listener.
pub fn events_path(project_name: &str) -> String {
    format!("/v1/webhooks/slack/{project_name}")
}

/// Path of a project's interactivity endpoint on the public listener.
pub fn interactivity_path(project_name: &str) -> String {
    format!("/v1/webhooks/slack/{project_name}/interactivity")
}
