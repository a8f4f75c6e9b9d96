//! The canonical contract, on its own route (`canonical`, usually with a
//! bearer token) and signed with Standard Webhooks (`standard`).
//!
//! Both read the body with [`crate::contract::parse_canonical`]; the event's
//! source is the route it came in on, so the same `correlationId` on the two
//! routes is two incidents. Rules may match `incident_type` to set `group`
//! and `priority` ([`crate::mapping`]); with no rules the event passes as is.
//! The delivery id is the `webhook-id` header when present (always, when the
//! delivery is signed).

use super::{ids, CompiledSource, Delivery, Parsed};
use crate::auth::standard_webhooks::ID_HEADER;
use crate::contract::parse_canonical;
use crate::event::Source;
use crate::mapping::Vocabulary;
use crate::problem::Problem;

pub(crate) const VOCABULARY: Vocabulary = Vocabulary {
    facts: &["incident_type"],
    labels: false,
    modes: false,
    canonical: true,
};

pub(crate) fn parse(
    source: Source,
    delivery: &Delivery,
    cfg: &CompiledSource,
) -> Result<Parsed, Problem> {
    let mut event = parse_canonical(delivery.body, delivery.now, cfg.contract())?;
    event.source = source;
    Ok(Parsed {
        items: vec![cfg.mapping().refine_canonical(event)],
        delivery_id: ids::delivery_id(delivery.header(ID_HEADER)),
    })
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::testing::{at, compiled, events, parse_with};
    use super::super::{CompiledSource, Item};
    use crate::auth::standard_webhooks::{parse_secret, sign};
    use crate::event::{GroupId, RoutingMode, Source};

    const ACTIVE: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/standard/incident_active.json");
    const RESOLVED: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/standard/incident_resolved.json");
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";

    fn now() -> chrono::DateTime<chrono::Utc> {
        at("2024-08-15T14:22:30Z")
    }

    fn cfg() -> CompiledSource {
        compiled(
            Source::Standard,
            r#"{"auth": [{"kind": "standard_webhooks", "secret_env": "WHSEC"}],
                "rules": [{"match": {"incident_type": "CARRIER_OUTAGE"}, "group": "eg-voice",
                           "priority": 1}]}"#,
        )
    }

    fn send(
        body: &[u8],
        signed_at: i64,
        key: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<super::super::Parsed, crate::problem::Problem> {
        let sig = sign(key, MSG_ID, signed_at, body);
        let ts = signed_at.to_string();
        parse_with(
            Source::Standard,
            &cfg(),
            &[
                ("webhook-id", MSG_ID),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &sig),
            ],
            body,
            now,
        )
    }

    #[test]
    fn a_signed_canonical_body_is_accepted_and_refined() {
        let key = parse_secret(WHSEC).unwrap();
        let parsed = send(ACTIVE, now().timestamp(), &key, now()).unwrap();
        assert_eq!(parsed.delivery_id.as_deref(), Some(MSG_ID));
        let e = events(&parsed)[0];
        assert_eq!(e.source, Source::Standard);
        assert_eq!(e.correlation_id.as_str(), "INC-2024-08-15-7742");
        assert_eq!(e.routing_mode, RoutingMode::Active);
        assert_eq!(e.group.as_ref().map(GroupId::as_str), Some("eg-voice"));
        assert_eq!((e.priority, e.ttl_seconds), (1, 3600));
        assert_eq!(e.target_queue_ids.len(), 2);

        let parsed = send(RESOLVED, now().timestamp(), &key, now()).unwrap();
        assert_eq!(events(&parsed)[0].routing_mode, RoutingMode::Resolved);
    }

    #[test]
    fn stale_and_future_signatures_are_401() {
        let key = parse_secret(WHSEC).unwrap();
        let t = now().timestamp();
        assert!(send(ACTIVE, t - 300, &key, now()).is_ok());
        for skewed in [t - 301, t + 301] {
            let p = send(ACTIVE, skewed, &key, now()).unwrap_err();
            assert_eq!(p.status, 401);
            assert_eq!(p.errors[0].field, "webhook-timestamp");
        }
    }

    #[test]
    fn wrong_secret_tampered_body_and_missing_header_are_401() {
        let t = now().timestamp();
        let wrong = parse_secret("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX").unwrap();
        let p = send(ACTIVE, t, &wrong, now()).unwrap_err();
        assert_eq!(
            (p.status, p.errors[0].field.as_str()),
            (401, "webhook-signature")
        );

        let key = parse_secret(WHSEC).unwrap();
        let sig = sign(&key, MSG_ID, t, ACTIVE);
        let ts = t.to_string();
        let tampered = String::from_utf8(ACTIVE.to_vec())
            .unwrap()
            .replace("EMERGENCY_ACTIVE", "EMERGENCY_RESOLVED");
        let headers = [
            ("webhook-id", MSG_ID),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", sig.as_str()),
        ];
        let p = parse_with(
            Source::Standard,
            &cfg(),
            &headers,
            tampered.as_bytes(),
            now(),
        )
        .unwrap_err();
        assert_eq!(p.status, 401);
        let body = String::from_utf8(p.to_json()).unwrap();
        assert!(!body.contains(&sig[3..]) && !body.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));

        let p = parse_with(Source::Standard, &cfg(), &headers[1..], ACTIVE, now()).unwrap_err();
        assert_eq!(p.errors[0].field, "webhook-id");
    }

    #[test]
    fn canonical_route_with_bearer_or_signature() {
        let cfg = compiled(
            Source::Canonical,
            r#"{"auth": [{"kind": "bearer", "token_env": "TOKEN"},
                         {"kind": "standard_webhooks", "secret_env": "WHSEC"}]}"#,
        );
        let bearer = "Bearer test-token-0123456789abcdef";
        let parsed = parse_with(
            Source::Canonical,
            &cfg,
            &[("authorization", bearer)],
            ACTIVE,
            now(),
        )
        .unwrap();
        let e = events(&parsed)[0];
        assert_eq!(e.source, Source::Canonical);
        assert_eq!(e.group, None, "no rules: the event passes unchanged");
        assert_eq!(parsed.delivery_id, None);

        let key = parse_secret(WHSEC).unwrap();
        let t = now().timestamp();
        let sig = sign(&key, MSG_ID, t, ACTIVE);
        let ts = t.to_string();
        let headers = [
            ("webhook-id", MSG_ID),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", sig.as_str()),
        ];
        let parsed = parse_with(Source::Canonical, &cfg, &headers, ACTIVE, now()).unwrap();
        assert_eq!(parsed.delivery_id.as_deref(), Some(MSG_ID));

        let p = parse_with(Source::Canonical, &cfg, &[], ACTIVE, now()).unwrap_err();
        assert_eq!(p.status, 401);
        assert_eq!(p.errors.len(), 2);
        assert_eq!(p.headers[0].0, "www-authenticate");
    }

    #[test]
    fn contract_violations_pass_through_as_422() {
        let cfg = compiled(Source::Canonical, r#"{"insecure": true}"#);
        let p = parse_with(
            Source::Canonical,
            &cfg,
            &[],
            br#"{"correlationId": "x"}"#,
            now(),
        )
        .unwrap_err();
        assert_eq!(p.status, 422);
        let unmatched = compiled(
            Source::Canonical,
            r#"{"insecure": true, "rules": [{"match": {"incident_type": "OTHER"}}]}"#,
        );
        let parsed = parse_with(Source::Canonical, &unmatched, &[], ACTIVE, now()).unwrap();
        assert!(
            matches!(&parsed.items[..], [Item::Ignored { id, .. }] if id == "INC-2024-08-15-7742")
        );
    }
}
