//! A GraphQL call on the wire: the operation's document with the tool's arguments as
//! variables, POSTed as `{"query", "variables"}`, and the answer read back — `errors` become
//! a tool error the model can read, `data` the result.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::connectors::tools::{GraphqlOperation, cut};
use crate::connectors::upstream::{self, AppliedAuth, UpstreamError};

/// Most error messages quoted from one answer.
const MAX_ERRORS_SHOWN: usize = 5;

/// What a GraphQL endpoint answered.
#[derive(Debug)]
pub struct GraphqlAnswer {
    pub status: u16,
    /// `data` as JSON text, or the raw body when it could not be read as GraphQL.
    pub text: String,
    /// The `errors` messages, when there were any.
    pub errors: Option<String>,
    pub truncated: bool,
}

/// The variables of a call: the arguments the operation declares, and a clear error for
/// any other.
pub fn variables(op: &GraphqlOperation, args: &Value) -> Result<Value, UpstreamError> {
    let mut vars = Map::new();
    for (name, value) in args.as_object().into_iter().flatten() {
        if !op.variables.iter().any(|v| v == name) {
            return Err(UpstreamError::Arguments(format!(
                "unknown argument {name:?}; this tool takes {}",
                if op.variables.is_empty() {
                    "no arguments".to_owned()
                } else {
                    op.variables.join(", ")
                }
            )));
        }
        vars.insert(name.clone(), value.clone());
    }
    Ok(Value::Object(vars))
}

/// POSTs `query` with `variables` to `endpoint` within `timeout`, reading at most `cap` bytes.
pub async fn post(
    client: &reqwest::Client,
    endpoint: &str,
    query: &str,
    variables: Value,
    auth: &AppliedAuth,
    timeout: Duration,
    cap: usize,
) -> Result<GraphqlAnswer, UpstreamError> {
    let body = json!({"query": query, "variables": variables});
    let req = upstream::json_body(client.post(endpoint), &body).header(
        reqwest::header::ACCEPT,
        "application/graphql-response+json, application/json",
    );
    let answer = upstream::send(auth.apply(req), endpoint, timeout, cap).await?;
    if answer.truncated {
        // A cut answer is not JSON any more: pass what came, marked by the caller.
        return Ok(GraphqlAnswer {
            status: answer.status,
            text: answer.body,
            errors: None,
            truncated: true,
        });
    }
    let Ok(parsed) = serde_json::from_str::<Value>(&answer.body) else {
        return Ok(GraphqlAnswer {
            status: answer.status,
            errors: Some(format!(
                "the endpoint answered HTTP {} with a body that is not JSON: {}",
                answer.status,
                cut(&answer.body, 512)
            )),
            text: answer.body,
            truncated: false,
        });
    };
    let errors = parsed
        .get("errors")
        .filter(|e| e.as_array().is_some_and(|a| !a.is_empty()))
        .map(error_messages);
    let data = parsed.get("data").cloned().unwrap_or(Value::Null);
    Ok(GraphqlAnswer {
        status: answer.status,
        text: if data.is_null() {
            answer.body
        } else {
            data.to_string()
        },
        errors,
        truncated: false,
    })
}

/// The messages of a GraphQL `errors` list, with their paths: `book: not found; …`.
pub fn error_messages(errors: &Value) -> String {
    let Some(list) = errors.as_array() else {
        return cut(&errors.to_string(), 512);
    };
    let mut shown: Vec<String> = list
        .iter()
        .take(MAX_ERRORS_SHOWN)
        .map(|e| {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| e.to_string(), str::to_owned);
            let path: Vec<String> = e
                .get("path")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                .collect();
            let line = if path.is_empty() {
                message
            } else {
                format!("{}: {message}", path.join("."))
            };
            cut(&line, 512)
        })
        .collect();
    if list.len() > MAX_ERRORS_SHOWN {
        shown.push(format!("and {} more", list.len() - MAX_ERRORS_SHOWN));
    }
    shown.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_declared_arguments_are_variables() {
        let op = GraphqlOperation {
            document: "query book($id: ID!) { book(id: $id) { title } }".into(),
            variables: vec!["id".into()],
        };
        assert_eq!(variables(&op, &json!({"id": 7})).unwrap(), json!({"id": 7}));
        let err = variables(&op, &json!({"id": 7, "idd": 1})).unwrap_err();
        assert!(err.to_string().contains("\"idd\"") && err.to_string().contains("takes id"));
    }

    #[test]
    fn errors_read_with_their_paths_and_bounded() {
        let errors = json!([{"message": "no such book", "path": ["book", 0]}, {"message": "x"}]);
        assert_eq!(error_messages(&errors), "book.0: no such book; x");
        let many = Value::Array(vec![json!({"message": "m"}); 9]);
        assert!(error_messages(&many).ends_with("and 4 more"));
    }
}
