//! Who may post to a route: per-source authentication, failing closed.
//!
//! Each source lists one or more accepted methods in config (`auth: [...]`);
//! a delivery passes when any one of them passes, which is how a route moves
//! from a bearer token to a signature (or rotates secrets) without downtime.
//! A source with no method configured refuses everything, unless its
//! `insecure` flag is set — a switch for local demos only.
//!
//! Refusals are `401` problems that name the header that is missing or wrong
//! and never echo a header value, a secret, or which secret was compared.
//! Every comparison of secret material is constant-time ([`secret`]).

mod credential;
pub mod hex;
mod secret;
mod signature;
pub mod standard_webhooks;

use serde::Deserialize;

use crate::delivery::Delivery;
use crate::event::Source;
use crate::problem::{FieldError, Problem};

pub use credential::{BasicConfig, BearerConfig, Credential, CredentialConfig};
pub(crate) use secret::read_secret_env;
pub use secret::{Secret, MIN_SECRET_LEN};
pub use signature::{hub_signature, pagerduty_signature};
pub use standard_webhooks::StandardWebhooksConfig;

/// One accepted way to authenticate, as written in config.
///
/// ```json
/// {"kind": "pagerduty_signature", "secret_envs": ["PD_SECRET", "PD_SECRET_NEXT"]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuthMethodConfig {
    /// `Authorization: Bearer <token>` (or a custom header carrying the token).
    Bearer(BearerConfig),
    /// `Authorization: Basic base64(user:password)`.
    Basic(BasicConfig),
    /// `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 of the raw body.
    PagerdutySignature(SecretsConfig),
    /// `X-Hub-Signature: sha256=<hex>`, HMAC-SHA256 of the raw body (Jira).
    HubSignature(SecretsConfig),
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks(StandardWebhooksConfig),
}

/// HMAC secrets, several during a rotation: any one verifying is enough.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_envs: Vec<String>,
}

impl SecretsConfig {
    fn compile(
        &self,
        base: &str,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<FieldError>,
    ) -> Vec<Secret> {
        secret::env_names(
            self.secret_env.as_ref(),
            &self.secret_envs,
            base,
            "secret_env",
            "secret_envs",
            errors,
        )
        .into_iter()
        .filter_map(|(field, var)| secret::read_secret_env(env, var, &field, errors))
        .collect()
    }
}

/// A source's compiled authentication: its methods and its `insecure` flag.
#[derive(Debug, Clone)]
pub struct CompiledAuth {
    methods: Vec<Method>,
    insecure: bool,
}

#[derive(Debug, Clone)]
enum Method {
    Credential(Credential),
    Pagerduty(Vec<Secret>),
    Hub(Vec<Secret>),
    Standard(standard_webhooks::Verifier),
}

impl CompiledAuth {
    /// Reads every secret the methods name; errors name the config field
    /// under `base` (e.g. `sources.pagerduty.auth`).
    pub fn compile(
        methods: &[AuthMethodConfig],
        insecure: bool,
        base: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let compiled = methods
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let field = format!("{base}[{i}]");
                match m {
                    AuthMethodConfig::Bearer(c) => {
                        Method::Credential(c.compile(&field, env, &mut errors))
                    }
                    AuthMethodConfig::Basic(c) => {
                        Method::Credential(c.compile(&field, env, &mut errors))
                    }
                    AuthMethodConfig::PagerdutySignature(c) => {
                        Method::Pagerduty(c.compile(&field, env, &mut errors))
                    }
                    AuthMethodConfig::HubSignature(c) => {
                        Method::Hub(c.compile(&field, env, &mut errors))
                    }
                    AuthMethodConfig::StandardWebhooks(c) => {
                        Method::Standard(c.compile(&field, env, &mut errors))
                    }
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(Self {
                methods: compiled,
                insecure,
            })
        } else {
            Err(errors)
        }
    }

    /// Whether this route accepts deliveries with no credential at all.
    pub fn is_insecure(&self) -> bool {
        self.insecure && self.methods.is_empty()
    }

    /// Whether this route takes deliveries at all (a credential, or
    /// `insecure`).
    pub fn accepts_deliveries(&self) -> bool {
        self.insecure || !self.methods.is_empty()
    }

    /// The SHA-256 of every secret this route accepts, by the config field
    /// of its method: no two routes may share a secret (see
    /// `crate::config`).
    pub fn secret_digests(&self, base: &str) -> Vec<(String, [u8; 32])> {
        let mut out = Vec::new();
        for (i, m) in self.methods.iter().enumerate() {
            let secrets: Vec<&Secret> = match m {
                Method::Credential(c) => c.secrets(),
                Method::Pagerduty(s) | Method::Hub(s) => s.iter().collect(),
                Method::Standard(v) => v.keys().iter().collect(),
            };
            out.extend(
                secrets
                    .into_iter()
                    .map(|s| (format!("{base}[{i}]"), s.digest())),
            );
        }
        out
    }

