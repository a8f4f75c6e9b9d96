//! Standard Webhooks (<https://www.standardwebhooks.com/>) signatures.
//!
//! The sender signs `{webhook-id}.{webhook-timestamp}.{raw body}` with
//! HMAC-SHA256 under the base64 key of a `whsec_…` secret, and sends a
//! space-separated list of `v1,<base64>` signatures. We check the timestamp
//! first (replay protection: at most `tolerance_seconds` off our clock, in
//! either direction), then accept any `v1` signature from any of our secrets.
//! Other versions in the list (`v1a`, asymmetric) are skipped.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::secret::{self, ct_eq, Secret};
use super::signature::hmac_sha256;
use super::{single_header, Failure};
use crate::field::{read_env, Spaces};
use crate::problem::FieldError;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The specification's recommended tolerance: five minutes.
pub const DEFAULT_TOLERANCE_SECONDS: u32 = 300;

/// Config: the `whsec_` secret(s) and the timestamp tolerance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandardWebhooksConfig {
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_envs: Vec<String>,
    /// Largest accepted distance between `webhook-timestamp` and our clock.
    #[serde(default)]
    pub tolerance_seconds: Option<u32>,
}

impl StandardWebhooksConfig {
    pub(crate) fn compile(
        &self,
        base: &str,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<FieldError>,
    ) -> Verifier {
        let keys = secret::env_names(
            self.secret_env.as_ref(),
            &self.secret_envs,
            base,
            "secret_env",
            "secret_envs",
            errors,
        )
        .into_iter()
        .filter_map(|(field, var)| {
            let value = read_env(env, &field, var, Spaces::Refuse, errors)?;
            let key = parse_secret(&value).filter(|k| k.len() >= secret::MIN_SECRET_LEN);
            if key.is_none() {
                errors.push(FieldError::new(
                    field,
                    format!(
                        "environment variable {var} must hold whsec_<base64> of at least {} bytes",
                        secret::MIN_SECRET_LEN
                    ),
                ));
            }
            key.map(Secret::new)
        })
        .collect();
        let tolerance_seconds = self.tolerance_seconds.unwrap_or(DEFAULT_TOLERANCE_SECONDS);
        if tolerance_seconds == 0 || tolerance_seconds > 3600 {
            errors.push(FieldError::new(
                format!("{base}.tolerance_seconds"),
                "must be between 1 and 3600",
            ));
        }
        Verifier {
            keys,
            tolerance_seconds,
        }
    }
}

/// The HMAC key of a `whsec_<base64>` secret (the prefix is optional).
pub fn parse_secret(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD.decode(b64).ok().filter(|k| !k.is_empty())
}

/// One `v1,<base64>` signature for `body`, as a sender would put in
/// `webhook-signature`. `key` is the decoded secret ([`parse_secret`]).
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac =
        hmac_sha256(key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]).unwrap_or_default();
    format!("v1,{}", STANDARD.encode(mac))
}

/// Compiled keys and tolerance.
#[derive(Debug, Clone)]
pub(crate) struct Verifier {
    keys: Vec<Secret>,
    tolerance_seconds: u32,
}

impl Verifier {
    pub(crate) fn keys(&self) -> &[Secret] {
        &self.keys
    }

