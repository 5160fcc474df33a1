//! The admin API's OpenAPI document (`broker/src/admin/openapi.json`) against the live server: every
//! documented operation, sent with its parameters' examples, answers the status the document
//! expects with the full token (`x-example-status`) and with the read-only one
//! (`x-read-token-status`: 403 wherever its `security` names the role `full`), with a body that
//! validates against that response's schema. The schemas forbid unknown fields, so a field added to
//! the code and not to the document fails here.

use std::net::SocketAddr;

use bytes::Bytes;
use serde_json::{json, Value};
use switchboard_broker::admin::OPENAPI;

use crate::admin::request;
use crate::support::*;

const TOKEN: &str = "open-api-token";
const READ_TOKEN: &str = "open-api-read-token";

/// A validator for `schema`, resolving `#/components/...` against the whole document.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut rooted = schema.clone();
    if let Value::Object(map) = &mut rooted {
        map.insert("components".into(), doc["components"].clone());
    }
    jsonschema::draft202012::new(&rooted)
        .unwrap_or_else(|e| panic!("an invalid schema {schema}: {e}"))
}

/// The request an operation's examples make: the path with its parameters filled in, and the query.
fn example_request(path: &str, op: &Value) -> String {
    let mut url = path.to_owned();
    let mut query = Vec::new();
    for param in op["parameters"].as_array().into_iter().flatten() {
        let name = param["name"].as_str().expect("a parameter name");
        let example = match &param["example"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match param["in"].as_str() {
            Some("path") => url = url.replace(&format!("{{{name}}}"), &example),
            Some("query") => query.push(format!("{name}={example}")),
            other => panic!("{path}: a parameter in {other:?}"),
        }
    }
    if !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    url
}

/// The role an operation's `security` names (`read` or `full`).
fn role(op: &Value) -> &str {
    op["security"][0]["bearer"][0]
        .as_str()
        .expect("every operation names its role")
}

/// One operation as sent with `token`, and the extension naming the status the document expects.
struct Ask<'a> {
    path: &'a str,
    method: &'a str,
    op: &'a Value,
    token: &'a str,
    expects: &'a str,
}

/// Checks one operation against the server; returns what went wrong, if anything.
async fn check(admin: SocketAddr, doc: &Value, ask: Ask<'_>) -> Option<String> {
    let Ask {
        path,
        method,
        op,
        token,
        expects,
    } = ask;
    let expected = op[expects].as_u64().expect(expects);
    let url = example_request(path, op);
    let what = format!("{} {url} ({expects})", method.to_uppercase());
    let (status, body) = request(admin, &method.to_uppercase(), &url, Some(token)).await;
    if u64::from(status) != expected {
        return Some(format!(
            "{what}: {status}, the document expects {expected}: {body}"
        ));
    }
    let content = &op["responses"][status.to_string()]["content"];
    let Some(schema) = content.get("application/json").map(|c| &c["schema"]) else {
        return None; // text/plain
    };
    let value: Value = match serde_json::from_str(&body) {
        Ok(value) => value,
        Err(e) => return Some(format!("{what}: not JSON ({e}): {body}")),
    };
    let errors: Vec<String> = validator(doc, schema)
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    (!errors.is_empty()).then(|| {
        format!(
            "{what}: {value}\ndoes not match its schema: {}",
            errors.join("; ")
        )
    })
}

/// With traffic in the broker (alice online, messages waiting for bob, carol online to be kicked),
/// every operation of the document answers as documented, and the server serves the document.
#[tokio::test]
async fn the_live_server_answers_as_its_openapi_document_says() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let fx = Fixture::with(|s| {
        s.admin.token = TOKEN.into();
        s.admin.read_token = READ_TOKEN.into();
    })
    .await;
    let admin = fx.broker.admin.expect("admin on");
    let (alice, _alice_events) = fx.connect("alice").await;
    for i in 0..3 {
        within("send", alice.send("bob", Bytes::from(format!("hello {i}"))))
            .await
            .expect("accepted");
    }
    let (_carol, _carol_events) = fx.connect("carol").await;

    let mut failures = Vec::new();
    let mut checked = 0;
    let paths = doc["paths"].as_object().expect("paths");
    // The read-only token first: it changes nothing, so the full token's examples find the broker
    // as they expect.
    for (token, expects) in [
        (READ_TOKEN, "x-read-token-status"),
        (TOKEN, "x-example-status"),
    ] {
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("a path item") {
                if token == READ_TOKEN {
                    checked += 1;
                    if role(op) == "full" && op[expects] != 403 {
                        failures.push(format!(
                            "{method} {path}: role full, but {expects} is not 403"
                        ));
                    }
                }
                let ask = Ask {
                    path,
                    method,
                    op,
                    token,
                    expects,
                };
                failures.extend(check(admin, &doc, ask).await);
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
    assert_eq!(
        checked, 8,
        "every operation of the API is documented and checked"
    );

    let (status, served) = request(admin, "GET", "/api/v1/openapi.json", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&served).expect("JSON"), doc);
    // A body that breaks a schema is caught: the validator is not a formality.
    let status_schema = validator(&doc, &json!({"$ref": "#/components/schemas/Status"}));
    assert!(!status_schema.is_valid(&json!({"version": "1", "surprise": true})));
}
