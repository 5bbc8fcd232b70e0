//! OpenCode's event stream (`GET /event`, as the agent records it) read as items.
//!
//! What OpenCode sends for one exchange: `message.updated` names each message's role;
//! `message.part.updated` carries a part whole (a user's text, a tool call at each state
//! change, step markers) and `message.part.delta` appends to a streaming text part. Text is
//! released line by line as lines complete, and the rest when the part ends, so a reply reads
//! as lines rather than as one fragment per event. Everything else OpenCode publishes (its
//! plugins, catalogs, file watcher, session bookkeeping, heartbeats) is noise to a reader.

use serde_json::Value;

use crate::bounded::BoundedMap;
use crate::item::{Item, Output, ToolInput};
use crate::record::text;

/// Messages and parts remembered at once; older ones are forgotten.
const REMEMBERED: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

#[derive(Debug, Default, Clone)]
struct TextPart {
    buf: String,
    /// Bytes of `buf` already released as lines.
    released: usize,
    reasoning: bool,
    /// Released in full: later repeats of the part add nothing.
    ended: bool,
}

#[derive(Debug, Default, Clone)]
struct ToolPart {
    announced: bool,
}

#[derive(Debug, Clone)]
pub struct Reader {
    roles: BoundedMap<Role>,
    texts: BoundedMap<TextPart>,
    tools: BoundedMap<ToolPart>,
    prompts: BoundedMap<()>,
    /// The workspace, to show paths relative to it.
    root: Option<String>,
    idle: bool,
    excerpt_lines: usize,
}

impl Reader {
    pub fn new(excerpt_lines: usize) -> Self {
        Reader {
            roles: BoundedMap::new(REMEMBERED),
            texts: BoundedMap::new(REMEMBERED),
            tools: BoundedMap::new(REMEMBERED),
            prompts: BoundedMap::new(REMEMBERED),
            root: None,
            idle: false,
            excerpt_lines,
        }
    }

    /// `event` is the event's JSON as OpenCode sent it: `{"type", "properties"}`.
    pub fn read(&mut self, event_type: &str, event: &Value) -> Vec<Item> {
        let props = &event["properties"];
        let mut items = Vec::new();
        match event_type {
            "message.updated" => self.message(&props["info"], &mut items),
            "message.part.updated" => self.part(&props["part"], &mut items),
            "message.part.delta" => self.delta(props, &mut items),
            "session.created" | "session.updated" if self.root.is_none() => {
                self.root = nonempty(text(&props["info"]["directory"]));
            }
            "session.status" if text(&props["status"]["type"]) == "busy" => self.idle = false,
            "session.idle" => {
                self.flush_all(&mut items);
                if !self.idle {
                    self.idle = true;
                    items.push(Item::Idle);
                }
            }
            "session.error" => items.push(Item::Error {
                message: error_message(&props["error"]),
            }),
            // OpenCode's plugins, catalogs, file watcher, heartbeats: nothing for a reader.
            _ => {}
        }
        items
    }

    /// Roughly the bytes this reader holds (what a saved copy of it costs).
    pub fn footprint(&self) -> usize {
        self.roles.footprint(|_| 0)
            + self.texts.footprint(|t| t.buf.capacity())
            + self.tools.footprint(|_| 0)
            + self.prompts.footprint(|_| 0)
            + self.root.as_ref().map_or(0, String::len)
    }

    /// Releases every text still held back (the stream ended).
    pub fn flush_all(&mut self, items: &mut Vec<Item>) {
        let ids: Vec<String> = self.texts.keys().cloned().collect();
        for id in ids {
            if let Some(part) = self.texts.get_mut(&id) {
                release(part, true, items);
            }
        }
    }

    fn message(&mut self, info: &Value, items: &mut Vec<Item>) {
        let Some(id) = info["id"].as_str() else {
            return;
        };
        let role = match text(&info["role"]) {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => return,
        };
        self.roles.insert(id, role);
        if role == Role::Assistant {
            if self.root.is_none() {
                self.root = nonempty(text(&info["path"]["root"]));
            }
            if let Some(error) = info.get("error").filter(|e| !e.is_null()) {
                items.push(Item::Error {
                    message: error_message(error),
                });
            }
        }
    }

