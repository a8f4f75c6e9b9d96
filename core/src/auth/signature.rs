//! HMAC-SHA256 signatures over the raw body, in the two hex dialects:
//! PagerDuty's `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>…]` and Jira's
//! `X-Hub-Signature: sha256=<hex>`.
//!
//! Each configured secret's MAC is computed once and compared, in constant
//! time, with every signature the header carries: during a rotation the
//! sender signs with old and new secrets and we may hold either.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::secret::{ct_eq, Secret};
use super::{hex, single_header, Failure};

pub(crate) const PAGERDUTY_HEADER: &str = "x-pagerduty-signature";
pub(crate) const HUB_HEADER: &str = "x-hub-signature";

/// HMAC-SHA256 of the concatenation of `parts`; `None` only if the key is
/// refused, which HMAC never does (any key length is valid).
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Option<[u8; 32]> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(mac.finalize().into_bytes().into())
}

/// The `X-PagerDuty-Signature` value PagerDuty would send for `body`
/// (for tests, the simulator and the signed `curl` examples).
pub fn pagerduty_signature(secret: &[u8], body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(&hmac_sha256(secret, &[body]).unwrap_or_default())
    )
}

/// The `X-Hub-Signature` value Jira would send for `body`.
pub fn hub_signature(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(&hmac_sha256(secret, &[body]).unwrap_or_default())
    )
}

/// Whether any of `secrets` signed `body` as one of `signatures`.
fn any_match(secrets: &[Secret], body: &[u8], signatures: &[Vec<u8>]) -> bool {
    secrets.iter().any(|s| {
        hmac_sha256(s.expose(), &[body])
            .is_some_and(|mac| signatures.iter().any(|sig| ct_eq(&mac, sig)))
    })
}

pub(crate) fn verify_pagerduty(
    headers: &[(String, String)],
    body: &[u8],
    secrets: &[Secret],
) -> Result<(), Failure> {
    let value = single_header(headers, PAGERDUTY_HEADER)?
        .ok_or_else(|| Failure::missing(PAGERDUTY_HEADER))?;
    let signatures: Vec<Vec<u8>> = value
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter_map(hex::decode)
        .collect();
    if signatures.is_empty() {
        return Err(Failure::invalid(
            PAGERDUTY_HEADER,
            "holds no v1=<hex> signature",
        ));
    }
    if any_match(secrets, body, &signatures) {
        Ok(())
    } else {
        Err(Failure::invalid(
            PAGERDUTY_HEADER,
            "does not match the body",
        ))
    }
}

