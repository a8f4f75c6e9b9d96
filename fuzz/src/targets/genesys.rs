//! `genesys_answers`: what Genesys (or anything in its place) answers.
//!
//! Input: a byte (0: the call failed without a status), a 16-bit status, a
//! byte of header count and that many (name, value) pairs, then the body.
//!
//! `Answer::classify` is total and consistent with the status; the token
//! manager's outcome follows the class and an obtained token is usable and
//! never shown; both drivers read the body as a group or a routing state, and
//! what they write back is the object read with only the switch changed
//! (or a well-formed guide request); every model survives its JSON round trip.

use std::sync::{Arc, OnceLock};

use emr_core::event::GroupId;
use emr_core::genesys::driver::{
    Decision, Driver, EmergencyGroupDriver, GuideContractDriver, Snapshot, Target,
};
use emr_core::genesys::models::{
    EmergencyGroup, ErrorBody, GuideRequest, GuideState, OAuthErrorBody, QueueRow, TokenAnswer,
};
use emr_core::genesys::token::TokenOutcome;
use emr_core::genesys::{Answer, AnswerClass, CallResult, GenesysSettings, TokenManager};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{now, same_json, Input};

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

const NAMES: [&str; 7] = [
    "inin-correlation-id",
    "retry-after",
    "inin-ratelimit-count",
    "inin-ratelimit-allowed",
    "inin-ratelimit-reset",
    "ININ-Correlation-Id",
    "",
];

fn settings() -> &'static Arc<GenesysSettings> {
    static SETTINGS: OnceLock<Arc<GenesysSettings>> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let env = |k: &str| match k {
            "GENESYS_CLIENT_ID" => Some("emr-edge-client".to_owned()),
            "GENESYS_CLIENT_SECRET" => Some("genesys-secret-fake-0123456789".to_owned()),
            _ => None,
        };
        let cfg = emr_core::config::parse(
            br#"{"genesys": {"region": "mypurecloud.ie", "default_group": "eg-voice"}}"#,
            &env,
        )
        .unwrap();
        cfg.genesys.unwrap()
    })
}

pub fn genesys_answers(data: &[u8]) {
    let mut input = Input::new(data);
    let failed = input.byte() == 0;
    let status = input.u16();
    let count = input.byte() % 8;
    let headers: Vec<(String, String)> = (0..count)
        .map(|_| {
            let name = match input.pick(&NAMES) {
                "" => input.string(),
                n => n.to_owned(),
            };
            (name, input.string())
        })
        .collect();
    let body = input.rest();
    let result = if failed {
        CallResult::Failed
    } else {
        CallResult::Response {
            status,
            headers: headers.clone(),
            body: body.to_vec(),
        }
    };

    let answer = Answer::classify(&result, now());
    check_answer(&answer, if failed { None } else { Some(status) });
    check_token(&answer, body);
    check_group_driver(body);
    check_guide_driver(body);
    round_trip::<ErrorBody>(body);
    round_trip::<QueueRow>(body);
    let _ = serde_json::from_slice::<OAuthErrorBody>(body);
    let _ = serde_json::from_slice::<TokenAnswer>(body).map(|t| format!("{t:?}"));
}

fn check_answer(a: &Answer, status: Option<u16>) {
    let Some(s) = status.filter(|s| (100..=599).contains(s)) else {
        assert_eq!(a.class, AnswerClass::Transport);
        assert_eq!(a.status, None);
        assert!(!a.describe().is_empty());
        return;
    };
    assert_eq!(a.status, Some(s));
    let expected = match s {
        200..=299 => AnswerClass::Success,
        401 => AnswerClass::Unauthorized,
        403 => AnswerClass::Forbidden,
        404 => AnswerClass::NotFound,
        409 => AnswerClass::VersionConflict,
        429 => AnswerClass::RateLimited,
        408 | 500..=599 => AnswerClass::ServerError,
        400 if a.class == AnswerClass::VersionConflict => AnswerClass::VersionConflict,
        _ => AnswerClass::Refused,
    };
    assert_eq!(a.class, expected, "status {s}");
    if a.class != AnswerClass::RateLimited {
        assert_eq!(a.retry_after_seconds, None);
    }
    if (200..300).contains(&s) {
        assert!(a.error.is_none());
    }
    if a.oauth_error.is_some() {
        assert!((400..500).contains(&s));
    }
    assert!(a.describe().starts_with(&s.to_string()));
    let v = a.to_json();
    assert_eq!(v["status"], u64::from(s));
    assert_eq!(v["class"], a.class.as_str());
    assert_eq!(a.genesys_ref().http_status, Some(s));
}

