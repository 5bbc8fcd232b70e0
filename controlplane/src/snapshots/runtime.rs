//! The Kortix runtime layer every snapshot ends with: `kortix-agent` as the entrypoint (PID 1)
//! and the pinned OpenCode binary, plus git and CA certificates when the image lacks them.
//! Its fingerprint (the digests of both binaries and the layer's text) is part of every
//! snapshot hash, so a new agent or OpenCode rebuilds every snapshot once.

use aws_lc_rs::digest::{Context, SHA256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the runtime's files sit inside a build context (a name no project uses).
pub const CONTEXT_DIR: &str = ".kortix-runtime";

/// The instructions appended to the user's Dockerfile (or to `FROM <image>`). They continue
/// the last stage: the user's final image plus the runtime. The files come from the build
/// context (no registry, no network needed), with their modes from the archive.
pub const LAYER: &str = r#"
# --- The Kortix runtime layer, appended by the control plane.
USER root
COPY .kortix-runtime/kortix-agent /usr/local/bin/kortix-agent
COPY .kortix-runtime/opencode /opt/opencode
RUN set -e; \
    ln -sf /opt/opencode/bin/opencode /usr/local/bin/opencode; \
    mkdir -p /workspace /root; chmod 0700 /root; \
    if ! command -v git >/dev/null 2>&1 || [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        if command -v apt-get >/dev/null 2>&1; then \
            apt-get update && apt-get install -y --no-install-recommends git ca-certificates \
            && rm -rf /var/lib/apt/lists/*; \
        elif command -v apk >/dev/null 2>&1; then \
            apk add --no-cache git ca-certificates; \
        else \
            echo "kortix runtime layer: the image has no git or CA certificates and no apt-get or apk to install them" >&2; \
            exit 1; \
        fi; \
    fi
ENV HOME=/root KORTIX_WORKSPACE=/workspace
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/kortix-agent"]
CMD []
"#;

#[derive(Debug, thiserror::Error)]
#[error("the runtime layer's {what} {}: {source}", path.display())]
pub struct RuntimeError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The binaries of the runtime layer and their fingerprint.
#[derive(Debug, Clone)]
pub struct RuntimeLayer {
    pub agent: PathBuf,
    pub opencode: PathBuf,
    fingerprint: String,
}

impl RuntimeLayer {
    /// Reads both binaries once to fingerprint them (blocking file I/O).
    pub fn load(agent: &Path, opencode: &Path) -> Result<Self, RuntimeError> {
        let agent_digest = file_digest(agent, "agent")?;
        let opencode_digest = file_digest(opencode, "OpenCode binary")?;
        let mut c = Context::new(&SHA256);
        for part in ["kortix-runtime-v1", &agent_digest, &opencode_digest, LAYER] {
            c.update(&(part.len() as u64).to_be_bytes());
            c.update(part.as_bytes());
        }
        Ok(Self {
            agent: agent.to_path_buf(),
            opencode: opencode.to_path_buf(),
            fingerprint: hex::encode(c.finish().as_ref()),
        })
    }

    /// The `runtime` input of the snapshot hash.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

fn file_digest(path: &Path, what: &'static str) -> Result<String, RuntimeError> {
    let err = |source| RuntimeError {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut c = Context::new(&SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        c.update(&buf[..n]);
    }
    Ok(hex::encode(c.finish().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_both_binaries() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, opencode) = (dir.path().join("agent"), dir.path().join("opencode"));
        std::fs::write(&agent, b"agent v1").unwrap();
        std::fs::write(&opencode, b"opencode v1").unwrap();
        let first = RuntimeLayer::load(&agent, &opencode).unwrap();
        assert_eq!(
            RuntimeLayer::load(&agent, &opencode).unwrap().fingerprint(),
            first.fingerprint()
        );
        std::fs::write(&agent, b"agent v2").unwrap();
        let second = RuntimeLayer::load(&agent, &opencode).unwrap();
        assert_ne!(second.fingerprint(), first.fingerprint());
        std::fs::write(&opencode, b"opencode v2").unwrap();
        assert_ne!(
            RuntimeLayer::load(&agent, &opencode).unwrap().fingerprint(),
            second.fingerprint()
        );
        let missing = RuntimeLayer::load(&dir.path().join("nope"), &opencode).unwrap_err();
        assert!(missing.to_string().contains("agent"), "{missing}");
    }
}