pub(crate) fn verify_hub(
    headers: &[(String, String)],
    body: &[u8],
    secrets: &[Secret],
) -> Result<(), Failure> {
    let value = single_header(headers, HUB_HEADER)?.ok_or_else(|| Failure::missing(HUB_HEADER))?;
    let signature = value
        .trim()
        .strip_prefix("sha256=")
        .and_then(hex::decode)
        .ok_or_else(|| Failure::invalid(HUB_HEADER, "is not sha256=<hex>"))?;
    if any_match(secrets, body, &[signature]) {
        Ok(())
    } else {
        Err(Failure::invalid(HUB_HEADER, "does not match the body"))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const OLD: &str = "old-secret-0123456789abcdef";
    const NEW: &str = "new-secret-0123456789abcdef";

    fn h(name: &str, value: &str) -> Vec<(String, String)> {
        vec![(name.to_string(), value.to_string())]
    }

    #[test]
    fn hmac_matches_rfc4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]).unwrap();
        assert_eq!(
            hex::encode(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn pagerduty_accepts_any_signature_from_any_secret() {
        let body = br#"{"event":{"event_type":"incident.triggered"}}"#;
        let old_sig = pagerduty_signature(OLD.as_bytes(), body);
        let new_sig = pagerduty_signature(NEW.as_bytes(), body);
        let both = format!("{old_sig},{new_sig}");
        // Sender signs with both during rotation; we hold only the new one.
        assert!(verify_pagerduty(&h(PAGERDUTY_HEADER, &both), body, &[Secret::new(NEW)]).is_ok());
        // We hold both; sender signs with the old one only.
        let ours = [Secret::new(NEW), Secret::new(OLD)];
        assert!(verify_pagerduty(&h(PAGERDUTY_HEADER, &old_sig), body, &ours).is_ok());
        // Uppercase hex is still hex.
        let upper = format!("v1={}", old_sig[3..].to_ascii_uppercase());
        assert!(verify_pagerduty(&h(PAGERDUTY_HEADER, &upper), body, &ours).is_ok());
    }

    #[test]
    fn pagerduty_refusals_say_what_is_wrong() {
        let body = b"{}";
        let sig = pagerduty_signature(OLD.as_bytes(), body);
        let ours = [Secret::new(NEW)];
        let f = verify_pagerduty(&h(PAGERDUTY_HEADER, &sig), body, &ours).unwrap_err();
        assert_eq!(f.message, "does not match the body");
        let f = verify_pagerduty(&[], body, &ours).unwrap_err();
        assert_eq!(f, Failure::missing(PAGERDUTY_HEADER));
        let f =
            verify_pagerduty(&h(PAGERDUTY_HEADER, "v2=abcd,sha256=00"), body, &ours).unwrap_err();
        assert_eq!(f.message, "holds no v1=<hex> signature");
        let tampered = verify_pagerduty(
            &h(PAGERDUTY_HEADER, &pagerduty_signature(NEW.as_bytes(), body)),
            b"{ }",
            &ours,
        );
        assert!(tampered.is_err());
    }

    #[test]
    fn hub_signature_round_trips_and_refuses_tampering() {
        let body = br#"{"webhookEvent":"jira:issue_created"}"#;
        let sig = hub_signature(NEW.as_bytes(), body);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        let ours = [Secret::new(OLD), Secret::new(NEW)];
        assert!(verify_hub(&h(HUB_HEADER, &sig), body, &ours).is_ok());
        assert!(verify_hub(&h(HUB_HEADER, &sig), b"{}", &ours).is_err());
        assert!(verify_hub(&h(HUB_HEADER, &sig), body, &[Secret::new(OLD)]).is_err());
        let f = verify_hub(&h(HUB_HEADER, "sha1=abcd"), body, &ours).unwrap_err();
        assert_eq!(f.message, "is not sha256=<hex>");
        assert_eq!(
            verify_hub(&[], body, &ours).unwrap_err(),
            Failure::missing(HUB_HEADER)
        );
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A signature verifies for exactly the bytes it was made over.
        #[test]
        fn pagerduty_signature_binds_the_exact_bytes(
            secret in proptest::collection::vec(any::<u8>(), 16..64),
            body in proptest::collection::vec(any::<u8>(), 0..256),
            other in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let sig = pagerduty_signature(&secret, &body);
            let headers = vec![(PAGERDUTY_HEADER.to_string(), sig)];
            let ours = [Secret::new(secret)];
            prop_assert!(verify_pagerduty(&headers, &body, &ours).is_ok());
            prop_assert_eq!(verify_pagerduty(&headers, &other, &ours).is_ok(), other == body);
        }

        #[test]
        fn hub_signature_binds_the_exact_bytes_and_secret(
            secret in proptest::collection::vec(any::<u8>(), 16..64),
            wrong in proptest::collection::vec(any::<u8>(), 16..64),
            body in proptest::collection::vec(any::<u8>(), 1..256),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let sig = hub_signature(&secret, &body);
            let headers = vec![(HUB_HEADER.to_string(), sig)];
            let mut tampered = body.clone();
            if let Some(b) = tampered.get_mut(flip.index(body.len())) {
                *b ^= 1 << bit;
            }
            prop_assert!(verify_hub(&headers, &body, &[Secret::new(secret.clone())]).is_ok());
            prop_assert!(verify_hub(&headers, &tampered, &[Secret::new(secret.clone())]).is_err());
            prop_assert_eq!(
                verify_hub(&headers, &body, &[Secret::new(wrong.clone())]).is_ok(),
                wrong == secret
            );
        }
    }
}
