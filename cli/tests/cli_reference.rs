//! `docs/cli.md` against the real `--help`: every command and flag `kortix` has is documented
//! there, and every command and flag documented there exists.
//!
//! A command is documented by a heading "### `kortix <command> …`" (arguments in capitals
//! or brackets after the words); its flags are the `--flags` written in its section. Global
//! flags are documented once, in "## Global flags". Fenced examples are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn help(path: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kortix"))
        .args(path)
        .arg("--help")
        .env_remove("KORTIX_URL")
        .env_remove("KORTIX_TOKEN")
        .output()
        .expect("run kortix --help");
    assert!(out.status.success(), "kortix {path:?} --help failed");
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// The lines of one section (`Commands:`, `Options:`) of a help text.
fn section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .collect()
}

/// The long flags a help text lists under `Options:`.
fn flags(help: &str) -> BTreeSet<String> {
    section(help, "Options:")
        .iter()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line
                .strip_prefix('-')
                .filter(|rest| !rest.starts_with('-'))
                .and_then(|rest| rest.split_once(", "))
                .map_or(line, |(_, long)| long);
            line.strip_prefix("--")
                .map(|rest| format!("--{}", rest.split([' ', '=']).next().unwrap_or_default()))
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

/// Every leaf command (path → its flags), walking `Commands:` sections.
fn commands(path: Vec<String>, out: &mut BTreeMap<String, BTreeSet<String>>) {
    let text = help(&path);
    let subs: Vec<String> = section(&text, "Commands:")
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    if subs.is_empty() {
        out.insert(path.join(" "), flags(&text));
    }
    for sub in subs {
        let mut next = path.clone();
        next.push(sub);
        commands(next, out);
    }
}

fn doc_flags(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let after = &rest[at + 2..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        let before = rest[..at].chars().last();
        if !name.is_empty() && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-') {
            found.insert(format!("--{name}"));
        }
        rest = &after[name.len()..];
    }
    found
}

/// The documented commands (path → the flags in their section) and the global flags.
fn documented() -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md"))
        .expect("docs/cli.md");
    let mut commands = BTreeMap::new();
    let mut global = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut in_global = false;
    let mut in_example = false;
    for line in doc.lines() {
        // Examples may run other programs (git) with their own flags.
        if line.starts_with("```") {
            in_example = !in_example;
            continue;
        }
        if in_example {
            continue;
        }
        if let Some(heading) = line.strip_prefix("### `kortix ") {
            let words: Vec<&str> = heading
                .trim_end_matches('`')
                .split(' ')
                .take_while(|w| {
                    !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                })
                .collect();
            // `git-credential get|store|erase`: the operations are the argument.
            let path = words.join(" ");
            commands.insert(path.clone(), BTreeSet::new());
            current = Some(path);
            in_global = false;
            continue;
        }
        if line.starts_with("## ") {
            current = None;
            in_global = line == "## Global flags";
            continue;
        }
        let found = doc_flags(line);
        if in_global {
            global.extend(found);
        } else if let Some(path) = &current {
            commands.entry(path.clone()).or_default().extend(found);
        }
    }
    (commands, global)
}

#[test]
fn docs_cli_md_matches_the_help() {
    let mut real = BTreeMap::new();
    commands(Vec::new(), &mut real);
    let global = flags(&help(&[]));
    let (docs, doc_global) = documented();

    assert_eq!(
        doc_global, global,
        "## Global flags in docs/cli.md against `kortix --help`"
    );
    let real_names: BTreeSet<&String> = real.keys().collect();
    let doc_names: BTreeSet<&String> = docs.keys().collect();
    assert_eq!(
        doc_names, real_names,
        "documented commands against the commands of `kortix --help`"
    );
    for (path, flags) in &real {
        let own: BTreeSet<&String> = flags.difference(&global).collect();
        let documented: BTreeSet<&String> = docs[path].difference(&global).collect();
        assert_eq!(
            documented, own,
            "flags of `kortix {path}`: docs/cli.md against --help"
        );
    }
}

#[test]
fn doc_flags_are_whole_flags() {
    let found = doc_flags("use `--wait` or --wait-timeout N; not a--b, nor -- alone, e.g. x--y");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["--wait", "--wait-timeout"]
    );
}
