//! Secrets and where they come from.
//!
//! A [`Secret`] never prints its bytes: `Debug` shows `<redacted>`, so a
//! compiled config can be logged whole. Secrets are read from environment
//! variables named in config (in Envoy: `vm_config.environment_variables`),
//! and every config error names the config field and the variable, never the
//! value.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::field::{read_env, Spaces};
use crate::problem::FieldError;

/// Shortest secret accepted. Shorter values are almost always placeholders
/// left in a config; a guessable webhook secret is an open door.
pub const MIN_SECRET_LEN: usize = 16;

/// Secret bytes: an HMAC key, a bearer token, a password.
#[derive(Clone)]
pub struct Secret {
    bytes: Vec<u8>,
    /// SHA-256 of `bytes`, computed once: [`Secret::matches`] then hashes
    /// only the candidate (one block fewer per request and per secret).
    digest: [u8; 32],
}

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = bytes.into();
        let digest = Sha256::digest(&bytes).into();
        Self { bytes, digest }
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// Its SHA-256: tells two secrets apart without showing either.
    pub(crate) fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Whether `candidate` equals this secret, in time that depends on neither
    /// value: both sides are compared as SHA-256 digests, so even their
    /// lengths stay hidden.
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        let b: [u8; 32] = Sha256::digest(candidate).into();
        self.digest.ct_eq(&b).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Constant-time equality of two byte strings whose length is public (MACs).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The value of `var`, refused with spaces around it ([`read_env`]) or
/// shorter than [`MIN_SECRET_LEN`].
pub(crate) fn read_secret_env(
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Secret> {
    let value = read_env(env, field, var, Spaces::Refuse, errors)?;
    if value.len() < MIN_SECRET_LEN {
        errors.push(FieldError::new(
            field,
            format!("environment variable {var} holds fewer than {MIN_SECRET_LEN} characters"),
        ));
        return None;
    }
    Some(Secret::new(value.into_bytes()))
}

/// The variables named by a `x_env` / `x_envs` pair (both allowed, one
/// needed), each with the config field that named it, for rotation lists.
pub(crate) fn env_names<'c>(
    single: Option<&'c String>,
    many: &'c [String],
    base: &str,
    single_key: &str,
    many_key: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<(String, &'c str)> {
    let mut names: Vec<(String, &str)> = single
        .map(|v| (format!("{base}.{single_key}"), v.as_str()))
        .into_iter()
        .collect();
    names.extend(
        many.iter()
            .enumerate()
            .map(|(i, v)| (format!("{base}.{many_key}[{i}]"), v.as_str())),
    );
    if names.is_empty() {
        errors.push(FieldError::new(
            base,
            format!("needs `{single_key}` or `{many_key}`"),
        ));
    }
    names
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let s = Secret::new("hunter2hunter2hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn matches_only_the_exact_value() {
        let s = Secret::new("0123456789abcdef");
        assert!(s.matches(b"0123456789abcdef"));
        assert!(!s.matches(b"0123456789abcdeF"));
        assert!(!s.matches(b"0123456789abcde"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn env_errors_name_field_and_variable_but_not_value() {
        let env = |k: &str| match k {
            "SHORT" => Some("tiny".to_string()),
            "PADDED" => Some(" 0123456789abcdef ".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let mut errors = Vec::new();
        assert!(read_secret_env(&env, "MISSING", "a.secret_env", &mut errors).is_none());
        assert!(read_secret_env(&env, "SHORT", "b", &mut errors).is_none());
        assert!(read_secret_env(&env, "PADDED", "c", &mut errors).is_none());
        assert!(read_secret_env(&env, "EMPTY", "d", &mut errors).is_none());
        assert!(read_secret_env(&env, " ", "e", &mut errors).is_none());
        assert_eq!(errors.len(), 5);
        assert_eq!(errors[0].field, "a.secret_env");
        assert!(
            errors[0]
                .message
                .starts_with("environment variable MISSING is not set: "),
            "{errors:?}"
        );
        assert!(errors[0].message.contains("host_env_keys"), "{errors:?}");
        let all = format!("{errors:?}");
        assert!(!all.contains("tiny"));
        assert!(!all.contains("0123456789abcdef"));
    }
}
