//! Strict JSON reading shared by every intake route.
//!
//! `serde_json` silently keeps the last of duplicate keys and accepts nesting
//! up to 128 levels. A webhook body with `"routingMode"` twice is ambiguous and
//! one nested 100 deep is hostile, so both are refused before any field is
//! looked at: this reader builds a `serde_json::Value` but fails on a repeated
//! key or on nesting deeper than [`MAX_DEPTH`].

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Deepest nesting accepted. The deepest real payload we parse (Jira issue
/// webhooks) nests about 7 levels.
pub const MAX_DEPTH: usize = 32;

/// Why a body is unreadable as JSON (answered 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    NotUtf8 { valid_up_to: usize },
    Syntax(String),
    DuplicateKey(String),
    TooDeep,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::NotUtf8 { valid_up_to } => {
                write!(f, "body is not valid UTF-8 (at byte {valid_up_to})")
            }
            JsonError::Syntax(e) => write!(f, "body is not valid JSON: {e}"),
            JsonError::DuplicateKey(k) => {
                write!(f, "body repeats the key {}", crate::text::quoted(k))
            }
            JsonError::TooDeep => write!(f, "body nests deeper than {MAX_DEPTH} levels"),
        }
    }
}

/// Parses `body` as one JSON value, refusing invalid UTF-8, duplicate keys and
/// excessive nesting.
pub fn parse_strict(body: &[u8]) -> Result<Value, JsonError> {
    let text = std::str::from_utf8(body).map_err(|e| JsonError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictSeed { depth: 0 }
        .deserialize(&mut de)
        .map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(value)
}

const DUPLICATE: &str = "\u{0}duplicate:";
const TOO_DEEP: &str = "\u{0}too-deep";

fn classify(e: serde_json::Error) -> JsonError {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix(DUPLICATE) {
        // serde_json appends " at line L column C"; keep only the key.
        let key = rest.rsplit_once(" at line ").map_or(rest, |(k, _)| k);
        JsonError::DuplicateKey(key.to_owned())
    } else if msg.starts_with(TOO_DEEP) || msg.starts_with("recursion limit exceeded") {
        JsonError::TooDeep
    } else {
        JsonError::Syntax(msg)
    }
}

struct StrictSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor { depth: self.depth })
    }
}

struct StrictVisitor {
    depth: usize,
}

impl StrictVisitor {
    fn nested<E: serde::de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(E::custom(TOO_DEEP));
        }
        Ok(depth)
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.nested()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictSeed { depth })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(A::Error::custom(format_args!("{DUPLICATE}{key}")));
            }
            let v = map.next_value_seed(StrictSeed { depth })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn reads_ordinary_json() {
        let v = parse_strict(br#"{"a":[1,2,{"b":null}],"c":"d","e":1.5,"f":-3}"#).unwrap();
        assert_eq!(v["a"][2]["b"], Value::Null);
        assert_eq!(v["e"], 1.5);
        assert_eq!(v["f"], -3);
    }

    #[test]
    fn refuses_duplicate_keys_naming_the_key() {
        let e = parse_strict(br#"{"routingMode":"A","routingMode":"B"}"#).unwrap_err();
        assert_eq!(e, JsonError::DuplicateKey("routingMode".into()));
        let nested = parse_strict(br#"{"a":{"x":1,"x":2}}"#).unwrap_err();
        assert_eq!(nested, JsonError::DuplicateKey("x".into()));
    }

    #[test]
    fn same_key_in_sibling_objects_is_fine() {
        assert!(parse_strict(br#"[{"x":1},{"x":2}]"#).is_ok());
    }

    #[test]
    fn refuses_deep_nesting() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_strict(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            parse_strict(deep.as_bytes()).unwrap_err(),
            JsonError::TooDeep
        );
        let very_deep = "[".repeat(10_000);
        assert_eq!(
            parse_strict(very_deep.as_bytes()).unwrap_err(),
            JsonError::TooDeep
        );
    }

    #[test]
    fn refuses_invalid_utf8_and_trailing_garbage() {
        assert!(matches!(
            parse_strict(b"{\"a\":\"\xff\"}"),
            Err(JsonError::NotUtf8 { valid_up_to: 6 })
        ));
        assert!(matches!(parse_strict(b"{} x"), Err(JsonError::Syntax(_))));
        assert!(matches!(parse_strict(b""), Err(JsonError::Syntax(_))));
    }
}
