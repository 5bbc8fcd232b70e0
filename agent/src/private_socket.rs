//! The daemon's unix sockets for its in-sandbox helpers (git's credential helper,
//! `kortix-agent mcp`): a private directory (0700), the socket 0600, a stale socket from an
//! earlier run replaced, and a bounded number of connections at a time.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
#[error("daemon socket {path}: {source}")]
pub struct SocketError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// A served socket; dropping it stops serving and removes the socket.
pub struct PrivateSocket {
    pub socket: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for PrivateSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Binds `<dir>/<name>` and hands each connection to `handle`, at most `max_concurrent` at
/// once (more are dropped: the helper reports the failure).
pub fn serve<F, Fut>(
    dir: &Path,
    name: &str,
    max_concurrent: usize,
    handle: F,
) -> Result<PrivateSocket, SocketError>
where
    F: Fn(UnixStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| SocketError { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err(dir))?;
    let socket = dir.join(name);
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&socket)(e)),
    }
    let listener = UnixListener::bind(&socket).map_err(err(&socket))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(err(&socket))?;
    let limit = Arc::new(tokio::sync::Semaphore::new(max_concurrent));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                continue;
            };
            let work = handle(stream);
            tokio::spawn(async move {
                work.await;
                drop(permit);
            });
        }
    });
    Ok(PrivateSocket { socket, task })
}
