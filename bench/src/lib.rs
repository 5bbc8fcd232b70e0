//! Simulated agents and viewers that speak the real `kortix.v1` protocol (enroll over
//! server-authenticated TLS, then mTLS `Connect`), for integration tests and the load generator
//! (`kortix-loadgen`, see `src/bin/`).

pub mod api;
pub mod cli;
pub mod clock;
pub mod errors;
pub mod heartbeater;
pub mod monitor;
pub mod procfs;
pub mod provision;
pub mod report;
pub mod scenarios;
pub mod sim_agent;
pub mod stats;
pub mod store_baseline;
pub mod streamer;
pub mod target;
pub mod viewer;

pub use sim_agent::{AgentConnection, EnrolledAgent, SimError, enroll};
