//! The timeline of a real session: `fixtures/scripted-session.jsonl` is what
//! `kortix --json sessions attach` printed for a session of the real agent and pinned OpenCode
//! driven by the scripted model (regenerate it with `KORTIX_UPDATE_FIXTURES=1 cargo nextest
//! run -p kortix-tests --test attach_view`).

use kortix_timeline::{Entry, Item, Options, Record, Timeline, Tone, ToolInput};

fn entries(options: Options) -> (usize, Vec<Entry>) {
    let text = include_str!("fixtures/scripted-session.jsonl");
    let mut timeline = Timeline::new(options);
    let mut out = Vec::new();
    let mut records = 0;
    for line in text.lines() {
        let record = Record::from_json_line(line).expect("fixture line");
        records += 1;
        out.extend(timeline.push(&record));
    }
    out.extend(timeline.finish());
    (records, out)
}

fn items(options: Options) -> Vec<Item> {
    entries(options).1.into_iter().map(|e| e.item).collect()
}

#[test]
fn a_real_session_reads_as_prompt_tools_reply_and_stop() {
    let items = items(Options::default());
    let find = |pred: &dyn Fn(&Item) -> bool| {
        items
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("missing item in {items:#?}"))
    };
    let prompt = find(
        &|i| matches!(i, Item::Prompt { text } if text == "Create hello.txt, commit it and push it."),
    );
    let edit = find(
        &|i| matches!(i, Item::FileEdit { path, added: Some(1), removed: Some(0) } if path == "hello.txt"),
    );
    let bash = find(&|i| {
        matches!(i, Item::ToolCall { tool, input: ToolInput::Command(c), .. }
            if tool == "bash" && c.starts_with("git add hello.txt &&"))
    });
    let output = find(&|i| {
        matches!(i, Item::ToolResult { ok: true, exit: Some(0), output, .. }
            if output.excerpt == ["pushed", "Add hello.txt"])
    });
    let commit = find(&|i| {
        matches!(i, Item::Commit { subject, pushed: true, insertions: 1, files_changed: 1, .. }
            if subject == "Add hello.txt")
    });
    let first = find(&|i| matches!(i, Item::Text { line } if line == "Created hello.txt."));
    let second = find(
        &|i| matches!(i, Item::Text { line } if line == "Committed and pushed it to the session branch."),
    );
    let stopped = find(&|i| matches!(i, Item::State { status, .. } if status == "stopped"));
    assert!(prompt < edit && edit < bash && bash < output && output < first);
    assert!(commit < first && first + 1 == second && second < stopped);
    let texts = items
        .iter()
        .filter(|i| matches!(i, Item::Text { .. }))
        .count();
    assert_eq!(texts, 2, "two lines of reply, however many deltas");
    for item in &items {
        match item {
            Item::Raw { .. } => panic!("noise shown: {item:?}"),
            Item::State { tone, text, .. } => {
                assert_ne!(*tone, Tone::Error, "{text}");
                assert!(
                    !text.contains("SIGTERM"),
                    "a normal stop reads as one: {text}"
                );
            }
            Item::Log { line, .. } => {
                assert!(!line.contains("OPENCODE_SERVER_PASSWORD"), "{line}");
                assert!(!line.contains("killed by SIGTERM"), "{line}");
            }
            _ => {}
        }
    }
}

#[test]
fn verbose_shows_every_record() {
    let (records, entries) = entries(Options {
        verbose: true,
        ..Options::default()
    });
    let mut seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    seqs.dedup();
    assert_eq!(seqs, (1..=records as u64).collect::<Vec<_>>());
    assert!(entries.iter().any(
        |e| matches!(&e.item, Item::Raw { summary, .. } if summary.starts_with("plugin.added"))
    ));
}
