//! `git diff` style unified output (what `kortix cr diff` prints), byte for byte what git
//! prints for the same trees with default settings, up to a size cap.

use gix::ObjectId;

use super::{
    ancestry::three_dot_base,
    blob,
    capped::CappedBuf,
    diff::{Entry, FileStatus, Side, changed_entries},
    error::ChangesError,
    handle, hunks, lines,
    similarity::similarity_percent,
};

/// Default cap on the size of a rendered diff; larger diffs end with a marker line.
pub const MAX_UNIFIED_DIFF_BYTES: usize = 8 * 1024 * 1024;

/// Room kept below the cap for the truncation marker, so output never exceeds the cap.
const MARKER_RESERVE: usize = 256;

/// The unified diff from `from` to `to` (commits or trees), capped at
/// [`MAX_UNIFIED_DIFF_BYTES`].
pub fn unified_diff(
    repo: &gix::Repository,
    from: ObjectId,
    to: ObjectId,
) -> Result<String, ChangesError> {
    unified_diff_capped(repo, from, to, MAX_UNIFIED_DIFF_BYTES)
}

/// The change request diff `base...head` (what `git diff base...head` prints), capped at
/// [`MAX_UNIFIED_DIFF_BYTES`].
pub fn three_dot_unified_diff(
    repo: &gix::Repository,
    base: ObjectId,
    head: ObjectId,
) -> Result<String, ChangesError> {
    let repo = &handle::cached(repo);
    render(
        repo,
        three_dot_base(repo, base, head)?,
        head,
        MAX_UNIFIED_DIFF_BYTES,
    )
}

/// Like [`unified_diff`] with a caller-chosen cap. Output that would pass `max_bytes` is cut
/// at a line boundary and ends with a line starting with `[diff truncated`.
pub fn unified_diff_capped(
    repo: &gix::Repository,
    from: ObjectId,
    to: ObjectId,
    max_bytes: usize,
) -> Result<String, ChangesError> {
    render(&handle::cached(repo), from, to, max_bytes)
}

/// [`unified_diff_capped`] on a handle the caller has already set up.
pub(crate) fn render(
    repo: &gix::Repository,
    from: ObjectId,
    to: ObjectId,
    max_bytes: usize,
) -> Result<String, ChangesError> {
    let entries = changed_entries(repo, from, to)?;
    let algorithm = lines::algorithm(repo);
    // Abbreviating ids looks up prefixes; a handle that does not rescan the pack directory on
    // every lookup keeps that cheap. The objects it abbreviates exist already.
    let mut abbrev_repo = repo.clone();
    abbrev_repo.objects.refresh_never();
    let ctx = Ctx {
        repo,
        abbrev_repo: &abbrev_repo,
        algorithm,
    };
    let mut out = CappedBuf::new(max_bytes.saturating_sub(MARKER_RESERVE));
    let mut complete = 0;
    for entry in &entries {
        match entry.status {
            // git shows a change of kind (file to symlink, say) as a deletion and a creation.
            FileStatus::TypeChanged => {
                let deleted = Entry {
                    status: FileStatus::Deleted,
                    old: entry.old.clone(),
                    new: None,
                };
                let added = Entry {
                    status: FileStatus::Added,
                    old: None,
                    new: entry.new.clone(),
                };
                render_file(&ctx, &deleted, &mut out)?;
                render_file(&ctx, &added, &mut out)?;
            }
            _ => render_file(&ctx, entry, &mut out)?,
        }
        if out.is_full() {
            break;
        }
        complete += 1;
    }
    let mut bytes = out.into_inner();
    if complete < entries.len() {
        bytes.extend_from_slice(
            format!(
                "[diff truncated at {max_bytes} bytes: {complete} of {} files shown in full]\n",
                entries.len()
            )
            .as_bytes(),
        );
    }
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

struct Ctx<'a> {
    repo: &'a gix::Repository,
    abbrev_repo: &'a gix::Repository,
    algorithm: gix::diff::blob::Algorithm,
}

