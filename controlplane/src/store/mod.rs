//! Durable state of the control plane: one set of SQL statements over two real backends,
//! SQLite (the embedded default, a file in the data directory) and PostgreSQL (scale-out).
//!
//! Each backend keeps its native pool rather than going through `sqlx::Any`: SQLite needs
//! connection options that `Any` can only express as URL text (WAL, synchronous, busy
//! timeout) and a record writer of its own, and PostgreSQL's pool is typed. The queries are
//! still written once: [`with_pool!`] expands one body for each concrete pool, so both
//! backends are type-checked against the same statement text. The dialect is the common
//! subset: `$n` placeholders, `ON CONFLICT … DO NOTHING/UPDATE`, `RETURNING`, partial unique
//! indexes, integer milliseconds for time, TEXT ids, BLOB/BYTEA for bytes.

mod accounts;
mod agent_auth;
mod agent_cache;
mod apps;
mod audit;
mod change_requests;
mod checkpoint;
mod connectors;
mod firings;
mod grants;
mod leases;
mod notify;
mod pg_records;
mod projects;
mod records;
mod role_cache;
mod secrets;
mod session_commands;
mod session_saves;
mod sessions;
mod slack;
mod slack_links;
mod slack_turns;
mod snapshots;
mod sqlite_records;
mod tokens;
mod ttl_entries;

#[cfg(test)]
mod migration_tests;
#[cfg(test)]
mod slack_tests;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
pub(crate) mod tests;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};

pub use accounts::{Account, Member, Person};
pub use agent_auth::{BootstrapRejection, GitToken, IssuedCert};
pub use agent_cache::{AGENTS_CHANNEL, AgentCache, AgentSession, Change as AgentChange};
pub use apps::{
    Activation, AppRow, Deployment, DeploymentStatus, MAX_DEPLOYMENT_LOG, NewDeployment, keep_tail,
};
pub use audit::{AuditEvent, AuditQuery, NewAuditEvent};
pub use change_requests::{
    ChangeRequest, CrListQuery, CrState, MergedChangeRequest, NewChangeRequest,
};
pub use connectors::{Approval, ConnectorCallRow, CredentialRow};
pub use firings::{Claim, Firing, FiringOutcome, NewFiring};
pub use grants::{Grant, ProjectAccess};
pub use notify::{Heard, WAKE_CHANNEL, WakeListener};
pub use projects::Project;
pub use records::RecordRow;
pub use role_cache::{ROLES_CHANNEL, RoleCache, Roles};
pub use secrets::{SecretMeta, SecretRow, SecretsSnapshot};
pub use session_commands::{
    ACK_PREFIX, COMMAND_CHANNEL, CommandState, CommandStatus, KEPT_DELIVERED_PER_SESSION,
    QueuedCommand, TakenCommand, TakenCommands,
};
pub use session_saves::{MAX_CONVERSATION_BYTES, NewSave, SessionSave};
pub use sessions::{NewSession, Session, SessionStatus};
pub use slack::{LiveSlackThread, OutboxItem, SlackBinding, SlackThread};
pub use slack_links::SlackLinkCode;
pub use slack_turns::SlackTurn;
pub use snapshots::{NewSnapshot, Snapshot, SnapshotStatus};
pub use tokens::{ApiToken, TokenLimits};

/// File name of the SQLite database inside the data directory.
pub const SQLITE_FILE_NAME: &str = "kortix.db";

/// How long a connection waits for SQLite's write lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a pooled connection. Well inside a client's 30 s deadline, so
/// that while PostgreSQL is unreachable (the pool keeps trying to connect until then) callers
/// get UNAVAILABLE naming the database rather than their own deadline running out.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// A wait for a pooled connection longer than this is logged as a warning. sqlx's default
/// (a fraction of a second) turned every burst of load into thousands of log lines.
const ACQUIRE_SLOW: Duration = Duration::from_secs(5);

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the store can fail with. `NotFound` and `AlreadyExists` carry a description of
/// the thing ("project 'web'") so callers can pass the message on unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// Taking the owner role from an account's last owner.
    #[error("account {0} must keep at least one owner: make someone else owner first")]
    LastOwner(String),
    #[error("bootstrap token rejected: {0}")]
    BootstrapToken(BootstrapRejection),
    #[error("unsupported database URL {url:?}: expected sqlite:<path> or postgres://…")]
    UnsupportedUrl { url: String },
    #[error("cannot open the {backend} store at {target}: {source}")]
    Connect {
        backend: BackendKind,
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("migrating the {backend} store: {source}")]
    Migrate {
        backend: BackendKind,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("{context}: {source}")]
    Database {
        context: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{context}: {source}")]
    Sqlite {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("corrupt {what} in the store: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

impl Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists(_))
    }

    /// Whether the database could not be reached or was too busy to answer — an outage a
    /// retry may outlive — rather than a refusal, a bug or damaged data.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Database { source, .. } => sqlx_unavailable(source),
            Error::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

fn sqlx_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: connection exceptions (08), insufficient resources (53), operator
            // intervention such as a shutting-down server (57), serialization failures and
            // deadlocks (40001, 40P01). SQLite: busy (5) and locked (6).
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code == "40001"
                || code == "40P01"
                || code == "5"
                || code == "6"
        }
        _ => false,
    }
}

