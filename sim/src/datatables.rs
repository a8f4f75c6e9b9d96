//! Architect data table rows: where emr-edge leaves the ordered queue list for flows to read
//! with a Data Table Lookup.
//!
//! A row is a flat JSON object of the table's columns; the key column is always `key`. Every
//! table has a schema ([`crate::tableschema`]; the seeded one is emr-edge's
//! `genesys/datatable.schema.json`) and every write through the API is held to it as Genesys
//! holds it: an unknown column, a wrong type or a string past its `maxLength` is a 400. A PUT
//! of a row that does not exist is a 404 and a POST of one that does is a 409, as in Genesys.
//! Rows are also listed, paged, as Genesys does (`GET …/rows?pageNumber=&pageSize=&showbrief=`;
//! `showbrief` defaults to true and then only the `key` of each row is answered — emr-edge's
//! restart recovery must ask for `showbrief=false`). Reading needs `architect:datatable:view`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::config::{DataTableConfig, PERM_DATATABLE_VIEW, PERM_ROW_ADD, PERM_ROW_EDIT};
use crate::errors::{ApiError, SimError};
use crate::query::QueryParams;
use crate::state::App;
use crate::tableschema::TableSchema;

/// The key column every Genesys data table has.
const KEY_COLUMN: &str = "key";

/// A row: column name → scalar value.
pub type Row = Map<String, Value>;

/// Why a row operation was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RowError {
    TableNotFound,
    RowNotFound,
    Exists,
    Invalid(String),
}

impl From<RowError> for ApiError {
    fn from(error: RowError) -> Self {
        match error {
            RowError::TableNotFound => {
                ApiError::not_found("The requested data table was not found.")
            }
            RowError::RowNotFound => {
                ApiError::not_found("The requested data table row was not found.")
            }
            RowError::Exists => ApiError::conflict("A row with this key already exists."),
            RowError::Invalid(message) => ApiError::bad_request(message),
        }
    }
}

impl From<RowError> for SimError {
    fn from(error: RowError) -> Self {
        match error {
            RowError::TableNotFound => SimError::NotFound("no such data table".to_owned()),
            RowError::RowNotFound => SimError::NotFound("no such row".to_owned()),
            RowError::Exists => SimError::Invalid("the row already exists".to_owned()),
            RowError::Invalid(message) => SimError::Invalid(message),
        }
    }
}

/// Checks that `row` is flat and that its `key` is `row_id`.
pub(crate) fn check_row(row_id: &str, row: &Row) -> Result<(), String> {
    match row.get(KEY_COLUMN) {
        Some(Value::String(key)) if key == row_id => {}
        Some(Value::String(key)) => {
            return Err(format!(
                "The key column value '{key}' does not match the row id '{row_id}'."
            ))
        }
        Some(_) => return Err("The key column must be a string.".to_owned()),
        None => return Err("The row must contain the key column 'key'.".to_owned()),
    }
    if let Some((column, _)) = row
        .iter()
        .find(|(_, value)| value.is_object() || value.is_array())
    {
        return Err(format!(
            "Column '{column}' must hold a string, number, boolean or null."
        ));
    }
    Ok(())
}

/// One table: its schema and its rows.
#[derive(Debug)]
struct Table {
    schema: TableSchema,
    rows: BTreeMap<String, Row>,
}

/// All data tables' rows.
#[derive(Debug, Default)]
pub(crate) struct DataTables {
    tables: BTreeMap<String, Table>,
}

impl DataTables {
    /// The seeded tables (a validated config: a table whose schema does not compile, which
    /// validation refuses, is left out).
    pub fn new(seed: &[DataTableConfig]) -> Self {
        let tables = seed
            .iter()
            .filter_map(|table| {
                let schema = table.table_schema().ok()?;
                Some((
                    table.id.clone(),
                    Table {
                        schema,
                        rows: table.rows.clone(),
                    },
                ))
            })
            .collect();
        Self { tables }
    }

    fn table(&self, table: &str) -> Result<&Table, RowError> {
        self.tables.get(table).ok_or(RowError::TableNotFound)
    }

    fn table_mut(&mut self, table: &str) -> Result<&mut Table, RowError> {
        self.tables.get_mut(table).ok_or(RowError::TableNotFound)
    }

    pub fn row(&self, table: &str, row_id: &str) -> Result<&Row, RowError> {
        self.table(table)?
            .rows
            .get(row_id)
            .ok_or(RowError::RowNotFound)
    }

    pub fn rows(&self, table: &str) -> Result<Vec<Row>, RowError> {
        Ok(self.table(table)?.rows.values().cloned().collect())
    }

    /// Writes a row whatever it held before, schema checked: the control API's and the
    /// Rust API's write "behind the API's back".
    pub fn set(&mut self, table: &str, row_id: &str, row: Row) -> Result<Row, RowError> {
        check_row(row_id, &row).map_err(RowError::Invalid)?;
        let t = self.table_mut(table)?;
        t.schema.check(&row).map_err(RowError::Invalid)?;
        t.rows.insert(row_id.to_owned(), row.clone());
        Ok(row)
    }

    /// `PUT …/rows/{rowId}`: replaces a row that exists; a missing one is a 404, as in
    /// Genesys (create it with a POST).
    pub fn put(&mut self, table: &str, row_id: &str, row: Row) -> Result<Row, RowError> {
        check_row(row_id, &row).map_err(RowError::Invalid)?;
        let t = self.table_mut(table)?;
        t.schema.check(&row).map_err(RowError::Invalid)?;
        let slot = t.rows.get_mut(row_id).ok_or(RowError::RowNotFound)?;
        *slot = row.clone();
        Ok(row)
    }

