//! What keeps a page elsewhere from making a browser resume a group.
//!
//! `POST /emr/groups/{id}/resume` changes Genesys, and its credential can be
//! HTTP basic, which a browser caches and sends by itself: a form on any
//! site could post to it. So a resume must be a request no page can make a
//! browser send to another site without asking first (CORS preflight, which
//! emr-edge never approves: it answers `OPTIONS` with 401 or 405 and no
//! `Access-Control-*` header):
//!
//! - `content-type: application/json` (or `application/*+json`): a form can
//!   only send `application/x-www-form-urlencoded`, `multipart/form-data`
//!   or `text/plain`. The body is still not read, so an empty one is fine:
//!   the header is what a cross-site page cannot set.
//! - no `Sec-Fetch-Site: cross-site` (browsers say where a request comes
//!   from);
//! - an `Origin`, when sent, naming the host the request was sent to.
//!   `Origin: null` (sandboxed frames, some redirects) is foreign.
//!
//! A Genesys data action, `curl` or a probe sends neither header and sets
//! the content type; only browsers are held back.

use super::{header, is_json};
use crate::problem::Problem;
use crate::text;

/// Refuses a resume request a page on another site could have made a
/// browser send, naming the header that shows it.
pub(super) fn check(headers: &[(String, String)]) -> Result<(), Problem> {
    if header(headers, "sec-fetch-site")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("cross-site"))
    {
        return Err(Problem::new(
            403,
            "a request a page on another site made cannot resume a group",
        )
        .with_error("sec-fetch-site", "must not be cross-site"));
    }
    if let Some(origin) = header(headers, "origin") {
        let authority = header(headers, ":authority").or_else(|| header(headers, "host"));
        if !same_origin(origin, authority) {
            return Err(Problem::new(
                403,
                format!(
                    "a request from origin {} cannot resume a group on this host",
                    text::quoted(origin)
                ),
            )
            .with_error("origin", "must be this host's own origin, or absent"));
        }
    }
    match header(headers, "content-type") {
        Some(ct) if is_json(ct) => Ok(()),
        Some(ct) => Err(Problem::new(
            415,
            format!(
                "a resume must be sent as application/json (a form cannot send it from another site), got {}",
                text::quoted(ct)
            ),
        )
        .with_error("content-type", "must be application/json")),
        None => Err(Problem::new(
            415,
            "a resume must be sent as application/json (a form cannot send it from another site); the request has no content-type",
        )
        .with_error("content-type", "must be application/json")),
    }
}

/// Whether `origin` (`scheme://host[:port]`) names `authority` (`host[:port]`),
/// a scheme's default port written or not. The scheme itself is not
/// compared: the authority carries none, and behind a load balancer that
/// ends TLS the scheme Envoy sees is not the browser's. Host and port are
/// what a page on another site cannot match.
fn same_origin(origin: &str, authority: Option<&str>) -> bool {
    let Some(authority) = authority.map(str::trim).filter(|a| !a.is_empty()) else {
        return false;
    };
    let Some((scheme, host)) = origin.trim().split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return false,
    };
    let plain = |h: &str| {
        h.strip_suffix(default_port)
            .unwrap_or(h)
            .to_ascii_lowercase()
    };
    !host.is_empty() && !host.contains('/') && plain(host) == plain(authority)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn field(r: Result<(), Problem>) -> (u16, String) {
        let p = r.unwrap_err();
        (p.status, p.errors[0].field.clone())
    }

    const JSON: (&str, &str) = ("content-type", "application/json");
    const AUTHORITY: (&str, &str) = (":authority", "emr.example.com");

    #[test]
    fn a_server_side_caller_passes() {
        // A data action, curl, a probe: no Origin, no Sec-Fetch-Site.
        assert!(check(&h(&[JSON, AUTHORITY])).is_ok());
        assert!(check(&h(&[("content-type", "application/json; charset=utf-8")])).is_ok());
        // The browser on this very host.
        for origin in [
            "https://emr.example.com",
            "HTTPS://EMR.example.com",
            "https://emr.example.com:443",
        ] {
            let r = check(&h(&[
                JSON,
                AUTHORITY,
                ("origin", origin),
                ("sec-fetch-site", "same-origin"),
            ]));
            assert!(r.is_ok(), "{origin}: {r:?}");
        }
        assert!(check(&h(&[
            JSON,
            (":authority", "127.0.0.1:10000"),
            ("origin", "http://127.0.0.1:10000")
        ]))
        .is_ok());
        assert!(check(&h(&[
            JSON,
            ("host", "emr.example.com:80"),
            ("origin", "http://emr.example.com")
        ]))
        .is_ok());
    }

    #[test]
    fn what_a_form_can_send_is_415() {
        for ct in [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
            "text/plain; application/json",
        ] {
            assert_eq!(
                field(check(&h(&[("content-type", ct), AUTHORITY]))),
                (415, "content-type".into()),
                "{ct}"
            );
        }
        assert_eq!(field(check(&h(&[AUTHORITY]))), (415, "content-type".into()));
    }

    #[test]
    fn a_foreign_origin_or_a_cross_site_fetch_is_403() {
        for origin in [
            "https://evil.example",
            "https://emr.example.com.evil.example",
            "https://emr.example.com:8443",
            "http://emr.example.com:443",
            "null",
            "",
            "emr.example.com",
            "https://emr.example.com/path",
        ] {
            let r = check(&h(&[JSON, AUTHORITY, ("origin", origin)]));
            assert_eq!(field(r), (403, "origin".into()), "{origin:?}");
        }
        // No authority to compare with: any Origin is foreign.
        assert_eq!(
            field(check(&h(&[JSON, ("origin", "https://emr.example.com")]))),
            (403, "origin".into())
        );
        // Even with a JSON type and no Origin (a browser may omit it).
        let r = check(&h(&[JSON, AUTHORITY, ("sec-fetch-site", "cross-site")]));
        assert_eq!(field(r), (403, "sec-fetch-site".into()));
        for fine in ["same-origin", "same-site", "none"] {
            assert!(
                check(&h(&[JSON, AUTHORITY, ("sec-fetch-site", fine)])).is_ok(),
                "{fine}"
            );
        }
    }

    #[test]
    fn a_long_origin_is_shown_bounded() {
        let origin = format!("https://{}", "e".repeat(20_000));
        let p = check(&h(&[JSON, AUTHORITY, ("origin", &origin)])).unwrap_err();
        assert!(p.detail.len() < 200, "{}", p.detail);
    }
}
