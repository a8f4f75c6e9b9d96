//! A data table's schema, as Genesys holds it: JSON Schema draft-04 with
//! `additionalProperties: false`, `key` the only required column, and every
//! column a `string`, `integer`, `number` or `boolean` (no arrays, no
//! objects). Row writes are checked against it the way Genesys checks them:
//! an unknown column, a value of the wrong type or a string longer than the
//! column's `maxLength` is refused with a 400 naming the column.
//!
//! Only what a table schema may say is read: `properties` with `type` and
//! `maxLength`. The routing table's schema is the one emr-edge ships,
//! `genesys/datatable.schema.json`, compiled in ([`ROUTING_SCHEMA`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// emr-edge's routing table, `genesys/datatable.schema.json`: the seeded
/// table's schema, and any configured table's that gives none.
pub const ROUTING_SCHEMA: &str = include_str!("../../genesys/datatable.schema.json");

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnType {
    String,
    Integer,
    Number,
    Boolean,
}

impl ColumnType {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "string" => Some(Self::String),
            "integer" => Some(Self::Integer),
            "number" => Some(Self::Number),
            "boolean" => Some(Self::Boolean),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
        }
    }

    /// Whether `value` is of this type. `null` never is, as draft-04
    /// validation has it (a column without a value is left out).
    fn holds(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Integer => value.is_i64() || value.is_u64(),
            Self::Number => value.is_number(),
            Self::Boolean => value.is_boolean(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    kind: ColumnType,
    max_length: Option<usize>,
}

/// A compiled table schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    columns: BTreeMap<String, Column>,
}

impl TableSchema {
    /// The routing table's schema ([`ROUTING_SCHEMA`]).
    pub fn routing() -> Result<Self, String> {
        let value: Value = serde_json::from_str(ROUTING_SCHEMA)
            .map_err(|e| format!("genesys/datatable.schema.json: {e}"))?;
        Self::compile(&value)
    }

    /// Compiles a schema, refusing one Genesys would refuse.
    pub fn compile(schema: &Value) -> Result<Self, String> {
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err("type: must be \"object\"".to_owned());
        }
        if schema.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Err("additionalProperties: must be false".to_owned());
        }
        if schema.get("required") != Some(&serde_json::json!(["key"])) {
            return Err("required: must be [\"key\"], and only that".to_owned());
        }
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .ok_or("properties: must be an object")?;
        let mut columns = BTreeMap::new();
        for (name, property) in properties {
            let kind = property
                .get("type")
                .and_then(Value::as_str)
                .and_then(ColumnType::parse)
                .ok_or_else(|| {
                    format!("properties.{name}.type: must be string, integer, number or boolean")
                })?;
            let max_length = match property.get("maxLength") {
                None => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| {
                            format!("properties.{name}.maxLength: must be a whole number")
                        })?,
                ),
            };
            columns.insert(name.clone(), Column { kind, max_length });
        }
        match columns.get("key") {
            Some(Column {
                kind: ColumnType::String,
                ..
            }) => Ok(Self { columns }),
            _ => Err("properties.key: the key column must be a string".to_owned()),
        }
    }

    /// Checks a row against the schema; the message names the column.
    pub fn check(&self, row: &Map<String, Value>) -> Result<(), String> {
        for (name, value) in row {
            let Some(column) = self.columns.get(name) else {
                return Err(format!(
                    "The data table row failed validation: '{name}' is not a column of this \
                     table (additional properties are not allowed)."
                ));
            };
            if !column.kind.holds(value) {
                return Err(format!(
                    "The data table row failed validation: column '{name}' must be of type {}.",
                    column.kind.name()
                ));
            }
            if let (Some(max), Some(text)) = (column.max_length, value.as_str()) {
                let length = text.chars().count();
                if length > max {
                    return Err(format!(
                        "The data table row failed validation: column '{name}' holds {length} \
                         characters, more than its maximum length of {max}."
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn the_routing_schema_compiles_and_holds_its_rows() {
        let schema = TableSchema::routing().unwrap();
        let good = row(json!({"key": "g1", "enabled": true, "queueIds": "q1,q2",
                             "queue1": "q1", "queue2": "q2", "queue3": "", "updatedAt": "t"}));
        assert!(schema.check(&good).is_ok());
        let unknown = schema.check(&row(json!({"key": "g1", "queues": "q1"})));
        assert!(unknown.unwrap_err().contains("'queues'"));
        let wrong = schema.check(&row(json!({"key": "g1", "enabled": "yes"})));
        assert!(wrong.unwrap_err().contains("type boolean"));
        let null = schema.check(&row(json!({"key": "g1", "queue1": null})));
        assert!(null.is_err());
        let long = schema.check(&row(json!({"key": "g1", "queueIds": "q".repeat(4_001)})));
        assert!(long.unwrap_err().contains("maximum length of 4000"));
        let long_key = schema.check(&row(json!({"key": "k".repeat(257)})));
        assert!(long_key.is_err());
    }

    #[test]
    fn only_schemas_genesys_takes_compile() {
        let base = json!({"type": "object", "required": ["key"], "additionalProperties": false,
                          "properties": {"key": {"type": "string"}, "n": {"type": "integer"}}});
        let schema = TableSchema::compile(&base).unwrap();
        assert!(schema.check(&row(json!({"key": "a", "n": 3}))).is_ok());
        assert!(schema.check(&row(json!({"key": "a", "n": 3.5}))).is_err());
        for (field, value) in [
            ("additionalProperties", json!(true)),
            ("required", json!(["key", "n"])),
            (
                "properties",
                json!({"key": {"type": "string"}, "l": {"type": "array"}}),
            ),
            ("properties", json!({"key": {"type": "integer"}})),
        ] {
            let mut bad = base.clone();
            bad[field] = value;
            assert!(TableSchema::compile(&bad).is_err(), "{field}");
        }
    }
}