    fn part(&mut self, part: &Value, items: &mut Vec<Item>) {
        let id = text(&part["id"]);
        match text(&part["type"]) {
            "text" | "reasoning" if part["synthetic"].as_bool() != Some(true) => {
                let role = self.roles.get(text(&part["messageID"])).copied();
                let reasoning = text(&part["type"]) == "reasoning";
                if role == Some(Role::User) {
                    let prompt = text(&part["text"]).trim();
                    if !prompt.is_empty() && self.prompts.get(id).is_none() {
                        self.prompts.insert(id, ());
                        self.idle = false;
                        items.push(Item::Prompt {
                            text: prompt.to_owned(),
                        });
                    }
                    return;
                }
                let ended = !part["time"]["end"].is_null();
                let entry = self.texts.entry(id, || TextPart {
                    reasoning,
                    ..TextPart::default()
                });
                // The part whole: take it when it extends what was streamed.
                if let Some(whole) = part["text"].as_str()
                    && whole.len() >= entry.buf.len()
                    && whole.is_char_boundary(entry.released)
                {
                    entry.buf = whole.to_owned();
                }
                release(entry, ended, items);
            }
            "tool" => self.tool(id, part, items),
            // Step markers, patches, snapshots: bookkeeping.
            _ => {}
        }
    }

    fn delta(&mut self, props: &Value, items: &mut Vec<Item>) {
        if text(&props["field"]) != "text" {
            return;
        }
        let id = text(&props["partID"]);
        if self.roles.get(text(&props["messageID"])) == Some(&Role::User) {
            return;
        }
        let entry = self.texts.entry(id, TextPart::default);
        entry.buf.push_str(text(&props["delta"]));
        release(entry, false, items);
    }

    fn tool(&mut self, id: &str, part: &Value, items: &mut Vec<Item>) {
        let state = &part["state"];
        let status = text(&state["status"]);
        let tool = text(&part["tool"]).to_owned();
        let call_id = text(&part["callID"]).to_owned();
        let input = &state["input"];
        let edits_files = matches!(tool.as_str(), "write" | "edit" | "patch" | "multiedit");
        let entry = self.tools.entry(id, ToolPart::default);
        let has_input = input.as_object().is_some_and(|o| !o.is_empty());
        if !entry.announced && has_input && !edits_files {
            entry.announced = true;
            items.push(Item::ToolCall {
                call_id: call_id.clone(),
                tool: tool.clone(),
                input: self.input(&tool, input),
            });
        }
        match status {
            "completed" => {
                self.tools.remove(id);
                if edits_files {
                    items.push(self.file_edit(&tool, state));
                    return;
                }
                let full = text(&state["output"]).to_owned();
                let lines = if quiet_output(&tool) {
                    0
                } else {
                    self.excerpt_lines
                };
                let exit = state["metadata"]["exit"].as_i64();
                items.push(Item::ToolResult {
                    call_id,
                    tool,
                    ok: exit.is_none_or(|code| code == 0),
                    exit,
                    output: Output::new(full, lines),
                });
            }
            "error" => {
                self.tools.remove(id);
                if edits_files {
                    items.push(Item::ToolCall {
                        call_id: call_id.clone(),
                        tool: tool.clone(),
                        input: self.input(&tool, input),
                    });
                }
                items.push(Item::ToolResult {
                    call_id,
                    tool,
                    ok: false,
                    exit: None,
                    output: Output::new(text(&state["error"]).to_owned(), self.excerpt_lines),
                });
            }
            _ => {}
        }
    }

    fn input(&self, tool: &str, input: &Value) -> ToolInput {
        if let Some(command) = input["command"].as_str().filter(|_| tool == "bash") {
            return ToolInput::Command(command.to_owned());
        }
        for key in ["filePath", "path"] {
            if let Some(path) = input[key].as_str() {
                return ToolInput::Path(self.relative(path));
            }
        }
        for key in ["pattern", "url", "description", "query", "command"] {
            if let Some(value) = input[key].as_str() {
                return ToolInput::Text(value.to_owned());
            }
        }
        ToolInput::Text(input.to_string())
    }

    fn file_edit(&self, tool: &str, state: &Value) -> Item {
        let input = &state["input"];
        let meta = &state["metadata"];
        let path = input["filePath"]
            .as_str()
            .or_else(|| meta["filepath"].as_str())
            .map(|p| self.relative(p))
            .or_else(|| nonempty(text(&state["title"])))
            .unwrap_or_else(|| tool.to_owned());
        let counts = if let (Some(a), Some(d)) = (
            meta["filediff"]["additions"].as_u64(),
            meta["filediff"]["deletions"].as_u64(),
        ) {
            Some((a, d))
        } else if let Some(diff) = meta["diff"].as_str() {
            Some(count_diff(diff))
        } else if tool == "write" && meta["exists"].as_bool() == Some(false) {
            Some((text(&input["content"]).lines().count() as u64, 0))
        } else {
            None
        };
        Item::FileEdit {
            path,
            added: counts.map(|c| c.0),
            removed: counts.map(|c| c.1),
        }
    }

