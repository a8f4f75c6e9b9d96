//! Every shipped Envoy config passes `envoy --mode validate`, and a bad
//! plugin configuration stops Envoy with the field named.

mod common;

use emr_e2e::{
    json, production_config_as_shipped, render, root, validate, validate_with_env, wasm_path,
    PRODUCTION_PLACEHOLDERS,
};

fn dir() -> std::path::PathBuf {
    root().join("target/e2e/configs")
}

/// A throwaway certificate and key for the templates that terminate TLS,
/// made once per run: the tests run in parallel, and one must never read a
/// key another is still writing.
fn tls_files() -> (std::path::PathBuf, std::path::PathBuf) {
    static MADE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let d = dir();
    let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
    MADE.get_or_init(|| {
        // Made aside, then moved in: a reader never sees half a key.
        let tmp = d.join("tls.new");
        std::fs::create_dir_all(&tmp).unwrap();
        let (new_cert, new_key) = common::self_signed(&tmp);
        std::fs::rename(&new_key, &key).unwrap();
        std::fs::rename(&new_cert, &cert).unwrap();
    });
    (cert, key)
}

fn render_to_file(template: &str, config: &emr_e2e::Value, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join(template)).unwrap();
    let (cert, key) = tls_files();
    let yaml = render(
        &text,
        config,
        &[
            ("WASM", wasm_path().display().to_string()),
            ("LISTEN_PORT", "10000".into()),
            ("ADMIN_PORT", "9901".into()),
            ("SIM_PORT", "9902".into()),
            ("TLS_CERT", cert.display().to_string()),
            ("TLS_KEY", key.display().to_string()),
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

#[test]
fn the_production_example_validates_with_its_secrets_from_the_environment() {
    let config = emr_e2e::production_config();
    let path = render_to_file(
        "envoy/production.example.yaml.tmpl",
        &config,
        "production.yaml",
    );
    let env = PRODUCTION_ENV;
    validate_with_env(&path, &env).unwrap();
    // Without its secrets the production config refuses to start, naming the field.
    let err = validate(&path).unwrap_err();
    assert!(err.contains("sources.canonical"), "{err}");
    assert!(!err.contains("canonical-token-0123456789"));
    // One secret for two routes refuses to start too (RELIABILITY.md,
    // hostile senders, #11): the canonical token reused as the /emr credential.
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
fn the_production_example_with_the_etcd_cluster_validates_in_cluster_mode() {
    // The shipped etcd cluster, added under the production example's
    // clusters as docs/cluster.md says, with throwaway certificates.
    let dir = dir().join("etcd-prod");
    std::fs::create_dir_all(&dir).unwrap();
    let certs = emr_e2e::etcd::Certificates::make(&dir, "etcd.example.internal");
    let etcd: String = std::fs::read_to_string(root().join("envoy/etcd.production.example.yaml"))
        .unwrap()
        .replace("{{ETCD_SERVER_NAME}}", "etcd.example.internal")
        .replace("{{ETCD_CA}}", &certs.server.ca.display().to_string())
        .replace("{{ETCD_CLIENT_CERT}}", &certs.client_cert.display().to_string())
        .replace("{{ETCD_CLIENT_KEY}}", &certs.client_key.display().to_string())
        .replace(
            "{{ETCD_ENDPOINTS}}",
            "{ endpoint: { address: { socket_address: { address: etcd-0.etcd, port_value: 2379 } } } }",
        )
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("    {l}\n"))
        .collect();
    let prod = std::fs::read_to_string(root().join("envoy/production.example.yaml.tmpl")).unwrap();
    let template = prod.replacen("  clusters:\n", &format!("  clusters:\n{etcd}"), 1);
    let template_path = dir.join("production-cluster.yaml.tmpl");
    std::fs::write(&template_path, template).unwrap();
    let mut config = emr_e2e::production_config();
    emr_e2e::merge(
        &mut config,
        &emr_e2e::json!({"cluster": {"etcd_cluster": "etcd", "replica_id_env": "EMR_REPLICA_ID"}}),
    );
    let path = render_to_file(
        template_path.to_str().unwrap(),
        &config,
        "production-cluster.yaml",
    );
    let mut env = PRODUCTION_ENV.to_vec();
    env.push(("EMR_REPLICA_ID", "emr-edge-0"));
    validate_with_env(&path, &env).unwrap();
    // Without its replica id a replica refuses to start, naming the field.
    let err = validate_with_env(&path, &PRODUCTION_ENV).unwrap_err();
    assert!(err.contains("cluster.replica_id_env"), "{err}");
}

#[test]
fn the_production_example_has_nothing_insecure() {
    let config = production_config_as_shipped();
    assert!(!config.to_string().contains("insecure"), "{config}");
    assert!(config["status"]["auth"].is_object());
}

/// The secrets the production example reads, as a deployment passes them.
const PRODUCTION_ENV: [(&str, &str); 5] = [
    ("EMR_GENESYS_CLIENT_ID", "client-id-from-genesys-admin"),
    (
        "EMR_GENESYS_CLIENT_SECRET",
        "client-secret-from-genesys-admin",
    ),
    ("EMR_CANONICAL_TOKEN", "canonical-token-0123456789"),
    ("EMR_PAGERDUTY_SECRET", "pagerduty-secret-0123456789"),
    ("EMR_STATUS_TOKEN", "status-token-0123456789"),
];

/// The invalid-configuration lines of Envoy's output, in order.
fn refusals(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| {
            l.find("invalid emr-edge configuration")
                .map(|i| l[i..].to_owned())
        })
        .collect()
}

/// The production example as shipped still says `REPLACE-WITH-…` where a
/// deployment's own ids go: Envoy refuses to start, naming every one.
#[test]
fn the_production_example_as_shipped_is_refused_naming_each_placeholder() {
    let config = production_config_as_shipped();
    let path = render_to_file(
        "envoy/production.example.yaml.tmpl",
        &config,
        "production-as-shipped.yaml",
    );
    let err = validate_with_env(&path, &PRODUCTION_ENV).unwrap_err();
    let lines = refusals(&err);
    // Each problem is told by the service and by the filter: the same lines.
    let n = PRODUCTION_PLACEHOLDERS.len();
    let first: Vec<&String> = lines.iter().take(n).collect();
    for (field, placeholder) in [
        ("genesys.datatable.id", "REPLACE-WITH-DATATABLE-ID"),
        ("genesys.default_group", "REPLACE-WITH-EMERGENCY-GROUP-ID"),
        (
            "sources.pagerduty.rules[0].queues[0]",
            "REPLACE-WITH-QUEUE-ID",
        ),
    ] {
        assert!(
            first.iter().any(|l| l.contains(&format!(
                "`{field}` is still a placeholder (\"{placeholder}\"): put the real value here"
            ))),
            "{field} not named:\n{err}"
        );
    }
    assert!(
        first[0].starts_with(&format!("invalid emr-edge configuration (1 of {n}): ")),
        "{err}"
    );
    assert!(!err.contains("more problem"), "{err}");
}

/// Several problems at once: every one is on its own line, naming its
/// field, instead of the first and "(and N more problem(s))".
#[test]
fn every_problem_of_a_config_is_named_at_start() {
    let path = render_to_file(
        "envoy/local.yaml.tmpl",
        &json!({
            "intake": {"max_body_bytes": 1},
            "sources": {"canonical": {"insecure": true},
                        "pagerduty": {"insecure": true, "rules": [{"group": "Voice Outage"}]}},
            "genesys": {"login_host": "login.sim.local", "api_host": "api.sim.local",
                        "client_id_env": "EMR_GENESYS_CLIENT_ID",
                        "client_secret_env": "EMR_NOT_LISTED",
                        "default_group": ""}
        }),
        "several.yaml",
    );
    let err =
        validate_with_env(&path, &[("EMR_GENESYS_CLIENT_ID", "emr-edge-client")]).unwrap_err();
    let lines = refusals(&err);
    let expected = [
        "invalid emr-edge configuration (1 of 4): `intake.max_body_bytes` must be between 1024 and 512000, got 1",
        "invalid emr-edge configuration (2 of 4): `sources.pagerduty.rules[0].group` \"Voice Outage\" is not an emergency group id (it holds a space, as a name does); give the emergency group's id, not its name",
        "invalid emr-edge configuration (3 of 4): `genesys.client_secret_env` environment variable EMR_NOT_LISTED is not set: set it in Envoy's environment and list it under vm_config.environment_variables.host_env_keys",
        "invalid emr-edge configuration (4 of 4): `genesys.default_group` \"\" is not an emergency group id (it is empty)",
    ];
    assert!(lines.len() >= expected.len(), "{err}");
    for (line, want) in lines.iter().zip(expected) {
        assert!(line.starts_with(want), "{line}\nwanted: {want}\n{err}");
    }
    assert!(!err.contains("more problem"), "{err}");
}

/// A secret still set to a placeholder is refused by the field that names
/// its variable, without showing the value.
#[test]
fn a_secret_still_a_placeholder_is_refused_at_start() {
    let config = emr_e2e::production_config();
    let path = render_to_file(
        "envoy/production.example.yaml.tmpl",
        &config,
        "production-placeholder-secret.yaml",
    );
    let mut env = PRODUCTION_ENV;
    env[1] = (
        "EMR_GENESYS_CLIENT_SECRET",
        "REPLACE-WITH-YOUR-CLIENT-SECRET",
    );
    let err = validate_with_env(&path, &env).unwrap_err();
    let lines = refusals(&err);
    assert!(
        lines.first().is_some_and(|l| l
            == "invalid emr-edge configuration: `genesys.client_secret_env` environment variable \
                EMR_GENESYS_CLIENT_SECRET still holds a placeholder (REPLACE-WITH…): set it to the real value"),
        "{err}"
    );
    assert!(!err.contains("YOUR-CLIENT-SECRET"), "{err}");
}

/// Runs `scripts/render.py` as a user does; its output, or its error.
fn render_py(template: &std::path::Path, config: &std::path::Path) -> Result<String, String> {
    let (cert, key) = tls_files();
    let out = std::process::Command::new("python3")
        .arg(root().join("scripts/render.py"))
        .arg(template)
        .arg(config)
        .arg(format!("WASM={}", wasm_path().display()))
        .args(["LISTEN_PORT=10000", "ADMIN_PORT=9901", "SIM_PORT=9902"])
        .arg(format!("TLS_CERT={}", cert.display()))
        .arg(format!("TLS_KEY={}", key.display()))
        .arg("GENESYS_REGION=mypurecloud.ie")
        .output()
        .expect("python3");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every `max_request_bytes` of a rendered config.
fn buffer_limits(yaml: &str) -> Vec<u64> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix("max_request_bytes:"))
        .map(|v| v.trim().parse().unwrap())
        .collect()
}

