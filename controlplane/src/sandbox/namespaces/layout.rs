//! What an isolated sandbox sees: the host's system directories or an assembled image root,
//! a minimal `/etc`, its own `/dev`, `/proc` (with the host-facing parts masked), `/tmp`,
//! `/run`, and the session's workspace, HOME and spool — as a [`Plan`] of mount operations.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::plan::{Bind, Plan, cstring, inside, parent_of};
use super::spawn::Launch;

/// The session's repository, inside the sandbox.
pub const WORKSPACE: &str = "/workspace";
/// The sandbox's private `HOME`.
pub const HOME: &str = "/root";
/// The agent's spool (records not yet acknowledged, the credential socket).
pub const SPOOL: &str = "/run/kortix-agent";
/// Where the host's `kortix-agent` is bound in a host-derived root.
pub const HOST_AGENT: &str = "/opt/kortix/bin/kortix-agent";
/// The agent of an image root (`image/Dockerfile` installs it there).
pub const IMAGE_AGENT: &str = "/usr/local/bin/kortix-agent";
/// Where the host's OpenCode install is bound in a host-derived root.
pub const OPENCODE_PREFIX: &str = "/opt/opencode";
/// Where OpenCode's shared packages (`sandbox::opencode_packages`) are bound, read-only.
pub const OPENCODE_PACKAGES: &str = "/opt/kortix/opencode-packages";
const HOST_PATH: &str =
    "/opt/kortix/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host directories a host-derived root shows (read-only, or as the same symlinks).
const HOST_SYSTEM_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Host `/etc` entries a host-derived root shows (read-only); the rest of `/etc` stays hidden.
const HOST_ETC: &[&str] = &[
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "services",
    "protocols",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "os-release",
    "debian_version",
    "mime.types",
    "shells",
    "terminfo",
];
/// Top-level names of an image root that the sandbox provides itself.
const IMAGE_RESERVED: &[&str] = &["proc", "sys", "dev", "tmp", "run", "root", "workspace"];
/// Parts of `/proc` that act beyond the sandbox's own namespaces (sysctls, SysRq, IRQ
/// affinities): read-only, as container engines keep them. The agent is uid 0 inside, which is
/// the host's root when the control plane runs as root, so this is not optional politeness.
const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];
/// Parts of `/proc` that expose the host (kernel memory, keys, timers of every process):
/// hidden under `/dev/null` or an empty read-only tmpfs.
const PROC_MASKED: &[&str] = &[
    "kcore",
    "keys",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "acpi",
    "scsi",
    "asound",
];
/// Device nodes bound from the host into the sandbox's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Where an isolated sandbox's system files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// A minimal root derived from the host: `/usr` and friends, a few `/etc` files.
    Host,
    /// An assembled runtime layer (`image/assemble-rootfs.sh`): every top-level directory of
    /// it, read-only, with the image's own agent and OpenCode.
    Image(PathBuf),
}

/// One session's isolated sandbox, as the host sees it.
pub struct SandboxLayout<'a> {
    pub session_id: &'a str,
    /// An empty directory; the sandbox's root tmpfs is mounted on it in the sandbox's own
    /// mount namespace, so the host only ever sees it empty.
    pub staging: &'a Path,
    pub workspace: &'a Path,
    pub home: &'a Path,
    pub spool: &'a Path,
    pub source: &'a RootSource,
    /// The host's agent binary (host-derived roots only; an image brings its own).
    pub agent_bin: &'a Path,
    /// OpenCode's packages installed by the control plane for the host's OpenCode
    /// (host-derived roots only): bound read-only and named in `KORTIX_OPENCODE_PACKAGES`.
    pub opencode_packages: Option<&'a Path>,
}

