//! Links OpenCode's packages, installed once by the control plane and shared read-only into
//! the sandbox (`KORTIX_OPENCODE_PACKAGES`), into the directories OpenCode would otherwise fill
//! from the npm registry when it starts.
//!
//! OpenCode installs `@opencode-ai/plugin` into each config directory it loads (the global
//! `$XDG_CONFIG_HOME/opencode`, the project's `OPENCODE_CONFIG_DIR`, any `.opencode`) unless
//! the directory has a `node_modules` and a `package-lock.json` naming every dependency of its
//! `package.json`. So each such directory gets the shared `node_modules` as a link and copies
//! of the shared manifest and lockfile — only where that makes OpenCode's check pass: a
//! directory whose `package.json` asks for more, or that has its own `node_modules` or
//! lockfile, is left to OpenCode. Provider packages go into OpenCode's cache layout
//! (`$XDG_CACHE_HOME/opencode/packages/<spec>`) as links, one per installed spec.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Inside the shared set: the npm prefix holding the plugin package.
const SHARED_CONFIG: &str = "config";
/// Inside the shared set: provider packages in OpenCode's cache layout.
const SHARED_PACKAGES: &str = "packages";
/// What OpenCode writes into a config directory it installs into, so git ignores the install.
const GITIGNORE: &str = "node_modules\npackage.json\npackage-lock.json\nbun.lock\n.gitignore";
/// Bounds what is read of a manifest.
const MAX_MANIFEST: u64 = 4 << 20;

/// What [`link`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Linked {
    /// Config directories that now use the shared `node_modules`.
    pub config_dirs: Vec<PathBuf>,
    /// Config directories left to OpenCode, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Provider package specs linked into OpenCode's cache.
    pub packages: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("linking OpenCode's shared packages from {shared}: {context}: {source}")]
pub struct LinkError {
    shared: PathBuf,
    context: String,
    source: std::io::Error,
}

/// The config directories OpenCode installs into, for OpenCode's environment `env`, its
/// `OPENCODE_CONFIG_DIR` and the workspace.
pub fn config_dirs(
    env: &BTreeMap<String, String>,
    config_dir: &Path,
    workspace: &Path,
) -> Vec<PathBuf> {
    let mut dirs = vec![xdg(env, "XDG_CONFIG_HOME", ".config").join("opencode")];
    dirs.push(config_dir.to_path_buf());
    let dot = workspace.join(".opencode");
    if dot.is_dir() {
        dirs.push(dot);
    }
    dirs.dedup();
    dirs
}

/// OpenCode's cache directory for `env`.
pub fn cache_dir(env: &BTreeMap<String, String>) -> PathBuf {
    xdg(env, "XDG_CACHE_HOME", ".cache").join("opencode")
}

fn xdg(env: &BTreeMap<String, String>, var: &str, under_home: &str) -> PathBuf {
    if let Some(dir) = env.get(var).filter(|d| Path::new(d).is_absolute()) {
        return PathBuf::from(dir);
    }
    let home = env
        .get("HOME")
        .filter(|h| !h.is_empty())
        .cloned()
        .unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(under_home)
}

