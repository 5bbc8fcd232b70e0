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
//!   reactions.
//! - [`web`]: the Slack Web API client; [`outbox`]: the calls that must be delivered
//!   (final answers, reactions), retried across rate limits and restarts.
//! - [`slash`] and [`interactivity`]: `/kortix help|sessions|stop` and block actions.
//!
//! Exactly once: an event is claimed by inserting its `event_id` before anything is done
//! for it, and a thread by inserting its (channel, thread_ts); whoever loses an insert does
//! nothing, so Slack's retries and a second replica never start a second session.

pub mod binding;
pub mod event;
pub mod follower;
pub mod interactivity;
pub mod outbox;
pub mod progress;
pub mod routes;
pub mod signature;
pub mod slash;
pub mod threads;
pub mod web;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore, mpsc};

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
    web: web::WebApi,
    public_url: String,
    /// Sessions followed into their threads on this replica: where to announce a new turn.
    followers: Mutex<HashMap<String, mpsc::Sender<follower::NewTurn>>>,
    jobs: Arc<Semaphore>,
    /// Wakes the outbox when a call is queued.
    outbox_kick: Notify,
}

impl Slack {
    pub fn new(
        store: Store,
        key: Arc<MasterKey>,
        sessions: Sessions,
        web: web::WebApi,
        public_url: String,
    ) -> Self {
        Slack {
            inner: Arc::new(Inner {
                store,
                key,
                sessions,
                web,
                public_url: public_url.trim_end_matches('/').to_string(),
                followers: Mutex::default(),
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
