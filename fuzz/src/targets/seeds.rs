//! The hand-made part of the seed corpora: the source fixtures in each
//! target's input layout, and edge cases. `core/tests/fuzz_replay.rs` runs
//! them on every `make test` and writes them to `fuzz/corpus/<target>/` on
//! request (see fuzz/README.md); libFuzzer grows the corpora from there.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use emr_core::event::Source;
use serde_json::json;

use super::{intake as i, Seed};

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!("../../../tests/fixtures/sources/", $path)).as_slice()
    };
}

/// (source, fixture name, body) for every source fixture.
fn fixtures() -> Vec<(Source, &'static str, &'static [u8])> {
    use Source::*;
    vec![
        (
            Alertmanager,
            "am_firing",
            fixture!("alertmanager/firing.json"),
        ),
        (
            Alertmanager,
            "am_firing_warning",
            fixture!("alertmanager/firing_warning.json"),
        ),
        (
            Alertmanager,
            "am_mixed",
            fixture!("alertmanager/one_resolved_one_firing.json"),
        ),
        (
            Alertmanager,
            "am_resolved",
            fixture!("alertmanager/resolved.json"),
        ),
        (Jsm, "jsm_comment", fixture!("jsm/comment_created.json")),
        (Jsm, "jsm_created", fixture!("jsm/issue_created.json")),
        (
            Jsm,
            "jsm_created_low",
            fixture!("jsm/issue_created_low_priority.json"),
        ),
        (Jsm, "jsm_deleted", fixture!("jsm/issue_deleted.json")),
        (
            Jsm,
            "jsm_resolved",
            fixture!("jsm/issue_updated_resolved.json"),
        ),
        (
            Opsgenie,
            "og_ack",
            fixture!("opsgenie/alert_acknowledge.json"),
        ),
        (Opsgenie, "og_close", fixture!("opsgenie/alert_close.json")),
        (
            Opsgenie,
            "og_create",
            fixture!("opsgenie/alert_create.json"),
        ),
        (
            Opsgenie,
            "og_create_low",
            fixture!("opsgenie/alert_create_low_priority.json"),
        ),
        (
            Pagerduty,
            "pd_ack",
            fixture!("pagerduty/incident_acknowledged.json"),
        ),
        (
            Pagerduty,
            "pd_resolved",
            fixture!("pagerduty/incident_resolved.json"),
        ),
        (
            Pagerduty,
            "pd_triggered",
            fixture!("pagerduty/incident_triggered.json"),
        ),
        (
            Pagerduty,
            "pd_triggered_low",
            fixture!("pagerduty/incident_triggered_low_urgency.json"),
        ),
        (Pagerduty, "pd_ping", fixture!("pagerduty/pagey_ping.json")),
        (
            Servicenow,
            "sn_in_progress",
            fixture!("servicenow/incident_in_progress_display_values.json"),
        ),
        (
            Servicenow,
            "sn_low",
            fixture!("servicenow/incident_low_priority.json"),
        ),
        (
            Servicenow,
            "sn_new",
            fixture!("servicenow/incident_new.json"),
        ),
        (
            Servicenow,
            "sn_resolved",
            fixture!("servicenow/incident_resolved_labels.json"),
        ),
        (
            Standard,
            "std_active",
            fixture!("standard/incident_active.json"),
        ),
        (
            Standard,
            "std_resolved",
            fixture!("standard/incident_resolved.json"),
        ),
    ]
}

fn source_index(s: Source) -> u8 {
    u8::try_from(Source::ALL.iter().position(|x| *x == s).unwrap()).unwrap()
}

