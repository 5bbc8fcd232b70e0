//! The `external` provider: the control plane boots nothing itself. Each sandbox is a bootstrap
//! file `<dir>/<session-id>.json` (mode 0600) holding the agent's environment, for an outside
//! orchestrator (a VM pool, a Kubernetes operator, the load generator) to pick up and run
//! `kortix-agent` with. Killing a sandbox removes the file and reports the exit; the agent's
//! certificate and tokens are revoked by the session lifecycle either way.

use super::{Inventory, SandboxError, SandboxExit, SandboxProvider, SandboxSpec};
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::sync::mpsc;

pub struct ExternalProvider {
    dir: PathBuf,
    live: Mutex<HashSet<String>>,
    exits: mpsc::Sender<SandboxExit>,
}

/// What an orchestrator reads from a bootstrap file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BootstrapFile {
    pub session_id: String,
    pub env: std::collections::BTreeMap<String, String>,
    pub template: String,
}

impl ExternalProvider {
    pub fn new(dir: PathBuf, exits: mpsc::Sender<SandboxExit>) -> Result<Self, std::io::Error> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            live: Mutex::default(),
            exits,
        })
    }

    pub fn bootstrap_path(&self, session_id: &str) -> PathBuf {
        self.dir.join(format!("{session_id}.json"))
    }

    async fn remove_file(&self, session_id: &str) -> Result<(), SandboxError> {
        match tokio::fs::remove_file(self.bootstrap_path(session_id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SandboxError::Io {
                session_id: session_id.to_string(),
                source,
            }),
        }
    }
}

impl SandboxProvider for ExternalProvider {
    fn name(&self) -> &'static str {
        "external"
    }

    fn boot(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(async move {
            let id = spec.session_id.clone();
            let file = BootstrapFile {
                session_id: id.clone(),
                env: spec.env,
                template: spec.resources.template,
            };
            let json = serde_json::to_vec_pretty(&file).map_err(|e| SandboxError::Boot {
                session_id: id.clone(),
                message: e.to_string(),
            })?;
            let path = self.bootstrap_path(&id);
            tokio::task::spawn_blocking(move || {
                crate::secrets::write_private_file(&path, &json, true)
            })
            .await
            .map_err(|e| SandboxError::Boot {
                session_id: id.clone(),
                message: e.to_string(),
            })?
            .map_err(|source| SandboxError::Io {
                session_id: id.clone(),
                source,
            })?;
            self.live.lock().expect("live lock").insert(id);
            Ok(())
        })
    }

    fn kill<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let was_live = self.live.lock().expect("live lock").remove(session_id);
            self.remove_file(session_id).await?;
            if was_live {
                let _ = self
                    .exits
                    .send(SandboxExit {
                        session_id: session_id.to_string(),
                        status: "removed by the control plane".into(),
                        success: false,
                    })
                    .await;
            }
            Ok(())
        })
    }

    fn is_running(&self, session_id: &str) -> bool {
        self.live.lock().expect("live lock").contains(session_id)
    }

    /// Only the bootstrap files this process wrote: whether an orchestrator runs them is not
    /// visible from here.
    fn inventory(&self) -> BoxFuture<'_, Result<Inventory, SandboxError>> {
        Box::pin(async move {
            Ok(Inventory {
                sandboxes: self
                    .live
                    .lock()
                    .expect("live lock")
                    .iter()
                    .cloned()
                    .collect(),
                complete: false,
            })
        })
    }

    fn ends_with_control_plane(&self) -> bool {
        false
    }

    fn discard<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            self.live.lock().expect("live lock").remove(session_id);
            self.remove_file(session_id).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn writes_a_private_bootstrap_file_and_removes_it_on_kill() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(2);
        let p = ExternalProvider::new(dir.path().to_path_buf(), tx).unwrap();
        let spec = SandboxSpec {
            session_id: "s1".into(),
            env: [("KORTIX_BOOTSTRAP_TOKEN".to_string(), "kxb_x".to_string())].into(),
            resources: Default::default(),
            opencode_npm: Vec::new(),
        };
        p.boot(spec).await.unwrap();
        let path = p.bootstrap_path("s1");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let file: BootstrapFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(file.env["KORTIX_BOOTSTRAP_TOKEN"], "kxb_x");
        assert!(p.is_running("s1"));
        p.kill("s1").await.unwrap();
        assert!(!path.exists());
        assert_eq!(rx.recv().await.unwrap().session_id, "s1");
        p.kill("s1").await.unwrap();
    }
}
