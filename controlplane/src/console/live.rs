//! A session's conversation as Server-Sent Events. Each event carries the HTML of the entries
//! one record completed, with `id:` the record's seq. The timeline's state (open tool calls,
//! half-written lines) depends on everything before, so a stream starts from the newest
//! [checkpoint](super::checkpoints) at or before the viewer's position (`Last-Event-ID` on a
//! reconnect, `?after=` — the seq the page was rendered up to — on the first connect), or from
//! the first record when this process has none, and sends only what records after that
//! position complete. Interpretation is deterministic, so resuming has no gap and no
//! duplicate. Records come from the attach pipeline (the in-memory tail, else the store), so
//! viewers cost the agent nothing; a viewer that stops reading is cut off by attach and
//! reconnects from where it was.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::FutureExt as _;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use super::Console;
use super::checkpoints::Interpretation;
use super::error::ConsoleResult;
use super::sessions::session_of;
use super::timeline::render;
use crate::permissions::Action;

/// Events buffered per viewer between the interpreter and the connection.
const EVENT_QUEUE: usize = 64;
/// Comment lines keep idle connections open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How soon a browser reconnects after the connection drops.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
pub struct After {
    #[serde(default)]
    after: Option<u64>,
}

/// Where the viewer is: the last event it received, else where its page was rendered up to.
fn resume_from(headers: &HeaderMap, query: Option<u64>) -> u64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(query)
        .unwrap_or(0)
}

pub async fn events(
    State(console): State<Console>,
    Path((project, id)): Path<(String, String)>,
    Query(query): Query<After>,
    headers: HeaderMap,
) -> ConsoleResult<Response> {
    let me = console.signed_in(&headers).await?;
    let (_, named) = session_of(&console, &me, &project, &id, Action::ViewSessions).await?;
    let after = resume_from(&headers, query.after);
    let reading = Interpretation::resume(&console.inner.checkpoints, &named.session.id, after);
    let records = console
        .inner
        .sessions
        .attach_for(
            &me.caller(Action::ViewSessions)?,
            &named.session.id,
            reading.next_seq(),
            true,
        )
        .await?;
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(interpret(records, reading, after, tx));
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

async fn interpret(
    mut records: crate::sessions::attach::AttachStream,
    mut reading: Interpretation,
    after: u64,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    // Whether the stream has read every record stored when it started: the first time no
    // record is ready at once. A checkpoint there serves the next reconnect of this viewer.
    let mut caught_up = false;
    if tx
        .send(Ok(Event::default().retry(RETRY).comment("connected")))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let next = match records.next().now_or_never() {
            Some(next) => next,
            None => {
                if !caught_up {
                    caught_up = true;
                    reading.save();
                }
                records.next().await
            }
        };
        let Some(record) = next else { break };
        let record = match record {
            Ok(record) => record,
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                let _ = tx
                    .send(Ok(Event::default().event("signedout").data("signed out")))
                    .await;
                return;
            }
            // Cut off (too slow) or the control plane is going away: the browser reconnects
            // with the last id it has.
            Err(status) => {
                tracing::debug!(error = %status, "console live stream ended");
                return;
            }
        };
        let entries = reading.push(&record);
        if record.seq <= after || entries.is_empty() {
            continue;
        }
        let html: String = entries.iter().map(render).collect();
        let event = Event::default()
            .event("entries")
            .id(record.seq.to_string())
            .data(html);
        if tx.send(Ok(event)).await.is_err() {
            return;
        }
    }
    // The session has ended and every record was sent: what the timeline held back (a last
    // line without its newline) completes now, as on the ended session's page. A page
    // rendered after the end already shows it and does not connect.
    reading.save();
    let last = reading.at();
    let rest = reading.finish();
    if !rest.is_empty() {
        let html: String = rest.iter().map(render).collect();
        let _ = tx
            .send(Ok(Event::default()
                .event("entries")
                .id(last.to_string())
                .data(html)))
            .await;
    }
    let _ = tx
        .send(Ok(Event::default().event("end").data("ended")))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn last_event_id_wins_over_the_page_position() {
        let mut h = HeaderMap::new();
        assert_eq!(resume_from(&h, None), 0);
        assert_eq!(resume_from(&h, Some(7)), 7);
        h.insert("last-event-id", HeaderValue::from_static("12"));
        assert_eq!(resume_from(&h, Some(7)), 12);
        h.insert("last-event-id", HeaderValue::from_static("junk"));
        assert_eq!(resume_from(&h, Some(7)), 7);
    }
}
