//! `kortix-agent`: the in-sandbox daemon that enrolls with the control plane, clones the
//! session branch, runs and supervises OpenCode, and streams what happens as records.

pub mod backoff;
pub mod config;
pub mod opencode;
pub mod process;
pub mod records;
pub mod redact;

pub use config::Config;
