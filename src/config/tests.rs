use super::*;

fn secrets(name: &str) -> Option<Secret> {
    match name {
        "COOKIE_KEY" => Some(Secret::new(vec![1u8; 32])),
        "SHORT" => Some(Secret::new(vec![1u8; 8])),
        "CLIENT_SECRET" => Some(Secret::new(b"s3cret".to_vec())),
        _ => None,
    }
}

fn doc(tenant_extra: &str, provider_extra: &str) -> String {
    format!(
        r#"{{"gateway":{{"cookie_keys":[{{"id":"k1","secret":"COOKIE_KEY"}}]}},
        "tenants":[{{"id":"acme","name":"Acme","hosts":["acme.test"],"origin":"https://origin.acme.test"{tenant_extra},
          "providers":[{{"type":"oidc","name":"corp","label":"Corp SSO","issuer":"https://idp.test","client_id":"c","client_secret":"CLIENT_SECRET"{provider_extra}}}]}}]}}"#
    )
}

fn errors(d: &str) -> Vec<String> {
    match Config::load(d, &secrets) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn a_good_document_loads_with_defaults() {
    let l = Config::load(&doc("", ""), &secrets).unwrap();
    let t = &l.config.tenants[0];
    assert_eq!(l.config.gateway.prefix, "/_portcullis");
    assert_eq!(t.session.idle_timeout, 3600);
    assert_eq!(t.session.absolute_timeout, 28800);
    let o = t.providers[0].as_oidc().unwrap();
    assert_eq!(o.scopes, vec!["openid", "profile", "email"]);
    assert!(o.pkce);
    assert_eq!(o.clock_skew, 60);
    assert_eq!(l.secrets.get("CLIENT_SECRET").unwrap().expose(), b"s3cret");
    assert_eq!(l.encryption_keys[0].id, "k1");
}

#[test]
fn errors_name_the_field_path() {
    assert_eq!(
        errors(&doc("", "").replace("https://idp.test", "ftp://idp.test")),
        vec!["tenants[0].providers[0].issuer: not an https URL"]
    );
    assert_eq!(
        errors(&doc("", "").replace("CLIENT_SECRET", "MISSING")),
        vec!["tenants[0].providers[0].client_secret: Worker secret MISSING is not set"]
    );
    assert_eq!(
        errors(&doc("", "").replace("COOKIE_KEY", "SHORT")),
        vec!["gateway.cookie_keys[0].secret: Worker secret SHORT is shorter than 32 bytes"]
    );
    assert!(errors(&doc("", r#","trusted_audiences":["(unclosed"]"#))[0]
        .starts_with("tenants[0].providers[0].trusted_audiences[0]: invalid regex"));
    let unknown = errors(&doc(r#","bogus":1"#, ""));
    assert!(unknown[0].starts_with("tenants[0].bogus: unknown field `bogus`"), "{unknown:?}");
    let wrong_type = errors(&doc(r#","session":{"idle_timeout":"soon"}"#, ""));
    assert!(wrong_type[0].starts_with("tenants[0].session.idle_timeout: invalid type"), "{wrong_type:?}");
}

#[test]
fn several_errors_are_reported_at_once() {
    let d = doc(r#","session":{"idle_timeout":10}"#, r#","scopes":["profile"]"#).replace("acme.test", "");
    let e = errors(&d);
    assert!(e.contains(&"tenants[0].hosts[0]: must be a host name, optionally with :port".to_string()), "{e:?}");
    assert!(e.contains(&"tenants[0].session.idle_timeout: must be at least 60 seconds".to_string()));
    assert!(e.contains(&"tenants[0].providers[0].scopes: must include \"openid\"".to_string()));
}

fn saml_doc(connection_extra: &str) -> String {
    doc("", "").replace(
        r#"]}]}"#,
        &format!(
            r#",{{"type":"saml","name":"corp-saml","label":"Corp SAML","idp_metadata_url":"https://idp.test/metadata"{connection_extra}}}]}}]}}"#
        ),
    )
}

/// A connection that fetches its metadata still has every field it gives checked
/// (the metadata only fills what is left out).
#[test]
fn metadata_url_connections_are_validated_too() {
    assert_eq!(errors(&saml_doc("")), Vec::<String>::new());
    let e = errors(&saml_doc(
        r#","clock_skew":100000,"idp_certificates":["not a certificate"],"idp_sso_url":"http://idp.test/sso","idp_slo_url":"ftp://idp.test/slo""#,
    ));
    let p = "tenants[0].providers[1]";
    assert!(e.contains(&format!("{p}.clock_skew: must be at most 600 seconds")), "{e:?}");
    assert!(e.iter().any(|m| m.starts_with(&format!("{p}.idp_certificates[0]: not a usable certificate"))), "{e:?}");
    assert!(e.contains(&format!("{p}.idp_sso_url: not an https URL")), "{e:?}");
    assert!(e.contains(&format!("{p}.idp_slo_url: not an https URL")), "{e:?}");
    assert!(errors(&saml_doc(r#","idp_metadata_url":"http://idp.test/metadata""#))
        .iter()
        .any(|m| m.contains("idp_metadata_url")));
}

/// Durations far beyond any use are configuration errors, so no time arithmetic on
/// them (seconds to milliseconds, now plus a TTL) can overflow.
#[test]
fn huge_durations_are_refused() {
    let huge = u64::MAX;
    let e = errors(&doc(
        &format!(r#","mfa":{{"failure_window":{huge},"lockout":{huge},"step_up":[{{"path":"/a","max_age":{huge}}}]}}"#),
        &format!(r#","iat_window":{huge},"discovery_ttl":{huge},"jwks_ttl":{huge}"#),
    ));
    for field in ["mfa.failure_window", "mfa.lockout", "mfa.step_up[0].max_age"] {
        assert!(e.iter().any(|m| m.starts_with(&format!("tenants[0].{field}: must be at most"))), "{field}: {e:?}");
    }
    for field in ["iat_window", "discovery_ttl", "jwks_ttl"] {
        assert!(
            e.iter().any(|m| m.starts_with(&format!("tenants[0].providers[0].{field}: must be at most"))),
            "{field}: {e:?}"
        );
    }
    let e = errors(&saml_doc(&format!(r#","metadata_ttl":{huge},"clock_skew":{huge}"#)));
    assert!(e.iter().any(|m| m.starts_with("tenants[0].providers[1].metadata_ttl: must be at most")), "{e:?}");
    assert!(e.iter().any(|m| m.starts_with("tenants[0].providers[1].clock_skew: must be at most")), "{e:?}");
    let e = errors(&doc("", "").replace(r#""cookie_keys""#, &format!(r#""last_seen_interval":{huge},"cookie_keys""#)));
    assert!(e.iter().any(|m| m.starts_with("gateway.last_seen_interval: must be at most")), "{e:?}");
}

#[test]
fn second_factor_durations_are_bounded() {
    assert_eq!(
        errors(&doc(r#","mfa":{"fresh_sign_in":0}"#, "")),
        vec!["tenants[0].mfa.fresh_sign_in: must be between 30 and 3600 seconds: the time from a fresh IdP sign-in to adding a factor"]
    );
    assert_eq!(errors(&doc(r#","mfa":{"fresh_sign_in":30}"#, "")), Vec::<String>::new());
    assert_eq!(
        errors(&doc(r#","mfa":{"lockout":18446744073709551615}"#, "")),
        vec!["tenants[0].mfa.lockout: must be at most 86400 seconds"]
    );
}

#[test]
fn empty_document_is_explained() {
    assert_eq!(errors("  "), vec!["PORTCULLIS_CONFIG: is empty: set it to the configuration document (JSON)"]);
}

#[test]
fn tenants_are_selected_by_host() {
    let d = doc("", "").replace(r#""hosts":["acme.test"]"#, r#""hosts":["acme.test","127.0.0.1:8787"]"#);
    let l = Config::load(&d, &secrets).unwrap();
    assert!(l.config.tenant_for_host("acme.test").is_some());
    assert!(l.config.tenant_for_host("ACME.test:443").is_some());
    assert!(l.config.tenant_for_host("127.0.0.1:8787").is_some());
    assert!(l.config.tenant_for_host("127.0.0.1:9999").is_none());
    assert!(l.config.tenant_for_host("evil.test").is_none());
}

#[test]
fn header_presets() {
    let mut h = HeaderSettings::default();
    assert_eq!(h.names().email.as_deref(), Some("X-Portcullis-Email"));
    h.preset = HeaderPreset::Oauth2Proxy;
    assert_eq!(h.names().user.as_deref(), Some("X-Auth-Request-User"));
    assert_eq!(h.names().name, None);
    h.email = Some(String::new());
    assert_eq!(h.names().email, None);
}

/// Every way one field of a document can be wrong for the deserialiser: each value replaced
/// by one of another type, each object given an unknown member or missing one of its own.
fn broken_variants(v: &serde_json::Value) -> Vec<serde_json::Value> {
    use serde_json::{json, Value};
    fn walk(v: &Value, edit: &mut dyn FnMut(&Value) -> Vec<Value>, out: &mut Vec<Value>) {
        out.extend(edit(v));
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let mut inner = Vec::new();
                    walk(child, edit, &mut inner);
                    out.extend(inner.into_iter().map(|c| {
                        let mut m = m.clone();
                        m.insert(k.clone(), c);
                        Value::Object(m)
                    }));
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let mut inner = Vec::new();
                    walk(child, edit, &mut inner);
                    out.extend(inner.into_iter().map(|c| {
                        let mut a = a.clone();
                        a[i] = c;
                        Value::Array(a)
                    }));
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(
        v,
        &mut |v| {
            let mut variants = vec![json!(12345), json!("x"), json!(true), json!([1]), json!({"a": 1}), json!(null)];
            if let Value::Object(m) = v {
                let mut extra = m.clone();
                extra.insert("zz_unknown".into(), json!(1));
                variants.push(Value::Object(extra));
                for k in m.keys() {
                    let mut less = m.clone();
                    less.remove(k);
                    variants.push(Value::Object(less));
                }
            }
            if let Value::Array(a) = v {
                let mut more = a.clone();
                more.push(json!({"zz": 1}));
                variants.push(Value::Array(more));
            }
            variants
        },
        &mut out,
    );
    out
}

/// The Worker's error paths (found from the error's position, src/config/json_path.rs) are
/// the native checker's (tracked while deserialising), for every broken variant of full
/// documents, compact and pretty-printed, and for syntax errors.
#[test]
fn error_paths_match_the_tracked_ones() {
    let documents = [
        include_str!("../../config/example.json").to_owned(),
        include_str!("../../config/production.json").to_owned(),
        saml_doc(r#","sign_requests":true"#),
    ];
    let mut compared = 0;
    for document in &documents {
        let value: serde_json::Value = serde_json::from_str(document).unwrap();
        for broken in broken_variants(&value) {
            for text in [serde_json::to_string(&broken).unwrap(), serde_json::to_string_pretty(&broken).unwrap()] {
                let (Err(tracked), Err(located)) = (parse_tracked(&text), parse_located(&text)) else {
                    assert!(parse_tracked(&text).is_ok() && parse_located(&text).is_ok(), "{text}");
                    continue;
                };
                assert_eq!(tracked, located, "{text}");
                compared += 1;
            }
        }
    }
    assert!(compared > 1000, "{compared}");
    // Syntax errors and a duplicate key, where the document is not a serialised value.
    let d = doc("", "");
    for text in [
        d.replace(r#""hosts":["acme.test"]"#, r#""hosts":["acme.test",]"#),
        d.replace(r#""name":"Acme""#, r#""name":"Acme","name":"B""#),
        d.replace(r#""name":"Acme""#, r#""name":"Acme","na\u006de":"B""#),
        d.replace(r#""name":"Acme""#, r#""name":"Ac"#),
        d.replace(r#""label":"Corp SSO""#, r#""label":"Corp SSO""x":1"#),
        d.replace(r#"{"id":"k1""#, r#"{"id":"k1"}"#),
        d.replace(r#"{"id":"k1""#, r#"{"id":"k1",,"#),
        d.replace(r#""name":"Acme""#, r#""name" "Acme""#),
        d.replace(r#""name":"Acme""#, r#""name":tru"#),
        d.replace(r#""name":"Acme""#, r#""name":12x"#),
        d.replace(r#""name":"Acme""#, r#""name":"A\q""#),
        d.replace(r#""name":"Acme""#, r#""name":}"#),
        d.replace(r#"["acme.test"]"#, r#"["acme.test" "b"]"#),
        d.replace(r#"["acme.test"]"#, r#"[}"#),
        d.replace(r#""client_id":"c""#, r#""client_id":"#),
        d.replace(r#"{"id":"k1""#, r#"{1:"k1""#),
        d[..d.len() / 2].to_owned(),
        d[..d.len() / 3].to_owned(),
        d[..d.len() - 3].to_owned(),
        "[]".to_owned(),
        "{\"gateway\": 1".to_owned(),
    ] {
        assert!(parse_tracked(&text).is_err(), "{text}");
        assert_eq!(parse_tracked(&text).err(), parse_located(&text).err(), "{text}");
    }
}

/// A document cut at every byte, and with every byte replaced by each structural character:
/// the two ways of finding the path agree on every syntax error too (and never panic).
#[test]
fn error_paths_match_the_tracked_ones_on_cut_and_garbled_documents() {
    let d = saml_doc(r#","sign_requests":true"#);
    let mut compared = 0;
    let mut texts: Vec<String> = (0..d.len()).filter(|i| d.is_char_boundary(*i)).map(|i| d[..i].to_owned()).collect();
    for (i, _) in d.char_indices() {
        for c in ['{', '}', '[', ']', ',', ':', '"', '1', ' ', 'x', '\\'] {
            let mut t = d.clone();
            t.replace_range(i..i + 1, &c.to_string());
            texts.push(t);
        }
    }
    for text in texts {
        let (tracked, located) = (parse_tracked(&text).err(), parse_located(&text).err());
        assert_eq!(tracked, located, "{text}");
        compared += 1;
    }
    assert!(compared > 1000, "{compared}");
}
