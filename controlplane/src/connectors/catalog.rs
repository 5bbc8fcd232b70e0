//! Each connector's tools, built from its definition and kept until the definition changes
//! (the connector's manifest entry, and the default branch's head for specs read from the
//! repository). A failed build is kept only briefly, so an upstream that was down is asked
//! again soon, but not on every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kortix_manifest::{Connector, Provider, Transport};
use serde_json::json;

use super::ConnectorSettings;
use super::mcp_client::McpUpstream;
use super::tools::{Catalog, MAX_SPEC_BYTES, Risk, Target, Tool};
use super::upstream::{AppliedAuth, fetch_spec};
use super::{graphql, openapi};
use crate::git::Repos;
use crate::store::Project;

/// How long a failed build is remembered.
const FAILURE_TTL: Duration = Duration::from_secs(30);
/// Most catalogs kept; past it the cache starts over (projects × connectors is small).
const MAX_ENTRIES: usize = 4096;

struct Entry {
    fingerprint: String,
    catalog: Arc<Catalog>,
    built: Instant,
}

pub struct Catalogs {
    client: reqwest::Client,
    repos: Repos,
    settings: ConnectorSettings,
    cache: Mutex<HashMap<(String, String), Entry>>,
}

impl Catalogs {
    pub fn new(client: reqwest::Client, repos: Repos, settings: ConnectorSettings) -> Self {
        Self {
            client,
            repos,
            settings,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The connector's catalog at the default branch's `head`.
    pub async fn get(
        &self,
        project: &Project,
        head: &str,
        connector: &Connector,
        auth: &AppliedAuth,
    ) -> Arc<Catalog> {
        let fingerprint = fingerprint(connector, head);
        let key = (project.id.clone(), connector.slug.clone());
        if let Some(e) = self.lock().get(&key)
            && e.fingerprint == fingerprint
            && (e.catalog.unavailable.is_none() || e.built.elapsed() < FAILURE_TTL)
        {
            return e.catalog.clone();
        }
        let catalog = Arc::new(self.build(project, connector, auth).await);
        let mut cache = self.lock();
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(
            key,
            Entry {
                fingerprint,
                catalog: catalog.clone(),
                built: Instant::now(),
            },
        );
        catalog
    }

    async fn build(&self, project: &Project, c: &Connector, auth: &AppliedAuth) -> Catalog {
        if !c.enabled {
            return Catalog::unavailable("disabled in kortix.toml (enabled = false)");
        }
        let result = match c.provider {
            Provider::Pipedream => Err(
                "pipedream connectors need Pipedream's hosted API, which this control plane does not reach; no tools are offered"
                    .to_owned(),
            ),
            Provider::Openapi => match c.spec.as_deref() {
                Some(spec) => self.openapi(project, spec, None, auth).await,
                None => Err("no `spec`".to_owned()),
            },
            Provider::Http => {
                let base = c.base_url.as_deref().unwrap_or_default();
                match c.spec.as_deref() {
                    Some(spec) => self.openapi(project, spec, Some(base), auth).await,
                    None => Ok(generic(base)),
                }
            }
            Provider::Mcp => self.mcp(c, auth).await,
            Provider::Graphql => self.graphql(project, c, auth).await,
        };
        result.unwrap_or_else(|why| {
            tracing::warn!(project = %project.name, connector = %c.slug, "connector catalog: {why}");
            Catalog::unavailable(why)
        })
    }

    async fn openapi(
        &self,
        project: &Project,
        spec: &str,
        base_url: Option<&str>,
        auth: &AppliedAuth,
    ) -> Result<Catalog, String> {
        let (text, spec_url) = self.spec(project, spec, auth).await?;
        openapi::catalog(&text, base_url, spec_url).map_err(|e| format!("spec {spec}: {e}"))
    }

    /// A spec's text, by URL (with the connector's credential) or from the repository; the
    /// URL too when it came from one.
    async fn spec<'s>(
        &self,
        project: &Project,
        spec: &'s str,
        auth: &AppliedAuth,
    ) -> Result<(String, Option<&'s str>), String> {
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let text = fetch_spec(
                &self.client,
                spec,
                auth,
                self.settings.call_timeout,
                MAX_SPEC_BYTES,
            )
            .await
            .map_err(|e| format!("fetching the spec: {e}"))?;
            Ok((text, Some(spec)))
        } else {
            Ok((self.repo_file(project, spec).await?, None))
        }
    }

    /// The SDL when the connector names one, else the endpoint's introspection.
    async fn graphql(
        &self,
        project: &Project,
        c: &Connector,
        auth: &AppliedAuth,
    ) -> Result<Catalog, String> {
        let endpoint = c.endpoint.as_deref().ok_or("no `endpoint`")?;
        let schema = match c.spec.as_deref() {
            Some(spec) => {
                let (text, _) = self.spec(project, spec, auth).await?;
                graphql::from_sdl(&text).map_err(|e| format!("spec {spec}: {e}"))?
            }
            None => {
                graphql::introspect(
                    &self.client,
                    endpoint,
                    auth,
                    self.settings.call_timeout,
                    MAX_SPEC_BYTES,
                )
                .await?
            }
        };
        Ok(graphql::catalog(&schema, endpoint))
    }

    async fn repo_file(&self, project: &Project, path: &str) -> Result<String, String> {
        let (repos, id, branch, p) = (
            self.repos.clone(),
            project.id.clone(),
            project.default_branch.clone(),
            path.to_owned(),
        );
        let bytes =
            tokio::task::spawn_blocking(move || repos.read_file_at_branch(&id, &branch, &p))
                .await
                .map_err(|e| format!("reading {path}: {e}"))?
                .map_err(|e| format!("reading {path}: {e}"))?
                .ok_or_else(|| format!("{path} is not on {}", project.default_branch))?;
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(format!("{path} is larger than {MAX_SPEC_BYTES} bytes"));
        }
        String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8 text"))
    }

    async fn mcp(&self, c: &Connector, auth: &AppliedAuth) -> Result<Catalog, String> {
        let url = c.url.as_deref().ok_or("no `url`")?;
        let upstream = McpUpstream {
            client: &self.client,
            url,
            transport: c.transport.unwrap_or(Transport::Http),
            auth,
            timeout: self.settings.call_timeout,
            cap: MAX_SPEC_BYTES,
        };
        let tools = upstream
            .list_tools()
            .await
            .map_err(|e| format!("listing the MCP server's tools: {e}"))?;
        Ok(Catalog::bounded(tools, url.to_owned()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the catalog depends on: the connector's definition, and for specs read from the
/// repository the head they were read at.
fn fingerprint(c: &Connector, head: &str) -> String {
    let definition = serde_json::to_string(c).unwrap_or_default();
    let from_repo = c
        .spec
        .as_deref()
        .is_some_and(|s| !s.starts_with("http://") && !s.starts_with("https://"));
    if from_repo {
        format!("{definition}@{head}")
    } else {
        definition
    }
}

/// An `http` connector without a spec: one tool for any request under its base URL.
fn generic(base: &str) -> Catalog {
    Catalog::bounded(
        vec![Tool {
            name: "request".into(),
            description: format!(
                "An HTTP request to {base}: method, path (under the base URL), optional query object and JSON body."
            ),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "method": {"type": "string", "description": "GET, POST, PUT, PATCH, DELETE, …"},
                    "path": {"type": "string", "description": "absolute path, e.g. /items/1"},
                    "query": {"type": "object"},
                    "body": {}
                },
                "required": ["path"]
            }),
            risk: Risk::Write,
            target: Target::HttpGeneric,
        }],
        base.trim_end_matches('/').to_owned(),
    )
}