/// The buffer filter's limit and `intake.max_body_bytes` cannot disagree in
/// a config rendered from the shipped templates: render.py writes the one
/// from the other, for the shipped configs, for a changed limit, and for a
/// config that gives none (the default render.py assumes is emr-core's).
#[test]
fn the_buffer_limit_is_rendered_from_intake_max_body_bytes() {
    let d = dir();
    std::fs::create_dir_all(&d).unwrap();
    for (template, config) in [
        ("envoy/local.yaml.tmpl", "envoy/local.config.json"),
        (
            "envoy/production.example.yaml.tmpl",
            "envoy/production.config.json",
        ),
    ] {
        let text = std::fs::read_to_string(root().join(template)).unwrap();
        assert!(
            text.contains("max_request_bytes: {{MAX_BODY_BYTES}}"),
            "{template} writes its buffer limit by hand"
        );
        let shipped: emr_e2e::Value =
            serde_json::from_str(&std::fs::read_to_string(root().join(config)).unwrap()).unwrap();
        let yaml = render_py(&root().join(template), &root().join(config)).unwrap();
        assert_eq!(
            buffer_limits(&yaml),
            [shipped["intake"]["max_body_bytes"].as_u64().unwrap()],
            "{template}"
        );
        for (intake, limit) in [
            (json!({"max_body_bytes": 131_072}), 131_072),
            (
                json!({}),
                u64::from(emr_core::config::DEFAULT_MAX_BODY_BYTES),
            ),
        ] {
            let mut changed = shipped.clone();
            changed["intake"] = intake;
            let path = d.join("render-py.json");
            std::fs::write(&path, changed.to_string()).unwrap();
            let yaml = render_py(&root().join(template), &path).unwrap();
            assert_eq!(buffer_limits(&yaml), [limit], "{template}");
        }
    }
}

