//! Bearer and basic credentials: what ServiceNow, Opsgenie, Alertmanager and
//! the canonical route send, and what the `/emr/*` status endpoints require.
//!
//! Tokens and passwords are compared through SHA-256 digests in constant
//! time, so neither their content nor their length shows in timing.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;

use super::secret::{self, Secret};
use super::{single_header, unauthorized, Failure};
use crate::field::{read_env, Spaces};
use crate::problem::{FieldError, Problem};

const AUTHORIZATION: &str = "authorization";
const BEARER_CHALLENGE: &str = "Bearer realm=\"emr-edge\"";
const BASIC_CHALLENGE: &str = "Basic realm=\"emr-edge\", charset=\"UTF-8\"";

/// `Authorization: Bearer <token>`, or the bare token in a custom `header`
/// (for tools that can only add a fixed header, such as Opsgenie).
/// Several tokens may be listed during a rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerConfig {
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_envs: Vec<String>,
    /// Header carrying the bare token instead of `Authorization: Bearer`.
    #[serde(default)]
    pub header: Option<String>,
}

/// `Authorization: Basic base64(username:password)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    pub username_env: String,
    pub password_env: String,
}

/// A bearer or basic credential as written in config, for routes outside
/// `sources` (the `/emr/*` status endpoints).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CredentialConfig {
    Bearer(BearerConfig),
    Basic(BasicConfig),
}

