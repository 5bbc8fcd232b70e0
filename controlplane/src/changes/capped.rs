//! An output buffer with a hard size cap that ends at a line boundary when it overflows.

/// Collects diff text up to `max` bytes. Once a write would pass the cap, the text is cut back
/// to the last complete line and everything after is refused, so the producer can stop early.
pub(crate) struct CappedBuf {
    buf: Vec<u8>,
    max: usize,
    full: bool,
}

impl CappedBuf {
    pub fn new(max: usize) -> Self {
        CappedBuf {
            buf: Vec::new(),
            max,
            full: false,
        }
    }

    /// Whether the cap was hit; later writes are ignored.
    pub fn is_full(&self) -> bool {
        self.full
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.full {
            return;
        }
        if self.buf.len() + bytes.len() <= self.max {
            self.buf.extend_from_slice(bytes);
            return;
        }
        let room = self.max - self.buf.len();
        self.buf.extend_from_slice(&bytes[..room]);
        let keep = self
            .buf
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        self.buf.truncate(keep);
        self.full = true;
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_back_to_a_line_boundary() {
        let mut b = CappedBuf::new(10);
        b.push(b"abc\n");
        b.push(b"defg\n");
        assert!(!b.is_full());
        b.push(b"hijk\n");
        assert!(b.is_full());
        b.push(b"more\n");
        assert_eq!(b.into_inner(), b"abc\ndefg\n");
    }
}
