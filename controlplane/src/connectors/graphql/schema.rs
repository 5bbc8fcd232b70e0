//! A GraphQL schema as far as building tools needs it — root types, object fields with their
//! arguments, input objects, enums — read from SDL (`graphql-parser`) or from the answer to
//! the standard introspection query. Both are untrusted: nesting is bounded before parsing
//! and type references are read to a bounded depth.

use std::collections::HashMap;

use graphql_parser::schema::{self as sdl, Definition, TypeDefinition, TypeExtension};
use serde_json::Value;

/// Deepest `[`/`{`/`(` nesting accepted in SDL (the parser recurses on it), and deepest
/// `ofType` chain read from introspection. Real schemas stay under ten.
const MAX_NESTING: usize = 64;
/// Most types read from one schema.
const MAX_TYPES: usize = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchemaError {
    #[error("the SDL does not parse: {0}")]
    Sdl(String),
    #[error("the SDL nests deeper than {MAX_NESTING} levels")]
    TooDeep,
    #[error("the introspection answer is not usable: {0}")]
    Introspection(String),
    #[error("the schema has more than {MAX_TYPES} types")]
    TooManyTypes,
    #[error("the schema has neither a query nor a mutation root type with fields")]
    NoRoots,
}

/// A reference to a type: `Name`, `[T]`, `T!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeRef {
    Named(String),
    List(Box<TypeRef>),
    NonNull(Box<TypeRef>),
}

impl TypeRef {
    pub fn named(&self) -> &str {
        match self {
            TypeRef::Named(n) => n,
            TypeRef::List(t) | TypeRef::NonNull(t) => t.named(),
        }
    }

    pub fn is_required(&self) -> bool {
        matches!(self, TypeRef::NonNull(_))
    }

