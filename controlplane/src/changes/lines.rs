//! Line diffs of two texts, computed the way `git diff` does by default.

use gix::diff::blob::{Algorithm, Diff, InternedInput};

/// A computed line diff together with the interned lines it refers to.
pub(crate) struct LineDiff<'a> {
    pub input: InternedInput<&'a [u8]>,
    pub diff: Diff,
}

/// The diff algorithm configured for the repository (`diff.algorithm`), Myers like git when
/// unset or unreadable.
pub(crate) fn algorithm(repo: &gix::Repository) -> Algorithm {
    repo.diff_algorithm().unwrap_or(Algorithm::Myers)
}

/// Diffs `old` against `new` line by line (lines keep their `\n`, so a missing final newline
/// is a change, as in git), then slides hunks with git's indent heuristic.
pub(crate) fn diff<'a>(algorithm: Algorithm, old: &'a [u8], new: &'a [u8]) -> LineDiff<'a> {
    let input = InternedInput::new(old, new);
    let mut diff = Diff::compute(algorithm, &input);
    diff.postprocess_lines(&input);
    LineDiff { input, diff }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_changed_lines() {
        let d = diff(Algorithm::Myers, b"a\nb\nc\n", b"a\nB\nc\nd\n");
        assert_eq!(d.diff.count_removals(), 1);
        assert_eq!(d.diff.count_additions(), 2);
        let d = diff(Algorithm::Myers, b"a\nb", b"a\nb\n");
        assert_eq!((d.diff.count_removals(), d.diff.count_additions()), (1, 1));
    }
}