fn render_file(ctx: &Ctx<'_>, entry: &Entry, out: &mut CappedBuf) -> Result<(), ChangesError> {
    let (repo, algorithm) = (ctx.repo, ctx.algorithm);
    let (old, new) = (entry.old.as_ref(), entry.new.as_ref());
    let Some(any) = new.or(old) else {
        return Ok(());
    };
    let a_path = old.unwrap_or(any).path.as_slice();
    let b_path = new.unwrap_or(any).path.as_slice();
    let mut header = b"diff --git ".to_vec();
    header.extend(quote(b"a/", a_path));
    header.push(b' ');
    header.extend(quote(b"b/", b_path));
    header.push(b'\n');
    match (old, new) {
        (None, Some(n)) => header.extend(format!("new file mode {:06o}\n", n.mode.value()).bytes()),
        (Some(o), None) => {
            header.extend(format!("deleted file mode {:06o}\n", o.mode.value()).bytes())
        }
        (Some(o), Some(n)) if o.mode != n.mode => header.extend(
            format!(
                "old mode {:06o}\nnew mode {:06o}\n",
                o.mode.value(),
                n.mode.value()
            )
            .bytes(),
        ),
        _ => {}
    }

    let same_content = matches!((old, new), (Some(o), Some(n)) if o.id == n.id);
    let (old_content, new_content) = if same_content {
        (None, None)
    } else {
        (Some(blob::load(repo, old)?), Some(blob::load(repo, new)?))
    };

    if let (FileStatus::Renamed | FileStatus::Copied, Some(o), Some(n)) = (entry.status, old, new) {
        let percent = match (&old_content, &new_content) {
            (Some(oc), Some(nc)) => similarity_percent(&oc.data, oc.binary, &nc.data, nc.binary),
            _ => 100,
        };
        let verb = if entry.status == FileStatus::Copied {
            "copy"
        } else {
            "rename"
        };
        header.extend(format!("similarity index {percent}%\n").bytes());
        for (dir, path) in [("from", &o.path), ("to", &n.path)] {
            header.extend(format!("{verb} {dir} ").bytes());
            header.extend(quote(b"", path));
            header.push(b'\n');
        }
    }
    let (Some(old_content), Some(new_content)) = (old_content, new_content) else {
        // Same blob on both sides: only the mode or the name changed.
        out.push(&header);
        return Ok(());
    };

    let (old_abbrev, new_abbrev) = abbreviations(ctx.abbrev_repo, old, new);
    header.extend(format!("index {old_abbrev}..{new_abbrev}").bytes());
    if let (Some(o), Some(n)) = (old, new)
        && o.mode == n.mode
    {
        header.extend(format!(" {:06o}", n.mode.value()).bytes());
    }
    header.push(b'\n');

    let label = |prefix: &[u8], side: Option<&Side>| -> Vec<u8> {
        side.map_or_else(|| b"/dev/null".to_vec(), |s| quote(prefix, &s.path))
    };
    let (a_label, b_label) = (label(b"a/", old), label(b"b/", new));
    if old_content.binary || new_content.binary {
        out.push(&header);
        out.push(b"Binary files ");
        out.push(&a_label);
        out.push(b" and ");
        out.push(&b_label);
        out.push(b" differ\n");
        return Ok(());
    }
    let d = lines::diff(algorithm, &old_content.data, &new_content.data);
    out.push(&header);
    if d.diff.hunks().next().is_none() {
        return Ok(());
    }
    for (marker, label) in [(b"--- ", &a_label), (b"+++ ", &b_label)] {
        out.push(marker);
        out.push(label);
        // git appends a tab to names with spaces so that patch tools find the end of the name.
        if label.contains(&b' ') {
            out.push(b"\t");
        }
        out.push(b"\n");
    }
    hunks::render(out, &d);
    Ok(())
}

