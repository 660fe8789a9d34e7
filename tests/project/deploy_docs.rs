//! The deployment guide and wrangler.toml agree with the configuration files: every secret
//! the guide puts is one the example configuration names, and every one it names is put;
//! every environment's build bundles a file that passes the check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Names after `wrangler secret put` in a document, but the configuration variable itself
/// (small setups may put the whole document as a secret) and the placeholder `NAME`.
fn secrets_put(doc: &str) -> BTreeSet<String> {
    doc.split("wrangler secret put ")
        .skip(1)
        .map(|rest| rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap().to_owned())
        .filter(|n| n != portcullis::config::CONFIG_VAR && n != "NAME")
        .collect()
}

fn secrets_named(config_path: &str) -> BTreeSet<String> {
    portcullis::check::check(&read(config_path), None).secret_names.into_iter().collect()
}

#[test]
fn the_guide_puts_exactly_the_secrets_the_example_configuration_names() {
    let put = secrets_put(&read("docs/deploying.md"));
    let named = secrets_named("config/example.json");
    assert!(!named.is_empty());
    assert_eq!(put, named, "docs/deploying.md step 4 and config/example.json disagree");
}

#[test]
fn the_environment_files_name_the_same_secrets_as_the_example() {
    for f in ["config/staging.json", "config/production.json"] {
        assert_eq!(secrets_named(f), secrets_named("config/example.json"), "{f}");
    }
}

#[test]
fn the_readme_puts_no_secret_the_example_does_not_name() {
    let put = secrets_put(&read("README.md"));
    let named = secrets_named("config/example.json");
    assert!(put.is_subset(&named), "README puts {:?}, the example names {named:?}", put.difference(&named));
}

#[test]
fn every_environment_bundles_a_file_that_passes_the_check() {
    let wrangler = read("wrangler.toml");
    let files: Vec<&str> =
        wrangler.split("scripts/build.sh --config ").skip(1).map(|r| r.split('"').next().unwrap()).collect();
    assert_eq!(files, ["config/staging.json", "config/production.json"]);
    for f in files {
        let report = portcullis::check::check(&read(f), None);
        assert!(report.ok(), "{f}: {:?}", report.errors);
    }
    assert!(!wrangler.contains("[vars]"), "a [vars] PORTCULLIS_CONFIG clashes with the secret of that name");
}

/// Runs the guide's secret-generating commands (the part before `| npx wrangler secret put
/// NAME`) and checks the example configuration with what they print: the commands make
/// secrets the gateway accepts.
#[test]
fn the_guides_secret_commands_make_secrets_the_gateway_accepts() {
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: openssl is not installed");
        return;
    }
    let guide = read("docs/deploying.md");
    let mut values = std::collections::BTreeMap::new();
    for line in guide.lines().filter(|l| l.contains("| npx wrangler secret put ")) {
        let (command, rest) = line.split_once("| npx wrangler secret put ").unwrap();
        let name = rest.split_whitespace().next().unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", command])
            .env("CLIENT_SECRET", "the-client-secret")
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        values.insert(name.to_owned(), String::from_utf8(out.stdout).unwrap());
    }
    let report = portcullis::check::check(&read("config/example.json"), Some(&values));
    assert!(report.ok(), "{:?}", report.errors);
    assert!(report.secrets_checked);
}
