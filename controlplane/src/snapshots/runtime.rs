//! The Kortix runtime layer every snapshot ends with: `kortix-agent` as the entrypoint (PID 1)
//! and the pinned OpenCode binary, plus git and CA certificates when the image lacks them.
//! With OpenCode's package set (see `sandbox::opencode_packages`) the layer also carries it,
//! read-only at [`PACKAGES_IN_IMAGE`], so a container's OpenCode starts without a registry.
//! Its fingerprint (the digests of both binaries, of the package set and of the layer's text)
//! is part of every snapshot hash, so a new agent, OpenCode or package set rebuilds every
//! snapshot once.
//!
//! The layer's files reach a build in one of two ways ([`RuntimeFrom`]): in the build context
//! (a remote builder such as Daytona sees nothing else), or — on a container engine that keeps
//! the images it built — from a runtime image built once per fingerprint
//! ([`RuntimeLayer::image_name`]) and copied in with `COPY --from`, so a cold snapshot build
//! uploads only the user's directory instead of ~265 MB of runtime every time.

use aws_lc_rs::digest::{Context, SHA256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the runtime's files sit inside a build context (a name no project uses).
pub const CONTEXT_DIR: &str = ".kortix-runtime";

/// The instructions appended to the user's Dockerfile (or to `FROM <image>`). They continue
/// the last stage: the user's final image plus the runtime. The files come from the build
/// context or the runtime image (no registry, no network needed), with their modes;
/// `{src}` is where ([`RuntimeFrom::copy_source`]).
pub const LAYER: &str = r#"
# --- The Kortix runtime layer, appended by the control plane.
USER root
COPY {src}kortix-agent /usr/local/bin/kortix-agent
COPY {src}opencode /opt/opencode
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

/// Where the package set sits in an image.
pub const PACKAGES_IN_IMAGE: &str = "/opt/kortix/opencode-packages";

/// Appended after [`LAYER`] when the layer carries OpenCode's package set.
pub const PACKAGES_LAYER: &str = r#"COPY {src}opencode-packages /opt/kortix/opencode-packages
ENV KORTIX_OPENCODE_PACKAGES=/opt/kortix/opencode-packages
"#;

/// Where the runtime image's files sit, relative to the root of the image or to
/// [`CONTEXT_DIR`]: the agent, OpenCode's binary, and the package set.
const AGENT_FILE: &str = "kortix-agent";
const OPENCODE_FILE: &str = "opencode/bin/opencode";
const PACKAGES_DIR: &str = "opencode-packages";

/// The runtime image's own Dockerfile: nothing but the layer's files.
const IMAGE_DOCKERFILE: &str =
    "FROM scratch\nCOPY kortix-agent /kortix-agent\nCOPY opencode /opencode\n";
const IMAGE_PACKAGES: &str = "COPY opencode-packages /opencode-packages\n";
/// Where the runtime image's Dockerfile sits in its context.
pub const IMAGE_DOCKERFILE_PATH: &str = "Dockerfile";

/// Where a snapshot build takes the runtime's files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeFrom {
    /// The build context, under [`CONTEXT_DIR`].
    Context,
    /// The runtime image of that name, which the engine holds.
    Image(String),
}

impl RuntimeFrom {
    /// What `COPY` names the layer's files by.
    fn copy_source(&self) -> String {
        match self {
            RuntimeFrom::Context => format!("{CONTEXT_DIR}/"),
            RuntimeFrom::Image(image) => format!("--from={image} /"),
        }
    }
}

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
    /// OpenCode's installed package set for this OpenCode, when there is one.
    pub packages: Option<PathBuf>,
    binaries: String,
    fingerprint: String,
}