/// Builds the launch of one session's agent: the mount plan and the environment it sees.
/// `env` is what a plain child would get on top of the sandbox's own settings (extra agent
/// variables and the session's `KORTIX_*` bootstrap); host paths in it that the sandbox needs
/// (`KORTIX_OPENCODE_BIN`) are bound in and rewritten.
pub fn prepare(layout: &SandboxLayout<'_>, env: BTreeMap<String, String>) -> io::Result<Launch> {
    let hostname = hostname_for(layout.session_id);
    let mut plan = Plan::new(layout.staging);
    let mut env = env;
    let exe = match layout.source {
        RootSource::Host => {
            host_system(&mut plan, &hostname)?;
            let agent = std::fs::canonicalize(layout.agent_bin).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("kortix-agent at {}: {e}", layout.agent_bin.display()),
                )
            })?;
            plan.mkdirs(parent_of(HOST_AGENT))?;
            plan.bind(&agent, HOST_AGENT, Bind::READ_ONLY)?;
            if let Some(bin) = env.get("KORTIX_OPENCODE_BIN").cloned() {
                let inside_bin = bind_opencode(&mut plan, Path::new(&bin))?;
                env.insert("KORTIX_OPENCODE_BIN".into(), inside_bin);
            }
            if let Some(packages) = layout.opencode_packages {
                let host = std::fs::canonicalize(packages)?;
                plan.bind(&host, OPENCODE_PACKAGES, Bind::READ_ONLY)?;
                env.insert("KORTIX_OPENCODE_PACKAGES".into(), OPENCODE_PACKAGES.into());
            }
            HOST_AGENT
        }
        RootSource::Image(root) => {
            image_system(&mut plan, root)?;
            if std::fs::symlink_metadata(inside(root, IMAGE_AGENT)).is_err() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the sandbox root {} has no {IMAGE_AGENT}", root.display()),
                ));
            }
            // The image's own OpenCode (on its PATH) runs, unless the variable names a file
            // inside the image.
            if let Some(bin) = env.get("KORTIX_OPENCODE_BIN")
                && std::fs::symlink_metadata(inside(root, bin)).is_err()
            {
                env.remove("KORTIX_OPENCODE_BIN");
            }
            IMAGE_AGENT
        }
    };
    sandbox_mounts(&mut plan, layout)?;
    for (k, v) in [
        ("HOME", HOME),
        ("TMPDIR", "/tmp"),
        ("KORTIX_WORKSPACE", WORKSPACE),
        ("KORTIX_SPOOL_DIR", SPOOL),
    ] {
        env.insert(k.to_string(), v.to_string());
    }
    launch(
        plan,
        layout.staging,
        hostname,
        layout.source,
        env,
        exe,
        vec![cstring(b"kortix-agent".to_vec())?],
    )
}

