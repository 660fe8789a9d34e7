//! docs/config.schema.json, the published JSON Schema of the configuration, describes what
//! the loader reads: the configuration files validate against it, every property it lists
//! is one the loader knows, and every field the loader knows is in it (so a new field that
//! is not added to the schema fails here).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use serde_json::{json, Value};

fn read_json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()).unwrap()
}

fn schema() -> Value {
    read_json("docs/config.schema.json")
}

fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(root, &root["$defs"][r.strip_prefix("#/$defs/").unwrap()]),
        None => s,
    }
}

/// A small validator for the keywords the schema uses; pushes "path: problem" lines.
fn validate(root: &Value, s: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    let s = resolve(root, s);
    if let Some(options) = s.get("oneOf").and_then(Value::as_array) {
        let ok = options
            .iter()
            .filter(|o| {
                let mut e = Vec::new();
                validate(root, o, v, path, &mut e);
                e.is_empty()
            })
            .count();
        if ok != 1 {
            out.push(format!("{path}: matches {ok} of oneOf"));
        }
        return;
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().map(|x| x.as_str().unwrap()).collect(),
            _ => panic!("type"),
        };
        let actual = match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !types.contains(&actual) {
            out.push(format!("{path}: {actual}, expected {types:?}"));
            return;
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            out.push(format!("{path}: {v} not in {e:?}"));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            out.push(format!("{path}: {v} is not {c}"));
        }
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_i64), v.as_i64()) {
        if n < min {
            out.push(format!("{path}: below {min}"));
        }
    }
    if let (Some(p), Some(text)) = (s.get("pattern").and_then(Value::as_str), v.as_str()) {
        if !regex_lite::Regex::new(p).unwrap().is_match(text) {
            out.push(format!("{path}: {text:?} does not match {p}"));
        }
    }
    if let Value::Array(items) = v {
        if let Some(item) = s.get("items") {
            for (i, x) in items.iter().enumerate() {
                validate(root, item, x, &format!("{path}[{i}]"), out);
            }
        }
    }
    if let Value::Object(m) = v {
        for r in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !m.contains_key(r.as_str().unwrap()) {
                out.push(format!("{path}: {r} is required"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, x) in m {
            let sub = format!("{path}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(root, ps, x, &sub, out),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => out.push(format!("{sub}: not in the schema")),
                    Some(extra @ Value::Object(_)) => validate(root, extra, x, &sub, out),
                    _ => {}
                },
            }
        }
    }
}

fn errors(doc: &Value) -> Vec<String> {
    let root = schema();
    let mut out = Vec::new();
    validate(&root, &root, doc, "", &mut out);
    out
}

/// config/example.json with every optional object present: an audit webhook, the sign-in
/// rate limit, a step-up
/// rule and a SAML connection.
fn full_document() -> Value {
    let mut doc = read_json("config/example.json");
    doc["gateway"]["audit_webhook"] = json!({"url": "https://siem.example.com/hook", "token": "SIEM_TOKEN"});
    doc["gateway"]["login_rate_limit"] = json!({"burst": 60, "per_minute": 60});
    doc["tenants"][0]["mfa"] =
        json!({"required": true, "step_up": [{"path": "/admin", "match": "prefix", "max_age": 300}]});
    doc["tenants"][0]["providers"][0]["claims"] = json!({"user": "oid"});
    doc["tenants"][0]["providers"].as_array_mut().unwrap().push(json!({
        "type": "saml", "name": "corp-saml", "label": "Corp SAML",
        "idp_entity_id": "https://idp.example.com/metadata", "idp_sso_url": "https://idp.example.com/sso",
        "idp_certificates": [], "attributes": {"email": "mail"},
    }));
    doc
}

#[test]
fn the_configuration_files_validate() {
    for f in ["config/example.json", "config/staging.json", "config/production.json"] {
        assert_eq!(errors(&read_json(f)), Vec::<String>::new(), "{f}");
    }
    assert_eq!(errors(&full_document()), Vec::<String>::new());
}