/// Attaches what the store was doing to a driver error.
pub(crate) trait DbContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> DbContext<T> for std::result::Result<T, sqlx::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Database {
            context: context(),
            source,
        })
    }
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        })
    }
}

/// The live connection pool. Cloning shares the pool.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The pool, and the connection that writes records (see `sqlite_records`).
    Sqlite(SqlitePool, sqlite_records::RecordWriter),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of the store's backend. The body is
/// compiled once per backend, so one statement text serves both.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.backend() {
            $crate::store::Backend::Sqlite($pool, _) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Begins a transaction that will write. On SQLite it takes the write lock up front
/// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and writes later fails with
/// SQLITE_BUSY instead of waiting when another writer got in between.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl Future<Output = std::result::Result<Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Db = Sqlite;
    fn begin_write(
        &self,
    ) -> impl Future<Output = std::result::Result<Transaction<'static, Sqlite>, sqlx::Error>> + Send
    {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Db = Postgres;
    fn begin_write(
        &self,
    ) -> impl Future<Output = std::result::Result<Transaction<'static, Postgres>, sqlx::Error>> + Send
    {
        self.begin()
    }
}

/// Tunables for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// SQLite only: fsync the WAL on every commit (`synchronous=FULL`), so an acknowledged
    /// write survives power loss, not only a crash of the process.
    pub sqlite_sync_full: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            sqlite_sync_full: true,
        }
    }
}

/// Handle to the store. Cheap to clone; all clones share one pool.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// Who holds which role on which project, as last read (see [`RoleCache`]).
    roles: RoleCache,
    /// What agents' calls read first, as last read (see [`AgentCache`]).
    agents: AgentCache,
}

impl Store {
    /// Opens the store the server was configured with: `database_url` when given, otherwise
    /// SQLite at `<data_dir>/kortix.db` (creating the directory).
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Store> {
        match database_url {
            Some(url) if !url.trim().is_empty() => Store::connect(url).await,
            _ => {
                std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir {
                    path: data_dir.to_path_buf(),
                    source,
                })?;
                Store::open_sqlite(&data_dir.join(SQLITE_FILE_NAME), StoreOptions::default()).await
            }
        }
    }

    /// Connects by URL: `sqlite:<path>` / `sqlite://<path>` or `postgres://…` /
    /// `postgresql://…`. Runs pending migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, StoreOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Store> {
        match detect_backend(url)? {
            BackendKind::Postgres => {
                let connect = PgConnectOptions::from_str(url).map_err(|source| Error::Connect {
                    backend: BackendKind::Postgres,
                    target: redact_url(url),
                    source,
                })?;
                Store::open_postgres(connect, options).await
            }
            BackendKind::Sqlite => {
                let path = url
                    .strip_prefix("sqlite://")
                    .or_else(|| url.strip_prefix("sqlite:"))
                    .unwrap_or(url);
                let path = path.split('?').next().unwrap_or(path);
                if path.is_empty() {
                    return Err(Error::UnsupportedUrl {
                        url: url.to_string(),
                    });
                }
                Store::open_sqlite(Path::new(path), options).await
            }
        }
    }

    /// Opens (creating if missing) the SQLite database at `path` and migrates it.
    pub async fn open_sqlite(path: &Path, options: StoreOptions) -> Result<Store> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .synchronous(if options.sqlite_sync_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            // Checkpoints run on their own connection (see `checkpoint`), not inside commits.
            .pragma("wal_autocheckpoint", "0");
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .acquire_slow_threshold(ACQUIRE_SLOW)
            .connect_with(connect.clone())
            .await
            .map_err(|source| Error::Connect {
                backend: BackendKind::Sqlite,
                target: path.display().to_string(),
                source,
            })?;
        SQLITE_MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| Error::Migrate {
                backend: BackendKind::Sqlite,
                source,
            })?;
        let writer = sqlite_records::RecordWriter::open(
            path,
            options.sqlite_sync_full,
            SQLITE_BUSY_TIMEOUT,
        )?;
        checkpoint::spawn(
            connect,
            path.to_path_buf(),
            pool.close_event(),
            writer.rewind_flag(),
        );
        Ok(Store {
            backend: Backend::Sqlite(pool, writer),
            roles: RoleCache::default(),
            agents: AgentCache::default(),
        })
    }

    /// Connects to PostgreSQL with explicit options (e.g. a `search_path`) and migrates.
    pub async fn open_postgres(connect: PgConnectOptions, options: StoreOptions) -> Result<Store> {
        let target = format!(
            "postgres://{}:{}/{}",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or("")
        );
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .acquire_slow_threshold(ACQUIRE_SLOW)
            .connect_with(connect)
            .await
            .map_err(|source| Error::Connect {
                backend: BackendKind::Postgres,
                target,
                source,
            })?;
        POSTGRES_MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| Error::Migrate {
                backend: BackendKind::Postgres,
                source,
            })?;
        Ok(Store {
            backend: Backend::Postgres(pool),
            roles: RoleCache::default(),
            agents: AgentCache::default(),
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(..) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Closes every pooled connection (waits for checked-out ones to come back).
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}

/// Which backend a database URL names.
pub fn detect_backend(url: &str) -> Result<BackendKind> {
    let lower = url.trim_start().to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        Ok(BackendKind::Postgres)
    } else if lower.starts_with("sqlite:") {
        Ok(BackendKind::Sqlite)
    } else {
        Err(Error::UnsupportedUrl {
            url: redact_url(url),
        })
    }
}