/// The launch of `exe` (with `argv`) over `plan`, as root inside mapped to this user: `env`
/// on top of the root's own `PATH`, in [`WORKSPACE`].
fn launch(
    plan: Plan,
    staging: &Path,
    hostname: String,
    source: &RootSource,
    env: BTreeMap<String, String>,
    exe: &str,
    argv: Vec<std::ffi::CString>,
) -> io::Result<Launch> {
    let path = match source {
        RootSource::Host => HOST_PATH,
        RootSource::Image(_) => IMAGE_PATH,
    };
    let mut full = BTreeMap::from([("PATH".to_string(), path.to_string())]);
    full.extend(env);
    let envp = full
        .into_iter()
        .map(|(k, v)| cstring(format!("{k}={v}").into_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    Ok(Launch {
        staging: cstring(staging.as_os_str().as_bytes().to_vec())?,
        hostname: hostname.into_bytes(),
        uid_map: format!("0 {uid} 1\n").into_bytes(),
        gid_map: format!("0 {gid} 1\n").into_bytes(),
        cwd: cstring(WORKSPACE.as_bytes().to_vec())?,
        exe: cstring(exe.as_bytes().to_vec())?,
        argv,
        envp,
        ops: plan.ops,
        labels: plan.labels,
        exec: true,
    })
}

/// One command run in an isolated sandbox instead of the agent (an app's build): the same
/// root, `/dev`, `/proc`, `/tmp` and `/run` as a session's sandbox, `workspace` at
/// [`WORKSPACE`] as its working directory and `home` at [`HOME`].
pub struct CommandLayout<'a> {
    /// Names the sandbox (its host name).
    pub name: &'a str,
    /// An empty directory, as [`SandboxLayout::staging`].
    pub staging: &'a Path,
    pub workspace: &'a Path,
    pub home: &'a Path,
    /// An empty directory shown at [`SPOOL`] (nothing uses it; the mounts are shared).
    pub scratch: &'a Path,
    pub source: &'a RootSource,
}

/// Builds the launch of `argv` (its first element an absolute path inside the sandbox) with
/// exactly `env` on top of the sandbox's `PATH`, `HOME` and `TMPDIR`.
pub fn prepare_command(
    layout: &CommandLayout<'_>,
    argv: &[String],
    env: BTreeMap<String, String>,
) -> io::Result<Launch> {
    let Some(exe) = argv.first().filter(|a| a.starts_with('/')) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the command must start with an absolute path",
        ));
    };
    let hostname = hostname_for(layout.name);
    let mut plan = Plan::new(layout.staging);
    match layout.source {
        RootSource::Host => host_system(&mut plan, &hostname)?,
        RootSource::Image(root) => image_system(&mut plan, root)?,
    }
    sandbox_mounts(
        &mut plan,
        &SandboxLayout {
            session_id: layout.name,
            staging: layout.staging,
            workspace: layout.workspace,
            home: layout.home,
            spool: layout.scratch,
            source: layout.source,
            agent_bin: Path::new(""),
            opencode_packages: None,
        },
    )?;
    let mut env = env;
    env.insert("HOME".into(), HOME.into());
    env.insert("TMPDIR".into(), "/tmp".into());
    let argv = argv
        .iter()
        .map(|a| cstring(a.as_bytes().to_vec()))
        .collect::<io::Result<Vec<_>>>()?;
    launch(
        plan,
        layout.staging,
        hostname,
        layout.source,
        env,
        exe,
        argv,
    )
}

/// `kortix-<session id>`, as a valid host name of at most 63 bytes.
pub fn hostname_for(session_id: &str) -> String {
    let mut name: String = format!("kortix-{session_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    while name.ends_with('-') {
        name.pop();
    }
    name
}

/// The host's system directories and a minimal `/etc`.
fn host_system(plan: &mut Plan, hostname: &str) -> io::Result<()> {
    for name in HOST_SYSTEM_DIRS {
        let host = Path::new("/").join(name);
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            continue;
        };
        let path = format!("/{name}");
        if meta.file_type().is_symlink() {
            plan.symlink(&std::fs::read_link(&host)?, &path)?;
        } else if meta.is_dir() {
            plan.bind(&host, &path, Bind::READ_ONLY)?;
        }
    }
    plan.mkdir("/etc", 0o755)?;
    plan.file("/etc/passwd", PASSWD.as_bytes(), 0o644)?;
    plan.file("/etc/group", GROUP.as_bytes(), 0o644)?;
    plan.file("/etc/hostname", format!("{hostname}\n").as_bytes(), 0o644)?;
    for name in HOST_ETC {
        // Symlinked entries (resolv.conf into /run, localtime into zoneinfo) are bound as
        // what they point at, so they never dangle.
        if let Ok(src) = std::fs::canonicalize(Path::new("/etc").join(name)) {
            plan.bind(&src, &format!("/etc/{name}"), Bind::READ_ONLY)?;
        }
    }
    Ok(())
}

/// Every top-level entry of an image root, read-only, with the host's DNS settings over the
/// image's placeholders (as container engines do).
fn image_system(plan: &mut Plan, root: &Path) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the sandbox root {}: {e}", root.display()),
            )
        })?
        .collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if IMAGE_RESERVED.contains(&name) {
            continue;
        }
        let host = entry.path();
        let path = format!("/{name}");
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            plan.symlink(&std::fs::read_link(&host)?, &path)?;
        } else if kind.is_dir() || kind.is_file() {
            plan.bind(&host, &path, Bind::READ_ONLY)?;
        }
    }
    for name in ["resolv.conf", "hosts"] {
        let target = root.join("etc").join(name);
        let is_file = std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_file());
        if let (true, Ok(src)) = (is_file, std::fs::canonicalize(Path::new("/etc").join(name))) {
            plan.bind_onto(&src, &format!("/etc/{name}"), Bind::READ_ONLY.optional())?;
        }
    }
    if std::fs::symlink_metadata(root.join("var/tmp")).is_ok_and(|m| m.is_dir()) {
        plan.mount(
            "tmpfs",
            "/var/tmp",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
            false,
        )?;
    }
    Ok(())
}

