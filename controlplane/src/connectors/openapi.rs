//! OpenAPI 3 documents (JSON) → tools: one per operation, named by `operationId` (else
//! method and path), with the parameters and JSON body as one argument schema. Risk follows
//! the method: GET and HEAD read, DELETE is destructive, everything else writes.

use serde_json::{Map, Value, json};

use super::tools::{
    Catalog, HttpOperation, MAX_DESCRIPTION, ParamIn, Risk, Target, Tool, cut, tool_name,
};

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];
/// How deep local `$ref`s are inlined; deeper (or cyclic) ones are left as `{}`.
const MAX_REF_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenApiError {
    #[error("the OpenAPI document is not JSON: {0}")]
    NotJson(String),
    #[error("the OpenAPI document has no `paths` object")]
    NoPaths,
    #[error(
        "the OpenAPI document names no absolute server URL (`servers`) and the connector has no base URL"
    )]
    NoServer,
}

/// Builds the catalog. `base_url` (an `http` connector's) wins over the document's
/// `servers`; a relative server URL is resolved against `spec_url` when the document was
/// fetched from one.
pub fn catalog(
    text: &str,
    base_url: Option<&str>,
    spec_url: Option<&str>,
) -> Result<Catalog, OpenApiError> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| OpenApiError::NotJson(e.to_string()))?;
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .ok_or(OpenApiError::NoPaths)?;
    let base = match base_url {
        Some(b) => b.trim_end_matches('/').to_owned(),
        None => server_url(&doc, spec_url).ok_or(OpenApiError::NoServer)?,
    };
    let mut tools = Vec::new();
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        let shared = item.get("parameters").cloned().unwrap_or(Value::Null);
        for method in METHODS {
            if let Some(op) = item.get(*method).and_then(Value::as_object) {
                tools.push(operation(&doc, path, method, op, &shared));
            }
        }
    }
    Ok(Catalog::bounded(tools, base))
}

fn server_url(doc: &Value, spec_url: Option<&str>) -> Option<String> {
    let url = doc
        .get("servers")?
        .as_array()?
        .first()?
        .get("url")?
        .as_str()?;
    if url.starts_with("http://") || url.starts_with("https://") {
        return Some(url.trim_end_matches('/').to_owned());
    }
    let spec = reqwest::Url::parse(spec_url?).ok()?;
    Some(
        spec.join(url)
            .ok()?
            .as_str()
            .trim_end_matches('/')
            .to_owned(),
    )
}

fn operation(
    doc: &Value,
    path: &str,
    method: &str,
    op: &Map<String, Value>,
    shared: &Value,
) -> Tool {
    let name = match op.get("operationId").and_then(Value::as_str) {
        Some(id) if !tool_name(id).is_empty() => tool_name(id),
        _ => tool_name(&format!("{method} {path}")),
    };
    let description = ["summary", "description"]
        .iter()
        .filter_map(|k| op.get(*k).and_then(Value::as_str))
        .find(|s| !s.trim().is_empty())
        .map(|s| cut(s.trim(), MAX_DESCRIPTION))
        .unwrap_or_else(|| format!("{} {path}", method.to_ascii_uppercase()));
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut params = Vec::new();
    let own = op.get("parameters").cloned().unwrap_or(Value::Null);
    for p in [shared, &own]
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
    {
        let p = resolve(doc, p, 0);
        let (Some(pname), Some(location)) = (
            p.get("name").and_then(Value::as_str),
            p.get("in").and_then(Value::as_str),
        ) else {
            continue;
        };
        let location = match location {
            "path" => ParamIn::Path,
            "query" => ParamIn::Query,
            "header" => ParamIn::Header,
            _ => continue,
        };
        let mut schema = p.get("schema").cloned().unwrap_or_else(|| json!({}));
        if let (Some(obj), Some(d)) = (
            schema.as_object_mut(),
            p.get("description").and_then(Value::as_str),
        ) {
            obj.insert("description".into(), Value::String(cut(d, MAX_DESCRIPTION)));
        }
        if location == ParamIn::Path || p.get("required").and_then(Value::as_bool) == Some(true) {
            required.push(Value::String(pname.to_owned()));
        }
        params.retain(|(n, _): &(String, ParamIn)| n != pname);
        params.push((pname.to_owned(), location));
        properties.insert(pname.to_owned(), schema);
    }
    let body = op
        .get("requestBody")
        .map(|b| resolve(doc, b, 0))
        .and_then(|b| {
            let schema = b
                .get("content")?
                .get("application/json")?
                .get("schema")
                .cloned()
                .unwrap_or_else(|| json!({}));
            Some((
                schema,
                b.get("required").and_then(Value::as_bool) == Some(true),
            ))
        });
    if let Some((schema, needed)) = &body {
        properties.insert("body".into(), schema.clone());
        if *needed {
            required.push(Value::String("body".into()));
        }
    }
    let risk = match method {
        "get" | "head" => Risk::Read,
        "delete" => Risk::Destructive,
        _ => Risk::Write,
    };
    Tool {
        name,
        description,
        input_schema: json!({"type": "object", "properties": properties, "required": required}),
        risk,
        target: Target::Http(HttpOperation {
            method: method
                .to_ascii_uppercase()
                .parse()
                .unwrap_or(reqwest::Method::GET),
            path: path.to_owned(),
            params,
            body: body.is_some(),
        }),
    }
}

