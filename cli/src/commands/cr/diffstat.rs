//! A `git diff --stat` style summary: `path | 12 ++++++----` per file, then the totals.

use kortix_proto::v1::FileChange;

use crate::output::{GREEN, RED, paint};

/// Widest `+`/`-` bar, as git uses on an 80-column terminal.
const MAX_BAR: u32 = 40;

pub fn render(files: &[FileChange], insertions: u32, deletions: u32) -> String {
    if files.is_empty() {
        return " 0 files changed\n".to_owned();
    }
    let names: Vec<String> = files.iter().map(display_name).collect();
    let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let max_change = files
        .iter()
        .filter(|f| !f.binary)
        .map(|f| f.insertions.saturating_add(f.deletions))
        .max()
        .unwrap_or(0);
    let count_width = max_change.to_string().len().max(3);
    let mut out = String::new();
    for (file, name) in files.iter().zip(&names) {
        let pad = " ".repeat(name_width - name.chars().count());
        if file.binary {
            out.push_str(&format!(" {name}{pad} | {:>count_width$}\n", "Bin"));
            continue;
        }
        let (plus, minus) = bar(file.insertions, file.deletions, max_change);
        out.push_str(&format!(
            " {name}{pad} | {:>count_width$} {}{}\n",
            file.insertions.saturating_add(file.deletions),
            paint(GREEN, &"+".repeat(plus as usize)),
            paint(RED, &"-".repeat(minus as usize)),
        ));
    }
    out.push_str(&summary(files.len(), insertions, deletions));
    out.push('\n');
    out
}

fn display_name(f: &FileChange) -> String {
    if f.old_path.is_empty() || f.old_path == f.path {
        f.path.clone()
    } else {
        format!("{} => {}", f.old_path, f.path)
    }
}

/// Bar lengths scaled like git's `scale_linear`: any change shows at least one character.
fn bar(add: u32, del: u32, max_change: u32) -> (u32, u32) {
    let total = add.saturating_add(del);
    if max_change <= MAX_BAR {
        return (add, del);
    }
    let scale = |n: u32| -> u32 {
        if n == 0 {
            0
        } else {
            1 + (u64::from(n) * u64::from(MAX_BAR - 1) / u64::from(max_change)) as u32
        }
    };
    let mut scaled_total = scale(total);
    if scaled_total < 2 && add > 0 && del > 0 {
        scaled_total = 2;
    }
    if add < del {
        let a = scale(add);
        (a, scaled_total.saturating_sub(a))
    } else {
        let d = scale(del);
        (scaled_total.saturating_sub(d), d)
    }
}

/// ` 2 files changed, 10 insertions(+), 4 deletions(-)` with git's singulars and omissions.
fn summary(files: usize, insertions: u32, deletions: u32) -> String {
    let mut text = format!(" {files} file{} changed", if files == 1 { "" } else { "s" });
    if insertions > 0 || deletions == 0 {
        text.push_str(&format!(
            ", {insertions} insertion{}(+)",
            if insertions == 1 { "" } else { "s" }
        ));
    }
    if deletions > 0 {
        text.push_str(&format!(
            ", {deletions} deletion{}(-)",
            if deletions == 1 { "" } else { "s" }
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(text: &str) -> String {
        let mut out = String::new();
        let mut in_escape = false;
        for c in text.chars() {
            match (in_escape, c) {
                (false, '\u{1b}') => in_escape = true,
                (true, 'm') => in_escape = false,
                (false, c) => out.push(c),
                (true, _) => {}
            }
        }
        out
    }

    fn file(path: &str, add: u32, del: u32) -> FileChange {
        FileChange {
            path: path.into(),
            insertions: add,
            deletions: del,
            ..Default::default()
        }
    }

    #[test]
    fn small_changes_are_drawn_one_to_one() {
        let files = [
            file("src/a.rs", 8, 4),
            FileChange {
                binary: true,
                ..file("logo.png", 0, 0)
            },
            FileChange {
                old_path: "old.txt".into(),
                ..file("new.txt", 1, 0)
            },
        ];
        assert_eq!(
            strip(&render(&files, 9, 4)),
            " src/a.rs           |  12 ++++++++----\n\
             \x20logo.png           | Bin\n\
             \x20old.txt => new.txt |   1 +\n\
             \x203 files changed, 9 insertions(+), 4 deletions(-)\n"
        );
    }

    #[test]
    fn big_changes_are_scaled_to_the_bar_width() {
        let (plus, minus) = bar(900, 100, 1000);
        assert!(plus + minus <= MAX_BAR, "{plus} {minus}");
        assert!(minus >= 1 && plus > minus);
        assert_eq!(bar(1, 0, 1000), (1, 0));
        assert_eq!(bar(1, 1, 1000), (1, 1));
    }

    #[test]
    fn summary_uses_singulars_and_omits_zero_deletions() {
        assert_eq!(summary(1, 1, 0), " 1 file changed, 1 insertion(+)");
        assert_eq!(summary(2, 0, 3), " 2 files changed, 3 deletions(-)");
        assert_eq!(strip(&render(&[], 0, 0)), " 0 files changed\n");
    }
}
