//! `kortix manifest …`: local manifest tooling (no server needed).

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use kortix_manifest::{Diagnostic, MANIFEST_FILE, Manifest, TriggerKind};

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    #[command(subcommand)]
    command: ManifestCommand,
}

#[derive(Debug, Subcommand)]
enum ManifestCommand {
    /// Parse and validate a manifest. Exit 0 when it parses (even with
    /// per-entry errors), 1 when it is rejected.
    Check {
        /// The manifest file (default ./kortix.toml); a directory means the
        /// kortix.toml inside it; `-` reads stdin.
        path: Option<PathBuf>,
    },
}

pub fn run(global: &Global, args: ManifestArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ManifestCommand::Check { path } => check(global, path),
    }
}

fn check(global: &Global, path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = manifest_path(path);
    let bytes = read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest = kortix_manifest::parse_bytes(&bytes)
        .with_context(|| format!("{} is rejected", path.display()))?;
    let mut out = std::io::stdout().lock();
    if global.json {
        let json = serde_json::to_string_pretty(&manifest)?;
        writeln!(out, "{json}")?;
    } else {
        write!(out, "{}", summary(&path, &manifest))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn manifest_path(path: Option<PathBuf>) -> PathBuf {
    match path {
        None => Path::new(".").join(MANIFEST_FILE),
        Some(p) if p.is_dir() => p.join(MANIFEST_FILE),
        Some(p) => p,
    }
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(path)
    }
}

/// The human-readable report: one line per section, then every error and
/// warning with its section, index and slug.
fn summary(path: &Path, m: &Manifest) -> String {
    let mut s = String::new();
    let verdict = match m.errors.len() {
        0 => "ok".to_owned(),
        1 => "parses, with 1 error".to_owned(),
        n => format!("parses, with {n} errors"),
    };
    let _ = writeln!(
        s,
        "{}: {verdict} (kortix_version {})",
        path.display(),
        m.kortix_version
    );
    let row = |s: &mut String, label: &str, text: String| {
        let _ = writeln!(s, "  {label:<11} {text}");
    };

    if let Some(name) = &m.project.name {
        row(&mut s, "project", name.clone());
    }
    row(
        &mut s,
        "env",
        format!(
            "{} required{}, {} optional{}",
            m.env.required.len(),
            list_suffix(&m.env.required),
            m.env.optional.len(),
            list_suffix(&m.env.optional)
        ),
    );
    let templates: Vec<String> = m
        .sandbox
        .templates
        .iter()
        .map(|t| {
            let source = match (&t.dockerfile, &t.image) {
                (Some(d), _) => format!("dockerfile {d}"),
                (None, Some(i)) => format!("image {i}"),
                (None, None) => "no image".to_owned(),
            };
            let mut hw = Vec::new();
            if let Some(c) = t.cpu {
                hw.push(format!("cpu {c}"));
            }
            if let Some(mem) = t.memory {
                hw.push(format!("memory {mem} GiB"));
            }
            if let Some(d) = t.disk {
                hw.push(format!("disk {d} GiB"));
            }
            let hw = if hw.is_empty() {
                String::new()
            } else {
                format!(", {}", hw.join(", "))
            };
            format!("{} ({source}{hw})", t.slug)
        })
        .collect();
    row(
        &mut s,
        "sandbox",
        format!(
            "default {}; templates: {}",
            m.sandbox.default.as_deref().unwrap_or("(platform image)"),
            none_or_join(&templates)
        ),
    );
    row(
        &mut s,
        "opencode",
        format!("config_dir {}", m.opencode.config_dir),
    );
    let triggers: Vec<String> = m
        .triggers
        .iter()
        .map(|t| {
            let what = match t.kind {
                TriggerKind::Cron => format!(
                    "cron {:?} {}",
                    t.cron.as_deref().unwrap_or(""),
                    t.timezone.as_deref().unwrap_or("")
                ),
                TriggerKind::Webhook => match &t.secret_env {
                    Some(secret) => format!("webhook, secret {secret}"),
                    None => "webhook, unsigned".to_owned(),
                },
            };
            let off = if t.enabled { "" } else { ", disabled" };
            format!("{} ({what}{off})", t.slug)
        })
        .collect();
    row(&mut s, "triggers", none_or_join(&triggers));
    let connectors: Vec<String> = m
        .connectors
        .iter()
        .map(|c| format!("{} ({})", c.slug, c.provider))
        .collect();
    row(&mut s, "connectors", none_or_join(&connectors));
    let apps: Vec<String> = m
        .apps
        .iter()
        .map(|a| format!("{} ({})", a.slug, a.source.kind.as_str()))
        .collect();
    row(&mut s, "apps", none_or_join(&apps));

    diagnostics(&mut s, "error", &m.errors);
    diagnostics(&mut s, "warning", &m.warnings);
    s
}

fn diagnostics(s: &mut String, what: &str, list: &[Diagnostic]) {
    if list.is_empty() {
        return;
    }
    let plural = if list.len() == 1 { "" } else { "s" };
    let _ = writeln!(s, "\n{} {what}{plural}:", list.len());
    for d in list {
        let index = d.index.map(|i| format!("[{i}]")).unwrap_or_default();
        let slug = d
            .slug
            .as_deref()
            .map(|x| format!(" {x:?}"))
            .unwrap_or_default();
        let _ = writeln!(s, "  {}{index}{slug}: {}", d.section, d.message);
    }
}

fn list_suffix(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(" ({})", items.join(", "))
    }
}

fn none_or_join(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
