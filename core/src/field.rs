//! The checks every config section makes of one field, each problem naming
//! the field: a number within its range.
//!
//! Each check names its problem with the field as the caller gives it: the
//! sources are given where they sit and name theirs from the root
//! (`sources.pagerduty.auth[0].secret_env`); the genesys and itsm sections
//! name theirs within the section (`limits.burst`), and the config puts
//! them under it with [`FieldError::under`].

use std::fmt;

use crate::problem::FieldError;

/// `v`, with a problem named `field` pushed when it is outside `min..=max`.
/// The value is returned either way, so the checks that depend on it still
/// run and the config is refused with all its problems at once.
pub fn in_range<T: PartialOrd + fmt::Display + Copy>(
    field: &str,
    v: T,
    min: T,
    max: T,
    problems: &mut Vec<FieldError>,
) -> T {
    if v < min || v > max {
        problems.push(FieldError::new(
            field,
            format!("must be between {min} and {max}, got {v}"),
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn a_value_out_of_range_is_named_and_still_returned() {
        let mut problems = Vec::new();
        assert_eq!(in_range("a", 5_u32, 1, 10, &mut problems), 5);
        assert_eq!(in_range("a", 1_u32, 1, 10, &mut problems), 1);
        assert_eq!(in_range("a", 10_u32, 1, 10, &mut problems), 10);
        assert!(problems.is_empty());
        assert_eq!(in_range("limits.burst", 0_u32, 1, 300, &mut problems), 0);
        assert_eq!(
            problems,
            [FieldError::new(
                "limits.burst",
                "must be between 1 and 300, got 0"
            )]
        );
    }
}
