//! The `@@` hunks of one file's text diff, laid out exactly as git's xdiff emits them: three
//! lines of context, hunks closer than twice that merged, and the default function-name
//! heuristic after the header.

use std::ops::Range;

use super::{capped::CappedBuf, lines::LineDiff};

/// Lines of context around each change (`git diff -U3`).
const CONTEXT: u32 = 3;
/// git keeps at most this many bytes of the line it shows after `@@ … @@`.
const FUNC_LINE_MAX: usize = 80;

struct Change {
    before: Range<u32>,
    after: Range<u32>,
}

/// Appends the hunks of `d` to `out`; stops early once `out` is full.
pub(crate) fn render(out: &mut CappedBuf, d: &LineDiff<'_>) {
    let before = |i: u32| -> &[u8] { d.input.interner[d.input.before[i as usize]] };
    let after = |i: u32| -> &[u8] { d.input.interner[d.input.after[i as usize]] };
    let (n1, n2) = (d.input.before.len() as u32, d.input.after.len() as u32);

    let changes: Vec<Change> = d
        .diff
        .hunks()
        .map(|h| Change {
            before: h.before,
            after: h.after,
        })
        .collect();
    let mut func_line: &[u8] = b"";
    let mut func_search_limit: i64 = -1;
    let mut rest = changes.as_slice();
    while !rest.is_empty() && !out.is_full() {
        let group_len = 1 + rest
            .windows(2)
            .take_while(|w| w[1].before.start - w[0].before.end <= 2 * CONTEXT)
            .count();
        let (group, tail) = rest.split_at(group_len);
        rest = tail;
        let (first, last) = (&group[0], &group[group_len - 1]);
        let s1 = first.before.start.saturating_sub(CONTEXT);
        let s2 = first.after.start.saturating_sub(CONTEXT);
        let e1 = (last.before.end + CONTEXT).min(n1);
        let e2 = (last.after.end + CONTEXT).min(n2);

        // The function line is searched upwards from just above the hunk, but not past the
        // previous hunk's start; without a new match the previous one stays in effect.
        let start = i64::from(s1) - 1;
        let mut l = start;
        while l > func_search_limit && l >= 0 {
            if let Some(found) = function_name(before(l as u32)) {
                func_line = found;
                break;
            }
            l -= 1;
        }
        func_search_limit = start;

        let mut header =
            format!("@@ -{} +{} @@", range(s1, e1 - s1), range(s2, e2 - s2)).into_bytes();
        if !func_line.is_empty() {
            header.push(b' ');
            header.extend_from_slice(func_line);
        }
        header.push(b'\n');
        out.push(&header);

        let mut i1 = s1;
        for change in group {
            for i in i1..change.before.start {
                line(out, b' ', before(i));
            }
            for i in change.before.clone() {
                line(out, b'-', before(i));
            }
            for i in change.after.clone() {
                line(out, b'+', after(i));
            }
            i1 = change.before.end;
        }
        for i in i1..e1 {
            line(out, b' ', before(i));
        }
    }
}

/// `start,len` with git's conventions: a 1-based start, the line before an empty range, and
/// `,1` left out.
fn range(start0: u32, len: u32) -> String {
    let start = if len == 0 { start0 } else { start0 + 1 };
    if len == 1 {
        start.to_string()
    } else {
        format!("{start},{len}")
    }
}

fn line(out: &mut CappedBuf, prefix: u8, text: &[u8]) {
    out.push(&[prefix]);
    out.push(text);
    if !text.ends_with(b"\n") {
        out.push(b"\n\\ No newline at end of file\n");
    }
}

/// git's default `funcname` rule: a line starting with a letter, `_` or `$`, cut to 80 bytes
/// and stripped of trailing whitespace.
fn function_name(line: &[u8]) -> Option<&[u8]> {
    let first = *line.first()?;
    if !(first.is_ascii_alphabetic() || first == b'_' || first == b'$') {
        return None;
    }
    let mut text = &line[..line.len().min(FUNC_LINE_MAX)];
    while let Some((&last, init)) = text.split_last() {
        if !matches!(last, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c') {
            break;
        }
        text = init;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::super::lines;
    use super::*;

    fn hunks(old: &str, new: &str) -> String {
        let d = lines::diff(
            gix::diff::blob::Algorithm::Myers,
            old.as_bytes(),
            new.as_bytes(),
        );
        let mut out = CappedBuf::new(1 << 20);
        render(&mut out, &d);
        String::from_utf8(out.into_inner()).unwrap()
    }

    #[test]
    fn single_line_change_with_context() {
        let old = "  1\n  2\n  3\n  4\n  5\n  6\n  7\n";
        let new = "  1\n  2\n  3\n  X\n  5\n  6\n  7\n";
        assert_eq!(
            hunks(old, new),
            "@@ -1,7 +1,7 @@\n   1\n   2\n   3\n-  4\n+  X\n   5\n   6\n   7\n"
        );
    }

    #[test]
    fn new_file_and_missing_newline() {
        assert_eq!(
            hunks("", "a\nb"),
            "@@ -0,0 +1,2 @@\n+a\n+b\n\\ No newline at end of file\n"
        );
        assert_eq!(hunks("a\n", ""), "@@ -1 +0,0 @@\n-a\n");
    }

    #[test]
    fn function_context_is_the_nearest_identifier_line_above() {
        let old = "fn main() {\n  a\n  b\n  c\n  d\n  e\n}\n";
        let new = "fn main() {\n  a\n  b\n  c\n  d\n  E\n}\n";
        assert!(hunks(old, new).starts_with("@@ -3,5 +3,5 @@ fn main() {\n"));
    }

    #[test]
    fn distant_changes_make_separate_hunks() {
        let old: String = (0..20).map(|i| format!(" {i}\n")).collect();
        let new = old.replace(" 2\n", " two\n").replace(" 15\n", " fifteen\n");
        let text = hunks(&old, &new);
        assert_eq!(text.matches("@@ -").count(), 2, "{text}");
        assert!(text.contains("@@ -13,7 +13,7 @@\n"), "{text}");
    }
}
