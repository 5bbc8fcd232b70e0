//! What a session's page shows of its records: the newest conversation items and agent log
//! lines as HTML, the timeline that produced them and the seq it is at. A page keeps its
//! view as a [checkpoint](super::checkpoints) where it was rendered up to, so the next render
//! of the session (a reload, another person) reads on from there instead of from the first
//! record; the result is the same, as the timeline and the kept items are exact copies.

use std::collections::VecDeque;
use std::fmt::Write as _;

use kortix_proto::v1::Record;
use kortix_timeline::{Entry, Timeline};

use super::checkpoints::Footprint;
use super::timeline::{new_timeline, push, render};

/// Conversation items a page renders; older ones are summarised in one line.
const PAGE_ITEMS: usize = 3000;
/// Agent log lines a page renders.
const PAGE_LOGS: usize = 1000;

/// The newest `max` of what was pushed, and how many older ones were left out.
#[derive(Clone)]
struct Kept {
    items: VecDeque<String>,
    dropped: usize,
    max: usize,
}

impl Kept {
    fn new(max: usize) -> Self {
        Kept {
            items: VecDeque::new(),
            dropped: 0,
            max,
        }
    }

    fn push(&mut self, html: String) {
        if self.items.len() == self.max {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(html);
    }

    fn html(&self, what: &str) -> String {
        let mut out = String::new();
        if self.dropped > 0 {
            let _ = write!(
                out,
                "<p class=\"muted\">{} earlier {what} not shown.</p>",
                self.dropped
            );
        }
        for i in &self.items {
            out.push_str(i);
        }
        out
    }

    fn footprint(&self) -> usize {
        /// A string's own size and the queue's slot.
        const PER_ITEM: usize = 32;
        self.items.iter().map(|i| i.capacity() + PER_ITEM).sum()
    }
}

/// A session's page as rendered up to [`PageView::at`].
#[derive(Clone)]
pub struct PageView {
    timeline: Timeline,
    at: u64,
    conversation: Kept,
    logs: Kept,
}

impl Footprint for PageView {
    fn footprint(&self) -> usize {
        self.timeline.footprint() + self.conversation.footprint() + self.logs.footprint()
    }
}

impl PageView {
    /// Nothing read yet.
    pub fn new() -> Self {
        PageView {
            timeline: new_timeline(),
            at: 0,
            conversation: Kept::new(PAGE_ITEMS),
            logs: Kept::new(PAGE_LOGS),
        }
    }

    /// The seq of the last record read (0: none).
    pub fn at(&self) -> u64 {
        self.at
    }

    /// The first seq not read yet.
    pub fn next_seq(&self) -> u64 {
        self.at + 1
    }

    /// The timeline as of [`Self::at`] (what a live stream from here starts with).
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Reads `record`; one at or before the position was read already and changes nothing.
    pub fn push(&mut self, record: &Record) {
        if record.seq <= self.at {
            return;
        }
        self.at = record.seq;
        let entries = push(&mut self.timeline, record);
        self.place(&entries);
    }

    /// The session ended: what the timeline held back (a last line without its newline)
    /// shows too. The view is not saved after this.
    pub fn finish(&mut self) {
        let rest = self.timeline.finish();
        self.place(&rest);
    }

    fn place(&mut self, entries: &[Entry]) {
        for entry in entries {
            let html = render(entry);
            if html.contains("data-pane=\"logs\"") {
                self.logs.push(html);
            } else {
                self.conversation.push(html);
            }
        }
    }

    pub fn conversation_html(&self) -> String {
        self.conversation.html("items")
    }

    pub fn logs_html(&self) -> String {
        self.logs.html("log lines")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::checkpoints::{Checkpoints, Limits};
    use kortix_proto::v1::record::Body;
    use kortix_proto::v1::{LogLine, LogStream, OpencodeEvent};

    fn records() -> Vec<Record> {
        let delta = |s: &str| {
            Body::Event(OpencodeEvent {
                r#type: "message.part.delta".into(),
                json: serde_json::json!({"type": "message.part.delta", "properties":
                    {"field": "text", "partID": "p", "messageID": "m", "delta": s}})
                .to_string(),
            })
        };
        let mut bodies = Vec::new();
        for i in 0..20 {
            bodies.push(delta(&format!("line {i} be")));
            bodies.push(Body::Log(LogLine {
                stream: LogStream::Stderr as i32,
                line: format!("log {i}"),
            }));
            bodies.push(delta("gins\n"));
        }
        bodies.push(delta("unfinished"));
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Record {
                seq: i as u64 + 1,
                ts_unix_ms: 0,
                body: Some(body),
            })
            .collect()
    }

    fn rendered(mut view: PageView, records: &[Record]) -> (String, String) {
        let from = view.next_seq();
        for r in records.iter().filter(|r| r.seq >= from) {
            view.push(r);
        }
        view.finish();
        (view.conversation_html(), view.logs_html())
    }

    #[test]
    fn a_page_read_on_from_a_saved_view_equals_one_read_from_the_first_record() {
        let records = records();
        let expected = rendered(PageView::new(), &records);
        assert!(expected.0.contains("line 19 begins") && expected.0.contains("unfinished"));
        assert!(expected.1.contains("log 19"));
        for cut in 1..=records.len() {
            let pages: Checkpoints<PageView> = Checkpoints::new(Limits::default());
            let mut first = PageView::new();
            for r in &records[..cut] {
                first.push(r);
            }
            pages.put("s", first.at(), first);
            let (at, saved) = pages.at_or_before("s", u64::MAX).expect("saved");
            assert_eq!(at, cut as u64);
            assert_eq!(
                rendered((*saved).clone(), &records),
                expected,
                "saved after {cut}"
            );
        }
    }

    #[test]
    fn old_items_are_summarised() {
        let mut kept = Kept::new(2);
        for i in 0..5 {
            kept.push(format!("<i>{i}</i>"));
        }
        assert_eq!(
            kept.html("items"),
            "<p class=\"muted\">3 earlier items not shown.</p><i>3</i><i>4</i>"
        );
        assert!(kept.footprint() > 0);
    }
}