/// The URL with any password replaced, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                url.to_string()
            }
        }
        None => url.to_string(),
    }
}

/// A fresh, time-ordered id (UUIDv7 text).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Names of accounts and projects: they appear in URLs (`/git/<name>.git`) and on command
/// lines, so they are kept to a safe, unambiguous alphabet.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let invalid = |reason: &str| Error::Invalid {
        what,
        reason: format!("{}: {reason}", quoted(name)),
    };
    if name.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if name.len() > 64 {
        return Err(invalid("must be at most 64 characters"));
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid("must start with a letter or digit"));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(invalid(
            "may contain only letters, digits, '-', '_' and '.'",
        ));
    }
    if name.ends_with(".git") || name.ends_with('.') || name.contains("..") {
        return Err(invalid("must not end in '.git' or '.', nor contain '..'"));
    }
    Ok(())
}

/// A caller's name as an error quotes it: at most 64 characters of it, so an error about an
/// oversized name stays small.
pub fn quoted(name: &str) -> String {
    const SHOWN: usize = 64;
    if name.chars().count() <= SHOWN {
        format!("{name:?}")
    } else {
        let head: String = name.chars().take(SHOWN).collect();
        format!("{head:?}… ({} bytes)", name.len())
    }
}

/// `$first, $first+1, …` for `count` placeholders, for `IN (…)` lists built at run time.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    let mut out = String::with_capacity(count * 4);
    for i in 0..count {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('$');
        out.push_str(&(first + i).to_string());
    }
    out
}

/// Bounds a caller-supplied page size.
pub(crate) fn clamp_limit(limit: u32, max: u32) -> i64 {
    i64::from(if limit == 0 { max } else { limit.min(max) })
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn detects_backends() {
        assert_eq!(
            detect_backend("postgres://x@h/db").unwrap(),
            BackendKind::Postgres
        );
        assert_eq!(
            detect_backend("postgresql://h/db").unwrap(),
            BackendKind::Postgres
        );
        assert_eq!(
            detect_backend("sqlite:/tmp/a.db").unwrap(),
            BackendKind::Sqlite
        );
        assert!(matches!(
            detect_backend("mysql://h/db"),
            Err(Error::UnsupportedUrl { .. })
        ));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:/x"), "sqlite:/x");
    }

    #[test]
    fn validates_names() {
        for ok in ["web", "Web-2", "a", "my_project.v2"] {
            validate_name("project name", ok).unwrap();
        }
        for bad in ["", "-x", ".x", "a b", "x.git", "a..b", "é", &"a".repeat(65)] {
            assert!(validate_name("project name", bad).is_err(), "{bad:?}");
        }
        let long = validate_name("project name", &"a".repeat(100_000)).unwrap_err();
        assert_eq!(
            long.to_string(),
            format!(
                "invalid project name: {:?}… (100000 bytes): must be at most 64 characters",
                "a".repeat(64)
            )
        );
    }

    #[test]
    fn builds_placeholders() {
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(placeholders(1, 0), "");
    }
}
