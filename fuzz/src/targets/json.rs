//! `json_strict`: the strict reader every intake route uses.
//!
//! It must agree with `serde_json` on every body both accept, never accept
//! what `serde_json` refuses, never return a value nested deeper than
//! `MAX_DEPTH`, and read its own output back unchanged.

use emr_core::json::{parse_strict, JsonError, MAX_DEPTH};
use serde_json::Value;

use super::same_json;

pub fn json_strict(data: &[u8]) {
    let strict = parse_strict(data);
    let loose = serde_json::from_slice::<Value>(data);
    match &strict {
        Ok(v) => {
            assert!(depth(v) <= MAX_DEPTH, "accepted nesting of {}", depth(v));
            assert_eq!(
                loose.as_ref().ok(),
                Some(v),
                "strict and serde_json disagree"
            );
            let again = parse_strict(&serde_json::to_vec(v).unwrap()).unwrap();
            assert!(same_json(&again, v), "no round trip: {v} became {again}");
        }
        Err(JsonError::NotUtf8 { valid_up_to }) => {
            assert!(std::str::from_utf8(data).is_err());
            assert!(std::str::from_utf8(&data[..*valid_up_to]).is_ok());
        }
        // The strict reader's own refusals come first; any other error is
        // serde_json's, which must then refuse the body too.
        Err(JsonError::Syntax(_)) => {
            assert!(loose.is_err(), "strict refused what serde_json reads");
        }
        Err(JsonError::DuplicateKey(_)) | Err(JsonError::TooDeep) => {}
    }
    if let Err(e) = &strict {
        assert!(!e.to_string().is_empty());
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