/// `v` with local `$ref`s (`#/components/...`) inlined, so the model sees whole schemas.
fn resolve(doc: &Value, v: &Value, depth: usize) -> Value {
    match v {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                if depth >= MAX_REF_DEPTH {
                    return json!({});
                }
                return r
                    .strip_prefix('#')
                    .and_then(|pointer| doc.pointer(pointer))
                    .map_or_else(|| json!({}), |target| resolve(doc, target, depth + 1));
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), resolve(doc, v, depth)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| resolve(doc, i, depth)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PETS: &str = r##"{
      "openapi": "3.0.0",
      "servers": [{"url": "/api"}],
      "paths": {
        "/pets/{id}": {
          "parameters": [{"name": "id", "in": "path", "schema": {"type": "string"}}],
          "get": {"operationId": "getPet", "summary": "One pet"},
          "delete": {"summary": "Remove a pet"}
        },
        "/pets": {
          "post": {"operationId": "addPet",
                   "parameters": [{"$ref": "#/components/parameters/Dry"}],
                   "requestBody": {"required": true, "content": {"application/json":
                       {"schema": {"$ref": "#/components/schemas/Pet"}}}}}
        }
      },
      "components": {
        "parameters": {"Dry": {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}}},
        "schemas": {"Pet": {"type": "object", "properties": {"name": {"type": "string"}}}}
      }
    }"##;

    #[test]
    fn one_tool_per_operation_with_risk_and_schema() {
        let c = catalog(PETS, None, Some("http://127.0.0.1:9/openapi.json")).unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:9/api");
        let names: Vec<_> = c.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["addPet", "getPet", "delete_pets_id"]);
        assert_eq!(c.tool("getPet").unwrap().risk, Risk::Read);
        assert_eq!(c.tool("delete_pets_id").unwrap().risk, Risk::Destructive);
        let add = c.tool("addPet").unwrap();
        assert_eq!(add.risk, Risk::Write);
        assert_eq!(
            add.input_schema["properties"]["body"]["properties"]["name"]["type"],
            "string"
        );
        assert_eq!(add.input_schema["required"], json!(["body"]));
        let Target::Http(op) = &add.target else {
            panic!()
        };
        assert_eq!(op.params, [("dry_run".to_string(), ParamIn::Query)]);
        assert!(op.body);
        assert_eq!(
            c.tool("getPet").unwrap().input_schema["required"],
            json!(["id"])
        );
    }

    #[test]
    fn bad_documents_are_named() {
        assert!(matches!(
            catalog("openapi: 3", None, None),
            Err(OpenApiError::NotJson(_))
        ));
        assert_eq!(catalog("{}", None, None), Err(OpenApiError::NoPaths));
        assert_eq!(
            catalog(r#"{"paths": {}}"#, None, None),
            Err(OpenApiError::NoServer)
        );
        let c = catalog(r#"{"paths": {}}"#, Some("http://h/"), None).unwrap();
        assert_eq!(c.base_url, "http://h");
    }
}
