//! One root field → the tool's argument schema and the GraphQL document its calls send.
//!
//! The selection rule: a field returning a scalar or enum selects nothing; one returning an
//! object (or interface) selects that type's scalar and enum fields, and its object fields
//! the same way, down to [`MAX_SELECTION_DEPTH`] levels of objects in all; deeper object
//! fields are left out. Fields that need arguments are never selected (no values to give
//! them), at most [`MAX_FIELDS_PER_LEVEL`] fields are selected per object, and unions select
//! `__typename` only. An object with nothing selectable selects `__typename`.

use serde_json::{Map, Value, json};

use super::schema::{Field, InputValue, Kind, Schema, TypeRef};
use crate::connectors::tools::{MAX_DESCRIPTION, cut};

/// Levels of objects selected below a root field (the root field's own type is the first).
pub const MAX_SELECTION_DEPTH: usize = 3;
/// Most fields selected from one object.
pub const MAX_FIELDS_PER_LEVEL: usize = 64;
/// How deep input objects are spelled out in argument schemas; deeper ones are any object.
const MAX_INPUT_DEPTH: usize = 5;

/// The operation of `field` on the root type (`query` or `mutation`).
pub fn document(schema: &Schema, operation: &str, field: &Field) -> String {
    let declarations: Vec<String> = field
        .args
        .iter()
        .map(|a| format!("${}: {}", a.name, a.ty.render()))
        .collect();
    let arguments: Vec<String> = field
        .args
        .iter()
        .map(|a| format!("{0}: ${0}", a.name))
        .collect();
    let mut doc = format!("{operation} {}", field.name);
    if !declarations.is_empty() {
        doc.push_str(&format!("({})", declarations.join(", ")));
    }
    doc.push_str(" { ");
    doc.push_str(&field.name);
    if !arguments.is_empty() {
        doc.push_str(&format!("({})", arguments.join(", ")));
    }
    if let Some(selection) = selection(schema, field.ty.named(), 1) {
        doc.push(' ');
        doc.push_str(&selection);
    }
    doc.push_str(" }");
    doc
}

/// The selection set for a value of type `name` at object level `level`, or `None` for a
/// leaf (scalar, enum, unknown type).
fn selection(schema: &Schema, name: &str, level: usize) -> Option<String> {
    let fields = match schema.types.get(name) {
        Some(Kind::Object(fields)) => fields,
        Some(Kind::Union) => return Some("{ __typename }".into()),
        _ => return None,
    };
    let mut picked = Vec::new();
    for f in fields {
        if picked.len() >= MAX_FIELDS_PER_LEVEL {
            break;
        }
        if f.name.starts_with("__") || f.args.iter().any(InputValue::is_required) {
            continue;
        }
        match schema.types.get(f.ty.named()) {
            Some(Kind::Object(_) | Kind::Union) => {
                if level < MAX_SELECTION_DEPTH
                    && let Some(inner) = selection(schema, f.ty.named(), level + 1)
                {
                    picked.push(format!("{} {inner}", f.name));
                }
            }
            Some(Kind::Input(_)) => {}
            Some(Kind::Scalar | Kind::Enum(_)) | None => picked.push(f.name.clone()),
        }
    }
    if picked.is_empty() {
        picked.push("__typename".into());
    }
    Some(format!("{{ {} }}", picked.join(" ")))
}

/// The JSON schema of `field`'s arguments, non-null ones without a default required.
pub fn arguments_schema(schema: &Schema, field: &Field) -> Value {
    object_schema(schema, &field.args, 0)
}

fn object_schema(schema: &Schema, values: &[InputValue], depth: usize) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for v in values {
        let mut s = value_schema(schema, &v.ty, depth);
        if !v.description.is_empty()
            && let Some(o) = s.as_object_mut()
        {
            o.insert(
                "description".into(),
                Value::String(cut(&v.description, MAX_DESCRIPTION)),
            );
        }
        properties.insert(v.name.clone(), s);
        if v.is_required() {
            required.push(Value::String(v.name.clone()));
        }
    }
    let mut out = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        out["required"] = Value::Array(required);
    }
    out
}

