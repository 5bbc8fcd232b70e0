//! git's "similarity index" of a rename or copy, computed the way git's diffcore does it, so
//! that the headers we print read like `git diff` output.
//!
//! Files are cut into spans that end at a newline or after 64 bytes; each span is hashed, and
//! the similarity is the share of bytes whose span also occurs in the other file, relative to
//! the larger file.

use std::collections::HashMap;

/// git's `MAX_SCORE`: scores are fractions of this before becoming percentages.
const MAX_SCORE: u64 = 60_000;
/// git's `HASHBASE`, a prime bounding the span hash values.
const HASHBASE: u32 = 107_927;

/// The similarity of `dst` to `src` in percent, as git prints it after `similarity index`.
pub(crate) fn similarity_percent(
    src: &[u8],
    src_binary: bool,
    dst: &[u8],
    dst_binary: bool,
) -> u32 {
    if src == dst {
        return 100;
    }
    let max_size = src.len().max(dst.len()) as u64;
    if dst.is_empty() || max_size == 0 {
        return 0;
    }
    let src_spans = spans(src, !src_binary);
    let dst_spans = spans(dst, !dst_binary);
    let copied: u64 = src_spans
        .iter()
        .map(|(hash, &src_count)| {
            dst_spans
                .get(hash)
                .map_or(0, |&dst_count| src_count.min(dst_count))
        })
        .sum();
    let score = copied * MAX_SCORE / max_size;
    (score * 100 / MAX_SCORE) as u32
}

/// Bytes per span hash, following git's `hash_chars()` bit for bit.
fn spans(data: &[u8], is_text: bool) -> HashMap<u32, u64> {
    let mut out: HashMap<u32, u64> = HashMap::new();
    let (mut accum1, mut accum2, mut n) = (0u32, 0u32, 0u64);
    let mut rest = data;
    while let Some((&c, tail)) = rest.split_first() {
        rest = tail;
        // CR of a CRLF pair is ignored in text so that line-ending changes look similar.
        if is_text && c == b'\r' && rest.first() == Some(&b'\n') {
            continue;
        }
        let old1 = accum1;
        accum1 = (accum1 << 7) ^ (accum2 >> 25);
        accum2 = (accum2 << 7) ^ (old1 >> 25);
        accum1 = accum1.wrapping_add(u32::from(c));
        n += 1;
        if n < 64 && c != b'\n' {
            continue;
        }
        *out.entry(span_hash(accum1, accum2)).or_default() += n;
        (accum1, accum2, n) = (0, 0, 0);
    }
    if n > 0 {
        *out.entry(span_hash(accum1, accum2)).or_default() += n;
    }
    out
}

fn span_hash(accum1: u32, accum2: u32) -> u32 {
    accum1.wrapping_add(accum2.wrapping_mul(0x61)) % HASHBASE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_and_disjoint() {
        assert_eq!(similarity_percent(b"a\nb\n", false, b"a\nb\n", false), 100);
        assert_eq!(similarity_percent(b"a\n", false, b"zzz\n", false), 0);
        assert_eq!(similarity_percent(b"a\n", false, b"", false), 0);
    }

    #[test]
    fn shared_lines_count_by_bytes_of_the_larger_file() {
        // 9 of 10 equally long lines shared: 36 of 40 bytes.
        let src: String = (0..10).map(|i| format!("l{i:02}\n")).collect();
        let dst = src.replace("l05\n", "X05\n");
        assert_eq!(
            similarity_percent(src.as_bytes(), false, dst.as_bytes(), false),
            90
        );
    }
}