    /// The reference in GraphQL syntax, for variable declarations.
    pub fn render(&self) -> String {
        match self {
            TypeRef::Named(n) => n.clone(),
            TypeRef::List(t) => format!("[{}]", t.render()),
            TypeRef::NonNull(t) => format!("{}!", t.render()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputValue {
    pub name: String,
    pub description: String,
    pub ty: TypeRef,
    /// A default makes a non-null argument optional.
    pub has_default: bool,
}

impl InputValue {
    pub fn is_required(&self) -> bool {
        self.ty.is_required() && !self.has_default
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub description: String,
    pub args: Vec<InputValue>,
    pub ty: TypeRef,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Scalar,
    Enum(Vec<String>),
    /// Objects and interfaces: both have selectable fields.
    Object(Vec<Field>),
    Union,
    Input(Vec<InputValue>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schema {
    pub query: Option<String>,
    pub mutation: Option<String>,
    pub types: HashMap<String, Kind>,
}

impl Schema {
    /// The fields of the object type `name`, if it is one.
    pub fn fields(&self, name: &str) -> Option<&[Field]> {
        match self.types.get(name) {
            Some(Kind::Object(fields)) => Some(fields),
            _ => None,
        }
    }

    fn check(self) -> Result<Schema, SchemaError> {
        if self.types.len() > MAX_TYPES {
            return Err(SchemaError::TooManyTypes);
        }
        let has_fields = |root: &Option<String>| {
            root.as_deref()
                .and_then(|r| self.fields(r))
                .is_some_and(|f| !f.is_empty())
        };
        if !has_fields(&self.query) && !has_fields(&self.mutation) {
            return Err(SchemaError::NoRoots);
        }
        Ok(self)
    }
}

/// The standard introspection query, reduced to what tools are built from.
pub const INTROSPECTION_QUERY: &str = "query IntrospectionQuery { __schema { \
queryType { name } mutationType { name } \
types { kind name \
fields(includeDeprecated: false) { name description args { name description type { ...TypeRef } defaultValue } type { ...TypeRef } } \
inputFields { name description type { ...TypeRef } defaultValue } \
enumValues(includeDeprecated: false) { name } } } } \
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name \
ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";

/// Reads SDL text.
pub fn from_sdl(text: &str) -> Result<Schema, SchemaError> {
    if nesting(text) > MAX_NESTING {
        return Err(SchemaError::TooDeep);
    }
    let doc = sdl::parse_schema::<String>(text)
        .map_err(|e| SchemaError::Sdl(super::super::tools::cut(&e.to_string(), 512)))?;
    let mut schema = Schema::default();
    let mut explicit_roots = false;
    let mut extensions = Vec::new();
    for def in doc.definitions {
        match def {
            Definition::SchemaDefinition(s) => {
                explicit_roots = true;
                schema.query = s.query;
                schema.mutation = s.mutation;
            }
            Definition::TypeDefinition(t) => {
                let (name, kind) = sdl_type(t);
                schema.types.insert(name, kind);
            }
            Definition::TypeExtension(TypeExtension::Object(x)) => {
                extensions.push((x.name, x.fields));
            }
            Definition::TypeExtension(TypeExtension::Interface(x)) => {
                extensions.push((x.name, x.fields));
            }
            Definition::TypeExtension(_) | Definition::DirectiveDefinition(_) => {}
        }
        if schema.types.len() > MAX_TYPES {
            return Err(SchemaError::TooManyTypes);
        }
    }
    for (name, fields) in extensions {
        if let Some(Kind::Object(existing)) = schema.types.get_mut(&name) {
            existing.extend(fields.into_iter().map(sdl_field));
        }
    }
    if !explicit_roots {
        let present = |n: &str| schema.types.contains_key(n).then(|| n.to_owned());
        schema.query = present("Query");
        schema.mutation = present("Mutation");
    }
    schema.check()
}

fn sdl_type(t: TypeDefinition<'_, String>) -> (String, Kind) {
    match t {
        TypeDefinition::Scalar(s) => (s.name, Kind::Scalar),
        TypeDefinition::Object(o) => (
            o.name,
            Kind::Object(o.fields.into_iter().map(sdl_field).collect()),
        ),
        TypeDefinition::Interface(i) => (
            i.name,
            Kind::Object(i.fields.into_iter().map(sdl_field).collect()),
        ),
        TypeDefinition::Union(u) => (u.name, Kind::Union),
        TypeDefinition::Enum(e) => (
            e.name,
            Kind::Enum(e.values.into_iter().map(|v| v.name).collect()),
        ),
        TypeDefinition::InputObject(i) => (
            i.name,
            Kind::Input(i.fields.into_iter().map(sdl_input).collect()),
        ),
    }
}

fn sdl_field(f: sdl::Field<'_, String>) -> Field {
    Field {
        name: f.name,
        description: f.description.unwrap_or_default(),
        args: f.arguments.into_iter().map(sdl_input).collect(),
        ty: sdl_ref(f.field_type),
    }
}

fn sdl_input(v: sdl::InputValue<'_, String>) -> InputValue {
    InputValue {
        name: v.name,
        description: v.description.unwrap_or_default(),
        ty: sdl_ref(v.value_type),
        has_default: v.default_value.is_some(),
    }
}

fn sdl_ref(t: sdl::Type<'_, String>) -> TypeRef {
    match t {
        sdl::Type::NamedType(n) => TypeRef::Named(n),
        sdl::Type::ListType(t) => TypeRef::List(Box::new(sdl_ref(*t))),
        sdl::Type::NonNullType(t) => TypeRef::NonNull(Box::new(sdl_ref(*t))),
    }
}

/// The deepest bracket nesting outside strings and comments: the parser recurses on it, so
/// it is checked before parsing rather than trusted.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut in_comment, mut escaped) = (false, false, false);
    for c in text.chars() {
        if in_comment {
            in_comment = c != '\n';
            continue;
        }
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '#' => in_comment = true,
            '[' | '{' | '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' | '}' | ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Reads the answer to [`INTROSPECTION_QUERY`] (the whole `{"data": {"__schema": …}}`).
pub fn from_introspection(answer: &Value) -> Result<Schema, SchemaError> {
    let bad = |why: &str| SchemaError::Introspection(why.to_owned());
    if let Some(errors) = answer.get("errors").filter(|e| !e.is_null()) {
        return Err(SchemaError::Introspection(format!(
            "the endpoint answered with errors: {}",
            super::call::error_messages(errors)
        )));
    }
    let schema = answer
        .pointer("/data/__schema")
        .ok_or_else(|| bad("no data.__schema (is introspection disabled?)"))?;
    let root = |key: &str| {
        schema
            .pointer(&format!("/{key}/name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let types = schema
        .get("types")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no __schema.types list"))?;
    if types.len() > MAX_TYPES {
        return Err(SchemaError::TooManyTypes);
    }
    let mut out = Schema {
        query: root("queryType"),
        mutation: root("mutationType"),
        types: HashMap::new(),
    };
    for t in types {
        let name = str_at(t, "name");
        if name.is_empty() {
            continue;
        }
        let list = |key: &str| t.get(key).and_then(Value::as_array).into_iter().flatten();
        let kind = match str_at(t, "kind").as_str() {
            "SCALAR" => Kind::Scalar,
            "ENUM" => Kind::Enum(list("enumValues").map(|v| str_at(v, "name")).collect()),
            "OBJECT" | "INTERFACE" => Kind::Object(
                list("fields")
                    .map(|f| {
                        Ok(Field {
                            name: str_at(f, "name"),
                            description: str_at(f, "description"),
                            args: list_inputs(f.get("args"))?,
                            ty: type_ref(f.get("type"), 0)?,
                        })
                    })
                    .collect::<Result<_, SchemaError>>()?,
            ),
            "UNION" => Kind::Union,
            "INPUT_OBJECT" => Kind::Input(list_inputs(t.get("inputFields"))?),
            other => {
                return Err(SchemaError::Introspection(format!(
                    "type {name} has unknown kind {other:?}"
                )));
            }
        };
        out.types.insert(name, kind);
    }
    out.check()
}

fn str_at(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn list_inputs(v: Option<&Value>) -> Result<Vec<InputValue>, SchemaError> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| {
            Ok(InputValue {
                name: str_at(a, "name"),
                description: str_at(a, "description"),
                ty: type_ref(a.get("type"), 0)?,
                has_default: a.get("defaultValue").is_some_and(|d| !d.is_null()),
            })
        })
        .collect()
}

fn type_ref(v: Option<&Value>, depth: usize) -> Result<TypeRef, SchemaError> {
    let bad = |why: String| SchemaError::Introspection(why);
    if depth > MAX_NESTING {
        return Err(SchemaError::TooDeep);
    }
    let v = v.ok_or_else(|| bad("a field or argument has no type".into()))?;
    let inner = || type_ref(v.get("ofType"), depth + 1).map(Box::new);
    match str_at(v, "kind").as_str() {
        "NON_NULL" => Ok(TypeRef::NonNull(inner()?)),
        "LIST" => Ok(TypeRef::List(inner()?)),
        _ => match str_at(v, "name") {
            n if n.is_empty() => Err(bad(format!("a type reference has no name: {v}"))),
            n => Ok(TypeRef::Named(n)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SDL: &str = r#"
        "A book"
        type Book { id: ID! title: String author: Author }
        type Author { name: String! books(first: Int!): [Book!]! }
        enum Genre { FICTION HISTORY }
        input BookInput { title: String! genre: Genre = FICTION }
        type Query { book(id: ID!): Book books(genre: Genre): [Book!]! }
        type Mutation { addBook(input: BookInput!): Book! }
        extend type Query { count: Int! }
    "#;

    #[test]
    fn sdl_gives_roots_fields_and_extensions() {
        let s = from_sdl(SDL).unwrap();
        assert_eq!(s.query.as_deref(), Some("Query"));
        assert_eq!(s.mutation.as_deref(), Some("Mutation"));
        let query: Vec<&str> = s
            .fields("Query")
            .unwrap()
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(query, ["book", "books", "count"]);
        let add = &s.fields("Mutation").unwrap()[0];
        assert_eq!(add.args[0].ty.render(), "BookInput!");
        assert_eq!(add.ty.named(), "Book");
        let Some(Kind::Input(fields)) = s.types.get("BookInput") else {
            panic!("BookInput is an input object");
        };
        assert!(fields[0].is_required() && !fields[1].is_required());
    }

    #[test]
    fn explicit_schema_roots_win() {
        let s = from_sdl("schema { query: Root } type Root { ping: String }").unwrap();
        assert_eq!((s.query.as_deref(), s.mutation), (Some("Root"), None));
    }

    #[test]
    fn bad_sdl_is_refused_clearly() {
        assert!(matches!(from_sdl("type Query {"), Err(SchemaError::Sdl(_))));
        assert_eq!(from_sdl("scalar X"), Err(SchemaError::NoRoots));
        let deep = format!(
            "type Query {{ f: {}Int{} }}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert_eq!(from_sdl(&deep), Err(SchemaError::TooDeep));
        // Brackets inside descriptions and comments do not count.
        let quoted = format!(
            "\"{}\" type Query {{ f: Int }} # {}",
            "[".repeat(100),
            "(".repeat(100)
        );
        assert!(from_sdl(&quoted).is_ok());
    }

    #[test]
    fn introspection_answers_are_read() {
        let named = |kind: &str, name: &str| json!({"kind": kind, "name": name, "ofType": null});
        let answer = json!({"data": {"__schema": {
            "queryType": {"name": "Query"},
            "mutationType": null,
            "types": [
                {"kind": "OBJECT", "name": "Query", "fields": [
                    {"name": "tags", "description": "All tags", "args": [
                        {"name": "limit", "description": null, "type": named("SCALAR", "Int"), "defaultValue": "10"}
                    ], "type": {"kind": "NON_NULL", "name": null, "ofType":
                        {"kind": "LIST", "name": null, "ofType": named("SCALAR", "String")}}}
                ]},
                {"kind": "SCALAR", "name": "String"},
                {"kind": "ENUM", "name": "Color", "enumValues": [{"name": "RED"}]}
            ]
        }}});
        let s = from_introspection(&answer).unwrap();
        let tags = &s.fields("Query").unwrap()[0];
        assert_eq!(tags.ty.render(), "[String]!");
        assert!(tags.args[0].has_default && !tags.args[0].is_required());
        assert_eq!(s.types["Color"], Kind::Enum(vec!["RED".into()]));

        let refused = from_introspection(&json!({"errors": [{"message": "introspection is off"}]}))
            .unwrap_err();
        assert!(
            refused.to_string().contains("introspection is off"),
            "{refused}"
        );
        let mut deep = named("SCALAR", "Int");
        for _ in 0..100 {
            deep = json!({"kind": "LIST", "ofType": deep});
        }
        assert_eq!(type_ref(Some(&deep), 0), Err(SchemaError::TooDeep));
    }
}
