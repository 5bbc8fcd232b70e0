//! Bare repositories of projects and their hosting over smart HTTP.
//!
//! - [`names`]: validation of branch names and project ids before they touch the filesystem.
//! - [`ref_stamp`]: whether a branch may have moved, from two `stat`s, without opening the
//!   repository.
//! - [`refs`]: compare-and-swap ref updates, the only way the control plane moves a ref.
//! - [`repos`]: the per-project bare repositories: create, import, read, branch, delete.
//! - [`http`]: smart HTTP hosting through `git http-backend`, authorized per request by a
//!   [`GitAuthorizer`]; push scopes are enforced by the `pre-receive` hook in [`hook`].
//! - [`tree_dir`]: one directory of a branch as files (a Dockerfile's build context).
//! - [`command`]: running the `git` program isolated and bounded.

pub mod access;
pub mod cgi;
pub mod command;
pub mod hook;
pub mod http;
mod import;
pub mod names;
pub mod ref_stamp;
pub mod refs;
pub mod repos;
pub mod tree_dir;

pub use access::{GitAccess, GitAuthorizer, GitDenied, PushScope};
pub use http::{GitHttpLimits, GitHttpState, clone_url, router};
pub use refs::{Expected, RefError, resolve_branch, update_ref};
pub use repos::{Author, Branch, ImportedRepo, RepoError, Repos};
