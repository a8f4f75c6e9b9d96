//! Walking a parsed payload while collecting every broken field.
//!
//! A [`Node`] is a position in the JSON (possibly absent) plus its path
//! (`event.data.id`, `alerts[2].fingerprint`), so a parser reads fields in a
//! straight line and a `422` lists each field that was missing or mistyped.

use serde_json::Value;

use crate::problem::FieldError;

#[derive(Debug, Clone)]
pub(crate) struct Node<'v> {
    value: Option<&'v Value>,
    path: String,
}

impl<'v> Node<'v> {
    pub(crate) fn root(value: &'v Value) -> Self {
        Self {
            value: Some(value),
            path: String::new(),
        }
    }

    /// The member `key` of this object (absent when this is not an object).
    pub(crate) fn get(&self, key: &str) -> Node<'v> {
        Node {
            value: self.value.and_then(|v| v.get(key)),
            path: if self.path.is_empty() {
                key.to_owned()
            } else {
                format!("{}.{key}", self.path)
            },
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The value, unless absent or `null`.
    pub(crate) fn value(&self) -> Option<&'v Value> {
        self.value.filter(|v| !v.is_null())
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> FieldError {
        let field = if self.path.is_empty() {
            "$"
        } else {
            &self.path
        };
        FieldError::new(field, message)
    }

    /// A string if present; an error if present with another type.
    pub(crate) fn str_opt(&self, errors: &mut Vec<FieldError>) -> Option<&'v str> {
        match self.value()? {
            Value::String(s) => Some(s),
            _ => {
                errors.push(self.error("must be a string"));
                None
            }
        }
    }

    /// A non-blank string; an error if absent, blank or mistyped.
    pub(crate) fn str_req(&self, errors: &mut Vec<FieldError>) -> Option<&'v str> {
        if self.value().is_none() {
            errors.push(self.error("is required"));
            return None;
        }
        let s = self.str_opt(errors)?;
        if s.trim().is_empty() {
            errors.push(self.error("must not be empty"));
            return None;
        }
        Some(s)
    }

    /// A string member without error reporting (descriptive fields).
    pub(crate) fn as_str(&self) -> Option<&'v str> {
        self.value().and_then(Value::as_str)
    }

    /// The elements of an array; an error if required and absent, or not an array.
    pub(crate) fn items(&self, required: bool, errors: &mut Vec<FieldError>) -> Vec<Node<'v>> {
        match self.value() {
            None => {
                if required {
                    errors.push(self.error("is required"));
                }
                Vec::new()
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Node {
                    value: Some(v),
                    path: format!("{}[{i}]", self.path),
                })
                .collect(),
            Some(_) => {
                errors.push(self.error("must be an array"));
                Vec::new()
            }
        }
    }

    /// The strings of an array of strings, skipping anything else (tags).
    pub(crate) fn strings(&self) -> Vec<&'v str> {
        self.value()
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// The members of an object whose values are strings (labels).
    pub(crate) fn string_map(&self) -> Vec<(&'v str, &'v str)> {
        self.value()
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.as_str(), s)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    #[test]
    fn paths_name_nested_fields_and_array_elements() {
        let v = json!({"event": {"data": {"id": 7}}, "alerts": [{"x": 1}, {"fingerprint": " "}]});
        let root = Node::root(&v);
        let mut errors = Vec::new();
        assert_eq!(
            root.get("event").get("data").get("id").str_req(&mut errors),
            None
        );
        assert_eq!(root.get("event").get("missing").str_req(&mut errors), None);
        let alerts = root.get("alerts").items(true, &mut errors);
        assert_eq!(alerts[1].get("fingerprint").str_req(&mut errors), None);
        assert_eq!(root.get("nope").items(true, &mut errors).len(), 0);
        assert_eq!(root.get("event").items(false, &mut errors).len(), 0);
        let fields: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("event.data.id", "must be a string"),
                ("event.missing", "is required"),
                ("alerts[1].fingerprint", "must not be empty"),
                ("nope", "is required"),
                ("event", "must be an array"),
            ]
        );
    }

    #[test]
    fn lenient_readers_skip_what_they_cannot_use() {
        let v = json!({"tags": ["a", 1, "b"], "labels": {"k": "v", "n": 2}, "null": null});
        let root = Node::root(&v);
        assert_eq!(root.get("tags").strings(), vec!["a", "b"]);
        assert_eq!(root.get("labels").string_map(), vec![("k", "v")]);
        let mut errors = Vec::new();
        assert_eq!(root.get("null").str_opt(&mut errors), None);
        assert!(errors.is_empty());
        assert_eq!(root.error("x").field, "$");
    }
}