/// Abbreviated ids for the `index` line: as short as git's auto length allows while staying
/// unique; an absent side is all zeros of the other side's length.
fn abbreviations(
    repo: &gix::Repository,
    old: Option<&Side>,
    new: Option<&Side>,
) -> (String, String) {
    use gix::prelude::ObjectIdExt;
    let short = |side: Option<&Side>| side.map(|s| s.id.attach(repo).shorten_or_id().to_string());
    let (old_short, new_short) = (short(old), short(new));
    let len = old_short
        .as_ref()
        .or(new_short.as_ref())
        .map_or(7, String::len);
    let zeros = || "0".repeat(len);
    (
        old_short.unwrap_or_else(zeros),
        new_short.unwrap_or_else(zeros),
    )
}

/// git's `quote_c_style` with `core.quotePath` on: names with control characters, `"`, `\`
/// or non-ASCII bytes are double-quoted with C escapes; others are printed as they are.
fn quote(prefix: &[u8], path: &[u8]) -> Vec<u8> {
    let needs_quoting = |b: u8| b < 0x20 || b == 0x7f || b == b'"' || b == b'\\' || b >= 0x80;
    let mut out = Vec::with_capacity(prefix.len() + path.len() + 2);
    if !prefix.iter().chain(path.iter()).any(|&b| needs_quoting(b)) {
        out.extend_from_slice(prefix);
        out.extend_from_slice(path);
        return out;
    }
    out.push(b'"');
    for &b in prefix.iter().chain(path.iter()) {
        match b {
            0x07 => out.extend_from_slice(b"\\a"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0b => out.extend_from_slice(b"\\v"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b if needs_quoting(b) => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            b => out.push(b),
        }
    }
    out.push(b'"');
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Fixture, Op};
    use super::*;

    fn git_three_dot(fx: &Fixture) -> String {
        fx.git(&["diff", "--no-color", "--no-ext-diff", "main...topic"])
    }

    fn ours_three_dot(fx: &Fixture) -> String {
        three_dot_unified_diff(&fx.open(), fx.sha("main"), fx.sha("topic")).unwrap()
    }

    #[test]
    fn simple_change_is_byte_identical_to_git() {
        let fx = Fixture::new();
        let text: String = (1..=12).map(|i| format!("line {i}\n")).collect();
        fx.commit(
            "main",
            &[("README.md", "# Project\n"), ("notes.txt", &text)],
            "root",
        );
        fx.branch("topic", "main");
        fx.commit(
            "topic",
            &[("notes.txt", &text.replace("line 6\n", "line six\n"))],
            "edit",
        );
        fx.commit(
            "main",
            &[("README.md", "# Project, moved on\n")],
            "main moves",
        );
        let ours = ours_three_dot(&fx);
        assert!(ours.contains("@@ -3,7 +3,7 @@ line 2\n"), "{ours}");
        assert_eq!(ours, git_three_dot(&fx));
    }

    #[test]
    fn every_kind_of_change_is_byte_identical_to_git() {
        let fx = Fixture::new();
        let program: String = std::iter::once("fn main() {\n".to_owned())
            .chain((0..30).map(|i| format!("    step({i});\n")))
            .chain(std::iter::once("}\n".to_owned()))
            .collect();
        let moved: String = (0..20).map(|i| format!("paragraph {i}\n")).collect();
        fx.commit_ops(
            "main",
            &[
                Op::Write {
                    path: "src/main.rs",
                    data: program.as_bytes(),
                    mode: "100644",
                },
                Op::Write {
                    path: "doc/old name.txt",
                    data: moved.as_bytes(),
                    mode: "100644",
                },
                Op::Write {
                    path: "delete-me.txt",
                    data: b"bye\n",
                    mode: "100644",
                },
                Op::Write {
                    path: "run.sh",
                    data: b"echo hi\n",
                    mode: "100644",
                },
                Op::Write {
                    path: "data.bin",
                    data: b"\0\x01\x02",
                    mode: "100644",
                },
                Op::Write {
                    path: "caf\u{e9}.txt",
                    data: b"cr\xc3\xa8me\n",
                    mode: "100644",
                },
                Op::Write {
                    path: "tail.txt",
                    data: b"one\ntwo",
                    mode: "100644",
                },
                Op::Write {
                    path: "becomes-link",
                    data: b"plain\n",
                    mode: "100644",
                },
                Op::Write {
                    path: "same.txt",
                    data: b"unchanged\n",
                    mode: "100644",
                },
                Op::Write {
                    path: "exact-old.txt",
                    data: b"exactly the same\ncontent here\n",
                    mode: "100644",
                },
            ],
            "root",
        );
        fx.branch("topic", "main");
        let edited_program = program
            .replace("    step(2);\n", "    step(2);\n    extra();\n")
            .replace("    step(25);\n", "    step(twenty_five);\n");
        let edited_moved = moved.replace("paragraph 3\n", "paragraph three\n");
        fx.commit_ops(
            "topic",
            &[
                Op::Write {
                    path: "src/main.rs",
                    data: edited_program.as_bytes(),
                    mode: "100644",
                },
                Op::Delete("doc/old name.txt"),
                Op::Write {
                    path: "doc/new name.txt",
                    data: edited_moved.as_bytes(),
                    mode: "100644",
                },
                Op::Delete("delete-me.txt"),
                Op::Write {
                    path: "run.sh",
                    data: b"echo hi\n",
                    mode: "100755",
                },
                Op::Write {
                    path: "data.bin",
                    data: b"\0\x01\x03",
                    mode: "100644",
                },
                Op::Write {
                    path: "caf\u{e9}.txt",
                    data: b"cr\xc3\xa8me br\xc3\xbbl\xc3\xa9e\n",
                    mode: "100644",
                },
                Op::Write {
                    path: "tail.txt",
                    data: b"one\ntwo\nthree",
                    mode: "100644",
                },
                Op::Write {
                    path: "becomes-link",
                    data: b"target",
                    mode: "120000",
                },
                Op::Write {
                    path: "new/empty.txt",
                    data: b"",
                    mode: "100644",
                },
                Op::Write {
                    path: "new/file.txt",
                    data: b"fresh\n",
                    mode: "100644",
                },
                Op::Delete("exact-old.txt"),
                Op::Write {
                    path: "exact-new.txt",
                    data: b"exactly the same\ncontent here\n",
                    mode: "100644",
                },
            ],
            "everything",
        );
        let ours = ours_three_dot(&fx);
        let theirs = git_three_dot(&fx);
        assert_eq!(ours, theirs, "ours:\n{ours}\ngit:\n{theirs}");
        for expected in [
            "rename from doc/old name.txt\n",
            "Binary files a/data.bin and b/data.bin differ\n",
            "\\ No newline at end of file\n",
            "new file mode 120000\n",
            "old mode 100644\nnew mode 100755\n",
        ] {
            assert!(ours.contains(expected), "missing {expected:?} in\n{ours}");
        }
    }

    #[test]
    fn large_output_is_truncated_with_a_marker() {
        let fx = Fixture::new();
        let files: Vec<(String, String)> = (0..40)
            .map(|i| (format!("f{i:02}.txt"), format!("{i}\n").repeat(100)))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        fx.commit("main", &[("root.txt", "r\n")], "root");
        fx.branch("topic", "main");
        fx.commit("topic", &refs, "lots");
        let repo = fx.open();
        let (main, topic) = (fx.sha("main"), fx.sha("topic"));
        let full = unified_diff(&repo, main, topic).unwrap();
        assert!(full.len() > 10_000);
        let cut = unified_diff_capped(&repo, main, topic, 4096).unwrap();
        assert!(cut.len() <= 4096, "{}", cut.len());
        let (body, marker) = cut.trim_end_matches('\n').rsplit_once('\n').unwrap();
        assert!(
            marker.starts_with("[diff truncated at 4096 bytes: "),
            "{marker}"
        );
        assert!(
            full.starts_with(body),
            "truncated output is a prefix of the full diff"
        );
    }

    #[test]
    fn quoting_follows_git() {
        let q = |p: &str| String::from_utf8(quote(b"a/", p.as_bytes())).unwrap();
        assert_eq!(q("plain name.txt"), "a/plain name.txt");
        assert_eq!(q("café"), r#""a/caf\303\251""#);
        assert_eq!(q("tab\there"), r#""a/tab\there""#);
        assert_eq!(q("q\"b\\"), r#""a/q\"b\\""#);
    }
}
