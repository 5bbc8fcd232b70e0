//! State records in words: what each phase means, and which ones need attention.

use crate::item::{Item, Tone};

/// Where the session is, as far as reading its states is concerned.
#[derive(Debug, Default, Clone)]
pub struct StateReader {
    /// The session is on its way down: OpenCode going away is expected, not a crash.
    stopping: bool,
    last: Option<(String, String, String)>,
}

impl StateReader {
    /// The item for a state record; `None` for a repeat of the previous state and, unless
    /// `verbose`, for phases another item already shows.
    pub fn read(&mut self, status: &str, phase: &str, reason: &str, verbose: bool) -> Option<Item> {
        let key = (status.to_owned(), phase.to_owned(), reason.to_owned());
        if self.last.as_ref() == Some(&key) && !verbose {
            return None;
        }
        self.last = Some(key);
        if matches!(status, "stopping" | "stopped" | "hibernated") {
            self.stopping = true;
        } else if status == "running" && phase == "opencode-starting" {
            self.stopping = false;
        }
        // The prompt itself appears as the user's message; its id says nothing more.
        if phase == "prompt-delivered" && !verbose {
            return None;
        }
        let (text, tone) = self.describe(status, phase, reason);
        Some(Item::State {
            status: status.to_owned(),
            phase: (!phase.is_empty()).then(|| phase.to_owned()),
            text,
            tone,
        })
    }

    /// Roughly the bytes this reader holds.
    pub fn footprint(&self) -> usize {
        self.last
            .as_ref()
            .map_or(0, |(s, p, r)| s.len() + p.len() + r.len())
    }

    /// Whether the session is stopping: exits reported now are the stop at work.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    fn describe(&self, status: &str, phase: &str, reason: &str) -> (String, Tone) {
        let said = |what: &str| {
            if reason.is_empty() {
                what.to_owned()
            } else {
                format!("{what}: {reason}")
            }
        };
        match (status, phase) {
            ("failed", _) => (said("failed"), Tone::Error),
            (_, "opencode-stopped") if self.stopping => ("OpenCode stopped".to_owned(), Tone::Info),
            (_, "opencode-stopped") => (said("OpenCode exited"), Tone::Warn),
            (_, "opencode-restarting") => (said("restarting OpenCode"), Tone::Warn),
            (_, "disconnected") => (said("lost the control plane"), Tone::Warn),
            (_, "reconnected") => ("reconnected to the control plane".to_owned(), Tone::Info),
            (_, "agent-starting") => ("agent starting".to_owned(), Tone::Info),
            (_, "enrolled") => ("agent enrolled".to_owned(), Tone::Info),
            // The reason of these is the branch (the session's id) and the time taken.
            (_, "cloning") => ("cloning the repository".to_owned(), Tone::Info),
            (_, "cloned") if !reason.is_empty() => (reason.to_owned(), Tone::Info),
            (_, "cloned") => ("repository cloned".to_owned(), Tone::Info),
            (_, "opencode-starting") => ("starting OpenCode".to_owned(), Tone::Info),
            // The reason of this phase is OpenCode's session id: of no use to a reader.
            (_, "opencode-ready") => ("OpenCode ready".to_owned(), Tone::Good),
            // What a winding-down agent kept for a resume, and what a resumed one put back.
            (_, "saved") => (said("saved for a resume"), Tone::Info),
            (_, "restored") => (said("resuming"), Tone::Info),
            (_, "conversation-restored") => (said("conversation restored"), Tone::Info),
            ("running", "running" | "") => ("running".to_owned(), Tone::Good),
            (_, "prompt-delivered") => (said("prompt delivered"), Tone::Info),
            ("stopping", _) => (said("stopping"), Tone::Info),
            ("stopped", _) => (said("stopped"), Tone::Info),
            ("hibernated", _) => (said("hibernated"), Tone::Info),
            (status, "") => (said(status), Tone::Info),
            (status, phase) => (said(&format!("{status} ({phase})")), Tone::Info),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(item: Option<Item>) -> (String, Tone) {
        match item {
            Some(Item::State { text, tone, .. }) => (text, tone),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn saves_and_restores_read_as_such() {
        let mut r = StateReader::default();
        let (t, _) = text(r.read(
            "stopping",
            "saved",
            "2 files saved to refs/kortix/wip/s",
            false,
        ));
        assert_eq!(t, "saved for a resume: 2 files saved to refs/kortix/wip/s");
        let (t, _) = text(r.read(
            "resuming",
            "restored",
            "restored 2 uncommitted files",
            false,
        ));
        assert_eq!(t, "resuming: restored 2 uncommitted files");
    }

    #[test]
    fn a_normal_stop_reads_as_a_stop() {
        let mut r = StateReader::default();
        let (t, tone) = text(r.read("stopping", "stopping", "stopped by user", false));
        assert_eq!(
            (t.as_str(), tone),
            ("stopping: stopped by user", Tone::Info)
        );
        let (t, tone) = text(r.read("stopping", "opencode-stopped", "killed by SIGTERM", false));
        assert_eq!((t.as_str(), tone), ("OpenCode stopped", Tone::Info));
    }

    #[test]
    fn opencode_dying_while_running_needs_attention() {
        let mut r = StateReader::default();
        let (t, tone) = text(r.read("running", "opencode-stopped", "exit status 1", false));
        assert_eq!(
            (t.as_str(), tone),
            ("OpenCode exited: exit status 1", Tone::Warn)
        );
        let (_, tone) = text(r.read("failed", "cloning", "auth failed", false));
        assert_eq!(tone, Tone::Error);
    }

    #[test]
    fn repeats_and_prompt_ids_are_hidden_unless_verbose() {
        let mut r = StateReader::default();
        assert!(r.read("running", "running", "", false).is_some());
        assert!(r.read("running", "running", "", false).is_none());
        assert!(r.read("running", "prompt-delivered", "p1", false).is_none());
        assert!(r.read("running", "prompt-delivered", "p2", true).is_some());
    }
}
