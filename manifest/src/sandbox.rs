//! `[sandbox]` and `[[sandbox.templates]]`: the images sessions boot from
//! and how big their sandboxes are.

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::coerce::{self, type_name};
use crate::error::Diagnostics;
use crate::fields::{Fields, Slugged, parse_entries};
use crate::image;
use crate::paths::repo_relative_problem;

/// The reserved slug naming the always-available platform image.
pub const PLATFORM_DEFAULT_TEMPLATE: &str = "default";
/// Hardware ceilings: larger values are clamped down to these.
pub const MAX_CPU: u32 = 32;
/// GiB.
pub const MAX_MEMORY_GIB: u32 = 128;
/// GiB.
pub const MAX_DISK_GIB: u32 = 500;

const SECTION: &str = "sandbox.templates";

/// The `[sandbox]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// Project-wide default template: a template slug or `"default"` (the
    /// platform image). `None` means the platform image too.
    pub default: Option<String>,
    /// In declared order (the reference does not ask for sorting).
    pub templates: Vec<SandboxTemplate>,
}

/// One `[[sandbox.templates]]` entry. Exactly one of `dockerfile` and
/// `image` is set; hardware fields are `None` for "provider default".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxTemplate {
    pub slug: String,
    pub name: String,
    pub dockerfile: Option<String>,
    pub image: Option<String>,
    /// vCPU cores, 1..=32.
    pub cpu: Option<u32>,
    /// GiB, 1..=128.
    pub memory: Option<u32>,
    /// GiB, 1..=500.
    pub disk: Option<u32>,
}

impl Slugged for SandboxTemplate {
    fn slug(&self) -> &str {
        &self.slug
    }
}

/// Which image a session boots, after applying the defaulting rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedTemplate<'a> {
    /// The platform default image (no template, or the reserved `"default"`).
    PlatformDefault,
    Template(&'a SandboxTemplate),
}

/// A session asked for a template this manifest does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sandbox template {slug:?} (available: {})", available_list(.available))]
pub struct UnknownTemplate {
    pub slug: String,
    pub available: Vec<String>,
}

fn available_list(available: &[String]) -> String {
    let mut all = vec![PLATFORM_DEFAULT_TEMPLATE.to_owned()];
    all.extend(available.iter().cloned());
    all.join(", ")
}

impl Sandbox {
    pub fn template(&self, slug: &str) -> Option<&SandboxTemplate> {
        self.templates.iter().find(|t| t.slug == slug)
    }

    /// The template a session boots: the explicitly requested slug, else
    /// `[sandbox].default`, else the platform default.
    pub fn resolve(
        &self,
        requested: Option<&str>,
    ) -> Result<ResolvedTemplate<'_>, UnknownTemplate> {
        match requested.or(self.default.as_deref()) {
            None => Ok(ResolvedTemplate::PlatformDefault),
            Some(PLATFORM_DEFAULT_TEMPLATE) => Ok(ResolvedTemplate::PlatformDefault),
            Some(slug) => self
                .template(slug)
                .map(ResolvedTemplate::Template)
                .ok_or_else(|| UnknownTemplate {
                    slug: slug.to_owned(),
                    available: self.templates.iter().map(|t| t.slug.clone()).collect(),
                }),
        }
    }
}

/// Parses `[sandbox]`. Keys other than `default` and `templates` are the
/// removed singular shape (`image`, `dockerfile`, `build`, …); the reference
/// says they are rejected, and since the parser is permissive that means one
/// error per key in section `"sandbox"` while the rest is still read.
pub(crate) fn parse(value: Option<&Value>, diags: &mut Diagnostics) -> Sandbox {
    let table = match value {
        None => return Sandbox::default(),
        Some(Value::Table(t)) => t,
        Some(other) => {
            diags.error(
                "sandbox",
                None,
                None,
                format!("[sandbox] must be a table, found {}", type_name(other)),
            );
            return Sandbox::default();
        }
    };
    for key in table.keys() {
        if key != "default" && key != "templates" {
            diags.error(
                "sandbox",
                None,
                None,
                format!(
                    "`{key}` is not allowed on [sandbox]: only `default` is (the singular image/build shape was removed; declare images in [[sandbox.templates]])"
                ),
            );
        }
    }
    let templates = parse_entries(table.get("templates"), SECTION, diags, template);
    let default = match table.get("default") {
        None => None,
        Some(Value::String(slug)) => {
            if slug == PLATFORM_DEFAULT_TEMPLATE || templates.iter().any(|t| &t.slug == slug) {
                Some(slug.clone())
            } else {
                diags.error(
                    "sandbox",
                    None,
                    Some(slug),
                    format!(
                        "default {slug:?} does not name a template in this manifest (or \"default\"); using the platform default"
                    ),
                );
                None
            }
        }
        Some(other) => {
            diags.error(
                "sandbox",
                None,
                None,
                format!("default must be a string, found {}", type_name(other)),
            );
            None
        }
    };
    Sandbox { default, templates }
}

fn template(f: &mut Fields<'_>) -> Option<SandboxTemplate> {
    let slug = f.slug();
    if slug.as_deref() == Some(PLATFORM_DEFAULT_TEMPLATE) {
        f.problem("slug \"default\" is reserved for the platform image");
    }
    let name = slug.as_deref().map(|s| f.name_or(s));
    let dockerfile_raw = f.take("dockerfile");
    let image_raw = f.take("image");
    match (dockerfile_raw.is_some(), image_raw.is_some()) {
        (true, true) => f.problem("set exactly one of `image` and `dockerfile`, not both"),
        (false, false) => f.problem("one of `image` or `dockerfile` is required"),
        _ => {}
    }
    let dockerfile = f.string("dockerfile", dockerfile_raw);
    let image = f.string("image", image_raw);
    if let Some(path) = &dockerfile
        && let Some(problem) = repo_relative_problem(path)
    {
        f.problem(format!("dockerfile {path:?} {problem}"));
    }
    if let Some(reference) = &image
        && let Some(problem) = image::pinned_problem(reference)
    {
        f.problem(problem);
    }
    let cpu = hardware(f, "cpu", MAX_CPU);
    let memory = hardware(f, "memory", MAX_MEMORY_GIB);
    let disk = hardware(f, "disk", MAX_DISK_GIB);
    if f.take("gpu").is_some() {
        f.problem("GPUs are not supported in this version");
    }
    Some(SandboxTemplate {
        slug: slug?,
        name: name?,
        dockerfile,
        image,
        cpu,
        memory,
        disk,
    })
}

/// Coerces a size to a whole number; below 1 means "provider default",
/// above the ceiling is clamped rather than rejected (both noted).
fn hardware(f: &mut Fields<'_>, key: &str, ceiling: u32) -> Option<u32> {
    let value = f.take(key)?;
    let n = match coerce::whole_number(value) {
        Ok(n) => n,
        Err(e) => {
            f.problem(format!("`{key}`: {e}"));
            return None;
        }
    };
    if n < 1 {
        f.note(format!(
            "`{key}` = {n} is below 1; using the provider default"
        ));
        None
    } else if n > i64::from(ceiling) {
        f.note(format!(
            "`{key}` = {n} is above the ceiling; clamped to {ceiling}"
        ));
        Some(ceiling)
    } else {
        // In range 1..=ceiling, so it fits.
        u32::try_from(n).ok()
    }
}