    pub(crate) fn verify(
        &self,
        headers: &[(String, String)],
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), Failure> {
        let signature = single_header(headers, SIGNATURE_HEADER)?
            .ok_or_else(|| Failure::missing(SIGNATURE_HEADER))?;
        let id = single_header(headers, ID_HEADER)?
            .ok_or_else(|| Failure::invalid(ID_HEADER, "is missing"))?;
        let ts_text = single_header(headers, TIMESTAMP_HEADER)?
            .ok_or_else(|| Failure::invalid(TIMESTAMP_HEADER, "is missing"))?;
        let ts: i64 = ts_text.parse().map_err(|_| {
            Failure::invalid(
                TIMESTAMP_HEADER,
                "must be whole seconds since the UNIX epoch",
            )
        })?;
        let age = now.timestamp().saturating_sub(ts);
        let tolerance = i64::from(self.tolerance_seconds);
        if age > tolerance {
            return Err(Failure::invalid(
                TIMESTAMP_HEADER,
                "is too old: outside the replay tolerance",
            ));
        }
        if age < -tolerance {
            return Err(Failure::invalid(
                TIMESTAMP_HEADER,
                "is in the future: outside the replay tolerance",
            ));
        }
        let signatures: Vec<Vec<u8>> = signature
            .split_ascii_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .collect();
        if signatures.is_empty() {
            return Err(Failure::invalid(
                SIGNATURE_HEADER,
                "holds no v1,<base64> signature",
            ));
        }
        let signed = [id.as_bytes(), b".", ts_text.as_bytes(), b".", body];
        let ok = self.keys.iter().any(|k| {
            hmac_sha256(k.expose(), &signed)
                .is_some_and(|mac| signatures.iter().any(|s| ct_eq(&mac, s)))
        });
        if ok {
            Ok(())
        } else {
            Err(Failure::invalid(
                SIGNATURE_HEADER,
                "does not match the body",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    // The specification's published test vector.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn verifier(secrets: &[&str]) -> Verifier {
        let env = |k: &str| {
            k.strip_prefix("S")
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| secrets.get(i))
                .map(|s| s.to_string())
        };
        let cfg = StandardWebhooksConfig {
            secret_envs: (0..secrets.len()).map(|i| format!("S{i}")).collect(),
            ..Default::default()
        };
        let mut errors = Vec::new();
        let v = cfg.compile("auth[0]", &env, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        v
    }

    fn headers(id: &str, ts: &str, sig: &str) -> Vec<(String, String)> {
        vec![
            (ID_HEADER.into(), id.into()),
            (TIMESTAMP_HEADER.into(), ts.into()),
            (SIGNATURE_HEADER.into(), sig.into()),
        ]
    }

    fn at(ts: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(ts, 0).unwrap()
    }

    #[test]
    fn signs_the_specification_test_vector() {
        let key = parse_secret(SPEC_SECRET).unwrap();
        assert_eq!(sign(&key, SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIGNATURE);
    }

    #[test]
    fn verifies_the_specification_test_vector() {
        let v = verifier(&[SPEC_SECRET]);
        let h = headers(SPEC_ID, &SPEC_TS.to_string(), SPEC_SIGNATURE);
        assert!(v.verify(&h, SPEC_BODY, at(SPEC_TS)).is_ok());
    }

    #[test]
    fn accepts_any_listed_signature_and_any_rotated_secret() {
        let other = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX";
        let v = verifier(&[other, SPEC_SECRET]);
        let list = format!("v1a,bm90LWNoZWNrZWQ= v1,AAAA {SPEC_SIGNATURE}");
        let h = headers(SPEC_ID, &SPEC_TS.to_string(), &list);
        assert!(v.verify(&h, SPEC_BODY, at(SPEC_TS)).is_ok());
    }

    #[test]
    fn tolerates_five_minutes_either_way_and_no_more() {
        let v = verifier(&[SPEC_SECRET]);
        let h = headers(SPEC_ID, &SPEC_TS.to_string(), SPEC_SIGNATURE);
        assert!(v.verify(&h, SPEC_BODY, at(SPEC_TS + 300)).is_ok());
        assert!(v.verify(&h, SPEC_BODY, at(SPEC_TS - 300)).is_ok());
        let stale = v.verify(&h, SPEC_BODY, at(SPEC_TS + 301)).unwrap_err();
        assert_eq!(stale.header, TIMESTAMP_HEADER);
        assert_eq!(stale.message, "is too old: outside the replay tolerance");
        let future = v.verify(&h, SPEC_BODY, at(SPEC_TS - 301)).unwrap_err();
        assert_eq!(
            future.message,
            "is in the future: outside the replay tolerance"
        );
    }

    #[test]
    fn refuses_tampering_wrong_secret_and_missing_headers() {
        let v = verifier(&[SPEC_SECRET]);
        let now = at(SPEC_TS);
        let ts = SPEC_TS.to_string();
        let h = headers(SPEC_ID, &ts, SPEC_SIGNATURE);
        assert!(v.verify(&h, br#"{"test": 2432232315}"#, now).is_err());
        // The id and timestamp are signed too.
        assert!(v
            .verify(&headers("msg_other", &ts, SPEC_SIGNATURE), SPEC_BODY, now)
            .is_err());
        let wrong = verifier(&["whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"]);
        let f = wrong.verify(&h, SPEC_BODY, now).unwrap_err();
        assert_eq!(f.message, "does not match the body");

        assert_eq!(
            v.verify(&[], SPEC_BODY, now).unwrap_err(),
            Failure::missing(SIGNATURE_HEADER)
        );
        let no_id = vec![h[1].clone(), h[2].clone()];
        assert_eq!(
            v.verify(&no_id, SPEC_BODY, now).unwrap_err().header,
            ID_HEADER
        );
        let no_ts = vec![h[0].clone(), h[2].clone()];
        assert_eq!(
            v.verify(&no_ts, SPEC_BODY, now).unwrap_err().header,
            TIMESTAMP_HEADER
        );
        let bad_ts = headers(SPEC_ID, "2021-02-25T15:02:10Z", SPEC_SIGNATURE);
        assert_eq!(
            v.verify(&bad_ts, SPEC_BODY, now).unwrap_err().header,
            TIMESTAMP_HEADER
        );
        let no_v1 = headers(SPEC_ID, &ts, "v2,abc");
        assert_eq!(
            v.verify(&no_v1, SPEC_BODY, now).unwrap_err().message,
            "holds no v1,<base64> signature"
        );
    }

    #[test]
    fn config_refuses_non_whsec_values_without_printing_them() {
        let env = |k: &str| (k == "W").then(|| "not base64 at all!!".to_string());
        let cfg = StandardWebhooksConfig {
            secret_env: Some("W".into()),
            tolerance_seconds: Some(0),
            ..Default::default()
        };
        let mut errors = Vec::new();
        cfg.compile("sources.standard.auth[0]", &env, &mut errors);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].field, "sources.standard.auth[0].secret_env");
        assert!(!errors[0].message.contains("not base64"));
        assert_eq!(
            errors[1].field,
            "sources.standard.auth[0].tolerance_seconds"
        );
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A Standard Webhooks signature verifies only for the exact id,
        /// timestamp and body bytes that were signed.
        #[test]
        fn signature_binds_id_timestamp_and_body(
            key in proptest::collection::vec(any::<u8>(), 16..64),
            body in proptest::collection::vec(any::<u8>(), 0..256),
            other in proptest::collection::vec(any::<u8>(), 0..256),
            ts in 1_600_000_000i64..1_900_000_000,
            skew in -300i64..=300,
            id in "[A-Za-z0-9_]{1,32}",
            other_id in "[A-Za-z0-9_]{1,32}",
        ) {
            let v = Verifier { keys: vec![Secret::new(key.clone())], tolerance_seconds: 300 };
            let now = DateTime::from_timestamp(ts + skew, 0).unwrap();
            let sig = sign(&key, &id, ts, &body);
            let h = |id: &str| vec![
                (ID_HEADER.to_string(), id.to_string()),
                (TIMESTAMP_HEADER.to_string(), ts.to_string()),
                (SIGNATURE_HEADER.to_string(), sig.clone()),
            ];
            prop_assert!(v.verify(&h(&id), &body, now).is_ok());
            prop_assert_eq!(v.verify(&h(&id), &other, now).is_ok(), other == body);
            prop_assert_eq!(v.verify(&h(&other_id), &body, now).is_ok(), other_id == id);
        }
    }
}
