#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::poller::LedgerOp;
use super::*;
use crate::callout::{CallResult, HttpCall};
use crate::event::{
    CorrelationId, GroupId, IncidentEvent, IncidentKey, IncidentType, QueueId, QueuedEvent,
    RoutingMode, Source,
};
use crate::ledger::Ledger;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_723_731_721 + s, 0).unwrap()
}

fn env(name: &str) -> Option<String> {
    match name {
        "PD_TOKEN" => Some("pd-rest-api-key".into()),
        "SN_USER" => Some("emr".into()),
        "SN_PASSWORD" => Some("sn-pass".into()),
        "JIRA_TOKEN" => Some("jira-bearer".into()),
        _ => None,
    }
}

/// The settings, or the first error (`every_problem_is_reported`
/// checks that none is lost).
fn settings(v: Value) -> Result<ItsmSettings, crate::problem::FieldError> {
    ItsmConfig::deserialize(v)
        .unwrap()
        .compile(&env)
        .map_err(|mut e| e.remove(0))
}

#[test]
fn every_problem_is_reported() {
    let errors = ItsmConfig::deserialize(json!({
        "max_in_flight": 0,
        "pagerduty": {"token_env": "MISSING", "poll_seconds": 0},
        "servicenow": {"username_env": "SN_USER", "password_env": "ALSO_MISSING", "table": "a b"}
    }))
    .unwrap()
    .compile(&env)
    .unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "max_in_flight",
            "pagerduty.token_env",
            "pagerduty.poll_seconds",
            "servicenow.authority",
            "servicenow.password_env",
            "servicenow.table",
        ]
    );
    assert!(errors[1].message.contains("host_env_keys"), "{errors:?}");
}

fn all() -> Arc<ItsmSettings> {
    Arc::new(
        settings(json!({
            "pagerduty": {"token_env": "PD_TOKEN", "poll_seconds": 60},
            "servicenow": {"authority": "acme.service-now.com", "username_env": "SN_USER", "password_env": "SN_PASSWORD", "poll_seconds": 60},
            "jsm": {"authority": "acme.atlassian.net", "token_env": "JIRA_TOKEN", "poll_seconds": 60}
        }))
        .unwrap(),
    )
}

fn key(source: Source, id: &str) -> IncidentKey {
    IncidentKey {
        source,
        id: CorrelationId::parse(id).unwrap(),
    }
}

fn open(l: &mut Ledger, source: Source, id: &str) {
    let q = QueuedEvent {
        event: IncidentEvent {
            source,
            correlation_id: CorrelationId::parse(id).unwrap(),
            incident_type: IncidentType::parse("X").unwrap(),
            routing_mode: RoutingMode::Active,
            target_queue_ids: vec![QueueId::parse("q").unwrap()],
            timestamp: t(0),
            ttl_seconds: 86_400,
            priority: 3,
            group: None,
            detail: None,
            about: None,
        },
        received_ms: t(0).timestamp_millis(),
        delivery_id: None,
        slot: false,
    };
    l.apply(&q, GroupId::parse("G").unwrap(), t(0));
}

fn ok(body: Value) -> CallResult {
    CallResult::json(200, &body)
}

