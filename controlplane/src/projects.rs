//! Projects: a bare repository with a `kortix.toml` on its default branch, owned by one
//! account. [`Projects`] creates them (empty or imported, undoing the reservation when the
//! repository cannot be made), lists them and describes them. Every domain service resolves a
//! caller's project reference through [`crate::permissions::project`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::{DomainError, DomainResult, check_len};
use crate::git::{Author, Repos};
use crate::manifests::{DefaultBranchManifest, Manifests};
use crate::store::{Project, Store};

/// The default branch of a project created without one.
pub const DEFAULT_BRANCH: &str = "main";
/// Longest project reference looked up for a caller.
pub use crate::permissions::check::MAX_PROJECT_REF;
/// Longest import source (path or URL) accepted.
pub const MAX_IMPORT_SOURCE: usize = 4096;

/// Who the platform's own commits (initial commit, merges) are by.
pub fn platform_author() -> Author {
    Author {
        name: "Kortix".to_string(),
        email: "platform@kortix.invalid".to_string(),
    }
}

/// The manifest a new project starts with.
pub fn initial_manifest(name: &str) -> String {
    format!(
        "kortix_version = 1\n\n[project]\nname = \"{name}\"\ndescription = \"\"\n\n[opencode]\nconfig_dir = \".kortix/opencode\"\n"
    )
}

/// What a caller asks for.
#[derive(Debug, Clone, Default)]
pub struct NewProject {
    pub name: String,
    /// A local path or a `file://`, `http://` or `https://` clone URL; empty for a new
    /// repository.
    pub import_source: String,
    /// Empty: `main` for a new repository, the source's `HEAD` branch for an import.
    pub default_branch: String,
    /// The owning account's name or id; empty: the caller's personal account.
    pub account: String,
}

/// A project and what its default branch says.
pub struct ProjectInfo {
    pub project: Project,
    pub head_sha: String,
    /// The normalized manifest, when there is one to show.
    pub manifest: Option<kortix_manifest::Manifest>,
    /// Why there is none.
    pub manifest_error: String,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Projects {
    store: Store,
    repos: Repos,
    manifests: Arc<Manifests>,
    public_url: String,
    data_dir: PathBuf,
}

impl Projects {
    pub fn new(
        store: Store,
        repos: Repos,
        manifests: Arc<Manifests>,
        public_url: String,
        data_dir: PathBuf,
    ) -> Self {
        Self {
            store,
            repos,
            manifests,
            public_url,
            data_dir,
        }
    }

    /// Where the project's repository is cloned from.
    pub fn clone_url(&self, project: &Project) -> String {
        crate::git::clone_url(&self.public_url, &project.name)
    }

    /// Creates a project: reserves the name, then builds (or imports) the repository; when
    /// that fails the reservation is undone, so a failed create leaves nothing behind.
    pub async fn create(&self, caller: &Caller, req: NewProject) -> DomainResult<Project> {
        crate::store::validate_name("project name", &req.name)?;
        let (account, _) = crate::permissions::account(&self.store, caller, &req.account).await?;
        let import = req.import_source.trim().to_string();
        check_len("the import source", &import, MAX_IMPORT_SOURCE)?;
        if !import.is_empty() {
            self.check_import_source(&import, caller.server_admin)?;
        }
        let requested_branch = req.default_branch.trim().to_string();
        if !requested_branch.is_empty() {
            crate::git::names::branch_ref(&requested_branch)
                .map_err(|e| DomainError::Invalid(format!("default branch: {e}")))?;
        }
        // Reserve the name first so two creators of the same name never both build a repo.
        let branch_guess = if requested_branch.is_empty() {
            DEFAULT_BRANCH
        } else {
            &requested_branch
        };
        let project = match self
            .store
            .create_project(&account.id, &req.name, branch_guess)
            .await
        {
            Err(e) if e.is_already_exists() => {
                return Err(DomainError::AlreadyExists(format!(
                    "project name '{}' is already taken (names are unique across all accounts)",
                    req.name
                )));
            }
            other => other?,
        };
        let built = if import.is_empty() {
            let repos = self.repos.clone();
            let (id, name, branch) = (
                project.id.clone(),
                project.name.clone(),
                branch_guess.to_string(),
            );
            tokio::task::spawn_blocking(move || {
                repos
                    .create_empty(&id, &branch, &initial_manifest(&name), &platform_author())
                    .map(|_| branch)
            })
            .await
            .map_err(|e| DomainError::Internal(format!("creating the repository: {e}")))
            .and_then(|r| {
                r.map_err(|e| DomainError::Internal(format!("creating the repository: {e}")))
            })
        } else {
            let wanted = (!requested_branch.is_empty()).then_some(requested_branch.as_str());
            self.repos
                .import(&project.id, &import, wanted)
                .await
                .map(|imported| imported.default_branch)
                .map_err(|e| DomainError::Precondition(format!("importing {import}: {e}")))
        };
        let default_branch = match built {
            Ok(branch) => branch,
            Err(e) => {
                self.undo_create(&project).await;
                return Err(e);
            }
        };
        let project = if default_branch != project.default_branch {
            self.store
                .set_project_default_branch(&project.id, &default_branch)
                .await?
        } else {
            project
        };
        tracing::info!(project = %project.name, import = %import, "project created");
        crate::audit::record(
            &self.store,
            caller,
            crate::audit::Event::in_project("project.create", &project, &project.name)
                .with_detail(&import),
        )
        .await;
        Ok(project)
    }