/// Links the shared set into `config_dirs` and `cache`.
pub fn link(shared: &Path, config_dirs: &[PathBuf], cache: &Path) -> Result<Linked, LinkError> {
    let err = |context: String| {
        let shared = shared.to_path_buf();
        move |source| LinkError {
            shared,
            context,
            source,
        }
    };
    let mut linked = Linked::default();
    let source = shared.join(SHARED_CONFIG);
    let provided = lock_dependencies(&source.join("package-lock.json"))
        .map_err(err("reading the shared package-lock.json".into()))?;
    for dir in config_dirs {
        if let Some(reason) = leave_to_opencode(dir, &provided) {
            linked.skipped.push((dir.clone(), reason));
            continue;
        }
        std::fs::create_dir_all(dir).map_err(err(format!("creating {}", dir.display())))?;
        for name in ["package.json", "package-lock.json"] {
            let to = dir.join(name);
            if !to.exists() {
                std::fs::copy(source.join(name), &to)
                    .map_err(err(format!("copying {name} to {}", dir.display())))?;
            }
        }
        let ignore = dir.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(&ignore, GITIGNORE)
                .map_err(err(format!("writing {}", ignore.display())))?;
        }
        std::os::unix::fs::symlink(source.join("node_modules"), dir.join("node_modules"))
            .map_err(err(format!("linking {}/node_modules", dir.display())))?;
        linked.config_dirs.push(dir.clone());
    }
    let specs = match std::fs::read_dir(shared.join(SHARED_PACKAGES)) {
        // Top-level entries: a spec's directory, or a scope's (`@acme/provider` lives at
        // `@acme/provider/`); staging directories and locks start with a dot.
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name())
            .filter(|n| !n.to_string_lossy().starts_with('.'))
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(err("listing the shared provider packages".into())(e)),
    };
    if !specs.is_empty() {
        let packages = cache.join("packages");
        std::fs::create_dir_all(&packages)
            .map_err(err(format!("creating {}", packages.display())))?;
        for spec in specs {
            let to = packages.join(&spec);
            if std::fs::symlink_metadata(&to).is_ok() {
                continue;
            }
            std::os::unix::fs::symlink(shared.join(SHARED_PACKAGES).join(&spec), &to)
                .map_err(err(format!("linking {}", to.display())))?;
            linked.packages.push(spec.to_string_lossy().into_owned());
        }
    }
    Ok(linked)
}

/// Why `dir` is left to OpenCode's own install, if it is.
fn leave_to_opencode(dir: &Path, provided: &BTreeSet<String>) -> Option<String> {
    if std::fs::symlink_metadata(dir.join("node_modules")).is_ok() {
        return Some("it has its own node_modules".into());
    }
    if dir.join("package-lock.json").exists() {
        return Some("it has its own package-lock.json".into());
    }
    let manifest = dir.join("package.json");
    if !manifest.exists() {
        return None;
    }
    match manifest_dependencies(&manifest) {
        Ok(wanted) => {
            let missing: Vec<_> = wanted.difference(provided).cloned().collect();
            (!missing.is_empty())
                .then(|| format!("its package.json asks for {}", missing.join(", ")))
        }
        Err(e) => Some(format!("its package.json is unreadable: {e}")),
    }
}

const DEPENDENCY_FIELDS: [&str; 4] = [
    "dependencies",
    "devDependencies",
    "peerDependencies",
    "optionalDependencies",
];

fn read_json(path: &Path) -> std::io::Result<serde_json::Value> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_MANIFEST)
        .read_to_string(&mut text)?;
    serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn names(object: &serde_json::Value) -> BTreeSet<String> {
    DEPENDENCY_FIELDS
        .iter()
        .filter_map(|f| object[f].as_object())
        .flat_map(|deps| deps.keys().cloned())
        .collect()
}

/// Dependency names of a `package.json`.
fn manifest_dependencies(path: &Path) -> std::io::Result<BTreeSet<String>> {
    Ok(names(&read_json(path)?))
}

