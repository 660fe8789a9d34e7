//! `portcullis check`, the offline configuration checker, and where the Worker takes its
//! configuration from (a bundled file, or the PORTCULLIS_CONFIG variable as text or table).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use portcullis::config::{choose_document, VarValue};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn root(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("portcullis-checker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root("config/example.json")).unwrap()).unwrap()
}

#[test]
fn the_example_configuration_passes_and_its_secrets_are_listed() {
    let (code, out, err) = run(&["check", &root("config/example.json")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok (1 tenant, 1 provider)"), "{out}");
    let (code, names, _) = run(&["check", &root("config/example.json"), "--list-secrets"]);
    assert_eq!(code, 0);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["ASSERTION_KEY_A1", "COOKIE_KEY_C1", "COOKIE_KEY_C2", "ENCRYPTION_KEY_E1", "ENTRA_CLIENT_SECRET"]
    );
}

#[test]
fn every_error_is_printed_with_its_field_path_and_the_exit_status_is_1() {
    let mut doc = example();
    doc["gateway"]["prefix"] = json!("portcullis/");
    doc["tenants"][0]["origin"] = json!("not a url");
    doc["tenants"][0]["providers"][0]["issuer"] = json!("http://idp.example.com");
    let file = tmp("bad.json", &doc.to_string());
    let (code, out, err) = run(&["check", &file]);
    assert_eq!(code, 1, "{out}{err}");
    for want in [
        "error: gateway.prefix: must start with '/'",
        "error: tenants[0].origin: not a URL",
        "error: tenants[0].providers[0].issuer: not an https URL",
        ": 3 errors",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn a_syntax_error_or_unknown_field_names_where_it_is() {
    let mut doc = example();
    doc["tenants"][0]["sesion"] = json!({});
    let (code, _, err) = run(&["check", &tmp("unknown.json", &doc.to_string())]);
    assert_eq!(code, 1);
    assert!(err.contains("tenants[0].sesion: unknown field `sesion`"), "{err}");
    let (code, _, err) = run(&["check", &tmp("syntax.json", "{\"gateway\": {,}")]);
    assert_eq!(code, 1);
    assert!(err.contains("line 1 column"), "{err}");
}

#[test]
fn with_a_secrets_file_missing_or_short_secrets_are_errors() {
    let secrets = tmp(
        "secrets.env",
        "# the example's secrets, one too short and one missing\nCOOKIE_KEY_C1=short\nexport COOKIE_KEY_C2='0123456789abcdef0123456789abcdef'\nENCRYPTION_KEY_E1=\"0123456789abcdef0123456789abcdef\"\nENTRA_CLIENT_SECRET=x\n",
    );
    let (code, _, err) = run(&["check", &root("config/example.json"), "--secrets", &secrets]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("gateway.cookie_keys[1].secret: Worker secret COOKIE_KEY_C1 is shorter than 32 bytes"),
        "{err}"
    );
    assert!(err.contains("gateway.assertion_keys[0].secret: Worker secret ASSERTION_KEY_A1 is not set"), "{err}");
}

#[test]
fn a_toml_file_is_the_same_document() {
    let toml_text = r##"
[gateway]
issuer = "https://auth.example.com"
cookie_keys = [{ id = "c1", secret = "COOKIE_KEY_C1" }]

[[tenants]]
id = "acme"
name = "Acme"
hosts = ["app.acme.example"]
origin = "https://origin.acme.internal"

[[tenants.providers]]
type = "oidc"
name = "entra"
label = "Microsoft"
issuer = "https://login.microsoftonline.com/TENANT-ID/v2.0"
client_id = "00000000-0000-0000-0000-000000000000"
client_secret = "ENTRA_CLIENT_SECRET"
"##;
    let file = tmp("config.toml", toml_text);
    let out_mjs = tmp("config-from-toml.mjs", "");
    let (code, out, err) = run(&["check", &file, "--bundle", &out_mjs]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Worker secrets it names: COOKIE_KEY_C1, ENTRA_CLIENT_SECRET"), "{out}");
    let module = std::fs::read_to_string(&out_mjs).unwrap();
    let literal = module.lines().find_map(|l| l.strip_prefix("export default ")).unwrap().trim_end_matches(';');
    let json_text: String = serde_json::from_str(literal).unwrap();
    let doc: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(doc["tenants"][0]["providers"][0]["client_secret"], "ENTRA_CLIENT_SECRET");

    let (code, _, err) = run(&["check", &tmp("bad.toml", "[gateway\nissuer = 1")]);
    assert_eq!(code, 1);
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn a_refused_document_is_not_bundled() {
    let out_mjs = tmp("never.mjs", "untouched");
    let (code, _, _) = run(&["check", &tmp("empty.json", "{}"), "--bundle", &out_mjs]);
    assert_eq!(code, 1);
    assert_eq!(std::fs::read_to_string(&out_mjs).unwrap(), "untouched");
}

#[test]
fn a_configuration_far_above_the_5_kb_variable_limit_is_checked_and_bundled() {
    let mut doc = example();
    let tenant = doc["tenants"][0].clone();
    let mut tenants = Vec::new();
    for i in 0..40 {
        let mut t = tenant.clone();
        t["id"] = json!(format!("t{i}"));
        t["hosts"] = json!([format!("app{i}.acme.example")]);
        tenants.push(t);
    }
    doc["tenants"] = json!(tenants);
    let text = doc.to_string();
    assert!(text.len() > 40 * 1024, "{}", text.len());
    let out_mjs = tmp("big.mjs", "");
    let (code, out, err) = run(&["check", &tmp("big.json", &text), "--bundle", &out_mjs]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("40 tenants"), "{out}");
    assert!(std::fs::metadata(&out_mjs).unwrap().len() > 40 * 1024);
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&[]).0, 2);
    assert_eq!(run(&["check"]).0, 2);
    assert_eq!(run(&["check", "/nonexistent/config.json"]).0, 2);
}

#[test]
fn the_variable_may_be_a_table_under_vars() {
    let doc = json!({"gateway": {}, "tenants": []}).to_string();
    assert_eq!(choose_document(None, VarValue::Object(doc.clone())).unwrap(), doc);
    assert_eq!(choose_document(None, VarValue::Text(doc.clone())).unwrap(), doc);
}

#[test]
fn the_variable_of_another_type_or_missing_is_refused_with_a_sentence() {
    let e = choose_document(None, VarValue::Other("number".into())).unwrap_err().to_string();
    assert!(e.starts_with("PORTCULLIS_CONFIG: is a number"), "{e}");
    for var in [VarValue::Unset, VarValue::Text("  ".into())] {
        let e = choose_document(None, var).unwrap_err().to_string();
        assert!(e.contains("is not set and no configuration file is bundled"), "{e}");
        assert!(e.contains("scripts/build.sh --config"), "{e}");
    }
}

#[test]
fn a_bundled_file_is_used_and_a_variable_besides_it_is_refused() {
    assert_eq!(choose_document(Some("{\"a\":1}"), VarValue::Unset).unwrap(), "{\"a\":1}");
    assert_eq!(choose_document(Some("{\"a\":1}"), VarValue::Text(String::new())).unwrap(), "{\"a\":1}");
    for var in [VarValue::Text("{}".into()), VarValue::Object("{}".into())] {
        let e = choose_document(Some("{\"a\":1}"), var).unwrap_err().to_string();
        assert!(e.contains("also bundled"), "{e}");
    }
}

#[test]
fn the_documented_example_is_config_example_json() {
    let docs = std::fs::read_to_string(root("docs/configuration.md")).unwrap();
    let block = docs.split("```json\n").nth(1).unwrap().split("\n```").next().unwrap();
    let documented: Value = serde_json::from_str(block).unwrap();
    assert_eq!(documented, example(), "docs/configuration.md's example and config/example.json differ");
}

#[test]
fn policy_answers_whether_and_by_which_rule_for_a_host() {
    let dir = std::env::temp_dir().join(format!("portcullis-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.json");
    let doc = serde_json::json!({
        "gateway": {"cookie_keys": [{"id": "c1", "secret": "COOKIE_KEY"}]},
        "tenants": [{"id": "acme", "hosts": ["app.test"], "origin": "https://o.test",
            "groups": {"map": {"fin": ["finance"]}},
            "policy": [
                {"name": "embargo", "path": "/", "match": "prefix", "effect": "deny", "countries": ["KP"]},
                {"name": "finance-only", "path": "/finance", "match": "prefix", "allow_groups": ["finance"]}]}]
    });
    std::fs::write(&file, doc.to_string()).unwrap();
    let f = file.to_str().unwrap();
    let q = r#"{"path": "/finance/q1", "groups": ["fin"], "edge": {"country": "DE"}}"#;
    let (code, out, _) = run(&["policy", f, "--host", "app.test", q]);
    assert_eq!(code, 0, "{out}");
    let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((answer["allowed"].as_bool(), answer["name"].as_str()), (Some(true), Some("finance-only")));
    let q = r#"{"path": "/finance/q1", "groups": ["fin"], "edge": {"country": "KP"}}"#;
    let (code, out, _) = run(&["policy", f, "--host", "app.test", q]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(r#""name":"embargo""#), "{out}");
    let (code, _, err) = run(&["policy", f, "--host", "other.test", "{}"]);
    assert_eq!(code, 2);
    assert!(err.contains("no tenant serves host other.test"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