/// What every isolated sandbox has, whatever its root: `/dev`, `/proc`, `/tmp`, `/run` with
/// the spool, the workspace and `HOME`.
fn sandbox_mounts(plan: &mut Plan, layout: &SandboxLayout<'_>) -> io::Result<()> {
    plan.mkdir("/dev", 0o755)?;
    plan.mount(
        "tmpfs",
        "/dev",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "mode=0755",
        false,
    )?;
    for dev in DEVICES {
        let host = Path::new("/dev").join(dev);
        if host.exists() {
            let how = if *dev == "tty" {
                Bind::READ_WRITE.optional()
            } else {
                Bind::READ_WRITE
            };
            plan.bind(&host, &format!("/dev/{dev}"), how)?;
        }
    }
    for (target, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
        ("pts/ptmx", "/dev/ptmx"),
    ] {
        plan.symlink(Path::new(target), link)?;
    }
    plan.mkdir("/dev/pts", 0o755)?;
    plan.mount(
        "devpts",
        "/dev/pts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=620",
        true,
    )?;
    plan.mkdir("/dev/shm", 0o1777)?;
    plan.mount(
        "tmpfs",
        "/dev/shm",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
        true,
    )?;

    plan.mkdir("/proc", 0o555)?;
    plan.mount(
        "proc",
        "/proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
        false,
    )?;
    proc_masks(plan)?;
    plan.mkdir("/tmp", 0o1777)?;
    plan.mount(
        "tmpfs",
        "/tmp",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
        false,
    )?;
    if matches!(layout.source, RootSource::Host) {
        plan.mkdir("/var", 0o755)?;
        plan.mkdir("/var/tmp", 0o1777)?;
    }
    plan.mkdir("/run", 0o755)?;
    plan.mount(
        "tmpfs",
        "/run",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755",
        false,
    )?;
    plan.mkdir(SPOOL, 0o700)?;
    plan.bind_onto(layout.spool, SPOOL, Bind::READ_WRITE)?;
    plan.mkdir(WORKSPACE, 0o755)?;
    plan.bind_onto(layout.workspace, WORKSPACE, Bind::READ_WRITE)?;
    plan.mkdir(HOME, 0o700)?;
    plan.bind_onto(layout.home, HOME, Bind::READ_WRITE)?;
    Ok(())
}

/// Read-only and masked parts of the sandbox's fresh `/proc` (the host's `/proc` tells which
/// entries this kernel has and whether they are files or directories).
pub(super) fn proc_masks(plan: &mut Plan) -> io::Result<()> {
    for name in PROC_READ_ONLY {
        let path = format!("/proc/{name}");
        if Path::new(&path).exists() {
            plan.bind_inside(&path, &path, Bind::READ_ONLY)?;
        }
    }
    for name in PROC_MASKED {
        let path = format!("/proc/{name}");
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => plan.mount(
                "tmpfs",
                &path,
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                "size=0",
                true,
            )?,
            Ok(_) => plan.bind_onto(Path::new("/dev/null"), &path, Bind::READ_WRITE.optional())?,
            Err(_) => {}
        }
    }
    Ok(())
}