    /// Compensation for a create whose repository could not be made.
    async fn undo_create(&self, project: &Project) {
        if let Err(e) = self.store.delete_project(&project.id).await {
            tracing::warn!(project = %project.name, error = %e, "undoing a failed create");
        }
        if let Err(e) = self.repos.delete_repo(&project.id) {
            tracing::warn!(project = %project.name, error = %e, "removing a half-made repository");
        }
    }

    /// Local-path (and `file://`) imports read the server's filesystem: only the admin may
    /// ask for one (another account could otherwise copy any repository the server can read,
    /// also on a loopback server shared by several people), and never from inside the data
    /// directory, where every project's repository lives.
    fn check_import_source(&self, source: &str, admin: bool) -> DomainResult<()> {
        let local = if let Some(path) = source.strip_prefix("file://") {
            Some(PathBuf::from(path))
        } else if source.contains("://") || source.contains('@') && source.contains(':') {
            None
        } else {
            Some(PathBuf::from(source))
        };
        let Some(path) = local else {
            return if source.starts_with("http://") || source.starts_with("https://") {
                Ok(())
            } else {
                Err(DomainError::Invalid(format!(
                    "import source {source:?}: use a local path, file://, http:// or https:// URL"
                )))
            };
        };
        if !admin {
            return Err(DomainError::PermissionDenied(
                "importing from a path on the server is for the admin; import from an http(s) URL"
                    .into(),
            ));
        }
        let resolved = path.canonicalize().map_err(|e| {
            DomainError::Precondition(format!("import source {}: {e}", path.display()))
        })?;
        let data_dir = self
            .data_dir
            .canonicalize()
            .unwrap_or_else(|_| self.data_dir.clone());
        if resolved.starts_with(&data_dir) {
            return Err(DomainError::PermissionDenied(
                "cannot import from inside the control plane's data directory".into(),
            ));
        }
        Ok(())
    }

    /// The projects the caller may see, by name.
    pub async fn list(&self, caller: &Caller) -> DomainResult<Vec<Project>> {
        Ok(
            crate::permissions::check::visible_projects(&self.store, caller)
                .await?
                .into_iter()
                .map(|(p, _)| p)
                .collect(),
        )
    }

    /// The project with its default branch's head and manifest. A manifest that cannot be
    /// read is described, not an error: the project itself is fine.
    pub async fn info(&self, caller: &Caller, reference: &str) -> DomainResult<ProjectInfo> {
        let project = crate::permissions::project(&self.store, caller, reference).await?;
        let (head_sha, manifest, manifest_error) = match self
            .manifests
            .get(&project.id, &project.default_branch)
            .await
        {
            Ok(read) => describe(&read),
            Err(e) => (String::new(), None, e.to_string()),
        };
        Ok(ProjectInfo {
            project,
            head_sha,
            manifest,
            manifest_error,
        })
    }
}

fn describe(read: &DefaultBranchManifest) -> (String, Option<kortix_manifest::Manifest>, String) {
    (
        read.head.map(|h| h.to_string()).unwrap_or_default(),
        read.manifest().cloned(),
        read.problem().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn initial_manifest_parses_clean() {
        let m = kortix_manifest::parse(&super::initial_manifest("web")).unwrap();
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        assert_eq!(m.opencode_config_dir(), ".kortix/opencode");
    }
}
