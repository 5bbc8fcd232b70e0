//! Namespace isolation for `local` sandboxes.
//!
//! The control plane `clone(2)`s the sandbox's first process straight into new user, mount,
//! PID, IPC and UTS namespaces (never a new network namespace: the agent reaches the control
//! plane on the host's loopback). That process is PID 1 of its PID namespace from birth, so
//! the agent it becomes is the namespace's init and really reaps orphans. Before it `execve`s
//! the agent it:
//!
//! 1. maps its own uid/gid to 0 inside (`setgroups` denied first, as the kernel requires);
//! 2. makes every inherited mount private, mounts a fresh tmpfs on the session's empty
//!    `rootfs` directory and fills it from a [`Plan`] computed beforehand: read-only binds of
//!    the system directories (the host's, or every top-level directory of an assembled image
//!    root, see `image/`), a minimal `/etc`, `/dev` with a handful of device binds, a fresh
//!    `/proc` for the new PID namespace, private `/tmp` and `/run`, the session's workspace at
//!    `/workspace`, its private `HOME` at `/root`, its spool, the agent binary and the OpenCode
//!    install — and nothing else of the data directory;
//! 3. `pivot_root`s into it and detaches the old root, sets the hostname, drops every
//!    capability (bounding set included) and sets `no_new_privs`, then `execve`s the agent.
//!
//! The child of `clone` runs in a copy of a multi-threaded process, so it may only make raw
//! system calls: everything it needs (C strings, pointer arrays, maps) is prepared before the
//! clone, and a failure is reported as `(step, errno)` on a close-on-exec pipe that reads as
//! EOF once `execve` succeeded.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

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
}

/// Everything the cloned child needs, prepared while allocating is still allowed.
pub struct Launch {
    ops: Vec<Op>,
    labels: Vec<String>,
    staging: CString,
    hostname: Vec<u8>,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    cwd: CString,
    exe: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// `false` for the support probe: set everything up, then exit 0 instead of `execve`.
    exec: bool,
}