fn calls(fx: &[PollEffect]) -> Vec<HttpCall> {
    fx.iter()
        .filter_map(|e| match e {
            PollEffect::Call(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn each_tool_is_asked_its_own_way() {
    let s = all();
    let pd = &s.tools[&Source::Pagerduty];
    assert_eq!(pd.cluster, "pagerduty_api");
    assert_eq!(pd.authority, "api.pagerduty.com");
    assert_eq!(request(pd, "Q2UEJOMV3XYQ9N").0, "/incidents/Q2UEJOMV3XYQ9N");
    let sn = &s.tools[&Source::Servicenow];
    assert_eq!(
        request(sn, "INC0010023").0,
        "/api/now/table/incident?sysparm_query=number%3DINC0010023&sysparm_fields=number%2Cstate%2Csys_id&sysparm_limit=1"
    );
    assert!(request(sn, "46e18c0fa9fe19810066a0083f76bd56")
        .0
        .contains("sysparm_query=sys_id%3D46e18c0fa9fe19810066a0083f76bd56"));
    let jira = &s.tools[&Source::Jsm];
    assert_eq!(
        request(jira, "ITSM-42").0,
        "/rest/api/3/issue/ITSM-42?fields=status"
    );
    assert_eq!(jira.cluster, "jira_api");
}

#[test]
fn credentials_are_sent_the_tools_way_and_never_shown() {
    let s = all();
    let mut p = Poller::new(Arc::clone(&s));
    let mut l = Ledger::default();
    open(&mut l, Source::Pagerduty, "P1");
    open(&mut l, Source::Servicenow, "INC1");
    open(&mut l, Source::Jsm, "OPS-1");
    for (src, id) in [
        (Source::Pagerduty, "P1"),
        (Source::Servicenow, "INC1"),
        (Source::Jsm, "OPS-1"),
    ] {
        p.watch(&key(src, id), &l, t(0));
    }
    let mut out = calls(&p.poll(&l, t(60)));
    out.extend(calls(&p.poll(&l, t(60))));
    assert_eq!(out.len(), 2, "two in flight at most");
    let auth: Vec<&str> = out
        .iter()
        .map(|c| c.header("authorization").unwrap())
        .collect();
    assert!(auth.contains(&"Token token=pd-rest-api-key"));
    assert!(auth.contains(&"Basic ZW1yOnNuLXBhc3M="));
    let shown = format!("{s:?} {out:?}");
    for secret in [
        "pd-rest-api-key",
        "sn-pass",
        "jira-bearer",
        "ZW1yOnNuLXBhc3M",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert_eq!(out[0].authority, "api.pagerduty.com");
    assert_eq!(out[0].method, "GET");
}

#[test]
fn config_errors_name_the_field() {
    let e =
        settings(json!({"servicenow": {"username_env": "SN_USER", "password_env": "SN_PASSWORD"}}))
            .unwrap_err();
    assert_eq!(e.field, "servicenow.authority");
    let e = settings(json!({"pagerduty": {}})).unwrap_err();
    assert_eq!(e.field, "pagerduty.token_env");
    let e = settings(json!({"pagerduty": {"token_env": "MISSING"}})).unwrap_err();
    assert_eq!(e.field, "pagerduty.token_env");
    assert!(e.message.contains("MISSING"));
    let e =
        settings(json!({"pagerduty": {"username_env": "SN_USER", "password_env": "SN_PASSWORD"}}))
            .unwrap_err();
    assert_eq!(e.field, "pagerduty.token_env");
    let e = settings(json!({"jsm": {"authority": "x.atlassian.net", "insecure": true, "token_env": "JIRA_TOKEN"}})).unwrap_err();
    assert_eq!(e.field, "jsm.insecure");
    let e = settings(json!({"jsm": {"authority": "https://x", "insecure": true}})).unwrap_err();
    assert_eq!(e.field, "jsm.authority");
    let e = settings(json!({"pagerduty": {"insecure": true, "poll_seconds": 0}})).unwrap_err();
    assert_eq!(e.field, "pagerduty.poll_seconds");
    let e = settings(json!({"max_in_flight": 0})).unwrap_err();
    assert_eq!(e.field, "max_in_flight");
    let e = settings(
        json!({"servicenow": {"authority": "a.b", "insecure": true, "table": "inc;drop"}}),
    )
    .unwrap_err();
    assert_eq!(e.field, "servicenow.table");
    assert!(ItsmConfig::deserialize(json!({"pagerduty": {"tokn_env": "x"}})).is_err());
    // Nothing secret in any message.
    let e = settings(json!({"servicenow": {"authority": "a.b", "username_env": "SN_USER"}}))
        .unwrap_err();
    assert!(!e.message.contains("sn-pass"));
}

#[test]
fn answers_are_read_per_tool() {
    let pd = |s: &str| {
        parse_pagerduty(
            &serde_json::to_vec(&json!({"incident": {"id": "P1", "status": s}})).unwrap(),
        )
    };
    assert_eq!(pd("resolved"), Ok(ToolStatus::Resolved("resolved".into())));
    assert_eq!(
        pd("acknowledged"),
        Ok(ToolStatus::Open("acknowledged".into()))
    );
    assert!(pd("exploded").is_err());
    assert!(parse_pagerduty(b"{}").is_err());

    let sn = |state: Value| {
        parse_servicenow(
            &serde_json::to_vec(&json!({"result": [{"number": "INC1", "state": state}]})).unwrap(),
        )
    };
    assert!(matches!(sn(json!("6")), Ok(ToolStatus::Resolved(_))));
    assert!(matches!(sn(json!("7")), Ok(ToolStatus::Resolved(_))));
    assert!(matches!(sn(json!(8)), Ok(ToolStatus::Resolved(_))));
    assert!(matches!(sn(json!("Resolved")), Ok(ToolStatus::Resolved(_))));
    assert!(matches!(
        sn(json!({"value": "6", "display_value": "Resolved"})),
        Ok(ToolStatus::Resolved(_))
    ));
    assert_eq!(sn(json!("2")), Ok(ToolStatus::Open("state 2".into())));
    assert!(matches!(sn(json!("In Progress")), Ok(ToolStatus::Open(_))));
    assert!(sn(json!(null)).is_err());
    assert_eq!(
        parse_servicenow(br#"{"result": []}"#),
        Ok(ToolStatus::NotFound)
    );
    assert!(parse_servicenow(b"[]").is_err());

    let jira = |name: &str, cat: &str| {
        parse_jira(&serde_json::to_vec(&json!({"key": "OPS-1", "fields": {"status": {"name": name, "statusCategory": {"key": cat}}}})).unwrap())
    };
    assert_eq!(
        jira("Done", "done"),
        Ok(ToolStatus::Resolved("Done (done)".into()))
    );
    assert!(matches!(jira("Fixed", "done"), Ok(ToolStatus::Resolved(_))));
    assert!(matches!(
        jira("In Progress", "indeterminate"),
        Ok(ToolStatus::Open(_))
    ));
    assert!(parse_jira(br#"{"fields": {}}"#).is_err());
    assert!(parse_jira(b"not json").is_err());
}

#[test]
fn an_incident_resolved_in_the_tool_is_resolved_here_within_one_poll() {
    let mut p = Poller::new(all());
    let mut l = Ledger::default();
    open(&mut l, Source::Pagerduty, "P1");
    let k = key(Source::Pagerduty, "P1");
    p.watch(&k, &l, t(0));
    assert!(
        calls(&p.poll(&l, t(59))).is_empty(),
        "not before one period"
    );
    assert_eq!(p.next_wakeup(), Some(t(60)));
    let out = calls(&p.poll(&l, t(60)));
    assert_eq!(out.len(), 1);
    // Still open there: asked again a period later.
    let fx = p.on_result(
        out[0].op,
        ok(json!({"incident": {"status": "triggered"}})),
        &l,
        t(61),
    );
    assert!(fx
        .iter()
        .any(|e| matches!(e, PollEffect::Audit(a) if a["decision"] == "still-open")));
    // …which renews its expiry: at least two poll periods away.
    assert!(fx.contains(&PollEffect::Ledger(PollChange(LedgerOp::Renew {
        key: k.clone(),
        at_least: Duration::seconds(120),
    }))));
    assert_eq!(p.next_wakeup(), Some(t(121)));
    let out = calls(&p.poll(&l, t(121)));
    let fx = p.on_result(
        out[0].op,
        ok(json!({"incident": {"status": "resolved"}})),
        &l,
        t(122),
    );
    let resolved: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            PollEffect::Ledger(PollChange(LedgerOp::Resolve { key, detail })) => {
                Some((key.clone(), detail.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].0, k);
    assert!(
        resolved[0].1.starts_with("PagerDuty says resolved"),
        "{}",
        resolved[0].1
    );
    assert!(fx.contains(&PollEffect::Metric(PollMetric::PolledResolved)));
    // The glue resolves it; nothing more is asked.
    l.resolve_by_poll(&k, resolved[0].1.clone(), t(122));
    assert_eq!(p.tracked(), 0);
    assert!(calls(&p.poll(&l, t(10_000))).is_empty());
    assert_eq!(p.view(t(122))["recent"].as_array().unwrap().len(), 2);
}

#[test]
fn closed_incidents_hashed_ids_and_unconfigured_tools_are_not_asked() {
    let mut p = Poller::new(all());
    let mut l = Ledger::default();
    open(&mut l, Source::Jsm, "OPS-1");
    p.watch(&key(Source::Canonical, "INC-1"), &l, t(0));
    p.watch(&key(Source::Opsgenie, "abc"), &l, t(0));
    p.watch(
        &key(Source::Jsm, "sha256:00112233445566778899aabbccddeeff"),
        &l,
        t(0),
    );
    assert_eq!(p.tracked(), 0);
    p.watch(&key(Source::Jsm, "OPS-1"), &l, t(0));
    p.watch(&key(Source::Jsm, "OPS-1"), &l, t(30));
    assert_eq!(
        p.next_wakeup(),
        Some(t(60)),
        "watching twice does not delay it"
    );
    // Resolved by its webhook meanwhile: dropped at its turn, no call.
    l.resolve_by_poll(&key(Source::Jsm, "OPS-1"), "x".into(), t(10));
    assert!(calls(&p.poll(&l, t(60))).is_empty());
    assert_eq!(p.tracked(), 0);
}

#[test]
fn failures_retry_sooner_and_a_429_pauses_the_tool() {
    let mut p = Poller::new(all());
    let mut l = Ledger::default();
    open(&mut l, Source::Pagerduty, "P1");
    open(&mut l, Source::Pagerduty, "P2");
    p.watch(&key(Source::Pagerduty, "P1"), &l, t(0));
    p.watch(&key(Source::Pagerduty, "P2"), &l, t(1));
    let out = calls(&p.poll(&l, t(60)));
    assert_eq!(out.len(), 1);
    let fx = p.on_result(
        out[0].op,
        CallResult::Response {
            status: 429,
            headers: vec![("Retry-After".into(), "120".into())],
            body: vec![],
        },
        &l,
        t(60),
    );
    assert!(fx.contains(&PollEffect::Metric(PollMetric::RateLimited)));
    // P2 is due at 61 but PagerDuty is paused until 180.
    assert!(calls(&p.poll(&l, t(61))).is_empty());
    assert_eq!(
        p.view(t(61))["tools"][0]["pausedUntil"],
        "2024-08-15T14:25:01.000Z"
    );
    let out = calls(&p.poll(&l, t(180)));
    assert_eq!(out.len(), 2);
    // A timeout: asked again within 30 s, not a whole period.
    let fx = p.on_result(out[0].op, CallResult::Failed, &l, t(181));
    assert!(fx.contains(&PollEffect::Metric(PollMetric::Failed)));
    let fx = p.on_result(
        out[1].op,
        CallResult::Response {
            status: 404,
            headers: vec![],
            body: vec![],
        },
        &l,
        t(181),
    );
    assert!(fx.contains(&PollEffect::Metric(PollMetric::NotFound)));
    assert_eq!(p.next_wakeup(), Some(t(211)));
    // A poll never answered is given up on after its timeout.
    let out = calls(&p.poll(&l, t(211)));
    assert_eq!(out.len(), 1);
    let fx = p.poll(&l, t(219));
    assert!(fx.contains(&PollEffect::Metric(PollMetric::Failed)));
}

#[test]
fn tracking_is_bounded_even_under_churn() {
    let s = Arc::new(settings(json!({"pagerduty": {"insecure": true}})).unwrap());
    let mut p = Poller::new(s);
    let mut l = Ledger::default();
    for i in 0..MAX_TRACKED + 10 {
        let id = format!("P{i}");
        open(&mut l, Source::Pagerduty, &id);
        p.watch(&key(Source::Pagerduty, &id), &l, t(0));
        // Each closes at once (its resolution webhook came).
        l.resolve_by_poll(&key(Source::Pagerduty, &id), "x".into(), t(1));
    }
    assert!(p.tracked() <= MAX_TRACKED);
    assert_eq!(p.insecure_tools(), ["PagerDuty"]);
}

#[test]
fn polls_are_budgeted() {
    let s = Arc::new(
        settings(json!({"pagerduty": {"insecure": true, "poll_seconds": 1}, "max_in_flight": 16, "polls_per_minute": 6})).unwrap(),
    );
    let mut p = Poller::new(s);
    let mut l = Ledger::default();
    for i in 0..20 {
        open(&mut l, Source::Pagerduty, &format!("P{i}"));
        p.watch(&key(Source::Pagerduty, &format!("P{i}")), &l, t(0));
    }
    let mut sent = 0;
    for s in 1..=60 {
        let out = calls(&p.poll(&l, t(s)));
        for c in &out {
            assert!(
                c.header("authorization").is_none(),
                "insecure: no credential"
            );
            p.on_result(
                c.op,
                ok(json!({"incident": {"status": "triggered"}})),
                &l,
                t(s),
            );
        }
        sent += out.len();
    }
    assert!(
        sent <= 7,
        "{sent} polls in a minute at 6 a minute (+1 burst)"
    );
}
