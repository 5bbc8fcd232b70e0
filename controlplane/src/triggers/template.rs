//! Prompt templates: Mustache over a JSON context, with HTML escaping off.
//!
//! Prompts are plain text handed to an agent, so `{{ x }}`, `{{{ x }}}` and `{{& x }}` all
//! insert the value verbatim; escaping `<` or `&` would only corrupt what the agent reads.
//! The Mustache crates on crates.io either escape `{{ x }}` unconditionally or render only
//! from derived Rust types, so this is a small renderer of the Mustache spec (interpolation,
//! dotted names, sections, inverted sections, comments, set delimiters, standalone lines).
//! Partials are refused: a prompt has nowhere to load them from.
//!
//! Values: a missing name renders empty; strings verbatim; numbers and booleans as JSON
//! text; `null` empty; objects and arrays as compact JSON. A numeric path segment indexes an
//! array (`{{ body.items.0.id }}`). Falsy for sections: missing, `null`, `false`, `0`, `""`
//! and `[]`.

use serde_json::Value;

/// Deepest nesting of sections a template may use.
const MAX_DEPTH: usize = 32;
/// Largest rendered prompt; the webhook body alone may be 1 MiB and can be quoted twice.
pub const MAX_RENDERED_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("prompt template line {line}: unclosed tag (expected {close:?})")]
    UnclosedTag { line: usize, close: String },
    #[error("prompt template line {line}: empty tag")]
    EmptyTag { line: usize },
    #[error("prompt template line {line}: section {name:?} is never closed")]
    UnclosedSection { line: usize, name: String },
    #[error("prompt template line {line}: {{{{/{found}}}}} closes {expected}")]
    MismatchedClose {
        line: usize,
        found: String,
        expected: String,
    },
    #[error("prompt template line {line}: partials ({{{{> {name}}}}}) are not supported")]
    Partial { line: usize, name: String },
    #[error("prompt template line {line}: invalid delimiter change {tag:?}")]
    Delimiters { line: usize, tag: String },
    #[error("prompt template line {line}: sections nested deeper than {MAX_DEPTH}")]
    TooDeep { line: usize },
    #[error("rendered prompt exceeds {MAX_RENDERED_BYTES} bytes")]
    TooLarge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Text(String),
    Var(Path),
    Section {
        path: Path,
        inverted: bool,
        children: Vec<Node>,
    },
}

/// A dotted name; empty for the implicit iterator `.`.
type Path = Vec<String>;

/// A parsed template, ready to render any number of times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    nodes: Vec<Node>,
}

/// Parses and renders in one go.
pub fn render(source: &str, context: &Value) -> Result<String, TemplateError> {
    Template::parse(source)?.render(context)
}

struct Open {
    name: String,
    path: Path,
    inverted: bool,
    line: usize,
    siblings: Vec<Node>,
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut open_delim = "{{".to_owned();
        let mut close_delim = "}}".to_owned();
        let mut nodes: Vec<Node> = Vec::new();
        let mut stack: Vec<Open> = Vec::new();
        let mut pos = 0;
        let line_at = |i: usize| src[..i].bytes().filter(|&b| b == b'\n').count() + 1;

