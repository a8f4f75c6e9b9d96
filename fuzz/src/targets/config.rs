//! `plugin_config`: the whole plugin configuration, through `config::parse`.
//!
//! The input is the config JSON. The environment holds good secrets and the
//! kinds of bad ones (too short, padded, empty, a `whsec_` that is not
//! base64, a client id with a ':'), under names the seeds use.
//!
//! A refusal names a field and a reason and never shows an environment
//! value the config did not itself contain; an accepted config keeps every
//! documented bound and is the same when parsed twice.

use emr_core::config::{parse, Config, StatusAccess, MAX_BODY_LIMIT};
use emr_core::event::Source;

const ENV: [(&str, &str); 14] = [
    ("TOKEN", "config-token-fake-0123456789"),
    ("TOKEN_NEXT", "config-token-next-fake-0123456789"),
    ("PD_SECRET", "config-pd-secret-fake-0123456789"),
    ("USER", "config-user"),
    ("PASSWORD", "config-password-fake-0123456789"),
    ("WHSEC", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ("GENESYS_CLIENT_ID", "config-client-id"),
    ("GENESYS_CLIENT_SECRET", "config-client-secret-fake-0123"),
    ("SHORT", "short-secret"),
    ("PADDED", " config-padded-secret-0123456789 "),
    ("EMPTY", ""),
    ("BAD_WHSEC", "whsec_!!!not-base64-config-secret!!!"),
    ("COLON_USER", "config:user"),
    ("SHORT_WHSEC", "whsec_c2hvcnQ="),
];

fn env(k: &str) -> Option<String> {
    ENV.iter()
        .find(|(name, _)| *name == k)
        .map(|(_, v)| (*v).to_owned())
}

pub fn plugin_config(data: &[u8]) {
    let first = parse(data, &env);
    let second = parse(data, &env);
    match (&first, &second) {
        (Err(a), Err(b)) => assert_eq!(a, b, "two parses disagree"),
        (Ok(a), Ok(b)) => assert_eq!(summary(a), summary(b), "two parses disagree"),
        _ => panic!("two parses disagree"),
    }
    match first {
        Err(e) => {
            let shown = e.to_string();
            assert!(!e.problems().is_empty(), "a refusal says nothing: {e:?}");
            for p in e.problems() {
                // An unknown key `""` is named `$` (regression `unknown-empty-key`).
                assert!(!p.field.is_empty(), "an error names no field: {e:?}");
                assert!(!p.message.is_empty(), "an error gives no reason: {e:?}");
            }
            // One line per problem, each saying what it is about.
            assert_eq!(shown.lines().count(), e.problems().len(), "{shown}");
            for (name, value) in ENV {
                // Short values ("config-user") may be a config's own words.
                if value.len() >= 12 && !contains(data, value.trim().as_bytes()) {
                    assert!(
                        !shown.contains(value.trim()),
                        "the error shows the value of {name}: {shown}"
                    );
                }
            }
        }
        Ok(cfg) => check_config(&cfg, data),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn check_config(cfg: &Config, data: &[u8]) {
    let i = &cfg.intake;
    assert!((1024..=MAX_BODY_LIMIT as usize).contains(&i.max_body_bytes));
    assert!((60..=7 * 86_400).contains(&i.contract.replay_window_seconds));
    assert!((60..=7 * 86_400).contains(&i.dedupe.window_seconds));
    assert!((1..=16_384).contains(&i.dedupe.buckets));
    assert!((1..=1024).contains(&i.dedupe.per_bucket));
    for s in Source::ALL {
        let src = cfg.sources.get(s);
        assert_eq!(src.source(), s);
        if matches!(s, Source::Canonical | Source::Standard) {
            assert_eq!(src.contract(), &i.contract);
        }
        assert!(src.mapping().max_future_skew_seconds() <= 3600);
    }
    let insecure = cfg.sources.insecure_sources();
    for s in &insecure {
        assert!(cfg.sources.get(*s).is_insecure());
    }
    // Debug output is what a log line would show: never a secret.
    let shown = format!("{cfg:?}");
    for (name, value) in ENV {
        let own_words = contains(data, value.trim().as_bytes());
        if value.len() >= 12 && !own_words && !name.contains("USER") && !name.contains("CLIENT_ID")
        {
            assert!(
                !shown.contains(value.trim()),
                "Debug shows the value of {name}"
            );
        }
    }
}

/// What two parses of one config must agree on (`Config` has no `Eq`).
fn summary(cfg: &Config) -> String {
    let status = match &cfg.status {
        StatusAccess::Credential(_) => "credential",
        StatusAccess::Open => "open",
        StatusAccess::Closed => "closed",
    };
    format!(
        "{:?} {:?} {status} {:?} {}",
        cfg.intake,
        cfg.retention,
        cfg.sources.insecure_sources(),
        cfg.genesys.is_some()
    )
}