    /// Creates a row named by its `key`; an existing key is a conflict.
    fn create(&mut self, table: &str, row: Row) -> Result<Row, RowError> {
        let t = self.table_mut(table)?;
        let Some(Value::String(row_id)) = row.get(KEY_COLUMN) else {
            return Err(RowError::Invalid(
                "The row must contain the key column 'key' as a string.".to_owned(),
            ));
        };
        let row_id = row_id.clone();
        check_row(&row_id, &row).map_err(RowError::Invalid)?;
        t.schema.check(&row).map_err(RowError::Invalid)?;
        if t.rows.contains_key(&row_id) {
            return Err(RowError::Exists);
        }
        t.rows.insert(row_id, row.clone());
        Ok(row)
    }
}

fn parse_row(body: &[u8]) -> Result<Row, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(row)) => Ok(row),
        Ok(_) => Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        )),
        Err(error) => Err(ApiError::bad_request(format!(
            "The request body could not be parsed: {error}"
        ))),
    }
}

/// `GET /api/v2/flows/datatables/{datatableId}/rows/{rowId}` (`showbrief` is ignored: the
/// whole row is always answered).
pub(crate) async fn get_row(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path((table, row_id)): Path<(String, String)>,
) -> Result<Json<Row>, ApiError> {
    caller.require(PERM_DATATABLE_VIEW)?;
    let state = app.lock();
    Ok(Json(state.tables.row(&table, &row_id)?.clone()))
}

/// `GET /api/v2/flows/datatables/{datatableId}/rows?pageNumber=&pageSize=&showbrief=`: the rows
/// in key order, paged like every Genesys listing. `showbrief` (default `true`) answers only each
/// row's `key`.
pub(crate) async fn list_rows(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(table): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require(PERM_DATATABLE_VIEW)?;
    let params = QueryParams::parse(query.as_deref())?;
    let page_size = params.integer("pageSize", 25, 1, 500)?;
    let page_number = params.integer("pageNumber", 1, 1, u64::from(u32::MAX))?;
    let brief = !matches!(params.get("showbrief"), Some("false"));
    let rows = app.lock().tables.rows(&table)?;
    let total = u64::try_from(rows.len()).unwrap_or(u64::MAX);
    let page_count = total.div_ceil(page_size);
    let skip = usize::try_from(page_number.saturating_sub(1).saturating_mul(page_size))
        .unwrap_or(usize::MAX);
    let take = usize::try_from(page_size).unwrap_or(usize::MAX);
    let entities: Vec<Value> = rows
        .into_iter()
        .skip(skip)
        .take(take)
        .map(|mut row| {
            if brief {
                row.retain(|column, _| column == KEY_COLUMN);
            }
            Value::Object(row)
        })
        .collect();
    Ok(Json(serde_json::json!({
        "entities": entities,
        "pageSize": page_size,
        "pageNumber": page_number,
        "total": total,
        "pageCount": page_count,
    })))
}

/// `PUT /api/v2/flows/datatables/{datatableId}/rows/{rowId}`
pub(crate) async fn put_row(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path((table, row_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Row>, ApiError> {
    caller.require(PERM_ROW_EDIT)?;
    let row = parse_row(&body)?;
    let mut state = app.lock();
    Ok(Json(state.tables.put(&table, &row_id, row)?))
}

/// `POST /api/v2/flows/datatables/{datatableId}/rows`
pub(crate) async fn create_row(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(table): Path<String>,
    body: Bytes,
) -> Result<Json<Row>, ApiError> {
    caller.require(PERM_ROW_ADD)?;
    let row = parse_row(&body)?;
    let mut state = app.lock();
    Ok(Json(state.tables.create(&table, row)?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(value: Value) -> Row {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn rows_must_be_flat_and_keyed_by_their_id() {
        assert!(check_row("r", &row(json!({"key": "r", "queues": "a,b", "n": 1}))).is_ok());
        assert!(check_row("r", &row(json!({"key": "s"}))).is_err());
        assert!(check_row("r", &row(json!({"queues": "a"}))).is_err());
        assert!(check_row("r", &row(json!({"key": "r", "q": ["a"]}))).is_err());
    }

    #[test]
    fn put_needs_the_row_and_create_refuses_duplicates() {
        let mut tables = DataTables::new(&crate::config::SimConfig::default().datatables);
        let table = crate::config::DEFAULT_DATATABLE_ID;
        assert_eq!(tables.row(table, "r"), Err(RowError::RowNotFound));
        assert_eq!(tables.row("nope", "r"), Err(RowError::TableNotFound));
        assert_eq!(
            tables.put(table, "r", row(json!({"key": "r"}))),
            Err(RowError::RowNotFound)
        );
        assert!(tables.create(table, row(json!({"key": "r"}))).is_ok());
        assert!(tables
            .put(table, "r", row(json!({"key": "r", "enabled": true})))
            .is_ok());
        assert_eq!(
            tables.create(table, row(json!({"key": "r"}))),
            Err(RowError::Exists)
        );
        assert!(matches!(
            tables.put(table, "r", row(json!({"key": "r", "colour": "blue"}))),
            Err(RowError::Invalid(_))
        ));
        assert!(tables.set(table, "s", row(json!({"key": "s"}))).is_ok());
    }
}
