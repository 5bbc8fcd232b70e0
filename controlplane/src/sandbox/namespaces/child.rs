//! The cloned child: PID 1 of the new PID namespace, in a copy of a multi-threaded process, so
//! it may only make raw system calls on data prepared before the clone. Any failure is
//! reported to the parent as `(step, errno)` on a close-on-exec pipe, then the child exits.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

use super::plan::Op;
use super::spawn::Launch;

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
pub(super) const STEP_EXEC: u32 = 11;
pub(super) const STEP_OPS: u32 = 100;
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

pub(super) fn step_label(step: u32, labels: &[String]) -> String {
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

pub(super) struct ChildFds {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub report: RawFd,
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
pub(super) unsafe fn child_main(
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
    fn steps_are_named() {
        assert!(step_label(STEP_OPS + 1, &["a".into(), "b".into()]) == "b");
        assert_eq!(step_label(STEP_EXEC, &[]), "executing the agent");
    }
}
