//! Content hashes: the sandbox snapshot hash and the app redeploy hash.
//!
//! Both hash a canonical byte encoding rather than JSON or TOML text, so
//! formatting, key order and serializer versions can never change a hash.
//! Each field is `name ‖ 0x00 ‖ u64-BE length ‖ bytes`: length-prefixing
//! makes the encoding unambiguous (no two field lists encode alike).

use aws_lc_rs::digest::{Context, SHA256};

use crate::apps::App;
use crate::sandbox::SandboxTemplate;

/// Bumped only if the encoding itself changes (which rebuilds everything).
const SNAPSHOT_DOMAIN: &[u8] = b"kortix-snapshot-v1";
const APP_DOMAIN: &[u8] = b"kortix-app-v1";

struct Canon(Context);

impl Canon {
    fn new(domain: &[u8]) -> Self {
        let mut c = Canon(Context::new(&SHA256));
        c.field("domain", domain);
        c
    }

    fn field(&mut self, name: &str, bytes: &[u8]) {
        self.0.update(name.as_bytes());
        self.0.update(&[0]);
        self.0.update(&(bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    fn opt(&mut self, name: &str, value: Option<&str>) {
        match value {
            // A distinct marker keeps `None` apart from `Some("")`.
            None => self.field(&format!("{name}?"), b""),
            Some(v) => self.field(name, v.as_bytes()),
        }
    }

    fn finish(self) -> String {
        hex::encode(self.0.finish().as_ref())
    }
}

/// The content hash of the snapshot built from `template`: equal hashes
/// mean the snapshot can be reused, a different hash means rebuild.
///
/// Inputs, in order (see the crate README, "Snapshot hash"):
/// 1. the domain tag `kortix-snapshot-v1`;
/// 2. the image source: for a Dockerfile template the Dockerfile's *contents*
///    (`dockerfile`, from `dockerfile_contents`) — not its path; for an image
///    template the reference string as written (`image`). A Dockerfile
///    template whose contents the caller could not read (`None`) hashes its
///    path under the distinct name `dockerfile-unread`, so it can never
///    collide with a real build;
/// 3. `runtime`: the caller's fingerprint of the Kortix runtime layer
///    (agent + opencode + entrypoint);
/// 4. then, only for the hardware fields that are set, in the order `cpu`,
///    `memory`, `disk`, the decimal value.
///
/// `slug` and `name` are not inputs (renaming never rebuilds). Because
/// absent spec fields are omitted rather than encoded, a template without a
/// spec hashes exactly as it did before specs existed, while adding,
/// removing or changing any spec field changes the hash.
pub fn snapshot_hash(
    template: &SandboxTemplate,
    dockerfile_contents: Option<&[u8]>,
    runtime_fingerprint: &str,
) -> String {
    snapshot_hash_with_context(template, dockerfile_contents, None, runtime_fingerprint)
}

/// [`snapshot_hash`] with the Dockerfile's build context: `context_digest` is the caller's
/// content digest of the directory that holds the Dockerfile (e.g. its git tree id), hashed
/// as the field `context` right after `dockerfile`, only for a Dockerfile template whose
/// contents were read. `None` hashes exactly like [`snapshot_hash`], so a change of any file
/// in the context changes the hash while image templates (no context) keep theirs.
pub fn snapshot_hash_with_context(
    template: &SandboxTemplate,
    dockerfile_contents: Option<&[u8]>,
    context_digest: Option<&str>,
    runtime_fingerprint: &str,
) -> String {
    let mut c = Canon::new(SNAPSHOT_DOMAIN);
    match (&template.dockerfile, &template.image, dockerfile_contents) {
        (Some(_), _, Some(contents)) => {
            c.field("dockerfile", contents);
            if let Some(digest) = context_digest {
                c.field("context", digest.as_bytes());
            }
        }
        (Some(path), _, None) => c.field("dockerfile-unread", path.as_bytes()),
        (None, Some(image), _) => c.field("image", image.as_bytes()),
        // Not produced by the parser; still hash deterministically.
        (None, None, contents) => c.field("dockerfile", contents.unwrap_or_default()),
    }
    c.field("runtime", runtime_fingerprint.as_bytes());
    for (name, value) in [
        ("cpu", template.cpu),
        ("memory", template.memory),
        ("disk", template.disk),
    ] {
        if let Some(v) = value {
            c.field(name, v.to_string().as_bytes());
        }
    }
    c.finish()
}

/// The redeploy hash of an app's config: every field except `slug` and
/// `name`, so a rename never redeploys while edits to `enabled`,
/// `domains`, `framework`, `source`, `build` or `env` do. Domains are
/// hashed as a sorted set (reordering them is not a change); `env` is
/// already key-ordered.
pub fn app_redeploy_hash(app: &App) -> String {
    let mut c = Canon::new(APP_DOMAIN);
    c.field("enabled", if app.enabled { b"true" } else { b"false" });
    let mut domains: Vec<&str> = app.domains.iter().map(String::as_str).collect();
    domains.sort_unstable();
    domains.dedup();
    c.field("domains", &(domains.len() as u64).to_be_bytes());
    for d in domains {
        c.field("domain", d.as_bytes());
    }
    c.opt("framework", app.framework.as_deref());
    c.field("source.type", app.source.kind.as_str().as_bytes());
    c.opt("source.repo", app.source.repo.as_deref());
    c.opt("source.branch", app.source.branch.as_deref());
    c.field("source.root_path", app.source.root_path.as_bytes());
    c.opt("source.url", app.source.url.as_deref());
    match &app.build {
        None => c.field("build?", b""),
        Some(b) => {
            c.opt("build.command", b.command.as_deref());
            c.opt("build.out_dir", b.out_dir.as_deref());
        }
    }
    c.field("env", &(app.env.len() as u64).to_be_bytes());
    for (k, v) in &app.env {
        c.field("env.key", k.as_bytes());
        c.field("env.value", v.as_bytes());
    }
    c.finish()
}

impl App {
    /// See [`app_redeploy_hash`].
    pub fn redeploy_hash(&self) -> String {
        app_redeploy_hash(self)
    }
}

impl SandboxTemplate {
    /// See [`snapshot_hash`].
    pub fn snapshot_hash(
        &self,
        dockerfile_contents: Option<&[u8]>,
        runtime_fingerprint: &str,
    ) -> String {
        snapshot_hash(self, dockerfile_contents, runtime_fingerprint)
    }
}