        while let Some(rel) = src[pos..].find(open_delim.as_str()) {
            let tag_start = pos + rel;
            let inner_start = tag_start + open_delim.len();
            let line = line_at(tag_start);
            let triple = open_delim == "{{" && src[inner_start..].starts_with('{');
            let (content, tag_end) = if triple {
                let end_marker = format!("}}{close_delim}");
                let from = inner_start + 1;
                let rel_end =
                    src[from..]
                        .find(end_marker.as_str())
                        .ok_or(TemplateError::UnclosedTag {
                            line,
                            close: end_marker.clone(),
                        })?;
                (
                    &src[from..from + rel_end],
                    from + rel_end + end_marker.len(),
                )
            } else {
                let rel_end = src[inner_start..].find(close_delim.as_str()).ok_or(
                    TemplateError::UnclosedTag {
                        line,
                        close: close_delim.clone(),
                    },
                )?;
                (
                    &src[inner_start..inner_start + rel_end],
                    inner_start + rel_end + close_delim.len(),
                )
            };
            let content = content.trim();
            let sigil = if triple {
                Some('&')
            } else {
                content
                    .chars()
                    .next()
                    .filter(|c| matches!(c, '#' | '^' | '/' | '!' | '>' | '&' | '='))
            };

            // A standalone tag (alone on its line but for whitespace) takes its line with it,
            // so block tags do not leave blank lines in the prompt.
            let line_start = src[..tag_start].rfind('\n').map_or(0, |i| i + 1);
            let rest_end = src[tag_end..]
                .find('\n')
                .map_or(src.len(), |i| tag_end + i + 1);
            let standalone = matches!(sigil, Some('#' | '^' | '/' | '!' | '>' | '='))
                && line_start >= pos
                && is_blank(&src[line_start..tag_start])
                && is_blank(&src[tag_end..rest_end]);
            let text_end = if standalone { line_start } else { tag_start };
            let current = stack.last_mut().map_or(&mut nodes, |o| &mut o.siblings);
            push_text(current, &src[pos..text_end]);
            pos = if standalone { rest_end } else { tag_end };

            match sigil {
                Some('!') => {}
                Some('=') => {
                    let (open, close) =
                        parse_delimiters(content).ok_or_else(|| TemplateError::Delimiters {
                            line,
                            tag: content.to_owned(),
                        })?;
                    open_delim = open;
                    close_delim = close;
                }
                Some('>') => {
                    return Err(TemplateError::Partial {
                        line,
                        name: content[1..].trim().to_owned(),
                    });
                }
                Some(s @ ('#' | '^')) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(TemplateError::TooDeep { line });
                    }
                    let name = content[1..].trim().to_owned();
                    let path = parse_path(&name).ok_or(TemplateError::EmptyTag { line })?;
                    stack.push(Open {
                        name,
                        path,
                        inverted: s == '^',
                        line,
                        siblings: Vec::new(),
                    });
                }
                Some('/') => {
                    let name = content[1..].trim();
                    let Some(open) = stack.pop() else {
                        return Err(TemplateError::MismatchedClose {
                            line,
                            found: name.to_owned(),
                            expected: "no open section".to_owned(),
                        });
                    };
                    if open.name != name {
                        return Err(TemplateError::MismatchedClose {
                            line,
                            found: name.to_owned(),
                            expected: format!("section {:?}", open.name),
                        });
                    }
                    let parent = stack.last_mut().map_or(&mut nodes, |o| &mut o.siblings);
                    parent.push(Node::Section {
                        path: open.path,
                        inverted: open.inverted,
                        children: open.siblings,
                    });
                }
                Some('&') => {
                    let name = if triple { content } else { content[1..].trim() };
                    let path = parse_path(name).ok_or(TemplateError::EmptyTag { line })?;
                    let current = stack.last_mut().map_or(&mut nodes, |o| &mut o.siblings);
                    current.push(Node::Var(path));
                }
                _ => {
                    let path = parse_path(content).ok_or(TemplateError::EmptyTag { line })?;
                    let current = stack.last_mut().map_or(&mut nodes, |o| &mut o.siblings);
                    current.push(Node::Var(path));
                }
            }
        }
        if let Some(open) = stack.pop() {
            return Err(TemplateError::UnclosedSection {
                line: open.line,
                name: open.name,
            });
        }
        push_text(&mut nodes, &src[pos..]);
        Ok(Template { nodes })
    }

    pub fn render(&self, context: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut stack = vec![context];
        render_nodes(&self.nodes, &mut stack, &mut out)?;
        Ok(out)
    }
}

