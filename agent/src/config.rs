//! Daemon settings, read from the environment (see CLI.md, "The agent").

use std::path::PathBuf;
use std::time::Duration;

/// How the agent learns to trust the control plane's TLS certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaTrust {
    /// The CA certificate itself, PEM.
    Pem(String),
    /// SHA-256 of the CA certificate's DER; the CA is taken from the chain the server presents
    /// when (and only when) one of its certificates has this digest.
    Fingerprint([u8; 32]),
}

#[derive(Clone, Debug)]
pub struct Config {
    /// `https://host:port` of every agent gateway (the control plane's replicas), at least
    /// one: the agent enrolls through any that answers and fails over between them.
    pub control_planes: Vec<String>,
    /// Start at the first of `control_planes` (`KORTIX_CONTROL_PLANE_ORDER=listed`) instead of
    /// a random one: for a sandbox placed beside one replica, which lists it first.
    pub listed_order: bool,
    pub session_id: String,
    pub bootstrap_token: String,
    pub ca: CaTrust,
    pub workspace: PathBuf,
    pub opencode_bin: PathBuf,
    /// Records spool and the credential socket live here, outside the workspace.
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub heartbeat_interval: Duration,
    /// Reap every child (`waitpid(-1)`): set when the agent is PID 1 or a child subreaper.
    /// A library caller (tests) leaves it off so that it only ever waits for its own children.
    pub reap_orphans: bool,
    /// Path of the `kortix-agent` executable registered as git's credential helper.
    pub helper_exe: PathBuf,
    /// OpenCode's base environment; `None` takes the agent's own (minus `KORTIX_*`). Lets a
    /// library caller give OpenCode a private HOME without touching the process environment.
    pub opencode_env: Option<std::collections::BTreeMap<String, String>>,
    /// OpenCode's packages installed once by the control plane and shared read-only
    /// (`KORTIX_OPENCODE_PACKAGES`); linked into OpenCode's directories before it starts.
    pub opencode_packages: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("reading {name} from {path}: {source}")]
    Read {
        name: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get`, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let req = |name: &'static str| -> Result<String, ConfigError> {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        let control_planes = parse_control_planes(&req("KORTIX_CONTROL_PLANE")?)?;
        let listed_order = match get("KORTIX_CONTROL_PLANE_ORDER").as_deref().map(str::trim) {
            None | Some("" | "random") => false,
            Some("listed") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "KORTIX_CONTROL_PLANE_ORDER",
                    reason: format!("{other:?} is neither \"random\" nor \"listed\""),
                });
            }
        };
        let session_id = req("KORTIX_SESSION_ID")?;
        let bootstrap_token = req("KORTIX_BOOTSTRAP_TOKEN")?;
        let ca = match (
            get("KORTIX_CA_CERT").filter(|v| !v.trim().is_empty()),
            get("KORTIX_CA_FINGERPRINT"),
        ) {
            (Some(v), _) => CaTrust::Pem(read_pem_or_path(&v)?),
            (None, Some(fp)) if !fp.trim().is_empty() => {
                CaTrust::Fingerprint(parse_fingerprint(&fp)?)
            }
            _ => {
                return Err(ConfigError::Missing(
                    "KORTIX_CA_CERT or KORTIX_CA_FINGERPRINT",
                ));
            }
        };
        let home = get("HOME")
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "/root".into());
        let workspace = get("KORTIX_WORKSPACE")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "/workspace".into());
        let spool_dir = get("KORTIX_SPOOL_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(home).join(".kortix-agent"));
        let heartbeat_interval = match get("KORTIX_HEARTBEAT_SECS").filter(|v| !v.is_empty()) {
            Some(v) => Duration::from_secs(parse_bounded("KORTIX_HEARTBEAT_SECS", &v, 1, 3600)?),
            None => DEFAULT_HEARTBEAT,
        };
        let spool_max_bytes = match get("KORTIX_SPOOL_MAX_BYTES").filter(|v| !v.is_empty()) {
            Some(v) => parse_bounded("KORTIX_SPOOL_MAX_BYTES", &v, 1 << 20, 1 << 40)?,
            None => DEFAULT_SPOOL_MAX_BYTES,
        };
        let helper_exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kortix-agent"));
        Ok(Config {
            control_planes,
            listed_order,
            session_id,
            bootstrap_token,
            ca,
            workspace: PathBuf::from(workspace),
            opencode_bin: PathBuf::from(
                get("KORTIX_OPENCODE_BIN")
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "opencode".into()),
            ),
            spool_dir,
            spool_max_bytes,
            heartbeat_interval,
            reap_orphans: false,
            helper_exe,
            opencode_env: None,
            opencode_packages: get("KORTIX_OPENCODE_PACKAGES")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        })
    }
}

/// Most gateway URLs `KORTIX_CONTROL_PLANE` may list.
pub const MAX_CONTROL_PLANES: usize = 16;

/// `KORTIX_CONTROL_PLANE`: one `https://` URL or a comma-separated list of them (one per
/// control-plane replica), duplicates dropped, order kept.
pub fn parse_control_planes(value: &str) -> Result<Vec<String>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "KORTIX_CONTROL_PLANE",
        reason,
    };
    let mut urls: Vec<String> = Vec::new();
    for part in value.split(',') {
        let url = part.trim().trim_end_matches('/');
        if url.is_empty() {
            continue;
        }
        if !url.starts_with("https://") {
            return Err(invalid(format!("{url:?} must be an https:// URL")));
        }
        if host_of(url).is_none() {
            return Err(invalid(format!("no host in {url:?}")));
        }
        if !urls.iter().any(|u| u == url) {
            urls.push(url.to_owned());
        }
    }
    if urls.is_empty() {
        return Err(invalid("names no URL".into()));
    }
    if urls.len() > MAX_CONTROL_PLANES {
        return Err(invalid(format!(
            "names {} URLs; at most {MAX_CONTROL_PLANES}",
            urls.len()
        )));
    }
    Ok(urls)
}