    /// Passes when any configured method passes; see the module doc.
    ///
    /// `Err` is a `401` problem naming the missing or wrong header, with a
    /// `WWW-Authenticate` challenge when a bearer or basic credential is
    /// accepted. Call it before parsing: an unauthenticated body is never read.
    pub fn verify(&self, source: Source, delivery: &Delivery) -> Result<(), Problem> {
        if self.methods.is_empty() {
            return if self.insecure {
                Ok(())
            } else {
                Err(Problem::new(
                    401,
                    format!(
                        "the {source} route has no credential configured and refuses every \
                         request; configure sources.{source}.auth"
                    ),
                ))
            };
        }
        let mut failures = Vec::with_capacity(self.methods.len());
        for method in &self.methods {
            match method.verify(delivery) {
                Ok(()) => return Ok(()),
                Err(f) => failures.push(f),
            }
        }
        Err(unauthorized(failures, self.challenges()))
    }

    fn challenges(&self) -> Vec<String> {
        self.methods
            .iter()
            .filter_map(|m| match m {
                Method::Credential(c) => c.challenge(),
                _ => None,
            })
            .collect()
    }
}

impl Method {
    fn verify(&self, d: &Delivery) -> Result<(), Failure> {
        match self {
            Method::Credential(c) => c.verify(d.headers),
            Method::Pagerduty(secrets) => signature::verify_pagerduty(d.headers, d.body, secrets),
            Method::Hub(secrets) => signature::verify_hub(d.headers, d.body, secrets),
            Method::Standard(v) => v.verify(d.headers, d.body, d.now),
        }
    }
}

/// How bad one method's refusal is; the worst one is reported, so a sender
/// who tried a method hears why it failed rather than that others are absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Weight {
    /// The method's header is absent: the sender did not try it.
    Missing,
    /// The header is there but uses another scheme (`Basic` for a bearer method).
    OtherScheme,
    /// The sender tried this method and it failed.
    Invalid,
}

/// Why one method refused a delivery. Messages are fixed text: they never
/// include a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub header: String,
    pub message: &'static str,
    pub weight: Weight,
}

impl Failure {
    pub(crate) fn missing(header: &str) -> Self {
        Self {
            header: header.to_owned(),
            message: "is missing",
            weight: Weight::Missing,
        }
    }

    pub(crate) fn invalid(header: &str, message: &'static str) -> Self {
        Self {
            header: header.to_owned(),
            message,
            weight: Weight::Invalid,
        }
    }

    pub(crate) fn other_scheme(header: &str, message: &'static str) -> Self {
        Self {
            header: header.to_owned(),
            message,
            weight: Weight::OtherScheme,
        }
    }
}

/// The one value of header `name` (names compare ignoring case). A repeated
/// credential header is refused: which copy would count is ambiguous.
pub(crate) fn single_header<'h>(
    headers: &'h [(String, String)],
    name: &str,
) -> Result<Option<&'h str>, Failure> {
    let mut found = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(Failure::invalid(name, "appears more than once"));
    }
    Ok(first)
}

