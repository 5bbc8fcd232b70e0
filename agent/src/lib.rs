//! `kortix-agent`: the in-sandbox daemon that enrolls with the control plane, clones the
//! session branch, runs and supervises OpenCode, and streams what happens as records.

pub mod assignment;
pub mod backoff;
pub mod clone;
pub mod command_log;
pub mod commits;
pub mod config;
pub mod connection;
pub mod connectors;
pub mod credentials;
pub mod daemon;
pub mod diag;
pub mod enroll;
pub mod hold;
pub mod opencode;
pub mod private_socket;
pub mod process;
pub mod records;
pub mod redact;
pub mod renewal;
pub mod secrets;
pub mod stop;
pub mod tls;
pub mod wip;

pub use config::Config;
pub use daemon::{AgentError, ExitReason, run};