/// A template that writes a lower limit by hand is refused by render.py,
/// saying which line and why.
#[test]
fn render_py_refuses_a_buffer_limit_lower_than_the_intakes() {
    let d = dir();
    std::fs::create_dir_all(&d).unwrap();
    let text = std::fs::read_to_string(root().join("envoy/local.yaml.tmpl"))
        .unwrap()
        .replace("{{MAX_BODY_BYTES}}", "65536");
    let template = d.join("hand-written.yaml.tmpl");
    std::fs::write(&template, text).unwrap();
    let config = d.join("bigger-body.json");
    std::fs::write(
        &config,
        json!({"intake": {"max_body_bytes": 131_072}}).to_string(),
    )
    .unwrap();
    let err = render_py(&template, &config).unwrap_err();
    assert!(
        err.contains("the buffer filter's max_request_bytes (65536) is lower than intake.max_body_bytes (131072)"),
        "{err}"
    );
    // Equal, or higher, is fine: the intake refuses what is over its own.
    std::fs::write(
        &config,
        json!({"intake": {"max_body_bytes": 65_536}}).to_string(),
    )
    .unwrap();
    render_py(&template, &config).unwrap();
}

/// End to end: with a larger intake limit, a body over the old 64 KiB
/// reaches the filter and is accepted, instead of Envoy's own 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_intake_limit_is_the_buffer_filters_too() {
    let options = emr_e2e::EnvoyOptions {
        config: json!({
            "intake": {"max_body_bytes": 131_072},
            "sources": {"canonical": {"insecure": true}},
            "status": {"insecure": true}
        }),
        log_level: "warn",
        ..emr_e2e::EnvoyOptions::default()
    };
    let envoy = tokio::task::spawn_blocking(move || emr_e2e::Envoy::start(options))
        .await
        .unwrap();
    let mut body = emr_e2e::incident("INC-BIG-BODY", "EMERGENCY_ACTIVE", &["q1"]).to_string();
    body.push_str(&" ".repeat(100_000));
    let c = emr_e2e::reqwest::Client::new();
    let r = c
        .post(envoy.url("/webhooks/canonical"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    // Over the intake's own limit: the filter's 413, as problem+json.
    let r = c
        .post(envoy.url("/webhooks/canonical"))
        .header("content-type", "application/json")
        .body(" ".repeat(140_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}