/// Builds the `401` from every method's failure (at least one).
pub(crate) fn unauthorized(failures: Vec<Failure>, challenges: Vec<String>) -> Problem {
    let worst = failures
        .iter()
        .map(|f| f.weight)
        .max()
        .unwrap_or(Weight::Missing);
    let mut problem = if worst == Weight::Missing {
        let mut headers: Vec<&str> = Vec::new();
        for f in &failures {
            if !headers.contains(&f.header.as_str()) {
                headers.push(&f.header);
            }
        }
        let detail = match headers.as_slice() {
            [one] => format!("missing credential: send the {one} header"),
            many => format!(
                "missing credential: send one of the headers {}",
                many.join(", ")
            ),
        };
        headers.iter().fold(Problem::new(401, detail), |p, h| {
            p.with_error(*h, "is missing")
        })
    } else {
        let first = failures.iter().find(|f| f.weight == worst);
        match first {
            Some(f) => Problem::new(
                401,
                format!("credential refused: the {} header {}", f.header, f.message),
            )
            .with_error(f.header.clone(), f.message),
            None => Problem::new(401, "credential refused"),
        }
    };
    for c in challenges {
        problem = problem.with_header("www-authenticate", c);
    }
    problem
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use chrono::{DateTime, Utc};

    const PD_SECRET: &str = "pd-secret-0123456789abcdef";
    const TOKEN: &str = "bearer-token-0123456789";

    fn env(k: &str) -> Option<String> {
        match k {
            "PD_SECRET" => Some(PD_SECRET.into()),
            "TOKEN" => Some(TOKEN.into()),
            _ => None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_723_731_721, 0).unwrap()
    }

    fn methods(json: &str) -> Vec<AuthMethodConfig> {
        serde_json::from_str(json).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn verify(auth: &CompiledAuth, h: &[(String, String)], body: &[u8]) -> Result<(), Problem> {
        let d = Delivery {
            headers: h,
            body,
            now: now(),
        };
        auth.verify(Source::Pagerduty, &d)
    }

    #[test]
    fn config_names_every_kind_and_refuses_unknown_fields() {
        let all = methods(
            r#"[{"kind":"bearer","token_env":"T","header":"x-emr-token"},
                {"kind":"basic","username_env":"U","password_env":"P"},
                {"kind":"pagerduty_signature","secret_envs":["A","B"]},
                {"kind":"hub_signature","secret_env":"J"},
                {"kind":"standard_webhooks","secret_env":"W","tolerance_seconds":120}]"#,
        );
        assert_eq!(all.len(), 5);
        assert!(serde_json::from_str::<Vec<AuthMethodConfig>>(
            r#"[{"kind":"bearer","token_env":"T","tokn_envs":[]}]"#
        )
        .is_err());
        assert!(serde_json::from_str::<Vec<AuthMethodConfig>>(r#"[{"kind":"kerberos"}]"#).is_err());
    }

    #[test]
    fn compile_errors_name_fields_and_never_values() {
        let errs = CompiledAuth::compile(
            &methods(
                r#"[{"kind":"pagerduty_signature","secret_envs":["PD_SECRET","PD_SECRET_2"]},
                    {"kind":"hub_signature"}]"#,
            ),
            false,
            "sources.pagerduty.auth",
            &env,
        )
        .unwrap_err();
        assert_eq!(
            errs,
            vec![
                FieldError::new(
                    "sources.pagerduty.auth[0].secret_envs[1]",
                    crate::envvar::not_set("PD_SECRET_2")
                ),
                FieldError::new(
                    "sources.pagerduty.auth[1]",
                    "needs `secret_env` or `secret_envs`"
                ),
            ]
        );
    }

    #[test]
    fn no_method_fails_closed_unless_insecure() {
        let closed = CompiledAuth::compile(&[], false, "a", &env).unwrap();
        let p = verify(&closed, &[], b"{}").unwrap_err();
        assert_eq!(p.status, 401);
        assert!(!closed.is_insecure());
        let open = CompiledAuth::compile(&[], true, "a", &env).unwrap();
        assert!(verify(&open, &[], b"{}").is_ok());
        assert!(open.is_insecure());
    }

    #[test]
    fn insecure_does_not_bypass_a_configured_method() {
        let auth = CompiledAuth::compile(
            &methods(r#"[{"kind":"bearer","token_env":"TOKEN"}]"#),
            true,
            "a",
            &env,
        )
        .unwrap();
        assert!(verify(&auth, &[], b"{}").is_err());
        assert!(!auth.is_insecure());
    }

    #[test]
    fn any_method_passing_is_enough_and_the_tried_one_is_reported() {
        let auth = CompiledAuth::compile(
            &methods(
                r#"[{"kind":"bearer","token_env":"TOKEN"},
                    {"kind":"pagerduty_signature","secret_env":"PD_SECRET"}]"#,
            ),
            false,
            "a",
            &env,
        )
        .unwrap();
        let body = br#"{"event":{}}"#;
        let sig = pagerduty_signature(PD_SECRET.as_bytes(), body);
        assert!(verify(&auth, &headers(&[("x-pagerduty-signature", &sig)]), body).is_ok());
        let bearer = format!("Bearer {TOKEN}");
        assert!(verify(&auth, &headers(&[("authorization", &bearer)]), body).is_ok());

        // Nothing sent: both headers are named, with the bearer challenge.
        let p = verify(&auth, &[], body).unwrap_err();
        assert_eq!(p.status, 401);
        assert_eq!(p.errors.len(), 2);
        assert_eq!(p.errors[0].field, "authorization");
        assert_eq!(p.errors[1].field, "x-pagerduty-signature");
        assert_eq!(
            p.headers,
            vec![("www-authenticate", "Bearer realm=\"emr-edge\"".to_string())]
        );

        // A wrong signature is what is reported, not the absent bearer.
        let p = verify(
            &auth,
            &headers(&[("x-pagerduty-signature", &sig)]),
            br#"{"event":{"x":1}}"#,
        )
        .unwrap_err();
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].field, "x-pagerduty-signature");
        let json = String::from_utf8(p.to_json()).unwrap();
        assert!(!json.contains(&sig[3..]));
        assert!(!json.contains(PD_SECRET));
    }

    #[test]
    fn repeated_credential_headers_are_refused() {
        let auth = CompiledAuth::compile(
            &methods(r#"[{"kind":"bearer","token_env":"TOKEN"}]"#),
            false,
            "a",
            &env,
        )
        .unwrap();
        let bearer = format!("Bearer {TOKEN}");
        let h = headers(&[("authorization", &bearer), ("authorization", "Bearer x")]);
        let p = verify(&auth, &h, b"{}").unwrap_err();
        assert_eq!(p.errors[0].message, "appears more than once");
    }
}
