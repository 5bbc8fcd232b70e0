//! Starting a sandbox: the clone into new namespaces, the parent's side of the child's report
//! pipe, waiting for it, and the probe that tells whether this kernel allows it at all.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::child::{self, ChildFds};
use super::layout::proc_masks;
use super::plan::{Bind, Op, Plan, cstring};

/// Everything the cloned child needs, prepared while allocating is still allowed.
pub struct Launch {
    pub(super) ops: Vec<Op>,
    pub(super) labels: Vec<String>,
    pub(super) staging: CString,
    pub(super) hostname: Vec<u8>,
    pub(super) uid_map: Vec<u8>,
    pub(super) gid_map: Vec<u8>,
    pub(super) cwd: CString,
    pub(super) exe: CString,
    pub(super) argv: Vec<CString>,
    pub(super) envp: Vec<CString>,
    /// `false` for the support probe: set everything up, then exit 0 instead of `execve`.
    pub(super) exec: bool,
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
        plan.bind(Path::new("/usr"), "/usr", Bind::READ_ONLY)
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
        unsafe { child::child_main(launch, &argv, &envp, &fds) }
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
        step: child::step_label(step, &launch.labels),
        source: io::Error::from_raw_os_error(errno),
    })
}