fn is_blank(s: &str) -> bool {
    s.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

fn push_text(nodes: &mut Vec<Node>, text: &str) {
    if !text.is_empty() {
        nodes.push(Node::Text(text.to_owned()));
    }
}

fn parse_path(name: &str) -> Option<Path> {
    if name.is_empty() {
        return None;
    }
    if name == "." {
        return Some(Vec::new());
    }
    let parts: Vec<String> = name.split('.').map(|p| p.trim().to_owned()).collect();
    if parts.iter().any(String::is_empty) {
        return None;
    }
    Some(parts)
}

/// `=<% %>=` → (`<%`, `%>`).
fn parse_delimiters(content: &str) -> Option<(String, String)> {
    let inner = content.strip_prefix('=')?.strip_suffix('=')?;
    let mut parts = inner.split_whitespace();
    let (open, close) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || open.contains('=') || close.contains('=') {
        return None;
    }
    Some((open.to_owned(), close.to_owned()))
}

fn render_nodes<'a>(
    nodes: &'a [Node],
    stack: &mut Vec<&'a Value>,
    out: &mut String,
) -> Result<(), TemplateError> {
    for node in nodes {
        match node {
            Node::Text(text) => append(out, text)?,
            Node::Var(path) => {
                if let Some(value) = lookup(stack, path) {
                    append_value(out, value)?;
                }
            }
            Node::Section {
                path,
                inverted,
                children,
            } => {
                let value = lookup(stack, path);
                let truthy = value.is_some_and(is_truthy);
                if *inverted {
                    if !truthy {
                        render_nodes(children, stack, out)?;
                    }
                    continue;
                }
                let Some(value) = value.filter(|v| is_truthy(v)) else {
                    continue;
                };
                match value {
                    Value::Array(items) => {
                        for item in items {
                            stack.push(item);
                            let done = render_nodes(children, stack, out);
                            stack.pop();
                            done?;
                        }
                    }
                    other => {
                        stack.push(other);
                        let done = render_nodes(children, stack, out);
                        stack.pop();
                        done?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Mustache name resolution: the first segment is looked up from the innermost context
/// outwards; the rest are looked up only inside what the first one found.
fn lookup<'a>(stack: &[&'a Value], path: &[String]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return stack.last().copied();
    };
    let base = stack.iter().rev().find_map(|ctx| child(ctx, first))?;
    rest.iter().try_fold(base, |v, seg| child(v, seg))
}

fn child<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    }
}

fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Bool(true) | Value::Object(_) => true,
    }
}

fn append(out: &mut String, text: &str) -> Result<(), TemplateError> {
    if out.len() + text.len() > MAX_RENDERED_BYTES {
        return Err(TemplateError::TooLarge);
    }
    out.push_str(text);
    Ok(())
}

