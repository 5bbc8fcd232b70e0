//! `ProjectService`: transport for [`crate::projects::Projects`].

use super::{authn::caller, convert};
use crate::projects::{NewProject, Projects as Domain};
use kortix_proto::v1::project_service_server::ProjectService;
use kortix_proto::v1::*;
use tonic::{Request, Response, Status};

pub struct Projects {
    projects: Domain,
}

impl Projects {
    pub fn new(projects: Domain) -> Self {
        Self { projects }
    }

    fn to_pb(&self, p: &crate::store::Project) -> Project {
        convert::project(p, &self.projects.clone_url(p))
    }
}

#[tonic::async_trait]
impl ProjectService for Projects {
    async fn create_project(
        &self,
        request: Request<CreateProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let project = self
            .projects
            .create(
                &who,
                NewProject {
                    name: req.name,
                    import_source: req.import_source,
                    default_branch: req.default_branch,
                    account: req.account,
                },
            )
            .await?;
        Ok(Response::new(self.to_pb(&project)))
    }

    async fn list_projects(
        &self,
        request: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        let who = caller(&request)?;
        let projects = self.projects.list(&who).await?;
        Ok(Response::new(ListProjectsResponse {
            projects: projects.iter().map(|p| self.to_pb(p)).collect(),
        }))
    }

    async fn get_project(
        &self,
        request: Request<GetProjectRequest>,
    ) -> Result<Response<ProjectInfo>, Status> {
        let who = caller(&request)?;
        let info = self
            .projects
            .info(&who, &request.into_inner().project)
            .await?;
        Ok(Response::new(ProjectInfo {
            project: Some(self.to_pb(&info.project)),
            head_sha: info.head_sha,
            manifest_json: info
                .manifest
                .map(|m| m.to_json().to_string())
                .unwrap_or_default(),
            manifest_error: info.manifest_error,
        }))
    }
}
