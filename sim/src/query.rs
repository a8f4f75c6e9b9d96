//! Query-string parsing that answers Genesys-style 400s.
//!
//! axum's `Query` extractor rejects with its own plain-text body; Genesys answers a malformed
//! `pageSize` with its JSON error body, so the API handlers parse query strings here instead.

use crate::errors::ApiError;

/// The decoded `name=value` pairs of a query string, in order.
#[derive(Debug, Default)]
pub(crate) struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let pairs = match raw {
            None | Some("") => Vec::new(),
            Some(raw) => serde_urlencoded::from_str(raw).map_err(|error| {
                ApiError::bad_request(format!("The query string could not be parsed: {error}"))
            })?,
        };
        Ok(Self { pairs })
    }

    /// The first value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// An integer parameter in `min..=max`, or `default` when absent.
    pub fn integer(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.parse::<u64>() {
            Ok(value) if (min..=max).contains(&value) => Ok(value),
            _ => Err(ApiError::bad_request(format!(
                "The value of {name} must be an integer between {min} and {max}, not '{raw}'."
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_bounded() {
        let params =
            QueryParams::parse(Some("pageSize=0&pageNumber=2&name=Carrier%20Outage")).unwrap();
        assert!(params.integer("pageSize", 25, 1, 100).is_err());
        assert_eq!(params.integer("pageNumber", 1, 1, 10).unwrap(), 2);
        assert_eq!(params.integer("missing", 7, 1, 10).unwrap(), 7);
        assert_eq!(params.get("name"), Some("Carrier Outage"));
    }
}
