//! Change requests over bare repositories: three-dot diffs (stats and unified text), merge
//! previews, and merges that move the base branch only by compare-and-swap.
//!
//! Pure repository logic: nothing here knows about the store or the gRPC service that
//! persists change requests on top of it.
//!
//! - [`ancestry`]: merge bases and ahead/behind counts.
//! - [`stats`]: which files changed and by how many lines, renames detected.
//! - [`unified`]: `git diff`-identical unified text, capped in size.
//! - [`preview`]: whether a merge would fast-forward, succeed or conflict.
//! - [`merge`]: the merge itself, with a retrying variant for races on the base branch.

pub mod ancestry;
mod blob;
mod capped;
mod diff;
mod error;
mod handle;
mod hunks;
mod lines;
pub mod merge;
pub mod preview;
mod similarity;
pub mod stats;
mod three_way;
pub mod unified;

#[cfg(test)]
mod testutil;

pub use ancestry::{AheadBehind, ahead_behind, branch_commit, merge_base, three_dot_base};
pub use diff::FileStatus;
pub use error::ChangesError;
pub use merge::{
    MERGE_RETRIES, MergeError, MergeKind, MergeOutcome, MergeSignature, merge, merge_with_retry,
};
pub use preview::{MergePreview, preview_merge};
pub use stats::{DiffTotals, FileChange, diff_files, three_dot_files};
pub use unified::{
    MAX_UNIFIED_DIFF_BYTES, three_dot_unified_diff, unified_diff, unified_diff_capped,
};
