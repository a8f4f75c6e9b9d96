//! `signature_headers`: every credential header parser, through
//! `CompiledAuth::verify` (and `Credential::check`, the status endpoints').
//!
//! Input: a byte picking the accepted methods (PagerDuty `v1=` lists,
//! `X-Hub-Signature`, Standard Webhooks, bearer in `Authorization`, bearer in
//! a custom header, basic, or all of them), a byte of header count, that many
//! (name, value) pairs, an injection byte, then the body.
//!
//! Without injection nothing can pass: the secrets never appear in the input
//! and every comparison is of MACs or digests. With injection the harness
//! replaces one method's headers with a valid credential surrounded by fuzz
//! (extra list entries, whitespace), which must pass whatever the other
//! headers say. A refusal is a 401 whose body and headers never hold a
//! secret.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use emr_core::auth::standard_webhooks::{parse_secret, sign};
use emr_core::auth::{
    hex, hub_signature, pagerduty_signature, AuthMethodConfig, CompiledAuth, Credential,
    CredentialConfig,
};
use emr_core::event::Source;
use emr_core::sources::Delivery;

use super::{check_problem, holds_secret, now, Input};

pub const PD_SECRET: &str = "pd-secret-fake-0123456789";
pub const PD_SECRET_NEXT: &str = "pd-secret-next-fake-0123456789";
pub const HUB_SECRET: &str = "hub-secret-fake-0123456789";
pub const TOKEN: &str = "bearer-token-fake-0123456789";
pub const TOKEN_NEXT: &str = "bearer-token-next-fake-0123456789";
pub const USER: &str = "emr-user";
pub const PASSWORD: &str = "basic-password-fake-0123456789";
/// The Standard Webhooks specification's example secret.
pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Values no answer may ever show.
pub const SECRETS: [&str; 8] = [
    PD_SECRET,
    PD_SECRET_NEXT,
    HUB_SECRET,
    TOKEN,
    TOKEN_NEXT,
    PASSWORD,
    WHSEC,
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
];

pub fn env(k: &str) -> Option<String> {
    let v = match k {
        "PD_SECRET" => PD_SECRET,
        "PD_SECRET_NEXT" => PD_SECRET_NEXT,
        "HUB_SECRET" => HUB_SECRET,
        "TOKEN" => TOKEN,
        "TOKEN_NEXT" => TOKEN_NEXT,
        "USER" => USER,
        "PASSWORD" => PASSWORD,
        "WHSEC" => WHSEC,
        _ => return None,
    };
    Some(v.to_owned())
}

/// One accepted method, as a source's `auth` config writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Pagerduty,
    Hub,
    Standard,
    Bearer,
    CustomBearer,
    Basic,
}

pub const METHODS: [Method; 6] = [
    Method::Pagerduty,
    Method::Hub,
    Method::Standard,
    Method::Bearer,
    Method::CustomBearer,
    Method::Basic,
];

impl Method {
    fn config(self) -> &'static str {
        match self {
            Method::Pagerduty => {
                r#"{"kind": "pagerduty_signature", "secret_envs": ["PD_SECRET", "PD_SECRET_NEXT"]}"#
            }
            Method::Hub => r#"{"kind": "hub_signature", "secret_env": "HUB_SECRET"}"#,
            Method::Standard => {
                r#"{"kind": "standard_webhooks", "secret_env": "WHSEC", "tolerance_seconds": 300}"#
            }
            Method::Bearer => r#"{"kind": "bearer", "token_envs": ["TOKEN", "TOKEN_NEXT"]}"#,
            Method::CustomBearer => {
                r#"{"kind": "bearer", "token_env": "TOKEN", "header": "X-EMR-Token"}"#
            }
            Method::Basic => {
                r#"{"kind": "basic", "username_env": "USER", "password_env": "PASSWORD"}"#
            }
        }
    }

    /// The headers this method reads.
    fn headers(self) -> &'static [&'static str] {
        match self {
            Method::Pagerduty => &["x-pagerduty-signature"],
            Method::Hub => &["x-hub-signature"],
            Method::Standard => &["webhook-id", "webhook-timestamp", "webhook-signature"],
            Method::Bearer | Method::Basic => &["authorization"],
            Method::CustomBearer => &["x-emr-token"],
        }
    }
}

/// Header names the fuzzer picks from; the last slot takes a fuzz name.
const NAMES: [&str; 10] = [
    "authorization",
    "Authorization",
    "x-pagerduty-signature",
    "X-PagerDuty-Signature",
    "x-hub-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-emr-token",
    "",
];

struct Compiled {
    single: Vec<CompiledAuth>,
    all: CompiledAuth,
    credentials: Vec<Option<Credential>>,
}

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let method = |m: Method| -> AuthMethodConfig { serde_json::from_str(m.config()).unwrap() };
        let single = METHODS
            .iter()
            .map(|m| CompiledAuth::compile(&[method(*m)], false, "auth", &env).unwrap())
            .collect();
        let every: Vec<AuthMethodConfig> = METHODS.iter().map(|m| method(*m)).collect();
        let all = CompiledAuth::compile(&every, false, "auth", &env).unwrap();
        let credentials = METHODS
            .iter()
            .map(|m| {
                serde_json::from_str::<CredentialConfig>(m.config())
                    .ok()
                    .map(|c| c.compile("status.auth", &env).unwrap())
            })
            .collect();
        Compiled {
            single,
            all,
            credentials,
        }
    })
}

