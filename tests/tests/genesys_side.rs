//! The Genesys side as code (`genesys/`), held to what Genesys takes and to
//! what emr-edge does: the routing table's schema and the rows the driver
//! writes, the data-action exports (and each one executed against a real
//! Envoy and the simulator), the Terraform module, and the Archy flow.
//!
//! The standards are checked with well-kept libraries, never hand-written
//! ones: `jsonschema` (draft-04, what Genesys uses for table schemas and
//! data-action contracts), `serde_json_path` (the translationMap's JSONPath),
//! `hcl-rs` (Terraform) and `serde_yaml` (Archy).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use emr_core::genesys::models::{queue_column, QueueRow, MAX_COLUMN_CHARS, QUEUE_COLUMNS};
use emr_e2e::{
    eventually, incident, json, root, Stack, Value, STATUS_BASIC_PASSWORD, STATUS_BASIC_USER,
};
use emr_sim::{SimConfig, CARRIER_OUTAGE_GROUP_ID as CARRIER, DEFAULT_GROUP_ID as DEFAULT};
use hcl::{Block, Body, Expression};
use serde_json_path::JsonPath;

const SOON: Duration = Duration::from_secs(10);
/// The host every exported data action names, replaced on import (by hand
/// or by Terraform) with emr-edge's public URL.
const PLACEHOLDER_HOST: &str = "https://emr-edge.example";
const SCALARS: [&str; 4] = ["string", "integer", "number", "boolean"];

fn genesys(path: &str) -> PathBuf {
    root().join("genesys").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path, ext));
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn table_schema() -> Value {
    read_json(&genesys("datatable.schema.json"))
}

/// A draft-04 validator of `schema`, which must itself be valid draft-04.
fn draft4(schema: &Value, what: &str) -> jsonschema::Validator {
    if let Err(e) = jsonschema::draft4::meta::validate(schema) {
        panic!("{what} is not a valid draft-04 schema: {e}");
    }
    jsonschema::draft4::new(schema).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:?}\n{instance}");
}

fn data_actions() -> Vec<(String, Value)> {
    files(&genesys("data-actions"), "json")
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, read_json(&p))
        })
        .collect()
}

fn action(file: &str) -> Value {
    read_json(&genesys(&format!("data-actions/{file}")))
}

// --- JSON artifacts and the routing table ---------------------------------

#[test]
fn every_json_artifact_parses() {
    let all = files(&genesys(""), "json");
    assert!(all.len() >= 4, "{all:?}");
    for path in all {
        read_json(&path);
    }
}

#[test]
fn the_routing_schema_is_a_genesys_table_schema_with_the_driver_s_columns() {
    let schema = table_schema();
    draft4(&schema, "datatable.schema.json");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-04/schema#");
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], json!(["key"]));
    let props = schema["properties"].as_object().unwrap();
    assert!(props.len() <= 50, "Genesys allows 50 fields a table");
    for (name, p) in props {
        assert!(
            SCALARS.contains(&p["type"].as_str().unwrap_or("")),
            "{name}: {p}"
        );
    }
    let mut wanted: BTreeSet<String> = [
        "key",
        "enabled",
        "queueIds",
        "incidentIds",
        "updatedAt",
        emr_core::recovery::COLUMN,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    wanted.extend((1..=QUEUE_COLUMNS).map(queue_column));
    let have: BTreeSet<String> = props.keys().cloned().collect();
    assert_eq!(have, wanted, "the schema's columns are the row's");
    assert_eq!(props["enabled"]["type"], "boolean");
    assert_eq!(props["key"]["maxLength"], 256, "Genesys's key limit");
    for (name, p) in props.iter().filter(|(n, _)| *n != "key") {
        if p["type"] == "string" {
            assert_eq!(p["maxLength"], MAX_COLUMN_CHARS, "{name}");
            assert_eq!(p["default"], "", "{name}: empty columns are empty strings");
        }
    }
    assert_eq!(emr_core::recovery::MAX_CHARS, MAX_COLUMN_CHARS);
    // The simulator seeds its table with this very file.
    assert_eq!(
        schema.to_string(),
        serde_json::from_str::<Value>(emr_sim::ROUTING_SCHEMA)
            .unwrap()
            .to_string()
    );
}