    fn relative(&self, path: &str) -> String {
        self.root
            .as_deref()
            .and_then(|root| path.strip_prefix(root))
            .map(|rest| rest.trim_start_matches('/'))
            .filter(|rest| !rest.is_empty())
            .unwrap_or(path)
            .to_owned()
    }
}

/// Tools whose output is the content they read or listed: only the size of it is news.
fn quiet_output(tool: &str) -> bool {
    matches!(
        tool,
        "read" | "list" | "glob" | "grep" | "todoread" | "todowrite"
    )
}

/// Pushes the complete lines of `part` not released yet, and with `end` the rest.
fn release(part: &mut TextPart, end: bool, items: &mut Vec<Item>) {
    if part.ended {
        return;
    }
    part.ended = end;
    let Some(pending) = part.buf.get(part.released..) else {
        // Released past a shorter whole: nothing new is known to be in it.
        part.released = part.buf.len();
        return;
    };
    let upto = if end {
        pending.len()
    } else {
        pending.rfind('\n').map_or(0, |i| i + 1)
    };
    for line in pending[..upto].lines() {
        let line = line.trim_end().to_owned();
        items.push(if part.reasoning {
            Item::Reasoning { line }
        } else {
            Item::Text { line }
        });
    }
    part.released += upto;
}

/// Lines added and removed by a unified diff.
fn count_diff(diff: &str) -> (u64, u64) {
    diff.lines().fold((0, 0), |(a, d), line| {
        if line.starts_with("+++") || line.starts_with("---") {
            (a, d)
        } else if line.starts_with('+') {
            (a + 1, d)
        } else if line.starts_with('-') {
            (a, d + 1)
        } else {
            (a, d)
        }
    })
}

