//! Errors of reading and diffing repositories, shared by every part of [`super`].

use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::git::{names::NameError, refs::RefError};

/// Why a diff, an ancestry query or a merge preview could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    /// gix failed while reading or writing the repository; `action` says what we were doing.
    #[error("{action} in {repo}: {message}")]
    Git {
        action: String,
        repo: PathBuf,
        message: String,
        #[source]
        source: gix::Error,
    },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Ref(#[from] RefError),
    #[error("branch {branch:?} does not exist in {repo}")]
    BranchNotFound { branch: String, repo: PathBuf },
    /// `base...head` is undefined for histories that share no commit (git: "no merge base").
    #[error("{base} and {head} have no merge base in {repo}")]
    NoMergeBase {
        base: ObjectId,
        head: ObjectId,
        repo: PathBuf,
    },
}

impl ChangesError {
    /// Wraps a gix error with what we were doing and where, keeping the whole cause chain in
    /// the message because gix puts the useful detail in the causes.
    pub(crate) fn git(repo: &Path, action: impl Into<String>, source: gix::Error) -> Self {
        ChangesError::Git {
            action: action.into(),
            repo: repo.to_owned(),
            message: crate::git::refs::chain(&source),
            source,
        }
    }
}

/// Shorthand for mapping a gix result into [`ChangesError::Git`] with context.
pub(crate) trait GitContext<T> {
    fn ctx(
        self,
        repo: &gix::Repository,
        action: impl FnOnce() -> String,
    ) -> Result<T, ChangesError>;
}

impl<T> GitContext<T> for Result<T, gix::Error> {
    fn ctx(
        self,
        repo: &gix::Repository,
        action: impl FnOnce() -> String,
    ) -> Result<T, ChangesError> {
        self.map_err(|e| ChangesError::git(repo.path(), action(), e))
    }
}
