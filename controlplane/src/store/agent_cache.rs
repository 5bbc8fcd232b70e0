//! A replica's memory of what every call of a session's agent reads before anything else:
//! that its certificate is not revoked, its session (the fields a call needs, status
//! included) with its project, the sealed connector credentials and the sealed project
//! secrets connectors take their credential from (`auth.secret`). Without it a connector
//! call made four store round trips before it reached the upstream.
//!
//! The rules are the role cache's (`role_cache`): only this store's own write methods
//! change these rows, and each forgets what it changed here at once and tells the other
//! replicas sharing a PostgreSQL database on [`AGENTS_CHANNEL`]; a read that began before a
//! change is not kept (the generation check); an entry is trusted for [`TTL`] at most, should
//! a notification be lost without the listener noticing; a listener that loses its connection
//! forgets everything. A revoked certificate is never remembered as revoked — only live
//! certificates are kept, so an unknown or revoked one is always read again.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::ttl_entries::TtlEntries;

use super::{CredentialRow, DbContext, Project, SecretRow, SessionStatus, with_pool};

/// The channel changes to certificates, sessions, projects and credentials travel on.
pub const AGENTS_CHANNEL: &str = "kortix_agents";
/// Longest an entry is trusted without asking the store again.
pub const TTL: Duration = Duration::from_secs(10);
/// Entries kept per kind; when full, stale ones go first, then everything.
pub const CAPACITY: usize = 16_384;

/// A session as an agent's calls see it: who started it, from where, in which state. Only
/// `transition_session`, `resume_session` and `delete_session` change these fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSession {
    pub id: String,
    pub status: SessionStatus,
    pub launched_by: String,
    pub origin: String,
    pub project: Project,
}

/// What a write made stale; as text, the payload of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// One certificate (by serial) was revoked.
    Cert(String),
    /// Every certificate of a session was revoked or deleted.
    SessionCerts(String),
    /// A session's status changed, or it was deleted.
    Session(String),
    /// A project's row changed: its sessions' entries carry it. Every secret write bumps
    /// the project's secrets version, so this also forgets its secrets.
    Project(String),
    /// A connector credential of the project was set.
    Credentials(String),
    /// Anything may have changed (a project deleted with all under it, a purge).
    All,
}

impl Change {
    pub fn payload(&self) -> String {
        match self {
            Change::Cert(s) => format!("cert:{s}"),
            Change::SessionCerts(s) => format!("certs:{s}"),
            Change::Session(s) => format!("session:{s}"),
            Change::Project(p) => format!("project:{p}"),
            Change::Credentials(p) => format!("credentials:{p}"),
            Change::All => "all".into(),
        }
    }

    /// A notification's payload; `None` for one this replica does not understand (a newer
    /// replica's), which is then taken as [`Change::All`] by [`AgentCache::apply`].
    pub fn parse(payload: &str) -> Option<Change> {
        let (kind, id) = payload.split_once(':').unwrap_or((payload, ""));
        let id = id.to_owned();
        match kind {
            "all" => Some(Change::All),
            _ if id.is_empty() => None,
            "cert" => Some(Change::Cert(id)),
            "certs" => Some(Change::SessionCerts(id)),
            "session" => Some(Change::Session(id)),
            "project" => Some(Change::Project(id)),
            "credentials" => Some(Change::Credentials(id)),
            _ => None,
        }
    }
}

/// (project, connector, person — empty for the shared one).
type CredentialKey = (String, String, String);
/// (project, secret name).
type SecretKey = (String, String);

struct Inner {
    /// Live certificates: serial → their session.
    certs: TtlEntries<String, String>,
    sessions: TtlEntries<String, AgentSession>,
    credentials: TtlEntries<CredentialKey, Option<CredentialRow>>,
    secrets: TtlEntries<SecretKey, Option<SecretRow>>,
    /// Bumped by every forget, so a read that began before a change cannot put back what the
    /// change made stale.
    generation: u64,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            certs: TtlEntries::new(TTL, CAPACITY),
            sessions: TtlEntries::new(TTL, CAPACITY),
            credentials: TtlEntries::new(TTL, CAPACITY),
            secrets: TtlEntries::new(TTL, CAPACITY),
            generation: 0,
        }
    }
}