#[test]
fn rows_the_driver_writes_validate_against_the_schema() {
    let validator = draft4(&table_schema(), "datatable.schema.json");
    let long: Vec<String> = (0..60)
        .map(|i| format!("{i:02}-{}", "q".repeat(125)))
        .collect();
    let cases: Vec<Vec<String>> = [0, 1, QUEUE_COLUMNS, QUEUE_COLUMNS + 1]
        .iter()
        .map(|&n| (1..=n).map(|i| format!("queue-{i}")).collect())
        .chain(std::iter::once(long))
        .collect();
    let incidents: Vec<String> = (0..2_000).map(|i| format!("INC-{i:05}")).collect();
    for queues in cases {
        for (enabled, open) in [(true, Some("x".repeat(MAX_COLUMN_CHARS))), (false, None)] {
            let row = QueueRow::build(
                "3c3f7a3e-2f5c-4f3a-9b1e-000000000001".into(),
                &queues,
                &incidents,
                enabled,
                "2024-08-15T14:22:01.000Z".into(),
                open,
            );
            let v = serde_json::to_value(&row).unwrap();
            assert_valid(&validator, &v, &format!("{} queues", queues.len()));
            let listed: Vec<&str> = v["queueIds"]
                .as_str()
                .unwrap()
                .split(',')
                .filter(|q| !q.is_empty())
                .collect();
            for n in 1..=QUEUE_COLUMNS {
                let expected = listed.get(n - 1).copied().unwrap_or("");
                assert_eq!(v[queue_column(n)], expected, "{} queues", queues.len());
                if n <= queues.len() {
                    assert_eq!(v[queue_column(n)], queues[n - 1].as_str());
                }
            }
            assert!(v.get(queue_column(QUEUE_COLUMNS + 1)).is_none());
        }
    }
}

// --- Data actions -----------------------------------------------------------

/// Whether a schema holds an array anywhere inside an array.
fn nested_array(schema: &Value, inside_array: bool) -> bool {
    let is_array = schema["type"] == "array";
    if is_array && inside_array {
        return true;
    }
    let inside = inside_array || is_array;
    let children = schema["properties"]
        .as_object()
        .map(|p| p.values().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(schema.get("items"));
    children.into_iter().any(|c| nested_array(c, inside))
}

#[test]
fn data_action_exports_have_genesys_s_format_and_flat_contracts() {
    let actions = data_actions();
    let names: Vec<&str> = actions.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "agents-on-queue.json",
            "group-routing.json",
            "incident-status.json"
        ]
    );
    for (file, a) in &actions {
        for field in [
            "name",
            "integrationType",
            "actionType",
            "config",
            "contract",
        ] {
            assert!(a.get(field).is_some(), "{file}: no {field}");
        }
        assert!(a["secure"].is_boolean(), "{file}: secure");
        assert_eq!(a["actionType"], "custom", "{file}");
        let calls_emr_edge = file != "agents-on-queue.json";
        assert_eq!(
            a["integrationType"],
            if calls_emr_edge {
                "custom-rest-actions"
            } else {
                "purecloud-data-actions"
            },
            "{file}"
        );
        let request = &a["config"]["request"];
        for field in ["requestUrlTemplate", "requestType", "requestTemplate"] {
            assert!(request[field].is_string(), "{file}: request.{field}");
        }
        assert!(request["headers"].is_object(), "{file}: headers");
        let url = request["requestUrlTemplate"].as_str().unwrap();
        if calls_emr_edge {
            assert!(
                url.starts_with(&format!("{PLACEHOLDER_HOST}/emr/")),
                "{file}: {url}"
            );
        }
        let response = &a["config"]["response"];
        let map = response["translationMap"].as_object().unwrap();
        let defaults = response["translationMapDefaults"].as_object().unwrap();
        assert!(response["successTemplate"].is_string(), "{file}");
        for (k, path) in map {
            JsonPath::parse(path.as_str().unwrap())
                .unwrap_or_else(|e| panic!("{file}: translationMap.{k}: {e}"));
        }
        for (k, literal) in defaults {
            assert!(map.contains_key(k), "{file}: a default for no mapping: {k}");
            serde_json::from_str::<Value>(literal.as_str().unwrap())
                .unwrap_or_else(|e| panic!("{file}: translationMapDefaults.{k} is no JSON: {e}"));
        }
        let input = &a["contract"]["input"]["inputSchema"];
        let output = &a["contract"]["output"]["successSchema"];
        for (what, schema) in [("inputSchema", input), ("successSchema", output)] {
            assert_eq!(
                schema["$schema"], "http://json-schema.org/draft-04/schema#",
                "{file}: {what}"
            );
            draft4(schema, &format!("{file}: {what}"));
            assert_eq!(schema["type"], "object", "{file}: {what}");
        }
        for (name, p) in input["properties"].as_object().unwrap() {
            assert!(
                SCALARS.contains(&p["type"].as_str().unwrap_or("")),
                "{file}: input {name} is not flat: {p}"
            );
        }
        assert!(
            !nested_array(output, false),
            "{file}: nested arrays in the output"
        );
        // Every output the template writes is one the contract names.
        let props = output["properties"].as_object().unwrap();
        for k in map.keys() {
            assert!(props.contains_key(k), "{file}: {k} is not in successSchema");
        }
    }
}

