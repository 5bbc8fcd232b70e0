//! The mount plan of a sandbox's root: operations by path inside the sandbox, prepared as C
//! strings before the clone (the child may not allocate).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// How a bind mount is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bind {
    pub readonly: bool,
    /// A bind that fails (a device this kernel lacks) is skipped instead of failing the boot.
    pub optional: bool,
}

impl Bind {
    pub const READ_ONLY: Bind = Bind {
        readonly: true,
        optional: false,
    };
    pub const READ_WRITE: Bind = Bind {
        readonly: false,
        optional: false,
    };

    pub const fn optional(self) -> Bind {
        Bind {
            optional: true,
            ..self
        }
    }

    fn label(self) -> &'static str {
        if self.readonly {
            "read-only"
        } else {
            "read-write"
        }
    }
}

#[derive(Debug)]
pub(super) enum Op {
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
pub(super) struct Plan {
    root: PathBuf,
    pub(super) ops: Vec<Op>,
    pub(super) labels: Vec<String>,
}

impl Plan {
    pub(super) fn new(root: &Path) -> Self {
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

    pub(super) fn mkdir(&mut self, path: &str, mode: libc::mode_t) -> io::Result<()> {
        let op = Op::Mkdir {
            path: self.at(path)?,
            mode,
        };
        self.push(op, format!("creating {path}"));
        Ok(())
    }

    /// `path` and each missing ancestor.
    pub(super) fn mkdirs(&mut self, path: &str) -> io::Result<()> {
        let mut sofar = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            sofar.push('/');
            sofar.push_str(part);
            self.mkdir(&sofar.clone(), 0o755)?;
        }
        Ok(())
    }

    pub(super) fn file(
        &mut self,
        path: &str,
        contents: &[u8],
        mode: libc::mode_t,
    ) -> io::Result<()> {
        let op = Op::File {
            path: self.at(path)?,
            contents: contents.to_vec(),
            mode,
        };
        self.push(op, format!("writing {path}"));
        Ok(())
    }

    pub(super) fn symlink(&mut self, target: &Path, path: &str) -> io::Result<()> {
        let op = Op::Symlink {
            target: cstring(target.as_os_str().as_bytes().to_vec())?,
            path: self.at(path)?,
        };
        self.push(op, format!("linking {path}"));
        Ok(())
    }

    /// Binds host `src` at `path`, creating the mount point (a directory or an empty file).
    pub(super) fn bind(&mut self, src: &Path, path: &str, how: Bind) -> io::Result<()> {
        if std::fs::metadata(src)?.is_dir() {
            self.mkdir(path, 0o755)?;
        } else {
            self.file(path, b"", 0o644)?;
        }
        self.bind_onto(src, path, how)
    }

    /// Binds host `src` onto an existing `path` (a mount point the image provides).
    pub(super) fn bind_onto(&mut self, src: &Path, path: &str, how: Bind) -> io::Result<()> {
        let locked = nix::sys::statvfs::statvfs(src)
            .map(|s| locked_flags(s.flags()))
            .unwrap_or(0);
        let op = Op::Bind {
            src: cstring(src.as_os_str().as_bytes().to_vec())?,
            dst: self.at(path)?,
            readonly: how.readonly,
            locked,
            optional: how.optional,
        };
        self.push(
            op,
            format!("binding {} at {path} ({})", src.display(), how.label()),
        );
        Ok(())
    }

    /// Binds `src` of the new root onto `path` of it (to make part of a mount read-only).
    pub(super) fn bind_inside(&mut self, src: &str, path: &str, how: Bind) -> io::Result<()> {
        let op = Op::Bind {
            src: self.at(src)?,
            dst: self.at(path)?,
            readonly: how.readonly,
            locked: 0,
            optional: how.optional,
        };
        self.push(op, format!("binding {src} at {path} ({})", how.label()));
        Ok(())
    }

    pub(super) fn mount(
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

pub(super) fn parent_of(path: &str) -> &str {
    path.rsplit_once('/')
        .map_or("/", |(p, _)| if p.is_empty() { "/" } else { p })
}

/// `inside_path` (absolute, inside the sandbox) under `root` on the host.
pub(super) fn inside(root: &Path, inside_path: &str) -> PathBuf {
    root.join(inside_path.trim_start_matches('/'))
}

pub(super) fn cstring(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_root() {
        assert_eq!(parent_of("/opt/kortix/bin/kortix-agent"), "/opt/kortix/bin");
        assert_eq!(parent_of("/opt"), "/");
        assert_eq!(
            inside(Path::new("/r"), "/usr/bin"),
            PathBuf::from("/r/usr/bin")
        );
    }

    #[test]
    fn binds_say_how_they_are_made() {
        let mut plan = Plan::new(Path::new("/staging"));
        plan.bind_onto(
            Path::new("/dev/null"),
            "/dev/null",
            Bind::READ_WRITE.optional(),
        )
        .unwrap();
        plan.bind_inside("/proc/sys", "/proc/sys", Bind::READ_ONLY)
            .unwrap();
        assert_eq!(
            plan.labels,
            [
                "binding /dev/null at /dev/null (read-write)",
                "binding /proc/sys at /proc/sys (read-only)"
            ]
        );
        assert!(matches!(
            plan.ops[0],
            Op::Bind {
                readonly: false,
                optional: true,
                ..
            }
        ));
        assert!(matches!(
            plan.ops[1],
            Op::Bind {
                readonly: true,
                optional: false,
                ..
            }
        ));
    }
}
