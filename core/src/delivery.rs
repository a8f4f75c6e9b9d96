//! One webhook delivery as the filter hands it over: the leaf both the
//! authentication and the payload parsers read.

use std::fmt;

use chrono::{DateTime, Utc};

/// One webhook delivery as the filter hands it over. `Debug` shows header
/// names only: values carry credentials and signatures.
#[derive(Clone, Copy)]
pub struct Delivery<'a> {
    /// Request headers, names lowercase.
    pub headers: &'a [(String, String)],
    /// The raw body, exactly as received (signatures cover these bytes).
    pub body: &'a [u8],
    pub now: DateTime<Utc>,
}

impl<'a> Delivery<'a> {
    /// The first value of header `name` (ignoring case).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for Delivery<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Delivery")
            .field("header_names", &names)
            .field("body_len", &self.body.len())
            .field("now", &self.now)
            .finish()
    }
}
