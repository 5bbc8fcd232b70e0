//! Shared harness for the cross-crate tests: the pinned OpenCode release, a scripted
//! OpenAI-compatible model server for it, and the OpenCode configuration that ties them.

pub mod opencode;
pub mod scripted_model;

pub use opencode::{OPENCODE_VERSION, OpencodeHome, opencode_bin, opencode_config};
pub use scripted_model::{ReceivedRequest, ScriptedModel, ToolCall, Turn};

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Install(String),
}

pub(crate) fn io_context(
    context: impl Into<String>,
) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}
