//! Events API envelopes read into what the bot does with them.
//!
//! A mention in a channel (`app_mention`) or a direct message (`message` in an `im`) starts
//! or steers a thread's session; a reply in a thread goes to that thread's session if the bot
//! owns it (the caller checks). The bot's own messages, other bots', edits, deletions and
//! every other subtype are ignored, and a channel message that mentions the bot is left to
//! its `app_mention` twin, so one message never counts twice.

use serde_json::Value;

/// Longest prompt taken from a message.
pub const MAX_PROMPT_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// Slack checking the request URL: answer with the challenge.
    UrlVerification { challenge: String },
    /// An event to act on, once (`event_id`).
    Event { event_id: String, message: Message },
    /// Nothing to do, and why (for the log).
    Ignored(&'static str),
}

/// A person's message the bot acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub channel: String,
    pub user: String,
    /// The message's own timestamp (reactions go on it).
    pub ts: String,
    /// The thread: `thread_ts`, or the message's `ts` when it starts one.
    pub thread_ts: String,
    /// Whether it was sent inside an existing thread.
    pub in_thread: bool,
    /// The text without mentions of the bot.
    pub text: String,
    /// A mention or a direct message (may start a session); otherwise a thread reply that
    /// only counts in a thread the bot owns.
    pub addressed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("event_callback without {0}")]
    Missing(&'static str),
}