/// OpenCode's errors: `{"name", "data": {"message"}}`.
fn error_message(error: &Value) -> String {
    let message = text(&error["data"]["message"]);
    let name = text(&error["name"]);
    match (name.is_empty(), message.is_empty()) {
        (_, false) => message.to_owned(),
        (false, true) => name.to_owned(),
        (true, true) => error.to_string(),
    }
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(reader: &mut Reader, ty: &str, props: Value) -> Vec<Item> {
        reader.read(ty, &json!({ "type": ty, "properties": props }))
    }

    fn lines(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Text { line } => line.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn deltas_are_released_as_whole_lines() {
        let mut r = Reader::new(5);
        ev(
            &mut r,
            "message.updated",
            json!({"info": {"id": "m", "role": "assistant"}}),
        );
        let part = |text: &str, end: bool| {
            let mut p = json!({"id": "p", "messageID": "m", "type": "text", "text": text});
            if end {
                p["time"] = json!({"end": 1});
            }
            json!({ "part": p })
        };
        assert!(ev(&mut r, "message.part.updated", part("", false)).is_empty());
        let d = |s: &str| json!({"field": "text", "partID": "p", "messageID": "m", "delta": s});
        assert!(ev(&mut r, "message.part.delta", d("Hel")).is_empty());
        assert_eq!(
            lines(&ev(&mut r, "message.part.delta", d("lo\nwor"))),
            ["Hello"]
        );
        assert!(ev(&mut r, "message.part.delta", d("ld")).is_empty());
        assert_eq!(
            lines(&ev(
                &mut r,
                "message.part.updated",
                part("Hello\nworld", true)
            )),
            ["world"]
        );
        // A late repeat of the whole part releases nothing again.
        assert!(ev(&mut r, "message.part.updated", part("Hello\nworld", true)).is_empty());
    }

    #[test]
    fn text_held_back_is_released_when_the_session_idles() {
        let mut r = Reader::new(5);
        let d = json!({"field": "text", "partID": "p", "messageID": "m", "delta": "no newline"});
        assert!(ev(&mut r, "message.part.delta", d).is_empty());
        let items = ev(&mut r, "session.idle", json!({}));
        assert_eq!(lines(&items), ["no newline", "Idle"]);
        assert!(
            ev(&mut r, "session.idle", json!({})).is_empty(),
            "idle once"
        );
    }

    #[test]
    fn user_text_is_the_prompt_once() {
        let mut r = Reader::new(5);
        ev(
            &mut r,
            "message.updated",
            json!({"info": {"id": "u", "role": "user"}}),
        );
        let part =
            json!({"part": {"id": "p", "messageID": "u", "type": "text", "text": "Do it\n"}});
        let items = ev(&mut r, "message.part.updated", part.clone());
        assert_eq!(
            items,
            [Item::Prompt {
                text: "Do it".into()
            }]
        );
        assert!(ev(&mut r, "message.part.updated", part).is_empty());
    }

    #[test]
    fn a_bash_call_shows_its_command_then_its_output() {
        let mut r = Reader::new(2);
        let part = |status: &str, extra: Value| {
            let mut state = json!({"status": status, "input": {"command": "make test"}});
            if let (Some(s), Some(e)) = (state.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            json!({"part": {"id": "t", "callID": "c", "type": "tool", "tool": "bash", "state": state}})
        };
        let pending = json!({"part": {"id": "t", "callID": "c", "type": "tool", "tool": "bash",
            "state": {"status": "pending", "input": {}}}});
        assert!(ev(&mut r, "message.part.updated", pending).is_empty());
        let started = ev(&mut r, "message.part.updated", part("running", json!({})));
        assert_eq!(
            started,
            [Item::ToolCall {
                call_id: "c".into(),
                tool: "bash".into(),
                input: ToolInput::Command("make test".into())
            }]
        );
        assert!(ev(&mut r, "message.part.updated", part("running", json!({}))).is_empty());
        let done = ev(
            &mut r,
            "message.part.updated",
            part(
                "completed",
                json!({"output": "a\nb\nc\n", "metadata": {"exit": 2}}),
            ),
        );
        match &done[..] {
            [
                Item::ToolResult {
                    ok, exit, output, ..
                },
            ] => {
                assert!(!ok);
                assert_eq!(*exit, Some(2));
                assert_eq!(output.excerpt, ["b", "c"]);
                assert_eq!(output.omitted, 1);
                assert_eq!(output.full, "a\nb\nc\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_edits_count_lines_relative_to_the_workspace() {
        let mut r = Reader::new(5);
        ev(
            &mut r,
            "message.updated",
            json!({"info": {"id": "m", "role": "assistant", "path": {"root": "/w"}}}),
        );
        let edit = json!({"part": {"id": "t", "type": "tool", "tool": "edit", "state": {
            "status": "completed", "input": {"filePath": "/w/src/a.rs"},
            "metadata": {"diff": "--- a\n+++ b\n@@ -1 +1,2 @@\n-old\n+new\n+more\n"}}}});
        assert_eq!(
            ev(&mut r, "message.part.updated", edit),
            [Item::FileEdit {
                path: "src/a.rs".into(),
                added: Some(2),
                removed: Some(1)
            }]
        );
        let write = json!({"part": {"id": "t2", "type": "tool", "tool": "write", "state": {
            "status": "completed", "input": {"filePath": "/w/new.txt", "content": "a\nb\n"},
            "metadata": {"exists": false}}}});
        assert_eq!(
            ev(&mut r, "message.part.updated", write),
            [Item::FileEdit {
                path: "new.txt".into(),
                added: Some(2),
                removed: Some(0)
            }]
        );
        let overwrite = json!({"part": {"id": "t3", "type": "tool", "tool": "write", "state": {
            "status": "completed", "input": {"filePath": "/elsewhere/x", "content": "a"},
            "metadata": {"exists": true}}}});
        assert_eq!(
            ev(&mut r, "message.part.updated", overwrite),
            [Item::FileEdit {
                path: "/elsewhere/x".into(),
                added: None,
                removed: None
            }]
        );
    }

    #[test]
    fn errors_say_what_went_wrong() {
        let mut r = Reader::new(5);
        let items = ev(
            &mut r,
            "session.error",
            json!({"error": {"name": "ProviderAuthError", "data": {"message": "bad key"}}}),
        );
        assert_eq!(
            items,
            [Item::Error {
                message: "bad key".into()
            }]
        );
        let failed = json!({"part": {"id": "t", "type": "tool", "tool": "edit", "state": {
            "status": "error", "input": {"filePath": "x"}, "error": "no match"}}});
        let items = ev(&mut r, "message.part.updated", failed);
        assert!(
            matches!(&items[1], Item::ToolResult { ok: false, output, .. } if output.full == "no match")
        );
    }

    #[test]
    fn noise_makes_no_items() {
        let mut r = Reader::new(5);
        for ty in [
            "plugin.added",
            "server.heartbeat",
            "session.updated",
            "file.watcher.updated",
        ] {
            assert!(ev(&mut r, ty, json!({"id": "x"})).is_empty(), "{ty}");
        }
    }
}