/// Binds the OpenCode install that `bin` belongs to and returns the path of `bin` inside:
/// an npm prefix (the directory holding `node_modules`) is bound whole at
/// [`OPENCODE_PREFIX`] so its relative links keep working; a binary the sandbox already sees
/// (under `/usr`) stays as it is; anything else is bound alone. A bare name (`opencode`) is
/// left to the sandbox's `PATH`.
fn bind_opencode(plan: &mut Plan, bin: &Path) -> io::Result<String> {
    if !bin.is_absolute() {
        return Ok(bin.display().to_string());
    }
    if !bin.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("KORTIX_OPENCODE_BIN {} does not exist", bin.display()),
        ));
    }
    let prefix = bin
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "node_modules"))
        .and_then(Path::parent);
    if let Some(prefix) = prefix
        && let Ok(rel) = bin.strip_prefix(prefix)
    {
        let host = std::fs::canonicalize(prefix)?;
        plan.mkdirs(parent_of(OPENCODE_PREFIX))?;
        plan.bind(&host, OPENCODE_PREFIX, Bind::READ_ONLY)?;
        return Ok(Path::new(OPENCODE_PREFIX).join(rel).display().to_string());
    }
    let real = std::fs::canonicalize(bin)?;
    if real.starts_with("/usr") {
        return Ok(real.display().to_string());
    }
    let inside_bin = format!("{OPENCODE_PREFIX}/bin/opencode");
    plan.mkdirs(parent_of(&inside_bin))?;
    plan.bind(&real, &inside_bin, Bind::READ_ONLY)?;
    Ok(inside_bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_valid() {
        assert_eq!(hostname_for("0199a-b_c"), "kortix-0199a-b-c");
        let long = "x".repeat(80);
        assert_eq!(hostname_for(&long).len(), 63);
        assert!(!hostname_for("a_").ends_with('-'));
    }
    #[test]
    fn opencode_packages_are_bound_read_only_and_named_inside() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("kortix-agent");
        std::fs::write(&agent, "").unwrap();
        let packages = dir.path().join("opencode-packages/1.18.33");
        std::fs::create_dir_all(&packages).unwrap();
        let (staging, ws, home, spool) = (
            dir.path().join("staging"),
            dir.path().join("ws"),
            dir.path().join("home"),
            dir.path().join("spool"),
        );
        let layout = |with: Option<&'_ Path>| {
            prepare(
                &SandboxLayout {
                    session_id: "s1",
                    staging: &staging,
                    workspace: &ws,
                    home: &home,
                    spool: &spool,
                    source: &RootSource::Host,
                    agent_bin: &agent,
                    opencode_packages: with,
                },
                BTreeMap::new(),
            )
            .unwrap()
        };
        let launch = layout(Some(&packages));
        let bound = format!(
            "binding {} at {OPENCODE_PACKAGES} (read-only)",
            std::fs::canonicalize(&packages).unwrap().display()
        );
        assert!(launch.labels.contains(&bound), "{:?}", launch.labels);
        let env = format!("KORTIX_OPENCODE_PACKAGES={OPENCODE_PACKAGES}");
        assert!(
            launch.envp.iter().any(|e| e.to_bytes() == env.as_bytes()),
            "{:?}",
            launch.envp
        );
        let without = layout(None);
        assert!(!without.labels.iter().any(|l| l.contains(OPENCODE_PACKAGES)));
        assert!(
            !without
                .envp
                .iter()
                .any(|e| e.to_bytes().starts_with(b"KORTIX_OPENCODE_PACKAGES="))
        );
    }

    #[test]
    fn an_npm_prefix_is_bound_whole() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir
            .path()
            .join("node_modules/opencode-linux-x64/bin/opencode");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, "").unwrap();
        let mut plan = Plan::new(Path::new("/staging"));
        let inside_bin = bind_opencode(&mut plan, &bin).unwrap();
        assert_eq!(
            inside_bin,
            "/opt/opencode/node_modules/opencode-linux-x64/bin/opencode"
        );
        assert!(
            plan.labels
                .iter()
                .any(|l| l.contains("at /opt/opencode (read-only)")),
            "{:?}",
            plan.labels
        );
        assert_eq!(
            bind_opencode(&mut plan, Path::new("opencode")).unwrap(),
            "opencode"
        );
        assert!(bind_opencode(&mut plan, &dir.path().join("missing")).is_err());
    }
}
