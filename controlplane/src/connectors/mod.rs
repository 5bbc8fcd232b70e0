//! Connections: the server-side connector broker. Connectors are defined in `kortix.toml`
//! (`[[connectors]]`); their credentials live here, sealed, and never reach a sandbox. Every
//! call a session's agent makes goes through one chokepoint ([`Connectors::call`]) that
//! applies the project's policy, asks for approval where needed, attaches the credential,
//! calls the upstream with a timeout and a size cap, and logs what happened.
//!
//! - [`tools`]: the catalog's data model and its limits.
//! - [`openapi`], [`mcp_client`], [`graphql`]: building tools from an OpenAPI document, an
//!   MCP server or a GraphQL schema.
//! - [`catalog`]: each connector's tools, rebuilt when its definition changes.
//! - [`policy`]: the effective action of a tool.
//! - [`credentials`]: sealing, resolving and applying credentials.
//! - [`upstream`]: outbound HTTP, bounded.
//! - [`digest`]: a call's digest and redacted argument preview.
//! - [`broker`]: the call path. [`approvals`]: calls waiting for a person. [`calls`]: the
//!   call log and its records; [`call_log`]: its batched writer, off the call path;
//!   [`call_journal`]: the file that keeps queued rows across a crash of the process.
//! - [`access`]: the same for people (list, tools, credentials, calls).

mod access;
mod approvals;
mod broker;
mod call_journal;
mod call_log;
mod calls;
mod catalog;
mod credentials;
mod digest;
mod graphql;
mod mcp_client;
mod openapi;
mod policy;
mod tools;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use kortix_manifest::{Connector, Manifest};

use crate::error::{DomainError, DomainResult};
use crate::manifests::Manifests;
use crate::secrets::{MasterKey, ProjectSecrets};
use crate::sessions::Sessions;
use crate::store::{Project, Store};

pub use access::ConnectorView;
pub use tools::Risk;

/// Limits of the call path.
#[derive(Debug, Clone)]
pub struct ConnectorSettings {
    /// Longest an upstream may take to answer one call (or list its tools).
    pub call_timeout: Duration,
    /// Largest upstream answer passed to the model; longer ones are cut with a note.
    pub max_response_bytes: usize,
    /// How long an approval asked for by a trigger's session waits before it is denied.
    pub unattended_approval_ttl: Duration,
    /// Where the call log journals rows before they are stored (the server's data dir);
    /// `None`: no journal, so a crash loses the rows still queued.
    pub call_journal: Option<std::path::PathBuf>,
}

impl Default for ConnectorSettings {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            max_response_bytes: 256 * 1024,
            unattended_approval_ttl: Duration::from_secs(3600),
            call_journal: None,
        }
    }
}

/// The connector broker. Cheap to clone.
#[derive(Clone)]
pub struct Connectors {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    manifests: Arc<Manifests>,
    sessions: Sessions,
    catalogs: catalog::Catalogs,
    credentials: credentials::Credentials,
    call_log: call_log::CallLog,
    client: reqwest::Client,
    settings: ConnectorSettings,
}

impl Connectors {
    pub fn new(
        sessions: Sessions,
        manifests: Arc<Manifests>,
        repos: crate::git::Repos,
        key: Arc<MasterKey>,
        secrets: ProjectSecrets,
        settings: ConnectorSettings,
    ) -> Result<Self, DomainError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| DomainError::Internal(format!("connector HTTP client: {e}")))?;
        let store = sessions.store().clone();
        Ok(Self {
            inner: Arc::new(Inner {
                catalogs: catalog::Catalogs::new(client.clone(), repos, settings.clone()),
                credentials: credentials::Credentials::new(store.clone(), key, secrets),
                call_log: call_log::CallLog::start(store.clone(), settings.call_journal.clone()),
                store,
                manifests,
                sessions,
                client,
                settings,
            }),
        })
    }

    /// The manifest on the project's default branch and its head.
    async fn manifest(&self, project: &Project) -> DomainResult<(Manifest, String)> {
        let m = self
            .inner
            .manifests
            .get(&project.id, &project.default_branch)
            .await?;
        let manifest = m
            .for_session()
            .map_err(|why| DomainError::Precondition(format!("project {}: {why}", project.name)))?;
        let head = m.head.map(|h| h.to_string()).unwrap_or_default();
        Ok((manifest, head))
    }
}

/// The connector of `slug`, or a clear not-found.
fn find<'m>(manifest: &'m Manifest, project: &Project, slug: &str) -> DomainResult<&'m Connector> {
    manifest
        .connectors
        .iter()
        .find(|c| c.slug == slug)
        .ok_or_else(|| {
            DomainError::NotFound(format!(
                "project {} has no connector {slug:?} in kortix.toml",
                project.name
            ))
        })
}