fn value_schema(schema: &Schema, ty: &TypeRef, depth: usize) -> Value {
    match ty {
        TypeRef::NonNull(inner) => value_schema(schema, inner, depth),
        TypeRef::List(inner) => {
            json!({"type": "array", "items": value_schema(schema, inner, depth)})
        }
        TypeRef::Named(name) => match (name.as_str(), schema.types.get(name)) {
            ("Int", _) => json!({"type": "integer"}),
            ("Float", _) => json!({"type": "number"}),
            ("String", _) => json!({"type": "string"}),
            ("Boolean", _) => json!({"type": "boolean"}),
            ("ID", _) => json!({"type": ["string", "integer"]}),
            (_, Some(Kind::Enum(values))) => json!({"type": "string", "enum": values}),
            (_, Some(Kind::Input(fields))) if depth < MAX_INPUT_DEPTH => {
                object_schema(schema, fields, depth + 1)
            }
            (_, Some(Kind::Input(_))) => json!({"type": "object"}),
            _ => json!({"description": format!("GraphQL scalar {name}")}),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::from_sdl;
    use super::*;

    const SDL: &str = r#"
        type Book { id: ID! title: String genre: Genre author: Author reviews(first: Int!): [String] }
        type Author { name: String! books: [Book!]! }
        enum Genre { FICTION HISTORY }
        input Filter { genre: Genre tags: [String!] nested: Filter }
        input BookInput { title: String! genre: Genre = FICTION }
        union Result = Book | Author
        type Query { book(id: ID!): Book count: Int! search(filter: Filter): [Result] }
        type Mutation { addBook(input: BookInput!, draft: Boolean): Book! }
    "#;

    fn root_field<'s>(s: &'s Schema, root: &str, name: &str) -> &'s Field {
        s.fields(root)
            .unwrap()
            .iter()
            .find(|f| f.name == name)
            .unwrap()
    }

    #[test]
    fn documents_select_to_a_bounded_depth() {
        let s = from_sdl(SDL).unwrap();
        assert_eq!(
            document(&s, "query", root_field(&s, "Query", "book")),
            "query book($id: ID!) { book(id: $id) { id title genre author { name books { id title genre } } } }"
        );
        assert_eq!(
            document(&s, "query", root_field(&s, "Query", "count")),
            "query count { count }"
        );
        assert_eq!(
            document(&s, "query", root_field(&s, "Query", "search")),
            "query search($filter: Filter) { search(filter: $filter) { __typename } }"
        );
        assert_eq!(
            document(&s, "mutation", root_field(&s, "Mutation", "addBook")),
            "mutation addBook($input: BookInput!, $draft: Boolean) { addBook(input: $input, draft: $draft) { id title genre author { name books { id title genre } } } }"
        );
    }

    #[test]
    fn arguments_become_json_schema() {
        let s = from_sdl(SDL).unwrap();
        let add = arguments_schema(&s, root_field(&s, "Mutation", "addBook"));
        assert_eq!(add["required"], json!(["input"]));
        assert_eq!(add["properties"]["input"]["required"], json!(["title"]));
        assert_eq!(
            add["properties"]["input"]["properties"]["genre"],
            json!({"type": "string", "enum": ["FICTION", "HISTORY"]})
        );
        assert_eq!(add["properties"]["draft"], json!({"type": "boolean"}));
        let search = arguments_schema(&s, root_field(&s, "Query", "search"));
        assert!(search.get("required").is_none());
        let filter = &search["properties"]["filter"];
        assert_eq!(
            filter["properties"]["tags"]["items"],
            json!({"type": "string"})
        );
        // The recursive input stops at a bounded depth.
        let mut level = filter;
        for _ in 0..MAX_INPUT_DEPTH - 1 {
            level = &level["properties"]["nested"];
        }
        assert_eq!(level["properties"]["nested"], json!({"type": "object"}));
    }
}
