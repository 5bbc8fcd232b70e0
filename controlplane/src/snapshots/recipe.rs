//! What a snapshot is built from: the template's Dockerfile with its build context (the
//! directory that holds the Dockerfile, on the default branch, as `docker build -f` users
//! expect) or its image, then the runtime layer. Its identity is the manifest library's
//! snapshot hash over exactly those inputs.

use std::io::Write;

use kortix_manifest::{PLATFORM_DEFAULT_TEMPLATE, ResolvedTemplate, SandboxTemplate};

use super::runtime::{self, RuntimeFrom, RuntimeLayer};
use crate::git::tree_dir::{TreeDir, TreeFileKind};
use crate::git::{RepoError, Repos};

/// Where the composed Dockerfile sits in the build context.
pub const DOCKERFILE: &str = ".kortix-runtime/Dockerfile";

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("template {template:?}: {path} is not on branch {branch:?}")]
    NoDockerfile {
        template: String,
        path: String,
        branch: String,
    },
    #[error(
        "template {template:?}: the build context {dir:?} holds {reserved}/, which the runtime layer uses"
    )]
    ReservedPath {
        template: String,
        dir: String,
        reserved: &'static str,
    },
    #[error("template {template:?}: {source}")]
    Repo {
        template: String,
        #[source]
        source: Box<RepoError>,
    },
}

/// What the user's part of the image comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Dockerfile {
        path: String,
        contents: Vec<u8>,
        /// The directory holding the Dockerfile (its tree id is the hash's `context`).
        context: TreeDir,
        /// That directory's path in the repository (empty: the root).
        context_dir: String,
    },
    Image(String),
}

/// Hardware a template asks for (GiB for memory and disk).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hardware {
    pub cpu: Option<u32>,
    pub memory_gib: Option<u32>,
    pub disk_gib: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Recipe {
    pub project_id: String,
    pub template: String,
    pub hash: String,
    /// `kortix-snap-<project8>-<hash12>`.
    pub name: String,
    pub source: Source,
    pub hardware: Hardware,
}

/// `kortix-snap-<project8>-<hash12>`. The project part is the *last* eight hex digits of the
/// project id: ids are UUIDv7, whose first digits are a timestamp that projects created in
/// the same minute share, while the last ones are random.
pub fn snapshot_name(project_id: &str, hash: &str) -> String {
    let hex: String = project_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase();
    let project8 = &hex[hex.len().saturating_sub(8)..];
    let hash12 = &hash[..hash.len().min(12)];
    format!("kortix-snap-{project8}-{hash12}")
}

impl Recipe {
    /// Composes the recipe of `template` from the project's `branch` (blocking git reads).
    /// The platform default template is `FROM <base_image>`.
    pub fn compose(
        repos: &Repos,
        project_id: &str,
        branch: &str,
        template: ResolvedTemplate<'_>,
        runtime: &RuntimeLayer,
        base_image: &str,
    ) -> Result<Recipe, RecipeError> {
        let platform;
        let (slug, t) = match template {
            ResolvedTemplate::PlatformDefault => {
                platform = SandboxTemplate {
                    slug: PLATFORM_DEFAULT_TEMPLATE.into(),
                    name: PLATFORM_DEFAULT_TEMPLATE.into(),
                    dockerfile: None,
                    image: Some(base_image.to_owned()),
                    cpu: None,
                    memory: None,
                    disk: None,
                };
                (PLATFORM_DEFAULT_TEMPLATE, &platform)
            }
            ResolvedTemplate::Template(t) => (t.slug.as_str(), t),
        };
        let repo_err = |source| RecipeError::Repo {
            template: slug.to_owned(),
            source: Box::new(source),
        };
        let source = match (&t.dockerfile, &t.image) {
            (Some(path), _) => {
                let contents = repos
                    .read_file_at_branch(project_id, branch, path)
                    .map_err(repo_err)?
                    .ok_or_else(|| RecipeError::NoDockerfile {
                        template: slug.to_owned(),
                        path: path.clone(),
                        branch: branch.to_owned(),
                    })?;
                let context_dir = path.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
                let context = repos
                    .read_dir_at_branch(project_id, branch, &context_dir)
                    .map_err(repo_err)?
                    .ok_or_else(|| RecipeError::NoDockerfile {
                        template: slug.to_owned(),
                        path: path.clone(),
                        branch: branch.to_owned(),
                    })?;
                if context.files.iter().any(|f| {
                    f.path == runtime::CONTEXT_DIR
                        || f.path.starts_with(&format!("{}/", runtime::CONTEXT_DIR))
                }) {
                    return Err(RecipeError::ReservedPath {
                        template: slug.to_owned(),
                        dir: context_dir,
                        reserved: runtime::CONTEXT_DIR,
                    });
                }
                Source::Dockerfile {
                    path: path.clone(),
                    contents,
                    context,
                    context_dir,
                }
            }
            (None, Some(image)) => Source::Image(image.clone()),
            // The manifest parser never produces a template with neither.
            (None, None) => Source::Image(base_image.to_owned()),
        };
        let hash = match &source {
            Source::Dockerfile {
                contents, context, ..
            } => kortix_manifest::snapshot_hash_with_context(
                t,
                Some(contents),
                Some(&context.tree_id),
                runtime.fingerprint(),
            ),
            Source::Image(_) => kortix_manifest::snapshot_hash(t, None, runtime.fingerprint()),
        };
        Ok(Recipe {
            project_id: project_id.to_owned(),
            template: slug.to_owned(),
            name: snapshot_name(project_id, &hash),
            hash,
            source,
            hardware: Hardware {
                cpu: t.cpu,
                memory_gib: t.memory,
                disk_gib: t.disk,
            },
        })
    }

