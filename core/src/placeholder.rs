//! Values a config still holds from an example: `REPLACE-WITH-…`.
//!
//! The shipped production example marks every value a deployment must
//! supply as `REPLACE-WITH-SOMETHING`. Such a value passes every other check
//! (an emergency group id `REPLACE-WITH-EMERGENCY-GROUP-ID` is a well-formed
//! id), and would only fail during the first incident, when Genesys answers
//! 404. So every string of the config, keys included, and every value read
//! from an environment variable the config names, is refused at start while
//! it holds the marker, in any case and with `-`, `_` or a space between the
//! words.

use serde_json::Value;

use crate::problem::FieldError;
use crate::text;

/// The marker, as the examples write it.
pub const MARKER: &str = "REPLACE-WITH";

/// Whether `s` holds the marker (`replace-with`, `REPLACE_WITH`, `Replace with`…).
pub fn is_placeholder(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    ["replace-with", "replace_with", "replace with"]
        .iter()
        .any(|m| lower.contains(m))
}

/// Why a config value at a field is refused.
pub fn message(value: &str) -> String {
    format!(
        "is still a placeholder ({}): put the real value here",
        text::quoted(value)
    )
}

/// Pushes one error for every string in `value` (and every key) that is
/// still a placeholder, naming its field: `a.b`, `a.list[2]`. `path` is
/// where `value` sits (empty for the root).
pub fn scan(value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    match value {
        Value::String(s) if is_placeholder(s) => {
            let field = if path.is_empty() { "$" } else { path };
            errors.push(FieldError::new(field, message(s)));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                scan(item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let field = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if is_placeholder(key) {
                    errors.push(FieldError::new(
                        field.clone(),
                        format!(
                            "is a placeholder key ({}): put the real value here",
                            text::quoted(key)
                        ),
                    ));
                }
                scan(item, &field, errors);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    #[test]
    fn the_marker_is_found_in_any_case_and_spelling() {
        for s in [
            "REPLACE-WITH-EMERGENCY-GROUP-ID",
            "replace-with-queue-id",
            "<Replace_With your id>",
            "replace with the table id",
            "x-REPLACE-WITH",
        ] {
            assert!(is_placeholder(s), "{s}");
        }
        for s in [
            "3c3f7a3e-2f5c-4f3a-9b1e-000000000001",
            "replace",
            "with",
            "replacewith",
            "eg-voice",
            "",
        ] {
            assert!(!is_placeholder(s), "{s}");
        }
    }

    #[test]
    fn every_placeholder_is_named_by_its_field() {
        let config = json!({
            "sources": {"pagerduty": {"rules": [
                {"queues": ["q-1", "REPLACE-WITH-QUEUE-ID"]},
                {"group": "replace-with-group"}
            ]}},
            "genesys": {
                "default_group": "REPLACE-WITH-EMERGENCY-GROUP-ID",
                "groups_by_incident_type": {"REPLACE-WITH-TYPE": "g"},
                "datatable": {"id": "REPLACE-WITH-DATATABLE-ID", "row_key": "{group}"},
                "limits": {"max_in_flight": 4}
            }
        });
        let mut errors = Vec::new();
        scan(&config, "", &mut errors);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "genesys.datatable.id",
                "genesys.default_group",
                "genesys.groups_by_incident_type.REPLACE-WITH-TYPE",
                "sources.pagerduty.rules[0].queues[1]",
                "sources.pagerduty.rules[1].group",
            ]
        );
        assert_eq!(
            errors[1].message,
            "is still a placeholder (\"REPLACE-WITH-EMERGENCY-GROUP-ID\"): put the real value here"
        );
        assert!(errors[2].message.contains("placeholder key"), "{errors:?}");
        let mut none = Vec::new();
        scan(&json!("REPLACE-WITH-X"), "", &mut none);
        assert_eq!(none[0].field, "$");
    }
}