fn append_value(out: &mut String, value: &Value) -> Result<(), TemplateError> {
    match value {
        Value::Null => Ok(()),
        Value::String(s) => append(out, s),
        Value::Bool(b) => append(out, if *b { "true" } else { "false" }),
        Value::Number(n) => append(out, &n.to_string()),
        Value::Array(_) | Value::Object(_) => append(out, &value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(src: &str, ctx: Value) -> String {
        render(src, &ctx).unwrap()
    }

    #[test]
    fn interpolates_without_escaping() {
        let ctx = json!({"x": "<a href=\"q\">&</a>", "n": 3, "f": 1.5, "b": true, "nil": null});
        assert_eq!(r("{{x}}|{{ x }}|{{{x}}}|{{& x}}", ctx.clone()), {
            let v = "<a href=\"q\">&</a>";
            format!("{v}|{v}|{v}|{v}")
        });
        assert_eq!(
            r("{{n}} {{f}} {{b}} [{{nil}}] [{{missing}}]", ctx),
            "3 1.5 true [] []"
        );
    }

    #[test]
    fn dotted_names_and_indices() {
        let ctx = json!({"body": {"a": {"b": "deep"}, "items": [{"id": 7}], "text": "hi"},
                         "headers": {"user_agent": "GitHub-Hookshot/1"}});
        assert_eq!(r("{{ body.a.b }}", ctx.clone()), "deep");
        assert_eq!(r("{{ body.items.0.id }}", ctx.clone()), "7");
        assert_eq!(
            r("{{ body.items.1.id }}|{{ body.a.b.c }}", ctx.clone()),
            "|"
        );
        assert_eq!(
            r(
                "Slack event from {{ headers.user_agent }}. User said: {{ body.text }}",
                ctx
            ),
            "Slack event from GitHub-Hookshot/1. User said: hi"
        );
    }

    #[test]
    fn objects_render_as_json() {
        assert_eq!(
            r("{{ body }}", json!({"body": {"a": [1, 2]}})),
            r#"{"a":[1,2]}"#
        );
    }

    #[test]
    fn dotted_lookup_does_not_fall_back_to_outer_contexts() {
        // Spec: `a.b` resolves `a` up the stack, then `b` only inside that `a`.
        let ctx = json!({"a": {}, "b": "outer", "list": [{"a": {"x": 1}}]});
        assert_eq!(r("[{{a.b}}]", ctx.clone()), "[]");
        assert_eq!(r("{{#list}}{{a.x}}{{b}}{{/list}}", ctx), "1outer");
    }

    #[test]
    fn sections_and_inverted_sections() {
        let ctx = json!({"items": [{"n": "a"}, {"n": "b"}], "empty": [], "yes": true,
                         "no": false, "zero": 0, "blank": "", "obj": {"k": "v"}, "names": ["x", "y"]});
        assert_eq!(r("{{#items}}{{n}},{{/items}}", ctx.clone()), "a,b,");
        assert_eq!(r("{{#names}}<{{.}}>{{/names}}", ctx.clone()), "<x><y>");
        assert_eq!(
            r("{{#empty}}E{{/empty}}{{^empty}}none{{/empty}}", ctx.clone()),
            "none"
        );
        assert_eq!(
            r(
                "{{#yes}}Y{{/yes}}{{#no}}N{{/no}}{{^no}}!N{{/no}}",
                ctx.clone()
            ),
            "Y!N"
        );
        assert_eq!(
            r(
                "{{#zero}}Z{{/zero}}{{#blank}}B{{/blank}}{{#missing}}M{{/missing}}",
                ctx.clone()
            ),
            ""
        );
        assert_eq!(r("{{#obj}}{{k}}{{/obj}}", ctx.clone()), "v");
        assert_eq!(r("{{^missing}}absent{{/missing}}", ctx), "absent");
    }

    #[test]
    fn standalone_tags_take_their_line() {
        let src = "Begin.\n{{#list}}\n- {{.}}\n{{/list}}\n  {{! a note }}\nEnd.\n";
        assert_eq!(
            r(src, json!({"list": ["a", "b"]})),
            "Begin.\n- a\n- b\nEnd.\n"
        );
        // Not standalone: other content on the line stays.
        assert_eq!(r("x {{#a}}y{{/a}} z\n", json!({"a": true})), "x y z\n");
        assert_eq!(
            r("  {{#a}}\r\nin\r\n  {{/a}}\r\n", json!({"a": true})),
            "in\r\n"
        );
    }

    #[test]
    fn comments_and_delimiters() {
        assert_eq!(r("a{{! ignored {{ }} }}b", json!({})), "a }}b");
        assert_eq!(r("a{{!ignored}}b", json!({})), "ab");
        assert_eq!(
            r(
                "{{=<% %>=}}<% x %> {{x}} <%={{ }}=%>{{ x }}",
                json!({"x": 1})
            ),
            "1 {{x}} 1"
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            render("ok\n{{#a}}never closed", &json!({})),
            Err(TemplateError::UnclosedSection {
                line: 2,
                name: "a".into()
            })
        );
        assert!(matches!(
            render("{{#a}}{{/b}}", &json!({})),
            Err(TemplateError::MismatchedClose { line: 1, .. })
        ));
        assert!(matches!(
            render("{{/a}}", &json!({})),
            Err(TemplateError::MismatchedClose { .. })
        ));
        assert!(matches!(
            render("x\n\n{{ open", &json!({})),
            Err(TemplateError::UnclosedTag { line: 3, .. })
        ));
        assert!(matches!(
            render("{{}}", &json!({})),
            Err(TemplateError::EmptyTag { .. })
        ));
        assert!(matches!(
            render("{{> other}}", &json!({})),
            Err(TemplateError::Partial { .. })
        ));
        assert!(matches!(
            render("{{=<%=}}", &json!({})),
            Err(TemplateError::Delimiters { .. })
        ));
        assert!(matches!(
            render("{{a..b}}", &json!({})),
            Err(TemplateError::EmptyTag { .. })
        ));
        let deep = "{{#a}}".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            render(&deep, &json!({})),
            Err(TemplateError::TooDeep { .. })
        ));
    }

    #[test]
    fn output_is_bounded() {
        let big = "x".repeat(MAX_RENDERED_BYTES / 2 + 1);
        assert_eq!(
            render("{{a}}{{a}}", &json!({ "a": big })),
            Err(TemplateError::TooLarge)
        );
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let ctx = json!({"a": [1, {"b": "c"}], "d": "e"});
        for src in [
            "{{",
            "}}",
            "{{{",
            "{{{a}}",
            "{{#",
            "{{^}}",
            "{{=}}",
            "{{= =}}",
            "{{&}}",
            "é{{a}}é",
            "{{#a}}{{.}}{{/a}}",
            "{{ # a }}x{{ / a }}",
            "\n{{!}}\n",
            "{{=| |=}}|a|",
        ] {
            let _ = render(src, &ctx);
        }
    }
}