pub fn signature_headers(data: &[u8]) {
    if holds_secret(data, &SECRETS) {
        return;
    }
    let mut input = Input::new(data);
    let set = usize::from(input.byte()) % (METHODS.len() + 1);
    let count = input.byte() % 8;
    let mut headers: Vec<(String, String)> = (0..count)
        .map(|_| {
            let name = match input.pick(&NAMES) {
                "" => input.string(),
                n => n.to_owned(),
            };
            (name, input.string())
        })
        .collect();
    let inject = input.byte();
    let junk_a = input.string();
    let junk_b = input.string();
    let skew = i64::from(input.byte() % 201) * 3 - 300;
    let body = input.rest();

    let compiled = compiled();
    let (auth, injected) = match METHODS.get(set) {
        Some(m) => (&compiled.single[set], *m),
        None => (
            &compiled.all,
            METHODS[usize::from(inject >> 1) % METHODS.len()],
        ),
    };
    let inject = inject & 1 == 1;
    if inject {
        add_valid(&mut headers, injected, body, &junk_a, &junk_b, skew);
    }

    let delivery = Delivery {
        headers: &headers,
        body,
        now: now(),
    };
    let result = auth.verify(Source::Pagerduty, &delivery);
    match &result {
        Ok(()) => assert!(inject, "passed without a credential: {headers:?}"),
        Err(p) => {
            assert!(
                !inject,
                "a valid {injected:?} credential was refused: {p:?} {headers:?}"
            );
            check_problem(p, &[401]);
            check_no_secret(&p.to_json(), &p.headers);
        }
    }

    // The status endpoints' credential reads bearer and basic the same way.
    if let Some(Some(cred)) = compiled.credentials.get(set) {
        let checked = cred.check(&headers);
        assert_eq!(
            checked.is_ok(),
            result.is_ok(),
            "Credential::check disagrees"
        );
        if let Err(p) = checked {
            check_problem(&p, &[401]);
            check_no_secret(&p.to_json(), &p.headers);
        }
    }

    // The encodings the signatures travel in.
    assert_eq!(hex::decode(&hex::encode(body)).as_deref(), Some(body));
    if let Some(bytes) = hex::decode(&junk_a) {
        assert!(hex::encode(&bytes).eq_ignore_ascii_case(&junk_a));
    }
    if let Some(key) = parse_secret(&junk_a) {
        assert!(!key.is_empty());
        let _ = sign(&key, &junk_b, skew, body);
    }
}

/// Replaces `method`'s headers with a valid credential for `body`, with fuzz
/// around it where the format allows.
fn add_valid(
    headers: &mut Vec<(String, String)>,
    method: Method,
    body: &[u8],
    junk_a: &str,
    junk_b: &str,
    skew: i64,
) {
    headers.retain(|(k, _)| !method.headers().iter().any(|h| k.eq_ignore_ascii_case(h)));
    let mut add = |k: &str, v: String| headers.push((k.to_owned(), v));
    match method {
        Method::Pagerduty => {
            let secret = if junk_b.len().is_multiple_of(2) {
                PD_SECRET
            } else {
                PD_SECRET_NEXT
            };
            let sig = pagerduty_signature(secret.as_bytes(), body);
            add(
                "X-PagerDuty-Signature",
                format!("{junk_a}, {sig} ,{junk_b}"),
            );
        }
        Method::Hub => {
            let sig = hub_signature(HUB_SECRET.as_bytes(), body);
            add("X-Hub-Signature", format!(" {sig}\t"));
        }
        Method::Standard => {
            let key = parse_secret(WHSEC).unwrap();
            let ts = now().timestamp() + skew;
            let sig = sign(&key, junk_a, ts, body);
            add("webhook-id", junk_a.to_owned());
            add("webhook-timestamp", ts.to_string());
            add("webhook-signature", format!("{junk_b} {sig} {junk_b}"));
        }
        Method::Bearer => {
            let token = if junk_a.len().is_multiple_of(2) {
                TOKEN
            } else {
                TOKEN_NEXT
            };
            add("Authorization", format!(" bEaReR  {token} "));
        }
        Method::CustomBearer => add("x-emr-token", format!(" {TOKEN} ")),
        Method::Basic => {
            let pair = STANDARD.encode(format!("{USER}:{PASSWORD}"));
            add("authorization", format!("Basic {pair}"));
        }
    }
}

/// A refusal shows no secret, in its body or its headers.
pub fn check_no_secret(body: &[u8], headers: &[(&'static str, String)]) {
    let text = String::from_utf8_lossy(body);
    for s in SECRETS {
        assert!(!text.contains(s), "a refusal shows a secret: {text}");
        for (k, v) in headers {
            assert!(!v.contains(s), "header {k} shows a secret");
        }
    }
}
