//! Channels: driving a project from a chat workspace. [`slack`] is the one there is.

pub mod slack;
