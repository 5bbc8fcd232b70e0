//! Daytona's wire types, field for field as its API declares them (the NestJS DTOs of
//! `apps/api/src/sandbox/dto` and `apps/api/src/object-storage`; the toolbox's are the
//! daemon's, `apps/daemon/pkg/toolbox`, which the toolbox proxy forwards to), and what their
//! states mean here. Only the fields this provider sends or reads are declared; responses carry
//! more, which are ignored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `CreateSnapshot` (`POST /snapshots`). Resources are whole numbers (CPU cores, GB).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CreateSnapshot {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<u32>,
    pub build_info: CreateBuildInfo,
}

/// `CreateBuildInfo`: the Dockerfile's text and the object-storage hashes of the context
/// archives the runner unpacks beside it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CreateBuildInfo {
    pub dockerfile_content: String,
    pub context_hashes: Vec<String>,
}

/// `SnapshotDto`, the fields read here.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub state: String,
    /// GB, a float; `null` until known.
    #[serde(default)]
    pub size: Option<f64>,
    #[serde(default)]
    pub error_reason: Option<String>,
}

/// `CreateSandbox` (`POST /sandbox`) from a snapshot. Daytona refuses `cpu`, `memory` and
/// `disk` with a snapshot ("Cannot specify Sandbox resources when using a snapshot"): the
/// sandbox takes the snapshot's, which the template's hardware set when it was created.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CreateSandbox {
    pub name: String,
    pub snapshot: String,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub public: bool,
    /// Minutes; 0 disables auto-stop (the control plane owns idleness).
    pub auto_stop_interval: u32,
    /// Minutes; 0 deletes the sandbox as soon as it stops (ephemeral).
    pub auto_delete_interval: i32,
}

/// `SandboxDto` and `SandboxListItem`, the fields read here.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub error_reason: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `ListSandboxesResponse` (`GET /sandbox`), cursor-paged.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPage {
    pub items: Vec<Sandbox>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `ToolboxProxyUrl` (`GET /sandbox/{id}/toolbox-proxy-url`): the base of the sandbox's
/// toolbox, `<url>/<sandboxId>/…`.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolboxProxyUrl {
    pub url: String,
}

/// The toolbox's `ExecuteRequest` (`POST <toolbox>/<sandboxId>/process/execute`): the
/// command goes to the sandbox's shell; `timeout` is in seconds (the daemon kills the
/// command's process group then and answers 408).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteRequest {
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
}

/// The toolbox's `ExecuteResponse`: the exit code (-1 when the command could not start)
/// and its combined output.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteResponse {
    #[serde(default)]
    pub exit_code: i64,
    pub result: String,
}

/// `StorageAccessDto` (`GET /object-storage/push-access`): temporary S3 credentials.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccess {
    pub access_key: String,
    pub secret: String,
    pub session_token: String,
    pub storage_url: String,
    pub organization_id: String,
    pub bucket: String,
}

impl std::fmt::Debug for StorageAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageAccess")
            .field("storage_url", &self.storage_url)
            .field("organization_id", &self.organization_id)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// The body of every Daytona error (`AllExceptionsFilter`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub message: Option<serde_json::Value>,
}

impl ErrorBody {
    /// The message as one line (validation errors come joined, or as a list).
    pub fn message(&self) -> String {
        match &self.message {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    }
}

/// Where a snapshot's build stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotPhase {
    /// `pending`, `building`, `pulling` (and states this client does not know yet).
    Waiting,
    Active,
    /// `build_failed`, `error`, or unusable (`inactive`, `removing`), with the reason.
    Failed(String),
}

impl Snapshot {
    pub fn phase(&self) -> SnapshotPhase {
        let reason = || {
            let why = self.error_reason.as_deref().unwrap_or("").trim();
            if why.is_empty() {
                format!("Daytona snapshot {} is {}", self.name, self.state)
            } else {
                format!("Daytona snapshot {} is {}: {why}", self.name, self.state)
            }
        };
        match self.state.as_str() {
            "active" => SnapshotPhase::Active,
            "build_failed" | "error" | "inactive" | "removing" => SnapshotPhase::Failed(reason()),
            _ => SnapshotPhase::Waiting,
        }
    }

    /// Daytona reports GB; the snapshot row keeps bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(0, |gb| (gb * f64::from(1u32 << 30)) as u64)
    }
}

/// Where a sandbox stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxPhase {
    /// On its way up (`creating`, `starting`, `pulling_snapshot`, ...).
    Starting,
    /// `started` (and live states such as `resizing`).
    Started,
    /// `error`, `build_failed`: failed, with Daytona's reason.
    Failed(String),
    /// Stopped, archived, paused or going away: its agent is not running.
    Ended(String),
}

