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
//!
//! - [`layout`]: what the sandbox sees — which host or image directories, `/etc`, `/dev`,
//!   `/proc` masks, the session's own directories — as a plan of mount operations.
//! - [`plan`]: the mount operations themselves, prepared as C strings.
//! - [`spawn`]: the clone, the parent's side of the report pipe, waiting, the support probe.
//! - [`child`]: the cloned child, which may only make raw system calls.

mod child;
mod layout;
mod plan;
mod spawn;

pub use layout::{
    CommandLayout, HOME, HOST_AGENT, IMAGE_AGENT, OPENCODE_PREFIX, RootSource, SPOOL,
    SandboxLayout, WORKSPACE, hostname_for, prepare, prepare_command,
};
pub use spawn::{Ended, Launch, SpawnError, explain, probe, spawn, wait};