    /// The Dockerfile that is built: the user's (or `FROM <image>`), then the runtime layer
    /// with its files taken `from` the context or the runtime image.
    pub fn dockerfile(&self, runtime: &RuntimeLayer, from: &RuntimeFrom) -> String {
        let mut text = match &self.source {
            Source::Dockerfile { contents, .. } => String::from_utf8_lossy(contents).into_owned(),
            Source::Image(image) => format!("FROM {image}\n"),
        };
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&runtime.layer_text(from));
        text
    }

    /// Writes the build context as a tar archive: the Dockerfile's directory, the composed
    /// Dockerfile and, unless they come from the runtime image, the runtime's files under
    /// `.kortix-runtime/` (blocking I/O).
    pub fn write_context(
        &self,
        runtime: &RuntimeLayer,
        from: &RuntimeFrom,
        out: impl Write,
    ) -> std::io::Result<()> {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        if let Source::Dockerfile { context, .. } = &self.source {
            for file in &context.files {
                match file.kind {
                    TreeFileKind::Regular { executable } => {
                        let mode = if executable { 0o755 } else { 0o644 };
                        let size = file.data.len() as u64;
                        runtime::append_regular(&mut tar, &file.path, mode, size, &file.data[..])?;
                    }
                    TreeFileKind::Symlink => {
                        let target = String::from_utf8_lossy(&file.data).into_owned();
                        let mut header = tar::Header::new_gnu();
                        header.set_entry_type(tar::EntryType::Symlink);
                        header.set_mode(0o777);
                        header.set_size(0);
                        tar.append_link(&mut header, &file.path, target)?;
                    }
                }
            }
        }
        let dockerfile = self.dockerfile(runtime, from);
        let size = dockerfile.len() as u64;
        runtime::append_regular(&mut tar, DOCKERFILE, 0o644, size, dockerfile.as_bytes())?;
        if *from == RuntimeFrom::Context {
            runtime.append_files(&mut tar, runtime::CONTEXT_DIR)?;
        }
        tar.into_inner()?.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_the_random_end_of_the_project_id() {
        assert_eq!(
            snapshot_name(
                "0190f3a2-7b1c-7def-8abc-0123456789ab",
                "deadbeefcafe0123456789"
            ),
            "kortix-snap-456789ab-deadbeefcafe"
        );
        assert_eq!(snapshot_name("p", "ab"), "kortix-snap--ab");
    }

    #[test]
    fn the_runtime_layer_follows_the_users_last_stage() {
        let recipe = Recipe {
            project_id: "p".into(),
            template: "dev".into(),
            hash: "h".into(),
            name: "n".into(),
            source: Source::Image("python:3.12".into()),
            hardware: Hardware::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        let (agent, opencode) = (dir.path().join("agent"), dir.path().join("opencode"));
        std::fs::write(&agent, b"agent").unwrap();
        std::fs::write(&opencode, b"opencode").unwrap();
        let runtime = RuntimeLayer::load(&agent, &opencode).unwrap();
        let text = recipe.dockerfile(&runtime, &RuntimeFrom::Context);
        assert!(text.starts_with("FROM python:3.12\n"));
        assert!(text.trim_end().ends_with("CMD []"));
        assert!(text.contains(r#"ENTRYPOINT ["/usr/local/bin/kortix-agent"]"#));
        // With OpenCode's package set, the set and the variable naming it come last.
        let set = dir.path().join("set");
        std::fs::create_dir_all(&set).unwrap();
        let text = recipe.dockerfile(
            &runtime.with_packages(&set).unwrap(),
            &RuntimeFrom::Image("kortix-runtime-x".into()),
        );
        assert!(
            text.trim_end()
                .ends_with("ENV KORTIX_OPENCODE_PACKAGES=/opt/kortix/opencode-packages")
        );
    }
}
