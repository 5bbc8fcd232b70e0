//! GraphQL connectors: the schema (SDL from the repository or a URL, else the endpoint's
//! introspection) → one tool per root field, `read` for queries and `write` for mutations,
//! each with a prepared document; a call sends the document with its arguments as variables.
//!
//! - [`schema`]: SDL and introspection answers → one bounded schema model.
//! - [`document`]: a root field → its argument schema and document (the selection rule).
//! - [`call`]: the POST and its answer (`errors` → a tool error).

pub mod call;
mod document;
mod schema;

use std::time::Duration;

use serde_json::{Value, json};

use super::tools::{
    Catalog, GraphqlOperation, MAX_DESCRIPTION, Risk, Target, Tool, cut, tool_name,
};
use super::upstream::AppliedAuth;
pub use schema::from_sdl;

/// Asks `endpoint` for its schema with the standard introspection query.
pub async fn introspect(
    client: &reqwest::Client,
    endpoint: &str,
    auth: &AppliedAuth,
    timeout: Duration,
    cap: usize,
) -> Result<schema::Schema, String> {
    let answer = call::post(
        client,
        endpoint,
        schema::INTROSPECTION_QUERY,
        json!({}),
        auth,
        timeout,
        cap,
    )
    .await
    .map_err(|e| format!("introspecting {endpoint}: {e}"))?;
    if answer.truncated {
        return Err(format!(
            "introspecting {endpoint}: the schema is larger than {cap} bytes"
        ));
    }
    if let Some(errors) = answer.errors {
        return Err(format!("introspecting {endpoint}: {errors}"));
    }
    let text = format!("{{\"data\":{}}}", answer.text);
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("introspecting {endpoint}: the answer is not JSON: {e}"))?;
    schema::from_introspection(&value).map_err(|e| format!("introspecting {endpoint}: {e}"))
}

/// The tools of `schema`, sent to `endpoint`.
pub fn catalog(schema: &schema::Schema, endpoint: &str) -> Catalog {
    let mut tools = Vec::new();
    for (root, operation, risk) in [
        (&schema.query, "query", Risk::Read),
        (&schema.mutation, "mutation", Risk::Write),
    ] {
        let Some(fields) = root.as_deref().and_then(|r| schema.fields(r)) else {
            continue;
        };
        for field in fields.iter().filter(|f| !f.name.starts_with("__")) {
            let summary = if field.description.is_empty() {
                format!(
                    "GraphQL {operation} {}: returns {}",
                    field.name,
                    field.ty.render()
                )
            } else {
                field.description.clone()
            };
            tools.push(Tool {
                name: tool_name(&field.name),
                description: cut(&summary, MAX_DESCRIPTION),
                input_schema: document::arguments_schema(schema, field),
                risk,
                target: Target::Graphql(GraphqlOperation {
                    document: document::document(schema, operation, field),
                    variables: field.args.iter().map(|a| a.name.clone()).collect(),
                }),
            });
        }
    }
    Catalog::bounded(tools, endpoint.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_read_and_mutations_write() {
        let schema = from_sdl(
            r#"type Query { "One book" book(id: ID!): String  __hidden: Int }
               type Mutation { addBook(title: String!): String }"#,
        )
        .unwrap();
        let c = catalog(&schema, "http://h/graphql");
        let summary: Vec<(&str, Risk, &str)> = c
            .tools
            .iter()
            .map(|t| (t.name.as_str(), t.risk, t.description.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("book", Risk::Read, "One book"),
                (
                    "addBook",
                    Risk::Write,
                    "GraphQL mutation addBook: returns String"
                )
            ]
        );
        assert_eq!(c.base_url, "http://h/graphql");
        let Target::Graphql(op) = &c.tools[1].target else {
            panic!("a GraphQL target");
        };
        assert_eq!(op.variables, ["title"]);
    }
}