impl Sandbox {
    pub fn phase(&self) -> SandboxPhase {
        let state = self.state.as_deref().unwrap_or("unknown");
        let described = || {
            let why = self.error_reason.as_deref().unwrap_or("").trim();
            if why.is_empty() {
                format!("Daytona sandbox {} is {state}", self.name)
            } else {
                format!("Daytona sandbox {} is {state}: {why}", self.name)
            }
        };
        match state {
            "started" | "resizing" | "snapshotting" | "forking" => SandboxPhase::Started,
            "error" | "build_failed" => SandboxPhase::Failed(described()),
            "stopped" | "stopping" | "destroyed" | "destroying" | "archived" | "archiving"
            | "paused" | "pausing" => SandboxPhase::Ended(described()),
            _ => SandboxPhase::Starting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_use_daytonas_field_names() {
        let snapshot = CreateSnapshot {
            name: "kortix-snap-1-2".into(),
            entrypoint: Some(vec!["/usr/local/bin/kortix-agent".into()]),
            cpu: Some(2),
            memory: None,
            disk: Some(10),
            build_info: CreateBuildInfo {
                dockerfile_content: "FROM x\n".into(),
                context_hashes: vec!["abc".into()],
            },
        };
        assert_eq!(
            serde_json::to_value(&snapshot).unwrap(),
            serde_json::json!({
                "name": "kortix-snap-1-2",
                "entrypoint": ["/usr/local/bin/kortix-agent"],
                "cpu": 2,
                "disk": 10,
                "buildInfo": {"dockerfileContent": "FROM x\n", "contextHashes": ["abc"]}
            })
        );
        let sandbox = CreateSandbox {
            name: "kortix-session-s".into(),
            snapshot: "kortix-snap-1-2".into(),
            env: BTreeMap::from([("KORTIX_SESSION_ID".into(), "s".into())]),
            labels: BTreeMap::from([("kortix.session".into(), "s".into())]),
            public: false,
            auto_stop_interval: 0,
            auto_delete_interval: 0,
        };
        assert_eq!(
            serde_json::to_value(&sandbox).unwrap(),
            serde_json::json!({
                "name": "kortix-session-s",
                "snapshot": "kortix-snap-1-2",
                "env": {"KORTIX_SESSION_ID": "s"},
                "labels": {"kortix.session": "s"},
                "public": false,
                "autoStopInterval": 0,
                "autoDeleteInterval": 0
            })
        );
    }

    #[test]
    fn toolbox_bodies_use_the_daemons_field_names() {
        let req = ExecuteRequest {
            command: "sh -c 'make'".into(),
            cwd: Some("/workspace/site".into()),
            envs: BTreeMap::from([("GREETING".into(), "hi".into())]),
            timeout: Some(600),
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({
                "command": "sh -c 'make'",
                "cwd": "/workspace/site",
                "envs": {"GREETING": "hi"},
                "timeout": 600
            })
        );
        let bare = ExecuteRequest {
            command: "true".into(),
            cwd: None,
            envs: BTreeMap::new(),
            timeout: None,
        };
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            serde_json::json!({"command": "true"})
        );
        let resp: ExecuteResponse =
            serde_json::from_str(r#"{"exitCode":3,"result":"no\n"}"#).unwrap();
        assert_eq!((resp.exit_code, resp.result.as_str()), (3, "no\n"));
        let url: ToolboxProxyUrl =
            serde_json::from_str(r#"{"url":"https://proxy.app.daytona.io/toolbox"}"#).unwrap();
        assert_eq!(url.url, "https://proxy.app.daytona.io/toolbox");
    }

    fn snapshot(state: &str, reason: Option<&str>) -> Snapshot {
        Snapshot {
            id: "i".into(),
            name: "n".into(),
            state: state.into(),
            size: Some(0.5),
            error_reason: reason.map(str::to_owned),
        }
    }

    fn sandbox(state: Option<&str>, reason: Option<&str>) -> Sandbox {
        Sandbox {
            id: "i".into(),
            name: "n".into(),
            state: state.map(str::to_owned),
            error_reason: reason.map(str::to_owned),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn states_map_to_phases() {
        for waiting in ["pending", "building", "pulling", "something_new"] {
            assert_eq!(snapshot(waiting, None).phase(), SnapshotPhase::Waiting);
        }
        assert_eq!(snapshot("active", None).phase(), SnapshotPhase::Active);
        assert_eq!(
            snapshot("build_failed", Some("exit status 3")).phase(),
            SnapshotPhase::Failed("Daytona snapshot n is build_failed: exit status 3".into())
        );
        assert_eq!(
            snapshot("error", None).phase(),
            SnapshotPhase::Failed("Daytona snapshot n is error".into())
        );
        assert_eq!(snapshot("active", None).size_bytes(), 1 << 29);

        assert_eq!(
            sandbox(Some("started"), None).phase(),
            SandboxPhase::Started
        );
        for starting in [
            None,
            Some("creating"),
            Some("starting"),
            Some("pulling_snapshot"),
        ] {
            assert_eq!(sandbox(starting, None).phase(), SandboxPhase::Starting);
        }
        assert_eq!(
            sandbox(Some("build_failed"), Some("no space")).phase(),
            SandboxPhase::Failed("Daytona sandbox n is build_failed: no space".into())
        );
        assert_eq!(
            sandbox(Some("error"), None).phase(),
            SandboxPhase::Failed("Daytona sandbox n is error".into())
        );
        assert!(matches!(
            sandbox(Some("stopped"), None).phase(),
            SandboxPhase::Ended(_)
        ));
    }

    #[test]
    fn error_bodies_read_as_one_line() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"path":"/api/sandbox","timestamp":"t","statusCode":400,"error":"Bad Request","message":"name must be a string"}"#,
        )
        .unwrap();
        assert_eq!(body.message(), "name must be a string");
        let body: ErrorBody =
            serde_json::from_str(r#"{"statusCode":400,"message":["a","b"]}"#).unwrap();
        assert_eq!(body.message(), "a, b");
    }
}