/// A data action's request URL, as Genesys's Velocity renders it for these
/// templates: `$esc.url(…)` percent-encodes, `$!{input.x}` is empty when
/// the input is absent.
fn render_url(template: &str, inputs: &BTreeMap<&str, &str>) -> String {
    let mut out = template.to_owned();
    for (name, value) in inputs {
        let encoded: String = value
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        for quiet in ["", "!"] {
            out = out.replace(&format!("$esc.url(${quiet}{{input.{name}}})"), &encoded);
            out = out.replace(&format!("${quiet}{{input.{name}}}"), value);
        }
    }
    // A quiet reference to an input not given renders as nothing.
    while let Some(start) = out.find("$esc.url($!{input.") {
        let end = out[start..].find("})").map(|e| start + e + 2).unwrap();
        out.replace_range(start..end, "");
    }
    assert!(!out.contains("${input."), "an input is missing: {out}");
    out
}

/// Applies a data action's response config to an answer as Genesys does:
/// each translationMap JSONPath on the body (its default when it finds
/// nothing), the values put into successTemplate.
fn translate(action: &Value, body: &Value) -> Value {
    let response = &action["config"]["response"];
    let mut template = response["successTemplate"].as_str().unwrap().to_owned();
    for (k, path) in response["translationMap"].as_object().unwrap() {
        let path = JsonPath::parse(path.as_str().unwrap()).unwrap();
        let nodes = path.query(body).all();
        let value = match nodes.as_slice() {
            [] => response["translationMapDefaults"][k]
                .as_str()
                .unwrap_or_else(|| panic!("{k}: nothing found and no default"))
                .to_owned(),
            [one] if !path.to_string().contains('*') => one.to_string(),
            many => serde_json::to_string(many).unwrap(),
        };
        template = template.replace(&format!("${{{k}}}"), &value);
    }
    serde_json::from_str(&template).unwrap_or_else(|e| panic!("{e}: {template}"))
}

/// Runs a data action that calls emr-edge against the stack, as Genesys
/// would: its URL rendered, called with the integration's basic credential,
/// the answer translated and checked against its success schema.
async fn execute(s: &Stack, action: &Value, inputs: &[(&str, &str)]) -> Value {
    let inputs: BTreeMap<&str, &str> = inputs.iter().copied().collect();
    let input_schema = draft4(&action["contract"]["input"]["inputSchema"], "input");
    assert_valid(&input_schema, &json!(inputs), "the test's inputs");
    let request = &action["config"]["request"];
    let url = render_url(request["requestUrlTemplate"].as_str().unwrap(), &inputs)
        .replace(PLACEHOLDER_HOST, &s.envoy.url(""));
    assert_eq!(request["requestType"], "GET");
    let mut call = s
        .http
        .get(&url)
        .basic_auth(STATUS_BASIC_USER, Some(STATUS_BASIC_PASSWORD));
    for (name, value) in request["headers"].as_object().unwrap() {
        call = call.header(name.as_str(), value.as_str().unwrap());
    }
    let answer = call.send().await.unwrap();
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    let out = translate(action, &body);
    let success = draft4(&action["contract"]["output"]["successSchema"], "success");
    assert_valid(&success, &out, &url);
    out
}