/// One seed: target, file name, bytes.
pub type SeedFile = (&'static str, String, Vec<u8>);

pub fn seeds() -> Vec<SeedFile> {
    let mut out = Vec::new();
    json_seeds(&mut out);
    canonical_seeds(&mut out);
    source_seeds(&mut out);
    signature_seeds(&mut out);
    genesys_seeds(&mut out);
    itsm_seeds(&mut out);
    dedupe_seeds(&mut out);
    config_seeds(&mut out);
    intake_seeds(&mut out);
    out
}

fn canonical_body() -> serde_json::Value {
    json!({
        "correlationId": "INC-2024-08-15-7742",
        "incidentType": "CARRIER_OUTAGE",
        "targetQueueIds": ["queue-12345", "queue-67890"],
        "routingMode": "EMERGENCY_ACTIVE",
        "timestamp": "2024-08-15T14:22:01Z",
        "ttl": 3600
    })
}

fn json_seeds(out: &mut Vec<SeedFile>) {
    let cases: [(&str, Vec<u8>); 14] = [
        (
            "duplicate",
            br#"{"routingMode":"A","routingMode":"B"}"#.to_vec(),
        ),
        ("escaped_duplicate", br#"{"a":1,"\u0061":2}"#.to_vec()),
        (
            "nested_duplicate",
            br#"[{"x":1},{"x":{"y":1,"y":2}}]"#.to_vec(),
        ),
        (
            "depth_32",
            format!("{}{}", "[".repeat(32), "]".repeat(32)).into_bytes(),
        ),
        (
            "depth_33",
            format!("{}{}", "[".repeat(33), "]".repeat(33)).into_bytes(),
        ),
        (
            "deep_objects",
            format!("{}1{}", r#"{"a":"#.repeat(33), "}".repeat(33)).into_bytes(),
        ),
        (
            "numbers",
            br#"[0,-0,1e400,-1.5e-400,18446744073709551616,-9223372036854775809,1.0]"#.to_vec(),
        ),
        ("lone_surrogate", br#"["\ud800","\udc00\ud800"]"#.to_vec()),
        ("invalid_utf8", b"{\"a\":\"\xff\xfe\"}".to_vec()),
        ("bom", b"\xef\xbb\xbf{}".to_vec()),
        ("trailing", b"{} {}".to_vec()),
        ("empty", Vec::new()),
        ("controls", b"\"a\x01b\"".to_vec()),
        ("canonical", canonical_body().to_string().into_bytes()),
    ];
    for (name, data) in cases {
        out.push(("json_strict", name.to_owned(), data));
    }
    out.push((
        "json_strict",
        "jsm".into(),
        fixture!("jsm/issue_created.json").to_vec(),
    ));
}

fn canonical_seeds(out: &mut Vec<SeedFile>) {
    let base = canonical_body();
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        b[k] = v;
        b.to_string().into_bytes()
    };
    let mut resolved = base.clone();
    resolved["routingMode"] = json!("EMERGENCY_RESOLVED");
    resolved.as_object_mut().unwrap().remove("targetQueueIds");
    let fifty: Vec<String> = (0..50).map(|n| format!("q{n}")).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("valid", base.to_string().into_bytes()),
        ("resolved_no_queues", resolved.to_string().into_bytes()),
        ("fifty_queues", with("targetQueueIds", json!(fifty))),
        ("ttl_min", with("ttl", json!(60))),
        ("ttl_max", with("ttl", json!(86400))),
        ("ttl_float", with("ttl", json!(60.5))),
        ("ttl_negative", with("ttl", json!(-1))),
        ("offset", with("timestamp", json!("2024-08-15T16:22:01.123456789+02:00"))),
        ("future", with("timestamp", json!("2024-08-15T14:30:00Z"))),
        ("oldest", with("timestamp", json!("2024-08-14T14:25:00Z"))),
        ("leap_second", with("timestamp", json!("2024-08-15T14:22:60Z"))),
        ("lowercase_t", with("timestamp", json!("2024-08-15t14:22:01z"))),
        ("unknown_field", with("severity", json!("high"))),
        ("queue_dupes", with("targetQueueIds", json!(["a", "a", "", 7, " "]))),
        ("id_max", with("correlationId", json!("x".repeat(128)))),
        ("id_unicode", with("correlationId", json!("INCé"))),
        ("type_digits", with("incidentType", json!("A_1_B"))),
        ("nulls", br#"{"correlationId":null,"incidentType":null,"routingMode":null,"targetQueueIds":null,"timestamp":null,"ttl":null}"#.to_vec()),
        ("array", b"[]".to_vec()),
        ("duplicate", br#"{"correlationId":"A","correlationId":"B"}"#.to_vec()),
    ];
    for (name, data) in cases {
        out.push(("canonical_contract", name.to_owned(), data));
    }
}

fn source_seeds(out: &mut Vec<SeedFile>) {
    for (n, (source, name, body)) in fixtures().into_iter().enumerate() {
        let variant = u8::try_from(n % 3).unwrap();
        let seed = Seed::new()
            .byte(source_index(source))
            .byte(variant)
            .bytes("delivery-1")
            .rest(body);
        out.push(("sources", format!("{name}_v{variant}"), seed));
    }
    for (source, name, body) in fixtures().into_iter().step_by(4) {
        let seed = Seed::new()
            .byte(source_index(source))
            .byte(1)
            .bytes(" \u{7f}bad id")
            .rest(body);
        out.push(("sources", format!("{name}_v1_bad_delivery"), seed));
    }
    let canonical = canonical_body().to_string();
    for variant in 0..3u8 {
        let seed = Seed::new()
            .byte(source_index(Source::Canonical))
            .byte(variant)
            .bytes("")
            .rest(&canonical);
        out.push(("sources", format!("canonical_v{variant}"), seed));
    }
}

fn signature_seeds(out: &mut Vec<SeedFile>) {
    let body = br#"{"event":{"event_type":"incident.triggered"}}"#;
    for set in 0..=6u8 {
        for inject in [0u8, 1, 7] {
            let seed = Seed::new()
                .byte(set)
                .byte(0)
                .byte(inject)
                .bytes("v1=00")
                .bytes("msg_1")
                .byte(100)
                .rest(body);
            out.push((
                "signature_headers",
                format!("set{set}_inject{inject}"),
                seed,
            ));
        }
    }
    // Header values each method must refuse without panicking.
    let ts = super::now().timestamp().to_string();
    let odd: [(u8, &[(u8, &str)]); 6] = [
        (0, &[(2, "v1=zz,v1=,v1=0,,v2=00"), (3, "v1=00")]),
        (1, &[(4, "sha256="), (4, "sha256=abc")]),
        (2, &[(5, "msg_1"), (6, &ts), (7, "v1,!!! v1a,abc v1,AAAA")]),
        (2, &[(5, "msg_1"), (6, "99999999999999999999"), (7, "v1,")]),
        (3, &[(0, "Bearer"), (1, "bearer  x")]),
        (5, &[(0, "Basic !!!"), (0, "Basic dXNlcg==")]),
    ];
    for (n, (set, headers)) in odd.iter().enumerate() {
        let mut seed = Seed::new()
            .byte(*set)
            .byte(u8::try_from(headers.len()).unwrap());
        for (name, value) in *headers {
            seed = seed.byte(*name).bytes(value);
        }
        let seed = seed.byte(0).bytes("").bytes("").byte(0).rest(body);
        out.push(("signature_headers", format!("odd_{n}"), seed));
    }
}

fn genesys_seeds(out: &mut Vec<SeedFile>) {
    let group = json!({
        "id": "eg-voice", "name": "Carrier Outage",
        "division": {"id": "d1", "name": "Home", "selfUri": "/api/v2/authorization/divisions/d1"},
        "version": 7, "dateModified": "2024-08-01T09:00:00.000Z",
        "modifiedBy": "user-1", "modifiedByApp": "Genesys Cloud Admin UI",
        "state": "active", "enabled": false,
        "emergencyCallFlows": [{"emergencyFlow": {"id": "f1"}, "ivrs": [{"id": "i1"}]}],
        "selfUri": "/api/v2/architect/emergencygroups/eg-voice",
        "someFutureField": {"nested": [1, 2.5, null]}
    });
    let deleted = json!({"id": "eg-voice", "version": 9, "state": "deleted", "enabled": true});
    let guide = json!({
        "state": "ACTIVE", "reason": "INC-1",
        "routingConfiguration": {"queueIds": ["queue-1", "queue-2"], "priority": 2},
        "lastUpdated": "2024-08-15T14:22:01.000Z", "x": 1
    });
    let pending = json!({"state": "PENDING"});
    let token =
        json!({"access_token": "tok-0123456789", "token_type": "bearer", "expires_in": 86400});
    let short_token = json!({"access_token": "t", "expires_in": 1});
    let rate = json!({"message": "Rate limit exceeded the maximum. Retry the request in [42] seconds",
        "code": "too.many.requests.retry.after", "status": 429, "contextId": "ctx-1"});
    let version = json!({"message": "The version supplied does not match the current version", "code": "bad.request", "status": 400});
    let oauth = json!({"error": "invalid_client", "description": "bad secret"});
    let row = json!({"key": "emr", "queueIds": "q1,q2", "incidentIds": "INC-1", "enabled": true, "updatedAt": "2024-08-15T14:22:01Z"});
    // (name, status, headers by name index, body)
    type Case<'a> = (&'a str, u16, Vec<(u8, &'a str)>, String);
    let cases: Vec<Case> = vec![
        ("group", 200, vec![(0, "corr-1")], group.to_string()),
        ("deleted_group", 200, vec![], deleted.to_string()),
        ("guide", 200, vec![], guide.to_string()),
        ("pending", 202, vec![], pending.to_string()),
        ("token", 200, vec![], token.to_string()),
        ("short_token", 200, vec![], short_token.to_string()),
        (
            "rate_limited",
            429,
            vec![(1, "3"), (2, "300"), (3, "300"), (4, "42")],
            rate.to_string(),
        ),
        (
            "retry_date",
            429,
            vec![(1, "Thu, 15 Aug 2024 14:26:00 GMT")],
            "{}".into(),
        ),
        ("version_conflict", 400, vec![], version.to_string()),
        ("oauth_error", 401, vec![], oauth.to_string()),
        (
            "server_error",
            503,
            vec![(1, "5")],
            "upstream connect error".into(),
        ),
        ("row", 200, vec![], row.to_string()),
        ("informational", 100, vec![], String::new()),
        ("out_of_range", 700, vec![], String::new()),
    ];
    for (name, status, headers, body) in cases {
        let mut seed = Seed::new()
            .byte(1)
            .u16(status)
            .byte(u8::try_from(headers.len()).unwrap());
        for (h, v) in headers {
            seed = seed.byte(h).bytes(v);
        }
        out.push(("genesys_answers", name.to_owned(), seed.rest(body)));
    }
    out.push(("genesys_answers", "failed".into(), vec![0]));
}

fn itsm_seeds(out: &mut Vec<SeedFile>) {
    let cases: [(&str, u8, serde_json::Value); 10] = [
        (
            "pd_triggered",
            0,
            json!({"incident": {"id": "Q1", "status": "triggered"}}),
        ),
        (
            "pd_resolved",
            0,
            json!({"incident": {"id": "Q1", "status": "resolved"}}),
        ),
        ("pd_unknown", 0, json!({"incident": {"status": "snoozed"}})),
        ("sn_number", 1, json!({"result": [{"state": 6}]})),
        ("sn_string", 1, json!({"result": [{"state": "2"}]})),
        (
            "sn_label",
            1,
            json!({"result": [{"state": {"value": "7", "display_value": "Closed"}}]}),
        ),
        ("sn_empty", 1, json!({"result": []})),
        (
            "jira_done",
            2,
            json!({"fields": {"status": {"name": "Done", "statusCategory": {"key": "done"}}}}),
        ),
        (
            "jira_open",
            2,
            json!({"fields": {"status": {"name": "In Progress", "statusCategory": {"key": "indeterminate"}}}}),
        ),
        (
            "jira_no_category",
            2,
            json!({"fields": {"status": {"name": "Open"}}}),
        ),
    ];
    for (name, tool, body) in cases {
        out.push((
            "itsm_answers",
            name.to_owned(),
            Seed::new().byte(tool).rest(body.to_string()),
        ));
    }
}

fn dedupe_seeds(out: &mut Vec<SeedFile>) {
    // per_bucket, window, structured bucket, entries, then ops.
    let structured = |s: Seed, entries: &[(u8, u8, i8, u8)], torn: u8| {
        let mut s = s.byte(1).byte(1).byte(u8::try_from(entries.len()).unwrap());
        for (k, fp, exp, answer) in entries {
            s = s.byte(*k).byte(*fp).byte(*exp as u8).byte(*answer);
        }
        s.byte(torn)
    };
    // op, key, time, fingerprint, conflicts (inserts only)
    let insert = |s: Seed, key: u8, t: i8, fp: u8, conflicts: u8| {
        s.byte(0).byte(key).byte(t as u8).byte(fp).byte(conflicts)
    };
    let empty = Seed::new().byte(2).byte(10).byte(0).bytes(b"").byte(4);
    let s = insert(empty, 0, 0, 1, 0);
    let s = insert(s, 0, 1, 2, 0);
    let s = s.byte(2).byte(0).byte(1);
    out.push((
        "dedupe_buckets",
        "insert_replay_remove".into(),
        insert(s, 0, 2, 1, 0).done(),
    ));

    let s = Seed::new().byte(1).byte(5).byte(0).bytes(b"").byte(4);
    let s = insert(s, 0, 0, 1, 0);
    let s = insert(s, 1, 0, 1, 0);
    let s = insert(s, 2, 0, 1, 31);
    out.push((
        "dedupe_buckets",
        "evict".into(),
        insert(s, 3, 0, 1, 32).done(),
    ));

    let s = Seed::new().byte(3).byte(20);
    let s = structured(
        s,
        &[(0, 1, 5, 0), (0, 2, 6, 1), (1, 1, -5, 1), (9, 1, 100, 0)],
        7,
    );
    let s = s.byte(4);
    let s = insert(s, 0, 0, 1, 0);
    let s = insert(s, 1, 0, 2, 0);
    let s = s.byte(3).byte(0).byte(10);
    out.push((
        "dedupe_buckets",
        "structured".into(),
        insert(s, 2, -10, 0, 0).done(),
    ));

    let raw = Seed::new()
        .byte(0)
        .byte(1)
        .byte(0)
        .bytes([2u8; 42])
        .byte(2)
        .byte(0)
        .byte(0)
        .byte(0)
        .byte(0)
        .byte(0)
        .done();
    out.push(("dedupe_buckets", "future_version".into(), raw));
}

fn config_seeds(out: &mut Vec<SeedFile>) {
    // The documented complete example, every section.
    let full = include_bytes!("../../../examples/config.json").to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("blank", b" \n".to_vec()),
        ("defaults", b"{}".to_vec()),
        ("example_sources", full),
        ("open", i::CONFIGS[0].as_bytes().to_vec()),
        ("secured", i::CONFIGS[1].as_bytes().to_vec()),
        ("genesys", br#"{"genesys": {"region": "mypurecloud.ie", "default_group": "eg-voice",
            "groups_by_incident_type": {"CARRIER_OUTAGE": "eg-voice"},
            "datatable": {"id": "dt-1", "row_key": "{group}"}, "limits": {}},
            "status": {"auth": {"kind": "basic", "username_env": "USER", "password_env": "PASSWORD"}}}"#.to_vec()),
        ("guide", br#"{"genesys": {"login_host": "login.example:8443", "api_host": "api.example",
            "driver": "guide_contract", "default_group": "eg-voice"}}"#.to_vec()),
        ("bad_range", br#"{"intake": {"max_body_bytes": 10, "dedupe_buckets": 0}}"#.to_vec()),
        ("bad_secrets", br#"{"sources": {"pagerduty": {"auth": [{"kind": "pagerduty_signature",
            "secret_envs": ["SHORT", "PADDED", "EMPTY", "MISSING", ""]}]},
            "standard": {"auth": [{"kind": "standard_webhooks", "secret_envs": ["BAD_WHSEC", "SHORT_WHSEC"], "tolerance_seconds": 0}]},
            "servicenow": {"auth": [{"kind": "basic", "username_env": "COLON_USER", "password_env": "TOKEN"}]}}}"#.to_vec()),
        ("both_status", br#"{"status": {"insecure": true, "auth": {"kind": "bearer", "token_env": "TOKEN", "header": "bad header"}}}"#.to_vec()),
        ("bad_rules", br#"{"sources": {"alertmanager": {"modes": {"firing": "sideways"}, "rules": [{"match": {"nope": "x"}, "priority": 9, "queues": ["a", "a"], "ttl_seconds": 5}]}}}"#.to_vec()),
        ("unknown_field", br#"{"intake": {"max_body_bytes": 65536}, "surprise": 1}"#.to_vec()),
    ];
    for (name, data) in cases {
        out.push(("plugin_config", name.to_owned(), data));
    }
}

/// One intake request in the target's layout.
fn request(
    method: u8,
    path: u8,
    content_type: u8,
    length: u8,
    headers: &[(u8, &str)],
    flags: u8,
    body: &[u8],
) -> Vec<u8> {
    let mut s = Seed::new()
        .byte(method)
        .byte(path)
        .byte(content_type)
        .byte(length)
        .byte(u8::try_from(headers.len()).unwrap());
    for (name, value) in headers {
        s = s.byte(*name).bytes(value);
    }
    s.byte(flags)
        .byte(0)
        .u16(u16::try_from(body.len()).unwrap())
        .rest(body)
}

fn path_index(p: &str) -> u8 {
    u8::try_from(i::PATHS.iter().position(|x| *x == p).unwrap()).unwrap()
}

fn intake_seeds(out: &mut Vec<SeedFile>) {
    let canonical = canonical_body().to_string();
    let fixture_paths: Vec<(String, u8, &[u8])> = fixtures()
        .into_iter()
        .map(|(s, name, body)| (name.to_owned(), path_index(&format!("/webhooks/{s}")), body))
        .collect();
    // config, garbage, request count, requests…
    for (config, signed) in [(0u8, 0u8), (1, i::SIGN)] {
        for (name, path, body) in fixture_paths.iter().step_by(2) {
            let mut s = Seed::new().byte(config).bytes(b"").byte(0).done();
            s.extend(request(0, *path, 0, 1, &[], signed | i::TWICE, body));
            out.push(("intake", format!("{name}_c{config}"), s));
        }
        let mut s = Seed::new().byte(config).bytes(b"").byte(0).done();
        s.extend(request(
            0,
            0,
            1,
            1,
            &[],
            signed | i::TWICE,
            canonical.as_bytes(),
        ));
        out.push(("intake", format!("canonical_c{config}"), s));
    }
    let status_bucket = json!([{"correlationId": "INC-1", "state": "ACTIVE"}]).to_string();
    let basic = format!("Basic {}", STANDARD.encode("x:y"));
    let resume = path_index("/emr/groups/eg-voice/resume");
    let singles: Vec<(&str, u8, Vec<u8>, Vec<u8>)> = vec![
        (
            "status",
            1,
            status_bucket.into_bytes(),
            request(1, path_index("/emr/status/INC-1"), 4, 0, &[], i::SIGN, b""),
        ),
        (
            "state",
            0,
            b"{\"groups\":[]}".to_vec(),
            request(2, path_index("/emr/state"), 4, 0, &[], i::END_STREAM, b""),
        ),
        (
            "status_unsigned",
            1,
            Vec::new(),
            request(1, path_index("/emr/state"), 4, 0, &[(0, &basic)], 0, b""),
        ),
        (
            // JSON, as a resume must be (the cross-site check).
            "resume",
            1,
            Vec::new(),
            request(0, resume, 0, 0, &[], i::SIGN | i::TWICE, b""),
        ),
        (
            "resume_get",
            0,
            Vec::new(),
            request(1, resume, 4, 0, &[], 0, b""),
        ),
        (
            "wrong_method",
            0,
            Vec::new(),
            request(3, 0, 0, 1, &[], 0, b"{}"),
        ),
        (
            "unsupported_type",
            0,
            Vec::new(),
            request(0, 0, 3, 1, &[], 0, b"{}"),
        ),
        (
            "too_large",
            0,
            Vec::new(),
            request(0, 0, 0, 2, &[], 0, b"{}"),
        ),
        (
            "unknown_source",
            0,
            Vec::new(),
            request(0, path_index("/webhooks/nagios"), 0, 1, &[], 0, b"{}"),
        ),
        (
            "other_path",
            0,
            Vec::new(),
            request(1, path_index("/healthz"), 4, 0, &[], 0, b""),
        ),
        (
            "empty_stream",
            0,
            Vec::new(),
            request(0, 0, 0, 0, &[], i::END_STREAM, b""),
        ),
        (
            "not_json",
            0,
            Vec::new(),
            request(0, 2, 2, 1, &[(1, "delivery-1")], 0, b"\xff\x00binary"),
        ),
    ];
    for (name, config, garbage, req) in singles {
        let mut s = Seed::new().byte(config).bytes(&garbage).byte(0).done();
        s.extend(req);
        out.push(("intake", name.to_owned(), s));
    }
    // Faults: a broken queue, then CAS conflicts past the retry limit.
    for (name, faults) in [("broken_queue", 1u8), ("cas_exhausted", 64)] {
        let mut s = Seed::new().byte(0).bytes(b"").byte(0).done();
        let mut req = request(0, 0, 0, 1, &[], i::TWICE, canonical.as_bytes());
        // The faults byte follows the flags byte, which precedes the length.
        let at = req.len() - canonical.len() - 3;
        req[at] = faults;
        s.extend(req);
        out.push(("intake", name.to_owned(), s));
    }
}