impl RuntimeLayer {
    /// Reads both binaries once to fingerprint them (blocking file I/O).
    pub fn load(agent: &Path, opencode: &Path) -> Result<Self, RuntimeError> {
        let agent_digest = file_digest(agent, "agent")?;
        let opencode_digest = file_digest(opencode, "OpenCode binary")?;
        let binaries = digest_parts(&["kortix-runtime-v1", &agent_digest, &opencode_digest, LAYER]);
        Ok(Self {
            agent: agent.to_path_buf(),
            opencode: opencode.to_path_buf(),
            packages: None,
            fingerprint: binaries.clone(),
            binaries,
        })
    }

    /// The layer with OpenCode's package set `dir` in it (blocking: reads the whole set
    /// once for its digest).
    pub fn with_packages(mut self, dir: &Path) -> Result<Self, RuntimeError> {
        let tree = tree_digest(dir).map_err(|source| RuntimeError {
            what: "OpenCode package set",
            path: dir.to_path_buf(),
            source,
        })?;
        self.fingerprint = digest_parts(&[
            "kortix-runtime-packages-v1",
            &self.binaries,
            &tree,
            PACKAGES_LAYER,
        ]);
        self.packages = Some(dir.to_path_buf());
        Ok(self)
    }

    /// The instructions appended to a snapshot's Dockerfile, taking the files `from`.
    pub fn layer_text(&self, from: &RuntimeFrom) -> String {
        let mut text = LAYER.to_string();
        if self.packages.is_some() {
            text.push_str(PACKAGES_LAYER);
        }
        text.replace("{src}", &from.copy_source())
    }

    /// The runtime image of this fingerprint: `kortix-runtime-<fingerprint16>`.
    pub fn image_name(&self) -> String {
        format!("kortix-runtime-{}", &self.fingerprint[..16])
    }

    /// Appends the layer's files to `tar` under `dir` (blocking I/O).
    pub fn append_files<W: std::io::Write>(
        &self,
        tar: &mut tar::Builder<W>,
        dir: &str,
    ) -> std::io::Result<()> {
        let under = |rel: &str| {
            if dir.is_empty() {
                rel.to_string()
            } else {
                format!("{dir}/{rel}")
            }
        };
        for (path, source) in [(AGENT_FILE, &self.agent), (OPENCODE_FILE, &self.opencode)] {
            let file = std::fs::File::open(source)?;
            let size = file.metadata()?.len();
            append_regular(
                tar,
                &under(path),
                0o755,
                size,
                std::io::BufReader::new(file),
            )?;
        }
        if let Some(set) = &self.packages {
            // Links stay links (node_modules/.bin), inside the set.
            tar.follow_symlinks(false);
            tar.append_dir_all(under(PACKAGES_DIR), set)?;
        }
        Ok(())
    }

    /// Writes the runtime image's build context: its Dockerfile at
    /// [`IMAGE_DOCKERFILE_PATH`] and the layer's files (blocking I/O).
    pub fn write_image_context(&self, out: impl std::io::Write) -> std::io::Result<()> {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        let mut dockerfile = IMAGE_DOCKERFILE.to_string();
        if self.packages.is_some() {
            dockerfile.push_str(IMAGE_PACKAGES);
        }
        let size = dockerfile.len() as u64;
        append_regular(
            &mut tar,
            IMAGE_DOCKERFILE_PATH,
            0o644,
            size,
            dockerfile.as_bytes(),
        )?;
        self.append_files(&mut tar, "")?;
        tar.into_inner()?.flush()
    }

    /// The `runtime` input of the snapshot hash.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Appends a regular file of `size` bytes read from `data` to a build context archive.
pub(super) fn append_regular<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    size: u64,
    data: impl std::io::Read,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(mode);
    header.set_size(size);
    tar.append_data(&mut header, path, data)
}

fn digest_parts(parts: &[&str]) -> String {
    let mut c = Context::new(&SHA256);
    for part in parts {
        c.update(&(part.len() as u64).to_be_bytes());
        c.update(part.as_bytes());
    }
    hex::encode(c.finish().as_ref())
}