fn data_action_config() -> Value {
    json!({"status": {"insecure": false, "auth": {
        "kind": "basic", "username_env": "EMR_STATUS_USER", "password_env": "EMR_STATUS_PASSWORD"}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_actions_answer_from_a_running_emr_edge() {
    let s = Stack::start(SimConfig::default(), data_action_config()).await;
    let queues: Vec<String> = (1..=7).map(|i| format!("q{i}")).collect();
    let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
    s.send(&incident("INC-DA-1", "EMERGENCY_ACTIVE", &queues))
        .await;
    assert!(eventually(SOON, || s.enabled(CARRIER)).await);

    let group = action("group-routing.json");
    let mut on = Value::Null;
    for _ in 0..50 {
        on = execute(&s, &group, &[("groupId", CARRIER)]).await;
        if on["enabled"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(on["enabled"], true, "{on}");
    assert_eq!(on["queueIds"], "q1,q2,q3,q4,q5,q6,q7");
    assert_eq!(on["queue1"], "q1");
    assert_eq!(on["queue5"], "q5");
    assert_eq!(on["openIncidents"], 1);
    assert_eq!(on["queueCount"], 7);

    // A group no incident holds: its defaults are what the answer says.
    let off = execute(&s, &group, &[("groupId", DEFAULT)]).await;
    assert_eq!(off["enabled"], false, "{off}");
    assert_eq!(off["queueIds"], "");
    assert_eq!(off["queue1"], "");
    assert_eq!(off["openIncidents"], 0);

    let status = action("incident-status.json");
    let mut known = Value::Null;
    for _ in 0..50 {
        known = execute(&s, &status, &[("correlationId", "INC-DA-1")]).await;
        if known["status"] == "APPLIED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(known["found"], true, "{known}");
    assert_eq!(known["status"], "APPLIED");
    assert_eq!(known["state"], "OPEN");
    assert_eq!(known["group"], CARRIER);
    let by_source = execute(
        &s,
        &status,
        &[("correlationId", "INC-DA-1"), ("source", "canonical")],
    )
    .await;
    assert_eq!(by_source, known);

    // An incident nobody knows: the answer has none of the fields, so the
    // action's defaults apply.
    let unknown = execute(&s, &status, &[("correlationId", "NOPE-404")]).await;
    assert_eq!(
        unknown,
        json!({"found": false, "status": "UNKNOWN", "state": "UNKNOWN",
               "routingMode": "", "group": "", "incidentType": ""})
    );

    // The same credential as every /emr/* route: none, none served.
    let anonymous = s
        .http
        .get(s.envoy.url(&format!("/emr/groups/{CARRIER}")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let unknown_group = s
        .http
        .get(s.envoy.url("/emr/groups/not-a-configured-group"))
        .basic_auth(STATUS_BASIC_USER, Some(STATUS_BASIC_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_group.status().as_u16(), 404);
    let problem: Value = unknown_group.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "group", "{problem}");
}

#[test]
fn the_agents_on_queue_action_reads_a_queue_observation_answer() {
    // The simulator does not serve analytics: a queue observation answer in
    // Genesys's shape, two agents idle and one interacting.
    let a = action("agents-on-queue.json");
    let body = json!({"results": [{
        "group": {"queueId": "q1"},
        "data": [
            {"metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": {"count": 2}},
            {"metric": "oOnQueueUsers", "qualifier": "INTERACTING", "stats": {"count": 1}}
        ]
    }]});
    let success = draft4(&a["contract"]["output"]["successSchema"], "success");
    let out = translate(&a, &body);
    assert_valid(&success, &out, "observations");
    assert_eq!(out, json!({"onQueueCounts": [2, 1]}));
    // Nobody on queue: Genesys answers the queue without data.
    let empty = translate(&a, &json!({"results": [{"group": {"queueId": "q1"}}]}));
    assert_valid(&success, &empty, "no data");
    assert_eq!(empty, json!({"onQueueCounts": []}));
    let template: Value = serde_json::from_str(
        &a["config"]["request"]["requestTemplate"]
            .as_str()
            .unwrap()
            .replace("${input.queueId}", "q1"),
    )
    .unwrap();
    assert_eq!(template["metrics"], json!(["oOnQueueUsers"]));
}

// --- The driver against the simulator's table rules ------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_row_is_created_with_a_post_after_the_put_s_404() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    s.send(&incident("INC-ROW-1", "EMERGENCY_ACTIVE", &["q1", "q2"]))
        .await;
    let table = emr_sim::DEFAULT_DATATABLE_ID;
    assert!(
        eventually(SOON, || s.sim.datatable_row(table, CARRIER).is_some()).await,
        "row not created"
    );
    let rows_path = format!("/api/v2/flows/datatables/{table}/rows");
    let writes: Vec<(String, Option<u16>)> = s
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(&rows_path) && r.method != "GET")
        // The group's own row (at start, every configured group's is written).
        .filter(|r| {
            r.path.ends_with(CARRIER) || r.body.as_ref().is_some_and(|b| b["key"] == CARRIER)
        })
        .map(|r| (format!("{} {}", r.method, r.path), r.status))
        .collect();
    assert_eq!(
        writes.get(..2),
        Some(
            &[
                (format!("PUT {rows_path}/{CARRIER}"), Some(404)),
                (format!("POST {rows_path}"), Some(200)),
            ][..]
        ),
        "{writes:?}"
    );
    let row = serde_json::to_value(s.sim.datatable_row(table, CARRIER).unwrap()).unwrap();
    assert_valid(&draft4(&table_schema(), "schema"), &row, "the row written");
    assert_eq!(row["queue1"], "q1");
    assert_eq!(row["queue3"], "");

    // The row exists now: the resolution updates it with a PUT, no POST.
    s.send(&incident("INC-ROW-1", "EMERGENCY_RESOLVED", &[]))
        .await;
    assert!(eventually(SOON, || !s.enabled(CARRIER)).await);
    let off = |s: &Stack| {
        s.sim
            .datatable_row(table, CARRIER)
            .is_some_and(|r| r.get("enabled") == Some(&json!(false)))
    };
    assert!(eventually(SOON, || off(&s)).await);
    let posts = s
        .calls("POST", &rows_path)
        .into_iter()
        .filter(|r| r.body.as_ref().is_some_and(|b| b["key"] == CARRIER))
        .count();
    assert_eq!(posts, 1, "only the first write creates");
    let put_ok = s
        .calls("PUT", &format!("{rows_path}/{CARRIER}"))
        .iter()
        .filter(|r| r.status == Some(200))
        .count();
    assert!(put_ok >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_open_incidents_fit_the_row_and_survive_a_restart() {
    let mut s = Stack::start(
        SimConfig::default(),
        json!({"ledger": {"max_open_incidents": 1000}}),
    )
    .await;
    let table = emr_sim::DEFAULT_DATATABLE_ID;
    for i in 0..1000 {
        let queue = format!("queue-{i:04}-{}", "q".repeat(30));
        s.send(&incident(
            &format!("INC-{i:04}"),
            "EMERGENCY_ACTIVE",
            &[&queue],
        ))
        .await;
    }
    let doc_of = |s: &Stack| {
        s.sim.datatable_row(table, CARRIER).and_then(|r| {
            let text = r.get("openIncidents")?.as_str()?.to_owned();
            emr_core::recovery::decode(&text).ok()
        })
    };
    let all_counted = |s: &Stack| doc_of(s).is_some_and(|d| d.o.len() + d.m as usize == 1000);
    assert!(
        eventually(Duration::from_secs(60), || all_counted(&s)).await,
        "the row never counted all 1,000: {:?}",
        doc_of(&s).map(|d| (d.o.len(), d.m))
    );
    let doc = doc_of(&s).unwrap();
    assert!(
        doc.m > 0 && !doc.o.is_empty(),
        "{} kept, {} left out",
        doc.o.len(),
        doc.m
    );
    // The sim holds every write to the schema (maxLength 4,000): the row is
    // there, so it fitted; and it validates.
    let row = serde_json::to_value(s.sim.datatable_row(table, CARRIER).unwrap()).unwrap();
    assert_valid(&draft4(&table_schema(), "schema"), &row, "a crowded row");
    assert!(row["incidentIds"].as_str().unwrap().contains("more"));
    let refused = s
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/rows") && r.status == Some(400))
        .count();
    assert_eq!(refused, 0, "no row write was refused");

    // A restart rebuilds the incidents the row kept; they hold the group on.
    s.restart_envoy();
    let kept = doc.o.len();
    let rebuilt = |v: &Value| v["openIncidentsTotal"].as_u64() == Some(kept as u64);
    let mut state = Value::Null;
    for _ in 0..100 {
        state = s.group_state(CARRIER).await;
        if rebuilt(&state) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rebuilt(&state), "{kept} expected: {state}");
    assert!(s.enabled(CARRIER), "the kept incidents hold the group on");
}

// --- Terraform ----------------------------------------------------------------

fn terraform() -> Vec<(PathBuf, Body)> {
    let all = files(&genesys("terraform"), "tf");
    assert!(all.len() >= 5, "{all:?}");
    all.into_iter()
        .map(|p| {
            let body: Body =
                hcl::from_str(&read(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, body)
        })
        .collect()
}

/// Every `resource "TYPE" "name"` block of the module and its example.
fn resources(bodies: &[(PathBuf, Body)], kind: &str) -> Vec<(String, Block)> {
    bodies
        .iter()
        .flat_map(|(_, body)| body.blocks())
        .filter(|b| b.identifier() == "resource")
        .filter(|b| b.labels().first().map(|l| l.as_str()) == Some(kind))
        .map(|b| {
            let name = b
                .labels()
                .get(1)
                .map(|l| l.as_str().to_owned())
                .unwrap_or_default();
            (name, b.clone())
        })
        .collect()
}

fn attribute<'b>(block: &'b Block, key: &str) -> Option<&'b Expression> {
    block
        .body()
        .attributes()
        .find(|a| a.key() == key)
        .map(|a| a.expr())
}

fn string(e: Option<&Expression>) -> String {
    match e {
        Some(Expression::String(s)) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// The names listed in `ignore_changes = [...]` of a resource's lifecycle.
fn ignored_changes(block: &Block) -> BTreeSet<String> {
    block
        .body()
        .blocks()
        .filter(|b| b.identifier() == "lifecycle")
        .filter_map(|b| attribute(b, "ignore_changes").cloned())
        .flat_map(|e| match e {
            Expression::Array(items) => items,
            other => vec![other],
        })
        .map(|e| match e {
            Expression::Variable(v) => v.as_str().to_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn terraform_leaves_what_emr_edge_switches_alone() {
    let bodies = terraform();
    let groups = resources(&bodies, "genesyscloud_architect_emergencygroup");
    let rows = resources(&bodies, "genesyscloud_architect_datatable_row");
    assert!(!groups.is_empty() && !rows.is_empty());
    for (name, block) in &groups {
        assert!(
            ignored_changes(block).contains("enabled"),
            "emergency group {name} must ignore changes to enabled"
        );
    }
    for (name, block) in &rows {
        assert!(
            ignored_changes(block).contains("properties_json"),
            "datatable row {name} must ignore changes to properties_json"
        );
    }
    // The why is written beside it.
    let main = read(&genesys("terraform/main.tf"));
    assert!(
        main.contains("silently switch it"),
        "the comment saying why"
    );
}

/// The `domain:entity:action` permissions in a markdown section (from its
/// heading to the next heading).
fn permissions_in(markdown: &str, heading: &str) -> BTreeSet<String> {
    let start = markdown
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading}"));
    let rest = &markdown[start + heading.len()..];
    let section = &rest[..rest.find("\n#").unwrap_or(rest.len())];
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| {
            let parts: Vec<&str> = t.split(':').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(char::is_alphanumeric))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_role_grants_exactly_the_permissions_the_docs_state() {
    let bodies = terraform();
    let roles = resources(&bodies, "genesyscloud_auth_role");
    let (_, role) = roles
        .iter()
        .find(|(name, _)| name == "emr_edge")
        .expect("the emr_edge role");
    let granted: BTreeSet<String> = role
        .body()
        .blocks()
        .filter(|b| b.identifier() == "permission_policies")
        .flat_map(|p| {
            let domain = string(attribute(p, "domain"));
            let entity = string(attribute(p, "entity_name"));
            let actions = match attribute(p, "action_set") {
                Some(Expression::Array(a)) => a.clone(),
                other => panic!("action_set: {other:?}"),
            };
            actions
                .into_iter()
                .map(move |a| format!("{domain}:{entity}:{}", string(Some(&a))))
        })
        .collect();
    let readme = permissions_in(&read(&genesys("README.md")), "### emr-edge's role");
    assert_eq!(granted, readme, "terraform vs genesys/README.md");
    let docs = permissions_in(
        &read(&root().join("docs/genesys.md")),
        "## The OAuth client",
    );
    assert_eq!(granted, docs, "terraform vs docs/genesys.md");
    // And the simulator's seeded client holds the same, as a real setup would.
    let seeded: BTreeSet<String> = SimConfig::default()
        .clients
        .iter()
        .find(|c| c.id == emr_sim::EMR_EDGE_CLIENT_ID)
        .unwrap()
        .permissions
        .iter()
        .cloned()
        .collect();
    assert_eq!(granted, seeded, "terraform vs the simulator's seed");
}

#[test]
fn terraform_builds_from_the_shared_files() {
    let main = read(&genesys("terraform/main.tf"));
    assert!(main.contains("jsondecode(file(\"${path.module}/../datatable.schema.json\"))"));
    for (file, _) in data_actions() {
        assert!(
            main.contains(&format!("/../data-actions/{file}\"))")),
            "Terraform does not create {file}"
        );
    }
    assert!(main.contains("/../flows/emergency-inbound.yaml"));
    // The example feeds emr-edge's config by its real field names.
    let example = read(&genesys("terraform/examples/main.tf"));
    for field in [
        "default_group",
        "groups_by_incident_type",
        "datatable",
        "row_key",
        "client_id_env",
        "client_secret_env",
    ] {
        assert!(example.contains(&format!("{field} ")), "examples: {field}");
    }
}

// --- The flow -------------------------------------------------------------------

fn flow() -> Value {
    serde_yaml::from_str(&read(&genesys("flows/emergency-inbound.yaml")))
        .unwrap_or_else(|e| panic!("emergency-inbound.yaml: {e}"))
}

/// Every object under `v` that has the key `key`, with its value.
fn find_all<'v>(v: &'v Value, key: &str, out: &mut Vec<&'v Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == key {
                    out.push(child);
                }
                find_all(child, key, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|c| find_all(c, key, out)),
        _ => {}
    }
}

fn strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Object(map) => {
            for (k, child) in map {
                out.push(k);
                strings(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|c| strings(c, out)),
        _ => {}
    }
}

#[test]
fn the_flow_reads_only_schema_columns_and_calls_only_shipped_actions() {
    let f = flow();
    let schema = table_schema();
    let mut lookups = Vec::new();
    find_all(&f, "dataTableLookup", &mut lookups);
    assert!(!lookups.is_empty());
    let mut read_columns = BTreeSet::new();
    for l in &lookups {
        for column in l["foundOutputs"].as_object().unwrap().keys() {
            assert!(
                schema["properties"].get(column).is_some(),
                "the flow reads {column}, which the table does not have"
            );
            read_columns.insert(column.clone());
        }
    }
    let queues: BTreeSet<String> = (1..=QUEUE_COLUMNS).map(queue_column).collect();
    assert!(
        read_columns.is_superset(&queues),
        "it walks every queue column"
    );

    let shipped: BTreeSet<String> = data_actions()
        .into_iter()
        .map(|(_, a)| a["name"].as_str().unwrap().to_owned())
        .collect();
    let mut calls = Vec::new();
    find_all(&f, "callData", &mut calls);
    assert!(!calls.is_empty());
    for call in calls {
        for (_, integration) in call["category"].as_object().unwrap() {
            for (name, use_) in integration["dataAction"].as_object().unwrap() {
                assert!(shipped.contains(name), "the flow calls {name}, not shipped");
                let a = data_actions()
                    .into_iter()
                    .find(|(_, a)| a["name"] == name.as_str())
                    .unwrap()
                    .1;
                for output in use_["successOutputs"].as_object().unwrap().keys() {
                    assert!(
                        a["contract"]["output"]["successSchema"]["properties"]
                            .get(output)
                            .is_some(),
                        "{name} has no output {output}"
                    );
                }
                for input in use_["inputs"].as_object().unwrap().keys() {
                    assert!(
                        a["contract"]["input"]["inputSchema"]["properties"]
                            .get(input)
                            .is_some(),
                        "{name} has no input {input}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_flow_checks_the_emergency_again_and_every_jump_lands() {
    let f = flow();
    let mut checks = Vec::new();
    find_all(&f, "evaluateScheduleGroup", &mut checks);
    // At entry, after the menu, after each failed transfer.
    assert!(checks.len() >= 3 + QUEUE_COLUMNS, "{}", checks.len());
    for c in &checks {
        assert!(c["emergencyGroup"].is_object(), "{c}");
        assert!(c["outputs"]["emergency"].is_object(), "{c}");
    }
    let mut ids = Vec::new();
    find_all(&f, "refId", &mut ids);
    let ids: BTreeSet<&str> = ids.iter().filter_map(|v| v.as_str()).collect();
    let mut targets = Vec::new();
    find_all(&f, "targetTaskRef", &mut targets);
    find_all(&f, "targetMenuRef", &mut targets);
    find_all(&f, "startUpRef", &mut targets);
    assert!(targets.len() > 10);
    for t in targets {
        let t = t.as_str().unwrap();
        let id = t
            .rsplit_once('[')
            .and_then(|(_, rest)| rest.strip_suffix(']'))
            .unwrap_or_else(|| panic!("{t}"));
        assert!(ids.contains(id), "{t} lands nowhere");
    }
    let mut finds = Vec::new();
    find_all(&f, "findQueueById", &mut finds);
    assert_eq!(
        finds.len(),
        QUEUE_COLUMNS,
        "one Find Queue by ID per column"
    );
    let mut transfers = Vec::new();
    find_all(&f, "transferToAcd", &mut transfers);
    assert!(
        transfers.len() >= QUEUE_COLUMNS + 2,
        "the queues, normal, fallback"
    );
}

#[test]
fn every_flow_placeholder_is_one_terraform_fills() {
    let mut all = Vec::new();
    let f = flow();
    strings(&f, &mut all);
    let placeholders: BTreeSet<String> = all
        .iter()
        .flat_map(|s| s.split("{{").skip(1))
        .filter_map(|rest| rest.split_once("}}").map(|(name, _)| name.to_owned()))
        .collect();
    assert!(placeholders.len() >= 8, "{placeholders:?}");
    let bodies = terraform();
    let flows = resources(&bodies, "genesyscloud_flow");
    let (_, flow_block) = flows.first().expect("a genesyscloud_flow");
    let substitutions: BTreeSet<String> = match attribute(flow_block, "substitutions") {
        Some(Expression::Object(o)) => o.keys().map(|k| k.to_string()).collect(),
        other => panic!("substitutions: {other:?}"),
    };
    assert_eq!(placeholders, substitutions);
}
