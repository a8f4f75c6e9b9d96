//! Listing a data table's rows, a page at a time: at start, the reconciler
//! reads them all before it writes anything (`crate::recovery` reads what
//! they hold).

use serde_json::Value;

use crate::callout::encode_segment;

/// Rows read per page, and pages read at most.
pub const PAGE_SIZE: u32 = 100;
pub const MAX_PAGES: u32 = 20;
/// A row key shown in a report is cut to this many characters.
const MAX_KEY_CHARS: usize = 256;

/// One page of `GET /api/v2/flows/datatables/{id}/rows?showbrief=false`:
/// the rows that hold a value in the column asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowsPage {
    pub cells: Vec<Cell>,
    pub page_number: u32,
    pub page_count: u32,
}

/// One row's value in the column asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The row's key, at most 256 characters (`?` when it has none).
    pub key: String,
    pub value: String,
}

impl RowsPage {
    /// Whether another page follows, within [`MAX_PAGES`].
    pub fn has_more(&self) -> bool {
        self.page_number < self.page_count && self.page_number < MAX_PAGES
    }
}

/// Reads a page of rows, keeping each row's non-blank string in `column`.
pub fn parse_rows_page(body: &[u8], column: &str) -> Result<RowsPage, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("unreadable rows page: {e}"))?;
    let entities = v
        .get("entities")
        .and_then(Value::as_array)
        .ok_or("the rows page has no `entities`")?;
    let number = |name: &str| {
        v.get(name)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let cells = entities
        .iter()
        .filter_map(|row| {
            let value = row.get(column).and_then(Value::as_str)?;
            if value.trim().is_empty() {
                return None;
            }
            let key = row.get("key").and_then(Value::as_str).unwrap_or("?");
            Some(Cell {
                key: key.chars().take(MAX_KEY_CHARS).collect(),
                value: value.to_owned(),
            })
        })
        .collect();
    Ok(RowsPage {
        cells,
        page_number: number("pageNumber").unwrap_or(1),
        page_count: number("pageCount").unwrap_or(1),
    })
}

/// The path of page `page` of the table's rows, full rows (`showbrief=false`:
/// Genesys otherwise answers only the keys).
pub fn rows_path(datatable_id: &str, page: u32) -> String {
    format!(
        "/api/v2/flows/datatables/{}/rows?pageNumber={page}&pageSize={PAGE_SIZE}&showbrief=false",
        encode_segment(datatable_id)
    )
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    #[test]
    fn a_page_keeps_the_rows_that_hold_the_column() {
        let body = json!({
            "pageNumber": 1, "pageSize": 100, "pageCount": 2, "total": 104,
            "entities": [
                {"key": "G1", "queueIds": "", "col": "a"},
                {"key": "someone-elses", "colour": "blue"},
                {"key": "G4", "col": "  "},
                {"col": "b"},
                {"key": "G5", "col": 5}
            ]
        });
        let page = parse_rows_page(&serde_json::to_vec(&body).unwrap(), "col").unwrap();
        let cells: Vec<(&str, &str)> = page
            .cells
            .iter()
            .map(|c| (c.key.as_str(), c.value.as_str()))
            .collect();
        assert_eq!(cells, [("G1", "a"), ("?", "b")]);
        assert!(page.has_more());
        assert!(parse_rows_page(b"{}", "col").is_err());
        assert!(parse_rows_page(b"nope", "col").is_err());
        let last = parse_rows_page(
            br#"{"entities": [], "pageNumber": 2, "pageCount": 2}"#,
            "col",
        )
        .unwrap();
        assert!(!last.has_more());
        let capped = parse_rows_page(
            br#"{"entities": [], "pageNumber": 20, "pageCount": 30}"#,
            "col",
        )
        .unwrap();
        assert!(!capped.has_more(), "at most MAX_PAGES pages are read");
    }

    #[test]
    fn rows_are_listed_in_full() {
        assert_eq!(
            rows_path("emr table", 2),
            "/api/v2/flows/datatables/emr%20table/rows?pageNumber=2&pageSize=100&showbrief=false"
        );
    }
}
