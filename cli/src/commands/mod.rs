//! One module per command group.

pub mod access;
pub mod accounts;
pub mod apps;
pub mod audit;
pub mod channels;
pub mod connectors;
pub mod cr;
pub mod git_credential;
pub mod login;
pub mod manifest;
pub mod members;
pub mod projects;
pub mod secrets;
pub mod server;
pub mod sessions;
pub mod snapshots;
pub mod tokens;
pub mod triggers;
pub mod up;
