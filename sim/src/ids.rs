//! Identifiers the simulator makes up: correlation ids, access tokens, record ids.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

/// A uuid-like id, as Genesys uses for `ININ-Correlation-Id` and `contextId`.
pub(crate) fn correlation_id() -> String {
    Uuid::new_v4().to_string()
}

/// An opaque bearer token: 32 random bytes, base64url, like the real ones are opaque strings.
pub(crate) fn access_token() -> String {
    let mut bytes = [0u8; 32];
    let (first, second) = bytes.split_at_mut(16);
    first.copy_from_slice(Uuid::new_v4().as_bytes());
    second.copy_from_slice(Uuid::new_v4().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A ServiceNow `sys_id`: 32 lowercase hex digits.
pub(crate) fn sys_id() -> String {
    Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_shapes() {
        assert_eq!(correlation_id().len(), 36);
        assert_eq!(access_token().len(), 43);
        assert_eq!(sys_id().len(), 32);
        assert_ne!(access_token(), access_token());
    }
}
