//! Every shipped Envoy config passes `envoy --mode validate`, and a bad
//! plugin configuration stops Envoy with the field named.

use emr_e2e::{json, render, root, validate, wasm_path};

fn render_to_file(template: &str, config: &emr_e2e::Value, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join(template)).unwrap();
    let yaml = render(
        &text,
        config,
        &[
            ("WASM", wasm_path().display().to_string()),
            ("LISTEN_PORT", "10000".into()),
            ("ADMIN_PORT", "9901".into()),
            ("SIM_PORT", "9902".into()),
        ],
    );
    let dir = root().join("target/e2e/configs");
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
    validate(&path).unwrap();
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
