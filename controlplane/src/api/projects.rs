//! `ProjectService`: projects are bare repos with a `kortix.toml` on their default branch.

use super::{authn::caller, convert, store_status};
use crate::git::{Author, Repos};
use crate::store::Store;
use kortix_proto::v1::project_service_server::ProjectService;
use kortix_proto::v1::*;
use tonic::{Request, Response, Status};

const DEFAULT_BRANCH: &str = "main";

pub struct Projects {
    store: Store,
    repos: Repos,
    public_url: String,
    data_dir: std::path::PathBuf,
    /// Whether non-admin callers may import from the server's own filesystem. True when the
    /// public listener is loopback-only (the caller is on this machine anyway).
    local_imports: bool,
}

impl Projects {
    pub fn new(
        store: Store,
        repos: Repos,
        public_url: String,
        data_dir: std::path::PathBuf,
        local_imports: bool,
    ) -> Self {
        Self {
            store,
            repos,
            public_url,
            data_dir,
            local_imports,
        }
    }

    /// Local-path (and `file://`) imports read the server's filesystem: never from inside the
    /// data directory (other projects' repositories live there), and for non-admins only on
    /// a loopback-only server.
    fn check_import_source(&self, source: &str, admin: bool) -> Result<(), Status> {
        let local = if let Some(path) = source.strip_prefix("file://") {
            Some(std::path::PathBuf::from(path))
        } else if source.contains("://") || source.contains('@') && source.contains(':') {
            None
        } else {
            Some(std::path::PathBuf::from(source))
        };
        let Some(path) = local else {
            return if source.starts_with("http://") || source.starts_with("https://") {
                Ok(())
            } else {
                Err(Status::invalid_argument(format!(
                    "import source {source:?}: use a local path, file://, http:// or https:// URL"
                )))
            };
        };
        if !admin && !self.local_imports {
            return Err(Status::permission_denied(
                "importing from the server's filesystem is limited to the admin on a non-loopback server",
            ));
        }
        let resolved = path.canonicalize().map_err(|e| {
            Status::failed_precondition(format!("import source {}: {e}", path.display()))
        })?;
        let data_dir = self
            .data_dir
            .canonicalize()
            .unwrap_or_else(|_| self.data_dir.clone());
        if resolved.starts_with(&data_dir) {
            return Err(Status::permission_denied(
                "cannot import from inside the control plane's data directory",
            ));
        }
        Ok(())
    }
}

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

#[tonic::async_trait]
impl ProjectService for Projects {
    async fn create_project(
        &self,
        request: Request<CreateProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        crate::store::validate_name("project name", &req.name).map_err(store_status)?;
        let import = req.import_source.trim().to_string();
        if !import.is_empty() {
            self.check_import_source(&import, who.admin)?;
        }
        let requested_branch = req.default_branch.trim().to_string();
        if !requested_branch.is_empty() {
            crate::git::names::branch_ref(&requested_branch)
                .map_err(|e| Status::invalid_argument(format!("default branch: {e}")))?;
        }
        // Reserve the name first so two creators of the same name never both build a repo.
        let branch_guess = if requested_branch.is_empty() {
            DEFAULT_BRANCH
        } else {
            &requested_branch
        };
        let project = self
            .store
            .create_project(&who.account_id, &req.name, branch_guess)
            .await
            .map_err(store_status)?;
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
            .map_err(|e| Status::internal(format!("creating the repository: {e}")))?
            .map_err(|e| Status::internal(format!("creating the repository: {e}")))
        } else {
            let wanted = (!requested_branch.is_empty()).then_some(requested_branch.as_str());
            self.repos
                .import(&project.id, &import, wanted)
                .await
                .map(|imported| imported.default_branch)
                .map_err(|e| Status::failed_precondition(format!("importing {import}: {e}")))
        };
        let default_branch = match built {
            Ok(branch) => branch,
            Err(status) => {
                let _ = self.store.delete_project(&project.id).await;
                let _ = self.repos.delete_repo(&project.id);
                return Err(status);
            }
        };
        let project = if default_branch != project.default_branch {
            self.store
                .set_project_default_branch(&project.id, &default_branch)
                .await
                .map_err(store_status)?
        } else {
            project
        };
        tracing::info!(project = %project.name, import = %import, "project created");
        Ok(Response::new(convert::project(&project, &self.public_url)))
    }

    async fn list_projects(
        &self,
        request: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        let who = caller(&request)?;
        let projects = self
            .store
            .list_projects(&who.account_id)
            .await
            .map_err(store_status)?;
        Ok(Response::new(ListProjectsResponse {
            projects: projects
                .iter()
                .map(|p| convert::project(p, &self.public_url))
                .collect(),
        }))
    }

    async fn get_project(
        &self,
        request: Request<GetProjectRequest>,
    ) -> Result<Response<ProjectInfo>, Status> {
        let who = caller(&request)?;
        let project = self
            .store
            .get_project(&who.account_id, &request.into_inner().project)
            .await
            .map_err(store_status)?;
        let repos = self.repos.clone();
        let (id, branch) = (project.id.clone(), project.default_branch.clone());
        let read = tokio::task::spawn_blocking(move || {
            let head = repos.branch_head(&id, &branch)?;
            let file = repos.read_file_at_branch(&id, &branch, kortix_manifest::MANIFEST_FILE)?;
            Ok::<_, crate::git::RepoError>((head, file))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let (head_sha, manifest_json, manifest_error) = match read {
            Err(e) => (String::new(), String::new(), e.to_string()),
            Ok((head, None)) => (
                head.map(|h| h.to_string()).unwrap_or_default(),
                String::new(),
                format!(
                    "no {} on {}",
                    kortix_manifest::MANIFEST_FILE,
                    project.default_branch
                ),
            ),
            Ok((head, Some(bytes))) => {
                let head = head.map(|h| h.to_string()).unwrap_or_default();
                match kortix_manifest::parse_bytes(&bytes) {
                    Ok(m) => (head, m.to_json().to_string(), String::new()),
                    Err(e) => (head, String::new(), e.to_string()),
                }
            }
        };
        Ok(Response::new(ProjectInfo {
            project: Some(convert::project(&project, &self.public_url)),
            head_sha,
            manifest_json,
            manifest_error,
        }))
    }
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