/// A digest of a directory tree: every entry's relative path and kind, a file's mode bit for
/// execution and contents, a symlink's target; in name order.
fn tree_digest(root: &Path) -> std::io::Result<String> {
    fn walk(dir: &Path, rel: &str, c: &mut Context) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let rel = format!("{rel}/{name}");
            let kind = entry.file_type()?;
            c.update(rel.as_bytes());
            if kind.is_symlink() {
                c.update(b"\0l");
                c.update(std::fs::read_link(&path)?.to_string_lossy().as_bytes());
            } else if kind.is_dir() {
                c.update(b"\0d");
                walk(&path, &rel, c)?;
            } else {
                use std::os::unix::fs::PermissionsExt;
                let exec = entry.metadata()?.permissions().mode() & 0o111 != 0;
                c.update(if exec { b"\0x" } else { b"\0f" });
                let mut file = std::fs::File::open(&path)?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    c.update(&buf[..n]);
                }
            }
        }
        Ok(())
    }
    let mut c = Context::new(&SHA256);
    walk(root, "", &mut c)?;
    Ok(hex::encode(c.finish().as_ref()))
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
        // A package set is part of the identity, and so is its content.
        let set = dir.path().join("set");
        std::fs::create_dir_all(set.join("node_modules/a")).unwrap();
        std::fs::write(set.join("node_modules/a/index.js"), b"v1").unwrap();
        let base = RuntimeLayer::load(&agent, &opencode).unwrap();
        let with = base.clone().with_packages(&set).unwrap();
        assert_ne!(with.fingerprint(), base.fingerprint());
        assert!(
            with.layer_text(&RuntimeFrom::Context)
                .contains("KORTIX_OPENCODE_PACKAGES")
        );
        assert!(
            !base
                .layer_text(&RuntimeFrom::Context)
                .contains("KORTIX_OPENCODE_PACKAGES")
        );
        std::fs::write(set.join("node_modules/a/index.js"), b"v2").unwrap();
        assert_ne!(
            base.clone().with_packages(&set).unwrap().fingerprint(),
            with.fingerprint()
        );
        let missing = RuntimeLayer::load(&dir.path().join("nope"), &opencode).unwrap_err();
        assert!(missing.to_string().contains("agent"), "{missing}");
    }

    #[test]
    fn the_files_come_from_the_context_or_the_runtime_image() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, opencode) = (dir.path().join("agent"), dir.path().join("opencode"));
        std::fs::write(&agent, b"agent").unwrap();
        std::fs::write(&opencode, b"opencode").unwrap();
        let set = dir.path().join("set");
        std::fs::create_dir_all(set.join("node_modules")).unwrap();
        std::fs::write(set.join("node_modules/x.js"), b"x").unwrap();
        let runtime = RuntimeLayer::load(&agent, &opencode)
            .unwrap()
            .with_packages(&set)
            .unwrap();
        let in_context = runtime.layer_text(&RuntimeFrom::Context);
        assert!(
            in_context.contains("COPY .kortix-runtime/kortix-agent /usr/local/bin/kortix-agent")
        );
        assert!(in_context.contains("COPY .kortix-runtime/opencode-packages /opt/kortix/"));
        let image = runtime.image_name();
        assert!(
            image.starts_with("kortix-runtime-") && image.len() == 31,
            "{image}"
        );
        let from_image = runtime.layer_text(&RuntimeFrom::Image(image.clone()));
        assert!(from_image.contains(&format!("COPY --from={image} /opencode /opt/opencode")));
        assert!(!from_image.contains("{src}") && !in_context.contains("{src}"));

        // The runtime image's context holds exactly what its Dockerfile copies.
        let mut archive = Vec::new();
        runtime.write_image_context(&mut archive).unwrap();
        let mut paths: Vec<String> = tar::Archive::new(archive.as_slice())
            .entries()
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path().unwrap().to_string_lossy().into_owned();
                path.trim_end_matches('/').to_owned()
            })
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "Dockerfile",
                "kortix-agent",
                "opencode-packages",
                "opencode-packages/node_modules",
                "opencode-packages/node_modules/x.js",
                "opencode/bin/opencode"
            ]
        );
    }
}