/// Dependency names of a lockfile's root package (what OpenCode compares against).
fn lock_dependencies(path: &Path) -> std::io::Result<BTreeSet<String>> {
    Ok(names(&read_json(path)?["packages"][""]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared set as the control plane installs it, with one provider package.
    fn shared(dir: &Path) -> PathBuf {
        let shared = dir.join("shared");
        let config = shared.join("config");
        std::fs::create_dir_all(config.join("node_modules/@opencode-ai/plugin")).unwrap();
        std::fs::write(
            config.join("package.json"),
            r#"{"dependencies":{"@opencode-ai/plugin":"1.18.33"}}"#,
        )
        .unwrap();
        std::fs::write(
            config.join("package-lock.json"),
            r#"{"packages":{"":{"dependencies":{"@opencode-ai/plugin":"1.18.33"}}}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(shared.join("packages/@acme/provider@2/node_modules")).unwrap();
        std::fs::create_dir_all(shared.join("packages/left-pad/node_modules")).unwrap();
        std::fs::create_dir_all(shared.join("packages/.staging-1")).unwrap();
        shared
    }

    #[test]
    fn config_directories_get_the_shared_modules_and_pass_opencodes_check() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let global = dir.path().join("home/.config/opencode");
        let project = dir.path().join("ws/.kortix/opencode");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(project.join("opencode.json"), "{}").unwrap();
        let cache = dir.path().join("home/.cache/opencode");
        let linked = link(&shared, &[global.clone(), project.clone()], &cache).unwrap();
        assert_eq!(linked.config_dirs, vec![global.clone(), project.clone()]);
        let mut packages = linked.packages.clone();
        packages.sort();
        assert_eq!(packages, vec!["@acme".to_string(), "left-pad".to_string()]);
        for d in [&global, &project] {
            assert_eq!(
                std::fs::read_link(d.join("node_modules")).unwrap(),
                shared.join("config/node_modules")
            );
            assert!(d.join("node_modules/@opencode-ai/plugin").is_dir());
            // OpenCode's check: every dependency of package.json is in the lockfile's root.
            let wanted = manifest_dependencies(&d.join("package.json")).unwrap();
            let locked = lock_dependencies(&d.join("package-lock.json")).unwrap();
            assert!(wanted.is_subset(&locked) && wanted.contains("@opencode-ai/plugin"));
            assert!(
                std::fs::read_to_string(d.join(".gitignore"))
                    .unwrap()
                    .contains("node_modules")
            );
        }
        assert!(
            cache
                .join("packages/@acme/provider@2/node_modules")
                .is_dir()
        );
        // A second run (an OpenCode restart) changes nothing.
        let again = link(&shared, &[global, project.clone()], &cache).unwrap();
        assert!(again.config_dirs.is_empty() && again.packages.is_empty());
        assert_eq!(again.skipped.len(), 2);
    }

    #[test]
    fn a_project_that_asks_for_more_is_left_to_opencode() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let project = dir.path().join("p");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(
            project.join("package.json"),
            r#"{"dependencies":{"@opencode-ai/plugin":"1","left-pad":"1"}}"#,
        )
        .unwrap();
        let own_lock = dir.path().join("q");
        std::fs::create_dir_all(&own_lock).unwrap();
        std::fs::write(own_lock.join("package-lock.json"), "{}").unwrap();
        let linked = link(
            &shared,
            &[project.clone(), own_lock.clone()],
            &dir.path().join("cache"),
        )
        .unwrap();
        assert!(linked.config_dirs.is_empty());
        assert!(
            linked.skipped[0].1.contains("left-pad"),
            "{:?}",
            linked.skipped
        );
        assert!(linked.skipped[1].1.contains("package-lock.json"));
        assert!(!project.join("node_modules").exists());
        assert!(!project.join("package-lock.json").exists());
    }

    #[test]
    fn a_shared_set_without_a_lockfile_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = link(dir.path(), &[dir.path().join("c")], dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("package-lock.json"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }

    #[test]
    fn directories_follow_xdg_then_home() {
        let env = BTreeMap::from([("HOME".to_string(), "/h".to_string())]);
        let ws = Path::new("/nonexistent-ws");
        assert_eq!(
            config_dirs(&env, Path::new("/w/.kortix/opencode"), ws),
            vec![
                PathBuf::from("/h/.config/opencode"),
                PathBuf::from("/w/.kortix/opencode")
            ]
        );
        assert_eq!(cache_dir(&env), PathBuf::from("/h/.cache/opencode"));
        let env = BTreeMap::from([
            ("HOME".to_string(), "/h".to_string()),
            ("XDG_CACHE_HOME".to_string(), "/x".to_string()),
            ("XDG_CONFIG_HOME".to_string(), "relative".to_string()),
        ]);
        assert_eq!(cache_dir(&env), PathBuf::from("/x/opencode"));
        assert_eq!(
            config_dirs(&env, Path::new("/c"), ws)[0],
            PathBuf::from("/h/.config/opencode")
        );
    }
}