/// Cheap to clone; clones share the entries.
#[derive(Clone, Default)]
pub struct AgentCache {
    inner: Arc<Mutex<Inner>>,
}

/// Sizes only: the entries hold sealed credentials.
impl std::fmt::Debug for AgentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("AgentCache")
            .field("certs", &inner.certs.len())
            .field("sessions", &inner.sessions.len())
            .field("credentials", &inner.credentials.len())
            .field("secrets", &inner.secrets.len())
            .field("generation", &inner.generation)
            .finish()
    }
}

impl AgentCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken before a store read; the matching insert keeps the read only if nothing was
    /// forgotten since.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Whether `serial` is known live (not revoked when last read).
    pub fn cert_live(&self, serial: &str) -> bool {
        self.lock().certs.get(&serial.to_owned()).is_some()
    }

    pub fn insert_live_cert(&self, generation: u64, serial: &str, session_id: &str) {
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.certs.insert(serial.to_owned(), session_id.to_owned());
        }
    }

    pub fn session(&self, id: &str) -> Option<AgentSession> {
        self.lock().sessions.get(&id.to_owned())
    }

    pub fn insert_session(&self, generation: u64, session: AgentSession) {
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.sessions.insert(session.id.clone(), session);
        }
    }

    /// The sealed credential as last read: `Some(None)` when it was known to be unset.
    pub fn credential(
        &self,
        project_id: &str,
        connector: &str,
        person_id: &str,
    ) -> Option<Option<CredentialRow>> {
        let key = (project_id.into(), connector.into(), person_id.into());
        self.lock().credentials.get(&key)
    }

    pub fn insert_credential(
        &self,
        generation: u64,
        project_id: &str,
        connector: &str,
        person_id: &str,
        row: Option<CredentialRow>,
    ) {
        let mut inner = self.lock();
        if inner.generation == generation {
            let key = (project_id.into(), connector.into(), person_id.into());
            inner.credentials.insert(key, row);
        }
    }

    /// The sealed project secret as last read: `Some(None)` when it was known to be unset.
    pub fn secret(&self, project_id: &str, name: &str) -> Option<Option<SecretRow>> {
        self.lock()
            .secrets
            .get(&(project_id.to_owned(), name.to_owned()))
    }

    pub fn insert_secret(
        &self,
        generation: u64,
        project_id: &str,
        name: &str,
        row: Option<SecretRow>,
    ) {
        let mut inner = self.lock();
        if inner.generation == generation {
            inner
                .secrets
                .insert((project_id.to_owned(), name.to_owned()), row);
        }
    }

    /// Forgets what `change` made stale.
    pub fn forget(&self, change: &Change) {
        let mut inner = self.lock();
        inner.generation += 1;
        match change {
            Change::Cert(serial) => {
                inner.certs.remove(serial);
            }
            Change::SessionCerts(session) => {
                inner.certs.retain(|_, s| s != session);
            }
            Change::Session(id) => {
                inner.sessions.remove(id);
            }
            Change::Project(id) => {
                inner.sessions.retain(|_, s| &s.project.id != id);
                inner.secrets.retain(|(p, _), _| p != id);
            }
            Change::Credentials(project) => {
                inner.credentials.retain(|(p, _, _), _| p != project);
            }
            Change::All => {
                inner.certs.clear();
                inner.sessions.clear();
                inner.credentials.clear();
                inner.secrets.clear();
            }
        }
    }

    /// What a notification on [`AGENTS_CHANNEL`] says; one not understood forgets all.
    pub fn apply(&self, payload: &str) {
        match Change::parse(payload) {
            Some(change) => self.forget(&change),
            None => {
                tracing::debug!(payload, "unknown agent-cache notification; forgetting all");
                self.forget(&Change::All);
            }
        }
    }

    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.certs.len() + inner.sessions.len() + inner.credentials.len() + inner.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl super::Store {
    /// Forgets what `change` made stale on this replica and tells the others. Called after
    /// every write that changes what [`AgentCache`] keeps (also after a failed one: a commit
    /// whose answer was lost may still have happened); a notification that cannot be sent
    /// leaves the others at most [`TTL`] behind.
    pub(super) async fn agents_changed(&self, change: Change) {
        self.agents.forget(&change);
        if let Err(e) = self.notify_on(AGENTS_CHANNEL, &[change.payload()]).await {
            tracing::warn!(change = %change.payload(), error = %e, "could not tell other replicas of an agent-state change");
        }
    }

    /// Applies other replicas' changes to this replica's [`AgentCache`], for as long as the
    /// database can be reached (returns at once on SQLite, which has one process).
    pub async fn follow_agent_changes(&self) {
        let agents = self.agents.clone();
        self.follow_channel(AGENTS_CHANNEL, |heard| match heard {
            super::Heard::Wake(payload) => agents.apply(&payload),
            // Whatever changed while nobody listened is unknown here.
            super::Heard::Gap => agents.forget(&Change::All),
        })
        .await;
    }

    /// The session as its agent's calls see it, with its project: from this replica's
    /// [`AgentCache`] when it knows them, else two reads. A missing session or project is
    /// [`super::Error::NotFound`].
    pub async fn agent_session(&self, id: &str) -> super::Result<AgentSession> {
        if let Some(known) = self.agents.session(id) {
            return Ok(known);
        }
        let generation = self.agents.generation();
        let session = self.get_session(id).await?;
        let project = self.find_project(&session.project_id).await?;
        let view = AgentSession {
            id: session.id,
            status: session.status,
            launched_by: session.launched_by,
            origin: session.origin,
            project,
        };
        self.agents.insert_session(generation, view.clone());
        Ok(view)
    }

    /// One sealed project secret for a connector call: from this replica's [`AgentCache`]
    /// when it knows it, else one read. `None` when the project has no such secret.
    pub async fn agent_secret(
        &self,
        project_id: &str,
        name: &str,
    ) -> super::Result<Option<SecretRow>> {
        if let Some(known) = self.agents.secret(project_id, name) {
            return Ok(known);
        }
        let generation = self.agents.generation();
        let row = with_pool!(self, |pool| {
            sqlx::query_as::<_, SecretRow>(
                "SELECT name, nonce, ciphertext, created_ms, updated_ms FROM secrets
                 WHERE project_id = $1 AND name = $2",
            )
            .bind(project_id)
            .bind(name)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading secret {name} of project {project_id}"))?;
        self.agents
            .insert_secret(generation, project_id, name, row.clone());
        Ok(row)
    }

    /// This replica's [`AgentCache`] (tests look into it).
    pub fn agent_cache(&self) -> &AgentCache {
        &self.agents
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::time::Instant;

    fn project(id: &str) -> Project {
        Project {
            id: id.into(),
            account_id: "acct".into(),
            name: format!("name-{id}"),
            default_branch: "main".into(),
            created_ms: 1,
            secrets_version: 0,
        }
    }

    fn session(id: &str, project_id: &str) -> AgentSession {
        AgentSession {
            id: id.into(),
            status: SessionStatus::Running,
            launched_by: "person:p".into(),
            origin: "cli".into(),
            project: project(project_id),
        }
    }

    fn row(v: u8) -> CredentialRow {
        CredentialRow {
            connector: "api".into(),
            person_id: String::new(),
            nonce: vec![v],
            ciphertext: vec![v],
            updated_ms: i64::from(v),
        }
    }

    #[test]
    fn each_change_forgets_what_it_touched_and_nothing_else() {
        let cache = AgentCache::default();
        let g = cache.generation();
        cache.insert_live_cert(g, "c1", "s1");
        cache.insert_live_cert(g, "c2", "s1");
        cache.insert_live_cert(g, "c3", "s2");
        cache.insert_session(g, session("s1", "p1"));
        cache.insert_session(g, session("s2", "p2"));
        cache.insert_credential(g, "p1", "api", "", Some(row(1)));
        cache.insert_credential(g, "p2", "api", "", None);

        cache.apply("cert:c1");
        assert!(!cache.cert_live("c1"));
        assert!(cache.cert_live("c2") && cache.cert_live("c3"));
        cache.apply("certs:s1");
        assert!(!cache.cert_live("c2"));
        assert!(cache.cert_live("c3"));

        cache.apply("session:s1");
        assert_eq!(cache.session("s1"), None);
        assert_eq!(cache.session("s2"), Some(session("s2", "p2")));
        cache.insert_session(cache.generation(), session("s1", "p1"));
        cache.apply("project:p1");
        assert_eq!(cache.session("s1"), None);
        assert!(cache.session("s2").is_some());

        assert!(cache.credential("p1", "api", "") == Some(Some(row(1))));
        assert!(
            cache.credential("p2", "api", "") == Some(None),
            "unset is known"
        );
        cache.apply("credentials:p1");
        assert!(cache.credential("p1", "api", "").is_none());
        assert!(cache.credential("p2", "api", "") == Some(None));

        cache.apply("all");
        assert!(cache.is_empty());
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let cache = AgentCache::default();
        let before = cache.generation();
        // The write lands (and forgets) while the read is on its way back.
        cache.forget(&Change::Session("s1".into()));
        cache.insert_session(before, session("s1", "p1"));
        cache.insert_live_cert(before, "c1", "s1");
        cache.insert_credential(before, "p1", "api", "", Some(row(1)));
        assert!(cache.is_empty(), "nothing read before the change is kept");
        let after = cache.generation();
        cache.insert_session(after, session("s1", "p1"));
        cache.insert_live_cert(after, "c1", "s1");
        assert!(cache.session("s1").is_some() && cache.cert_live("c1"));
    }

    #[test]
    fn an_unknown_notification_forgets_everything() {
        let cache = AgentCache::default();
        cache.insert_session(cache.generation(), session("s1", "p1"));
        cache.apply("something-newer:x");
        assert!(cache.is_empty());
        cache.insert_session(cache.generation(), session("s1", "p1"));
        cache.apply("session:");
        assert!(
            cache.is_empty(),
            "a kind without its id is not understood either"
        );
    }

    #[test]
    fn payloads_round_trip() {
        for change in [
            Change::Cert("c".into()),
            Change::SessionCerts("s".into()),
            Change::Session("s".into()),
            Change::Project("p".into()),
            Change::Credentials("p".into()),
            Change::All,
        ] {
            assert_eq!(Change::parse(&change.payload()), Some(change));
        }
    }

    /// The store's own writes forget what they change: every read after a write sees it.
    async fn the_stores_own_writes_are_seen_at_once(db: crate::store::tests::TestDb) {
        use crate::clock::now_ms;
        use crate::store::tests::{account_and_project, session_in};
        let store = &db.store;
        let (_, project) = account_and_project(store, "web").await;
        let session = session_in(store, &project).await;
        store
            .record_issued_cert("c1", &session.id, now_ms() + 60_000)
            .await
            .unwrap();
        assert!(!store.is_cert_revoked("c1").await.unwrap());
        assert!(
            store.agents.cert_live("c1"),
            "a live certificate is remembered"
        );
        store
            .revoke_session_certs(&session.id, now_ms())
            .await
            .unwrap();
        assert!(store.is_cert_revoked("c1").await.unwrap());
        assert!(store.is_cert_revoked("never-issued").await.unwrap());

        let seen = store.agent_session(&session.id).await.unwrap();
        assert_eq!(seen.status, session.status);
        assert!(store.agents.session(&session.id).is_some());
        assert!(
            store
                .transition_session(&session.id, &[seen.status], SessionStatus::Stopped, None)
                .await
                .unwrap()
        );
        assert_eq!(
            store.agent_session(&session.id).await.unwrap().status,
            SessionStatus::Stopped
        );
        store
            .set_project_default_branch(&project.id, "trunk")
            .await
            .unwrap();
        assert_eq!(
            store
                .agent_session(&session.id)
                .await
                .unwrap()
                .project
                .default_branch,
            "trunk"
        );

        let project_id = project.id.as_str();
        let sealed = |n: u8| async move {
            store
                .connector_credential(project_id, "api", "")
                .await
                .unwrap()
                .map(|r| r.ciphertext)
                == (n > 0).then(|| vec![n])
        };
        assert!(sealed(0).await, "unset, and remembered as unset");
        for n in [1u8, 2] {
            store
                .put_connector_credential(&project.id, "api", "", &[n], &[n], i64::from(n))
                .await
                .unwrap();
            assert!(sealed(n).await, "credential {n} is read after it is set");
        }

        let secret = |n: u8| async move {
            store
                .agent_secret(project_id, "API_TOKEN")
                .await
                .unwrap()
                .map(|r| r.ciphertext)
                == (n > 0).then(|| vec![n])
        };
        assert!(secret(0).await, "unset, and remembered as unset");
        assert!(store.agents.secret(project_id, "API_TOKEN").is_some());
        for n in [1u8, 2] {
            store
                .put_secret(project_id, "API_TOKEN", &[n], &[n])
                .await
                .unwrap();
            assert!(secret(n).await, "secret {n} is read after it is set");
        }
        store.delete_secret(project_id, "API_TOKEN").await.unwrap();
        assert!(secret(0).await, "and gone after it is deleted");
    }

    crate::store::tests::both_backends!(the_stores_own_writes_are_seen_at_once);

    /// Replica B remembers a live certificate and a credential; A revokes the one and
    /// replaces the other; B sees both well before the TTL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_reaches_another_replica_on_postgres() {
        use crate::clock::now_ms;
        use crate::store::testing::{Listener, PgTestSchema, until_heard};
        use crate::store::tests::{account_and_project, session_in};
        let Some(schema) = PgTestSchema::create_or_skip().await else {
            return;
        };
        let (a, b) = (schema.store().clone(), schema.other_replica().await);
        let follower = Listener::spawn({
            let b = b.clone();
            async move { b.follow_agent_changes().await }
        });
        until_heard(
            || {
                b.agents
                    .insert_live_cert(b.agents.generation(), "probe", "probe-session")
            },
            || a.agents_changed(Change::Cert("probe".into())),
            || !b.agents.cert_live("probe"),
        )
        .await;

        let (_, project) = account_and_project(&a, "web").await;
        let session = session_in(&a, &project).await;
        a.record_issued_cert("c1", &session.id, now_ms() + 60_000)
            .await
            .unwrap();
        a.put_connector_credential(&project.id, "api", "", b"n", b"one", 1)
            .await
            .unwrap();
        let read = |s: Store| {
            let project_id = project.id.clone();
            async move {
                s.connector_credential(&project_id, "api", "")
                    .await
                    .unwrap()
                    .map(|r| r.ciphertext)
            }
        };
        // A's own notifications may still be arriving and make B drop a read that raced
        // them (the generation check): read until B remembers both.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(!b.is_cert_revoked("c1").await.unwrap());
            assert_eq!(read(b.clone()).await.as_deref(), Some(&b"one"[..]));
            if b.agents.cert_live("c1") && b.agents.credential(&project.id, "api", "").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "B never remembered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        a.revoke_cert("c1", now_ms()).await.unwrap();
        a.put_connector_credential(&project.id, "api", "", b"n", b"two", 2)
            .await
            .unwrap();
        let changed = Instant::now();
        while !b.is_cert_revoked("c1").await.unwrap()
            || read(b.clone()).await.as_deref() != Some(&b"two"[..])
        {
            assert!(changed.elapsed() < TTL / 2, "B still answers from before");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        follower.stop().await;
    }

    #[test]
    fn a_full_cache_makes_room() {
        let cache = AgentCache::default();
        let g = cache.generation();
        for i in 0..=CAPACITY {
            cache.insert_live_cert(g, &format!("c{i}"), "s");
        }
        assert!(cache.len() <= CAPACITY);
        assert!(cache.cert_live(&format!("c{CAPACITY}")));
    }
}