pub fn parse(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    match v["type"].as_str() {
        Some("url_verification") => Ok(Envelope::UrlVerification {
            challenge: v["challenge"]
                .as_str()
                .ok_or(EnvelopeError::Missing("challenge"))?
                .to_string(),
        }),
        Some("event_callback") => {
            let event_id = v["event_id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or(EnvelopeError::Missing("event_id"))?
                .to_string();
            let event = &v["event"];
            if !event.is_object() {
                return Err(EnvelopeError::Missing("event"));
            }
            Ok(match message(event, &bot_user_ids(&v)) {
                Ok(message) => Envelope::Event { event_id, message },
                Err(why) => Envelope::Ignored(why),
            })
        }
        _ => Ok(Envelope::Ignored("not an event callback")),
    }
}

/// The bot's user ids, from the envelope's `authorizations` (and the older `authed_users`).
fn bot_user_ids(v: &Value) -> Vec<String> {
    let from_auth = v["authorizations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["is_bot"].as_bool() != Some(false))
        .filter_map(|a| a["user_id"].as_str());
    let legacy = v["authed_users"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    from_auth.chain(legacy).map(str::to_string).collect()
}

fn message(event: &Value, bots: &[String]) -> Result<Message, &'static str> {
    let kind = event["type"].as_str().unwrap_or_default();
    if event.get("bot_id").is_some_and(|b| !b.is_null()) {
        return Err("a bot's message");
    }
    if event.get("subtype").is_some_and(|s| !s.is_null()) {
        return Err("an edit, deletion or other message subtype");
    }
    let user = event["user"].as_str().unwrap_or_default();
    if user.is_empty() {
        return Err("no user");
    }
    if bots.iter().any(|b| b == user) {
        return Err("the bot's own message");
    }
    let channel = event["channel"].as_str().unwrap_or_default();
    let ts = event["ts"].as_str().unwrap_or_default();
    if channel.is_empty() || ts.is_empty() {
        return Err("no channel or ts");
    }
    let raw_text = event["text"].as_str().unwrap_or_default();
    let thread_ts = event["thread_ts"].as_str().filter(|t| !t.is_empty());
    let addressed = match kind {
        "app_mention" => true,
        "message" if event["channel_type"].as_str() == Some("im") => true,
        "message" => {
            if mentions_any(raw_text, bots) {
                return Err("a channel message mentioning the bot (its app_mention counts)");
            }
            if thread_ts.is_none() {
                return Err("a channel message outside a thread");
            }
            false
        }
        _ => return Err("an event type the bot does not handle"),
    };
    Ok(Message {
        channel: channel.to_string(),
        user: user.to_string(),
        ts: ts.to_string(),
        thread_ts: thread_ts.unwrap_or(ts).to_string(),
        in_thread: thread_ts.is_some_and(|t| t != ts),
        text: prompt_text(raw_text, bots, kind == "app_mention"),
        addressed,
    })
}

fn mentions_any(text: &str, bots: &[String]) -> bool {
    bots.iter().any(|b| text.contains(&format!("<@{b}")))
}

/// The text with the bot's mentions removed (for an `app_mention`, the leading mention of
/// whichever user the app is, since the envelope may not name it), trimmed and bounded.
pub fn prompt_text(text: &str, bots: &[String], drop_leading_mention: bool) -> String {
    let mut out = text.trim_start().to_string();
    if drop_leading_mention
        && out.starts_with("<@")
        && let Some(end) = out.find('>')
    {
        out.replace_range(..=end, "");
    }
    for b in bots {
        out = remove_mentions(&out, b);
    }
    let out = out.trim();
    let mut cut = out.len().min(MAX_PROMPT_BYTES);
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    out[..cut].to_string()
}

/// Removes `<@ID>` and `<@ID|name>`.
fn remove_mentions(text: &str, id: &str) -> String {
    let open = format!("<@{id}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        match after.find('>') {
            Some(end) if end == 0 || after.starts_with('|') => {
                out.push_str(&rest[..at]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..at + open.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(event: Value) -> Vec<u8> {
        json!({
            "type": "event_callback",
            "event_id": "Ev1",
            "authorizations": [{"user_id": "UBOT", "is_bot": true}],
            "event": event,
        })
        .to_string()
        .into_bytes()
    }

    fn parsed(event: Value) -> Envelope {
        parse(&envelope(event)).unwrap()
    }

    #[test]
    fn url_verification_and_errors() {
        assert_eq!(
            parse(br#"{"type":"url_verification","challenge":"abc","token":"t"}"#).unwrap(),
            Envelope::UrlVerification {
                challenge: "abc".into()
            }
        );
        assert!(matches!(parse(b"nope"), Err(EnvelopeError::NotJson(_))));
        assert_eq!(
            parse(br#"{"type":"event_callback","event":{}}"#),
            Err(EnvelopeError::Missing("event_id"))
        );
        assert_eq!(
            parse(br#"{"type":"app_rate_limited"}"#).unwrap(),
            Envelope::Ignored("not an event callback")
        );
    }

    #[test]
    fn a_mention_starts_a_thread_without_the_mention() {
        let Envelope::Event { event_id, message } = parsed(json!({
            "type": "app_mention", "user": "U1", "channel": "C1", "ts": "10.1",
            "text": "<@UBOT> add a README please",
        })) else {
            panic!("not an event");
        };
        assert_eq!(event_id, "Ev1");
        assert_eq!(
            message,
            Message {
                channel: "C1".into(),
                user: "U1".into(),
                ts: "10.1".into(),
                thread_ts: "10.1".into(),
                in_thread: false,
                text: "add a README please".into(),
                addressed: true,
            }
        );
    }

    #[test]
    fn dms_threads_and_what_is_ignored() {
        let Envelope::Event { message, .. } = parsed(json!({
            "type": "message", "channel_type": "im", "user": "U1", "channel": "D1",
            "ts": "5.0", "text": "hello",
        })) else {
            panic!("a DM is an event");
        };
        assert!(message.addressed);
        let Envelope::Event { message, .. } = parsed(json!({
            "type": "message", "channel_type": "channel", "user": "U1", "channel": "C1",
            "ts": "11.0", "thread_ts": "10.1", "text": "also the LICENSE",
        })) else {
            panic!("a thread reply is an event");
        };
        assert!(!message.addressed && message.in_thread);
        assert_eq!(message.thread_ts, "10.1");
        for (event, why) in [
            (
                json!({"type": "message", "user": "U1", "channel": "C1", "ts": "1", "text": "x"}),
                "a channel message outside a thread",
            ),
            (
                json!({"type": "message", "user": "U1", "channel": "C1", "ts": "2",
                       "thread_ts": "1", "text": "<@UBOT> x"}),
                "a channel message mentioning the bot (its app_mention counts)",
            ),
            (
                json!({"type": "message", "subtype": "message_changed", "channel": "C1", "ts": "1"}),
                "an edit, deletion or other message subtype",
            ),
            (
                json!({"type": "message", "bot_id": "B1", "user": "UBOT", "channel": "C1", "ts": "1"}),
                "a bot's message",
            ),
            (
                json!({"type": "message", "channel_type": "im", "user": "UBOT", "channel": "D1", "ts": "1"}),
                "the bot's own message",
            ),
            (
                json!({"type": "reaction_added", "user": "U1", "channel": "C1", "ts": "1"}),
                "an event type the bot does not handle",
            ),
        ] {
            assert_eq!(parsed(event), Envelope::Ignored(why));
        }
    }

    #[test]
    fn mentions_are_removed_and_prompts_bounded() {
        let bots = vec!["UBOT".to_string()];
        assert_eq!(
            prompt_text("<@UBOT|kortix> fix <@UBOT> it <@UOTHER>", &bots, true),
            "fix  it <@UOTHER>"
        );
        assert_eq!(prompt_text("<@UBOTX> hi", &bots, false), "<@UBOTX> hi");
        let long = "é".repeat(MAX_PROMPT_BYTES);
        assert!(prompt_text(&long, &bots, false).len() <= MAX_PROMPT_BYTES);
    }
}