fn check_token(answer: &Answer, body: &[u8]) {
    let cfg = settings();
    let mut tm = TokenManager::new();
    let call = tm.start(1, cfg);
    assert!(tm.is_fetching());
    assert_eq!(call.method, "POST");
    let outcome = tm.finish(answer, body, now(), now(), cfg);
    match (answer.class, &outcome) {
        (AnswerClass::Success, TokenOutcome::Obtained { .. })
        | (AnswerClass::Success, TokenOutcome::Transient(_))
        | (AnswerClass::RateLimited, TokenOutcome::RateLimited)
        | (AnswerClass::ServerError | AnswerClass::Transport, TokenOutcome::Transient(_)) => {}
        (
            AnswerClass::Unauthorized
            | AnswerClass::Forbidden
            | AnswerClass::NotFound
            | AnswerClass::VersionConflict
            | AnswerClass::Refused,
            TokenOutcome::Rejected(_),
        ) => {}
        (class, o) => panic!("a {class} token answer gave {o:?}"),
    }
    assert!(!tm.is_fetching());
    let view = tm.view(now()).to_string();
    match outcome {
        TokenOutcome::Obtained { .. } => {
            let bearer = tm
                .bearer(now())
                .expect("an obtained token is usable at once");
            let value = bearer.header_value();
            assert!(
                !value.chars().any(char::is_control),
                "token with control chars"
            );
            let token = value.strip_prefix("Bearer ").unwrap();
            if token.len() > 40 {
                assert!(!view.contains(token), "the state view shows the token");
            }
            let exported = tm.export().unwrap();
            let mut other = TokenManager::new();
            assert!(
                other.import(exported, now()),
                "an exported token is refused"
            );
            assert_eq!(
                other.bearer(now()).map(|b| b.header_value()),
                Some(value.clone())
            );
        }
        _ => assert!(tm.bearer(now()).is_none()),
    }
}

fn check_group_driver(body: &[u8]) {
    let d = EmergencyGroupDriver;
    let observed = d.observe(body);
    assert_eq!(observed.as_ref().ok(), d.written(body).as_ref());
    let Ok(observed) = observed else { return };
    let Snapshot::Group(g) = &observed.snapshot else {
        panic!("the group driver read something else")
    };
    round_trip_value(g.as_ref());
    assert_eq!(observed.enabled, g.enabled);
    assert_eq!(observed.version, Some(g.version));

    if let Ok(other) = GroupId::parse("not-this-group") {
        if g.id != other.as_str() {
            let t = target(!g.enabled);
            assert!(matches!(
                d.decide(&other, &observed, &t),
                Decision::Refuse(_)
            ));
        }
    }
    let Ok(id) = GroupId::parse(&g.id) else {
        return;
    };
    for enabled in [false, true] {
        match d.decide(&id, &observed, &target(enabled)) {
            Decision::Refuse(_) => assert!(g.is_deleted()),
            Decision::InSync => assert_eq!(g.enabled, enabled),
            Decision::Pending => panic!("the group driver never waits"),
            Decision::Write(req) => {
                assert!(!g.is_deleted() && g.enabled != enabled);
                assert_eq!(req.method, "PUT");
                check_path(&req.path, "/api/v2/architect/emergencygroups/");
                let sent: EmergencyGroup =
                    serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
                let mut expected = (**g).clone();
                expected.enabled = enabled;
                let (sent, expected) = (to_value(&sent), to_value(&expected));
                assert!(
                    same_json(&sent, &expected),
                    "the PUT changes more than the switch"
                );
            }
        }
    }
}

fn check_guide_driver(body: &[u8]) {
    let d = GuideContractDriver { priority: 2 };
    let observed = d.observe(body);
    assert_eq!(observed.as_ref().ok(), d.written(body).as_ref());
    let Ok(observed) = observed else { return };
    let Snapshot::Guide(r) = &observed.snapshot else {
        panic!("the guide driver read something else")
    };
    round_trip_value(r.as_ref());
    let id = GroupId::parse("eg-voice").unwrap();
    for enabled in [false, true] {
        match d.decide(&id, &observed, &target(enabled)) {
            Decision::Pending => assert_eq!(r.state, GuideState::Pending),
            Decision::InSync => assert_ne!(r.state, GuideState::Pending),
            Decision::Refuse(why) => panic!("the guide driver refused: {why}"),
            Decision::Write(req) => {
                assert_eq!(req.method, "POST");
                let sent: GuideRequest =
                    serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
                let want = if enabled {
                    GuideState::Active
                } else {
                    GuideState::Inactive
                };
                assert_eq!(sent.state, want);
                assert_eq!(
                    sent.routing_configuration.map(|c| c.queue_ids),
                    enabled.then(|| target(true).queues)
                );
            }
        }
    }
}

fn target(enabled: bool) -> Target {
    Target {
        enabled,
        queues: vec!["queue-1".into(), "queue-2".into()],
        incidents: vec!["INC-1".into()],
        reason: "INC-1".into(),
    }
}

/// A path built from `prefix` and one escaped segment: nothing in it can
/// add a segment, a query or climb a level.
fn check_path(path: &str, prefix: &str) {
    let seg = path.strip_prefix(prefix).unwrap();
    assert!(
        !seg.is_empty() && seg != "." && seg != "..",
        "segment {seg:?}"
    );
    assert!(
        seg.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
        "segment {seg:?}"
    );
}

/// Parses `body` as `T`; what parses writes back and parses to the same.
fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(body: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(body) {
        round_trip_value(&v);
    }
}

fn round_trip_value<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(v: &T) {
    let bytes = serde_json::to_vec(v).unwrap();
    let back: T = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{} does not read back ({e}): {}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&bytes)
        )
    });
    assert!(
        same_json(&to_value(&back), &to_value(v)),
        "{} changed in its round trip: {v:?} became {back:?}",
        std::any::type_name::<T>()
    );
}