#[test]
fn the_schema_refuses_what_the_loader_refuses() {
    let mut doc = full_document();
    doc["tenants"][0]["sesion"] = json!({});
    doc["gateway"]["coordination"] = json!("raft");
    doc["tenants"][0]["providers"][0]["client_secret"] = json!("not a name!");
    let e = errors(&doc);
    assert!(e.iter().any(|l| l.starts_with(".tenants[0].sesion: not in the schema")), "{e:?}");
    assert!(e.iter().any(|l| l.starts_with(".gateway.coordination:")), "{e:?}");
    assert!(e.iter().any(|l| l.starts_with(".tenants[0].providers[0]: matches 0 of oneOf")), "{e:?}");
}

/// (where in the document, the schema of that object)
fn locations(root: &Value) -> Vec<(&'static str, Value)> {
    let d = |name: &str| root["$defs"][name].clone();
    vec![
        ("", root.clone()),
        ("/gateway", d("gateway")),
        ("/gateway/login_rate_limit", d("gateway")["properties"]["login_rate_limit"].clone()),
        ("/gateway/audit_webhook", d("gateway")["properties"]["audit_webhook"].clone()),
        ("/gateway/cookie_keys/0", d("keyRef")),
        ("/tenants/0", d("tenant")),
        ("/tenants/0/session", d("session")),
        ("/tenants/0/headers", d("headers")),
        ("/tenants/0/groups", d("groups")),
        ("/tenants/0/mfa", d("mfa")),
        ("/tenants/0/mfa/step_up/0", d("stepUpRule")),
        ("/tenants/0/public_paths/0", d("pathRule")),
        ("/tenants/0/policy/0", d("accessRule")),
        ("/tenants/0/providers/0", d("oidcProvider")),
        ("/tenants/0/providers/0/claims", d("oidcProvider")["properties"]["claims"].clone()),
        ("/tenants/0/providers/1", d("samlConnection")),
        ("/tenants/0/providers/1/attributes", d("samlConnection")["properties"]["attributes"].clone()),
    ]
}

fn unknown_field_error(doc: &Value) -> Option<String> {
    let e = portcullis::config::Config::load(&doc.to_string(), &|_| None).err()?;
    e.0.into_iter().map(|e| e.message).find(|m| m.contains("unknown field"))
}

#[test]
fn every_property_in_the_schema_is_one_the_loader_reads() {
    let root = schema();
    for (at, s) in locations(&root) {
        let s = resolve(&root, &s).clone();
        for (name, ps) in s["properties"].as_object().unwrap() {
            let ps = resolve(&root, ps);
            let sample = match ps.get("type").and_then(Value::as_str) {
                Some("boolean") => json!(false),
                Some("integer") => json!(60),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => ps
                    .get("enum")
                    .and_then(|e| e[0].as_str())
                    .or(ps.get("const").and_then(Value::as_str))
                    .map_or(json!("X_Y"), |v| json!(v)),
            };
            let mut doc = full_document();
            if doc.pointer(at).unwrap().get(name).is_none() {
                doc.pointer_mut(at).unwrap()[name] = sample;
            }
            assert_eq!(unknown_field_error(&doc), None, "{at}/{name} is in the schema but the loader does not know it");
        }
    }
}

#[test]
fn every_field_the_loader_reads_is_in_the_schema() {
    let root = schema();
    for (at, s) in locations(&root) {
        let mut doc = full_document();
        doc.pointer_mut(at).unwrap()["zz_unknown"] = json!(1);
        let Some(message) = unknown_field_error(&doc) else { panic!("{at}: an unknown field was accepted") };
        // "unknown field `zz_unknown`, expected one of `a`, `b`" (a flattened struct, as the
        // providers are, does not list them: only the other direction is checked there).
        let Some(list) = message.split("expected ").nth(1) else { continue };
        let fields: BTreeSet<String> =
            list.split('`').skip(1).step_by(2).map(str::to_owned).filter(|f| !f.contains(' ')).collect();
        let listed: BTreeSet<String> = resolve(&root, &s)["properties"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(fields, listed, "{at}: the loader's fields and the schema's properties differ");
    }
}
