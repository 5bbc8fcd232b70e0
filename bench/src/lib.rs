//! Simulated session agents and viewers that speak the real `kortix.v1` protocol (enroll over
//! server-authenticated TLS, then mTLS `Connect`), for integration tests and the load generator.

pub mod sim_agent;

pub use sim_agent::{AgentConnection, EnrolledAgent, SimError, enroll};
