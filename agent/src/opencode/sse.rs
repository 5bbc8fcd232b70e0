//! Server-sent events: splits a byte stream into events' `data` payloads.

/// One event bigger than this is skipped (and reported) rather than buffered without bound.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// Skipping the rest of an oversized event.
    skipping: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SseItem {
    Data(String),
    /// An event exceeded [`MAX_EVENT_BYTES`] and was dropped.
    Oversized,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; completed events are pushed to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseItem>) {
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.push_line_bytes(&bytes[..i]);
                    bytes = &bytes[i + 1..];
                    self.end_line(out);
                }
                None => {
                    self.push_line_bytes(bytes);
                    bytes = &[];
                }
            }
        }
    }

    fn push_line_bytes(&mut self, b: &[u8]) {
        if self.skipping {
            return;
        }
        if self.line.len() + self.data.len() + b.len() > MAX_EVENT_BYTES {
            self.skipping = true;
            self.line.clear();
            self.data.clear();
            return;
        }
        self.line.extend_from_slice(b);
    }

    fn end_line(&mut self, out: &mut Vec<SseItem>) {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            // Blank line: dispatch.
            if self.skipping {
                self.skipping = false;
                self.has_data = false;
                out.push(SseItem::Oversized);
            } else if self.has_data {
                let data = std::mem::take(&mut self.data);
                self.has_data = false;
                out.push(SseItem::Data(String::from_utf8_lossy(&data).into_owned()));
            }
        } else if !self.skipping
            && let Some(rest) = line.strip_prefix(b"data:")
        {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(rest);
            self.has_data = true;
        }
        // `event:`, `id:`, `retry:` and comments carry nothing OpenCode needs: its JSON has the type.
        self.line = line;
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks_and_line_endings() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"data: {\"a\":", &mut out);
        assert!(out.is_empty());
        p.feed(b"1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\n", &mut out);
        assert_eq!(
            out,
            vec![
                SseItem::Data("{\"a\":1}".into()),
                SseItem::Data("x\ny".into())
            ]
        );
    }

    #[test]
    fn oversized_event_is_reported_and_stream_recovers() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let big = vec![b'a'; MAX_EVENT_BYTES + 10];
        p.feed(b"data: ", &mut out);
        p.feed(&big, &mut out);
        p.feed(b"\n\ndata: ok\n\n", &mut out);
        assert_eq!(out, vec![SseItem::Oversized, SseItem::Data("ok".into())]);
    }
}
