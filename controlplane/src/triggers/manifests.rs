//! The manifest on each project's default branch, parsed once per branch head.
//!
//! The sweeper asks for every project every second; reading the ref is cheap, reading and
//! parsing `kortix.toml` is not, so the parsed result is kept until the head moves.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use gix::ObjectId;
use kortix_manifest::{Manifest, Trigger};

use super::TriggerError;
use crate::git::{RepoError, Repos, repos::MANIFEST_PATH};

/// What the default branch says about a project's triggers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectManifest {
    /// The default branch's head; `None` when the branch (or the repository) is missing.
    pub head: Option<ObjectId>,
    /// The parsed manifest; `None` when there is none to use (see `problem`).
    pub manifest: Option<Manifest>,
    /// Why there is no manifest: no branch, no `kortix.toml`, or a rejected one.
    pub problem: Option<String>,
}

impl ProjectManifest {
    pub fn triggers(&self) -> &[Trigger] {
        self.manifest
            .as_ref()
            .map_or(&[], |m| m.triggers.as_slice())
    }

    pub fn trigger(&self, slug: &str) -> Option<&Trigger> {
        self.manifest.as_ref().and_then(|m| m.trigger(slug))
    }

    /// Problems with `[[triggers]]` entries (and with the manifest as a whole), as
    /// "slug: message".
    pub fn trigger_errors(&self) -> Vec<String> {
        let mut out: Vec<String> = self.problem.iter().cloned().collect();
        if let Some(m) = &self.manifest {
            for d in m.errors.iter().filter(|d| d.section == "triggers") {
                let who = d
                    .slug
                    .clone()
                    .or_else(|| d.index.map(|i| format!("triggers[{i}]")))
                    .unwrap_or_else(|| "triggers".to_owned());
                out.push(format!("{who}: {}", d.message));
            }
        }
        out
    }
}

/// Parsed manifests by project id, each valid for one head of the default branch.
pub struct ManifestCache {
    repos: Repos,
    entries: Mutex<HashMap<String, Arc<ProjectManifest>>>,
}

impl ManifestCache {
    pub fn new(repos: Repos) -> Self {
        ManifestCache {
            repos,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The manifest on `branch` of the project, re-read only when the branch moved.
    pub async fn get(
        &self,
        project_id: &str,
        branch: &str,
    ) -> Result<Arc<ProjectManifest>, TriggerError> {
        let cached = self.lock().get(project_id).cloned();
        let repos = self.repos.clone();
        let (id, branch_name) = (project_id.to_owned(), branch.to_owned());
        // gix reads are blocking file I/O.
        let loaded = tokio::task::spawn_blocking(move || load(&repos, &id, &branch_name, cached))
            .await
            .map_err(|e| TriggerError::Internal(format!("reading kortix.toml: {e}")))?
            .map_err(|source| TriggerError::Git {
                project_id: project_id.to_owned(),
                source,
            })?;
        self.lock().insert(project_id.to_owned(), loaded.clone());
        Ok(loaded)
    }

    /// Forgets projects not in `keep` (deleted ones), so the cache stays as large as the
    /// set of projects.
    pub fn retain(&self, keep: &HashSet<&str>) {
        self.lock().retain(|id, _| keep.contains(id.as_str()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ProjectManifest>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn load(
    repos: &Repos,
    project_id: &str,
    branch: &str,
    cached: Option<Arc<ProjectManifest>>,
) -> Result<Arc<ProjectManifest>, RepoError> {
    let head = match repos.branch_head(project_id, branch) {
        Ok(head) => head,
        Err(RepoError::NotFound { .. }) => {
            return Ok(Arc::new(ProjectManifest {
                head: None,
                manifest: None,
                problem: Some(format!("project {project_id} has no repository")),
            }));
        }
        Err(e) => return Err(e),
    };
    if let Some(cached) = cached.filter(|c| c.head == head) {
        return Ok(cached);
    }
    let Some(head) = head else {
        return Ok(Arc::new(ProjectManifest {
            head: None,
            manifest: None,
            problem: Some(format!("default branch {branch} does not exist")),
        }));
    };
    // The branch may move between reading its head and reading the file; the result is
    // then filed under the older head and re-read on the next call, never kept stale.
    let loaded = match repos.read_file_at_branch(project_id, branch, MANIFEST_PATH) {
        Ok(Some(bytes)) => match kortix_manifest::parse_bytes(&bytes) {
            Ok(manifest) => ProjectManifest {
                head: Some(head),
                manifest: Some(manifest),
                problem: None,
            },
            Err(e) => ProjectManifest {
                head: Some(head),
                manifest: None,
                problem: Some(format!("{MANIFEST_PATH} on {branch} is rejected: {e}")),
            },
        },
        Ok(None) => ProjectManifest {
            head: Some(head),
            manifest: None,
            problem: Some(format!("no {MANIFEST_PATH} on {branch}")),
        },
        Err(RepoError::FileTooLarge { size, limit, .. }) => ProjectManifest {
            head: Some(head),
            manifest: None,
            problem: Some(format!(
                "{MANIFEST_PATH} on {branch} is {size} bytes, over the {limit}-byte limit"
            )),
        },
        Err(RepoError::NotAFile { .. }) => ProjectManifest {
            head: Some(head),
            manifest: None,
            problem: Some(format!("{MANIFEST_PATH} on {branch} is not a file")),
        },
        Err(RepoError::BranchNotFound { .. }) => ProjectManifest {
            head: None,
            manifest: None,
            problem: Some(format!("default branch {branch} does not exist")),
        },
        Err(e) => return Err(e),
    };
    Ok(Arc::new(loaded))
}