/// Why a sandbox could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create the sandbox's namespaces (clone: {0})")]
    Clone(#[source] io::Error),
    #[error("setting up the sandbox: {step}: {source}")]
    Setup {
        step: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
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
            plan.bind(&agent, HOST_AGENT, true, false)?;
            if let Some(bin) = env.get("KORTIX_OPENCODE_BIN").cloned() {
                let inside_bin = bind_opencode(&mut plan, Path::new(&bin))?;
                env.insert("KORTIX_OPENCODE_BIN".into(), inside_bin);
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

    let path = match layout.source {
        RootSource::Host => HOST_PATH,
        RootSource::Image(_) => IMAGE_PATH,
    };
    let mut full = BTreeMap::from([("PATH".to_string(), path.to_string())]);
    full.extend(env);
    for (k, v) in [
        ("HOME", HOME),
        ("TMPDIR", "/tmp"),
        ("KORTIX_WORKSPACE", WORKSPACE),
        ("KORTIX_SPOOL_DIR", SPOOL),
    ] {
        full.insert(k.to_string(), v.to_string());
    }
    let envp = full
        .into_iter()
        .map(|(k, v)| cstring(format!("{k}={v}").into_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    Ok(Launch {
        staging: cstring(layout.staging.as_os_str().as_bytes().to_vec())?,
        hostname: hostname.into_bytes(),
        uid_map: format!("0 {uid} 1\n").into_bytes(),
        gid_map: format!("0 {gid} 1\n").into_bytes(),
        cwd: cstring(WORKSPACE.as_bytes().to_vec())?,
        exe: cstring(exe.as_bytes().to_vec())?,
        argv: vec![cstring(b"kortix-agent".to_vec())?],
        envp,
        ops: plan.ops,
        labels: plan.labels,
        exec: true,
    })
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

/// Whether this kernel (and whatever confines this process) lets us build a sandbox: tries
/// every kind of step once — namespaces, id maps, tmpfs, a read-only bind, a fresh `/proc`,
/// `pivot_root`, the hostname, dropping capabilities — in a throwaway child. `scratch` is a
/// directory this process may create and remove.
pub fn probe(scratch: &Path) -> Result<(), String> {
    let staging = scratch.join(format!(".isolation-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let result = probe_in(&staging);
    let _ = std::fs::remove_dir(&staging);
    result
}

fn probe_in(staging: &Path) -> Result<(), String> {
    let text = |e: io::Error| e.to_string();
    let mut plan = Plan::new(staging);
    plan.mkdir("/proc", 0o555).map_err(text)?;
    plan.mount(
        "proc",
        "/proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
        false,
    )
    .map_err(text)?;
    proc_masks(&mut plan).map_err(text)?;
    if Path::new("/usr").is_dir() {
        plan.bind(Path::new("/usr"), "/usr", true, false)
            .map_err(text)?;
    }
    plan.mkdir("/workspace", 0o755).map_err(text)?;
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let launch = Launch {
        staging: cstring(staging.as_os_str().as_bytes().to_vec()).map_err(text)?,
        hostname: b"kortix-probe".to_vec(),
        uid_map: format!("0 {uid} 1\n").into_bytes(),
        gid_map: format!("0 {gid} 1\n").into_bytes(),
        cwd: c"/workspace".to_owned(),
        exe: c"/bin/true".to_owned(),
        argv: vec![c"true".to_owned()],
        envp: Vec::new(),
        ops: plan.ops,
        labels: plan.labels,
        exec: false,
    };
    let null = || {
        std::fs::File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(text)
    };
    let pid = spawn(&launch, null()?, null()?, null()?).map_err(|e| explain(&e))?;
    match wait(pid) {
        Ok(Ended { code: Some(0), .. }) => Ok(()),
        Ok(ended) => Err(format!("the probe sandbox ended with {ended:?}")),
        Err(e) => Err(format!("waiting for the probe sandbox: {e}")),
    }
}

/// A human reason for a failed spawn, with the usual causes named.
pub fn explain(e: &SpawnError) -> String {
    match e {
        SpawnError::Clone(err) => format!(
            "{e}: user namespaces are disabled or blocked here (see the sysctls \
             kernel.unprivileged_userns_clone and user.max_user_namespaces, or the seccomp/AppArmor \
             policy of the container this runs in){}",
            if err.raw_os_error() == Some(libc::ENOSPC) {
                " — user.max_user_namespaces is exhausted"
            } else {
                ""
            }
        ),
        SpawnError::Setup { step, .. } if step.contains("proc") => format!(
            "{e} (mounting a fresh /proc needs a fully visible /proc in this mount namespace; \
             container runtimes often mask parts of it)"
        ),
        other => other.to_string(),
    }
}

/// How a sandbox's first process ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ended {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// Waits (blocking) for a child started by [`spawn`].
pub fn wait(pid: i32) -> io::Result<Ended> {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => {
                return Ok(Ended {
                    code: Some(code),
                    signal: None,
                });
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Ok(Ended {
                    code: None,
                    signal: Some(sig as i32),
                });
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Clones the sandbox's first process into its namespaces and runs the launch there. Returns
/// its pid (in this PID namespace) once it has `execve`d the agent — or, for a probe, once it
/// finished setting up. The caller must [`wait`] for it.
pub fn spawn(
    launch: &Launch,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<i32, SpawnError> {
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let argv: Vec<*const libc::c_char> = launch
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = launch
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let fds = ChildFds {
        stdin: stdin.as_raw_fd(),
        stdout: stdout.as_raw_fd(),
        stderr: stderr.as_raw_fd(),
        report: report_w.as_raw_fd(),
    };
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::SIGCHLD;
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack): the child gets a copy of this
    // address space and runs `child_main`, which only makes raw system calls on data prepared
    // above and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if pid < 0 {
        return Err(SpawnError::Clone(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: see above; this is the child.
        unsafe { child_main(launch, &argv, &envp, &fds) }
    }
    let pid = pid as i32;
    drop(report_w);
    drop((stdin, stdout, stderr));
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(&report_r, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                let _ = wait(pid);
                return Err(io::Error::from(e).into());
            }
        }
    }
    if got == 0 {
        return Ok(pid);
    }
    let _ = wait(pid);
    let step = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Err(SpawnError::Setup {
        step: step_label(step, &launch.labels),
        source: io::Error::from_raw_os_error(errno),
    })
}

// ---------------------------------------------------------------------------------------------
// The mount plan.

#[derive(Debug)]
enum Op {
    Mkdir {
        path: CString,
        mode: libc::mode_t,
    },
    File {
        path: CString,
        contents: Vec<u8>,
        mode: libc::mode_t,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    Bind {
        src: CString,
        dst: CString,
        readonly: bool,
        /// Flags of the source's mount that a legacy read-only remount must keep (the kernel
        /// locks them in a less privileged user namespace).
        locked: libc::c_ulong,
        optional: bool,
    },
    Mount {
        fstype: CString,
        dst: CString,
        flags: libc::c_ulong,
        data: CString,
        optional: bool,
    },
}

/// Mount operations on the new root, by path inside the sandbox.
struct Plan {
    root: PathBuf,
    ops: Vec<Op>,
    labels: Vec<String>,
}

impl Plan {
    fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            ops: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn at(&self, inside_path: &str) -> io::Result<CString> {
        cstring(inside(&self.root, inside_path).into_os_string().into_vec())
    }

    fn push(&mut self, op: Op, label: String) {
        self.ops.push(op);
        self.labels.push(label);
    }

    fn mkdir(&mut self, path: &str, mode: libc::mode_t) -> io::Result<()> {
        let op = Op::Mkdir {
            path: self.at(path)?,
            mode,
        };
        self.push(op, format!("creating {path}"));
        Ok(())
    }

    /// `path` and each missing ancestor.
    fn mkdirs(&mut self, path: &str) -> io::Result<()> {
        let mut sofar = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            sofar.push('/');
            sofar.push_str(part);
            self.mkdir(&sofar.clone(), 0o755)?;
        }
        Ok(())
    }

    fn file(&mut self, path: &str, contents: &[u8], mode: libc::mode_t) -> io::Result<()> {
        let op = Op::File {
            path: self.at(path)?,
            contents: contents.to_vec(),
            mode,
        };
        self.push(op, format!("writing {path}"));
        Ok(())
    }

    fn symlink(&mut self, target: &Path, path: &str) -> io::Result<()> {
        let op = Op::Symlink {
            target: cstring(target.as_os_str().as_bytes().to_vec())?,
            path: self.at(path)?,
        };
        self.push(op, format!("linking {path}"));
        Ok(())
    }

    /// Binds host `src` at `path`, creating the mount point (a directory or an empty file).
    fn bind(&mut self, src: &Path, path: &str, readonly: bool, optional: bool) -> io::Result<()> {
        if std::fs::metadata(src)?.is_dir() {
            self.mkdir(path, 0o755)?;
        } else {
            self.file(path, b"", 0o644)?;
        }
        self.bind_onto(src, path, readonly, optional)
    }

    /// Binds host `src` onto an existing `path` (a mount point the image provides).
    fn bind_onto(
        &mut self,
        src: &Path,
        path: &str,
        readonly: bool,
        optional: bool,
    ) -> io::Result<()> {
        let locked = nix::sys::statvfs::statvfs(src)
            .map(|s| locked_flags(s.flags()))
            .unwrap_or(0);
        let op = Op::Bind {
            src: cstring(src.as_os_str().as_bytes().to_vec())?,
            dst: self.at(path)?,
            readonly,
            locked,
            optional,
        };
        let mode = if readonly { "read-only" } else { "read-write" };
        self.push(op, format!("binding {} at {path} ({mode})", src.display()));
        Ok(())
    }

    /// Binds `src` of the new root onto `path` of it (to make part of a mount read-only).
    fn bind_inside(
        &mut self,
        src: &str,
        path: &str,
        readonly: bool,
        optional: bool,
    ) -> io::Result<()> {
        let op = Op::Bind {
            src: self.at(src)?,
            dst: self.at(path)?,
            readonly,
            locked: 0,
            optional,
        };
        let mode = if readonly { "read-only" } else { "read-write" };
        self.push(op, format!("binding {src} at {path} ({mode})"));
        Ok(())
    }

    fn mount(
        &mut self,
        fstype: &str,
        path: &str,
        flags: libc::c_ulong,
        data: &str,
        optional: bool,
    ) -> io::Result<()> {
        let op = Op::Mount {
            fstype: cstring(fstype.as_bytes().to_vec())?,
            dst: self.at(path)?,
            flags,
            data: cstring(data.as_bytes().to_vec())?,
            optional,
        };
        self.push(op, format!("mounting {fstype} at {path}"));
        Ok(())
    }
}

fn locked_flags(flags: nix::sys::statvfs::FsFlags) -> libc::c_ulong {
    use nix::sys::statvfs::FsFlags;
    let mut out = 0;
    for (st, ms) in [
        (FsFlags::ST_NOSUID, libc::MS_NOSUID),
        (FsFlags::ST_NODEV, libc::MS_NODEV),
        (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
        (FsFlags::ST_NOATIME, libc::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, libc::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if flags.contains(st) {
            out |= ms;
        }
    }
    out
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
            plan.bind(&host, &path, true, false)?;
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
            plan.bind(&src, &format!("/etc/{name}"), true, false)?;
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
            plan.bind(&host, &path, true, false)?;
        }
    }
    for name in ["resolv.conf", "hosts"] {
        let target = root.join("etc").join(name);
        let is_file = std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_file());
        if let (true, Ok(src)) = (is_file, std::fs::canonicalize(Path::new("/etc").join(name))) {
            plan.bind_onto(&src, &format!("/etc/{name}"), true, true)?;
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
            plan.bind(&host, &format!("/dev/{dev}"), false, *dev == "tty")?;
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
    plan.bind_onto(layout.spool, SPOOL, false, false)?;
    plan.mkdir(WORKSPACE, 0o755)?;
    plan.bind_onto(layout.workspace, WORKSPACE, false, false)?;
    plan.mkdir(HOME, 0o700)?;
    plan.bind_onto(layout.home, HOME, false, false)?;
    Ok(())
}

/// Read-only and masked parts of the sandbox's fresh `/proc` (the host's `/proc` tells which
/// entries this kernel has and whether they are files or directories).
fn proc_masks(plan: &mut Plan) -> io::Result<()> {
    for name in PROC_READ_ONLY {
        let path = format!("/proc/{name}");
        if Path::new(&path).exists() {
            plan.bind_inside(&path, &path, true, false)?;
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
            Ok(_) => plan.bind_onto(Path::new("/dev/null"), &path, false, true)?,
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
        plan.bind(&host, OPENCODE_PREFIX, true, false)?;
        return Ok(Path::new(OPENCODE_PREFIX).join(rel).display().to_string());
    }
    let real = std::fs::canonicalize(bin)?;
    if real.starts_with("/usr") {
        return Ok(real.display().to_string());
    }
    let inside_bin = format!("{OPENCODE_PREFIX}/bin/opencode");
    plan.mkdirs(parent_of(&inside_bin))?;
    plan.bind(&real, &inside_bin, true, false)?;
    Ok(inside_bin)
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/')
        .map_or("/", |(p, _)| if p.is_empty() { "/" } else { p })
}

/// `inside_path` (absolute, inside the sandbox) under `root` on the host.
fn inside(root: &Path, inside_path: &str) -> PathBuf {
    root.join(inside_path.trim_start_matches('/'))
}

fn cstring(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

// ---------------------------------------------------------------------------------------------
// The child: raw system calls only.

const STEP_STDIO: u32 = 0;
const STEP_PGID: u32 = 1;
const STEP_SETGROUPS: u32 = 2;
const STEP_UID_MAP: u32 = 3;
const STEP_GID_MAP: u32 = 4;
const STEP_PRIVATE: u32 = 5;
const STEP_ROOT: u32 = 6;
const STEP_PIVOT: u32 = 7;
const STEP_HOSTNAME: u32 = 8;
const STEP_CWD: u32 = 9;
const STEP_PRIVILEGES: u32 = 10;
const STEP_EXEC: u32 = 11;
const STEP_OPS: u32 = 100;
const FIXED_STEPS: &[&str] = &[
    "redirecting stdio",
    "creating the process group",
    "denying setgroups",
    "writing the uid map",
    "writing the gid map",
    "making mounts private",
    "mounting the root tmpfs",
    "pivoting into the new root",
    "setting the hostname",
    "entering /workspace",
    "dropping privileges",
    "executing the agent",
];

fn step_label(step: u32, labels: &[String]) -> String {
    if step >= STEP_OPS {
        return labels
            .get((step - STEP_OPS) as usize)
            .cloned()
            .unwrap_or_else(|| format!("step {step}"));
    }
    FIXED_STEPS
        .get(step as usize)
        .map_or_else(|| format!("step {step}"), |s| (*s).to_string())
}

struct ChildFds {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    report: RawFd,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

fn errno() -> libc::c_int {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Reports `(step, errno)` to the parent and exits.
unsafe fn fail(report: RawFd, step: u32) -> ! {
    let err = errno();
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&step.to_le_bytes());
    buf[4..].copy_from_slice(&err.to_le_bytes());
    unsafe {
        libc::write(report, buf.as_ptr().cast(), buf.len());
        libc::_exit(127)
    }
}

unsafe fn write_all(path: &CStr, data: &[u8], flags: libc::c_int, mode: libc::mode_t) -> bool {
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC | flags,
            mode as libc::c_uint,
        );
        if fd < 0 {
            return false;
        }
        let mut off = 0;
        while off < data.len() {
            let n = libc::write(fd, data[off..].as_ptr().cast(), data.len() - off);
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                libc::close(fd);
                return false;
            }
            off += n as usize;
        }
        libc::close(fd) == 0
    }
}

unsafe fn run_op(op: &Op) -> bool {
    unsafe {
        match op {
            Op::Mkdir { path, mode } => {
                libc::mkdir(path.as_ptr(), *mode) == 0 || errno() == libc::EEXIST
            }
            Op::File {
                path,
                contents,
                mode,
            } => write_all(path, contents, libc::O_CREAT | libc::O_TRUNC, *mode),
            Op::Symlink { target, path } => libc::symlink(target.as_ptr(), path.as_ptr()) == 0,
            Op::Bind {
                src,
                dst,
                readonly,
                locked,
                optional,
            } => {
                let ok = libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) == 0;
                if !ok {
                    return *optional;
                }
                if !*readonly {
                    return true;
                }
                let attr = MountAttr {
                    attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                    attr_clr: 0,
                    propagation: 0,
                    userns_fd: 0,
                };
                let r = libc::syscall(
                    libc::SYS_mount_setattr,
                    libc::AT_FDCWD as libc::c_long,
                    dst.as_ptr(),
                    libc::AT_RECURSIVE as libc::c_long,
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>() as libc::c_long,
                );
                if r == 0 {
                    return true;
                }
                // Kernels before 5.12: a (non-recursive) read-only remount that keeps the
                // flags the kernel locked.
                libc::mount(
                    std::ptr::null(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | *locked,
                    std::ptr::null(),
                ) == 0
            }
            Op::Mount {
                fstype,
                dst,
                flags,
                data,
                optional,
            } => {
                let data_ptr = if data.is_empty() {
                    std::ptr::null()
                } else {
                    data.as_ptr().cast()
                };
                libc::mount(
                    fstype.as_ptr(),
                    dst.as_ptr(),
                    fstype.as_ptr(),
                    *flags,
                    data_ptr,
                ) == 0
                    || *optional
            }
        }
    }
}

/// The cloned child. It is PID 1 of the new PID namespace and holds every capability of the
/// new user namespace until it drops them just before `execve`.
unsafe fn child_main(
    l: &Launch,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    fds: &ChildFds,
) -> ! {
    let report = fds.report;
    unsafe {
        for (src, dst) in [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)] {
            let ok = if src == dst {
                libc::fcntl(dst, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(src, dst) == dst
            };
            if !ok {
                fail(report, STEP_STDIO);
            }
        }
        // A clean signal state for the agent: nothing blocked, SIGPIPE back to its default.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if libc::setpgid(0, 0) != 0 {
            fail(report, STEP_PGID);
        }
        if !write_all(c"/proc/self/setgroups", b"deny", 0, 0) {
            fail(report, STEP_SETGROUPS);
        }
        if !write_all(c"/proc/self/uid_map", &l.uid_map, 0, 0) {
            fail(report, STEP_UID_MAP);
        }
        if !write_all(c"/proc/self/gid_map", &l.gid_map, 0, 0) {
            fail(report, STEP_GID_MAP);
        }
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            fail(report, STEP_PRIVATE);
        }
        if libc::mount(
            c"tmpfs".as_ptr(),
            l.staging.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755".as_ptr().cast(),
        ) != 0
        {
            fail(report, STEP_ROOT);
        }
        // Modes in the plan are meant literally (1777 for /tmp); the agent gets the umask back.
        let umask = libc::umask(0);
        for (i, op) in l.ops.iter().enumerate() {
            if !run_op(op) {
                fail(report, STEP_OPS + i as u32);
            }
        }
        libc::umask(umask);
        if libc::chdir(l.staging.as_ptr()) != 0
            || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0
            || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0
            || libc::chdir(c"/".as_ptr()) != 0
        {
            fail(report, STEP_PIVOT);
        }
        if libc::sethostname(l.hostname.as_ptr().cast(), l.hostname.len()) != 0 {
            fail(report, STEP_HOSTNAME);
        }
        if libc::chdir(l.cwd.as_ptr()) != 0 {
            fail(report, STEP_CWD);
        }
        // Root inside, but without a single capability: it cannot remount the read-only
        // binds, and nothing it runs gains privileges.
        if libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) != 0
        {
            fail(report, STEP_PRIVILEGES);
        }
        for cap in 0..64 as libc::c_ulong {
            if libc::prctl(
                libc::PR_CAPBSET_DROP,
                cap,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) != 0
                && errno() != libc::EINVAL
            {
                fail(report, STEP_PRIVILEGES);
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) != 0 {
            fail(report, STEP_PRIVILEGES);
        }
        if !l.exec {
            libc::_exit(0);
        }
        // Nothing of the control plane's open files crosses the exec.
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_long,
            libc::c_uint::MAX as libc::c_long,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_long,
        );
        libc::execve(l.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(report, STEP_EXEC)
    }
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
    fn paths_inside_the_root() {
        assert_eq!(parent_of("/opt/kortix/bin/kortix-agent"), "/opt/kortix/bin");
        assert_eq!(parent_of("/opt"), "/");
        assert_eq!(
            inside(Path::new("/r"), "/usr/bin"),
            PathBuf::from("/r/usr/bin")
        );
        assert!(step_label(STEP_OPS + 1, &["a".into(), "b".into()]) == "b");
        assert_eq!(step_label(STEP_EXEC, &[]), "executing the agent");
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
