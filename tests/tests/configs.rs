//! Every shipped Envoy config passes `envoy --mode validate`, and a bad
//! plugin configuration stops Envoy with the field named.

use emr_e2e::{json, render, root, validate, validate_with_env, wasm_path};

fn dir() -> std::path::PathBuf {
    root().join("target/e2e/configs")
}

fn render_to_file(template: &str, config: &emr_e2e::Value, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join(template)).unwrap();
    let d = dir();
    let yaml = render(
        &text,
        config,
        &[
            ("WASM", wasm_path().display().to_string()),
            ("LISTEN_PORT", "10000".into()),
            ("ADMIN_PORT", "9901".into()),
            ("SIM_PORT", "9902".into()),
            ("TLS_CERT", d.join("cert.pem").display().to_string()),
            ("TLS_KEY", d.join("key.pem").display().to_string()),
            ("GENESYS_REGION", "mypurecloud.ie".into()),
        ],
    );
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn the_local_default_validates() {
    let config: emr_e2e::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("envoy/local.config.json")).unwrap(),
    )
    .unwrap();
    let path = render_to_file("envoy/local.yaml.tmpl", &config, "local.yaml");
    // The same demo credentials `make run` passes.
    validate_with_env(
        &path,
        &[
            ("EMR_GENESYS_CLIENT_ID", emr_sim::EMR_EDGE_CLIENT_ID),
            ("EMR_GENESYS_CLIENT_SECRET", emr_sim::EMR_EDGE_CLIENT_SECRET),
            ("EMR_PAGERDUTY_SECRET", "emr-demo-pagerduty-secret"),
        ],
    )
    .unwrap();
}

#[test]
fn a_bad_plugin_configuration_is_refused_naming_the_field() {
    let path = render_to_file(
        "envoy/local.yaml.tmpl",
        &json!({"intake": {"max_body_bytes": 1}}),
        "bad.yaml",
    );
    let err = validate(&path).unwrap_err();
    assert!(err.contains("intake.max_body_bytes"), "{err}");
}

fn json_file(path: &str) -> emr_e2e::Value {
    serde_json::from_str(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
}

#[test]
fn the_production_example_validates_with_its_secrets_from_the_environment() {
    std::fs::create_dir_all(dir()).unwrap();
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=emr-edge.test",
        ])
        .arg("-keyout")
        .arg(dir().join("key.pem"))
        .arg("-out")
        .arg(dir().join("cert.pem"))
        .output()
        .expect("openssl");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let config = json_file("envoy/production.config.json");
    let path = render_to_file(
        "envoy/production.example.yaml.tmpl",
        &config,
        "production.yaml",
    );
    let env = [
        ("EMR_GENESYS_CLIENT_ID", "client-id-from-genesys-admin"),
        (
            "EMR_GENESYS_CLIENT_SECRET",
            "client-secret-from-genesys-admin",
        ),
        ("EMR_CANONICAL_TOKEN", "canonical-token-0123456789"),
        ("EMR_PAGERDUTY_SECRET", "pagerduty-secret-0123456789"),
        ("EMR_STATUS_TOKEN", "status-token-0123456789"),
    ];
    validate_with_env(&path, &env).unwrap();
    // Without its secrets the production config refuses to start, naming the field.
    let err = validate(&path).unwrap_err();
    assert!(err.contains("sources.canonical"), "{err}");
    assert!(!err.contains("canonical-token-0123456789"));
    // One secret for two routes refuses to start too (issue 12, finding
    // 11): the canonical token reused as the /emr credential.
    let mut shared = env;
    shared[4] = ("EMR_STATUS_TOKEN", "canonical-token-0123456789");
    let err = validate_with_env(&path, &shared).unwrap_err();
    assert!(
        err.contains("status.auth") && err.contains("same secret as sources.canonical.auth[0]"),
        "{err}"
    );
    assert!(!err.contains("canonical-token-0123456789"), "{err}");
}

#[test]
fn the_production_example_has_nothing_insecure() {
    let config = json_file("envoy/production.config.json");
    assert!(!config.to_string().contains("insecure"), "{config}");
    assert!(config["status"]["auth"].is_object());
}