impl CredentialConfig {
    /// Reads the secrets; errors name fields under `base`.
    pub fn compile(
        &self,
        base: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Credential, Vec<FieldError>> {
        let mut errors = Vec::new();
        let c = match self {
            CredentialConfig::Bearer(b) => b.compile(base, env, &mut errors),
            CredentialConfig::Basic(b) => b.compile(base, env, &mut errors),
        };
        if errors.is_empty() {
            Ok(c)
        } else {
            Err(errors)
        }
    }
}

impl BearerConfig {
    pub(crate) fn compile(
        &self,
        base: &str,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<FieldError>,
    ) -> Credential {
        let tokens = secret::env_names(
            self.token_env.as_ref(),
            &self.token_envs,
            base,
            "token_env",
            "token_envs",
            errors,
        )
        .into_iter()
        .filter_map(|(field, var)| secret::read_secret_env(env, var, &field, errors))
        .collect();
        let header = match self.header.as_deref().map(str::to_ascii_lowercase) {
            None => None,
            Some(h) if h == AUTHORIZATION => None,
            Some(h) if is_header_name(&h) => Some(h),
            Some(_) => {
                errors.push(FieldError::new(
                    format!("{base}.header"),
                    "must be an HTTP header name: letters, digits and '-'",
                ));
                None
            }
        };
        Credential(Kind::Bearer { header, tokens })
    }
}

impl BasicConfig {
    pub(crate) fn compile(
        &self,
        base: &str,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<FieldError>,
    ) -> Credential {
        let user_field = format!("{base}.username_env");
        let username = read_env(env, &user_field, &self.username_env, Spaces::Refuse, errors);
        if username.as_deref().is_some_and(|u| u.contains(':')) {
            errors.push(FieldError::new(
                user_field,
                format!(
                    "environment variable {} holds a ':', which basic credentials cannot carry in a username",
                    self.username_env
                ),
            ));
        }
        let password = secret::read_secret_env(
            env,
            &self.password_env,
            &format!("{base}.password_env"),
            errors,
        );
        Credential(Kind::Basic {
            username: Secret::new(username.unwrap_or_default()),
            password: password.unwrap_or_else(|| Secret::new(Vec::new())),
        })
    }
}

fn is_header_name(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A compiled bearer or basic credential. `Debug` redacts the secrets.
#[derive(Debug, Clone)]
pub struct Credential(Kind);

#[derive(Debug, Clone)]
enum Kind {
    Bearer {
        header: Option<String>,
        tokens: Vec<Secret>,
    },
    Basic {
        username: Secret,
        password: Secret,
    },
}

impl Credential {
    /// Checks `headers` (names lowercase) for this credential; `Err` is a
    /// `401` naming the header, with a `WWW-Authenticate` challenge.
    pub fn check(&self, headers: &[(String, String)]) -> Result<(), Problem> {
        self.verify(headers)
            .map_err(|f| unauthorized(vec![f], self.challenge().into_iter().collect()))
    }

    /// The `WWW-Authenticate` value, when the credential travels in
    /// `Authorization` (a custom header has no standard challenge).
    pub fn challenge(&self) -> Option<String> {
        match &self.0 {
            Kind::Bearer { header: None, .. } => Some(BEARER_CHALLENGE.to_owned()),
            Kind::Bearer {
                header: Some(_), ..
            } => None,
            Kind::Basic { .. } => Some(BASIC_CHALLENGE.to_owned()),
        }
    }

    /// The SHA-256 of each secret, all under config field `field` (see
    /// `CompiledAuth::secret_digests`).
    pub fn secret_digests(&self, field: &str) -> Vec<(String, [u8; 32])> {
        self.secrets()
            .into_iter()
            .map(|s| (field.to_owned(), s.digest()))
            .collect()
    }

    /// The secrets that prove this credential (a basic user name is no
    /// secret), for the config's check that no two routes share one.
    pub(crate) fn secrets(&self) -> Vec<&Secret> {
        match &self.0 {
            Kind::Bearer { tokens, .. } => tokens.iter().collect(),
            Kind::Basic { password, .. } => vec![password],
        }
    }

    pub(crate) fn verify(&self, headers: &[(String, String)]) -> Result<(), Failure> {
        match &self.0 {
            Kind::Bearer { header, tokens } => verify_bearer(headers, header.as_deref(), tokens),
            Kind::Basic { username, password } => verify_basic(headers, username, password),
        }
    }
}

/// `Some(rest)` when `value` is `<scheme> <rest>` (scheme ignoring case).
fn strip_scheme<'v>(value: &'v str, scheme: &str) -> Option<&'v str> {
    let (s, rest) = value.trim().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn verify_bearer(
    headers: &[(String, String)],
    custom: Option<&str>,
    tokens: &[Secret],
) -> Result<(), Failure> {
    let name = custom.unwrap_or(AUTHORIZATION);
    let value = single_header(headers, name)?.ok_or_else(|| Failure::missing(name))?;
    let token = match custom {
        Some(_) => value.trim(),
        None => strip_scheme(value, "bearer")
            .ok_or_else(|| Failure::other_scheme(name, "must use the Bearer scheme"))?,
    };
    // Check every token, so timing does not tell which one matched.
    let ok = tokens
        .iter()
        .fold(false, |acc, t| t.matches(token.as_bytes()) | acc);
    if ok {
        Ok(())
    } else {
        Err(Failure::invalid(name, "does not carry a valid token"))
    }
}

fn verify_basic(
    headers: &[(String, String)],
    username: &Secret,
    password: &Secret,
) -> Result<(), Failure> {
    let value =
        single_header(headers, AUTHORIZATION)?.ok_or_else(|| Failure::missing(AUTHORIZATION))?;
    let encoded = strip_scheme(value, "basic")
        .ok_or_else(|| Failure::other_scheme(AUTHORIZATION, "must use the Basic scheme"))?;
    let decoded = STANDARD
        .decode(encoded)
        .map_err(|_| Failure::invalid(AUTHORIZATION, "is not valid base64 user:password"))?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| Failure::invalid(AUTHORIZATION, "is not valid base64 user:password"))?;
    let (user, rest) = decoded.split_at(colon);
    let pass = rest.get(1..).unwrap_or_default();
    // Both halves are always compared: `&` does not short-circuit.
    if username.matches(user) & password.matches(pass) {
        Ok(())
    } else {
        Err(Failure::invalid(
            AUTHORIZATION,
            "does not carry valid credentials",
        ))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const TOKEN: &str = "status-token-0123456789";
    const NEXT: &str = "status-token-next-98765";
    const PASSWORD: &str = "basic-password-0123456789";

    fn env(k: &str) -> Option<String> {
        match k {
            "TOKEN" => Some(TOKEN.into()),
            "NEXT" => Some(NEXT.into()),
            "USER" => Some("genesys".into()),
            "PASS" => Some(PASSWORD.into()),
            "BAD_USER" => Some("a:b".into()),
            _ => None,
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn compile(json: &str) -> Result<Credential, Vec<FieldError>> {
        serde_json::from_str::<CredentialConfig>(json)
            .unwrap()
            .compile("emr.status.credential", &env)
    }

    #[test]
    fn bearer_accepts_any_rotated_token_and_names_the_header() {
        let c = compile(r#"{"kind":"bearer","token_envs":["TOKEN","NEXT"]}"#).unwrap();
        assert!(c
            .check(&h(&[("authorization", &format!("Bearer {TOKEN}"))]))
            .is_ok());
        assert!(c
            .check(&h(&[("authorization", &format!("bearer  {NEXT}"))]))
            .is_ok());

        let p = c.check(&h(&[])).unwrap_err();
        assert_eq!(p.status, 401);
        assert_eq!(p.errors[0].field, "authorization");
        assert_eq!(p.errors[0].message, "is missing");
        assert_eq!(
            p.headers[0],
            ("www-authenticate", BEARER_CHALLENGE.to_string())
        );

        let wrong = format!("Bearer {TOKEN}x");
        let p = c.check(&h(&[("authorization", &wrong)])).unwrap_err();
        assert_eq!(p.errors[0].message, "does not carry a valid token");
        let body = String::from_utf8(p.to_json()).unwrap();
        assert!(!body.contains(TOKEN) && !body.contains(NEXT));

        let p = c.check(&h(&[("authorization", TOKEN)])).unwrap_err();
        assert_eq!(p.errors[0].message, "must use the Bearer scheme");
    }

    #[test]
    fn bearer_in_a_custom_header_has_no_challenge() {
        let c = compile(r#"{"kind":"bearer","token_env":"TOKEN","header":"X-EMR-Token"}"#).unwrap();
        assert!(c.check(&h(&[("x-emr-token", TOKEN)])).is_ok());
        let p = c
            .check(&h(&[("authorization", &format!("Bearer {TOKEN}"))]))
            .unwrap_err();
        assert_eq!(p.errors[0].field, "x-emr-token");
        assert!(p.headers.is_empty());
    }

    #[test]
    fn basic_checks_both_halves() {
        let c = compile(r#"{"kind":"basic","username_env":"USER","password_env":"PASS"}"#).unwrap();
        let good = STANDARD.encode(format!("genesys:{PASSWORD}"));
        assert!(c
            .check(&h(&[("authorization", &format!("Basic {good}"))]))
            .is_ok());
        for bad in [
            STANDARD.encode(format!("genesys:{PASSWORD}x")),
            STANDARD.encode(format!("other:{PASSWORD}")),
            STANDARD.encode("genesys"),
            "!!!".to_string(),
        ] {
            let p = c
                .check(&h(&[("authorization", &format!("Basic {bad}"))]))
                .unwrap_err();
            assert_eq!(p.status, 401);
            assert_eq!(
                p.headers[0],
                ("www-authenticate", BASIC_CHALLENGE.to_string())
            );
            assert!(!String::from_utf8(p.to_json()).unwrap().contains(PASSWORD));
        }
    }

    #[test]
    fn config_errors_name_fields() {
        let e = compile(r#"{"kind":"basic","username_env":"BAD_USER","password_env":"NOPE"}"#)
            .unwrap_err();
        assert_eq!(e[0].field, "emr.status.credential.username_env");
        assert_eq!(e[1].field, "emr.status.credential.password_env");
        assert_eq!(e[1].message, crate::envvar::not_set("NOPE"));
        let e = compile(r#"{"kind":"bearer","token_env":"TOKEN","header":"x emr"}"#).unwrap_err();
        assert_eq!(e[0].field, "emr.status.credential.header");
    }

    #[test]
    fn debug_redacts() {
        let c = compile(r#"{"kind":"bearer","token_env":"TOKEN"}"#).unwrap();
        assert!(!format!("{c:?}").contains(TOKEN));
    }
}