/// The host part of an `https://host[:port][/...]` URL, without brackets for IPv6.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_owned())
}

fn read_pem_or_path(value: &str) -> Result<String, ConfigError> {
    if value.contains("-----BEGIN") {
        return Ok(value.to_owned());
    }
    let path = PathBuf::from(value.trim());
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        name: "KORTIX_CA_CERT",
        path: path.clone(),
        source,
    })?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::Invalid {
            name: "KORTIX_CA_CERT",
            reason: format!("{} holds no PEM certificate", path.display()),
        });
    }
    Ok(text)
}

fn parse_fingerprint(value: &str) -> Result<[u8; 32], ConfigError> {
    let cleaned: String = value
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let bytes = hex::decode(&cleaned).map_err(|e| ConfigError::Invalid {
        name: "KORTIX_CA_FINGERPRINT",
        reason: format!("not hex: {e}"),
    })?;
    bytes.try_into().map_err(|b: Vec<u8>| ConfigError::Invalid {
        name: "KORTIX_CA_FINGERPRINT",
        reason: format!("expected 32 bytes of SHA-256, got {}", b.len()),
    })
}

fn parse_bounded(name: &'static str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let v: u64 = value.trim().parse().map_err(|e| ConfigError::Invalid {
        name,
        reason: format!("{value:?}: {e}"),
    })?;
    if !(min..=max).contains(&v) {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{v} is outside {min}..={max}"),
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("KORTIX_CONTROL_PLANE", "https://127.0.0.1:7443/"),
        ("KORTIX_SESSION_ID", "s1"),
        ("KORTIX_BOOTSTRAP_TOKEN", "tok"),
        ("HOME", "/home/u"),
    ];

    #[test]
    fn defaults_and_fingerprint() {
        let mut env = BASE.to_vec();
        let fp = "AB:".repeat(31) + "AB";
        env.push(("KORTIX_CA_FINGERPRINT", &fp));
        let c = Config::from_lookup(lookup(&env)).unwrap();
        assert_eq!(c.control_planes, ["https://127.0.0.1:7443"]);
        assert_eq!(c.ca, CaTrust::Fingerprint([0xab; 32]));
        assert_eq!(c.workspace, PathBuf::from("/workspace"));
        assert_eq!(c.opencode_bin, PathBuf::from("opencode"));
        assert_eq!(c.spool_dir, PathBuf::from("/home/u/.kortix-agent"));
        assert_eq!(c.heartbeat_interval, DEFAULT_HEARTBEAT);
        assert!(!c.listed_order);
        env.push(("KORTIX_CONTROL_PLANE_ORDER", "listed"));
        assert!(Config::from_lookup(lookup(&env)).unwrap().listed_order);
        env.pop();
        env.push(("KORTIX_CONTROL_PLANE_ORDER", "first"));
        assert!(matches!(
            Config::from_lookup(lookup(&env)),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn a_list_of_gateways() {
        assert_eq!(
            parse_control_planes(" https://a:1/, https://b:2 ,,https://a:1").unwrap(),
            ["https://a:1", "https://b:2"]
        );
        for bad in ["", " , ", "https://a:1,http://b:2", "https://", "nope"] {
            assert!(
                matches!(parse_control_planes(bad), Err(ConfigError::Invalid { .. })),
                "{bad:?}"
            );
        }
        let many = (0..=MAX_CONTROL_PLANES)
            .map(|i| format!("https://h{i}:1"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_control_planes(&many).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        let env = BASE.to_vec();
        assert!(matches!(
            Config::from_lookup(lookup(&env)),
            Err(ConfigError::Missing(_))
        ));
        let mut env = BASE.to_vec();
        env.push(("KORTIX_CA_FINGERPRINT", "abcd"));
        assert!(matches!(
            Config::from_lookup(lookup(&env)),
            Err(ConfigError::Invalid { .. })
        ));
        let mut env = BASE.to_vec();
        env[0] = ("KORTIX_CONTROL_PLANE", "http://x");
        env.push(("KORTIX_CA_CERT", "-----BEGIN CERTIFICATE-----\n"));
        assert!(matches!(
            Config::from_lookup(lookup(&env)),
            Err(ConfigError::Invalid { .. })
        ));
        let mut env = BASE.to_vec();
        env.push(("KORTIX_CA_CERT", "/nonexistent/ca.pem"));
        assert!(matches!(
            Config::from_lookup(lookup(&env)),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("https://[::1]:8443/x").as_deref(), Some("::1"));
        assert_eq!(
            host_of("https://user@example.com/git/p.git").as_deref(),
            Some("example.com")
        );
        assert_eq!(host_of("nope"), None);
    }
}
